/** The paths that write a raw image's bytes as they come: streamed, decoder, ranged. */

import { constants as fsConstants } from 'node:fs';
import { open } from 'node:fs/promises';
import { ErrorCode, FerryError } from '../../src/errors.js';
import { TargetKind } from '../../src/contract/import-spec.js';
import type { ImportSuccess } from '../../src/contract/termination.js';
import { decodeToFile } from '../decode-to-file.js';
import { Phase } from '../progress.js';
import { writeAll, writeRaw } from '../raw-writer.js';
import { type ByteStream, capped, heldBackTail } from '../streams.js';
import { finishDisk, type PreparedTarget } from '../target.js';
import { isFixedVhdFooter, VHD_FOOTER_BYTES } from '../vhd-footer.js';
import { type Attempt, describe, fetchRanged, success } from './context.js';
import { memorySync } from './tuning.js';
import { decodeWithCurl, fetchWithCurl } from './curl-path.js';
import type { RangedFetch } from './route.js';

/** Drops the last 512 bytes when they are a fixed VHD's footer after the disk. */
const withoutVhdFooter = (stream: ByteStream): ByteStream => heldBackTail(stream, VHD_FOOTER_BYTES, isFixedVhdFooter);

async function finishRaw({ spec, target, deps, peeled }: Attempt, written: number, via?: 'decoder'): Promise<ImportSuccess> {
  deps.progress.begin(Phase.Resize, 100, 100);
  const done = await finishDisk(target, { written, preallocate: spec.preallocation });
  return success({ sourceFormat: describe(peeled), diskSize: done.size, preallocationApplied: done.preallocationApplied, ...(via ? { via } : {}) });
}

export async function importStreamed(attempt: Attempt, bound: number | undefined): Promise<ImportSuccess> {
  const { target, deps, opened, peeled } = attempt;
  deps.progress.begin(Phase.Transfer, 0, 100, opened.size);
  const disk = withoutVhdFooter(peeled.stream);
  const stream = bound !== undefined ? capped(disk, bound, 'the raw image') : disk;
  const written = await writeRaw(stream, { path: target.writePath, sparse: target.kind === TargetKind.File });
  return finishRaw(attempt, written);
}

/**
 * The one stream written by a child curl; a fixed VHD's footer is cut afterwards (so the file may
 * take 512 bytes more than the disk). Zero blocks are written as they come, as `curl -o` does:
 * making them holes again afterwards (`fallocate --dig-holes`) measured 2–4 s per 512 MiB on the
 * project machine, more than the whole transfer (bench/README.md, "Importer against ordinary servers").
 */
export async function importCurled(attempt: Attempt, bound: number | undefined): Promise<ImportSuccess> {
  const { target, deps, opened } = attempt;
  deps.progress.begin(Phase.Transfer, 0, 100, opened.size);
  // curl outruns the disk: flushes only for a memory limit; the final sync writes the rest.
  const fetched = await fetchWithCurl(attempt, target.writePath, bound === undefined ? undefined : bound + VHD_FOOTER_BYTES, memorySync(deps.tuning));
  const written = await dropVhdFooter(target, fetched);
  if (bound !== undefined && written > bound) {
    throw new FerryError(ErrorCode.TargetTooSmall, `the raw image has ${written} bytes; the usable target capacity is ${bound}`, { details: { size: written, usable: bound } });
  }
  return finishRaw(attempt, written);
}

/**
 * The decoder writes the file: fed by node (the first response read on), or by a child curl
 * (`viaCurl`: the compressed bytes never pass through node either; bench/README.md, "Sixth pass").
 */
export async function importDecoded(attempt: Attempt, bound: number | undefined, usable: number | undefined, viaCurl = false): Promise<ImportSuccess> {
  const { target, deps, opened, peeled, signal } = attempt;
  const compressed = peeled.compressed;
  if (!compressed) throw new FerryError(ErrorCode.Internal, 'the decoder route needs a compressed image');
  deps.progress.begin(Phase.Transfer, 0, 100, opened.size);
  const decoded = viaCurl
    ? await decodeWithCurl(attempt, target.writePath, bound)
    : await decodeToFile(compressed.format, compressed.stream, target.writePath, { signal, ...(bound !== undefined ? { limit: bound } : {}) });
  const written = await dropVhdFooter(target, decoded);
  if (usable !== undefined && written > usable) {
    throw new FerryError(ErrorCode.TargetTooSmall, `the raw image has ${written} bytes; the usable target capacity is ${usable}`, { details: { size: written, usable } });
  }
  return finishRaw(attempt, written, 'decoder');
}

/**
 * For paths that copy every byte as it comes (a decoder, ranges): when the last 512 of the
 * `written` bytes are a fixed VHD's footer, they are cut from a file or zeroed on a device.
 * Returns the disk's size.
 */
export async function dropVhdFooter(target: PreparedTarget, written: number): Promise<number> {
  if (written < 2 * VHD_FOOTER_BYTES) return written;
  const disk = written - VHD_FOOTER_BYTES;
  const handle = await open(target.writePath, fsConstants.O_RDWR | fsConstants.O_NOFOLLOW);
  try {
    const tail = Buffer.alloc(VHD_FOOTER_BYTES);
    const { bytesRead } = await handle.read(tail, 0, tail.length, disk);
    if (bytesRead !== tail.length || !isFixedVhdFooter(tail, disk)) return written;
    if (target.kind === TargetKind.File) await handle.truncate(disk);
    else await writeAll(handle, Buffer.alloc(VHD_FOOTER_BYTES), disk);
    return disk;
  } finally {
    await handle.close();
  }
}

export async function importRanged(attempt: Attempt, fetch: RangedFetch): Promise<ImportSuccess> {
  const { target, deps, opened } = attempt;
  deps.progress.begin(Phase.Transfer, 0, 100, opened.size);
  await fetchRanged(attempt, target.writePath, target.kind === TargetKind.File, fetch);
  return finishRaw(attempt, await dropVhdFooter(target, fetch.length));
}
