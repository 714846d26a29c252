/**
 * The clone source: the source volume as a clone stream (src/contract/clone-stream.ts), POSTed to
 * the target over HTTPS with a client certificate. Only allocated data travels: a disk file's
 * extents come from SEEK_DATA/SEEK_HOLE (disk-extents.ts), a device's from zero detection; holes
 * travel as lengths. Memory is READ_BUFFERS reads of 4 MiB, reused: a buffer is read into again
 * only once the socket has sent everything that points into it (the write callbacks), so the
 * source allocates no garbage per read and a disk read overlaps the sending of the one before.
 */

import { once } from 'node:events';
import type { FileHandle } from 'node:fs/promises';
import { request } from 'node:https';
import type { ClientRequest, IncomingMessage } from 'node:http';
import { ErrorCode, FerryError, isErrorCode, toFerryError } from '../src/errors.js';
import { CLONE_ERROR_CODE_HEADER, CLONE_MEDIA_TYPE, CloneAnswer, CloneStreamEncoder, SourceKind } from '../src/contract/clone-stream.js';
import type { CloneSourceConfig } from '../src/contract/clone-env.js';
import { DIRECT_ALIGN, type DirectHandle, openDirect, readDirect } from '../src/io/direct-io.js';
import { type Extent, openSourceDisk, READ_CHUNK, type SourceDisk, sourceExtents, splitZeros } from './disk-extents.js';
import { packArchive, planArchive } from './archive-pack.js';

export interface SendCounters {
  /** Bytes of the stream sent (what crossed the wire, before TLS). */
  wireBytes: number;
  /** Bytes of disk data in it. */
  dataBytes: number;
}

/** Reads in flight at most: one being read, the others queued in the socket. */
export const READ_BUFFERS = 3;

/**
 * A few read buffers, each handed out again only when nothing still points into it. The reader's
 * `take` counts as one hold, each piece the sender queues as another (`hold`); the reader lets go
 * once it has yielded the pieces of its read, each write callback when its piece is sent
 * (`release`), and the buffer is free when the count is back at zero. `fail` wakes a waiting
 * reader when the connection is gone (a callback that will never come).
 */
export class ReadBuffers {
  private readonly free: Buffer[] = [];
  private readonly holds = new Map<ArrayBufferLike, number>();
  private readonly owned = new Map<ArrayBufferLike, Buffer>();
  private waiter: { resolve: (b: Buffer) => void; reject: (e: unknown) => void } | undefined;
  private failure: unknown;

  /** `given`: the buffers to use (each on its own ArrayBuffer, as direct-io's are), else `count` fresh ones of `size` bytes. */
  constructor(count: number, size: number, given?: readonly Buffer[]) {
    for (let i = 0; i < count; i += 1) {
      const b = given?.[i] ?? Buffer.allocUnsafeSlow(size); // its own ArrayBuffer, so a piece names its buffer
      this.free.push(b);
      this.owned.set(b.buffer, b);
    }
  }

  async take(): Promise<Buffer> {
    if (this.failure !== undefined) throw this.failure;
    const b = this.free.shift() ?? (await new Promise<Buffer>((resolve, reject) => (this.waiter = { resolve, reject })));
    this.holds.set(b.buffer, 1);
    return b;
  }

  hold(piece: Buffer): void {
    const n = this.holds.get(piece.buffer);
    if (n !== undefined) this.holds.set(piece.buffer, n + 1);
  }

  release(piece: Buffer): void {
    const n = this.holds.get(piece.buffer);
    if (n === undefined) return;
    if (n > 1) return void this.holds.set(piece.buffer, n - 1);
    this.holds.delete(piece.buffer);
    const b = this.owned.get(piece.buffer) as Buffer;
    const w = this.waiter;
    this.waiter = undefined;
    if (w !== undefined) w.resolve(b);
    else this.free.push(b);
  }

  fail(err: unknown): void {
    this.failure ??= err;
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(err);
  }
}

/**
 * The stream of a disk (file or device), from its extents (sourceExtents), read into `buffers` (by
 * default fresh ones). `direct`: the disk opened O_DIRECT, `buffers` being its aligned ones
 * (src/io/direct-io.ts); aligned reads go through it, the rest through the disk's own handle.
 */
export async function* diskStream(disk: SourceDisk, extents: readonly Extent[], counters: SendCounters, buffers?: ReadBuffers, direct?: FileHandle): AsyncGenerator<Buffer> {
  const encoder = new CloneStreamEncoder({ kind: disk.kind, size: disk.size, blockSize: disk.blockSize });
  yield* encoder.start();
  for (const extent of extents) {
    if (!extent.data) {
      yield* encoder.hole(extent.offset, extent.length);
      continue;
    }
    for (let at = extent.offset; at < extent.offset + extent.length; ) {
      const want = Math.min(READ_CHUNK, extent.offset + extent.length - at);
      const whole = buffers !== undefined ? await buffers.take() : Buffer.allocUnsafe(want);
      const buf = whole.subarray(0, want);
      const directly = direct !== undefined ? await readDirect(direct, whole, want, at) : undefined;
      const bytesRead = directly ?? (await disk.handle.read(buf, 0, want, at)).bytesRead;
      if (bytesRead !== want) throw new FerryError(ErrorCode.SourceUnavailable, `the source ended at ${at + bytesRead}, inside its size ${disk.size}: it changed during the clone`);
      for (const piece of splitZeros(buf, at)) {
        yield* piece.zero ? encoder.hole(piece.offset, piece.bytes.length) : encoder.data(piece.offset, piece.bytes);
      }
      buffers?.release(whole); // the reader's hold: the buffer is free once its queued pieces are sent
      at += want;
    }
  }
  yield* encoder.end();
  counters.dataBytes = encoder.dataBytes;
}

/** The stream of a directory tree: its tar as sequential data extents. */
export async function* archiveStream(root: string, counters: SendCounters): AsyncGenerator<Buffer> {
  const plan = await planArchive(root);
  const encoder = new CloneStreamEncoder({ kind: SourceKind.Archive, size: plan.contentBytes, blockSize: 1 });
  yield* encoder.start();
  let offset = 0;
  for await (const chunk of packArchive(root, plan)) {
    yield* encoder.data(offset, chunk as Buffer);
    offset += (chunk as Buffer).length;
  }
  yield* encoder.end();
  counters.dataBytes = encoder.dataBytes;
}

/**
 * What the socket may hold queued before the sender waits for it to drain. A disk stream never
 * reaches it: its read buffers bound it (READ_BUFFERS × READ_CHUNK of data and the records'
 * headers), so the next read runs while the socket sends the others. Waiting for `drain` there
 * (which comes only once the queue is empty) left the socket idle during every read: a 1 GiB
 * clone spent 1.5 s waiting for drains and 1.5 s reading (bench/README.md, "The clone reads and
 * writes O_DIRECT"). This bounds an archive's stream.
 */
const QUEUED_LIMIT = (READ_BUFFERS + 1) * READ_CHUNK;

/**
 * Writes the stream into the request and ends it. Pieces of the read buffers are queued without a
 * copy and released by their write callbacks; the sender waits for `drain` only when more than
 * QUEUED_LIMIT is queued. Stops early, without ending the request, when `stopped()` says the
 * target has already answered.
 */
async function sendStream(stream: AsyncIterable<Buffer>, req: ClientRequest, buffers: ReadBuffers, counters: SendCounters, stopped: () => boolean, closed: AbortSignal): Promise<void> {
  for await (const chunk of stream) {
    if (stopped()) return;
    counters.wireBytes += chunk.length;
    buffers.hold(chunk);
    req.write(chunk, () => buffers.release(chunk));
    if (req.writableLength > QUEUED_LIMIT) await once(req, 'drain', { signal: closed });
  }
  if (stopped()) return;
  await new Promise<void>((resolve) => req.end(resolve));
}

export interface CloneSourceDeps {
  readonly config: CloneSourceConfig;
  /** PEM: the client key and certificate, and the CA of the target's server certificate. */
  readonly tls: { readonly key: string | Buffer; readonly cert: string | Buffer; readonly serverCa: string | Buffer };
  readonly signal?: AbortSignal;
}

export interface CloneSent extends SendCounters {
  readonly size: number;
}

function answerError(res: IncomingMessage, body: string): FerryError {
  const header = res.headers[CLONE_ERROR_CODE_HEADER];
  const code = typeof header === 'string' && isErrorCode(header) ? header : res.statusCode === CloneAnswer.ClientRefused ? ErrorCode.Unauthorized : ErrorCode.Internal;
  const retryable = res.statusCode === CloneAnswer.Busy || code === ErrorCode.Truncated || code === ErrorCode.Interrupted;
  return new FerryError(code, `the clone target answered ${res.statusCode}: ${body.trim().slice(0, 500)}`, { retryable });
}

function transportError(err: unknown): FerryError {
  if (err instanceof FerryError) return err;
  const code = (err as NodeJS.ErrnoException).code ?? '';
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|HOSTNAME/.test(code)) return new FerryError(ErrorCode.TlsError, `TLS with the clone target failed: ${(err as Error).message}`, { cause: err });
  if (code === 'ABORT_ERR') return new FerryError(ErrorCode.Interrupted, 'the clone source was stopped', { cause: err });
  return new FerryError(ErrorCode.SourceUnavailable, `the clone target could not be reached: ${(err as Error).message}`, { cause: err, retryable: true });
}

/** Sends the source to the target; resolves once the target answered that the clone is complete. */
export async function sendClone(deps: CloneSourceDeps): Promise<CloneSent> {
  const { config } = deps;
  const counters: SendCounters = { wireBytes: 0, dataBytes: 0 };
  const disk = config.kind === SourceKind.Archive ? undefined : await openSourceDisk(config.path, config.kind);
  let direct: DirectHandle | undefined;
  try {
    const extents = disk === undefined ? [] : await sourceExtents(disk, deps.signal);
    // Reads bypass the page cache where the filesystem allows (src/io/direct-io.ts): a clone reads
    // each byte once, and a buffered read of 1 GiB cost this machine's kernel 0.6-1.7 s against 0.03.
    const firstData = extents.find((e) => e.data && e.offset % DIRECT_ALIGN === 0);
    if (disk !== undefined && firstData !== undefined) direct = await openDirect(disk.handle, READ_BUFFERS, READ_CHUNK, { readAt: firstData.offset }, false);
    const buffers = new ReadBuffers(READ_BUFFERS, READ_CHUNK, direct?.buffers);
    const stream = disk === undefined ? archiveStream(config.path, counters) : diskStream(disk, extents, counters, buffers, direct?.handle);
    const url = new URL(config.url);
    const req = request(url, {
      method: 'POST',
      key: deps.tls.key,
      cert: deps.tls.cert,
      ca: deps.tls.serverCa,
      minVersion: 'TLSv1.2',
      agent: false,
      headers: { 'content-type': CLONE_MEDIA_TYPE, 'transfer-encoding': 'chunked' },
      ...(deps.signal ? { signal: deps.signal } : {}),
    });
    const answered = new Promise<{ res: IncomingMessage; body: string }>((resolve, reject) => {
      req.once('response', (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body = (body + d).slice(0, 4096)));
        res.once('end', () => resolve({ res, body }));
        res.once('error', reject);
      });
      req.once('error', reject);
    });
    answered.catch(() => undefined);
    // An early answer (a refusal) ends the sending: the body is not worth finishing. A broken
    // connection wakes a reader waiting for a buffer whose write callback will not come.
    let refused = false;
    req.once('response', (res) => {
      if (res.statusCode !== CloneAnswer.Ok) {
        refused = true;
        buffers.fail(new FerryError(ErrorCode.Interrupted, 'the clone target answered before the end'));
      }
    });
    const closed = new AbortController();
    req.once('error', (err) => buffers.fail(err));
    req.once('close', () => {
      buffers.fail(new FerryError(ErrorCode.SourceUnavailable, 'the connection to the clone target closed', { retryable: true }));
      closed.abort();
    });
    const sent = sendStream(stream, req, buffers, counters, () => refused, closed.signal).then(
      () => undefined,
      (err: unknown) => {
        req.destroy(); // the stream failed (a refusal of the source's own, a read error): so does the request
        return err;
      },
    );
    const [sendError, answer] = await Promise.all([sent, answered.then((a) => a, (err: unknown) => ({ error: err }))]);
    if (!req.writableFinished) req.destroy(); // refused or broken: nothing more goes out
    if ('error' in answer) throw transportError(sendError ?? answer.error);
    if (answer.res.statusCode !== CloneAnswer.Ok) throw answerError(answer.res, answer.body);
    if (sendError !== undefined) throw transportError(sendError);
    return { ...counters, size: disk?.size ?? 0 };
  } catch (err) {
    throw toFerryError(err);
  } finally {
    await direct?.handle.close();
    await disk?.handle.close();
  }
}
