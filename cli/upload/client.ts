/**
 * The upload client: sends one image file to an upload proxy (Ferry's or CDI's) the way virtctl
 * does, and resumably where the proxy offers it.
 *
 * Per attempt (at most `retry`, as virtctl's `--retry`): `HEAD /v1beta1/upload-resumable` (Ferry's
 * tus path, ADR 0010); if it answers with an `Upload-Offset`, PATCH from that offset until the
 * server has every byte, asking for the offset again after a broken connection. Otherwise
 * virtctl's one-shot: `HEAD /v1beta1/upload-async` (200 → async, anything else → sync
 * `/v1beta1/upload`) and one POST of the whole file, `application/octet-stream` with
 * Content-Length. Only 200 (204 for tus) is success; a 401 before the token was ever accepted
 * aborts (virtctl's first 401: the token is wrong, not the network); a later one (an expired token)
 * gets a new token, at most 3 times; everything else is retried. Bodies are streamed from the file with backpressure: the socket pulls, the file is read.
 */

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open } from 'node:fs/promises';
import { request as httpsRequest, type RequestOptions } from 'node:https';
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { connect } from 'node:net';
import { Transform } from 'node:stream';
import { ErrorCode, FerryError, isErrorCode, toFerryError } from '../../src/errors.js';
import { byteCountOf, encodeUploadMetadata, ERROR_CODE_HEADER, FINGERPRINT_KEY, TUS_CONTENT_TYPE, TUS_VERSION, TusHeader, UploadPath } from '../../src/contract/upload-api.js';


export const UploadMethod = { Resumable: 'resumable', Async: 'async', Sync: 'sync' } as const;
export type UploadMethod = (typeof UploadMethod)[keyof typeof UploadMethod];

export interface UploadClientOptions {
  /** https://host:port, with or without a path (virtctl appends the upload path unless it is there). */
  readonly proxyUrl: string;
  readonly file: string;
  readonly size: number;
  /** A token for the target; called again after a 401 on a later attempt. */
  readonly token: () => Promise<string>;
  readonly insecure: boolean;
  /** PEM CA bundle(s) to verify the proxy with (else the system's). */
  readonly ca?: string | Buffer | readonly (string | Buffer)[];
  /** The name the proxy's certificate must hold when it is not the URL's host (a port-forward's 127.0.0.1). */
  readonly servername?: string;
  /** Attempts, as virtctl's --retry (default 5). */
  readonly retry: number;
  /** Bytes the server has, after each chunk sent (and after a resume: the offset it reported). */
  readonly onProgress?: (bytes: number) => void;
  readonly onMessage?: (text: string) => void;
  readonly sleep?: (ms: number) => Promise<void>;
  readonly random?: () => number;
  /** Whether to try the resumable path first (default true). */
  readonly resumable?: boolean;
}

export interface UploadOutcome {
  readonly method: UploadMethod;
  /**
   * Body bytes written to the socket over all attempts (a resumable upload resends only what the
   * server lost). Bytes still in the kernel's send buffer when a connection breaks count here too.
   */
  readonly bytesWritten: number;
  readonly attempts: number;
  readonly resumes: number;
}

interface Answer {
  readonly status: number;
  readonly headers: IncomingMessage['headers'];
  readonly body: string;
}

/** How much of each end of the file the fingerprint hashes. */
export const FINGERPRINT_SAMPLE_BYTES = 1024 * 1024;

/**
 * Pure: the fingerprint of a file of `size` bytes from its first and last bytes (at most
 * FINGERPRINT_SAMPLE_BYTES each; the whole file when it is smaller than both): `v1:<size>:<sha256>`.
 * Cheap for any size, and two images of one length differ in their first or last MiB in practice
 * (a disk's partition table and boot code at the start, a GPT backup or filesystem tail at the end).
 */
export function fingerprintFrom(size: number, head: Buffer, tail: Buffer): string {
  const hash = createHash('sha256').update(`${size}\n`).update(head).update(tail);
  return `v1:${size}:${hash.digest('hex')}`;
}

/** Reads the ends of `file` and fingerprints it (sent with every tus request, ADR 0010). */
export async function fileFingerprint(file: string, size: number): Promise<string> {
  const handle = await open(file, 'r');
  try {
    const read = async (start: number, length: number): Promise<Buffer> => {
      const buffer = Buffer.alloc(Math.max(0, length));
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, start);
      return buffer.subarray(0, bytesRead);
    };
    const head = await read(0, Math.min(size, FINGERPRINT_SAMPLE_BYTES));
    const tailStart = Math.max(head.length, size - FINGERPRINT_SAMPLE_BYTES);
    return fingerprintFrom(size, head, await read(tailStart, size - tailStart));
  } catch (err) {
    throw new FerryError(ErrorCode.SourceNotFound, `cannot read ${file}: ${(err as Error).message}`, { cause: err });
  } finally {
    await handle.close();
  }
}

/** Pure: the URL of `path` on the proxy (virtctl: appended unless the URL already ends with it). */
export function uploadUrl(proxyUrl: string, path: string): URL {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(proxyUrl) ? proxyUrl : `https://${proxyUrl}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new FerryError(ErrorCode.InvalidSpec, `the upload proxy URL "${proxyUrl}" is not a URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new FerryError(ErrorCode.InvalidSpec, `the upload proxy URL must be https:// (got ${url.protocol})`);
  const base = url.pathname.replace(/\/+$/, '');
  for (const known of [UploadPath.Async, UploadPath.Sync, UploadPath.Resumable]) {
    if (base.endsWith(known)) {
      url.pathname = base.slice(0, -known.length) + path;
      return url;
    }
  }
  url.pathname = base + path;
  return url;
}

/** How long the reachability probe waits for a TCP connection to the proxy. */
export const PROBE_TIMEOUT_MS = 10_000;

/**
 * Whether a TCP connection to the proxy opens within `timeoutMs`: undefined if it does, else why
 * not. The commonest upload failure is a proxy address not reachable from the user's machine (a
 * ClusterIP): found here in seconds, not after every retry's connection timeout.
 */
export function proxyUnreachable(proxyUrl: string, timeoutMs = PROBE_TIMEOUT_MS): Promise<string | undefined> {
  const url = uploadUrl(proxyUrl, '');
  const port = Number(url.port || (url.protocol === 'http:' ? 80 : 443));
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  return new Promise((resolve) => {
    const socket = connect({ host, port, timeout: timeoutMs });
    const done = (why: string | undefined): void => {
      socket.destroy();
      resolve(why);
    };
    socket.once('connect', () => done(undefined));
    socket.once('error', (err: NodeJS.ErrnoException) => done(err.code ?? err.message));
    socket.once('timeout', () => done(`no connection within ${Math.round(timeoutMs / 1000)} s`));
  });
}

/** Pure: the error an answer that is not success means, with the server's reason and code. */
export function answerError(status: number, body: string, headers: IncomingMessage['headers'] = {}): FerryError {
  const sent = headers[ERROR_CODE_HEADER];
  const reason = body.trim() === '' ? `HTTP ${status}` : body.trim().slice(0, 2000);
  const message = `upload refused (HTTP ${status}): ${reason}`;
  if (typeof sent === 'string' && isErrorCode(sent)) return new FerryError(sent, message, { retryable: status >= 500 });
  if (status === 401 || status === 403) return new FerryError(ErrorCode.Unauthorized, `authentication failed: ${message}`, { retryable: false });
  if (status === 409) return new FerryError(ErrorCode.TargetError, message, { retryable: false });
  if (status >= 500) return new FerryError(ErrorCode.SourceUnavailable, message, { retryable: true });
  return new FerryError(ErrorCode.InvalidSpec, message, { retryable: true });
}

function transportError(err: unknown): FerryError {
  const e = err as NodeJS.ErrnoException;
  if (e instanceof FerryError) return e;
  if (typeof e.code === 'string' && /CERT|SSL|SELF_SIGNED|UNABLE_TO_VERIFY/i.test(e.code)) {
    return new FerryError(ErrorCode.TlsError, `cannot verify the upload proxy's certificate (${e.code}): ${e.message}; pass --insecure or trust its CA`, { cause: err, retryable: true });
  }
  return new FerryError(ErrorCode.SourceUnavailable, `cannot reach the upload proxy: ${e.message}`, { cause: err, retryable: true });
}

interface Tls {
  readonly insecure: boolean;
  readonly ca?: string | Buffer | readonly (string | Buffer)[];
  readonly servername?: string;
}

/** One HTTP request; `body` (a file range) is streamed with backpressure, counting into `sent`. */
async function exchange(
  url: URL,
  method: string,
  headers: Record<string, string>,
  tls: Tls,
  body?: { readonly file: string; readonly start: number; readonly end: number; readonly sent: (n: number) => void },
): Promise<Answer> {
  const options: RequestOptions = {
    method,
    headers,
    agent: false,
    ...(url.protocol === 'https:' ? { rejectUnauthorized: !tls.insecure, ...(tls.ca !== undefined ? { ca: tls.ca as string | Buffer | (string | Buffer)[] } : {}), ...(tls.servername !== undefined ? { servername: tls.servername } : {}) } : {}),
  };
  const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise<Answer>((resolve, reject) => {
    const req = send(url, options);
    let settled = false;
    // Once an answer has come, a broken connection ends it with what it said (a server that refused
    // the body may cut the connection after its answer).
    let answered: (() => void) | undefined;
    const fail = (err: unknown): void => {
      if (settled) return;
      if (answered) return answered();
      settled = true;
      req.destroy();
      reject(transportError(err));
    };
    req.on('error', fail);
    let stopBody = (): void => undefined;
    req.on('response', (res) => {
      const status = res.statusCode ?? 0;
      const chunks: Buffer[] = [];
      let kept = 0;
      const finish = (): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        // An early answer (a refusal): stop sending the rest of the body.
        req.destroy();
        resolve({ status, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') });
      };
      // A refusal comes before the body is all sent, and the proxy stops reading the rest (it holds
      // the connection up to 10 s, then cuts it). Stop sending at once, and take what the answer said.
      let timer: NodeJS.Timeout | undefined;
      if (status < 200 || status >= 300) {
        stopBody();
        answered = finish;
        timer = setTimeout(finish, 1000);
      }
      res.on('data', (c: Buffer) => {
        if (kept < 64 * 1024) chunks.push(c);
        kept += c.length;
      });
      res.on('error', fail);
      res.on('aborted', () => fail(new Error('the answer was cut off')));
      res.on('end', finish);
    });
    if (!body || body.end <= body.start) {
      req.end();
      return;
    }
    const file = createReadStream(body.file, { start: body.start, end: body.end - 1, highWaterMark: 1 << 20 });
    const counter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        body.sent(chunk.length);
        done(null, chunk);
      },
    });
    stopBody = () => {
      file.unpipe(counter);
      counter.unpipe(req);
      file.destroy();
    };
    file.on('error', fail);
    file.pipe(counter).pipe(req);
  });
}

export async function uploadImage(options: UploadClientOptions): Promise<UploadOutcome> {
  const sleep = options.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const random = options.random ?? Math.random;
  const say = options.onMessage ?? (() => undefined);
  const tls: Tls = { insecure: options.insecure, ...(options.ca !== undefined ? { ca: options.ca } : {}), ...(options.servername !== undefined ? { servername: options.servername } : {}) };
  const retry = Math.max(1, options.retry);
  let token = await options.token();
  let refreshes = 0;
  // A 401 before the token was ever accepted means a wrong token: abort (virtctl: a first 401).
  // After that it is an expired one (tokens live 5 minutes; a resumed upload may take hours).
  let tokenWorked = false;
  let bytesWritten = 0;
  let resumes = 0;
  let lastError: FerryError | undefined;
  // Once the server has offered tus, an attempt never falls back to a one-shot path: that would
  // start over, and the server holds a staged upload that refuses one (503) anyway.
  let tusSeen = false;
  const auth = (): Record<string, string> => ({ authorization: `Bearer ${token}` });
  // Which file this is: the server resumes a staged upload only for the same one.
  const metadata: Record<string, string> = options.resumable !== false ? { [TusHeader.Metadata]: encodeUploadMetadata({ [FINGERPRINT_KEY]: await fileFingerprint(options.file, options.size) }) } : {};

  for (let attempt = 1; attempt <= retry; attempt += 1) {
    if (attempt > 1) await sleep(Math.floor(attempt * random() * 50));
    try {
      if (options.resumable !== false) {
        const probe = await exchange(uploadUrl(options.proxyUrl, UploadPath.Resumable), 'HEAD', { ...auth(), ...metadata, [TusHeader.Resumable]: TUS_VERSION }, tls);
        if (probe.status === 401) throw answerError(401, probe.body || 'the token was refused', probe.headers);
        if (probe.status === 409) throw answerError(409, probe.body || 'the upload is already complete', probe.headers);
        if (tusSeen && probe.status !== 200) {
          await sleep(1000);
          throw answerError(probe.status, probe.body || 'the resumable path did not answer', probe.headers);
        }
        if (probe.status === 200 && byteCountOf(probe.headers[TusHeader.Offset]) !== undefined) {
          tokenWorked = true;
          tusSeen = true;
          const result = await resumableUpload(options, tls, () => ({ ...auth(), ...metadata }), probe, (n) => (bytesWritten += n), sleep, say);
          resumes += result.resumes;
          if (result.done) return { method: UploadMethod.Resumable, bytesWritten, attempts: attempt, resumes };
          // Breaks that made progress resume without using an attempt; this one made none.
          throw result.error;
        }
      }
      const async = await exchange(uploadUrl(options.proxyUrl, UploadPath.Async), 'HEAD', auth(), tls).then((a) => a.status === 200, () => false);
      if (async) tokenWorked = true;
      const method = async ? UploadMethod.Async : UploadMethod.Sync;
      options.onProgress?.(0);
      let sent = 0;
      const answer = await exchange(uploadUrl(options.proxyUrl, async ? UploadPath.Async : UploadPath.Sync), 'POST', { ...auth(), 'content-type': 'application/octet-stream', 'content-length': String(options.size) }, tls, {
        file: options.file,
        start: 0,
        end: options.size,
        sent: (n) => {
          bytesWritten += n;
          sent += n;
          options.onProgress?.(sent);
        },
      });
      if (answer.status === 200) return { method, bytesWritten, attempts: attempt, resumes };
      throw answerError(answer.status, answer.body, answer.headers);
    } catch (err) {
      const error = toFerryError(err);
      if (error.code === ErrorCode.Unauthorized) {
        if (!tokenWorked || refreshes >= 3) throw error;
        refreshes += 1;
        say(`the upload token was refused (${error.message}); asking for a new one`);
        token = await options.token();
      } else if (error.code === ErrorCode.TargetError && !error.retryable) {
        throw error;
      }
      lastError = error;
      say(`upload attempt ${attempt} of ${retry} failed: ${error.message}`);
    }
  }
  const cause = lastError ?? new FerryError(ErrorCode.SourceUnavailable, 'no attempt was made');
  throw new FerryError(cause.code, `error uploading image after ${retry} retries: ${cause.message}`, { cause, retryable: false });
}

/**
 * The tus loop: PATCH from the server's offset until it has every byte. A broken request is
 * followed by a HEAD and a PATCH from the new offset, without limit while the offset advances and
 * at most 5 times in a row without progress (the attempt then fails).
 */
async function resumableUpload(
  options: UploadClientOptions,
  tls: Tls,
  auth: () => Record<string, string>,
  first: Answer,
  sent: (n: number) => void,
  sleep: (ms: number) => Promise<void>,
  say: (text: string) => void,
): Promise<{ readonly done: true; readonly resumes: number } | { readonly done: false; readonly resumes: number; readonly error: FerryError }> {
  const url = uploadUrl(options.proxyUrl, UploadPath.Resumable);
  const tus = { [TusHeader.Resumable]: TUS_VERSION };
  let answer = first;
  let resumes = 0;
  let stalls = 0;
  let lastOffset = -1;
  for (let round = 0; ; round += 1) {
    const offset = byteCountOf(answer.headers[TusHeader.Offset]);
    const known = byteCountOf(answer.headers[TusHeader.Length]);
    if (answer.status !== 200 || offset === undefined) return { done: false, resumes, error: answerError(answer.status, answer.body, answer.headers) };
    if (known !== undefined && known !== options.size) {
      return { done: false, resumes, error: new FerryError(ErrorCode.InvalidSpec, `the server holds part of another upload (${known} bytes, this file has ${options.size}); it cannot be resumed with this file`, { retryable: false }) };
    }
    if (offset >= options.size) return { done: true, resumes };
    if (offset > lastOffset) stalls = 0;
    else if ((stalls += 1) >= 5) return { done: false, resumes, error: new FerryError(ErrorCode.SourceUnavailable, `the upload makes no progress at byte ${offset}`) };
    if (round > 0) {
      resumes += 1;
      say(`resuming the upload at byte ${offset} of ${options.size}`);
    }
    lastOffset = offset;
    options.onProgress?.(offset);
    let position = offset;
    let patched: Answer | undefined;
    let broke: FerryError | undefined;
    try {
      patched = await exchange(
        url,
        'PATCH',
        { ...auth(), ...tus, 'content-type': TUS_CONTENT_TYPE, [TusHeader.Offset]: String(offset), [TusHeader.Length]: String(options.size), 'content-length': String(options.size - offset) },
        tls,
        {
          file: options.file,
          start: offset,
          end: options.size,
          sent: (n) => {
            sent(n);
            position += n;
            options.onProgress?.(position);
          },
        },
      );
    } catch (err) {
      broke = toFerryError(err);
    }
    if (patched && (patched.status === 204 || patched.status === 200) && byteCountOf(patched.headers[TusHeader.Offset]) === options.size) return { done: true, resumes };
    if (patched && patched.status === 401) return { done: false, resumes, error: answerError(401, patched.body, patched.headers) };
    if (patched && patched.status !== 409 && patched.status !== 423 && patched.status < 500 && patched.status !== 204) {
      return { done: false, resumes, error: answerError(patched.status, patched.body, patched.headers) };
    }
    if (broke) say(`the connection broke at byte ${position}: ${broke.message}`);
    // The server may not have seen the break yet (423): give it a moment, then ask where it is.
    if (patched?.status === 423 || broke) await sleep(200 * Math.min(5, stalls + 1));
    answer = await headUntilAnswered(url, { ...auth(), ...tus }, tls, sleep, say);
  }
}

/** How many times a HEAD is asked again, a second apart, while the proxy or server cannot answer it. */
export const RESUME_HEAD_TRIES = 60;

/**
 * The HEAD after a break. While the upload server is being replaced (its pod died; the proxy then
 * fails to dial it, or waits 10 s for the new one and answers 503) there is nobody to answer: ask
 * again, a second apart, at most `RESUME_HEAD_TRIES` times. The new server resumes what the old one
 * staged (ADR 0010), so the wait saves the bytes already sent.
 */
async function headUntilAnswered(
  url: URL,
  headers: Record<string, string>,
  tls: Tls,
  sleep: (ms: number) => Promise<void>,
  say: (text: string) => void,
): Promise<Answer> {
  let answer: Answer = { status: 0, headers: {}, body: '' };
  for (let tries = 0; tries < RESUME_HEAD_TRIES; tries += 1) {
    if (tries > 0) await sleep(1000);
    answer = await exchange(url, 'HEAD', headers, tls).catch((err: unknown) => ({ status: 0, headers: {}, body: toFerryError(err).message }));
    if (answer.status !== 0 && answer.status < 500) return answer;
    if (tries === 0) say(`the upload server does not answer (${answer.status === 0 ? answer.body : `HTTP ${answer.status}`}); waiting for it to come back`);
  }
  return answer;
}

