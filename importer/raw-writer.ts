/**
 * Writes a raw disk stream to a file or block device. On a fresh file, blocks of zeros are skipped
 * so they stay holes; the final ftruncate sets the length. A block device may hold old data, so
 * there every byte is written.
 */

import { open, type FileHandle } from 'node:fs/promises';
import { toFerryError } from '../src/errors.js';
import type { ByteStream } from './streams.js';
import { createExclusive } from './target.js';

/** Zero detection granularity: the filesystem block size on every filesystem that matters. */
const BLOCK = 4096;
const ZERO_BLOCK = Buffer.alloc(BLOCK);
/** Bytes gathered before one write call. */
const STAGING_BYTES = 4 * 1024 * 1024;

export interface RawWriteOptions {
  readonly path: string;
  /**
   * true: create a new file (the name must not exist: a planted link or stale file there is
   * refused, never followed) and keep zero blocks as holes; false: overwrite a device in place.
   */
  readonly sparse: boolean;
  /**
   * Flush written data to disk after this many bytes, so dirty page cache stays bounded and a pod
   * with a small memory limit is not killed for the kernel's buffering of a large image; 0: never.
   * Absent: `DEFAULT_SYNC_EVERY_BYTES`. There is no final sync: a disk is synced by whoever keeps
   * it (`finishDisk`), and a scratch copy, deleted after the convert, never needs one.
   */
  readonly syncEveryBytes?: number;
}

export const DEFAULT_SYNC_EVERY_BYTES = 64 * 1024 * 1024;

/**
 * Writes chunks at increasing positions of an open file or device. Network and pipe chunks are
 * small (16–64 KiB): they are gathered into 4 MiB buffers, and one buffer is written while the next
 * fills, so reading the source and writing the disk overlap (with a single buffer the producer — a
 * socket, a decompressor's pipe — stalls during each write). `sparse`: blocks of zeros are skipped
 * (the region must read as zeros already: a fresh file, or one cut at `start`).
 */
export class GatheredWriter {
  private fill = Buffer.allocUnsafe(STAGING_BYTES);
  private spare = Buffer.allocUnsafe(STAGING_BYTES);
  private staged = 0;
  /** A write in flight; awaited before the next one starts. */
  private writing: Promise<void> = Promise.resolve();
  /** Where the gathered bytes go next: every byte before it has been handed to a write. */
  private next: number;

  constructor(
    private readonly handle: FileHandle,
    start: number,
    private readonly sparse: boolean,
  ) {
    this.next = start;
  }

  /** Bytes taken so far, written or gathered: the position after the last pushed byte. */
  get position(): number {
    return this.next + this.staged;
  }

  async push(chunk: Buffer): Promise<void> {
    for (let used = 0; used < chunk.length; ) {
      const n = chunk.copy(this.fill, this.staged, used);
      this.staged += n;
      used += n;
      if (this.staged === STAGING_BYTES) await this.writeStaged();
    }
  }

  /** Writes what is gathered and waits for every write; returns the position written up to. */
  async drain(): Promise<number> {
    await this.writeStaged();
    await this.writing;
    return this.next;
  }

  /** Waits for the write in flight (never throws: the failure surfaces at the next push or drain). */
  settled(): Promise<void> {
    return this.writing.catch(() => undefined);
  }

  private async writeStaged(): Promise<void> {
    if (this.staged === 0) return;
    await this.writing;
    const data = this.fill.subarray(0, this.staged);
    this.writing = this.sparse ? writeSparse(this.handle, data, this.next) : writeAll(this.handle, data, this.next);
    this.writing.catch(() => undefined); // awaited before the next write; only keeps an early failure from going unhandled
    this.next += this.staged;
    this.staged = 0;
    [this.fill, this.spare] = [this.spare, this.fill];
  }
}

/** Returns the number of bytes of disk written (holes included); the last flush is the caller's (`RawWriteOptions.syncEveryBytes`). */
export async function writeRaw(source: ByteStream, options: RawWriteOptions): Promise<number> {
  const handle = await (options.sparse ? createExclusive(options.path) : open(options.path, 'r+')).catch((err: unknown) => {
    throw toFerryError(err, 'TARGET_ERROR');
  });
  const writer = new GatheredWriter(handle, 0, options.sparse);
  // A flush in flight; awaited before the next one starts (and before returning).
  let flushing: Promise<void> = Promise.resolve();
  try {
    let synced = 0;
    const syncEvery = options.syncEveryBytes ?? DEFAULT_SYNC_EVERY_BYTES;
    for await (const chunk of source) {
      await writer.push(chunk);
      if (syncEvery > 0 && writer.position - synced >= syncEvery) {
        // One flush in flight at a time: dirty data stays within about two intervals.
        synced = writer.position;
        await writer.drain();
        await flushing;
        flushing = handle.datasync();
        flushing.catch(() => undefined);
      }
    }
    const offset = await writer.drain();
    await flushing;
    if (options.sparse) await handle.truncate(offset);
    return offset;
  } catch (err) {
    throw toFerryError(err, 'TARGET_ERROR');
  } finally {
    await writer.settled();
    await flushing.catch(() => undefined);
    await handle.close();
  }
}

export async function writeAll(handle: FileHandle, data: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await handle.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}

/** Writes the runs of non-zero blocks of `chunk`; chunk boundaries need not be block-aligned. */
export async function writeSparse(handle: FileHandle, chunk: Buffer, offset: number): Promise<void> {
  let runStart = -1;
  // Align block checks to absolute disk offsets so holes land on filesystem blocks.
  let pos = 0;
  const firstBoundary = (BLOCK - (offset % BLOCK)) % BLOCK;
  while (pos < chunk.length) {
    const end = Math.min(chunk.length, pos === 0 && firstBoundary > 0 ? firstBoundary : pos + BLOCK);
    // compare() with offsets allocates nothing: this runs once per 4 KiB of every image.
    const zero = ZERO_BLOCK.compare(chunk, pos, end, 0, end - pos) === 0;
    if (zero) {
      if (runStart >= 0) {
        await writeAll(handle, chunk.subarray(runStart, pos), offset + runStart);
        runStart = -1;
      }
    } else if (runStart < 0) {
      runStart = pos;
    }
    pos = end;
  }
  if (runStart >= 0) await writeAll(handle, chunk.subarray(runStart), offset + runStart);
}

