/**
 * The import spec: everything one run of the importer needs, and its one codec to and from the
 * importer pod's environment. Variable names follow CDI's importer (IMPORTER_SOURCE,
 * IMPORTER_ENDPOINT, ...) so the controller can translate CDI's PVC annotations one to one; the
 * few Ferry additions (target kind and path, scratch dir) are named in the same style.
 */

import { type Checksum, formatChecksum, parseChecksum } from '../checksum.js';
import { ErrorCode, FerryError } from '../errors.js';
import { parseQuantity } from '../quantity.js';
import { DEFAULT_IMPORTER_METRICS_PORT } from './import-progress.js';
import { TERMINATION_MESSAGE_PATH } from './termination.js';

export const ImportSource = {
  Http: 'http',
  S3: 's3',
  Registry: 'registry',
  Blank: 'blank',
  File: 'file',
  /** A request body the upload server hands the engine (CDI's `upload` source); never from the environment alone. */
  Upload: 'upload',
} as const;
export type ImportSource = (typeof ImportSource)[keyof typeof ImportSource];

export const ContentType = { Kubevirt: 'kubevirt', Archive: 'archive' } as const;
export type ContentType = (typeof ContentType)[keyof typeof ContentType];

export const TargetKind = { File: 'file', Block: 'block', Directory: 'directory' } as const;
export type TargetKind = (typeof TargetKind)[keyof typeof TargetKind];

export interface ImportTarget {
  /** file: a raw disk file (`/data/disk.img`); block: a raw device; directory: where an archive goes. */
  readonly kind: TargetKind;
  readonly path: string;
}

export interface Credentials {
  /** Basic-auth user for http, access key id for s3 (CDI's secret key `accessKeyId`). */
  readonly username: string;
  /** Basic-auth password for http, secret key for s3 (CDI's secret key `secretKey`). */
  readonly password: string;
}

/** One extra HTTP header the importer sends to the source (CDI's `extraHeaders`, `secretExtraHeaders`). */
export interface HttpHeader {
  readonly name: string;
  readonly value: string;
}

export interface ProxySettings {
  readonly httpProxy?: string;
  readonly httpsProxy?: string;
  readonly noProxy?: string;
}

export interface ImportSpec {
  readonly source: ImportSource;
  /** URL or local path; empty for blank. */
  readonly endpoint: string;
  readonly contentType: ContentType;
  readonly target: ImportTarget;
  readonly credentials?: Credentials;
  /** A PEM file, or a directory whose files are all PEM bundles (CDI mounts a ConfigMap at /certs). */
  readonly caPath?: string;
  readonly insecureTls: boolean;
  readonly checksum?: Checksum;
  /** Size of the target volume in bytes; undefined means "the image's own virtual size". */
  readonly capacity?: number;
  /** Fraction of a filesystem volume kept for the filesystem itself (CDI default 0.06). */
  readonly filesystemOverhead: number;
  readonly preallocation: boolean;
  /** Where a non-seekable source is staged before conversion; undefined in a pod without scratch. */
  readonly scratchDir?: string;
  /** UID that labels the progress metric (the PVC's owner, as CDI does). */
  readonly ownerUid?: string;
  readonly proxy: ProxySettings;
  /**
   * http only: headers sent with every request to the endpoint's origin (scheme, host, port), on
   * every path (node, curl, nbdkit, ranged reads); never to another origin a redirect leads to.
   * Their values are secrets: never logged, never in a message.
   */
  readonly extraHeaders?: readonly HttpHeader[];
  /**
   * Where the Secrets of CDI's `secretExtraHeaders` are mounted (`/extraheaders`, one directory per
   * Secret, each key one "Name: value" line). The importer reads them before it sends anything and
   * adds them to `extraHeaders` (importer/sources/header-files.ts).
   */
  readonly secretHeadersDir?: string;
  /** s3 only: the store an `s3://bucket/key` endpoint is read from (`http(s)://host:port`); default AWS. */
  readonly s3Endpoint?: string;
  /** s3 only: the region requests are signed for (default us-east-1). */
  readonly s3Region?: string;
}

/** Environment variable names; the controller uses these when it builds the importer pod. */
export const ImportEnv = {
  Source: 'IMPORTER_SOURCE',
  Endpoint: 'IMPORTER_ENDPOINT',
  ContentType: 'IMPORTER_CONTENTTYPE',
  ImageSize: 'IMPORTER_IMAGE_SIZE',
  AccessKeyId: 'IMPORTER_ACCESS_KEY_ID',
  SecretKey: 'IMPORTER_SECRET_KEY',
  CertDir: 'IMPORTER_CERT_DIR',
  InsecureTls: 'INSECURE_TLS',
  Checksum: 'IMPORTER_CHECKSUM',
  FilesystemOverhead: 'FILESYSTEM_OVERHEAD',
  Preallocation: 'PREALLOCATION',
  OwnerUid: 'OWNER_UID',
  TargetKind: 'IMPORTER_TARGET_KIND',
  TargetPath: 'IMPORTER_TARGET_PATH',
  ScratchDir: 'IMPORTER_SCRATCH_DIR',
  S3Endpoint: 'IMPORTER_S3_ENDPOINT',
  S3Region: 'IMPORTER_S3_REGION',
  /** `IMPORTER_EXTRA_HEADER_<n>` (n = 0, 1, ...): one "Name: value" line each, CDI's variables. */
  ExtraHeaderPrefix: 'IMPORTER_EXTRA_HEADER_',
  /** Ferry's: the directory of the mounted secretExtraHeaders Secrets (CDI's fixed `/extraheaders`). */
  SecretHeadersDir: 'IMPORTER_SECRET_EXTRA_HEADERS_DIR',
  HttpProxy: 'http_proxy',
  HttpsProxy: 'https_proxy',
  NoProxy: 'no_proxy',
  /** Where the importer serves its progress metric (import-progress.ts); 0: not at all. */
  MetricsPort: 'FERRY_METRICS_PORT',
  /** Where the importer writes its termination message; only a harness outside a pod sets it. */
  TerminationLog: 'FERRY_TERMINATION_LOG',
} as const;

export const DEFAULT_FILESYSTEM_OVERHEAD = 0.06;

type Env = Readonly<Record<string, string | undefined>>;

function oneOf<T extends string>(name: string, value: string, allowed: readonly T[]): T {
  if ((allowed as readonly string[]).includes(value)) return value as T;
  throw new FerryError(ErrorCode.InvalidSpec, `${name} must be one of ${allowed.join(', ')}; got "${value}"`);
}

function parseBool(name: string, value: string | undefined): boolean {
  if (value === undefined || value === '') return false;
  if (/^(true|1|yes)$/i.test(value)) return true;
  if (/^(false|0|no)$/i.test(value)) return false;
  throw new FerryError(ErrorCode.InvalidSpec, `${name} must be true or false; got "${value}"`);
}

function parseOverhead(value: string | undefined): number {
  if (value === undefined || value === '') return DEFAULT_FILESYSTEM_OVERHEAD;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0 || n >= 1) {
    throw new FerryError(ErrorCode.InvalidSpec, `${ImportEnv.FilesystemOverhead} must be a fraction in [0, 1); got "${value}"`);
  }
  return n;
}

/** RFC 9110's token: the characters a header name may have. */
const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/**
 * Visible ASCII, spaces and tabs; no CR, LF, NUL or other control character. Not RFC 9110's
 * obs-text either: node sends such a byte as Latin-1, curl and nbdkit as UTF-8, so the paths would
 * send different headers.
 */
const HEADER_VALUE = /^[\t\x20-\x7e]*$/;
/** Headers that frame or address the request itself: a user's value would break a path or smuggle a request. */
const RESERVED_HEADERS = new Set(['host', 'content-length', 'transfer-encoding', 'connection', 'keep-alive', 'upgrade', 'te', 'trailer', 'expect', 'range', 'if-range']);

/**
 * Pure: a "Name: value" line as a header, or INVALID_SPEC (details.reason `bad-header`) naming
 * `what` but never echoing the line: a misplaced colon would put a secret in the message. The
 * value is trimmed and may not be empty (curl and nbdkit read "Name:" as "remove this header",
 * got as an empty one: the paths would differ); the headers that frame the request (Host, Range,
 * Content-Length, ...) are the importer's own.
 */
export function parseHeaderLine(line: string, what: string): HttpHeader {
  const fail = (why: string): never => {
    throw new FerryError(ErrorCode.InvalidSpec, `${what} is not a "Name: value" header line: ${why}`, { details: { reason: 'bad-header' } });
  };
  const colon = line.indexOf(':');
  if (colon < 0) fail('no colon');
  const name = line.slice(0, colon);
  const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, '');
  if (!HEADER_NAME.test(name)) fail('the name must be a token (letters, digits, !#$%&\'*+.^_`|~-) with no space before the colon');
  if (RESERVED_HEADERS.has(name.toLowerCase())) fail(`${name} is set by the importer itself`);
  if (!HEADER_VALUE.test(value)) fail('the value holds a line break, another control character or a character beyond ASCII');
  if (value === '') fail('the value is empty');
  return Object.freeze({ name, value });
}

export function formatHeaderLine(header: HttpHeader): string {
  return `${header.name}: ${header.value}`;
}

/** Pure: the `IMPORTER_EXTRA_HEADER_<n>` variables, in the order of n (CDI numbers them from 0). */
function decodeExtraHeaders(env: Env): HttpHeader[] {
  const numbered: Array<[number, string]> = [];
  for (const [name, value] of Object.entries(env)) {
    if (!name.startsWith(ImportEnv.ExtraHeaderPrefix) || value === undefined) continue;
    const n = name.slice(ImportEnv.ExtraHeaderPrefix.length);
    if (!/^\d+$/.test(n)) throw new FerryError(ErrorCode.InvalidSpec, `${name}: the suffix must be a number`, { details: { reason: 'bad-header' } });
    numbered.push([Number(n), value]);
  }
  return numbered.sort((a, b) => a[0] - b[0]).map(([n, line]) => parseHeaderLine(line, `${ImportEnv.ExtraHeaderPrefix}${n}`));
}

/**
 * Maps a source name to Ferry's: CDI's `none` is a blank disk, and CDI treats a missing source as
 * http, so we do too.
 */
export function normalizeSource(value: string | undefined): ImportSource {
  if (value === undefined || value === '') return ImportSource.Http;
  if (value === 'none') return ImportSource.Blank;
  return oneOf('source', value, Object.values(ImportSource));
}

/** Checks the invariants that make a spec runnable; every decoder and builder calls it. */
export function validateSpec(spec: ImportSpec): ImportSpec {
  const fail = (message: string): never => {
    throw new FerryError(ErrorCode.InvalidSpec, message);
  };
  if (spec.source !== ImportSource.Blank && spec.endpoint === '') fail(`source ${spec.source} needs an endpoint`);
  if (spec.contentType === ContentType.Archive) {
    if (spec.target.kind !== TargetKind.Directory) fail('content type archive needs a directory target');
    if (spec.source === ImportSource.Blank) fail('a blank image cannot have content type archive');
  } else if (spec.target.kind === TargetKind.Directory) {
    fail('content type kubevirt needs a file or block device target');
  }
  if (spec.target.path === '') fail('the target path is empty');
  if (spec.source === ImportSource.Blank && spec.capacity === undefined && spec.target.kind !== TargetKind.Block) {
    fail('a blank image needs a size');
  }
  if (spec.capacity !== undefined && (!Number.isSafeInteger(spec.capacity) || spec.capacity <= 0)) {
    fail(`capacity must be a positive number of bytes; got ${spec.capacity}`);
  }
  if ((spec.extraHeaders?.length || spec.secretHeadersDir !== undefined) && spec.source !== ImportSource.Http) fail(`extra headers are for the http source, not ${spec.source}`);
  spec.extraHeaders?.forEach((h, i) => parseHeaderLine(formatHeaderLine(h), `extra header ${i}`));
  return Object.freeze(spec);
}

/** Reads the spec from the importer pod's environment. Throws INVALID_SPEC naming the variable. */
export function decodeImportEnv(env: Env): ImportSpec {
  const get = (name: string): string | undefined => {
    const v = env[name];
    return v === undefined || v === '' ? undefined : v;
  };
  const source = normalizeSource(get(ImportEnv.Source));
  const contentType = oneOf(ImportEnv.ContentType, get(ImportEnv.ContentType) ?? ContentType.Kubevirt, Object.values(ContentType));
  const targetKind = oneOf(ImportEnv.TargetKind, get(ImportEnv.TargetKind) ?? TargetKind.File, Object.values(TargetKind));
  const targetPath = get(ImportEnv.TargetPath);
  if (targetPath === undefined) throw new FerryError(ErrorCode.InvalidSpec, `${ImportEnv.TargetPath} is not set`);
  const user = get(ImportEnv.AccessKeyId);
  const password = get(ImportEnv.SecretKey);
  const size = get(ImportEnv.ImageSize);
  const checksum = get(ImportEnv.Checksum);
  const extraHeaders = decodeExtraHeaders(env);
  const spec: ImportSpec = {
    source,
    endpoint: get(ImportEnv.Endpoint) ?? '',
    contentType,
    target: { kind: targetKind, path: targetPath },
    ...(user !== undefined || password !== undefined ? { credentials: { username: user ?? '', password: password ?? '' } } : {}),
    ...(get(ImportEnv.CertDir) !== undefined ? { caPath: get(ImportEnv.CertDir) } : {}),
    insecureTls: parseBool(ImportEnv.InsecureTls, get(ImportEnv.InsecureTls)),
    ...(checksum !== undefined ? { checksum: parseChecksum(checksum) } : {}),
    ...(size !== undefined ? { capacity: parseQuantity(size) } : {}),
    filesystemOverhead: parseOverhead(get(ImportEnv.FilesystemOverhead)),
    preallocation: parseBool(ImportEnv.Preallocation, get(ImportEnv.Preallocation)),
    ...(get(ImportEnv.ScratchDir) !== undefined ? { scratchDir: get(ImportEnv.ScratchDir) } : {}),
    ...(get(ImportEnv.OwnerUid) !== undefined ? { ownerUid: get(ImportEnv.OwnerUid) } : {}),
    ...(extraHeaders.length > 0 ? { extraHeaders } : {}),
    ...(get(ImportEnv.SecretHeadersDir) !== undefined ? { secretHeadersDir: get(ImportEnv.SecretHeadersDir) } : {}),
    ...(get(ImportEnv.S3Endpoint) !== undefined ? { s3Endpoint: get(ImportEnv.S3Endpoint) } : {}),
    ...(get(ImportEnv.S3Region) !== undefined ? { s3Region: get(ImportEnv.S3Region) } : {}),
    proxy: {
      ...(get(ImportEnv.HttpProxy) ?? get('HTTP_PROXY') ? { httpProxy: get(ImportEnv.HttpProxy) ?? get('HTTP_PROXY') } : {}),
      ...(get(ImportEnv.HttpsProxy) ?? get('HTTPS_PROXY') ? { httpsProxy: get(ImportEnv.HttpsProxy) ?? get('HTTPS_PROXY') } : {}),
      ...(get(ImportEnv.NoProxy) ?? get('NO_PROXY') ? { noProxy: get(ImportEnv.NoProxy) ?? get('NO_PROXY') } : {}),
    },
  };
  return validateSpec(spec);
}

/**
 * Writes the spec as environment variables. Credentials are included for completeness (local runs,
 * tests); the controller puts secret references in their place instead of values.
 */
export function encodeImportEnv(spec: ImportSpec): Record<string, string> {
  const env: Record<string, string> = {
    [ImportEnv.Source]: spec.source,
    [ImportEnv.Endpoint]: spec.endpoint,
    [ImportEnv.ContentType]: spec.contentType,
    [ImportEnv.TargetKind]: spec.target.kind,
    [ImportEnv.TargetPath]: spec.target.path,
    [ImportEnv.InsecureTls]: String(spec.insecureTls),
    [ImportEnv.FilesystemOverhead]: String(spec.filesystemOverhead),
    [ImportEnv.Preallocation]: String(spec.preallocation),
  };
  if (spec.credentials) {
    env[ImportEnv.AccessKeyId] = spec.credentials.username;
    env[ImportEnv.SecretKey] = spec.credentials.password;
  }
  if (spec.caPath !== undefined) env[ImportEnv.CertDir] = spec.caPath;
  if (spec.checksum !== undefined) env[ImportEnv.Checksum] = formatChecksum(spec.checksum);
  if (spec.capacity !== undefined) env[ImportEnv.ImageSize] = String(spec.capacity);
  if (spec.scratchDir !== undefined) env[ImportEnv.ScratchDir] = spec.scratchDir;
  if (spec.ownerUid !== undefined) env[ImportEnv.OwnerUid] = spec.ownerUid;
  spec.extraHeaders?.forEach((h, i) => {
    env[`${ImportEnv.ExtraHeaderPrefix}${i}`] = formatHeaderLine(h);
  });
  if (spec.secretHeadersDir !== undefined) env[ImportEnv.SecretHeadersDir] = spec.secretHeadersDir;
  if (spec.s3Endpoint !== undefined) env[ImportEnv.S3Endpoint] = spec.s3Endpoint;
  if (spec.s3Region !== undefined) env[ImportEnv.S3Region] = spec.s3Region;
  if (spec.proxy.httpProxy !== undefined) env[ImportEnv.HttpProxy] = spec.proxy.httpProxy;
  if (spec.proxy.httpsProxy !== undefined) env[ImportEnv.HttpsProxy] = spec.proxy.httpsProxy;
  if (spec.proxy.noProxy !== undefined) env[ImportEnv.NoProxy] = spec.proxy.noProxy;
  return env;
}

/**
 * How the importer process runs, beside the spec: where it serves progress and writes its
 * termination message. Also read from the pod's environment; the controller sets the port.
 */
export interface ImporterSettings {
  readonly metricsPort: number;
  readonly terminationLog: string;
}

/** `$FERRY_METRICS_PORT`, default 8443; 0 turns the endpoint off. Throws INVALID_SPEC naming it. */
export function decodeMetricsPort(env: Env): number {
  const text = env[ImportEnv.MetricsPort];
  if (text === undefined || text === '') return DEFAULT_IMPORTER_METRICS_PORT;
  const port = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!(port >= 0 && port <= 65535)) throw new FerryError(ErrorCode.InvalidSpec, `${ImportEnv.MetricsPort} must be a port number (0..65535), got "${text}"`);
  return port;
}

/** `$FERRY_TERMINATION_LOG`, default the kubelet's /dev/termination-log. Never throws: it is where errors go. */
export function decodeTerminationLog(env: Env): string {
  return env[ImportEnv.TerminationLog] || TERMINATION_MESSAGE_PATH;
}

/**
 * V8's heap settings for the data-path pods (importer, upload server, clone target), set as their
 * `NODE_OPTIONS`: without a cap V8 grows its old space lazily with the stream's garbage, and a gzip
 * import from a plain server peaked at 163 MiB RSS; with it, 129 MiB at the same speed
 * (bench/README.md, issue #16, quiet re-run).
 */
export const WORKER_NODE_OPTIONS = '--max-semi-space-size=4 --max-old-space-size=64';

/**
 * The settings as environment variables (those given). Decoded by two functions, since the importer
 * needs the termination log before anything can fail and the port only once it is running.
 */
export function encodeImporterSettings(settings: Partial<ImporterSettings>): Record<string, string> {
  const env: Record<string, string> = {};
  if (settings.metricsPort !== undefined) {
    if (!Number.isInteger(settings.metricsPort) || settings.metricsPort < 0 || settings.metricsPort > 65535) {
      throw new FerryError(ErrorCode.InvalidSpec, `the metrics port must be 0..65535, got ${settings.metricsPort}`);
    }
    env[ImportEnv.MetricsPort] = String(settings.metricsPort);
  }
  if (settings.terminationLog !== undefined) env[ImportEnv.TerminationLog] = settings.terminationLog;
  return env;
}
