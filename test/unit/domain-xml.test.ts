/**
 * Golden files for VMI → planDomain → domainXml (test/golden/*.xml): the exact XML the launcher
 * hands to libvirt. Each golden was also checked by hand against libvirt 9.0 (`virsh define`) and the
 * domains booted under TCG (docs/vm-overhead.md has the machine); the passt interface of
 * minimal-tcg.xml and ports.xml is the one test/component/launcher-network.test.ts boots.
 *
 * After an intended change, rewrite the goldens and review the diff:
 *   UPDATE_GOLDEN=1 NODE_OPTIONS='--experimental-vm-modules' npx jest dist/test/unit/domain-xml
 */

import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from '@jest/globals';
import { API_VERSION, Kind, type VirtualMachineInstance, type VmiSpec } from '../../src/api/kubevirt.js';
import { defaultVmiSpec } from '../../src/api/kubevirt-defaults.js';
import { type LauncherEnv, planDomain, type PodNetworkFacts } from '../../launcher/domain/domain-plan.js';
import { domainXml, networkArgs, xmlEscape } from '../../launcher/domain/domain-xml.js';
import { type DomainPlan, podRuntimePaths, podVolumePath } from '../../src/contract/launch-plan.js';
import { REPO_ROOT } from '../helpers/ferry-process.js';
import { codeOf } from './helpers.js';

const GOLDEN_DIR = join(REPO_ROOT, 'test', 'golden');
const UPDATE = process.env.UPDATE_GOLDEN === '1';
const EMULATOR = '/usr/bin/qemu-system-x86_64';

function vmi(name: string, spec: VmiSpec): VirtualMachineInstance {
  const metadata = { name, namespace: 'demo', uid: `0000-${name}` };
  return { apiVersion: API_VERSION, kind: Kind.VMI, metadata, spec: defaultVmiSpec(spec, metadata) };
}

function runtime(v: VirtualMachineInstance, opts: { vnc?: boolean; log?: boolean } = {}): Pick<LauncherEnv, 'serial' | 'vncSocketPath'> {
  const paths = podRuntimePaths(v.metadata.uid ?? '');
  return {
    serial: { socketPath: paths.serialSocket, ...(opts.log ? { logPath: paths.serialLog } : {}) },
    ...(opts.vnc !== false ? { vncSocketPath: paths.vncSocket } : {}),
  };
}

function fileVolume(path: string, extra: { format?: 'raw' | 'qcow2'; directIo?: boolean } = {}) {
  return { kind: 'file' as const, path, format: extra.format ?? 'raw', directIo: extra.directIo ?? true };
}

/** A VMI with declared ports, a custom guest network, its own MAC, ACPI off, no serial console. */
function renderWeb(podNetwork: PodNetworkFacts): string {
  const v = vmi('web', {
    domain: {
      memory: { guest: '256Mi' },
      features: { acpi: { enabled: false } },
      devices: {
        interfaces: [
          {
            name: 'default',
            masquerade: {},
            macAddress: '02:AB:CD:EF:01:23',
            ports: [{ name: 'ssh', port: 22 }, { name: 'http', port: 80, protocol: 'TCP' }, { name: 'dns', port: 53, protocol: 'UDP' }, { name: 'alt', port: 40443 }],
          },
        ],
        autoattachSerialConsole: false,
      },
    },
    networks: [{ name: 'default', pod: { vmNetworkCIDR: '10.11.12.0/24' } }],
    volumes: [{ name: 'rootdisk', persistentVolumeClaim: { claimName: 'web-root' } }],
  });
  const volumes = { rootdisk: fileVolume(podVolumePath(v.spec.volumes![0]!, v)) };
  return domainXml(planDomain(v, { accel: 'tcg', emulator: EMULATOR, volumes, ...runtime(v), podNetwork }));
}

const cases: Array<{ golden: string; render: () => string }> = [
  {
    // The smallest VMI: one PVC and memory, everything else KubeVirt's defaults (sata disk,
    // masquerade NIC, serial console, VNC) under TCG.
    golden: 'minimal-tcg.xml',
    render: () => {
      const v = vmi('minimal', {
        domain: { resources: { requests: { memory: '128Mi' } } },
        volumes: [{ name: 'rootdisk', persistentVolumeClaim: { claimName: 'minimal-root' } }],
      });
      const volumes = { rootdisk: fileVolume(podVolumePath(v.spec.volumes![0]!, v)) };
      return domainXml(planDomain(v, { accel: 'tcg', emulator: EMULATOR, volumes, ...runtime(v) }));
    },
  },
  {
    // A block PVC on virtio under KVM: cache none + io native, host-model CPU, 2 sockets, serial
    // BIOS, rng, a serial log and no graphics.
    golden: 'pvc-block-kvm.xml',
    render: () => {
      const v = vmi('blocky', {
        domain: {
          cpu: { sockets: 2 },
          memory: { guest: '1Gi' },
          firmware: { bootloader: { bios: { useSerial: true } } },
          devices: {
            disks: [{ name: 'rootdisk', disk: { bus: 'virtio' }, bootOrder: 1 }],
            autoattachGraphicsDevice: false,
            rng: {},
          },
        },
        volumes: [{ name: 'rootdisk', persistentVolumeClaim: { claimName: 'blocky-root' } }],
      });
      const volumes = { rootdisk: { kind: 'block' as const, path: podVolumePath(v.spec.volumes![0]!, v, 'block'), format: 'raw' as const, directIo: true } };
      return domainXml(planDomain(v, { accel: 'kvm', emulator: EMULATOR, volumes, ...runtime(v, { vnc: false, log: true }) }));
    },
  },
  {
    // A PVC that boots, the cloud-init ISO as a read-only sata cdrom, an emptyDisk (qcow2) on scsi
    // with a serial, a named CPU model under TCG, and a volume without O_DIRECT (writethrough).
    golden: 'cloudinit-cdrom.xml',
    render: () => {
      const v = vmi('cloudy', {
        domain: {
          cpu: { model: 'Westmere', cores: 2 },
          memory: { guest: '512Mi' },
          devices: {
            disks: [
              { name: 'rootdisk', disk: { bus: 'virtio' }, bootOrder: 1 },
              { name: 'cloudinitdisk', cdrom: { bus: 'sata' } },
              { name: 'scratch', disk: { bus: 'scsi' }, serial: 'SCRATCH-1' },
            ],
          },
        },
        volumes: [
          { name: 'rootdisk', persistentVolumeClaim: { claimName: 'cloudy-root' } },
          { name: 'cloudinitdisk', cloudInitNoCloud: { userData: '#cloud-config\npassword: ferry\n' } },
          { name: 'scratch', emptyDisk: { capacity: '1Gi' } },
        ],
      });
      const [root, ci, scratch] = v.spec.volumes!;
      const volumes = {
        rootdisk: fileVolume(podVolumePath(root!, v)),
        cloudinitdisk: fileVolume(podVolumePath(ci!, v), { directIo: false }),
        scratch: fileVolume(podVolumePath(scratch!, v), { format: 'qcow2' }),
      };
      return domainXml(planDomain(v, { accel: 'tcg', emulator: EMULATOR, volumes, ...runtime(v) }));
    },
  },
  {
    // passt on a pod whose open-files limit (20000, this machine's) does not allow every port: the
    // lowest ports that fit and a declared port beyond them; the VMI's MAC; ACPI off; no serial console.
    golden: 'ports.xml',
    render: () => renderWeb({ backend: 'passt', openFilesLimit: 20000, ipFamilies: 1, ephemeralPorts: { start: 32768, end: 60999 }, socketDir: '/var/run/libvirt/passt' }),
  },
  {
    // The slirp fallback (--pod-network slirp): declared ports only, forwarded from the pod's addresses
    // to the guest on its custom guest network.
    golden: 'ports-slirp.xml',
    render: () => renderWeb({ backend: 'slirp', openFilesLimit: 20000, ipFamilies: 1, ephemeralPorts: { start: 32768, end: 60999 }, socketDir: '/var/run/libvirt/passt' }),
  },
];

describe('domainXml golden files', () => {
  test.each(cases)('$golden', ({ golden, render }) => {
    const path = join(GOLDEN_DIR, golden);
    const xml = render();
    if (UPDATE) writeFileSync(path, xml);
    expect(existsSync(path)).toBe(true);
    expect(xml).toBe(readFileSync(path, 'utf8'));
  });

  test('rendering is deterministic', () => {
    for (const c of cases) expect(c.render()).toBe(c.render());
  });
});

const basePlan: DomainPlan = {
  name: 'ns_vm',
  uuid: '6a1f4c2e-0000-5000-8000-000000000001',
  accel: 'tcg',
  emulator: EMULATOR,
  machine: 'q35',
  memoryBytes: 128 * 1024 * 1024,
  cpu: { sockets: 1, cores: 1, threads: 1, model: 'maximum' },
  firmware: { kind: 'bios', useSerial: false },
  acpi: true,
  disks: [],
  interfaces: [],
  rng: false,
  vmiUid: 'uid',
};

describe('domainXml', () => {
  test('escapes text and attribute values', () => {
    const xml = domainXml({
      ...basePlan,
      vmiUid: `a<b>&'"`,
      disks: [{ name: 'd', device: 'disk', bus: 'sata', target: 'sda', source: { type: 'file', path: "/p/it's&<x>.img" }, format: 'raw', readOnly: false, cache: 'none' }],
    });
    expect(xml).toContain('<uid>a&lt;b&gt;&amp;&apos;&quot;</uid>');
    expect(xml).toContain("<source file='/p/it&apos;s&amp;&lt;x&gt;.img'/>");
    expect(xmlEscape(`<&>'"`)).toBe('&lt;&amp;&gt;&apos;&quot;');
  });

  test.each<[Partial<DomainPlan>, string, boolean]>([
    [{ accel: 'kvm' }, "<domain type='kvm'>", true],
    [{ accel: 'tcg' }, "<domain type='qemu'>", true],
    [{ accel: 'tcg' }, "<tb-cache unit='MiB'>128</tb-cache>", true],
    [{ accel: 'kvm' }, '<tcg>', false],
    [{ acpi: false }, '<acpi/>', false],
    [{ acpi: true }, '<acpi/>', true],
    [{}, "<boot dev='hd'/>", true],
    [{}, '<on_reboot>restart</on_reboot>', true],
    [{}, '<on_poweroff>destroy</on_poweroff>', true],
    [{}, '<serial', false],
    [{}, '<graphics', false],
    [{}, 'qemu:commandline', false],
    [{ firmware: { kind: 'bios', useSerial: true } }, "<bios useserial='yes'/>", true],
    [{ rng: true }, '<backend model=\'random\'>/dev/urandom</backend>', true],
    [{ cpu: { sockets: 2, cores: 3, threads: 1, model: 'host-passthrough' } }, "<vcpu placement='static'>6</vcpu>", true],
    [{ cpu: { sockets: 1, cores: 1, threads: 1, model: 'host-passthrough' } }, "<cpu mode='host-passthrough' check='none'>", true],
    [{ cpu: { sockets: 1, cores: 1, threads: 1, model: 'qemu64' } }, "<model fallback='allow'>qemu64</model>", true],
  ])('%j renders %s: %s', (override, fragment, present) => {
    expect(domainXml({ ...basePlan, ...override }).includes(fragment)).toBe(present);
  });

  test('no <boot dev> when a disk or the NIC has a boot order (libvirt refuses both)', () => {
    const disk = { name: 'd', device: 'disk' as const, bus: 'virtio' as const, target: 'vda', source: { type: 'file' as const, path: '/d' }, format: 'raw' as const, readOnly: false, cache: 'none' as const };
    expect(domainXml({ ...basePlan, disks: [{ ...disk, bootOrder: 2 }] })).not.toContain("<boot dev='hd'/>");
    const nic = { name: 'default', model: 'virtio', binding: 'masquerade' as const, backend: 'slirp' as const, ports: [], cidr: '10.0.2.0/24', bootOrder: 1 };
    const xml = domainXml({ ...basePlan, disks: [disk], interfaces: [nic] });
    expect(xml).not.toContain("<boot dev='hd'/>");
    expect(xml).toContain('bootindex=1');
    expect(xml).not.toContain('romfile=');
  });

  test('networkArgs (passt): QEMU connects to the passt socket; a comma in its path is refused', () => {
    const nic = { name: 'default', model: 'virtio', mac: '02:00:00:00:00:01', binding: 'masquerade' as const, backend: 'passt' as const, ports: [], cidr: '10.0.2.0/24', forward: { tcp: 'all', udp: 'all' } as const };
    expect(networkArgs({ ...nic, passtSocket: '/run/p/default.sock' })).toEqual([
      '-netdev',
      'stream,id=hostua-default,server=off,addr.type=unix,addr.path=/run/p/default.sock',
      '-device',
      'virtio-net-pci-non-transitional,netdev=hostua-default,id=ua-default,bus=pcie.0,addr=0x10,mac=02:00:00:00:00:01,romfile=',
    ]);
    expect(codeOf(() => networkArgs({ ...nic, passtSocket: '/run/p,server=on/x.sock' }))).toBe('INVALID_SPEC');
    expect(codeOf(() => networkArgs(nic))).toBe('INVALID_SPEC');
  });

  test('networkArgs (slirp fallback): user-mode NAT on the masquerade addresses, ports forwarded to the guest', () => {
    expect(
      networkArgs({ name: 'default', model: 'e1000e', mac: '02:00:00:00:00:01', binding: 'masquerade', backend: 'slirp', cidr: '192.168.7.0/24', ports: [{ port: 8443, protocol: 'TCP' }, { port: 5353, protocol: 'UDP' }] }),
    ).toEqual([
      '-netdev',
      'user,id=hostua-default,net=192.168.7.0/24,host=192.168.7.1,dhcpstart=192.168.7.2,hostfwd=tcp::8443-192.168.7.2:8443,hostfwd=udp::5353-192.168.7.2:5353',
      '-device',
      'e1000e,netdev=hostua-default,id=ua-default,bus=pcie.0,addr=0x10,mac=02:00:00:00:00:01,romfile=',
    ]);
  });

  test('EFI plans are refused', () => {
    expect(codeOf(() => domainXml({ ...basePlan, firmware: { kind: 'efi', secureBoot: false } }))).toBe('INVALID_SPEC');
  });
});
