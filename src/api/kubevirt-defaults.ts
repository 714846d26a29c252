/**
 * Defaults and validation for a VMI spec: what KubeVirt's mutating and validating webhooks do on
 * create, as pure functions both the controller and the launcher apply. Where Ferry differs from
 * KubeVirt it says so (README, "Virtual machines").
 */

import { createHash } from 'node:crypto';
import { parseQuantity } from '../quantity.js';
import { type Disk, DiskBus, type Interface, type Network, type VmiSpec, type Volume } from './kubevirt.js';

export const DEFAULT_MACHINE = 'q35';
export const DEFAULT_GRACE_SECONDS = 30;
export const DEFAULT_NETWORK_NAME = 'default';
/** KubeVirt's amd64 default bus for a disk that names none ("supported out of the box by guests"). */
export const DEFAULT_DISK_BUS = DiskBus.Sata;
/** Volume names the launcher pod uses itself (controller/vm/launcher-pod.ts). */
export const RESERVED_POD_VOLUMES = ['private', 'ephemeral-disks', 'libvirt-runtime'] as const;

/**
 * A stable firmware UUID for a VMI name, so a guest sees the same machine across restarts (as
 * KubeVirt's VM controller does): SHA-1 of `namespace/name` shaped as a version-5 UUID.
 */
export function firmwareUuid(namespace: string, name: string): string {
  const h = createHash('sha1').update(`${namespace}/${name}`).digest();
  h[6] = (h[6]! & 0x0f) | 0x50;
  h[8] = (h[8]! & 0x3f) | 0x80;
  const x = h.subarray(0, 16).toString('hex');
  return `${x.slice(0, 8)}-${x.slice(8, 12)}-${x.slice(12, 16)}-${x.slice(16, 20)}-${x.slice(20, 32)}`;
}

/** Guest memory in bytes: `memory.guest`, else `requests.memory`, else `limits.memory`. */
export function guestMemoryBytes(spec: VmiSpec): number | undefined {
  const text = spec.domain.memory?.guest ?? spec.domain.resources?.requests?.memory ?? spec.domain.resources?.limits?.memory;
  return text === undefined ? undefined : parseQuantity(text);
}

/** Cores from a CPU quantity ("2", "1500m"), rounded up, at least 1. */
function cpuCount(text: string | undefined): number | undefined {
  if (text === undefined) return undefined;
  const n = text.endsWith('m') ? Number(text.slice(0, -1)) / 1000 : Number(text);
  return Number.isFinite(n) && n > 0 ? Math.max(1, Math.ceil(n)) : undefined;
}

export function vcpuCount(spec: VmiSpec): number {
  const c = spec.domain.cpu ?? {};
  return (c.sockets ?? 1) * (c.cores ?? 1) * (c.threads ?? 1);
}

function defaultDisk(disk: Disk): Disk {
  if (disk.cdrom) {
    return { ...disk, cdrom: { bus: DEFAULT_DISK_BUS, readonly: true, tray: 'closed', ...disk.cdrom } };
  }
  return { ...disk, disk: { bus: DEFAULT_DISK_BUS, ...(disk.disk ?? {}) } };
}

/**
 * Returns the spec with KubeVirt's create-time defaults: machine q35, guest memory from the
 * resources, CPU topology (sockets from the CPU request when none is given), a disk for every volume
 * that has none (bus sata, cdroms read-only), one pod network with a masquerade interface when none
 * is declared, interface model virtio, serial console and graphics on, grace period 30 s.
 */
export function defaultVmiSpec(spec: VmiSpec, meta: { namespace?: string; name?: string }): VmiSpec {
  const domain = spec.domain ?? {};
  const resources = domain.resources ?? {};
  const guest = domain.memory?.guest ?? resources.requests?.memory ?? resources.limits?.memory;
  const cpu = domain.cpu ?? {};
  const topologyGiven = cpu.sockets !== undefined || cpu.cores !== undefined || cpu.threads !== undefined;
  const sockets = topologyGiven ? (cpu.sockets ?? 1) : (cpuCount(resources.limits?.cpu) ?? cpuCount(resources.requests?.cpu) ?? 1);
  const volumes = spec.volumes ?? [];
  const declared = domain.devices?.disks ?? [];
  const disks = [
    ...declared.map(defaultDisk),
    ...volumes.filter((v) => !declared.some((d) => d.name === v.name)).map((v) => defaultDisk({ name: v.name })),
  ];
  const devices = domain.devices ?? {};
  let interfaces: Interface[] = devices.interfaces ?? [];
  let networks: Network[] = spec.networks ?? [];
  if (interfaces.length === 0 && networks.length === 0 && devices.autoattachPodInterface !== false) {
    networks = [{ name: DEFAULT_NETWORK_NAME, pod: {} }];
    interfaces = [{ name: DEFAULT_NETWORK_NAME, masquerade: {} }];
  }
  interfaces = interfaces.map((i) => ({ model: 'virtio', ...i }));
  return {
    ...spec,
    terminationGracePeriodSeconds: spec.terminationGracePeriodSeconds ?? DEFAULT_GRACE_SECONDS,
    volumes,
    networks,
    domain: {
      ...domain,
      machine: { type: domain.machine?.type ?? DEFAULT_MACHINE },
      ...(guest !== undefined ? { memory: { ...(domain.memory ?? {}), guest } } : {}),
      cpu: { ...cpu, sockets, cores: cpu.cores ?? 1, threads: cpu.threads ?? 1 },
      firmware: {
        ...(domain.firmware ?? {}),
        uuid: domain.firmware?.uuid ?? firmwareUuid(meta.namespace ?? 'default', meta.name ?? ''),
      },
      devices: {
        ...devices,
        disks,
        interfaces,
        autoattachSerialConsole: devices.autoattachSerialConsole ?? true,
        autoattachGraphicsDevice: devices.autoattachGraphicsDevice ?? true,
      },
    },
  };
}

function sourcesOf(v: Volume): string[] {
  return (['persistentVolumeClaim', 'dataVolume', 'cloudInitNoCloud', 'emptyDisk', 'containerDisk'] as const).filter((k) => v[k] !== undefined);
}

/**
 * What is wrong with a (defaulted) spec, as messages naming the field; empty when valid. The
 * controller refuses such a VMI with a Failed phase and the messages as its reason.
 */
export function validateVmiSpec(spec: VmiSpec): string[] {
  const problems: string[] = [];
  const volumes = spec.volumes ?? [];
  const names = new Set<string>();
  volumes.forEach((v, i) => {
    if (!v.name) problems.push(`spec.volumes[${i}].name is required`);
    if (names.has(v.name)) problems.push(`spec.volumes[${i}].name "${v.name}" is used twice`);
    names.add(v.name);
    const sources = sourcesOf(v);
    if (sources.length !== 1) problems.push(`spec.volumes[${i}] (${v.name}) needs exactly one source of persistentVolumeClaim, dataVolume, cloudInitNoCloud, emptyDisk, containerDisk`);
    if (v.containerDisk) problems.push(`spec.volumes[${i}] (${v.name}): containerDisk is not supported by Ferry; import the image into a PVC (source registry) and use persistentVolumeClaim`);
    const ci = v.cloudInitNoCloud;
    if (ci) {
      const user = [ci.userData, ci.userDataBase64, ci.secretRef].filter((x) => x !== undefined).length;
      const net = [ci.networkData, ci.networkDataBase64, ci.networkDataSecretRef].filter((x) => x !== undefined).length;
      if (user > 1) problems.push(`spec.volumes[${i}].cloudInitNoCloud: give only one of userData, userDataBase64, secretRef`);
      if (net > 1) problems.push(`spec.volumes[${i}].cloudInitNoCloud: give only one of networkData, networkDataBase64, networkDataSecretRef`);
      if (user + net === 0) problems.push(`spec.volumes[${i}].cloudInitNoCloud: user data or network data is required`);
    }
    if (v.emptyDisk) {
      try {
        parseQuantity(v.emptyDisk.capacity);
      } catch {
        problems.push(`spec.volumes[${i}].emptyDisk.capacity "${v.emptyDisk.capacity}" is not a quantity`);
      }
    }
  });
  if (volumes.filter((v) => v.cloudInitNoCloud).length > 1) problems.push('spec.volumes: only one cloudInitNoCloud volume is supported');
  const disks = spec.domain.devices?.disks ?? [];
  disks.forEach((d, i) => {
    if (!names.has(d.name)) problems.push(`spec.domain.devices.disks[${i}] (${d.name}) has no volume of that name`);
    if (d.disk && d.cdrom) problems.push(`spec.domain.devices.disks[${i}] (${d.name}) is both disk and cdrom`);
    const bus = d.disk?.bus ?? d.cdrom?.bus;
    if (bus !== undefined && !(Object.values(DiskBus) as string[]).includes(bus)) {
      problems.push(`spec.domain.devices.disks[${i}].bus "${bus}" is not one of ${Object.values(DiskBus).join(', ')}`);
    }
    if (d.bootOrder !== undefined && (!Number.isInteger(d.bootOrder) || d.bootOrder < 1)) {
      problems.push(`spec.domain.devices.disks[${i}].bootOrder must be a positive integer`);
    }
  });
  try {
    if (guestMemoryBytes(spec) === undefined) problems.push('spec.domain.memory.guest or spec.domain.resources.requests.memory is required');
  } catch {
    problems.push('spec.domain.memory.guest is not a quantity');
  }
  // The launcher pod has volumes of its own and one per cloud-init secret: names must not clash.
  const reserved = new Set<string>(RESERVED_POD_VOLUMES);
  for (const v of volumes) if (v.cloudInitNoCloud) for (const suffix of ['-udata', '-ndata']) reserved.add(`${v.name}${suffix}`);
  volumes.forEach((v, i) => {
    if (reserved.has(v.name)) problems.push(`spec.volumes[${i}].name "${v.name}" is reserved for the launcher pod's own volumes`);
  });
  const interfaces = spec.domain.devices?.interfaces ?? [];
  const networks = spec.networks ?? [];
  if (interfaces.length > 1) problems.push('spec.domain.devices.interfaces: Ferry supports one pod-network interface');
  interfaces.forEach((iface, i) => {
    if (!networks.some((n) => n.name === iface.name)) problems.push(`spec.domain.devices.interfaces[${i}] (${iface.name}) has no network of that name`);
    if (iface.bridge) problems.push(`spec.domain.devices.interfaces[${i}] (${iface.name}): bridge binding is not supported by Ferry; use masquerade: {}`);
    else if (!iface.masquerade) problems.push(`spec.domain.devices.interfaces[${i}] (${iface.name}): only the masquerade binding is supported`);
  });
  networks.forEach((n, i) => {
    if (!n.pod) problems.push(`spec.networks[${i}] (${n.name}): only pod networks are supported`);
  });
  const fw = spec.domain.firmware?.bootloader;
  if (fw?.efi) problems.push('spec.domain.firmware.bootloader.efi is not supported yet; use bios');
  return problems;
}
