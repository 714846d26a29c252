/**
 * The upload server pod's configuration and its one codec to and from the pod's environment. The
 * names are CDI's where CDI has one (`TLS_KEY_FILE`, `TLS_CERT_FILE`, `CLIENT_CERT_FILE`,
 * `CLIENT_NAME`, `FILESYSTEM_OVERHEAD`, `UPLOAD_IMAGE_SIZE`, `PREALLOCATION`, `DESTINATION`,
 * `DEADLINE`); Ferry's additions name the target kind, content type and scratch directory the
 * engine needs, which CDI's server derives from its mounts.
 */

import { ErrorCode, FerryError } from '../errors.js';
import { parseQuantity } from '../quantity.js';
import { ContentType, DEFAULT_FILESYSTEM_OVERHEAD, ImportEnv, type ImportTarget, TargetKind } from './import-spec.js';
import { TERMINATION_MESSAGE_PATH } from './termination.js';
import { UPLOAD_PROXY_CLIENT_NAME, UPLOAD_SERVER_PORT } from './upload-api.js';

export const UploadServerEnv = {
  TlsKeyFile: 'TLS_KEY_FILE',
  TlsCertFile: 'TLS_CERT_FILE',
  /** The CA bundle client certificates must chain to (the proxy's client CA). */
  ClientCaFile: 'CLIENT_CERT_FILE',
  ClientName: 'CLIENT_NAME',
  FilesystemOverhead: 'FILESYSTEM_OVERHEAD',
  ImageSize: 'UPLOAD_IMAGE_SIZE',
  Preallocation: 'PREALLOCATION',
  Destination: 'DESTINATION',
  /** RFC 3339: the server gives up if no upload has finished by then (its certificate's lifetime). */
  Deadline: 'DEADLINE',
  TargetKind: 'UPLOAD_TARGET_KIND',
  ContentType: 'UPLOAD_CONTENT_TYPE',
  ScratchDir: 'UPLOAD_SCRATCH_DIR',
  Port: 'UPLOAD_PORT',
  /** Address to listen on; default all. Tests use 127.0.0.1. */
  Host: 'UPLOAD_HOST',
  TerminationLog: ImportEnv.TerminationLog,
} as const;

/** CDI's default destinations: a disk file on a filesystem volume, or the block device. */
export const UPLOAD_DEFAULT_FILE_DESTINATION = '/data/disk.img';
export const UPLOAD_BLOCK_DESTINATION = '/dev/cdi-block-volume';

export interface UploadServerConfig {
  readonly target: ImportTarget;
  readonly contentType: ContentType;
  /** Size of the volume in bytes (`UPLOAD_IMAGE_SIZE`); undefined: the image's own size. */
  readonly capacity?: number;
  readonly filesystemOverhead: number;
  readonly preallocation: boolean;
  readonly scratchDir?: string;
  readonly tls: { readonly keyFile: string; readonly certFile: string; readonly clientCaFile: string };
  /** The common name a client certificate must carry. */
  readonly clientName: string;
  readonly port: number;
  readonly host?: string;
  /** Milliseconds since the epoch. */
  readonly deadline?: number;
  readonly terminationLog: string;
}

type Env = Readonly<Record<string, string | undefined>>;

const fail = (message: string): never => {
  throw new FerryError(ErrorCode.InvalidSpec, message);
};

function parseBool(name: string, value: string | undefined): boolean {
  if (value === undefined) return false;
  if (/^(true|1|yes)$/i.test(value)) return true;
  if (/^(false|0|no)$/i.test(value)) return false;
  return fail(`${name} must be true or false; got "${value}"`);
}

function oneOf<T extends string>(name: string, value: string, allowed: readonly T[]): T {
  return (allowed as readonly string[]).includes(value) ? (value as T) : fail(`${name} must be one of ${allowed.join(', ')}; got "${value}"`);
}

/** Checks what makes a configuration runnable; the decoder and the encoder both call it. */
export function validateUploadServerConfig(config: UploadServerConfig): UploadServerConfig {
  if (config.contentType === ContentType.Archive && config.target.kind !== TargetKind.Directory) fail('content type archive needs a directory target');
  if (config.contentType === ContentType.Kubevirt && config.target.kind === TargetKind.Directory) fail('content type kubevirt needs a file or block device target');
  if (config.target.path === '') fail(`${UploadServerEnv.Destination} is empty`);
  for (const [name, value] of [
    [UploadServerEnv.TlsKeyFile, config.tls.keyFile],
    [UploadServerEnv.TlsCertFile, config.tls.certFile],
    [UploadServerEnv.ClientCaFile, config.tls.clientCaFile],
  ] as const) {
    if (value === '') fail(`${name} is not set: the upload server serves TLS only, to clients with a certificate from that CA`);
  }
  if (config.clientName === '') fail(`${UploadServerEnv.ClientName} is empty`);
  if (!Number.isInteger(config.port) || config.port < 0 || config.port > 65535) fail(`${UploadServerEnv.Port} must be 0..65535; got ${config.port}`);
  if (config.capacity !== undefined && (!Number.isSafeInteger(config.capacity) || config.capacity <= 0)) fail(`${UploadServerEnv.ImageSize} must be a positive size; got ${config.capacity}`);
  if (!(config.filesystemOverhead >= 0 && config.filesystemOverhead < 1)) fail(`${UploadServerEnv.FilesystemOverhead} must be a fraction in [0, 1)`);
  return Object.freeze(config);
}

export function decodeUploadServerEnv(env: Env): UploadServerConfig {
  const get = (name: string): string | undefined => (env[name] === undefined || env[name] === '' ? undefined : env[name]);
  const contentType = oneOf(UploadServerEnv.ContentType, get(UploadServerEnv.ContentType) ?? ContentType.Kubevirt, Object.values(ContentType));
  const destination = get(UploadServerEnv.Destination) ?? (contentType === ContentType.Archive ? '/data' : UPLOAD_DEFAULT_FILE_DESTINATION);
  const defaultKind = contentType === ContentType.Archive ? TargetKind.Directory : destination === UPLOAD_BLOCK_DESTINATION ? TargetKind.Block : TargetKind.File;
  const kind = oneOf(UploadServerEnv.TargetKind, get(UploadServerEnv.TargetKind) ?? defaultKind, Object.values(TargetKind));
  const size = get(UploadServerEnv.ImageSize);
  const overheadText = get(UploadServerEnv.FilesystemOverhead);
  const overhead = overheadText === undefined ? DEFAULT_FILESYSTEM_OVERHEAD : Number(overheadText);
  if (!Number.isFinite(overhead)) fail(`${UploadServerEnv.FilesystemOverhead} must be a fraction in [0, 1); got "${overheadText}"`);
  const portText = get(UploadServerEnv.Port);
  const port = portText === undefined ? UPLOAD_SERVER_PORT : /^\d+$/.test(portText) ? Number(portText) : fail(`${UploadServerEnv.Port} must be a port number; got "${portText}"`);
  const deadlineText = get(UploadServerEnv.Deadline);
  const deadline = deadlineText === undefined ? undefined : Date.parse(deadlineText);
  if (deadline !== undefined && Number.isNaN(deadline)) fail(`${UploadServerEnv.Deadline} must be an RFC 3339 time; got "${deadlineText}"`);
  const scratchDir = get(UploadServerEnv.ScratchDir);
  const host = get(UploadServerEnv.Host);
  return validateUploadServerConfig({
    target: { kind, path: destination },
    contentType,
    ...(size !== undefined ? { capacity: parseQuantity(size) } : {}),
    filesystemOverhead: overhead,
    preallocation: parseBool(UploadServerEnv.Preallocation, get(UploadServerEnv.Preallocation)),
    ...(scratchDir !== undefined ? { scratchDir } : {}),
    tls: { keyFile: get(UploadServerEnv.TlsKeyFile) ?? '', certFile: get(UploadServerEnv.TlsCertFile) ?? '', clientCaFile: get(UploadServerEnv.ClientCaFile) ?? '' },
    clientName: get(UploadServerEnv.ClientName) ?? UPLOAD_PROXY_CLIENT_NAME,
    port,
    ...(host !== undefined ? { host } : {}),
    ...(deadline !== undefined ? { deadline } : {}),
    terminationLog: get(UploadServerEnv.TerminationLog) ?? TERMINATION_MESSAGE_PATH,
  });
}

/** The configuration as the pod's environment (what the controller will set). */
export function encodeUploadServerEnv(config: UploadServerConfig): Record<string, string> {
  validateUploadServerConfig(config);
  const env: Record<string, string> = {
    [UploadServerEnv.TlsKeyFile]: config.tls.keyFile,
    [UploadServerEnv.TlsCertFile]: config.tls.certFile,
    [UploadServerEnv.ClientCaFile]: config.tls.clientCaFile,
    [UploadServerEnv.ClientName]: config.clientName,
    [UploadServerEnv.FilesystemOverhead]: String(config.filesystemOverhead),
    [UploadServerEnv.Preallocation]: String(config.preallocation),
    [UploadServerEnv.Destination]: config.target.path,
    [UploadServerEnv.TargetKind]: config.target.kind,
    [UploadServerEnv.ContentType]: config.contentType,
    [UploadServerEnv.Port]: String(config.port),
    [UploadServerEnv.TerminationLog]: config.terminationLog,
  };
  if (config.capacity !== undefined) env[UploadServerEnv.ImageSize] = String(config.capacity);
  if (config.scratchDir !== undefined) env[UploadServerEnv.ScratchDir] = config.scratchDir;
  if (config.host !== undefined) env[UploadServerEnv.Host] = config.host;
  if (config.deadline !== undefined) env[UploadServerEnv.Deadline] = new Date(config.deadline).toISOString();
  return env;
}
