/**
 * Image manifests as a registry serves them (OCI and Docker v2 schema 2; an image index or Docker
 * manifest list for multi-platform images), parsed and checked into one small shape. Pure.
 */

import { ErrorCode, FerryError } from '../../src/errors.js';

export const ManifestMediaType = {
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  DockerList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  DockerSchema1: 'application/vnd.docker.distribution.manifest.v1+json',
  DockerSchema1Signed: 'application/vnd.docker.distribution.manifest.v1+prettyjws',
} as const;

/** The Accept header of a manifest request: what this client understands, lists first. */
export const MANIFEST_ACCEPT = [
  ManifestMediaType.OciIndex,
  ManifestMediaType.DockerList,
  ManifestMediaType.OciManifest,
  ManifestMediaType.DockerManifest,
].join(', ');

export interface Platform {
  readonly os: string;
  readonly architecture: string;
  readonly variant?: string;
}

export interface BlobDescriptor {
  readonly mediaType: string;
  /** `sha256:<hex>` */
  readonly digest: string;
  readonly size: number;
  readonly platform?: Platform;
}

export type Manifest =
  | { readonly kind: 'index'; readonly manifests: readonly BlobDescriptor[] }
  | { readonly kind: 'image'; readonly config: BlobDescriptor; readonly layers: readonly BlobDescriptor[] };

/** Manifests are small; containers/image refuses more than 4 MiB too. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

const SHA256 = /^sha256:[a-f0-9]{64}$/;

function bad(where: string, why: string): FerryError {
  return new FerryError(ErrorCode.InvalidImage, `the manifest of ${where} is invalid: ${why}`);
}

function descriptor(value: unknown, where: string): BlobDescriptor {
  const d = value as { mediaType?: unknown; digest?: unknown; size?: unknown; platform?: { os?: unknown; architecture?: unknown; variant?: unknown } } | null;
  if (typeof d !== 'object' || d === null) throw bad(where, 'a descriptor is not an object');
  if (typeof d.digest !== 'string') throw bad(where, 'a descriptor has no digest');
  if (!SHA256.test(d.digest)) {
    throw new FerryError(ErrorCode.UnsupportedFormat, `${where} uses the digest "${d.digest}"; only sha256 digests are supported`);
  }
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) throw bad(where, `descriptor ${d.digest} has no valid size`);
  const p = d.platform;
  const platform =
    p && typeof p.os === 'string' && typeof p.architecture === 'string'
      ? { os: p.os, architecture: p.architecture, ...(typeof p.variant === 'string' ? { variant: p.variant } : {}) }
      : undefined;
  return { mediaType: typeof d.mediaType === 'string' ? d.mediaType : '', digest: d.digest, size: d.size, ...(platform ? { platform } : {}) };
}

/**
 * Parses a manifest body. The media type comes from Content-Type, falling back to the body's own
 * `mediaType` (and to its shape: OCI allows both to be absent).
 */
export function parseManifest(body: Buffer, contentType: string | undefined, where: string): Manifest {
  let json: { mediaType?: unknown; schemaVersion?: unknown; manifests?: unknown; config?: unknown; layers?: unknown };
  try {
    json = JSON.parse(body.toString('utf8')) as typeof json;
  } catch (err) {
    throw bad(where, `not JSON (${(err as Error).message})`);
  }
  if (typeof json !== 'object' || json === null) throw bad(where, 'not a JSON object');
  const declared = (contentType ?? '').split(';')[0]?.trim() ?? '';
  const mediaType = declared !== '' && declared !== 'application/json' && declared !== 'text/plain' ? declared : typeof json.mediaType === 'string' ? json.mediaType : '';
  if (mediaType === ManifestMediaType.DockerSchema1 || mediaType === ManifestMediaType.DockerSchema1Signed || json.schemaVersion === 1) {
    throw new FerryError(ErrorCode.UnsupportedFormat, `${where} has a Docker v2 schema 1 manifest, which is not supported; push it again with a current tool`);
  }
  const isIndex = mediaType === ManifestMediaType.OciIndex || mediaType === ManifestMediaType.DockerList || (mediaType === '' && Array.isArray(json.manifests));
  if (isIndex) {
    if (!Array.isArray(json.manifests)) throw bad(where, 'an index without "manifests"');
    return { kind: 'index', manifests: json.manifests.map((m) => descriptor(m, where)) };
  }
  const isImage = mediaType === ManifestMediaType.OciManifest || mediaType === ManifestMediaType.DockerManifest || (mediaType === '' && json.config !== undefined);
  if (!isImage) throw new FerryError(ErrorCode.UnsupportedFormat, `${where} is a "${mediaType}", not a container image`);
  if (!Array.isArray(json.layers)) throw bad(where, 'no "layers"');
  return { kind: 'image', config: descriptor(json.config, where), layers: json.layers.map((l) => descriptor(l, where)) };
}

export function formatPlatform(p: Platform): string {
  return `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}`;
}

/**
 * Picks the manifest for `wanted` from an index. An index whose only entry names no platform (an
 * OCI layout pushed as is) is taken as it stands. No match is SOURCE_NOT_FOUND naming what exists.
 */
export function selectPlatform(manifests: readonly BlobDescriptor[], wanted: Platform, where: string): BlobDescriptor {
  const match = manifests.find((m) => m.platform?.os === wanted.os && m.platform.architecture === wanted.architecture && (wanted.variant === undefined || m.platform.variant === wanted.variant));
  if (match) return match;
  const only = manifests[0];
  if (manifests.length === 1 && only !== undefined && only.platform === undefined) return only;
  // Attestation manifests (buildx) carry unknown/unknown: not a platform anyone can pick.
  const available = [...new Set(manifests.flatMap((m) => (m.platform && m.platform.os !== 'unknown' ? [formatPlatform(m.platform)] : [])))];
  throw new FerryError(
    ErrorCode.SourceNotFound,
    `${where} has no image for ${formatPlatform(wanted)}; it has ${available.length > 0 ? available.join(', ') : 'no platform-specific images'}`,
    { details: { platforms: available.join(',') } },
  );
}

/** Whether a layer's media type is a filesystem tar (plain or compressed), as images use. */
export function isFilesystemLayer(mediaType: string): boolean {
  return mediaType === '' || /^application\/vnd\.(oci\.image\.layer\.(nondistributable\.)?v1\.tar|docker\.image\.rootfs\.(foreign\.)?diff\.tar)/.test(mediaType);
}
