/**
 * The import request a user writes as CDI annotations on a PVC, and its one decoder. The
 * controller turns a request into an importer pod; nothing else reads these annotations.
 */

import { Annotation } from './cdi.js';
import { type Checksum, parseChecksum } from '../checksum.js';
import { ErrorCode, FerryError } from '../errors.js';
import { ContentType, type HttpHeader, ImportSource, normalizeSource, parseHeaderLine } from '../contract/import-spec.js';

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
  /** http only: header lines, validated (`storage.import.extraHeaders.<n>`); the values are secrets, never logged. */
  readonly extraHeaders?: readonly HttpHeader[];
  /** http only: Secrets whose every key is one header line, mounted into the importer (`storage.import.secretExtraHeaders.<n>`). */
  readonly secretExtraHeaders?: readonly string[];
  readonly retainPod: boolean;
  readonly preallocation: boolean;
}

type Annotations = Readonly<Record<string, string | undefined>>;

/** Sources the controller can hand to an importer pod. */
const CONTROLLER_SOURCES: readonly ImportSource[] = [ImportSource.Http, ImportSource.S3, ImportSource.Registry, ImportSource.Blank];

/** A Secret's name: a DNS subdomain. */
const SECRET_NAME = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** Pure: the values of `<key>.0`, `<key>.1`, ... in the order of their numbers. Throws INVALID_SPEC for another suffix. */
function numbered(a: Annotations, key: string): Array<{ readonly key: string; readonly value: string }> {
  const found: Array<[number, string, string]> = [];
  for (const [name, value] of Object.entries(a)) {
    if (!name.startsWith(`${key}.`) || value === undefined) continue;
    const n = name.slice(key.length + 1);
    if (!/^\d+$/.test(n)) throw new FerryError(ErrorCode.InvalidSpec, `${name}: the suffix after ${key}. must be a number`);
    found.push([Number(n), name, value]);
  }
  return found.sort((x, y) => x[0] - y[0]).map(([, name, value]) => ({ key: name, value }));
}

/**
 * Pure: the numbered annotations a DataVolume's http.extraHeaders and http.secretExtraHeaders
 * become on its PVC (CDI's keys, numbered from 0); read back by importRequestFromAnnotations.
 */
export function extraHeaderAnnotations(extraHeaders: readonly string[] | undefined, secretExtraHeaders: readonly string[] | undefined): Record<string, string> {
  return {
    ...Object.fromEntries((extraHeaders ?? []).map((line, n) => [`${Annotation.ExtraHeaders}.${n}`, line])),
    ...Object.fromEntries((secretExtraHeaders ?? []).map((name, n) => [`${Annotation.SecretExtraHeaders}.${n}`, name])),
  };
}

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
  // The message names the annotation, never its value (a header value is a secret).
  const extraHeaders = numbered(a, Annotation.ExtraHeaders).map(({ key, value }) => parseHeaderLine(value, key));
  const secretExtraHeaders = numbered(a, Annotation.SecretExtraHeaders).map(({ key, value }) => {
    const name = value.trim();
    if (!SECRET_NAME.test(name) || name.length > 253) throw new FerryError(ErrorCode.InvalidSpec, `${key} must name a Secret, got "${value}"`);
    return name;
  });
  if (source !== ImportSource.Http && extraHeaders.length + secretExtraHeaders.length > 0) {
    throw new FerryError(ErrorCode.InvalidSpec, `${Annotation.ExtraHeaders} and ${Annotation.SecretExtraHeaders} are for the http source, not ${source}`);
  }
  return Object.freeze({
    source,
    endpoint: source === ImportSource.Blank ? '' : endpoint,
    contentType,
    ...(secretName ? { secretName } : {}),
    ...(certConfigMap ? { certConfigMap } : {}),
    insecureTls: a[Annotation.InsecureSkipVerify] === 'true',
    ...(checksum ? { checksum } : {}),
    ...(extraHeaders.length > 0 ? { extraHeaders } : {}),
    ...(secretExtraHeaders.length > 0 ? { secretExtraHeaders } : {}),
    retainPod: a[Annotation.RetainAfterCompletion] === 'true',
    preallocation: a[Annotation.PreallocationRequested] === 'true',
  });
}
