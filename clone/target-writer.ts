/**
 * Writing a clone stream into the target: a disk file, a block device or a directory.
 *
 * - A file is written as `<dest>.ferry-partial` (whatever was at that name unlinked first, the
 *   file made O_CREAT|O_EXCL|O_NOFOLLOW), sized with ftruncate so every hole stays a hole (no
 *   zero is ever written for one), data written at its offsets, grown to the usable capacity,
 *   synced, and renamed over the destination only after the stream's check (CRC-32) matched. A failure
 *   removes the partial file: no disk.img is left by a stream that did not check out.
 * - A device is written in place. Its old contents must read as zeros where the source has holes:
 *   the range is first discarded with fallocate(1) --punch-hole (the kernel's zero-out, which a
 *   loop device passes on as a hole in its backing file, and thin storage as an unmap); a device
 *   that cannot do that gets zeros written into the holes. A failure zeroes the first MiB, as an
 *   import's does, so a half-written disk does not look bootable.
 * - A directory gets the tar extracted by the importer's confined extractor (src/io/archive.ts),
 *   which commits only after the tar's last byte, and that byte is only handed over after the
 *   check matched.
 */

import { constants } from 'node:fs';
import { type FileHandle, lstat, mkdir, open, rename, rm, unlink } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { ErrorCode, FerryError, toFerryError } from '../src/errors.js';
import { type CloneHeader, SourceKind } from '../src/contract/clone-stream.js';
import type { PolledEvents } from './body-events.js';
import { TargetKind } from '../src/contract/import-spec.js';
import type { UploadServerConfig } from '../src/contract/upload-server.js';
import { runTool } from '../src/io/child-process.js';
import { extractArchive } from '../src/io/archive.js';
import { DIRECT_ALIGN, type DirectHandle, openDirect, writeDirect } from '../src/io/direct-io.js';
import { usableSpace } from '../src/quantity.js';
import { deviceSize } from './disk-extents.js';

export interface CloneWritten {
  /** The disk's size on the target (grown to the capacity), or the archive's content bytes. */
  readonly size: number;
  readonly dataBytes: number;
  readonly preallocationApplied: boolean;
  readonly sourceFormat: 'raw' | 'tar';
}

/** Pure: which source kinds a target takes. Archive to a directory; disks, either way, to a file or device. */
export function checkKinds(source: SourceKind, target: TargetKind): void {
  const archive = source === SourceKind.Archive;
  if (archive !== (target === TargetKind.Directory)) {
    throw new FerryError(ErrorCode.InvalidSpec, archive ? `an archive clone needs a directory target; this target is a ${target}` : `a ${source} disk clone needs a file or block target; this target is a directory`);
  }
}

/** Pure: TARGET_TOO_SMALL when the source does not fit the usable capacity. */
export function checkFits(header: CloneHeader, usable: number | undefined): void {
  if (usable !== undefined && header.size > usable) {
    const what = header.kind === SourceKind.Archive ? 'the archive content' : 'the source disk';
    throw new FerryError(ErrorCode.TargetTooSmall, `${what} is ${header.size} bytes; the target holds ${usable}`, { details: { size: header.size, usable } });
  }
}

type Events = PolledEvents;

async function zeroFirstMiB(handle: FileHandle): Promise<void> {
  await handle.write(Buffer.alloc(1 << 20), 0, 1 << 20, 0).catch(() => undefined);
  await handle.sync().catch(() => undefined);
}

/** Writes all of `data` at `position` (a short write is continued). */
async function writeAllAt(handle: FileHandle, data: Buffer, position: number): Promise<void> {
  for (let done = 0; done < data.length; ) done += (await handle.write(data, done, data.length - done, position + done)).bytesWritten;
}

/** Contiguous data gathered into writes of up to this many bytes. */
export const WRITE_BATCH = 4 * 1024 * 1024;
/**
 * Written bytes after which the disk is told to write them back. Measured on this machine's disk
 * (bench/README.md, "Clone: the data plane"): a 1 GiB clone took 2.1-2.2 s at 16 MiB, 2.3 at 32,
 * 2.4 at 64, and 2.9 with one fsync at the end.
 */
export const SYNC_EVERY = 16 * 1024 * 1024;

/**
 * Writes data events at their offsets; holes go to `onHole`. Returns the data bytes after `end`.
 * Pieces arrive in the sizes the socket delivers (16 KiB TLS records) and are copied at once into
 * one of two WRITE_BATCH buffers: one is filled while the other is written, so the socket keeps
 * flowing while the disk writes. The copy (0.1 CPU-s per GiB) lets each socket chunk die young:
 * held until its batch was written, the chunks outlived V8's young generation and their gigabyte
 * of external memory was freed only by full mark-compacts (bench/README.md, "Where the clone's
 * CPU goes"). With `direct` (src/io/direct-io.ts) the buffers are its aligned ones and each batch
 * is written O_DIRECT as far as it is aligned; the rest, and everything without `direct`, is
 * written buffered, with writeback started every SYNC_EVERY bytes.
 */
async function writeExtents(events: Events, handle: FileHandle, onHole: (offset: number, length: number) => Promise<void>, direct?: DirectHandle): Promise<number> {
  const buffers = direct?.buffers ?? [Buffer.allocUnsafe(WRITE_BATCH), Buffer.allocUnsafe(WRITE_BATCH)];
  // Every SYNC_EVERY buffered bytes an fdatasync is started and not waited for (one at a time):
  // the disk writes while the stream goes on, instead of the whole clone waiting for one final
  // fsync, and the dirty page cache a clone leaves stays small.
  let unsynced = 0;
  let syncing: Promise<void> | undefined;
  const kickWriteback = (bytes: number): void => {
    unsynced += bytes;
    if (unsynced < SYNC_EVERY || syncing !== undefined) return;
    unsynced = 0;
    syncing = handle.datasync().then(
      () => void (syncing = undefined),
      () => void (syncing = undefined), // a failing disk fails the writes and the final sync
    );
  };
  const writeBatch = async (batch: Buffer, at: number): Promise<void> => {
    const written = direct === undefined ? 0 : await writeDirect(direct.handle, batch, at);
    if (written === batch.length) return;
    await writeAllAt(handle, batch.subarray(written), at + written);
    kickWriteback(batch.length - written);
  };
  let which = 0;
  let start = 0;
  let filled = 0;
  let inFlight: Promise<void> = Promise.resolve();
  const flush = async (): Promise<void> => {
    if (filled === 0) return;
    const batch = (buffers[which] as Buffer).subarray(0, filled);
    const at = start;
    filled = 0;
    await inFlight; // the other buffer's write: it is free once this settles
    inFlight = writeBatch(batch, at);
    inFlight.catch(() => undefined); // awaited by the next flush or at the end
    which = 1 - which;
  };
  for (;;) {
    // The queued events are taken without a promise each; the writer waits only when there are none.
    let ev = events.poll();
    if (ev === undefined) {
      const next = await events.next();
      if (next.done) break;
      ev = next.value;
    }
    if (ev.type === 'data') {
      if (filled > 0 && ev.offset !== start + filled) await flush();
      for (let from = 0; from < ev.bytes.length; ) {
        if (filled === 0) start = ev.offset + from;
        const copied = ev.bytes.copy(buffers[which] as Buffer, filled, from);
        filled += copied;
        from += copied;
        if (filled === WRITE_BATCH) await flush();
      }
    } else if (ev.type === 'hole') {
      await flush();
      await inFlight;
      await onHole(ev.offset, ev.length);
    } else if (ev.type === 'end') {
      await flush();
      await inFlight;
      await syncing;
      return ev.dataBytes;
    }
  }
  throw new FerryError(ErrorCode.Internal, 'the clone stream reader stopped before its end');
}

/** Runs `write` with an O_DIRECT handle on the same file when the filesystem takes one, and closes it after. */
async function withDirect<T>(handle: FileHandle, size: number, probePath: string | undefined, write: (direct: DirectHandle | undefined) => Promise<T>): Promise<T> {
  if (probePath !== undefined) await rm(probePath, { force: true }); // left by a target that was killed
  const direct = size >= DIRECT_ALIGN ? await openDirect(handle, 2, WRITE_BATCH, probePath !== undefined ? { writeFile: probePath } : { readAt: 0 }, true) : undefined;
  try {
    return await write(direct);
  } finally {
    await direct?.handle.close();
  }
}

async function writeFile(config: UploadServerConfig, header: CloneHeader, events: Events): Promise<CloneWritten> {
  const path = resolve(config.target.path);
  const usable = config.capacity !== undefined ? usableSpace(config.capacity, config.filesystemOverhead) : undefined;
  checkFits(header, usable);
  await mkdir(dirname(path), { recursive: true });
  const existing = await lstat(path).catch(() => undefined);
  if (existing !== undefined && !existing.isFile() && !existing.isSymbolicLink()) throw new FerryError(ErrorCode.TargetError, `${path} is not a disk file; it is not replaced`);
  const partial = `${path}.ferry-partial`;
  const stale = await lstat(partial).catch(() => undefined);
  if (stale?.isDirectory()) throw new FerryError(ErrorCode.TargetError, `${partial} is a directory`);
  if (stale !== undefined) await unlink(partial);
  const handle = await open(partial, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o660);
  let done = false;
  try {
    await handle.truncate(header.size);
    const dataBytes = await withDirect(handle, header.size, `${path}.ferry-direct-probe`, (direct) => writeExtents(events, handle, async () => undefined, direct));
    const size = Math.max(header.size, usable ?? 0);
    if (size > header.size) await handle.truncate(size);
    let preallocationApplied = false;
    if (config.preallocation) {
      preallocationApplied = await runTool('fallocate', ['-l', String(size), partial], { timeoutMs: 10 * 60_000 }).then(() => true, () => false);
    }
    await handle.sync();
    await handle.close();
    await rename(partial, path);
    done = true;
    const dir = await open(dirname(path), 'r');
    await dir.sync().finally(() => dir.close());
    return { size, dataBytes, preallocationApplied, sourceFormat: 'raw' };
  } finally {
    if (!done) {
      await handle.close().catch(() => undefined);
      await rm(partial, { force: true });
    }
  }
}

async function writeDevice(config: UploadServerConfig, header: CloneHeader, events: Events): Promise<CloneWritten> {
  const path = resolve(config.target.path);
  const handle = await open(path, constants.O_RDWR);
  let written = false;
  try {
    if (!(await handle.stat()).isBlockDevice()) throw new FerryError(ErrorCode.TargetError, `${path} is not a block device`);
    const device = await deviceSize(handle);
    checkFits(header, config.capacity !== undefined ? Math.min(config.capacity, device) : device);
    const punched = header.size === 0 || (await runTool('fallocate', ['--punch-hole', '--offset', '0', '--length', String(header.size), path], { timeoutMs: 10 * 60_000 }).then(() => true, () => false));
    const zeros = Buffer.alloc(1 << 20);
    const zeroFill = async (offset: number, length: number): Promise<void> => {
      for (let at = offset; at < offset + length; at += zeros.length) await handle.write(zeros, 0, Math.min(zeros.length, offset + length - at), at);
    };
    const dataBytes = await withDirect(handle, device, undefined, (direct) => writeExtents(events, handle, punched ? async () => undefined : zeroFill, direct));
    await handle.sync();
    written = true;
    return { size: device, dataBytes, preallocationApplied: false, sourceFormat: 'raw' };
  } finally {
    if (!written) await zeroFirstMiB(handle);
    await handle.close();
  }
}

async function writeDirectory(config: UploadServerConfig, header: CloneHeader, events: Events): Promise<CloneWritten> {
  const usable = config.capacity !== undefined ? usableSpace(config.capacity, config.filesystemOverhead) : undefined;
  checkFits(header, usable);
  let dataBytes = 0;
  async function* tarBytes(): AsyncGenerator<Buffer> {
    for (let next = await events.next(); !next.done; next = await events.next()) {
      if (next.value.type === 'data') yield next.value.bytes;
      else if (next.value.type === 'end') {
        dataBytes = next.value.dataBytes;
        return;
      }
    }
  }
  const result = await extractArchive(tarBytes(), resolve(config.target.path), usable);
  return { size: result.bytes, dataBytes, preallocationApplied: false, sourceFormat: 'tar' };
}

/** Writes a decoded stream (its header already read) into the configured target. */
export async function writeClone(config: UploadServerConfig, header: CloneHeader, events: Events): Promise<CloneWritten> {
  checkKinds(header.kind, config.target.kind);
  try {
    if (config.target.kind === TargetKind.Directory) return await writeDirectory(config, header, events);
    if (config.target.kind === TargetKind.Block) return await writeDevice(config, header, events);
    return await writeFile(config, header, events);
  } catch (err) {
    throw toFerryError(err, ErrorCode.TargetError);
  }
}
