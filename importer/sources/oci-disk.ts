/**
 * Finds a containerDisk's disk in an image's layers and streams it, without unpacking the image.
 *
 * Which file is the disk: the image's filesystem is the union of its layers, upper layers winning,
 * with whiteouts (`.wh.<name>` removes <name>, `.wh..wh..opq` hides everything a directory had in
 * lower layers). The disk is a regular file under `disk/` of that union; the LAST (uppermost)
 * layer that contributes one wins, and that layer must contribute exactly one.
 *
 * How: the layers are walked from the last to the first. Each layer is streamed once (blob →
 * digest check → gunzip/zstd → tar headers), bodies skipped, while its whiteouts and entries are
 * noted as shadows on the layers below. The first layer (from the top) with a disk file that no
 * upper layer shadows is the winner: the disk's bytes are passed on as they come out of the tar,
 * and the rest of that layer is still read, so that a second disk file and a digest mismatch fail
 * the stream before it ends. Lower layers are never downloaded. Each blob is read exactly once:
 * the cost over a plain download is only the upper layers (usually none in a containerDisk).
 * The alternative, a first pass over every layer's headers, would download the disk layer twice.
 */

import { posix } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { ErrorCode, FerryError, isFerryError } from '../../src/errors.js';
import { peel } from '../layers.js';
import type { CheckedBlob } from './oci-client.js';
import type { BlobDescriptor } from './oci-manifest.js';

const DISK_DIR = 'disk/';
const WHITEOUT = '.wh.';
const OPAQUE = '.wh..wh..opq';

/** Pure: a tar entry name as a clean relative path (`./disk/x` → `disk/x`, `disk/` → `disk`). */
export function entryPath(name: string): string {
  const normal = posix.normalize(`/${name}`).replace(/^\/+/, '').replace(/\/+$/, '');
  return normal;
}

export type EntryKind =
  | { readonly kind: 'whiteout'; readonly path: string }
  | { readonly kind: 'opaque'; readonly dir: string }
  | { readonly kind: 'disk'; readonly path: string }
  | { readonly kind: 'other'; readonly path: string; readonly directory: boolean };

/** Pure: what a layer entry means for the search. */
export function classifyEntry(name: string, type: string | null | undefined): EntryKind {
  const path = entryPath(name);
  const base = posix.basename(path);
  const dir = posix.dirname(path) === '.' ? '' : posix.dirname(path);
  if (base === OPAQUE) return { kind: 'opaque', dir };
  if (base.startsWith(`${WHITEOUT}${WHITEOUT}`)) return { kind: 'other', path, directory: false }; // aufs metadata
  if (base.startsWith(WHITEOUT)) return { kind: 'whiteout', path: dir === '' ? base.slice(WHITEOUT.length) : `${dir}/${base.slice(WHITEOUT.length)}` };
  if (path.startsWith(DISK_DIR) && (type === 'file' || type === 'contiguous-file')) return { kind: 'disk', path };
  return { kind: 'other', path, directory: type === 'directory' };
}

/** What upper layers do to the paths of the layers below them. */
export class Shadows {
  /** Whited out: the path and everything under it. */
  private readonly removed = new Set<string>();
  /** Everything strictly under these is hidden (opaque directories, and non-directories). */
  private readonly covered = new Set<string>();
  /** Present in an upper layer: a lower file at the same path is replaced. */
  private readonly present = new Set<string>();

  note(kind: EntryKind): void {
    switch (kind.kind) {
      case 'whiteout':
        this.removed.add(kind.path);
        break;
      case 'opaque':
        this.covered.add(kind.dir);
        break;
      case 'disk':
        this.present.add(kind.path);
        this.covered.add(kind.path);
        break;
      case 'other':
        this.present.add(kind.path);
        if (!kind.directory) this.covered.add(kind.path);
        break;
    }
  }

  merge(lower: Shadows): void {
    for (const p of lower.removed) this.removed.add(p);
    for (const p of lower.covered) this.covered.add(p);
    for (const p of lower.present) this.present.add(p);
  }

  /** Whether a file at `path` in a lower layer is invisible in the union. */
  hides(path: string): boolean {
    if (this.present.has(path) || this.removed.has(path)) return true;
    for (let dir = posix.dirname(path); dir !== '.' && dir !== '/'; dir = posix.dirname(dir)) {
      if (this.removed.has(dir) || this.covered.has(dir)) return true;
    }
    return this.covered.has('');
  }
}

export interface FoundDisk {
  readonly kind: 'found';
  /** Path inside the image, e.g. disk/disk.qcow2 */
  readonly path: string;
  readonly size: number;
  readonly layer: BlobDescriptor;
}

/** First a FoundDisk, then the disk's bytes. */
export type DiskEvent = FoundDisk | Buffer;

/** Opens a layer's blob, checked against its digest (RegistryClient.openBlob). */
export type BlobOpener = (layer: BlobDescriptor) => Promise<CheckedBlob>;

/**
 * Streams the disk of an image whose layers are `layers` (first to last). Throws INVALID_IMAGE
 * when no layer has a disk or the winning layer has more than one.
 */
export async function* streamDisk(layers: readonly BlobDescriptor[], open: BlobOpener, where: string): AsyncGenerator<DiskEvent> {
  const above = new Shadows();
  for (let i = layers.length - 1; i >= 0; i -= 1) {
    const layer = layers[i] as BlobDescriptor;
    const blob = await open(layer);
    const own = new Shadows();
    let found: FoundDisk | undefined;
    let verdict: FerryError | undefined;
    try {
      const peeled = await peel(blob.stream);
      const extract = tar.extract();
      const feeding = pipeline(Readable.from(peeled.stream, { objectMode: false }), extract).then(
        () => undefined,
        (err: unknown) => err,
      );
      try {
        for await (const entry of extract) {
          const kind = classifyEntry(entry.header.name, entry.header.type);
          if (kind.kind === 'disk' && !above.hides(kind.path)) {
            if (found) {
              verdict = new FerryError(ErrorCode.InvalidImage, `more than one disk image under disk/ in ${where}: ${found.path} and ${kind.path} (layer ${layer.digest})`);
              throw verdict;
            }
            found = { kind: 'found', path: kind.path, size: entry.header.size ?? 0, layer };
            yield found;
            for await (const chunk of entry) yield chunk as Buffer;
            continue;
          }
          own.note(kind);
          entry.resume();
        }
        const err = await feeding;
        if (err) throw err;
      } catch (err) {
        extract.destroy();
        const fed = await feeding;
        // A failure of the blob itself (network, digest) is the real cause of a broken tar.
        throw isFerryError(fed) ? fed : err;
      }
    } catch (err) {
      throw err === verdict ? err : await layerError(err, blob, layer, where);
    } finally {
      await blob.close();
    }
    if (found) return;
    above.merge(own);
  }
  throw new FerryError(ErrorCode.InvalidImage, `no disk image under disk/ in ${where}`);
}

/**
 * A failure while reading a layer. The blob's own failures (network, digest) stand as they are; a
 * decoding failure (gunzip, zstd, tar) is checked against the digest first, which names the real
 * cause when the registry served the wrong bytes, and otherwise names the layer.
 */
async function layerError(err: unknown, blob: CheckedBlob, layer: BlobDescriptor, where: string): Promise<unknown> {
  if (isFerryError(err) && err.code !== ErrorCode.InvalidImage) return err;
  const cause = await blob.explain(err);
  if (cause !== err) return cause;
  const message = err instanceof Error ? err.message : String(err);
  return new FerryError(ErrorCode.InvalidImage, `layer ${layer.digest} of ${where} is not a valid (compressed) tar: ${message}`, { cause: err });
}
