/**
 * The clone pods' environments, one codec each. The target is an upload server pod in shape (CDI
 * runs its upload server as the clone target), so it reads the upload server's variables
 * (src/contract/upload-server.ts) and must be given `CLIENT_NAME`: CDI's
 * `<srcNs>/<srcName>-<tgtNs>/<tgtName>`, the common name of the one client certificate it accepts.
 * The source is CDI's cloner in shape: `VOLUME_MODE`, `MOUNT_POINT`, `UPLOAD_URL` as CDI's, the
 * TLS material as files (CDI passes PEM in variables; Ferry keeps keys out of the environment).
 */

import { ErrorCode, FerryError } from '../errors.js';
import { ContentType, decodeMetricsPort, ImportEnv } from './import-spec.js';
import { TERMINATION_MESSAGE_PATH } from './termination.js';
import { decodeUploadServerEnv, type UploadServerConfig, UploadServerEnv } from './upload-server.js';
import { CLONE_PATH, SourceKind } from './clone-stream.js';

/** CDI's client name for a clone: the source and target claims, namespaced. */
export function cloneClientName(source: { readonly namespace: string; readonly name: string }, target: { readonly namespace: string; readonly name: string }): string {
  return `${source.namespace}/${source.name}-${target.namespace}/${target.name}`;
}

const fail = (message: string): never => {
  throw new FerryError(ErrorCode.InvalidSpec, message);
};

type Env = Readonly<Record<string, string | undefined>>;

/** The clone target's configuration: the upload server's, with the client name required. */
export function decodeCloneTargetEnv(env: Env): UploadServerConfig {
  const name = env[UploadServerEnv.ClientName];
  if (name === undefined || name === '') fail(`${UploadServerEnv.ClientName} must name the clone source's certificate (CDI: <srcNs>/<srcName>-<tgtNs>/<tgtName>); a clone target has no default client`);
  return decodeUploadServerEnv(env);
}

/**
 * How the clone target reports progress, beside the upload server's variables: the importer's
 * (`OWNER_UID`, the PVC's single owner else the PVC; `FERRY_METRICS_PORT`, where `GET /metrics`
 * is served in plain HTTP), so the import controller's scraper and decoder read it unchanged.
 * Unset port: no endpoint (the target's own port is the upload server's 8443, the importer's default).
 */
export interface CloneTargetProgress {
  readonly ownerUid: string;
  /** 0: no endpoint. */
  readonly metricsPort: number;
}

export function decodeCloneTargetProgress(env: Env, serverPort: number): CloneTargetProgress {
  const set = env[ImportEnv.MetricsPort] !== undefined && env[ImportEnv.MetricsPort] !== '';
  const metricsPort = set ? decodeMetricsPort(env) : 0;
  if (metricsPort !== 0 && metricsPort === serverPort) fail(`${ImportEnv.MetricsPort} (${metricsPort}) must differ from the clone target's own port`);
  return Object.freeze({ ownerUid: env[ImportEnv.OwnerUid] ?? '', metricsPort });
}

export function encodeCloneTargetProgress(progress: CloneTargetProgress): Record<string, string> {
  return { [ImportEnv.OwnerUid]: progress.ownerUid, [ImportEnv.MetricsPort]: String(progress.metricsPort) };
}

export const CloneSourceEnv = {
  /** `filesystem` (default) or `block`, as CDI's cloner. */
  VolumeMode: 'VOLUME_MODE',
  /** Where the source volume is: the mount directory, or the device for block. */
  MountPoint: 'MOUNT_POINT',
  /** `kubevirt` (a disk: `disk.img` or the device) or `archive` (the directory tree). */
  ContentType: 'CLONE_CONTENT_TYPE',
  /** The target's clone endpoint, https only. */
  UploadUrl: 'UPLOAD_URL',
  ClientKeyFile: 'CLONE_CLIENT_KEY_FILE',
  ClientCertFile: 'CLONE_CLIENT_CERT_FILE',
  /** The CA the target's server certificate must chain to. */
  ServerCaFile: 'CLONE_SERVER_CA_FILE',
  TerminationLog: ImportEnv.TerminationLog,
} as const;

export const VolumeMode = { Filesystem: 'filesystem', Block: 'block' } as const;
export type VolumeMode = (typeof VolumeMode)[keyof typeof VolumeMode];

/** CDI's source mounts: the claim's directory, or its device. */
export const CLONE_SOURCE_MOUNT = '/var/run/cdi/clone/source';
export const CLONE_SOURCE_DEVICE = '/dev/cdi-block-volume';
export const CLONE_DISK_FILE = 'disk.img';

export interface CloneSourceConfig {
  readonly kind: SourceKind;
  /** The disk file, the device, or the directory to tar. */
  readonly path: string;
  readonly url: string;
  readonly tls: { readonly keyFile: string; readonly certFile: string; readonly serverCaFile: string };
  readonly terminationLog: string;
}

/** Pure: what the source reads, from the volume mode, content type and mount point. */
export function sourceOf(mode: VolumeMode, contentType: ContentType, mount: string | undefined): { readonly kind: SourceKind; readonly path: string } {
  if (mode === VolumeMode.Block) {
    if (contentType === ContentType.Archive) fail('archive content needs a filesystem volume, not a block device');
    return { kind: SourceKind.Block, path: mount ?? CLONE_SOURCE_DEVICE };
  }
  const dir = (mount ?? CLONE_SOURCE_MOUNT).replace(/\/+$/, '') || '/';
  if (contentType === ContentType.Archive) return { kind: SourceKind.Archive, path: dir };
  return { kind: SourceKind.Filesystem, path: `${dir === '/' ? '' : dir}/${CLONE_DISK_FILE}` };
}

function oneOf<T extends string>(name: string, value: string, allowed: readonly T[]): T {
  return (allowed as readonly string[]).includes(value) ? (value as T) : fail(`${name} must be one of ${allowed.join(', ')}; got "${value}"`);
}

export function decodeCloneSourceEnv(env: Env): CloneSourceConfig {
  const get = (name: string): string | undefined => (env[name] === undefined || env[name] === '' ? undefined : env[name]);
  const mode = oneOf(CloneSourceEnv.VolumeMode, get(CloneSourceEnv.VolumeMode) ?? VolumeMode.Filesystem, Object.values(VolumeMode));
  const contentType = oneOf(CloneSourceEnv.ContentType, get(CloneSourceEnv.ContentType) ?? ContentType.Kubevirt, Object.values(ContentType));
  const url = get(CloneSourceEnv.UploadUrl) ?? fail(`${CloneSourceEnv.UploadUrl} is not set: the clone target's https URL`);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return fail(`${CloneSourceEnv.UploadUrl} is not a URL: "${url}"`);
  }
  if (parsed.protocol !== 'https:') fail(`${CloneSourceEnv.UploadUrl} must be https (mutual TLS); got "${url}"`);
  if (parsed.username !== '' || parsed.password !== '') fail(`${CloneSourceEnv.UploadUrl} must not carry credentials`);
  const file = (name: string): string => get(name) ?? fail(`${name} is not set: the clone source speaks mutual TLS only`);
  return Object.freeze({
    ...sourceOf(mode, contentType, get(CloneSourceEnv.MountPoint)),
    url: parsed.pathname === '/' ? new URL(CLONE_PATH, parsed).toString() : parsed.toString(),
    tls: Object.freeze({ keyFile: file(CloneSourceEnv.ClientKeyFile), certFile: file(CloneSourceEnv.ClientCertFile), serverCaFile: file(CloneSourceEnv.ServerCaFile) }),
    terminationLog: get(CloneSourceEnv.TerminationLog) ?? TERMINATION_MESSAGE_PATH,
  });
}

/** The configuration as the source pod's environment (what the controller will set). */
export function encodeCloneSourceEnv(config: CloneSourceConfig): Record<string, string> {
  const mode = config.kind === SourceKind.Block ? VolumeMode.Block : VolumeMode.Filesystem;
  const contentType = config.kind === SourceKind.Archive ? ContentType.Archive : ContentType.Kubevirt;
  const mount = config.kind === SourceKind.Filesystem ? config.path.replace(new RegExp(`/${CLONE_DISK_FILE}$`), '') || '/' : config.path;
  if (config.kind === SourceKind.Filesystem && !config.path.endsWith(`/${CLONE_DISK_FILE}`)) fail(`a filesystem source reads ${CLONE_DISK_FILE} in its mount; got ${config.path}`);
  const env = {
    [CloneSourceEnv.VolumeMode]: mode,
    [CloneSourceEnv.ContentType]: contentType,
    [CloneSourceEnv.MountPoint]: mount,
    [CloneSourceEnv.UploadUrl]: config.url,
    [CloneSourceEnv.ClientKeyFile]: config.tls.keyFile,
    [CloneSourceEnv.ClientCertFile]: config.tls.certFile,
    [CloneSourceEnv.ServerCaFile]: config.tls.serverCaFile,
    [CloneSourceEnv.TerminationLog]: config.terminationLog,
  };
  decodeCloneSourceEnv(env);
  return env;
}
