/**
 * One stream of an HTTP(S) image fetched by a child `curl` straight into a file: the bytes never
 * pass through node. Measured (bench/README.md, "Importer against ordinary servers"): node's own
 * receive + staging writes took 2–3× the time of `curl -o` on the same server, most of it CPU in
 * the node process on a 2-core machine where the server needs the other core.
 *
 * The same rules as the node source: no secret on argv or in the environment (the URL, user and
 * proxy credentials and the extra headers go in a config on stdin, `-K -`; no ~/.curlrc, `-q`); the environment is an
 * allowlist; no redirects (the engine fetches the URL the first request ended at, credentials only
 * for the origin they were given for); http and https only; the trust is the same as node's (its
 * root certificates plus the given CA bundle, or `--insecure` when opted in); the minimum speed is
 * curl's own `--speed-limit`/`--speed-time` (without one, the idle timeout as a 1 byte/s floor);
 * the file cannot grow past `limit` (RLIMIT_FSIZE, see decode-to-file.ts).
 */

import { accessSync, constants as fsConstants } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { rootCertificates } from 'node:tls';
import { type Credentials, formatHeaderLine, type HttpHeader } from '../../src/contract/import-spec.js';
import { ErrorCode, FerryError } from '../../src/errors.js';
import { type ChildExit, childToFile } from '../decode-to-file.js';
import { tooSlowError } from '../min-speed.js';
import { childEnvironment, splitUserinfo } from '../nbdkit.js';
import { type HttpTimeouts, minSpeedOf, redactUrl } from './http-source.js';

export interface CurlFetchOptions {
  readonly url: string;
  readonly credentials?: Credentials;
  /** Extra headers (values are secrets): in the config on stdin, never on argv. */
  readonly extraHeaders?: readonly HttpHeader[];
  /** Extra CA certificates (PEM), trusted in addition to the root certificates node trusts. */
  readonly caPems?: readonly string[];
  readonly insecureTls: boolean;
  readonly proxy?: string;
  readonly timeouts: HttpTimeouts;
  /** Most bytes the file may take. */
  readonly limit?: number;
  readonly signal?: AbortSignal;
  readonly onSize?: (bytes: number) => void;
}

/** Whether an executable `curl` is on `pathVariable` (the composition root passes PATH): else node reads the stream. */
export function curlInstalled(pathVariable: string | undefined): boolean {
  return (pathVariable ?? '').split(delimiter).some((d) => {
    if (d === '') return false;
    try {
      accessSync(join(d, 'curl'), fsConstants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** Whether a failed transfer broke after it began (its bytes so far can be kept and continued). */
export function isBrokenTransfer(err: unknown): boolean {
  return err instanceof FerryError && err.retryable && (err.code === ErrorCode.Truncated || err.details.reason === 'too-slow');
}

/** Pure: a string as a double-quoted value of a curl config file. */
export function configQuote(value: string): string {
  if (/[\r\n\0]/.test(value)) throw new FerryError(ErrorCode.InvalidSpec, 'a URL, credential or header contains a line break');
  return `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

/** Pure: curl's config (read from stdin) and argv for one transfer. Secrets only in the config. */
export function curlInvocation(options: CurlFetchOptions, caFile?: string): { readonly args: string[]; readonly config: string } {
  const target = splitUserinfo(options.url);
  const lines = [`url = ${configQuote(target.url)}`];
  const username = options.credentials?.username ?? target.username;
  const password = options.credentials?.password ?? target.password;
  if (username !== undefined || password !== undefined) lines.push(`user = ${configQuote(`${username ?? ''}:${password ?? ''}`)}`);
  for (const header of options.extraHeaders ?? []) lines.push(`header = ${configQuote(formatHeaderLine(header))}`);
  if (options.proxy) {
    const proxy = splitUserinfo(options.proxy);
    lines.push(`proxy = ${configQuote(proxy.url)}`);
    if (proxy.username !== undefined || proxy.password !== undefined) lines.push(`proxy-user = ${configQuote(`${proxy.username ?? ''}:${proxy.password ?? ''}`)}`);
  } else {
    lines.push('noproxy = "*"');
  }
  const { timeouts } = options;
  const speed = minSpeedOf(timeouts);
  // curl's low-speed check is the minimum speed; without one, the idle timeout as a 1 byte/s floor.
  const [bytes, seconds] = speed.bytesPerSecond > 0 && speed.windowMs > 0 ? [speed.bytesPerSecond, Math.max(1, Math.ceil(speed.windowMs / 1000))] : [1, Math.max(1, Math.ceil(timeouts.idleMs / 1000))];
  const args = [
    '-q', '-K', '-', '--silent', '--show-error', '--fail', '--location', '--max-redirs', '0',
    '--proto', '=http,https', '--proto-redir', '=http,https', '--user-agent', 'ferry-importer',
    '--connect-timeout', String(Math.max(1, Math.ceil(timeouts.connectMs / 1000))),
    '--speed-limit', String(bytes), '--speed-time', String(seconds),
  ];
  if (options.insecureTls) args.push('--insecure');
  if (caFile !== undefined) args.push('--cacert', caFile);
  return { args, config: `${lines.join('\n')}\n` };
}

const TLS_EXITS = new Set([35, 51, 53, 54, 58, 59, 60, 64, 66, 77, 80, 82, 83, 90, 91]);
/** Exits where the connection broke after the transfer began: resumable. */
const BROKEN_EXITS = new Set([18, 52, 55, 56, 92]);

/** Pure: curl's exit as the importer's error (undefined: success). */
export function curlFailure(exit: ChildExit, where: string, options: Pick<CurlFetchOptions, 'timeouts'>): FerryError | undefined {
  const { code, signal, stderr } = exit;
  if (code === 0) return undefined;
  const detail = stderr.split('\n').filter((l) => l.trim() !== '').at(-1) ?? (signal ?? `exit ${code}`);
  if (code === 22) {
    const status = Number(/returned error: (\d{3})/.exec(stderr)?.[1] ?? 0);
    if (status === 404 || status === 410) return new FerryError(ErrorCode.SourceNotFound, `${where} answered ${status}: not found`, { details: { status } });
    if (status === 401 || status === 403) return new FerryError(ErrorCode.Unauthorized, `${where} answered ${status}: check the credentials`, { details: { status } });
    return new FerryError(ErrorCode.SourceUnavailable, `${where} answered ${status || detail}`, { retryable: status === 408 || status === 429 || status >= 500, details: { status } });
  }
  if (code === 28) {
    const speed = minSpeedOf(options.timeouts);
    if (/too slow|speed/i.test(stderr) && speed.bytesPerSecond > 0 && speed.windowMs > 0) return tooSlowError(where, speed);
    return new FerryError(ErrorCode.SourceUnavailable, `${where}: timed out (${detail})`);
  }
  if (code === 47) return new FerryError(ErrorCode.SourceUnavailable, `${where} redirected again; the image must stay where the first request found it`, { retryable: false });
  if (code !== null && TLS_EXITS.has(code)) return new FerryError(ErrorCode.TlsError, `TLS verification of ${where} failed: ${detail} (give the CA bundle, or opt in to insecure)`);
  if (code !== null && BROKEN_EXITS.has(code)) return new FerryError(ErrorCode.Truncated, `${where}: the connection broke while reading the body (${detail})`);
  if (code === 23 && /no space/i.test(stderr)) return new FerryError(ErrorCode.NoSpace, `the target ran out of space while curl wrote ${where}`);
  return new FerryError(ErrorCode.SourceUnavailable, `${where}: curl failed (${detail})`);
}

/**
 * Fetches `options.url` into a new file at `path`; returns its size. A transfer that broke after
 * it began (`isBrokenTransfer`) leaves what it wrote in the file, for the caller to continue.
 */
export async function curlToFile(path: string, options: CurlFetchOptions): Promise<number> {
  const where = redactUrl(options.url);
  const https = /^https:/i.test(options.url) || /^https:/i.test(options.proxy ?? '');
  // The same roots node trusts (and the extra bundle), not whatever the system store holds.
  const dir = https && !options.insecureTls ? await mkdtemp(join(tmpdir(), 'ferry-curl-')) : undefined;
  try {
    let caFile: string | undefined;
    if (dir !== undefined) {
      caFile = join(dir, 'ca.pem');
      await writeFile(caFile, [...rootCertificates, ...(options.caPems ?? [])].join('\n'), { mode: 0o600 });
    }
    const { args, config } = curlInvocation(options, caFile);
    return await childToFile('curl', args, path, {
      input: Buffer.from(config),
      env: childEnvironment(process.env),
      ...(options.limit !== undefined ? { limit: options.limit } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.onSize ? { onSize: options.onSize } : {}),
      judge: (exit) => curlFailure(exit, where, options),
    });
  } finally {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  }
}
