/**
 * cloud-init NoCloud data for a VMI, as KubeVirt builds it (pkg/cloud-init): `user-data`,
 * `meta-data` (JSON) and `network-config` on an ISO9660 volume labelled `cidata`.
 */

import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { ErrorCode, FerryError } from '../../src/errors.js';
import type { CloudInitNoCloud, VirtualMachineInstance } from '../../src/api/kubevirt.js';
import { firmwareUuid } from '../../src/api/kubevirt-defaults.js';
import { runTool } from '../../src/io/child-process.js';

export interface NoCloudFiles {
  readonly 'user-data': Buffer;
  readonly 'meta-data': Buffer;
  readonly 'network-config'?: Buffer;
}

/** The files of the secrets a cloudInitNoCloud volume names, already read by the caller. */
export interface NoCloudSecrets {
  /** `secretRef`'s secret: key `userdata` or `userData`. */
  readonly userData?: Readonly<Record<string, Buffer | string>>;
  /** `networkDataSecretRef`'s secret: key `networkdata` or `networkData`. */
  readonly networkData?: Readonly<Record<string, Buffer | string>>;
}

/** The ISO's volume id; cloud-init's NoCloud datasource looks for a filesystem labelled so. */
export const NOCLOUD_VOLUME_ID = 'cidata';
export const ISO_TIMEOUT_MS = 10_000;

function invalid(message: string): FerryError {
  return new FerryError(ErrorCode.InvalidSpec, message);
}

/** Strict base64 (Go's StdEncoding, as KubeVirt decodes): Node's decoder silently skips junk. */
function decodeBase64(text: string, field: string): Buffer {
  const compact = text.replace(/\s+/g, '');
  if (compact.length % 4 !== 0 || !/^[A-Za-z0-9+/]*={0,2}$/.test(compact)) throw invalid(`cloudInitNoCloud.${field} is not valid base64`);
  return Buffer.from(compact, 'base64');
}

function fromSecret(files: Readonly<Record<string, Buffer | string>> | undefined, keys: readonly string[], what: string): Buffer {
  if (files === undefined) throw invalid(`cloudInitNoCloud.${what}: the secret was not found`);
  for (const key of keys) {
    const value = files[key];
    if (value !== undefined) return Buffer.from(value);
  }
  throw invalid(`cloudInitNoCloud.${what}: the secret has no key ${keys.join(' or ')}`);
}

function userDataOf(source: CloudInitNoCloud, secrets: NoCloudSecrets): Buffer | undefined {
  if (source.userData !== undefined) return Buffer.from(source.userData);
  if (source.userDataBase64 !== undefined) return decodeBase64(source.userDataBase64, 'userDataBase64');
  if (source.secretRef !== undefined) return fromSecret(secrets.userData, ['userdata', 'userData'], 'secretRef');
  return undefined;
}

function networkDataOf(source: CloudInitNoCloud, secrets: NoCloudSecrets): Buffer | undefined {
  if (source.networkData !== undefined) return Buffer.from(source.networkData);
  if (source.networkDataBase64 !== undefined) return decodeBase64(source.networkDataBase64, 'networkDataBase64');
  if (source.networkDataSecretRef !== undefined) return fromSecret(secrets.networkData, ['networkdata', 'networkData'], 'networkDataSecretRef');
  return undefined;
}

/** The guest's hostname: `spec.hostname`, else the VMI name's first DNS label (at most 63 characters). */
export function guestHostname(vmi: Pick<VirtualMachineInstance, 'metadata' | 'spec'>): string {
  if (vmi.spec.hostname) return vmi.spec.hostname;
  return (vmi.metadata.name ?? '').split('.')[0]!.slice(0, 63);
}

/**
 * The NoCloud files for the VMI's (first) cloudInitNoCloud volume. `meta-data` is JSON as KubeVirt
 * writes it: instance-id the firmware UUID (stable across restarts, so cloud-init runs once per VM),
 * local-hostname from `guestHostname`. `network-config` only when network data is given.
 *
 * KubeVirt caps inline userData/networkData at 2048 bytes each because every VMI object is fanned out
 * to many watchers at cluster scale; Ferry does not: it runs at small scale without that fan-out, and
 * the apiserver's object size limit (~1.5 MiB) still bounds what a VMI can carry.
 */
export function noCloudFiles(vmi: VirtualMachineInstance, secrets: NoCloudSecrets = {}): NoCloudFiles {
  const volume = (vmi.spec.volumes ?? []).find((v) => v.cloudInitNoCloud !== undefined);
  if (!volume?.cloudInitNoCloud) throw invalid('the VMI has no cloudInitNoCloud volume');
  const userData = userDataOf(volume.cloudInitNoCloud, secrets);
  const networkData = networkDataOf(volume.cloudInitNoCloud, secrets);
  if ((userData === undefined || userData.length === 0) && (networkData === undefined || networkData.length === 0)) {
    throw invalid(`volume "${volume.name}": cloudInitNoCloud has neither user data nor network data`);
  }
  const meta = {
    'instance-id': vmi.spec.domain.firmware?.uuid ?? firmwareUuid(vmi.metadata.namespace ?? 'default', vmi.metadata.name ?? ''),
    'local-hostname': guestHostname(vmi),
  };
  return {
    'user-data': userData ?? Buffer.alloc(0),
    'meta-data': Buffer.from(JSON.stringify(meta)),
    ...(networkData !== undefined && networkData.length > 0 ? { 'network-config': networkData } : {}),
  };
}

function run(file: string, args: readonly string[], timeoutMs: number): Promise<void> {
  return runTool(file, args, { timeoutMs, maxBuffer: 1024 * 1024, what: 'cannot build the cloud-init ISO' }).then(() => undefined);
}

/**
 * Writes the files to an ISO9660 (Joliet + Rock Ridge) image labelled `cidata` at `outPath`, as
 * KubeVirt does: xorrisofs writes `<outPath>.staging`, which is then renamed into place so a reader
 * never sees half an ISO. The data files live in a temporary directory beside `outPath`.
 */
export async function buildNoCloudIso(files: NoCloudFiles, outPath: string, options: { timeoutMs?: number } = {}): Promise<void> {
  const staging = `${outPath}.staging`;
  const dataDir = await mkdtemp(join(dirname(outPath), '.cidata-'));
  try {
    for (const [name, content] of Object.entries(files)) {
      if (content !== undefined) await writeFile(join(dataDir, name), content, { mode: 0o600 });
    }
    await run('xorrisofs', ['-output', staging, '-volid', NOCLOUD_VOLUME_ID, '-joliet', '-rock', dataDir], options.timeoutMs ?? ISO_TIMEOUT_MS);
    await rename(staging, outPath);
  } catch (err) {
    await rm(staging, { force: true }).catch(() => undefined);
    throw err;
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
}
