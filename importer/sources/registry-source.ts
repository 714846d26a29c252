/**
 * The container-registry source (CDI's `registry`, pod pull): a KubeVirt containerDisk image,
 * `docker://host[:port]/repo:tag` or `…@sha256:<digest>`, whose disk under `disk/` is streamed
 * into the engine straight out of its layer. The engine sniffs the disk's format as for any
 * source; the stream is not random-access, so a qcow2 disk is staged in scratch space as in CDI.
 */

import { ErrorCode, FerryError } from '../../src/errors.js';
import type { ByteStream } from '../streams.js';
import { RegistryClient, type RegistryClientOptions } from './oci-client.js';
import { type DiskEvent, type FoundDisk, streamDisk } from './oci-disk.js';
import { type BlobDescriptor, isFilesystemLayer, type Platform, selectPlatform } from './oci-manifest.js';
import { formatImageReference, type ImageReference, parseImageReference } from './oci-reference.js';
import type { OpenedSource } from './source.js';

export interface RegistrySourceOptions extends Omit<RegistryClientOptions, 'reference'> {
  /** docker://host[:port]/repository[:tag|@sha256:digest]; insecureTls also allows plain HTTP. */
  readonly endpoint: string;
  /** The platform picked from a multi-platform image (default linux/amd64). */
  readonly platform?: Platform;
}

export const DEFAULT_PLATFORM: Platform = Object.freeze({ os: 'linux', architecture: 'amd64' });

/** An index may point at another index; real images nest at most once. */
const MAX_INDEX_DEPTH = 2;

interface ResolvedImage {
  readonly digest: string;
  readonly layers: readonly BlobDescriptor[];
}

/** Follows tag → (index → platform manifest) → image manifest. */
async function resolveImage(client: RegistryClient, ref: ImageReference, platform: Platform, where: string): Promise<ResolvedImage> {
  let reference = ref.digest ?? ref.tag ?? 'latest';
  for (let depth = 0; depth <= MAX_INDEX_DEPTH; depth += 1) {
    const { manifest, digest } = await client.manifest(reference);
    if (manifest.kind === 'image') {
      const foreign = manifest.layers.find((l) => !isFilesystemLayer(l.mediaType));
      if (foreign) throw new FerryError(ErrorCode.UnsupportedFormat, `${where} has a layer of type "${foreign.mediaType}", which is not a filesystem layer`);
      return { digest, layers: manifest.layers };
    }
    reference = selectPlatform(manifest.manifests, platform, where).digest;
  }
  throw new FerryError(ErrorCode.InvalidImage, `${where}: image indexes nest more than ${MAX_INDEX_DEPTH} deep`);
}

/**
 * Opens the image and reads up to the disk's tar header, so the size is known; the returned
 * stream carries the disk's bytes and fails (before it ends) on a digest mismatch or a second disk.
 */
export async function openRegistry(options: RegistrySourceOptions): Promise<OpenedSource> {
  const ref = parseImageReference(options.endpoint);
  const where = formatImageReference(ref);
  const { endpoint: _endpoint, platform, ...clientOptions } = options;
  const client = await RegistryClient.connect({ ...clientOptions, reference: ref });
  const image = await resolveImage(client, ref, platform ?? DEFAULT_PLATFORM, where);
  const events = streamDisk(image.layers, (layer) => client.openBlob(layer), where);
  let found: FoundDisk;
  try {
    const first = await events.next();
    if (first.done || Buffer.isBuffer(first.value)) throw new FerryError(ErrorCode.Internal, `${where}: the disk stream did not start with its header`);
    found = first.value;
  } catch (err) {
    await events.return(undefined).catch(() => undefined);
    throw err;
  }
  return {
    stream: diskBytes(events),
    size: found.size,
    acceptsRanges: false,
    description: `${where.replace(/@sha256:.*$/, '')}@${image.digest} ${found.path} (layer ${found.layer.digest})`,
  };
}

/** The rest of the events: only the disk's bytes follow its header. */
async function* diskBytes(events: AsyncGenerator<DiskEvent>): ByteStream {
  for await (const chunk of events) yield chunk as Buffer;
}
