/**
 * Reading a source disk's allocated extents. A disk file's extents come from `qemu-img map`, which
 * asks the kernel with SEEK_DATA/SEEK_HOLE (Node has no lseek); qemu-img is handed the descriptor
 * Ferry opened (O_RDONLY|O_NOFOLLOW, checked to be a regular file) as /dev/fd/3, so it reads the
 * same inode and never resolves the volume's path. A block device has no SEEK_DATA (the kernel
 * answers EINVAL, and qemu-img calls the whole device data), so a device is read whole and holes
 * are found by zero detection, per ZERO_GRANULE, as they are for data extents of a file too: an
 * allocated run of zeros travels as a hole either way.
 */

import { spawn } from 'node:child_process';
import { constants } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { ErrorCode, FerryError, toFerryError } from '../src/errors.js';
import { stderrTail } from '../src/io/child-process.js';
import { SourceKind } from '../src/contract/clone-stream.js';

/** Zero detection's unit: a run of zeros this long (aligned) is sent as a hole. */
export const ZERO_GRANULE = 64 * 1024;
/** One read from the source. */
export const READ_CHUNK = 4 * 1024 * 1024;

export interface Extent {
  readonly offset: number;
  readonly length: number;
  /** false: a hole (reads as zeros, nothing allocated). */
  readonly data: boolean;
}

/** Pure: qemu-img map's JSON as contiguous extents, holes where it says no data (`data: false`). */
export function parseQemuImgMap(json: string, size: number): Extent[] {
  let rows: unknown;
  try {
    rows = JSON.parse(json);
  } catch (err) {
    throw new FerryError(ErrorCode.Internal, `qemu-img map printed no JSON: ${(err as Error).message}`);
  }
  if (!Array.isArray(rows)) throw new FerryError(ErrorCode.Internal, 'qemu-img map printed no list');
  const out: Extent[] = [];
  let next = 0;
  for (const row of rows as Array<Record<string, unknown>>) {
    const { start, length, data } = row;
    if (typeof start !== 'number' || typeof length !== 'number' || start !== next || length <= 0) {
      throw new FerryError(ErrorCode.Internal, `qemu-img map: unexpected row ${JSON.stringify(row)} at ${next}`);
    }
    const isData = data === true;
    const last = out.at(-1);
    if (last !== undefined && last.data === isData) out[out.length - 1] = { ...last, length: last.length + length };
    else out.push({ offset: start, length, data: isData });
    next = start + length;
  }
  if (next !== size) throw new FerryError(ErrorCode.Internal, `qemu-img map covers ${next} bytes of ${size}`);
  return out;
}

/**
 * Pure: `buf` (read at `offset`) cut into data and zero runs, granule by granule (granules aligned
 * to the disk, so a run of zeros is found wherever a read starts). Consecutive runs of a kind merge.
 */
export function splitZeros(buf: Buffer, offset: number, granule = ZERO_GRANULE): Array<{ offset: number; bytes: Buffer; zero: boolean }> {
  const out: Array<{ offset: number; bytes: Buffer; zero: boolean }> = [];
  let at = 0;
  while (at < buf.length) {
    const end = Math.min(buf.length, at + granule - ((offset + at) % granule));
    const piece = buf.subarray(at, end);
    const zero = isZero(piece);
    const last = out.at(-1);
    if (last !== undefined && last.zero === zero) last.bytes = buf.subarray(last.offset - offset, end);
    else out.push({ offset: offset + at, bytes: piece, zero });
    at = end;
  }
  return out;
}

const ZEROS = Buffer.alloc(ZERO_GRANULE);

function isZero(piece: Buffer): boolean {
  return piece.length <= ZEROS.length ? piece.equals(ZEROS.subarray(0, piece.length)) : piece.every((b) => b === 0);
}

export interface SourceDisk {
  readonly handle: FileHandle;
  readonly size: number;
  readonly kind: SourceKind;
  readonly blockSize: number;
}

/** Opens the source read-only without following a link: a regular file (fs) or a block device. */
export async function openSourceDisk(path: string, kind: SourceKind): Promise<SourceDisk> {
  const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') throw new FerryError(ErrorCode.SourceNotFound, `the clone source ${path} does not exist`, { cause: err });
    if (err.code === 'ELOOP') throw new FerryError(ErrorCode.InvalidSpec, `the clone source ${path} is a symbolic link; it is not followed`, { cause: err });
    throw toFerryError(err, ErrorCode.SourceUnavailable);
  });
  try {
    const info = await handle.stat();
    if (kind === SourceKind.Block) {
      if (!info.isBlockDevice()) throw new FerryError(ErrorCode.InvalidSpec, `the clone source ${path} is not a block device`);
      return { handle, size: await deviceSize(handle), kind, blockSize: 512 };
    }
    if (!info.isFile()) throw new FerryError(ErrorCode.InvalidSpec, `the clone source ${path} is not a regular file`);
    return { handle, size: info.size, kind, blockSize: 4096 };
  } catch (err) {
    await handle.close();
    throw err;
  }
}

/**
 * A device's size from its descriptor (fstat says 0 for a device): the end is the first sector a
 * read returns nothing for, found by doubling then bisecting, some 80 one-byte reads.
 */
export async function deviceSize(handle: FileHandle): Promise<number> {
  const byte = Buffer.alloc(1);
  const readable = async (sector: number): Promise<boolean> => (await handle.read(byte, 0, 1, sector * 512)).bytesRead === 1;
  if (!(await readable(0))) return 0;
  let low = 0; // readable
  let high = 1;
  while (await readable(high)) {
    low = high;
    high *= 2;
  }
  while (high - low > 1) {
    const mid = Math.floor((low + high) / 2);
    if (await readable(mid)) low = mid;
    else high = mid;
  }
  return (low + 1) * 512;
}

/** The extents of the source: qemu-img map for a file, the whole device (one data extent) for a device. */
export async function sourceExtents(disk: SourceDisk, signal?: AbortSignal): Promise<Extent[]> {
  if (disk.size === 0) return [];
  if (disk.kind === SourceKind.Block) return [{ offset: 0, length: disk.size, data: true }];
  const child = spawn('qemu-img', ['map', '--output=json', '-f', 'raw', '/dev/fd/3'], { stdio: ['ignore', 'pipe', 'pipe', disk.handle.fd], ...(signal ? { signal } : {}) });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (d: string) => (stdout += d));
  child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-8192)));
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', resolve);
  }).catch((err: NodeJS.ErrnoException) => {
    throw new FerryError(ErrorCode.Internal, err.code === 'ENOENT' ? 'qemu-img is not installed' : `qemu-img map: ${err.message}`, { cause: err });
  });
  if (code !== 0) throw new FerryError(ErrorCode.Internal, `qemu-img map failed (${code}): ${stderrTail(stderr)}`);
  return parseQemuImgMap(stdout, disk.size);
}
