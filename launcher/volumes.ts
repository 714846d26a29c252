/**
 * Turns the VMI's volumes into what `planDomain` needs (`VolumeOnPod`): where each disk is on this
 * pod, its format, whether it takes O_DIRECT. Filesystem PVCs hold `<volumes-dir>/<vol>/disk.img`
 * (created sparse or grown to the PVC's capacity minus a reserve), block PVCs are `/dev/<vol>`,
 * emptyDisks are new qcow2 files and the cloudInitNoCloud volume becomes a `cidata` ISO.
 */

import { constants as fsConstants } from 'node:fs';
import { chown, mkdir, open, readdir, readFile, stat, statfs, truncate } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { ErrorCode, FerryError } from '../src/errors.js';
import type { Logger } from '../src/logging.js';
import { formatBytes, parseQuantity } from '../src/quantity.js';
import { claimOf, type VirtualMachineInstance, type Volume } from '../src/api/kubevirt.js';
import { buildNoCloudIso, noCloudFiles, type NoCloudSecrets } from './domain/cloud-init.js';
import type { VolumeOnPod } from './domain/domain-plan.js';
import { cloudInitSecretDir, PodPath } from '../src/contract/launch-plan.js';
import type { RunAs } from './libvirtd.js';
import { runTool } from '../src/io/child-process.js';

/**
 * Kept free beside a disk.img created or grown to fill its volume, so that filesystem metadata
 * (indirect blocks, journal) still fits when the guest has written every block: KubeVirt's
 * `minimumPVCReserveBytes`, added after sparse images larger than the free space paused guests.
 */
export const DISK_IMAGE_RESERVE_BYTES = 128 * 1024;
/** A volume may be this much smaller than asked (filesystem overhead): KubeVirt's pvc-tolerate-less-space-up-to-percent default. */
export const LESS_SPACE_TOLERATION_PERCENT = 10;
const SECTOR = 512;

export type DiskImagePlan =
  | { readonly action: 'keep'; readonly size: number }
  | { readonly action: 'create' | 'grow'; readonly size: number; readonly tolerated?: string };

export interface DiskImageInput {
  /** The PVC's capacity, when known; otherwise the volume's free space is the size. */
  readonly requested?: number;
  /** Free bytes on the volume for an unprivileged writer (statfs bavail × bsize). */
  readonly available: number;
  /** The existing disk.img, if any: apparent size, allocated bytes and format. */
  readonly existing?: { readonly size: number; readonly allocated: number; readonly format: 'raw' | 'qcow2' };
  readonly readOnly?: boolean;
  readonly reserve?: number;
  readonly tolerationPercent?: number;
}

/**
 * Pure: what to do with `disk.img`. The usable size is what is free (plus what the existing file
 * already occupies) minus the reserve. A requested size above it is tolerated down to
 * `tolerationPercent` less (the image then fills the usable size); beyond that it is an error rather
 * than a sparse image the filesystem cannot back. A smaller raw image is grown (a guest sees a
 * bigger disk, as after a PVC expansion); qcow2 images and read-only volumes are never touched.
 */
export function planDiskImage(input: DiskImageInput): DiskImagePlan {
  const reserve = input.reserve ?? DISK_IMAGE_RESERVE_BYTES;
  const toleration = input.tolerationPercent ?? LESS_SPACE_TOLERATION_PERCENT;
  const existing = input.existing;
  if (existing && (input.readOnly || existing.format !== 'raw')) return { action: 'keep', size: existing.size };
  if (!existing && input.readOnly) throw new FerryError(ErrorCode.InvalidSpec, 'the volume is read-only and has no disk.img');
  if (existing && input.requested === undefined) return { action: 'keep', size: existing.size };
  const usable = Math.max(0, input.available + (existing?.allocated ?? 0) - reserve);
  let target = input.requested ?? usable;
  let tolerated: string | undefined;
  if (target > usable) {
    const minimum = Math.floor((target * (100 - toleration)) / 100);
    if (minimum > usable) {
      throw new FerryError(
        ErrorCode.NoSpace,
        `disk.img of ${formatBytes(target)} does not fit: ${formatBytes(usable)} usable (free space minus a ${formatBytes(reserve)} reserve), more than ${toleration}% less than requested`,
        { details: { requested: target, usable } },
      );
    }
    tolerated = `the volume has ${formatBytes(usable)} usable of the ${formatBytes(target)} requested (within the ${toleration}% toleration)`;
    target = usable;
  }
  target = Math.floor(target / SECTOR) * SECTOR;
  if (existing && existing.size >= target) return { action: 'keep', size: existing.size };
  if (target <= 0) throw new FerryError(ErrorCode.NoSpace, `no space for disk.img: ${formatBytes(input.available)} free`);
  return { action: existing ? 'grow' : 'create', size: target, ...(tolerated ? { tolerated } : {}) };
}

const QCOW2_MAGIC = Buffer.from([0x51, 0x46, 0x49, 0xfb]);
/** qcow2 v3 incompatible feature bit 2: the guest data lives in another (external) file. */
const QCOW2_EXTERNAL_DATA_FILE = 1n << 2n;

/**
 * Pure: the format from the first bytes (≥ 80), and for qcow2 whether it refers to other files. A
 * backing file or external data file would let a PVC's image read any path QEMU can open, so those
 * are refused as the importer refuses them.
 */
export function sniffDiskFormat(header: Buffer): { format: 'raw' | 'qcow2'; refersToOtherFiles: boolean } {
  if (header.length < 4 || !header.subarray(0, 4).equals(QCOW2_MAGIC)) return { format: 'raw', refersToOtherFiles: false };
  const version = header.length >= 8 ? header.readUInt32BE(4) : 0;
  const backing = header.length >= 16 ? header.readBigUInt64BE(8) : 0n;
  const incompatible = version >= 3 && header.length >= 80 ? header.readBigUInt64BE(72) : 0n;
  return { format: 'qcow2', refersToOtherFiles: backing !== 0n || (incompatible & QCOW2_EXTERNAL_DATA_FILE) !== 0n };
}

async function readHeader(path: string): Promise<Buffer> {
  const handle = await open(path, 'r');
  try {
    const buf = Buffer.alloc(512);
    const { bytesRead } = await handle.read(buf, 0, 512, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await handle.close();
  }
}

async function formatOf(path: string, volume: string): Promise<'raw' | 'qcow2'> {
  const sniffed = sniffDiskFormat(await readHeader(path));
  if (sniffed.refersToOtherFiles) {
    throw new FerryError(ErrorCode.BackingFile, `volume "${volume}": ${path} is a qcow2 image with a backing or external data file, which Ferry does not open`);
  }
  return sniffed.format;
}

/** The file or device accepts O_DIRECT (tmpfs and some FUSE filesystems refuse it). */
export async function supportsODirect(path: string): Promise<boolean> {
  try {
    const handle = await open(path, fsConstants.O_RDONLY | fsConstants.O_DIRECT);
    await handle.close();
    return true;
  } catch {
    return false;
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

/** Where the launcher finds and puts volumes (the pod's paths by default). */
export interface VolumeDirs {
  /** Filesystem PVCs: `<volumes>/<vol>/disk.img`. */
  readonly volumes: string;
  /** Block PVCs: `<block>/<vol>`. */
  readonly block: string;
  /** cloud-init ISOs: `<cloudInit>/<namespace>/<name>/noCloud.iso`. */
  readonly cloudInit: string;
  /** emptyDisks: `<emptyDisks>/<vol>.qcow2`. */
  readonly emptyDisks: string;
  /** cloud-init secretRef volumes: `<secrets>/<vol>[-ndata]/<key>`. */
  readonly secrets: string;
}

export interface PrepareOptions {
  readonly dirs: VolumeDirs;
  /** PVC capacities by volume name (`--volume-size vol=SIZE`). */
  readonly sizes: Readonly<Record<string, number>>;
  /** QEMU runs as this user: the files it opens are handed over to it. */
  readonly owner?: RunAs;
  readonly logger: Logger;
}

function volumeError(volume: string, err: unknown): FerryError {
  const message = `volume "${volume}": ${(err as Error).message}`;
  if (err instanceof FerryError) return new FerryError(err.code, message, { cause: err, details: { ...err.details, reason: err.details.reason ?? 'VolumeFailed' } });
  return new FerryError(ErrorCode.Internal, message, { cause: err, details: { reason: 'VolumeFailed' } });
}

/** Prepares every volume of a defaulted VMI; the result is `LauncherEnv.volumes`. */
export async function prepareVolumes(vmi: VirtualMachineInstance, options: PrepareOptions): Promise<Record<string, VolumeOnPod>> {
  const result: Record<string, VolumeOnPod> = {};
  for (const volume of vmi.spec.volumes ?? []) {
    try {
      result[volume.name] = await prepareVolume(vmi, volume, options);
      if (options.owner) await chown(result[volume.name]!.path, options.owner.uid, options.owner.gid);
    } catch (err) {
      throw volumeError(volume.name, err);
    }
  }
  return result;
}

async function prepareVolume(vmi: VirtualMachineInstance, volume: Volume, options: PrepareOptions): Promise<VolumeOnPod> {
  const claim = claimOf(volume);
  if (claim) return preparePvc(volume.name, claim.readOnly, options);
  if (volume.emptyDisk) return prepareEmptyDisk(volume.name, parseQuantity(volume.emptyDisk.capacity), options);
  if (volume.cloudInitNoCloud) return prepareCloudInit(vmi, volume, options);
  throw new FerryError(ErrorCode.InvalidSpec, 'this volume type is not supported by Ferry');
}

async function preparePvc(name: string, readOnly: boolean, options: PrepareOptions): Promise<VolumeOnPod> {
  const device = join(options.dirs.block, name);
  const deviceStat = await stat(device).catch(() => undefined);
  if (deviceStat?.isBlockDevice()) {
    return { kind: 'block', path: device, format: await formatOf(device, name), directIo: await supportsODirect(device) };
  }
  const dir = join(options.dirs.volumes, name);
  if (!(await stat(dir).catch(() => undefined))?.isDirectory()) {
    throw new FerryError(ErrorCode.InvalidSpec, `neither the filesystem volume ${dir} nor the block device ${device} exists`);
  }
  const path = join(dir, PodPath.DiskFile);
  const st = await stat(path).catch(() => undefined);
  const existing = st ? { size: st.size, allocated: st.blocks * 512, format: await formatOf(path, name) } : undefined;
  const fs = await statfs(dir);
  const plan = planDiskImage({ requested: options.sizes[name], available: fs.bavail * fs.bsize, existing, readOnly });
  if (plan.action === 'create') {
    const handle = await open(path, 'wx', 0o660);
    await handle.truncate(plan.size);
    await handle.close();
  } else if (plan.action === 'grow') {
    await truncate(path, plan.size);
  }
  if (plan.action !== 'keep') {
    options.logger.info({ volume: name, path, action: plan.action, size: plan.size, ...(plan.tolerated ? { note: plan.tolerated } : {}) }, 'disk.img sized');
  }
  const after = await stat(path);
  return {
    kind: 'file',
    path,
    format: existing?.format ?? 'raw',
    directIo: await supportsODirect(path),
    preallocated: after.blocks * 512 >= after.size,
  };
}

async function run(file: string, args: readonly string[]): Promise<void> {
  await runTool(file, args, { timeoutMs: 60_000 });
}

async function prepareEmptyDisk(name: string, capacity: number, options: PrepareOptions): Promise<VolumeOnPod> {
  const path = join(options.dirs.emptyDisks, `${name}.qcow2`);
  await mkdir(options.dirs.emptyDisks, { recursive: true });
  if (!(await exists(path))) await run('qemu-img', ['create', '-q', '-f', 'qcow2', path, String(capacity)]);
  return { kind: 'file', path, format: 'qcow2', directIo: await supportsODirect(path) };
}

/** The keys of a mounted secret (a Kubernetes secret volume also holds `..data` links: skipped). */
async function readSecretDir(dir: string): Promise<Record<string, Buffer> | undefined> {
  const names = await readdir(dir).catch(() => undefined);
  if (!names) return undefined;
  const files: Record<string, Buffer> = {};
  for (const name of names.filter((n) => !n.startsWith('.'))) files[name] = await readFile(join(dir, name));
  return files;
}

async function prepareCloudInit(vmi: VirtualMachineInstance, volume: Volume, options: PrepareOptions): Promise<VolumeOnPod> {
  const ci = volume.cloudInitNoCloud!;
  const secretDir = (which: 'user' | 'network') => join(options.dirs.secrets, basename(cloudInitSecretDir(volume.name, which)));
  const secrets: NoCloudSecrets = {
    ...(ci.secretRef ? { userData: await readSecretDir(secretDir('user')) } : {}),
    ...(ci.networkDataSecretRef ? { networkData: await readSecretDir(secretDir('network')) } : {}),
  };
  const path = join(options.dirs.cloudInit, vmi.metadata.namespace ?? 'default', vmi.metadata.name ?? '', 'noCloud.iso');
  await mkdir(dirname(path), { recursive: true });
  await buildNoCloudIso(noCloudFiles(vmi, secrets), path);
  return { kind: 'file', path, format: 'raw', directIo: await supportsODirect(path) };
}

export interface PathEntry {
  readonly path: string;
  readonly mode: number;
  readonly uid: number;
  readonly gid: number;
}

/** Pure: the first directory of `chain` that `user` may not traverse (search permission), if any. */
export function firstUntraversable(chain: readonly PathEntry[], user: RunAs): PathEntry | undefined {
  return chain.find((e) => {
    const bit = e.uid === user.uid ? 0o100 : e.gid === user.gid ? 0o010 : 0o001;
    return (e.mode & bit) === 0;
  });
}

/**
 * Throws when QEMU, running as `user`, could not reach `path` because a parent directory is closed
 * to it (a 0700 temporary directory, say): a clear message now instead of QEMU's "Permission denied".
 */
export async function assertReachable(path: string, user: RunAs): Promise<void> {
  const chain: PathEntry[] = [];
  for (let dir = dirname(path); ; dir = dirname(dir)) {
    const st = await stat(dir);
    chain.unshift({ path: dir, mode: st.mode, uid: st.uid, gid: st.gid });
    if (dir === dirname(dir)) break;
  }
  const closed = firstUntraversable(chain, user);
  if (closed) {
    throw new FerryError(
      ErrorCode.InvalidSpec,
      `QEMU runs as uid ${user.uid} and cannot reach ${path}: ${closed.path} (mode ${(closed.mode & 0o777).toString(8)}, owner ${closed.uid}) is closed to it; make it traversable (chmod o+x) or run the launcher as that user`,
      { details: { reason: 'VolumeFailed' } },
    );
  }
}
