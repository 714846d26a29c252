/**
 * Reads and writes that bypass the page cache (O_DIRECT), from Node without a native addon.
 *
 * A buffered transfer copies every byte through the page cache. On this machine 1 GiB written
 * buffered and synced took 0.75–2.8 s and 0.3–2.4 s of system CPU from run to run, O_DIRECT
 * 0.7–0.8 s and 0.1–0.2 s; read with the cache dropped, 1.0–1.9 s and 0.6–1.7 s against 0.4–0.7 s
 * and 0.03 s (`dd bs=4M count=256`, bench/README.md, "The clone reads and writes O_DIRECT"). Bytes
 * read or written once gain nothing from the page cache, which a pod's memory limit counts.
 *
 * O_DIRECT needs the buffer's address, the file offset and the length aligned to the device's
 * logical block. Node gives no aligned allocation and no addresses, so each buffer is allocated
 * DIRECT_ALIGN bytes larger and the kernel is asked where its aligned window starts: a 4 KiB
 * O_DIRECT transfer at successive 16-byte steps (an ArrayBuffer's memory is 16-aligned) fails with
 * EINVAL until the address is aligned. An ArrayBuffer's memory never moves. The transfer must
 * reach the device: a read of a file's hole is answered with zeros without the check, so a file
 * being written is probed by a write to a probe file beside it (created exclusively, removed
 * after), a file being read by a read where it holds data, a block device by a read of any block.
 * Offsets and lengths are kept to multiples of DIRECT_ALIGN (4 KiB: every logical block size in
 * use); what is not aligned, the caller transfers through its buffered handle. A filesystem that
 * refuses O_DIRECT (some FUSE and network filesystems) yields no direct handle and everything stays
 * buffered.
 */

import { constants } from 'node:fs';
import { type FileHandle, open, unlink } from 'node:fs/promises';

/** Alignment kept for O_DIRECT offsets, lengths and buffer addresses. */
export const DIRECT_ALIGN = 4096;
const ARRAY_BUFFER_ALIGN = 16;

export interface DirectHandle {
  /** The same file opened O_DIRECT (read-write, or read-only for a reader). */
  readonly handle: FileHandle;
  /** `count` buffers of `size` bytes whose memory the kernel takes for O_DIRECT. */
  readonly buffers: Buffer[];
}

/**
 * How the aligned windows are found. The probe must reach the device, so: `writeFile`, for a file
 * being written, a name in its directory that does not exist (created exclusively, removed after);
 * `readAt`, an aligned offset where the file holds data, or any offset of a block device.
 */
export type DirectProbe = { readonly writeFile: string } | { readonly readAt: number };

function isEinval(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === 'EINVAL';
}

type Probe = (raw: Buffer, skip: number) => Promise<unknown>;

/** The window of `raw` (DIRECT_ALIGN + size bytes) that starts at an aligned address, or undefined. */
async function alignedWindow(probe: Probe, raw: Buffer, size: number): Promise<Buffer | undefined> {
  for (let skip = 0; skip < DIRECT_ALIGN; skip += ARRAY_BUFFER_ALIGN) {
    try {
      await probe(raw, skip);
      return raw.subarray(skip, skip + size);
    } catch (err) {
      if (!isEinval(err)) throw err;
    }
  }
  return undefined;
}

async function openOrRefused(path: string, flags: number): Promise<FileHandle | undefined> {
  try {
    return await open(path, flags, 0o600);
  } catch (err) {
    if (isEinval(err)) return undefined;
    throw err;
  }
}

/**
 * Opens the file or block device of `buffered` a second time with O_DIRECT (`write`: read-write,
 * else read-only), with `count` aligned buffers of `size` bytes (a multiple of DIRECT_ALIGN). It is
 * reopened through /proc/self/fd, so it is the same inode whatever its path names now. undefined
 * when the filesystem refuses O_DIRECT or no aligned window is found: the caller stays buffered.
 */
export async function openDirect(buffered: FileHandle, count: number, size: number, probe: DirectProbe, write: boolean): Promise<DirectHandle | undefined> {
  if (size % DIRECT_ALIGN !== 0) throw new RangeError(`direct buffers must be a multiple of ${DIRECT_ALIGN} bytes`);
  const handle = await openOrRefused(`/proc/self/fd/${buffered.fd}`, (write ? constants.O_RDWR : constants.O_RDONLY) | constants.O_DIRECT);
  if (handle === undefined) return undefined;
  let probeFile: FileHandle | undefined;
  try {
    let transfer: Probe | undefined;
    if ('writeFile' in probe) {
      probeFile = await openOrRefused(probe.writeFile, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW | constants.O_DIRECT);
      const file = probeFile;
      if (file !== undefined) transfer = (raw, skip) => file.write(raw, skip, DIRECT_ALIGN, 0);
    } else {
      transfer = (raw, skip) => handle.read(raw, skip, DIRECT_ALIGN, probe.readAt);
    }
    const buffers: Buffer[] = [];
    for (let i = 0; transfer !== undefined && i < count; i += 1) {
      const window = await alignedWindow(transfer, Buffer.allocUnsafeSlow(size + DIRECT_ALIGN), size);
      if (window === undefined) break;
      buffers.push(window);
    }
    if (buffers.length === count) return { handle, buffers };
    await handle.close();
    return undefined;
  } catch (err) {
    await handle.close().catch(() => undefined);
    throw err;
  } finally {
    if (probeFile !== undefined && 'writeFile' in probe) {
      await probeFile.close().catch(() => undefined);
      await unlink(probe.writeFile).catch(() => undefined);
    }
  }
}

/**
 * Writes `data` at `position` through `direct` as far as both are aligned, and returns how many
 * leading bytes it wrote (a multiple of DIRECT_ALIGN; 0 when `position` is not aligned). A short
 * write that ends unaligned stops there: the caller writes the rest buffered.
 */
export async function writeDirect(direct: FileHandle, data: Buffer, position: number): Promise<number> {
  if (position % DIRECT_ALIGN !== 0) return 0;
  const aligned = data.length - (data.length % DIRECT_ALIGN);
  let done = 0;
  while (done < aligned) {
    const { bytesWritten } = await direct.write(data, done, aligned - done, position + done);
    done += bytesWritten;
    if (bytesWritten === 0 || done % DIRECT_ALIGN !== 0) break;
  }
  return done;
}

/**
 * Reads `length` bytes at `position` into `into` (an aligned buffer at least `length` rounded up to
 * DIRECT_ALIGN long) through `direct`; undefined when `position` is not aligned (the caller reads
 * buffered). The read is rounded up to DIRECT_ALIGN, so the end of a file of any size is read
 * whole; what it returns is at most `length` bytes, fewer only at the end of the file.
 */
export async function readDirect(direct: FileHandle, into: Buffer, length: number, position: number): Promise<number | undefined> {
  if (position % DIRECT_ALIGN !== 0) return undefined;
  const rounded = Math.ceil(length / DIRECT_ALIGN) * DIRECT_ALIGN;
  let done = 0;
  while (done < length) {
    const { bytesRead } = await direct.read(into, done, rounded - done, position + done);
    done += bytesRead;
    if (bytesRead === 0 || done % DIRECT_ALIGN !== 0) break;
  }
  return Math.min(done, length);
}
