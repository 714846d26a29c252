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

import { execFile, spawn } from 'node:child_process';
import { accessSync, constants as fsConstants } from 'node:fs';
import { type FileHandle, mkdtemp, open, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { rootCertificates } from 'node:tls';
import { type Credentials, formatHeaderLine, type HttpHeader } from '../../src/contract/import-spec.js';
import { ErrorCode, FerryError } from '../../src/errors.js';
import { ioCounter } from '../../src/io/proc-io.js';
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
  /** Dirty bytes between flushes of the file (`childToFile`); 0: none. */
  readonly syncEveryBytes?: number;
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
  return withCurlSetup(options, false, ({ args, config }) =>
    childToFile('curl', args, path, {
      input: Buffer.from(config),
      env: childEnvironment(process.env),
      ...(options.limit !== undefined ? { limit: options.limit } : {}),
      ...(options.syncEveryBytes !== undefined ? { syncEveryBytes: options.syncEveryBytes } : {}),
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.onSize ? { onSize: options.onSize } : {}),
      judge: (exit) => curlFailure(exit, where, options),
    }),
  );
}

/**
 * Runs `body` with curl's argv and config; the same roots node trusts (and the extra bundle) in a
 * private folder for https, not whatever the system store holds. `folder`: the private folder is
 * made for plain http too (it holds the pipe of `curlThroughDecoder`).
 */
async function withCurlSetup<T>(options: CurlFetchOptions, folder: boolean, body: (invocation: { args: string[]; config: string }, dir: string | undefined) => Promise<T>): Promise<T> {
  const https = /^https:/i.test(options.url) || /^https:/i.test(options.proxy ?? '');
  const trust = https && !options.insecureTls;
  const dir = trust || folder ? await mkdtemp(join(tmpdir(), 'ferry-curl-')) : undefined;
  try {
    let caFile: string | undefined;
    if (trust && dir !== undefined) {
      caFile = join(dir, 'ca.pem');
      await writeFile(caFile, [...rootCertificates, ...(options.caPems ?? [])].join('\n'), { mode: 0o600 });
    }
    return await body(curlInvocation(options, caFile), dir);
  } finally {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  }
}

/** What curl's `--write-out` adds to stderr once the transfer ends: the body bytes it received. */
const BODY_BYTES_MARK = 'ferry-body-bytes ';

/** Pure: curl's stderr without the `--write-out` line, and the body bytes that line gives. */
export function splitBodyBytes(stderr: string): { readonly fetched?: number; readonly stderr: string } {
  const lines = stderr.split('\n');
  const at = lines.findLastIndex((l) => l.startsWith(BODY_BYTES_MARK));
  if (at < 0) return { stderr };
  const n = Number(lines[at]?.slice(BODY_BYTES_MARK.length));
  const rest = [...lines.slice(0, at), ...lines.slice(at + 1)].join('\n');
  return Number.isSafeInteger(n) && n >= 0 ? { fetched: n, stderr: rest } : { stderr: rest };
}

export interface CurlDecodeOptions extends CurlFetchOptions {
  /** The decoder (command, argv) that reads what curl receives on its stdin and writes the file. */
  readonly decoder: readonly [string, readonly string[]];
  /** The decoder's exit as an error (undefined: success). */
  readonly judgeDecoder: (exit: ChildExit) => FerryError | undefined;
  /** The body bytes the source announced: curl must pass on exactly these. */
  readonly expectedBytes: number;
  /** Told the body bytes curl has passed on so far (every 100 ms, where /proc tells). */
  readonly onFetched?: (bytes: number) => void;
}

/**
 * `curl URL | decoder > path`, the bytes passing through neither node nor a shell: curl writes a
 * pipe the decoder reads, and the decoder writes the new file (`childToFile`: created exclusive,
 * at most `limit` bytes, flushed as it grows). The pipe is a FIFO in a private folder, opened three
 * ways and unlinked at once: curl's write end, the decoder's read end, and one read-write end node
 * holds, so no open waits for the other side and the decoder sees the end of its input only when
 * node closes it, after curl is done and its byte count checked. Node never reads or writes it.
 * Returns the decoded size. A decoder that stops early (corrupt data, the limit) stops curl and its
 * error is the one reported; a curl that fails stops the decoder.
 */
export async function curlThroughDecoder(path: string, options: CurlDecodeOptions): Promise<number> {
  const where = redactUrl(options.url);
  const { signal } = options;
  return withCurlSetup(options, true, async ({ args, config }, dir) => {
    if (dir === undefined) throw new FerryError(ErrorCode.Internal, 'the pipe needs a private folder');
    const fifo = join(dir, 'body');
    await makeFifo(fifo);
    const hold = await open(fifo, fsConstants.O_RDWR);
    let reader: FileHandle | undefined;
    let writer: FileHandle | undefined;
    try {
      reader = await open(fifo, fsConstants.O_RDONLY);
      writer = await open(fifo, fsConstants.O_WRONLY);
      await unlink(fifo);
      const [command, decoderArgs] = options.decoder;
      let decoderSettled = false;
      const decoding = childToFile(command, decoderArgs, path, {
        input: { fd: reader.fd },
        ...(options.limit !== undefined ? { limit: options.limit } : {}),
        ...(options.syncEveryBytes !== undefined ? { syncEveryBytes: options.syncEveryBytes } : {}),
        ...(signal ? { signal } : {}),
        judge: options.judgeDecoder,
      });
      const curl = spawn('curl', [...args, '--write-out', `%{stderr}${BODY_BYTES_MARK}%{size_download}\n`], {
        stdio: ['pipe', writer.fd, 'pipe'],
        env: childEnvironment(process.env),
        ...(signal ? { signal, killSignal: 'SIGKILL' as const } : {}),
      });
      await writer.close();
      writer = undefined;
      void decoding.then(
        () => undefined,
        () => undefined,
      ).finally(() => {
        decoderSettled = true;
        // A decoder that stopped reads no more: curl would wait on a full pipe.
        if (curl.exitCode === null && curl.signalCode === null) curl.kill('SIGKILL');
      });
      let stderr = '';
      curl.stderr?.setEncoding('utf8');
      curl.stderr?.on('data', (d: string) => {
        stderr = (stderr + d).slice(-4096);
      });
      curl.stdin?.on('error', () => undefined); // a curl that exits early closes its end; its exit says why
      curl.stdin?.end(config);
      const progress = options.onFetched ? setInterval(() => options.onFetched?.(ioCounter(curl.pid, 'wchar') ?? 0), 100) : undefined;
      const exit = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
        curl.once('error', (error) => resolve({ code: null, signal: null, error }));
        curl.once('close', (code, killedBy) => resolve({ code, signal: killedBy }));
      });
      if (progress) clearInterval(progress);
      const stoppedFirst = decoderSettled;
      const { fetched, stderr: rest } = splitBodyBytes(stderr.trim());
      let failure = exit.error ? new FerryError(ErrorCode.Internal, `cannot run curl: ${exit.error.message}`, { cause: exit.error }) : curlFailure({ code: exit.code, signal: exit.signal, stderr: rest.trim() }, where, options);
      if (!failure && fetched !== options.expectedBytes) {
        failure = new FerryError(ErrorCode.Truncated, `source sent ${fetched ?? 'an unknown number of'} bytes but announced ${options.expectedBytes}`, { details: { received: fetched ?? -1, expected: options.expectedBytes } });
      }
      // The end of input: a decoder still running finishes (or, after a failed fetch, stops).
      await hold.close();
      if (!failure) return await decoding;
      const decoderError = await decoding.then(
        () => undefined,
        (err: unknown) => err,
      );
      // The decoder's error is the cause when it stopped first (curl was then stopped for it).
      throw stoppedFirst && decoderError ? decoderError : failure;
    } finally {
      await writer?.close().catch(() => undefined);
      await reader?.close().catch(() => undefined);
      await hold.close().catch(() => undefined);
    }
  });
}

/** A FIFO at `path`, readable and writable by this user only. */
async function makeFifo(path: string): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    execFile('mkfifo', ['-m', '600', '--', path], (err) => (err ? reject(new FerryError(ErrorCode.Internal, `cannot make a pipe for curl: ${err.message}`, { cause: err })) : resolve()));
  });
}

