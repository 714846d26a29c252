/**
 * The import request a user writes as CDI annotations on a PVC, and its one decoder. The
 * controller turns a request into an importer pod; nothing else reads these annotations.
 */

import { Annotation } from './cdi.js';
import { type Checksum, parseChecksum } from '../checksum.js';
import { ErrorCode, FerryError } from '../errors.js';
import { ContentType, ImportSource, normalizeSource } from '../contract/import-spec.js';

export interface ImportRequest {
  readonly source: ImportSource;
  readonly endpoint: string;
  readonly contentType: ContentType;
  /** Secret with `accessKeyId`/`secretKey` (CDI's keys), referenced, never copied. */
  readonly secretName?: string;
  /** ConfigMap of CA certificates, mounted into the importer. */
  readonly certConfigMap?: string;
  readonly insecureTls: boolean;
  /** Parsed once here; the importer pod's environment carries it on (import-spec.ts). */
  readonly checksum?: Checksum;
  readonly retainPod: boolean;
  readonly preallocation: boolean;
}

type Annotations = Readonly<Record<string, string | undefined>>;

/** Sources the controller can hand to an importer pod. */
const CONTROLLER_SOURCES: readonly ImportSource[] = [ImportSource.Http, ImportSource.S3, ImportSource.Registry, ImportSource.Blank];

/**
 * Reads the request, or undefined when the PVC asks for no import (no endpoint and no source).
 * Throws INVALID_SPEC for a request that cannot run (the controller reports it on the PVC).
 */
export function importRequestFromAnnotations(annotations: Annotations | undefined): ImportRequest | undefined {
  const a = annotations ?? {};
  const endpoint = (a[Annotation.Endpoint] ?? a[Annotation.LegacyEndpoint] ?? '').trim();
  const rawSource = a[Annotation.Source]?.trim();
  if (endpoint === '' && (rawSource === undefined || rawSource === '')) return undefined;
  // CDI writes `none` for a blank disk (a DataVolume's `source: blank`), and defaults to http.
  const source = normalizeSource(rawSource);
  if (!CONTROLLER_SOURCES.includes(source)) {
    throw new FerryError(ErrorCode.InvalidSpec, `${Annotation.Source} "${rawSource}" is not one of http, s3, registry, none`);
  }
  if (source !== ImportSource.Blank && endpoint === '') {
    throw new FerryError(ErrorCode.InvalidSpec, `source ${source} needs ${Annotation.Endpoint}`);
  }
  const contentType = (a[Annotation.ContentType]?.trim() || ContentType.Kubevirt) as ContentType;
  if (!Object.values(ContentType).includes(contentType)) {
    throw new FerryError(ErrorCode.InvalidSpec, `${Annotation.ContentType} must be kubevirt or archive, got "${contentType}"`);
  }
  const checksumText = a[Annotation.Checksum]?.trim();
  const checksum = checksumText ? parseChecksum(checksumText) : undefined;
  const secretName = a[Annotation.SecretName]?.trim();
  const certConfigMap = a[Annotation.CertConfigMap]?.trim();
  return Object.freeze({
    source,
    endpoint: source === ImportSource.Blank ? '' : endpoint,
    contentType,
    ...(secretName ? { secretName } : {}),
    ...(certConfigMap ? { certConfigMap } : {}),
    insecureTls: a[Annotation.InsecureSkipVerify] === 'true',
    ...(checksum ? { checksum } : {}),
    retainPod: a[Annotation.RetainAfterCompletion] === 'true',
    preallocation: a[Annotation.PreallocationRequested] === 'true',
  });
}
