/**
 * Container image references in CDI's registry form: `docker://host[:port]/repo[/more]:tag` or
 * `docker://host/repo@sha256:<hex>` (a digest wins over a tag). Names without a registry host
 * resolve the way docker and containers/image do: `docker://fedora` is docker.io/library/fedora.
 */

import { ErrorCode, FerryError } from '../../src/errors.js';

export interface ImageReference {
  /** host[:port] as written (docker.io for Docker Hub). */
  readonly registry: string;
  /** Where the registry API answers (registry-1.docker.io for docker.io). */
  readonly apiHost: string;
  readonly repository: string;
  readonly tag?: string;
  /** `sha256:<hex>` */
  readonly digest?: string;
}

const DOCKER_HUB = 'docker.io';
const DOCKER_HUB_API = 'registry-1.docker.io';
const COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[\w][\w.-]{0,127}$/;
const DIGEST = /^sha256:[a-f0-9]{64}$/;

function invalid(endpoint: string, why: string): FerryError {
  return new FerryError(ErrorCode.InvalidSpec, `registry endpoint "${endpoint}": ${why} (expected docker://host[:port]/repository[:tag|@sha256:digest])`);
}

/** Whether the first path component names a registry host rather than a Docker Hub namespace. */
function isHost(component: string): boolean {
  return component.includes('.') || component.includes(':') || component === 'localhost' || component.startsWith('[');
}

/** Pure: parses a `docker://` endpoint. Throws INVALID_SPEC naming what is wrong. */
export function parseImageReference(endpoint: string): ImageReference {
  const m = /^docker:\/\/(.+)$/i.exec(endpoint.trim());
  if (!m || m[1] === undefined) throw invalid(endpoint, 'not a docker:// URL');
  let rest = m[1];
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    if (!DIGEST.test(digest)) throw invalid(endpoint, `"${digest}" is not a sha256 digest`);
  }
  const parts = rest.split('/');
  const first = parts[0] ?? '';
  let registry = DOCKER_HUB;
  if (parts.length > 1 && isHost(first)) {
    registry = first;
    parts.shift();
  }
  // The tag is after the last colon of the last component (a registry port is in the host part).
  let tag: string | undefined;
  const last = parts[parts.length - 1] ?? '';
  const colon = last.lastIndexOf(':');
  if (colon >= 0) {
    tag = last.slice(colon + 1);
    parts[parts.length - 1] = last.slice(0, colon);
    if (!TAG.test(tag)) throw invalid(endpoint, `"${tag}" is not a valid tag`);
  }
  if (registry === DOCKER_HUB && parts.length === 1) parts.unshift('library');
  for (const part of parts) {
    if (!COMPONENT.test(part)) throw invalid(endpoint, `"${part}" is not a valid repository name component`);
  }
  if (!/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$/.test(registry)) throw invalid(endpoint, `"${registry}" is not a valid registry host`);
  return {
    registry,
    apiHost: registry === DOCKER_HUB ? DOCKER_HUB_API : registry,
    repository: parts.join('/'),
    // Without a digest a missing tag means "latest"; with one, the tag is only informative.
    ...(tag !== undefined || digest === undefined ? { tag: tag ?? 'latest' } : {}),
    ...(digest !== undefined ? { digest } : {}),
  };
}

/** `docker://registry/repository[:tag][@digest]`, for messages and logs. */
export function formatImageReference(ref: ImageReference): string {
  return `docker://${ref.registry}/${ref.repository}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest !== undefined ? `@${ref.digest}` : ''}`;
}
