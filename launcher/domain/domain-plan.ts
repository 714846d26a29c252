/**
 * VMI → DomainPlan: the launcher's decisions about a defaulted VMI, as a pure function of the VMI and
 * what the launcher probed on its pod (accelerator, emulator, where each volume is and whether it takes
 * O_DIRECT). The rules are KubeVirt's (converter.go, storage/disk.go, compute/cpu.go) except where a
 * comment says otherwise; `domainXml` (domain-xml.ts) renders the result.
 */

import { ErrorCode, FerryError } from '../../src/errors.js';
import { type Disk, DiskBus, type Interface, type VirtualMachineInstance, domainName } from '../../src/api/kubevirt.js';
import { guestMemoryBytes } from '../../src/api/kubevirt-defaults.js';
import { type Accel, type DomainPlan, PodNetworkBackend, type PortForward, type PortRange, type ResolvedDisk, type ResolvedInterface } from '../../src/contract/launch-plan.js';

/** What one volume is on this pod, as the launcher found it. */
export interface VolumeOnPod {
  readonly kind: 'file' | 'block';
  readonly path: string;
  readonly format: 'raw' | 'qcow2';
  /** The file or device accepted an O_DIRECT open (tmpfs and some FUSE filesystems refuse it). */
  readonly directIo: boolean;
  /** A file whose blocks are all allocated; with cache none such a file gets io native as a block device does. */
  readonly preallocated?: boolean;
}

/** Everything impure `planDomain` needs, probed by the launcher. */
export interface LauncherEnv {
  readonly accel: Accel;
  /** The QEMU binary, e.g. /usr/bin/qemu-system-x86_64. */
  readonly emulator: string;
  /** By volume name: PVC file `<VmiDisks>/<vol>/disk.img`, block `/dev/<vol>`, the cloud-init ISO, emptyDisk qcow2. */
  readonly volumes: Readonly<Record<string, VolumeOnPod>>;
  /** The serial console's socket (and log file); absent: no serial device even if the VMI asks for one. */
  readonly serial?: { readonly socketPath: string; readonly logPath?: string };
  /** The VNC socket; absent: no graphics even if the VMI asks for them. */
  readonly vncSocketPath?: string;
  /** What the pod network is and allows; absent: passt on a pod whose limits let it forward every port. */
  readonly podNetwork?: PodNetworkFacts;
}

/** The pod's facts that decide how many ports passt can forward (launcher/pod-network.ts probes them). */
export interface PodNetworkFacts {
  readonly backend: PodNetworkBackend;
  /** The hard RLIMIT_NOFILE passt inherits (it raises its soft limit to it): one socket per forwarded port and family. */
  readonly openFilesLimit: number;
  /** 0 to 2: the families with a default route (passt listens on IPv4 and IPv6 separately; it needs one). */
  readonly ipFamilies: number;
  /** `net.ipv4.ip_local_port_range`: passt's `all` leaves these out. */
  readonly ephemeralPorts: PortRange;
  /** Where passt's sockets go: `<socketDir>/<interface>.sock`. */
  readonly socketDir: string;
}

/** Where passt's sockets go when the launcher says nothing (the pod's libvirt runtime directory). */
export const DEFAULT_PASST_SOCKET_DIR = '/var/run/libvirt/passt';

/**
 * Sockets kept free for passt's own use (its epoll, the QEMU socket, one per TCP connection and UDP
 * flow) when the open-files limit is what bounds the forwarded ports.
 */
export const PASST_FD_RESERVE = 1024;
/** With too few sockets for every port, TCP gets this share of them (ports from 1 up), UDP the rest. */
export const PASST_TCP_SHARE = 0.75;

/**
 * What passt forwards, a pure function of the pod's limits: every port of both protocols (`all`) when
 * the open-files limit allows it, as KubeVirt's masquerade forwards everything. Otherwise the lowest
 * ports that fit, TCP first (on this machine the hard limit is 20000: TCP 1-14232, UDP 1-4744 with
 * IPv4 only), and the declared ports whatever the limit. `all` needs a socket per port and family
 * outside the ephemeral range: 37303 per protocol and family with Linux's default range.
 */
export function passtForwards(facts: Omit<PodNetworkFacts, 'backend' | 'socketDir'>, declared: ResolvedInterface['ports']): { tcp: PortForward; udp: PortForward } {
  const families = Math.max(1, facts.ipFamilies);
  const ephemeral = facts.ephemeralPorts;
  const perProtocol = 65535 - (ephemeral.end - ephemeral.start + 1);
  const budget = Math.max(0, Math.floor((facts.openFilesLimit - PASST_FD_RESERVE) / families));
  if (budget >= 2 * perProtocol) return { tcp: 'all', udp: 'all' };
  const below = Math.max(0, ephemeral.start - 1);
  const tcpAll = budget >= perProtocol;
  const tcpEnd = tcpAll ? 0 : Math.min(below, Math.floor(budget * PASST_TCP_SHARE));
  const udpEnd = Math.min(below, budget - (tcpAll ? perProtocol : tcpEnd));
  const ranges = (end: number, protocol: 'TCP' | 'UDP'): PortRange[] => {
    const extra = declared.filter((p) => p.protocol === protocol && p.port > end).map((p) => p.port);
    return [...(end > 0 ? [{ start: 1, end }] : []), ...[...new Set(extra)].sort((a, b) => a - b).map((port) => ({ start: port, end: port }))];
  };
  return { tcp: tcpAll ? 'all' : ranges(tcpEnd, 'TCP'), udp: ranges(udpEnd, 'UDP') };
}

/** KubeVirt's default masquerade guest network (`networks[].pod.vmNetworkCIDR`). */
export const DEFAULT_VM_NETWORK_CIDR = '10.0.2.0/24';

/**
 * The libvirt CPU mode TCG uses when the VMI names no model: QEMU's `-cpu max`, every feature TCG can
 * emulate, booted here under QEMU 7.2 TCG through libvirt 9.0. libvirt's domcapabilities for type qemu
 * list host-passthrough as unsupported, and host-model there means the host's model (EPYC on this
 * machine) with features TCG does not emulate; qemu64 boots too but lacks what modern guests expect.
 */
export const TCG_CPU_MODE = 'maximum';
const HOST_MODES = ['host-model', 'host-passthrough'];

/** QEMU devices for the interface models Ferry accepts (`interfaces[].model`). */
export const NIC_DEVICES: Readonly<Record<string, string>> = Object.freeze({
  virtio: 'virtio-net-pci-non-transitional',
  e1000: 'e1000',
  e1000e: 'e1000e',
  rtl8139: 'rtl8139',
});

/** The masquerade addresses of a guest network: gateway the 2nd address, guest the 3rd (KubeVirt). */
export function masqueradeAddresses(cidr: string): { network: string; prefix: number; gateway: string; guest: string } {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})\/(\d{1,2})$/.exec(cidr);
  const octets = m ? m.slice(1, 5).map(Number) : [];
  const prefix = m ? Number(m[5]) : NaN;
  if (!m || octets.some((o) => o > 255) || !(prefix >= 8 && prefix <= 30)) {
    throw invalid(`vmNetworkCIDR "${cidr}" is not an IPv4 network with a prefix of /8 to /30`);
  }
  const base = (octets.reduce((acc, o) => acc * 256 + o, 0) & maskOf(prefix)) >>> 0;
  return { network: ipOf(base), prefix, gateway: ipOf(base + 1), guest: ipOf(base + 2) };
}

function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

function ipOf(n: number): string {
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');
}

function invalid(message: string): FerryError {
  return new FerryError(ErrorCode.InvalidSpec, message);
}

/** Device names as KubeVirt's formatDeviceName: a, b, … z, aa, ab, … per prefix. */
export function deviceName(prefix: 'vd' | 'sd', index: number): string {
  let name = '';
  for (let i = index + 1; i > 0; i = Math.floor((i - 1) / 26)) name = String.fromCharCode(97 + ((i - 1) % 26)) + name;
  return prefix + name;
}

// libvirt user aliases (`ua-<name>`) and QEMU ids allow only these; Kubernetes names are DNS labels anyway.
const LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i;
// KubeVirt's rule for disk serials; libvirt refuses others ("contains unsafe characters").
const SERIAL = /^[A-Za-z0-9_.+-]+$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

function resolveDisk(disk: Disk, index: { vd: number; sd: number }, env: LauncherEnv, pvcReadOnly: boolean): ResolvedDisk {
  if (!LABEL.test(disk.name) || disk.name.length > 63) throw invalid(`disk name "${disk.name}" must be a DNS label (a-z, 0-9, '-')`);
  if (disk.serial !== undefined && !SERIAL.test(disk.serial)) throw invalid(`disk "${disk.name}": serial "${disk.serial}" may only contain A-Z, a-z, 0-9, '_', '.', '+', '-'`);
  const onPod = env.volumes[disk.name];
  if (!onPod) throw new FerryError(ErrorCode.Internal, `volume "${disk.name}" was not prepared on this pod`);
  const device = disk.cdrom ? 'cdrom' : 'disk';
  const bus = disk.cdrom?.bus ?? disk.disk?.bus ?? DiskBus.Sata;
  if (device === 'cdrom' && bus === DiskBus.Virtio) throw invalid(`disk "${disk.name}": a cdrom cannot use bus virtio; use sata or scsi`);
  const prefix = bus === DiskBus.Virtio ? 'vd' : 'sd';
  const name = deviceName(prefix, index[prefix]++);
  const cache = disk.cache ?? (onPod.directIo ? 'none' : 'writethrough');
  if (cache === 'none' && !onPod.directIo) {
    throw invalid(`disk "${disk.name}": cache "none" needs O_DIRECT, which ${onPod.path} does not support; use cache: writethrough or leave cache unset`);
  }
  const explicitIo = disk.io === 'default' ? undefined : disk.io;
  // QEMU refuses aio=native without cache.direct=on; say so instead of failing at start.
  if (explicitIo === 'native' && cache !== 'none') throw invalid(`disk "${disk.name}": io "native" needs cache "none"`);
  const io = explicitIo ?? (cache === 'none' && (onPod.kind === 'block' || onPod.preallocated === true) ? 'native' : undefined);
  return {
    name: disk.name,
    device,
    bus,
    source: { type: onPod.kind, path: onPod.path },
    format: onPod.format,
    readOnly: device === 'cdrom' || disk.disk?.readonly === true || pvcReadOnly,
    ...(disk.bootOrder !== undefined ? { bootOrder: disk.bootOrder } : {}),
    ...(disk.serial !== undefined ? { serial: disk.serial } : {}),
    target: name,
    cache,
    ...(io !== undefined ? { io } : {}),
  };
}

function resolveInterface(iface: Interface, vmi: VirtualMachineInstance, uuid: string, podNetwork: PodNetworkFacts | undefined): ResolvedInterface {
  if (!LABEL.test(iface.name)) throw invalid(`interface name "${iface.name}" must be a DNS label (a-z, 0-9, '-')`);
  if (!iface.masquerade) throw invalid(`interface "${iface.name}": only the masquerade binding is supported`);
  const model = iface.model ?? 'virtio';
  if (NIC_DEVICES[model] === undefined) throw invalid(`interface "${iface.name}": model "${model}" is not one of ${Object.keys(NIC_DEVICES).join(', ')}`);
  if (iface.macAddress !== undefined && !MAC.test(iface.macAddress)) throw invalid(`interface "${iface.name}": macAddress "${iface.macAddress}" is not a MAC address`);
  const ports = (iface.ports ?? []).map((p) => {
    if (!Number.isInteger(p.port) || p.port < 1 || p.port > 65535) throw invalid(`interface "${iface.name}": port ${p.port} is not in 1..65535`);
    return { port: p.port, protocol: p.protocol ?? 'TCP' } as const;
  });
  // QEMU cannot bind one host port twice and would fail to start.
  const seen = new Set<string>();
  for (const p of ports) {
    const key = `${p.protocol}/${p.port}`;
    if (seen.has(key)) throw invalid(`interface "${iface.name}": port ${key} is declared twice`);
    seen.add(key);
  }
  const network = (vmi.spec.networks ?? []).find((n) => n.name === iface.name);
  const cidr = network?.pod?.vmNetworkCIDR ?? DEFAULT_VM_NETWORK_CIDR;
  masqueradeAddresses(cidr); // throws for a CIDR the guest network cannot use
  const backend = podNetwork?.backend ?? PodNetworkBackend.Passt;
  const forward = backend !== PodNetworkBackend.Passt ? undefined : podNetwork ? passtForwards(podNetwork, ports) : ({ tcp: 'all', udp: 'all' } as const);
  return {
    name: iface.name,
    model,
    mac: (iface.macAddress ?? stableMac(uuid)).toLowerCase(),
    binding: 'masquerade',
    backend,
    ports,
    ...(forward ? { forward, passtSocket: `${podNetwork?.socketDir ?? DEFAULT_PASST_SOCKET_DIR}/${iface.name}.sock` } : {}),
    cidr,
    ...(iface.bootOrder !== undefined ? { bootOrder: iface.bootOrder } : {}),
  };
}

/**
 * A locally administered unicast MAC from the firmware UUID, so a VM keeps its MAC across restarts
 * (libvirt would pick a random one otherwise).
 */
export function stableMac(uuid: string): string {
  const hex = uuid.replace(/-/g, '').toLowerCase().slice(-10);
  return ['02', ...(hex.match(/../g) ?? [])].join(':');
}

function cpuModel(requested: string | undefined, accel: Accel): string {
  if (accel === 'tcg') return requested === undefined || HOST_MODES.includes(requested) ? TCG_CPU_MODE : requested;
  return requested ?? 'host-model';
}

/**
 * Resolves a defaulted VMI against the pod. Throws FerryError INVALID_SPEC for what the VMI asks and
 * this pod cannot do (cache none without O_DIRECT, EFI, a bad MAC or network), INTERNAL for a volume
 * the launcher did not prepare.
 */
export function planDomain(vmi: VirtualMachineInstance, env: LauncherEnv): DomainPlan {
  const spec = vmi.spec;
  const domain = spec.domain;
  const memoryBytes = guestMemoryBytes(spec);
  if (memoryBytes === undefined) throw invalid('spec.domain.memory.guest is required');
  const uuid = domain.firmware?.uuid;
  if (uuid === undefined) throw invalid('spec.domain.firmware.uuid is missing: apply defaultVmiSpec first');
  if (!UUID.test(uuid)) throw invalid(`spec.domain.firmware.uuid "${uuid}" is not a UUID`);
  if (domain.firmware?.bootloader?.efi) throw invalid('spec.domain.firmware.bootloader.efi is not supported yet; use bios');
  const machine = domain.machine?.type ?? 'q35';
  // The NIC is placed on the PCIe root complex (domain-xml.ts), which only q35 has.
  if (!/^(q35|pc-q35-[0-9.]+)$/.test(machine)) throw invalid(`spec.domain.machine.type "${machine}" is not supported; use q35`);
  const devices = domain.devices ?? {};
  const volumes = spec.volumes ?? [];
  const index = { vd: 0, sd: 0 };
  const disks = (devices.disks ?? []).map((d) => {
    const volume = volumes.find((v) => v.name === d.name);
    const pvcReadOnly = volume?.persistentVolumeClaim?.readOnly === true;
    return resolveDisk(d, index, env, pvcReadOnly);
  });
  const cpu = domain.cpu ?? {};
  const model = cpuModel(cpu.model, env.accel);
  const serial = devices.autoattachSerialConsole !== false ? env.serial : undefined;
  const vnc = devices.autoattachGraphicsDevice !== false && env.vncSocketPath !== undefined ? { socketPath: env.vncSocketPath } : undefined;
  return {
    name: domainName(vmi),
    uuid,
    accel: env.accel,
    emulator: env.emulator,
    machine,
    memoryBytes,
    cpu: { sockets: cpu.sockets ?? 1, cores: cpu.cores ?? 1, threads: cpu.threads ?? 1, model },
    firmware: { kind: 'bios', useSerial: domain.firmware?.bootloader?.bios?.useSerial === true },
    acpi: domain.features?.acpi?.enabled !== false,
    disks,
    interfaces: (devices.interfaces ?? []).map((i) => resolveInterface(i, vmi, uuid, env.podNetwork)),
    ...(serial ? { serial: { socketPath: serial.socketPath, ...(serial.logPath !== undefined ? { logPath: serial.logPath } : {}) } } : {}),
    ...(vnc ? { vnc } : {}),
    rng: devices.rng !== undefined,
    vmiUid: vmi.metadata.uid ?? '',
  };
}
