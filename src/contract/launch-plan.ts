/**
 * What the launcher decides before it talks to libvirt: the VMI resolved against the pod (paths,
 * what each volume supports, which accelerator works). `planDomain` (launcher/domain/domain-plan.ts) derives it
 * from a defaulted VMI and probe results as a pure function; `domainXml` (launcher/domain/domain-xml.ts) renders
 * it. Paths follow KubeVirt's pod layout so PVC contents and habits carry over.
 */

import type { DiskBus, VirtualMachineInstance } from '../api/kubevirt.js';

/** KubeVirt's paths inside the launcher pod. */
export const PodPath = {
  /** Filesystem PVCs are mounted at `<VmiDisks>/<volume>/` and hold `disk.img`. */
  VmiDisks: '/var/run/kubevirt-private/vmi-disks',
  DiskFile: 'disk.img',
  /** Block PVCs appear as `/dev/<volume>`. */
  BlockDir: '/dev',
  /** cloud-init secretRef volumes: `<SecretSources>/<volume>/{userdata,userData,networkdata,networkData}`. */
  SecretSources: '/var/run/kubevirt-private/secret',
  /** Per-VMI private runtime dir: `<Private>/<vmi uid>/` holds the serial and VNC sockets. */
  Private: '/var/run/kubevirt-private',
  EphemeralDisks: '/var/run/kubevirt-ephemeral-disks',
  CloudInitDir: '/var/run/kubevirt-ephemeral-disks/cloud-init-data',
  /** libvirt's runtime directory (an emptyDir): the daemon's state, QEMU's logs, the empty disks. */
  LibvirtRuntime: '/var/run/libvirt',
  EmptyDisks: '/var/run/libvirt/empty-disks',
} as const;

/** KubeVirt's per-VMI socket paths inside the pod: `<Private>/<vmi uid>/virt-serial0` etc. */
export function podRuntimePaths(vmiUid: string, privateDir: string = PodPath.Private): {
  serialSocket: string;
  serialLog: string;
  vncSocket: string;
  /** The launcher's own console endpoint (replay + live output, many readers). */
  consoleSocket: string;
} {
  const dir = `${privateDir}/${vmiUid}`;
  return { serialSocket: `${dir}/virt-serial0`, serialLog: `${dir}/virt-serial0-log`, vncSocket: `${dir}/virt-vnc`, consoleSocket: `${dir}/console.sock` };
}

/** Where KubeVirt puts a volume's disk in the pod, by what backs it. */
export function podVolumePath(
  volume: { name: string; emptyDisk?: unknown; cloudInitNoCloud?: unknown },
  vmi: Pick<VirtualMachineInstance, 'metadata'>,
  mode: 'filesystem' | 'block' = 'filesystem',
): string {
  if (volume.cloudInitNoCloud) return `${PodPath.CloudInitDir}/${vmi.metadata.namespace ?? 'default'}/${vmi.metadata.name ?? ''}/noCloud.iso`;
  if (volume.emptyDisk) return `${PodPath.EmptyDisks}/${volume.name}.qcow2`;
  if (mode === 'block') return `${PodPath.BlockDir}/${volume.name}`;
  return `${PodPath.VmiDisks}/${volume.name}/${PodPath.DiskFile}`;
}

/**
 * Where the launcher pod has a cloud-init secret: `<SecretSources>/<volume>` for user data and
 * `<SecretSources>/<volume>-ndata` for network data; files named userdata/userData, networkdata/networkData.
 */
export function cloudInitSecretDir(volume: string, which: 'user' | 'network'): string {
  return `${PodPath.SecretSources}/${volume}${which === 'network' ? '-ndata' : ''}`;
}

export type Accel = 'kvm' | 'tcg';

export interface ResolvedDisk {
  /** The VMI's disk name (`ua-<name>` alias in libvirt). */
  readonly name: string;
  readonly device: 'disk' | 'cdrom';
  readonly bus: DiskBus;
  /** The guest device name: vd[a..] for virtio, sd[a..] for sata/scsi, in order of appearance. */
  readonly target: string;
  readonly source: { readonly type: 'file' | 'block'; readonly path: string };
  readonly format: 'raw' | 'qcow2';
  readonly readOnly: boolean;
  readonly bootOrder?: number;
  readonly serial?: string;
  /** `none` where the file/device takes O_DIRECT, else `writethrough` (KubeVirt's rule), or the VMI's. */
  readonly cache: 'none' | 'writethrough' | 'writeback';
  readonly io?: 'native' | 'threads';
}

/**
 * How the pod network reaches the guest (docs/adr/0011-pod-network-passt.md), both on KubeVirt's
 * masquerade addresses. `passt`: a passt process the launcher starts beside QEMU, every port of the
 * pod forwarded as KubeVirt's masquerade does. `slirp`: QEMU's user-mode NAT, declared ports only
 * (ADR 0005), the fallback `--pod-network slirp` selects.
 */
export const PodNetworkBackend = { Passt: 'passt', Slirp: 'slirp' } as const;
export type PodNetworkBackend = (typeof PodNetworkBackend)[keyof typeof PodNetworkBackend];
export const POD_NETWORK_BACKENDS: readonly PodNetworkBackend[] = Object.values(PodNetworkBackend);

/** Ports `start` to `end`, both included. */
export interface PortRange {
  readonly start: number;
  readonly end: number;
}

/** What passt forwards of one protocol: `all` (every port outside the ephemeral range) or these ranges (none when empty). */
export type PortForward = 'all' | readonly PortRange[];

export interface ResolvedInterface {
  readonly name: string;
  readonly model: string;
  readonly mac?: string;
  readonly bootOrder?: number;
  /** Pod-network masquerade: the guest is reached through the pod's addresses. */
  readonly binding: 'masquerade';
  readonly backend: PodNetworkBackend;
  /** The declared ports (slirp forwards exactly these; passt forwards them whatever `forward` says). */
  readonly ports: ReadonlyArray<{ readonly port: number; readonly protocol: 'TCP' | 'UDP' }>;
  /** passt: what the pod's ports forward to the guest, by protocol. */
  readonly forward?: { readonly tcp: PortForward; readonly udp: PortForward };
  /** passt: the unix socket passt listens on and QEMU connects to. */
  readonly passtSocket?: string;
  /** The guest network KubeVirt's masquerade uses: 10.0.2.0/24, gateway .1, guest .2. */
  readonly cidr: string;
}

export interface DomainPlan {
  /** `<namespace>_<name>`. */
  readonly name: string;
  readonly uuid: string;
  readonly accel: Accel;
  readonly emulator: string;
  readonly machine: string;
  readonly memoryBytes: number;
  /** `model`: a libvirt CPU mode (host-model, host-passthrough, maximum) or a named model (mode custom). */
  readonly cpu: { readonly sockets: number; readonly cores: number; readonly threads: number; readonly model?: string };
  readonly firmware: { readonly kind: 'bios'; readonly useSerial: boolean } | { readonly kind: 'efi'; readonly secureBoot: boolean };
  readonly acpi: boolean;
  readonly disks: readonly ResolvedDisk[];
  readonly interfaces: readonly ResolvedInterface[];
  readonly serial?: { readonly socketPath: string; readonly logPath?: string };
  readonly vnc?: { readonly socketPath: string };
  readonly rng: boolean;
  /** Recorded in the domain's metadata so a restarted launcher can tell its own domain. */
  readonly vmiUid: string;
}
