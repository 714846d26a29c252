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
   * with a small memory limit is not killed for the kernel's buffering of a large image.
   */
  readonly syncEveryBytes?: number;
}

export const DEFAULT_SYNC_EVERY_BYTES = 64 * 1024 * 1024;

/**
 * Returns the number of bytes of disk written (holes included). Syncs before returning.
 *
 * Network and pipe chunks are small (16–64 KiB): they are gathered into 4 MiB buffers, and one
 * buffer is written while the next fills, so reading the source and writing the disk overlap
 * (with a single buffer the producer — a socket, a decompressor's pipe — stalls during each write).
 */
export async function writeRaw(source: ByteStream, options: RawWriteOptions): Promise<number> {
  const handle = await (options.sparse ? createExclusive(options.path) : open(options.path, 'r+')).catch((err: unknown) => {
    throw toFerryError(err, 'TARGET_ERROR');
  });
  // A write or flush in flight; awaited before the next one starts (and before returning).
  let writing: Promise<void> = Promise.resolve();
  let flushing: Promise<void> = Promise.resolve();
  try {
    let offset = 0;
    let unsynced = 0;
    const syncEvery = options.syncEveryBytes ?? DEFAULT_SYNC_EVERY_BYTES;
    let fill = Buffer.allocUnsafe(STAGING_BYTES);
    let spare = Buffer.allocUnsafe(STAGING_BYTES);
    let staged = 0;
    const writeStaged = async (): Promise<void> => {
      if (staged === 0) return;
      await writing;
      const data = fill.subarray(0, staged);
      const at = offset;
      writing = options.sparse ? writeSparse(handle, data, at) : writeAll(handle, data, at);
      writing.catch(() => undefined); // awaited before the next write; only keeps an early failure from going unhandled
      offset += staged;
      unsynced += staged;
      staged = 0;
      [fill, spare] = [spare, fill];
      if (syncEvery > 0 && unsynced >= syncEvery) {
        // One flush in flight at a time: dirty data stays within about two intervals.
        await writing;
        await flushing;
        flushing = handle.datasync();
        flushing.catch(() => undefined);
        unsynced = 0;
      }
    };
    for await (const chunk of source) {
      for (let used = 0; used < chunk.length; ) {
        const n = chunk.copy(fill, staged, used);
        staged += n;
        used += n;
        if (staged === STAGING_BYTES) await writeStaged();
      }
    }
    await writeStaged();
    await writing;
    await flushing;
    if (options.sparse) await handle.truncate(offset);
    await handle.sync();
    return offset;
  } catch (err) {
    throw toFerryError(err, 'TARGET_ERROR');
  } finally {
    await writing.catch(() => undefined);
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

