/**
 * A resumable upload of a raw image, written straight into the target as it streams (ADR 0010,
 * "Raw uploads in place"): no scratch copy, no second write. Only a plain raw disk (the first bytes
 * show no compression, no qcow2/vmdk/vhd/… header) into a kubevirt target; everything else is
 * staged on scratch and imported by the engine.
 *
 * A file target is written as `<disk>.ferry-upload` beside the disk (sparse: zero blocks stay
 * holes) and renamed to the disk's name only when complete, as the engine's partial file is, so a
 * half-written disk never carries the final name; a block device is written in place (every byte)
 * and its first MiB zeroed if the upload is given up. The durable-offset record stays on scratch
 * (importer/upload-server-resumable.ts): it outlives the pod as the target does.
 */

import { constants as fsConstants } from 'node:fs';
import { type FileHandle, lstat, open, rename, rm } from 'node:fs/promises';
import { ErrorCode, FerryError, toFerryError } from '../src/errors.js';
import { ContentType, type ImportSpec, TargetKind } from '../src/contract/import-spec.js';
import type { ImportSuccess } from '../src/contract/termination.js';
import { success } from './engine/context.js';
import { dropVhdFooter } from './engine/raw.js';
import { detectFormat, Format, SNIFF_BYTES } from './sniff.js';
import { createExclusive, discardPartial, finishDisk, type PreparedTarget, prepareTarget } from './target.js';
import { VHD_FOOTER_BYTES } from './vhd-footer.js';

/** The name a file disk is written under while its upload runs (beside the engine's `.ferry-partial`). */
export const IN_PLACE_SUFFIX = '.ferry-upload';

/** The bytes the first decision needs: enough for every magic `detectFormat` knows. */
export const IN_PLACE_HEAD_BYTES = SNIFF_BYTES;

export type InPlaceVerdict =
  | { readonly kind: 'in-place' }
  /** Compressed, converted, an archive: staged on scratch, then the engine. */
  | { readonly kind: 'staged' }
  | { readonly kind: 'refused'; readonly error: FerryError };

/**
 * Pure: where the bytes of a resumable upload go, from its first bytes (`head`: at least
 * IN_PLACE_HEAD_BYTES, or the whole image when shorter), its length and the usable capacity. A raw
 * image too large is refused before a byte is written; up to a fixed VHD footer too large it is
 * allowed (the footer is found and cut at the end, and the size checked again).
 */
export function inPlaceVerdict(facts: { readonly contentType: ContentType; readonly head: Buffer; readonly length: number; readonly usable?: number }): InPlaceVerdict {
  if (facts.contentType !== ContentType.Kubevirt) return { kind: 'staged' };
  if (detectFormat(facts.head) !== Format.Raw) return { kind: 'staged' };
  const slack = facts.length >= 2 * VHD_FOOTER_BYTES ? VHD_FOOTER_BYTES : 0;
  if (facts.usable !== undefined && facts.length - slack > facts.usable) {
    return {
      kind: 'refused',
      error: new FerryError(ErrorCode.TargetTooSmall, `the raw image has ${facts.length} bytes; the usable target capacity is ${facts.usable}`, { details: { size: facts.length, usable: facts.usable } }),
    };
  }
  return { kind: 'in-place' };
}

export interface InPlaceWrites {
  verdict(head: Buffer, length: number): Promise<InPlaceVerdict>;
  /**
   * Opens the target to write from `offset`: 0 starts afresh; otherwise the durable bytes before
   * `offset` are kept and a file is cut there (bytes past it were never acknowledged), so skipped
   * zero blocks read as zeros.
   */
  open(offset: number): Promise<{ readonly handle: FileHandle; readonly sparse: boolean }>;
  /** Whether what an earlier server wrote is still there (a file disk: its upload file). */
  present(): Promise<boolean>;
  /** Every byte is in and durable: the disk completed under its final name. */
  finish(length: number): Promise<ImportSuccess>;
  /** Gives the upload up: the upload file goes, a device's first MiB is zeroed. */
  discard(): Promise<void>;
}

export function inPlaceWrites(spec: ImportSpec): InPlaceWrites {
  let prepared: Promise<PreparedTarget> | undefined;
  const target = (): Promise<PreparedTarget> => (prepared ??= prepareTarget(spec));
  const pathOf = (t: PreparedTarget): string => (t.kind === TargetKind.File ? t.path + IN_PLACE_SUFFIX : t.path);
  const targetError = (err: unknown): FerryError => toFerryError(err, ErrorCode.TargetError);

  return {
    async verdict(head, length) {
      const t = await target();
      return inPlaceVerdict({ contentType: spec.contentType, head, length, ...(t.usable !== undefined ? { usable: t.usable } : {}) });
    },
    async open(offset) {
      const t = await target();
      const path = pathOf(t);
      try {
        if (t.kind === TargetKind.Block) return { handle: await open(path, 'r+'), sparse: false };
        if (offset === 0) {
          // Whatever is at the name goes (unlink drops a link, never its target); O_EXCL then refuses any new one.
          await rm(path, { force: true });
          return { handle: await createExclusive(path), sparse: true };
        }
        const handle = await open(path, fsConstants.O_RDWR | fsConstants.O_NOFOLLOW);
        if (!(await handle.stat()).isFile()) {
          await handle.close();
          throw new FerryError(ErrorCode.TargetError, `${path} is no longer a regular file`);
        }
        await handle.truncate(offset);
        return { handle, sparse: true };
      } catch (err) {
        throw targetError(err);
      }
    },
    async present() {
      const t = await target();
      if (t.kind !== TargetKind.File) return true;
      return lstat(pathOf(t)).then((s) => s.isFile(), () => false);
    },
    async finish(length) {
      const t = await target();
      try {
        if (t.kind === TargetKind.File) {
          // Trailing zero blocks were skipped: the file gets its length, then the engine's partial name.
          const handle = await open(pathOf(t), fsConstants.O_RDWR | fsConstants.O_NOFOLLOW);
          try {
            await handle.truncate(length);
          } finally {
            await handle.close();
          }
          await rename(pathOf(t), t.writePath);
        }
        const disk = await dropVhdFooter(t, length);
        if (t.usable !== undefined && disk > t.usable) {
          throw new FerryError(ErrorCode.TargetTooSmall, `the raw image has ${disk} bytes; the usable target capacity is ${t.usable}`, { details: { size: disk, usable: t.usable } });
        }
        const done = await finishDisk(t, { written: disk, preallocate: spec.preallocation });
        return success({ sourceFormat: Format.Raw, diskSize: done.size, preallocationApplied: done.preallocationApplied });
      } catch (err) {
        throw targetError(err);
      }
    },
    async discard() {
      const t = await target();
      if (t.kind === TargetKind.File) await rm(pathOf(t), { force: true });
      await discardPartial(t);
    },
  };
}
