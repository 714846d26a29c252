/**
 * The import target: a raw file that appears under its final name only when complete, a block
 * device written in place, or a directory. Holds the one place that decides what "complete" means
 * on disk: grown to size, optionally preallocated, synced, renamed.
 *
 * Files Ferry writes never reach through a link: whatever is found at `<dest>.ferry-partial` is
 * removed (unlink drops the name, never a link's target) and files are created with
 * O_CREAT|O_EXCL (createExclusive), which refuses any existing name, a symlink included. The
 * final rename(2) replaces a link at the destination rather than writing through it.
 */

import { constants as fsConstants, type Stats } from 'node:fs';
import { type FileHandle, lstat, mkdir, open, rename, rm, stat, unlink } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import { ErrorCode, FerryError, toFerryError } from '../src/errors.js';
import { ContentType, type ImportSpec, TargetKind } from '../src/contract/import-spec.js';
import { usableSpace } from '../src/quantity.js';
import { runTool } from '../src/io/child-process.js';


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
  const { stdout } = await runTool('blockdev', ['--getsize64', path], { timeoutMs: 30_000, code: ErrorCode.TargetError, what: `cannot read the size of block device ${path}` });
  return Number(stdout.trim());
}

/** What a path names, as lstat (the name itself) or stat (where links lead) sees it. */
export type NodeKind = 'missing' | 'file' | 'directory' | 'block device' | 'character device' | 'fifo' | 'socket' | 'symlink';

export function nodeKind(info: Stats | undefined): NodeKind {
  if (info === undefined) return 'missing';
  if (info.isFile()) return 'file';
  if (info.isDirectory()) return 'directory';
  if (info.isBlockDevice()) return 'block device';
  if (info.isCharacterDevice()) return 'character device';
  if (info.isFIFO()) return 'fifo';
  if (info.isSocket()) return 'socket';
  return 'symlink';
}

export interface PathFacts {
  /** The name itself (lstat). */
  readonly self: NodeKind;
  /** Where it leads (stat): 'missing' for a dangling link. */
  readonly resolved: NodeKind;
}

export async function pathFacts(path: string): Promise<PathFacts> {
  const self = nodeKind(await lstat(path).catch(() => undefined));
  const resolved = self === 'symlink' ? nodeKind(await stat(path).catch(() => undefined)) : self;
  return { self, resolved };
}

/** Where a file disk is written until it is complete. */
export function partialPathOf(path: string): string {
  return `${path}.ferry-partial`;
}

const SPECIAL: readonly NodeKind[] = ['character device', 'fifo', 'socket'];
const DEST_TAKES = '--dest takes a disk file (created or replaced), a block device, or a directory for --content-type archive';

/**
 * Pure: the target kind the CLI's `--dest` stands for. A block device (or a link to one, as
 * /dev/disk/by-id/... are) is written in place; a character device, FIFO or socket is refused
 * (INVALID_SPEC: the request names something that is not a disk, and replacing it by a file —
 * /dev/null as root — is never what was meant); anything else is a file, created under its name
 * when complete. Directories are left to prepareTarget, which says what is wrong.
 */
export function destTargetKind(contentType: ContentType, facts: PathFacts, path: string): TargetKind {
  refuseSpecial(facts, path);
  if (contentType === ContentType.Archive) {
    if (facts.resolved === 'block device') throw new FerryError(ErrorCode.InvalidSpec, `${path} is a block device; an archive is extracted into a directory`);
    return TargetKind.Directory;
  }
  return facts.resolved === 'block device' ? TargetKind.Block : TargetKind.File;
}

function refuseSpecial(facts: PathFacts, path: string): void {
  const special = SPECIAL.find((k) => k === facts.resolved || k === facts.self);
  if (special !== undefined) {
    throw new FerryError(ErrorCode.InvalidSpec, `${path} is a ${special}; ${DEST_TAKES}`, { details: { path, kind: special } });
  }
}

/**
 * Creates `path` as a new regular file, never through a link and never reusing a name: O_EXCL with
 * O_CREAT fails on any existing name, a symlink (dangling or not) and a hard link included.
 */
export async function createExclusive(path: string, flags: number = fsConstants.O_WRONLY): Promise<FileHandle> {
  return open(path, flags | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW, 0o666);
}

/**
 * Clears the way for the partial file: whatever is at its name (a stale partial file, a planted
 * symlink or hard link, any other node) is unlinked, which removes the name and never what a link
 * points to. A directory there is not Ferry's to remove.
 */
async function clearPartial(writePath: string): Promise<void> {
  const kind = nodeKind(await lstat(writePath).catch(() => undefined));
  if (kind === 'missing') return;
  if (kind === 'directory') throw new FerryError(ErrorCode.TargetError, `${writePath} is a directory; remove it, Ferry writes the partial disk there`);
  await unlink(writePath).catch((err: unknown) => {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw toFerryError(err, ErrorCode.TargetError);
  });
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
  const facts = await pathFacts(path);
  if (facts.resolved === 'directory') throw new FerryError(ErrorCode.TargetError, `${path} is a directory; give the disk file's path`);
  if (facts.resolved === 'block device') throw new FerryError(ErrorCode.InvalidSpec, `${path} is a block device; use a block target`);
  refuseSpecial(facts, path);
  const writePath = partialPathOf(path);
  await clearPartial(writePath);
  return { kind: TargetKind.File, path, writePath, ...(usable !== undefined ? { usable } : {}) };
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
    // The partial file is opened without following links and must still be the regular file the
    // writers made: resized and synced through this handle, not through the name.
    const handle = await open(target.writePath, fsConstants.O_RDWR | fsConstants.O_NOFOLLOW);
    let preallocationApplied = false;
    try {
      if (!(await handle.stat()).isFile()) throw new FerryError(ErrorCode.TargetError, `${target.writePath} is no longer a regular file`);
      if (size > options.written) await handle.truncate(size);
      if (options.preallocate) {
        // fallocate(1) without flags allocates blocks and keeps data, like qemu-img's falloc mode.
        preallocationApplied = await runTool('fallocate', ['-l', String(size), target.writePath], { timeoutMs: 10 * 60_000 }).then(
          () => true,
          () => false,
        );
      }
      await handle.sync();
    } finally {
      await handle.close();
    }
    // rename(2) replaces whatever name is there (a link included, never its target); a device
    // node or FIFO that appeared since prepareTarget is refused rather than replaced.
    const now = await pathFacts(target.path);
    if (SPECIAL.includes(now.self) || now.self === 'block device') {
      throw new FerryError(ErrorCode.InvalidSpec, `${target.path} is now a ${now.self}; ${DEST_TAKES}`);
    }
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
  const handle = await createExclusive(target.writePath).catch((err: unknown) => {
    throw toFerryError(err, ErrorCode.TargetError);
  });
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
