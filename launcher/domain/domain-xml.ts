/**
 * DomainPlan → libvirt domain XML, pure and deterministic (the golden files in test/golden/ pin it).
 * The shape follows KubeVirt's converter (names, aliases, metadata) so `virsh dumpxml` looks familiar;
 * what differs is the NIC, see `networkArgs`.
 */

import { ErrorCode, FerryError } from '../../src/errors.js';
import { NIC_DEVICES, masqueradeAddresses } from './domain-plan.js';
import { type DomainPlan, PodNetworkBackend, type ResolvedDisk, type ResolvedInterface } from '../../src/contract/launch-plan.js';
import { TCG_TB_CACHE_BYTES } from '../../src/api/vm-overhead.js';

export const QEMU_XMLNS = 'http://libvirt.org/schemas/domain/qemu/1.0';
export const KUBEVIRT_XMLNS = 'http://kubevirt.io';
/** The PCI slot on pcie.0 of the first NIC (see `networkArgs`). */
export const NIC_PCI_SLOT = 0x10;

type Attrs = Record<string, string | number | undefined>;
interface Element {
  readonly name: string;
  readonly attrs?: Attrs;
  readonly children?: ReadonlyArray<Element | string>;
}

function el(name: string, attrs?: Attrs, ...children: Array<Element | string | undefined | false>): Element {
  return { name, attrs, children: children.filter((c): c is Element | string => c !== undefined && c !== false) };
}

const ESCAPES: Readonly<Record<string, string>> = { '&': '&amp;', '<': '&lt;', '>': '&gt;', "'": '&apos;', '"': '&quot;' };

/** Escapes text for an XML attribute or element (all five predefined entities). */
export function xmlEscape(text: string): string {
  return text.replace(/[&<>'"]/g, (c) => ESCAPES[c] ?? c);
}

function render(node: Element, depth: number, out: string[]): void {
  const pad = '  '.repeat(depth);
  const attrs = Object.entries(node.attrs ?? {})
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => ` ${k}='${xmlEscape(String(v))}'`)
    .join('');
  const children = node.children ?? [];
  if (children.length === 0) {
    out.push(`${pad}<${node.name}${attrs}/>`);
  } else if (children.every((c) => typeof c === 'string')) {
    out.push(`${pad}<${node.name}${attrs}>${children.map((c) => xmlEscape(c as string)).join('')}</${node.name}>`);
  } else {
    out.push(`${pad}<${node.name}${attrs}>`);
    for (const c of children) {
      if (typeof c === 'string') out.push(`${pad}  ${xmlEscape(c)}`);
      else render(c, depth + 1, out);
    }
    out.push(`${pad}</${node.name}>`);
  }
}

function cpuElement(plan: DomainPlan): Element {
  const { sockets, cores, threads, model } = plan.cpu;
  const topology = el('topology', { sockets, dies: 1, cores, threads });
  if (model === undefined || model === 'host-model' || model === 'host-passthrough' || model === 'maximum') {
    return el('cpu', { mode: model ?? 'host-model', check: 'none' }, topology);
  }
  return el('cpu', { mode: 'custom', match: 'exact', check: 'none' }, el('model', { fallback: 'allow' }, model), topology);
}

function osElement(plan: DomainPlan): Element {
  if (plan.firmware.kind !== 'bios') throw new FerryError(ErrorCode.InvalidSpec, 'EFI firmware is not supported yet');
  const anyBootOrder = plan.disks.some((d) => d.bootOrder !== undefined) || plan.interfaces.some((i) => i.bootOrder !== undefined);
  return el(
    'os',
    undefined,
    el('type', { arch: 'x86_64', machine: plan.machine }, 'hvm'),
    // libvirt refuses <os><boot dev> together with per-device <boot order>.
    !anyBootOrder && el('boot', { dev: 'hd' }),
    plan.firmware.useSerial && el('bios', { useserial: 'yes' }),
  );
}

function diskElement(d: ResolvedDisk): Element {
  const virtio = d.bus === 'virtio';
  return el(
    'disk',
    { type: d.source.type, device: d.device, model: virtio ? 'virtio-non-transitional' : undefined },
    el('driver', {
      name: 'qemu',
      type: d.format,
      cache: d.cache,
      io: d.io,
      error_policy: 'stop',
      discard: d.readOnly ? undefined : 'unmap',
    }),
    el('source', d.source.type === 'block' ? { dev: d.source.path } : { file: d.source.path }),
    el('target', { dev: d.target, bus: d.bus }),
    d.bootOrder !== undefined && el('boot', { order: d.bootOrder }),
    d.readOnly && el('readonly'),
    d.serial !== undefined && el('serial', undefined, d.serial),
    el('alias', { name: `ua-${d.name}` }),
  );
}

/**
 * The pod-network NIC as QEMU arguments, on KubeVirt's masquerade addresses. passt (docs/adr/0011):
 * QEMU connects to the socket of the passt process the launcher started, which forwards the pod's
 * ports, every one where the pod's limits allow (`passtForwards`). Debian 12's libvirt 9.0 is built
 * with its own passt backend (`<backend type='passt'/>`) disabled, so the NIC is not libvirt's. slirp
 * (`--pod-network slirp`, ADR 0005): QEMU's user-mode networking with each declared port forwarded from
 * every pod address. Neither needs NET_ADMIN. libvirt passes these through (and marks the domain tainted).
 *
 * The device gets a fixed slot on the root complex: QEMU creates command-line `-device`s before
 * libvirt's own (JSON) ones, so an unaddressed NIC takes slot 1 and libvirt's VGA then fails to start,
 * and a libvirt-declared root port is not reserved (libvirt puts its disks there). libvirt fills slots
 * from 1 upwards (root ports 8 to a slot), so slot 0x10 stays free; it also keeps the guest's NIC name
 * (enp0s16) stable whatever the disks.
 */
export function networkArgs(iface: ResolvedInterface, index = 0): string[] {
  const device = NIC_DEVICES[iface.model];
  if (device === undefined) throw new FerryError(ErrorCode.InvalidSpec, `interface "${iface.name}": model "${iface.model}" is not supported`);
  const id = `hostua-${iface.name}`;
  let netdev: string;
  if (iface.backend === PodNetworkBackend.Passt) {
    const socket = iface.passtSocket;
    // QEMU reads a comma as the next option; a path with one cannot be passed.
    if (socket === undefined || socket.includes(',')) throw new FerryError(ErrorCode.InvalidSpec, `interface "${iface.name}": passt socket path ${JSON.stringify(socket)} cannot be passed to QEMU`);
    netdev = ['stream', `id=${id}`, 'server=off', 'addr.type=unix', `addr.path=${socket}`].join(',');
  } else {
    const net = masqueradeAddresses(iface.cidr);
    netdev = ['user', `id=${id}`, `net=${net.network}/${net.prefix}`, `host=${net.gateway}`, `dhcpstart=${net.guest}`, ...iface.ports.map((p) => `hostfwd=${p.protocol.toLowerCase()}::${p.port}-${net.guest}:${p.port}`)].join(',');
  }
  const nic = [
    device,
    `netdev=${id}`,
    `id=ua-${iface.name}`,
    `bus=pcie.0`,
    `addr=0x${(NIC_PCI_SLOT + index).toString(16)}`,
    ...(iface.mac !== undefined ? [`mac=${iface.mac}`] : []),
    // As KubeVirt: no option ROM (iPXE) unless the NIC is meant to boot.
    iface.bootOrder !== undefined ? `bootindex=${iface.bootOrder}` : 'romfile=',
  ].join(',');
  return ['-netdev', netdev, '-device', nic];
}

/** Renders the plan as a libvirt domain definition (libvirt 9.0, QEMU 7.2). */
export function domainXml(plan: DomainPlan): string {
  const qemuArgs = plan.interfaces.flatMap((iface, i) => networkArgs(iface, i));
  const vcpus = plan.cpu.sockets * plan.cpu.cores * plan.cpu.threads;
  const domain = el(
    'domain',
    { type: plan.accel === 'kvm' ? 'kvm' : 'qemu', 'xmlns:qemu': qemuArgs.length > 0 ? QEMU_XMLNS : undefined },
    el('name', undefined, plan.name),
    el('uuid', undefined, plan.uuid),
    el('metadata', undefined, el('kubevirt', { xmlns: KUBEVIRT_XMLNS }, el('uid', undefined, plan.vmiUid))),
    el('memory', { unit: 'b' }, String(plan.memoryBytes)),
    el('vcpu', { placement: 'static' }, String(vcpus)),
    cpuElement(plan),
    osElement(plan),
    // Without ACPI a guest's poweroff halts the CPU and the domain stays "running".
    el(
      'features',
      undefined,
      plan.acpi && el('acpi'),
      el('vmport', { state: 'off' }),
      // QEMU 7.2 reserves 1 GiB for translated code and fills it before flushing; cap it to what the
      // pod's memory overhead counts (overhead.ts).
      plan.accel === 'tcg' && el('tcg', undefined, el('tb-cache', { unit: 'MiB' }, String(TCG_TB_CACHE_BYTES / (1024 * 1024)))),
    ),
    el('on_poweroff', undefined, 'destroy'),
    // A guest reboot restarts inside the same QEMU; only a poweroff or crash ends the domain.
    el('on_reboot', undefined, 'restart'),
    el('on_crash', undefined, 'destroy'),
    el(
      'devices',
      undefined,
      el('emulator', undefined, plan.emulator),
      ...plan.disks.map(diskElement),
      plan.disks.some((d) => d.bus === 'scsi') && el('controller', { type: 'scsi', index: 0, model: 'virtio-non-transitional' }),
      el('controller', { type: 'usb', model: 'none' }),
      plan.serial &&
        el(
          'serial',
          { type: 'unix' },
          el('source', { mode: 'bind', path: plan.serial.socketPath }),
          plan.serial.logPath !== undefined && el('log', { file: plan.serial.logPath, append: 'on' }),
          el('target', { port: 0 }),
        ),
      // libvirt makes console 0 an alias of serial 0 (same socket), as KubeVirt's XML relies on.
      plan.serial && el('console', { type: 'pty' }, el('target', { type: 'serial', port: 0 })),
      plan.vnc && el('graphics', { type: 'vnc' }, el('listen', { type: 'socket', socket: plan.vnc.socketPath })),
      plan.vnc && el('video', undefined, el('model', { type: 'vga', heads: 1, vram: 16384 })),
      el('memballoon', { model: 'none' }),
      plan.rng && el('rng', { model: 'virtio-non-transitional' }, el('backend', { model: 'random' }, '/dev/urandom')),
    ),
    qemuArgs.length > 0 && el('qemu:commandline', undefined, ...qemuArgs.map((value) => el('qemu:arg', { value }))),
  );
  const out: string[] = [];
  render(domain, 0, out);
  return `${out.join('\n')}\n`;
}
