/**
 * The import target: a raw file that appears under its final name only when complete, a block
 * device written in place, or a directory. Holds the one place that decides what "complete" means
 * on disk: grown to size, optionally preallocated, synced, renamed.
 */

import { execFile } from 'node:child_process';
import { mkdir, open, rename, rm, stat, truncate } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { promisify } from 'node:util';
import { ErrorCode, FerryError, toFerryError } from '../src/errors.js';
import { type ImportSpec, TargetKind } from '../src/contract/import-spec.js';
import { usableSpace } from '../src/quantity.js';

const run = promisify(execFile);

export interface PreparedTarget {
  readonly kind: TargetKind;
  /** The final path (file, device or directory). */
  readonly path: string;
  /** Where bytes are written while the import runs (== path for devices and directories). */
  readonly writePath: string;
  /** Bytes the disk may take; undefined: whatever the image's virtual size is. */
  readonly usable?: number;
}

async function blockDeviceSize(path: string): Promise<number> {
  try {
    const { stdout } = await run('blockdev', ['--getsize64', path]);
    return Number(stdout.trim());
  } catch (err) {
    throw new FerryError(ErrorCode.TargetError, `cannot read the size of block device ${path}: ${(err as Error).message}`, { cause: err });
  }
}

export async function prepareTarget(spec: ImportSpec): Promise<PreparedTarget> {
  const path = resolve(spec.target.path);
  if (spec.target.kind === TargetKind.Block) {
    const info = await stat(path).catch(() => undefined);
    if (!info?.isBlockDevice()) throw new FerryError(ErrorCode.TargetError, `${path} is not a block device`);
    const size = await blockDeviceSize(path);
    // A device's size is its capacity; a smaller requested capacity still wins.
    const usable = spec.capacity !== undefined ? Math.min(spec.capacity, size) : size;
    return { kind: TargetKind.Block, path, writePath: path, usable };
  }
  const usable = spec.capacity !== undefined ? usableSpace(spec.capacity, spec.filesystemOverhead) : undefined;
  if (spec.target.kind === TargetKind.Directory) {
    await mkdir(path, { recursive: true }).catch((err: unknown) => {
      throw toFerryError(err, ErrorCode.TargetError);
    });
    return { kind: TargetKind.Directory, path, writePath: path, ...(usable !== undefined ? { usable } : {}) };
  }
  await mkdir(dirname(path), { recursive: true }).catch((err: unknown) => {
    throw toFerryError(err, ErrorCode.TargetError);
  });
  const existing = await stat(path).catch(() => undefined);
  if (existing?.isDirectory()) throw new FerryError(ErrorCode.TargetError, `${path} is a directory; give the disk file's path`);
  if (existing?.isBlockDevice()) throw new FerryError(ErrorCode.InvalidSpec, `${path} is a block device; use a block target`);
  return { kind: TargetKind.File, path, writePath: `${path}.ferry-partial`, ...(usable !== undefined ? { usable } : {}) };
}

export interface FinishOptions {
  /** Bytes of disk now in writePath. */
  readonly written: number;
  readonly preallocate: boolean;
}

export interface Finished {
  readonly size: number;
  readonly preallocationApplied: boolean;
}

/**
 * Makes a file disk complete: grows it to the usable capacity (as CDI resizes), preallocates on
 * request, syncs, and renames it into place. Devices were written in place and are only synced.
 */
export async function finishDisk(target: PreparedTarget, options: FinishOptions): Promise<Finished> {
  try {
    if (target.kind === TargetKind.Block) {
      await syncPath(target.path);
      return { size: target.usable ?? options.written, preallocationApplied: false };
    }
    const size = Math.max(options.written, target.usable ?? 0);
    if (size > options.written) await truncate(target.writePath, size);
    let preallocationApplied = false;
    if (options.preallocate) {
      // fallocate(1) without flags allocates blocks and keeps data, like qemu-img's falloc mode.
      preallocationApplied = await run('fallocate', ['-l', String(size), target.writePath]).then(
        () => true,
        () => false,
      );
    }
    await syncPath(target.writePath);
    await rename(target.writePath, target.path);
    await syncPath(dirname(target.path));
    return { size, preallocationApplied };
  } catch (err) {
    throw toFerryError(err, ErrorCode.TargetError);
  }
}

/** Creates a blank raw disk of the usable size (sparse) or, on a device, leaves it as it is. */
export async function createBlank(target: PreparedTarget): Promise<void> {
  if (target.kind === TargetKind.Block) return;
  if (target.usable === undefined) throw new FerryError(ErrorCode.InvalidSpec, 'a blank disk needs a size');
  const handle = await open(target.writePath, 'w');
  await handle.close();
}

/**
 * Undoes a failed attempt: the partial file goes; on a device, the first MiB is zeroed so a half
 * written disk cannot be mistaken for a bootable one.
 */
export async function discardPartial(target: PreparedTarget): Promise<void> {
  if (target.kind === TargetKind.File) {
    await rm(target.writePath, { force: true });
  } else if (target.kind === TargetKind.Block) {
    const handle = await open(target.path, 'r+').catch(() => undefined);
    if (!handle) return;
    try {
      await handle.write(Buffer.alloc(1 << 20), 0, 1 << 20, 0);
      await handle.sync();
    } catch {
      // A device that cannot be written now was not written before either.
    } finally {
      await handle.close();
    }
  }
}

async function syncPath(path: string): Promise<void> {
  const handle = await open(path, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}
