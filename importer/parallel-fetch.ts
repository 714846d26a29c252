/**
 * A parallel ranged download: the body is cut into chunks that several connections fetch at once,
 * each written at its own offset as it arrives (memory stays at a few buffers per connection). A
 * chunk whose connection breaks continues from its last byte. Any permanent failure stops all.
 *
 * Bounded time: the sources' `openRange` streams hold each range to the minimum speed (a trickling
 * or stalled range fails SOURCE_UNAVAILABLE, retryable, after one window of waiting), and such a
 * failure is retried here like a break, at most `attempts` times per chunk.
 */

import { createHash } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { open } from 'node:fs/promises';
import { ErrorCode, FerryError, toFerryError } from '../src/errors.js';
import type { Checksum } from '../src/checksum.js';
import { DEFAULT_SYNC_EVERY_BYTES, writeAll, writeSparse } from './raw-writer.js';
import type { ByteStream } from './streams.js';
import { backoffMs } from '../src/backoff.js';
import { createExclusive } from './target.js';

/** Longest wait before a ranged chunk is tried again. */
const MAX_RETRY_BACKOFF_MS = 30_000;

export interface ParallelFetchOptions {
  readonly size: number;
  readonly connections: number;
  readonly chunkBytes: number;
  /** Opens bytes [start, end] (inclusive) of the source. */
  readonly openRange: (start: number, end: number) => Promise<ByteStream>;
  readonly write: (data: Buffer, position: number) => Promise<void>;
  readonly onBytes?: (total: number) => void;
  /** Attempts per chunk for retryable failures. */
  readonly attempts: number;
  readonly sleep: (ms: number) => Promise<void>;
  readonly backoffMs: number;
}

/** Pure: the chunks [start, end] covering `size` bytes. */
export function planChunks(size: number, chunkBytes: number): Array<readonly [number, number]> {
  const chunks: Array<readonly [number, number]> = [];
  for (let start = 0; start < size; start += chunkBytes) chunks.push([start, Math.min(size, start + chunkBytes) - 1]);
  return chunks;
}

export type RangeOptions = Pick<ParallelFetchOptions, 'openRange' | 'attempts' | 'sleep' | 'backoffMs'>;

/**
 * Fetches bytes [start, end] into `write`, continuing from the last byte after a retryable break;
 * `stopped` ends it early (another chunk failed, or the reader went away).
 */
export async function fetchRange(start: number, end: number, options: RangeOptions, write: (data: Buffer, position: number) => Promise<void> | void, stopped: () => boolean): Promise<void> {
  let position = start;
  for (let attempt = 1; ; attempt += 1) {
    try {
      for await (const data of await options.openRange(position, end)) {
        if (stopped()) return;
        if (position + data.length > end + 1) throw new FerryError(ErrorCode.SourceUnavailable, `the server sent more than the range ${start}-${end}`);
        await write(data, position);
        position += data.length;
      }
      if (position <= end) throw new FerryError(ErrorCode.Truncated, `range ${start}-${end} ended at ${position}`);
      return;
    } catch (err) {
      const error = toFerryError(err);
      if (!error.retryable || attempt >= options.attempts || stopped()) throw error;
      await options.sleep(backoffMs(attempt, options.backoffMs, MAX_RETRY_BACKOFF_MS));
    }
  }
}

export async function fetchParallel(options: ParallelFetchOptions): Promise<void> {
  const chunks = planChunks(options.size, options.chunkBytes);
  let next = 0;
  let total = 0;
  let failure: FerryError | undefined;

  const fetchChunk = (start: number, end: number): Promise<void> =>
    fetchRange(start, end, options, async (data, position) => {
      await options.write(data, position);
      total += data.length;
      options.onBytes?.(total);
    }, () => failure !== undefined);

  const worker = async (): Promise<void> => {
    while (!failure && next < chunks.length) {
      const [start, end] = chunks[next++] as readonly [number, number];
      try {
        await fetchChunk(start, end);
      } catch (err) {
        failure ??= toFerryError(err);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(options.connections, chunks.length)) }, worker));
  if (failure) throw failure;
}

export interface OrderedRangesOptions extends RangeOptions {
  /** First byte wanted, and the source's length. */
  readonly start: number;
  readonly size: number;
  readonly connections: number;
  readonly chunkBytes: number;
}

/**
 * Bytes [start, size) of a ranged source fetched over several connections but handed on in order,
 * for readers that cannot seek (a decompressor). Each connection fills one whole chunk in memory;
 * at most `connections` chunks are in flight or waiting ahead of the reader, so memory stays at
 * connections × chunkBytes. A chunk whose connection breaks continues from its last byte.
 */
export async function* orderedRanges(options: OrderedRangesOptions): ByteStream {
  const chunks = planChunks(options.size - options.start, options.chunkBytes).map(([a, b]) => [a + options.start, b + options.start] as const);
  let stopped = false;
  const pending = new Map<number, Promise<Buffer>>();
  const launch = (i: number): void => {
    const chunk = chunks[i];
    if (!chunk || pending.has(i)) return;
    const [start, end] = chunk;
    const buffer = Buffer.allocUnsafe(end - start + 1);
    const done = fetchRange(start, end, options, (data, position) => void data.copy(buffer, position - start), () => stopped).then(() => buffer);
    done.catch(() => undefined); // awaited in order below; this only keeps an early failure from being unhandled
    pending.set(i, done);
  };
  try {
    for (let i = 0; i < chunks.length; i += 1) {
      for (let j = i; j < Math.min(chunks.length, i + Math.max(1, options.connections)); j += 1) launch(j);
      const buffer = await (pending.get(i) as Promise<Buffer>);
      pending.delete(i);
      yield buffer;
    }
  } finally {
    stopped = true;
    await Promise.allSettled(pending.values());
  }
}

/**
 * Downloads into a file (sparse: zero blocks stay holes) or a device. Written data is flushed every
 * `syncEveryBytes` (`DEFAULT_SYNC_EVERY_BYTES` if unset, never if 0), one flush at a time, as the
 * streamed writer does; the last flush is the caller's (a disk is synced by `finishDisk`, a
 * scratch copy never). With a checksum, the written bytes are read back in order and hashed, so
 * the whole source is still verified.
 */
export async function fetchParallelToFile(
  path: string,
  sparse: boolean,
  checksum: Checksum | undefined,
  options: Omit<ParallelFetchOptions, 'write'> & { readonly syncEveryBytes?: number },
): Promise<void> {
  // A file is created new, never through a link (createExclusive); a device is opened as it is.
  const handle = sparse ? await createExclusive(path, fsConstants.O_RDWR) : await open(path, fsConstants.O_RDWR);
  const syncEvery = options.syncEveryBytes ?? DEFAULT_SYNC_EVERY_BYTES;
  let unflushed = 0;
  let flushing: Promise<void> = Promise.resolve();
  const write = async (data: Buffer, position: number): Promise<void> => {
    await (sparse ? writeSparse(handle, data, position) : writeAll(handle, data, position));
    unflushed += data.length;
    if (syncEvery <= 0 || unflushed < syncEvery) return;
    unflushed = 0;
    // The write that crosses the interval waits for the flush before it, then starts the next:
    // dirty data stays within about two intervals and the connections' writes in flight.
    await flushing;
    flushing = handle.datasync();
    flushing.catch(() => undefined);
  };
  try {
    await fetchParallel({ ...options, write });
    await flushing;
    if (sparse) await handle.truncate(options.size);
    if (checksum) {
      const hash = createHash(checksum.algorithm);
      const buffer = Buffer.allocUnsafe(1 << 20);
      for (let position = 0; position < options.size; ) {
        const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, options.size - position), position);
        if (bytesRead === 0) break;
        hash.update(buffer.subarray(0, bytesRead));
        position += bytesRead;
      }
      const actual = hash.digest('hex');
      if (actual !== checksum.hex) {
        throw new FerryError(ErrorCode.ChecksumMismatch, `checksum mismatch: expected ${checksum.algorithm}:${checksum.hex}, got ${checksum.algorithm}:${actual}`);
      }
    }
  } catch (err) {
    throw toFerryError(err, ErrorCode.TargetError);
  } finally {
    await flushing.catch(() => undefined);
    await handle.close();
  }
}
