/**
 * HTTP(S) source on got: basic auth, a custom CA bundle on top of the system roots, an explicit
 * insecure opt-in, redirects, proxies from the environment, and timeouts per phase (connect, first
 * byte, idle read), never one total timeout on a body of many GB.
 */

import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';
import type { Agent as HttpAgent } from 'node:http';
import type { Agent as HttpsAgent } from 'node:https';
import got, { type Response } from 'got';
import type { Credentials, HttpHeader, ProxySettings } from '../../src/contract/import-spec.js';
import { ErrorCode, FerryError, isFerryError } from '../../src/errors.js';
import { isTooSlow, type MinSpeed, minimumBytes, watchSpeed } from '../min-speed.js';
import type { ByteStream } from '../streams.js';
import { type OpenedSource, warmLatencyMs } from './source.js';
import { backoffMs } from '../../src/backoff.js';

export interface HttpTimeouts {
  /** TCP (and TLS) connection set-up. */
  readonly connectMs: number;
  /** From request sent to response headers. */
  readonly firstByteMs: number;
  /** Longest silence while the body streams. */
  readonly idleMs: number;
  /**
   * The slowest body that still counts as progress (curl's --speed-limit), in bytes per second;
   * 0 turns the check off; absent, the default. A trickle never trips `idleMs`; this bounds it.
   */
  readonly minSpeedBytes?: number;
  /** How long a body may stay below `minSpeedBytes` (curl's --speed-time), waiting on the source. */
  readonly minSpeedWindowMs?: number;
}

/**
 * The minimum speed defaults to 16 KiB/s over 60 s: a body that delivers under ~1 MiB in a minute
 * of waiting is held, not transferring (a 10 GiB image would take a week). Far enough below any
 * real link (1 Mbit/s is 122 KiB/s) that a slow but live mirror is never cut, and short enough
 * that a trickling server costs a minute, not a pod forever. A cut transfer resumes (Range) or
 * the attempt is retried, so a false alarm costs a reconnect.
 */
export const DEFAULT_HTTP_TIMEOUTS: Required<HttpTimeouts> = Object.freeze({
  connectMs: 30_000,
  firstByteMs: 60_000,
  idleMs: 120_000,
  minSpeedBytes: 16 * 1024,
  minSpeedWindowMs: 60_000,
});

/** Pure: the minimum-speed part of the timeouts, defaults filled in. */
export function minSpeedOf(timeouts: HttpTimeouts): MinSpeed {
  return {
    bytesPerSecond: timeouts.minSpeedBytes ?? DEFAULT_HTTP_TIMEOUTS.minSpeedBytes,
    windowMs: timeouts.minSpeedWindowMs ?? DEFAULT_HTTP_TIMEOUTS.minSpeedWindowMs,
  };
}

export interface HttpSourceOptions {
  readonly url: string;
  readonly credentials?: Credentials;
  readonly caPath?: string;
  readonly insecureTls: boolean;
  readonly proxy: ProxySettings;
  readonly timeouts: HttpTimeouts;
  readonly headers?: Readonly<Record<string, string>>;
  /**
   * The import's extra headers (values are secrets): sent to `url`'s origin only, with every
   * request and every redirect back to it, never to another origin a redirect leads to.
   */
  readonly extraHeaders?: readonly HttpHeader[];
}

/** Pure: headers as got takes them (lower-case names; a name given twice is sent twice). */
export function headerObject(headers: readonly HttpHeader[] | undefined): Record<string, string | string[]> {
  const out: Record<string, string | string[]> = {};
  for (const { name, value } of headers ?? []) {
    const key = name.toLowerCase();
    const had = out[key];
    out[key] = had === undefined ? value : [...(Array.isArray(had) ? had : [had]), value];
  }
  return out;
}

const TLS_CODES = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REVOKED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
  'ERR_SSL_WRONG_VERSION_NUMBER',
]);

/**
 * Pure: `--speed-limit BYTES` and `--speed-time SEC` (curl's flags) as timeouts; absent flags
 * keep the defaults. Throws INVALID_SPEC naming the flag.
 */
export function minSpeedFromFlags(limit: unknown, time: unknown): Pick<HttpTimeouts, 'minSpeedBytes' | 'minSpeedWindowMs'> {
  const count = (flag: string, text: unknown): number | undefined => {
    if (text === undefined) return undefined;
    const n = Number(text);
    if (typeof text !== 'string' || text.trim() === '' || !Number.isInteger(n) || n < 0) {
      throw new FerryError(ErrorCode.InvalidSpec, `${flag} must be a non-negative integer, got "${String(text)}"`);
    }
    return n;
  };
  const bytes = count('--speed-limit', limit);
  const seconds = count('--speed-time', time);
  return {
    ...(bytes !== undefined ? { minSpeedBytes: bytes } : {}),
    ...(seconds !== undefined ? { minSpeedWindowMs: seconds * 1000 } : {}),
  };
}

/** Maps a got/Node error to a FerryError; `url` is only used in the message. */
export function classifyHttpError(err: unknown, url: string): FerryError {
  if (isFerryError(err)) return err;
  const e = err as { name?: string; code?: string; message?: string; response?: { statusCode?: number }; event?: string };
  const status = e.response?.statusCode;
  const where = redactUrl(url);
  if (e.name === 'HTTPError' && status !== undefined) {
    if (status === 404 || status === 410) return new FerryError(ErrorCode.SourceNotFound, `${where} answered ${status}: not found`, { details: { status } });
    if (status === 401 || status === 403) return new FerryError(ErrorCode.Unauthorized, `${where} answered ${status}: check the credentials`, { details: { status } });
    const retryable = status === 408 || status === 429 || status >= 500;
    return new FerryError(ErrorCode.SourceUnavailable, `${where} answered ${status}`, { retryable, details: { status } });
  }
  if (e.name === 'MaxRedirectsError') return new FerryError(ErrorCode.SourceUnavailable, `${where}: too many redirects`, { retryable: false });
  const code = e.code ?? '';
  if (TLS_CODES.has(code) || /certificate|self[- ]signed/i.test(e.message ?? '')) {
    return new FerryError(ErrorCode.TlsError, `TLS verification of ${where} failed: ${e.message} (give the CA bundle, or opt in to insecure)`, { cause: err });
  }
  if (e.name === 'TimeoutError') {
    const what = e.event === 'socket' ? 'no data arrived' : `timed out waiting for ${e.event ?? 'the server'}`;
    return new FerryError(ErrorCode.SourceUnavailable, `${where}: ${what} (${e.message})`, { cause: err });
  }
  if (e.name === 'ReadError' || code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || /aborted|premature/i.test(e.message ?? '')) {
    return new FerryError(ErrorCode.Truncated, `${where}: the connection broke while reading the body (${e.message})`, { cause: err });
  }
  return new FerryError(ErrorCode.SourceUnavailable, `${where}: ${e.message ?? String(err)}`, { cause: err });
}

/** Strips user:password from a URL before it reaches a message or log. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.username || u.password) {
      u.username = 'redacted';
      u.password = '';
    }
    return u.toString();
  } catch {
    return url;
  }
}

/**
 * Pure: the proxy for `url` under curl's rules: https_proxy for https, http_proxy for http,
 * nothing when the host matches no_proxy (exact, domain suffix, leading dot, or `*`).
 */
export function proxyFor(url: string, proxy: ProxySettings): string | undefined {
  const u = new URL(url);
  const chosen = u.protocol === 'https:' ? proxy.httpsProxy : proxy.httpProxy;
  if (!chosen) return undefined;
  const host = u.hostname.replace(/^\[|\]$/g, '').toLowerCase();
  const port = u.port || (u.protocol === 'https:' ? '443' : '80');
  for (const raw of (proxy.noProxy ?? '').split(',')) {
    const entry = raw.trim().toLowerCase();
    if (entry === '') continue;
    if (entry === '*') return undefined;
    // "host:port" limits the entry to one port; a bare IPv6 address has several colons.
    const m = /^([^:]+):(\d+)$/.exec(entry);
    if (m && m[2] !== port) continue;
    const name = (m ? (m[1] ?? '') : entry).replace(/^\*?\./, '');
    if (host === name || host.endsWith(`.${name}`)) return undefined;
  }
  return chosen;
}

/** Reads a PEM file, or every regular file of a directory (a mounted ConfigMap), skipping dotfiles. */
export async function loadCaBundle(path: string): Promise<string[]> {
  const info = await stat(path).catch((err: NodeJS.ErrnoException) => {
    throw new FerryError(ErrorCode.InvalidSpec, `CA bundle ${path}: ${err.message}`);
  });
  const files = info.isDirectory()
    ? (await readdir(path, { withFileTypes: true }))
        .filter((d) => !d.name.startsWith('.') && (d.isFile() || d.isSymbolicLink()))
        .map((d) => join(path, d.name))
    : [path];
  const pems: string[] = [];
  for (const file of files) {
    const text = await readFile(file, 'utf8').catch(() => '');
    if (text.includes('-----BEGIN CERTIFICATE-----')) pems.push(text);
  }
  if (pems.length === 0) throw new FerryError(ErrorCode.InvalidSpec, `CA bundle ${path} holds no PEM certificate`);
  return pems;
}

/** The agents for a proxy, loaded only when one applies (module loading is start-up time). */
async function proxyAgents(url: string, proxy: ProxySettings): Promise<{ http?: HttpAgent; https?: HttpsAgent }> {
  const through = proxyFor(url, proxy);
  if (!through) return {};
  // Plain http goes in absolute form through the proxy; https is tunnelled with CONNECT.
  if (new URL(url).protocol === 'https:') {
    const { HttpsProxyAgent } = await import('https-proxy-agent');
    return { https: new HttpsProxyAgent(through) as unknown as HttpsAgent };
  }
  const { HttpProxyAgent } = await import('http-proxy-agent');
  return { http: new HttpProxyAgent(through) };
}

function parseLength(response: Response): number | undefined {
  const header = response.headers['content-length'];
  if (header === undefined) return undefined;
  const n = Number(header);
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

interface Opened {
  readonly request: ReturnType<typeof got.stream>;
  readonly response: Response;
}

/** Sends one request and resolves once its response headers arrive (or rejects, classified). */
async function send(options: HttpSourceOptions, ca: string[] | undefined, perRequest: Record<string, string>): Promise<Opened> {
  const agent = await proxyAgents(options.url, options.proxy);
  const extra = headerObject(options.extraHeaders);
  const request = got.stream(options.url, {
    retry: { limit: 0 },
    decompress: false,
    followRedirect: true,
    maxRedirects: 10,
    throwHttpErrors: true,
    headers: { 'user-agent': 'ferry-importer', ...options.headers, ...extra, ...perRequest },
    hooks: {
      // curl's rule for --location without --location-trusted: the extra headers go to the
      // origin they were given for, on each hop that leads there, and to no other.
      beforeRedirect: [
        (next) => {
          const trusted = sameOrigin(next.url?.toString() ?? '', options.url);
          for (const [name, value] of Object.entries(extra)) {
            if (trusted) next.headers[name] = value;
            else delete next.headers[name];
          }
        },
      ],
    },
    timeout: {
      connect: options.timeouts.connectMs,
      secureConnect: options.timeouts.connectMs,
      response: options.timeouts.firstByteMs,
      socket: options.timeouts.idleMs,
    },
    https: {
      rejectUnauthorized: !options.insecureTls,
      ...(ca ? { certificateAuthority: ca } : {}),
    },
    agent,
    ...(options.credentials ? { username: options.credentials.username, password: options.credentials.password } : {}),
  });
  // Errors after the headers surface through iteration; this listener only keeps an early one
  // from being reported as unhandled in the gap before iteration starts.
  request.on('error', () => undefined);
  const response = await new Promise<Response>((resolve, reject) => {
    request.once('response', resolve);
    request.once('error', (err) => reject(classifyHttpError(err, options.url)));
  });
  return { request, response };
}

/** Pure: whether two URLs share scheme, host and port. */
export function sameOrigin(a: string, b: string): boolean {
  try {
    return new URL(a).origin === new URL(b).origin;
  } catch {
    return false;
  }
}

/**
 * Pure: the options for requests sent straight to `url` (where a redirect led). Credentials and
 * authorization or cookie headers go only to the origin they were given for, as got does itself
 * when it follows a redirect to another origin; so do the extra headers.
 */
export function optionsFor(options: HttpSourceOptions, url: string): HttpSourceOptions {
  if (sameOrigin(url, options.url)) return { ...options, url };
  const headers = Object.fromEntries(Object.entries(options.headers ?? {}).filter(([name]) => !/^(authorization|cookie)$/i.test(name)));
  const { credentials: _dropped, extraHeaders: _alsoDropped, ...rest } = options;
  return { ...rest, url, headers };
}

/** What identifies one version of the resource: a resumed transfer must see the same. */
function validatorOf(response: Response): string | undefined {
  const etag = response.headers.etag;
  if (etag && !etag.startsWith('W/')) return `etag ${etag}`;
  const modified = response.headers['last-modified'];
  return modified ? `last-modified ${modified}` : undefined;
}

/** Pure: the start offset a `Content-Range: bytes a-b/n` header names, if well formed. */
export function contentRangeStart(header: string | undefined): number | undefined {
  const m = /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(header ?? '');
  return m ? Number(m[1]) : undefined;
}

/** A hard ceiling on resumptions of one transfer, progress or not. */
const MAX_RESUMES = 10_000;
/** Longest wait between two resumes that made no progress. */
const MAX_RESUME_BACKOFF_MS = 30_000;

export interface ResumePolicy {
  /** Breaks in a row without new bytes that are resumed (0: a broken transfer fails, and the engine starts over). */
  readonly attempts: number;
  readonly backoffMs: number;
  readonly sleep: (ms: number) => Promise<void>;
  /** Told of each resumption (for logs and tests). */
  readonly onResume?: (offset: number, attempt: number, cause: FerryError) => void;
}

/** One response body being read, and how to let go of it. */
export interface BodyPart {
  readonly body: AsyncIterable<Buffer>;
  close(): void;
}

/** How a broken body continues: `reopen` must serve the same version (a validator) or throw. */
export interface Resumption {
  readonly policy: ResumePolicy;
  reopen(offset: number): Promise<BodyPart>;
}

/** How one body is read: errors classified, resumed when it breaks, held to a minimum speed. */
export interface BodyReading {
  readonly classify: (err: unknown) => FerryError;
  readonly resume?: Resumption;
  /** Fails a part that delivers too little while the reader waits (see min-speed.ts). */
  readonly minSpeed?: MinSpeed;
  /** For the too-slow message: the source, credentials removed. */
  readonly where?: string;
}

/**
 * Hands on `first`'s bytes, errors classified, and lets go of the body however the reading ends.
 * When the body breaks with a retryable error (reset, early close, idle timeout, too slow) and
 * `resume` is given, continues from the bytes already handed on: the consumer sees one
 * uninterrupted stream.
 */
export async function* resumingBody(first: BodyPart, reading: BodyReading): ByteStream {
  const { classify, resume } = reading;
  const minSpeed = reading.minSpeed ?? { bytesPerSecond: 0, windowMs: 0 };
  // A part cut for being too slow shows progress only if it delivered a window's worth.
  const slowProgress = Math.max(1, minimumBytes(minSpeed));
  let current = first;
  let received = 0;
  // Attempts count breaks in a row without progress: a server that drops the connection every
  // few hundred MiB but keeps delivering is resumed as often as it takes, without growing waits.
  let stalled = 0;
  let resumes = 0;
  let receivedAtLastBreak = -1;
  try {
    for (;;) {
      const part = current;
      const watch = watchSpeed(minSpeed, reading.where ?? 'the source', () => part.close());
      try {
        for await (const chunk of current.body) {
          watch?.received(chunk.length);
          if (watch?.failure) throw watch.failure;
          received += chunk.length;
          yield chunk;
          watch?.reading();
        }
        // A body closed by the check may end quietly rather than with an error.
        if (watch?.failure) throw watch.failure;
        return;
      } catch (err) {
        const error = watch?.failure ?? classify(err);
        current.close();
        // A trickle always brings a few new bytes: it must not count as progress, or it would
        // be resumed without end.
        const progressed = isTooSlow(error) ? received - Math.max(0, receivedAtLastBreak) >= slowProgress : received > receivedAtLastBreak;
        stalled = progressed ? 1 : stalled + 1;
        receivedAtLastBreak = received;
        resumes += 1;
        if (resume === undefined || !error.retryable || stalled > resume.policy.attempts || resumes > MAX_RESUMES) throw error;
        const { policy } = resume;
        policy.onResume?.(received, resumes, error);
        // Reconnect at once after a break that followed progress; back off while nothing arrives.
        if (stalled > 1) await policy.sleep(backoffMs(stalled - 1, policy.backoffMs, MAX_RESUME_BACKOFF_MS));
        try {
          current = await resume.reopen(received);
        } catch (reopenError) {
          // The break is the real cause; say why resuming did not help.
          throw new FerryError(error.code, `${error.message}; resuming failed: ${(reopenError as Error).message}`, { cause: reopenError });
        }
      } finally {
        watch?.stop();
      }
    }
  } finally {
    current.close();
  }
}

/**
 * Opens the URL. When the body breaks (reset, early close, idle timeout) and the server serves
 * byte ranges with a strong validator that has not changed, the transfer continues from the bytes
 * already handed on instead of starting over; the consumer sees one uninterrupted stream.
 */
export async function openHttp(options: HttpSourceOptions, resume?: ResumePolicy): Promise<OpenedSource> {
  const ca = options.caPath !== undefined ? [...rootCertificates, ...(await loadCaBundle(options.caPath))] : undefined;
  const first = await send(options, ca, {});
  const url = options.url;
  // Later requests (resume, ranges, probes) go straight to where the first one ended up: a
  // redirector could send each of them to a different mirror.
  const direct = optionsFor(options, first.response.url || options.url);
  const length = parseLength(first.response);
  const acceptsRanges = /bytes/i.test(String(first.response.headers['accept-ranges'] ?? ''));
  const validator = validatorOf(first.response);
  const resumable = resume !== undefined && resume.attempts > 0 && acceptsRanges && length !== undefined && validator !== undefined;

  const classify = (err: unknown): FerryError => classifyHttpError(err, url);
  const reading: BodyReading = { classify, minSpeed: minSpeedOf(options.timeouts), where: redactUrl(url) };
  const bodyOf = (opened: Opened): BodyPart => ({ body: opened.request, close: () => opened.request.destroy() });

  async function reopen(offset: number): Promise<Opened> {
    const ifRange = first.response.headers.etag ?? first.response.headers['last-modified'] ?? '';
    const next = await send(direct, ca, { range: `bytes=${offset}-`, 'if-range': ifRange });
    const start = contentRangeStart(next.response.headers['content-range'] as string | undefined);
    if (next.response.statusCode !== 206 || start !== offset || validatorOf(next.response) !== validator) {
      next.request.destroy();
      // The resource changed or the server will not resume: the whole import starts over.
      throw new FerryError(ErrorCode.SourceUnavailable, `${redactUrl(url)} cannot resume at byte ${offset} (status ${next.response.statusCode}, the image may have changed)`);
    }
    return next;
  }

  async function openRange(start: number, end: number): Promise<ByteStream> {
    const ifRange = first.response.headers.etag ?? first.response.headers['last-modified'] ?? '';
    const part = await send(direct, ca, { range: `bytes=${start}-${end}`, 'if-range': ifRange });
    if (part.response.statusCode !== 206 || contentRangeStart(part.response.headers['content-range'] as string | undefined) !== start || validatorOf(part.response) !== validator) {
      part.request.destroy();
      throw new FerryError(ErrorCode.SourceUnavailable, `${redactUrl(url)} did not serve bytes ${start}-${end} of the same image (status ${part.response.statusCode})`);
    }
    return resumingBody(bodyOf(part), reading);
  }

  return {
    stream: resumingBody(bodyOf(first), resumable ? { ...reading, resume: { policy: resume, reopen: async (offset) => bodyOf(await reopen(offset)) } } : reading),
    ...(length !== undefined ? { size: length } : {}),
    ...(acceptsRanges && length !== undefined && validator !== undefined ? { openRange } : {}),
    acceptsRanges,
    description: redactUrl(first.response.url || options.url),
    remoteUrl: first.response.url || options.url,
    ...(acceptsRanges ? { measureLatency } : {}),
    ...(acceptsRanges && length !== undefined ? { measureChunk, measureReuse } : {}),
  };

  async function measureReuse(): Promise<number> {
    const started = performance.now();
    // The second byte: told apart from the latency probe's in a server's log.
    const probe = await send(direct, ca, { range: 'bytes=1-1' });
    for await (const chunk of probe.request) void chunk;
    return performance.now() - started;
  }

  async function measureChunk(bytes: number, together = 1, enoughMs = 0): Promise<number> {
    const end = Math.min(length ?? bytes, bytes) - 1;
    const read = async (): Promise<void> => {
      const probe = await send(direct, ca, { range: `bytes=0-${end}` });
      for await (const chunk of probe.request) void chunk;
    };
    return warmLatencyMs(async () => void (await Promise.all(Array.from({ length: together }, read))), together > 1 ? 2 : 3, enoughMs);
  }

  async function measureLatency(enoughMs = 0): Promise<number> {
    return warmLatencyMs(async () => {
      const probe = await send(direct, ca, { range: 'bytes=0-0' });
      // Read to the end, so the connection goes back to the pool for the next probe.
      for await (const chunk of probe.request) void chunk;
    }, 3, enoughMs);
  }
}
