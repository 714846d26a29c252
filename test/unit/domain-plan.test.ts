import { describe, expect, test } from '@jest/globals';
import { API_VERSION, type Disk, Kind, type VirtualMachineInstance, type VmiSpec } from '../../src/api/kubevirt.js';
import { defaultVmiSpec } from '../../src/api/kubevirt-defaults.js';
import {
  deviceName,
  type LauncherEnv,
  masqueradeAddresses,
  PASST_FD_RESERVE,
  passtForwards,
  planDomain,
  type PodNetworkFacts,
  stableMac,
  type VolumeOnPod,
} from '../../launcher/domain/domain-plan.js';
import { podRuntimePaths, podVolumePath } from '../../src/contract/launch-plan.js';
import { codeOf, ferryErrorOf } from './helpers.js';

/** A defaulted VMI; 128Mi of guest memory unless the domain says otherwise. */
function vmi(spec: Omit<VmiSpec, 'domain'> & { domain?: VmiSpec['domain'] }, name = 'vm1'): VirtualMachineInstance {
  const metadata = { name, namespace: 'ns', uid: 'uid-1' };
  const domain = spec.domain ?? {};
  const memory = domain.memory ?? (domain.resources ? undefined : { guest: '128Mi' });
  const full: VmiSpec = { ...spec, domain: { ...domain, ...(memory ? { memory } : {}) } };
  return { apiVersion: API_VERSION, kind: Kind.VMI, metadata, spec: defaultVmiSpec(full, metadata) };
}

const fileVol = (over: Partial<VolumeOnPod> = {}): VolumeOnPod => ({ kind: 'file', path: '/v/disk.img', format: 'raw', directIo: true, ...over });

function env(volumes: Record<string, VolumeOnPod>, over: Partial<LauncherEnv> = {}): LauncherEnv {
  return { accel: 'tcg', emulator: '/usr/bin/qemu-system-x86_64', volumes, ...over };
}

/** A VMI with one disk `d` (a PVC) and what the pod has for it. */
function oneDisk(disk: Omit<Disk, 'name'>, onPod: VolumeOnPod = fileVol()) {
  const v = vmi({ domain: { devices: { disks: [{ name: 'd', ...disk }] } }, volumes: [{ name: 'd', persistentVolumeClaim: { claimName: 'c' } }] });
  return planDomain(v, env({ d: onPod })).disks[0]!;
}

describe('planDomain: cache and io (KubeVirt SetDriverCacheMode / SetOptimalIOMode)', () => {
  test.each<[string, Omit<Disk, 'name'>, VolumeOnPod, string, string | undefined]>([
    ['O_DIRECT file, nothing set', { disk: {} }, fileVol(), 'none', undefined],
    ['no O_DIRECT file, nothing set', { disk: {} }, fileVol({ directIo: false }), 'writethrough', undefined],
    ['block device', { disk: {} }, fileVol({ kind: 'block', path: '/dev/d' }), 'none', 'native'],
    ['preallocated file', { disk: {} }, fileVol({ preallocated: true }), 'none', 'native'],
    ['preallocated file without O_DIRECT', { disk: {} }, fileVol({ preallocated: true, directIo: false }), 'writethrough', undefined],
    ['explicit writeback on a block device', { disk: {}, cache: 'writeback' }, fileVol({ kind: 'block' }), 'writeback', undefined],
    ['explicit io threads', { disk: {}, io: 'threads' }, fileVol({ kind: 'block' }), 'none', 'threads'],
    ['io default = unset', { disk: {}, io: 'default' }, fileVol({ kind: 'block' }), 'none', 'native'],
    ['explicit native with none', { disk: {}, cache: 'none', io: 'native' }, fileVol(), 'none', 'native'],
  ])('%s → cache %s, io %s', (_what, disk, onPod, cache, io) => {
    const d = oneDisk(disk, onPod);
    expect(d.cache).toBe(cache);
    expect(d.io).toBe(io);
  });

  test('explicit cache none on a volume without O_DIRECT is INVALID_SPEC naming the disk', () => {
    const err = ferryErrorOf(() => oneDisk({ disk: {}, cache: 'none' }, fileVol({ directIo: false })));
    expect(err.code).toBe('INVALID_SPEC');
    expect(err.message).toContain('"d"');
    expect(err.message).toContain('O_DIRECT');
  });

  test('io native without cache none is INVALID_SPEC (QEMU would refuse to start)', () => {
    expect(codeOf(() => oneDisk({ disk: {}, cache: 'writethrough', io: 'native' }))).toBe('INVALID_SPEC');
  });
});

describe('planDomain: disks', () => {
  test('device names per bus family in order of appearance; sata and scsi share sd', () => {
    const names = ['a', 'b', 'c', 'd', 'e', 'f'];
    const buses = ['virtio', 'sata', 'virtio', 'scsi', 'sata', 'virtio'] as const;
    const v = vmi({
      domain: { devices: { disks: names.map((name, i) => ({ name, disk: { bus: buses[i] } })) } },
      volumes: names.map((name) => ({ name, persistentVolumeClaim: { claimName: name } })),
    });
    const plan = planDomain(v, env(Object.fromEntries(names.map((n) => [n, fileVol()]))));
    expect(plan.disks.map((d) => `${d.name}:${d.target}`)).toEqual(['a:vda', 'b:sda', 'c:vdb', 'd:sdb', 'e:sdc', 'f:vdc']);
  });

  test('a volume without a disk gets the default sata disk', () => {
    const v = vmi({ volumes: [{ name: 'root', persistentVolumeClaim: { claimName: 'r' } }] });
    expect(planDomain(v, env({ root: fileVol() })).disks[0]).toMatchObject({ bus: 'sata', target: 'sda', device: 'disk', readOnly: false });
  });

  test.each<[number, string]>([
    [0, 'vda'],
    [25, 'vdz'],
    [26, 'vdaa'],
    [27, 'vdab'],
    [701, 'vdzz'],
    [702, 'vdaaa'],
  ])('deviceName(vd, %d) = %s', (i, name) => {
    expect(deviceName('vd', i)).toBe(name);
  });

  test('cdrom is read-only, format and source come from the pod, boot order and serial pass through', () => {
    const v = vmi({
      domain: { devices: { disks: [{ name: 'root', disk: { bus: 'virtio' }, bootOrder: 2, serial: 'ROOT-1' }, { name: 'ci', cdrom: { readonly: false } }] } },
      volumes: [
        { name: 'root', persistentVolumeClaim: { claimName: 'r' } },
        { name: 'ci', cloudInitNoCloud: { userData: '#cloud-config' } },
      ],
    });
    const plan = planDomain(v, env({ root: fileVol({ kind: 'block', path: '/dev/root' }), ci: fileVol({ path: '/ci/noCloud.iso' }) }));
    expect(plan.disks).toEqual([
      { name: 'root', device: 'disk', bus: 'virtio', target: 'vda', source: { type: 'block', path: '/dev/root' }, format: 'raw', readOnly: false, bootOrder: 2, serial: 'ROOT-1', cache: 'none', io: 'native' },
      { name: 'ci', device: 'cdrom', bus: 'sata', target: 'sda', source: { type: 'file', path: '/ci/noCloud.iso' }, format: 'raw', readOnly: true, cache: 'none' },
    ]);
  });

  test('a read-only PVC or disk is read-only', () => {
    const v = vmi({
      domain: { devices: { disks: [{ name: 'a', disk: { readonly: true } }, { name: 'b' }] } },
      volumes: [
        { name: 'a', persistentVolumeClaim: { claimName: 'a' } },
        { name: 'b', persistentVolumeClaim: { claimName: 'b', readOnly: true } },
      ],
    });
    expect(planDomain(v, env({ a: fileVol(), b: fileVol() })).disks.map((d) => d.readOnly)).toEqual([true, true]);
  });

  test.each<[string, Omit<Disk, 'name'>]>([
    ['cdrom on virtio', { cdrom: { bus: 'virtio' } }],
    ['serial with a space', { disk: {}, serial: 'a b' }],
    ['serial with markup', { disk: {}, serial: '<x>' }],
  ])('%s is INVALID_SPEC', (_what, disk) => {
    expect(codeOf(() => oneDisk(disk))).toBe('INVALID_SPEC');
  });

  test('a disk whose volume the launcher did not prepare is INTERNAL', () => {
    const v = vmi({ volumes: [{ name: 'root', persistentVolumeClaim: { claimName: 'r' } }] });
    expect(codeOf(() => planDomain(v, env({})))).toBe('INTERNAL');
  });
});

describe('planDomain: CPU, memory, firmware, features', () => {
  test.each<[string | undefined, 'kvm' | 'tcg', string]>([
    [undefined, 'tcg', 'maximum'],
    ['host-model', 'tcg', 'maximum'],
    ['host-passthrough', 'tcg', 'maximum'],
    ['Westmere', 'tcg', 'Westmere'],
    [undefined, 'kvm', 'host-model'],
    ['host-passthrough', 'kvm', 'host-passthrough'],
    ['Skylake-Server', 'kvm', 'Skylake-Server'],
  ])('model %s under %s → %s', (model, accel, expected) => {
    const v = vmi({ domain: { cpu: model === undefined ? {} : { model } } });
    expect(planDomain(v, env({}, { accel })).cpu.model).toBe(expected);
  });

  test('topology, memory, name, uuid, machine and uid', () => {
    const v = vmi({ domain: { cpu: { sockets: 2, cores: 2, threads: 1 }, memory: { guest: '1Gi' } } });
    const plan = planDomain(v, env({}));
    expect(plan).toMatchObject({
      name: 'ns_vm1',
      uuid: v.spec.domain.firmware!.uuid,
      machine: 'q35',
      memoryBytes: 1024 ** 3,
      cpu: { sockets: 2, cores: 2, threads: 1 },
      vmiUid: 'uid-1',
      firmware: { kind: 'bios', useSerial: false },
    });
  });

  test('memory comes from requests when memory.guest is not given', () => {
    const v = vmi({ domain: { resources: { requests: { memory: '64Mi' } } } });
    expect(planDomain(v, env({})).memoryBytes).toBe(64 * 1024 * 1024);
  });

  test.each<[boolean | undefined, boolean]>([
    [undefined, true],
    [true, true],
    [false, false],
  ])('acpi.enabled %s → acpi %s', (enabled, acpi) => {
    const v = vmi({ domain: { features: enabled === undefined ? {} : { acpi: { enabled } } } });
    expect(planDomain(v, env({})).acpi).toBe(acpi);
  });

  test('rng only when devices.rng is set', () => {
    expect(planDomain(vmi({}), env({})).rng).toBe(false);
    expect(planDomain(vmi({ domain: { devices: { rng: {} } } }), env({})).rng).toBe(true);
  });

  test('serial and VNC follow the VMI and what the launcher provides', () => {
    const paths = podRuntimePaths('uid-1');
    const full = env({}, { serial: { socketPath: paths.serialSocket, logPath: paths.serialLog }, vncSocketPath: paths.vncSocket });
    expect(planDomain(vmi({}), full)).toMatchObject({ serial: { socketPath: paths.serialSocket, logPath: paths.serialLog }, vnc: { socketPath: paths.vncSocket } });
    const off = planDomain(vmi({ domain: { devices: { autoattachSerialConsole: false, autoattachGraphicsDevice: false } } }), full);
    expect(off.serial).toBeUndefined();
    expect(off.vnc).toBeUndefined();
    expect(planDomain(vmi({}), env({})).vnc).toBeUndefined();
  });

  test.each<[string, Partial<VmiSpec['domain']>]>([
    ['EFI', { firmware: { bootloader: { efi: {} } } }],
    ['machine pc', { machine: { type: 'pc-i440fx-7.2' } }],
    ['firmware uuid not a UUID', { firmware: { uuid: 'not-a-uuid' } }],
  ])('%s is INVALID_SPEC', (_what, domain) => {
    expect(codeOf(() => planDomain(vmi({ domain: domain as VmiSpec['domain'] }), env({})))).toBe('INVALID_SPEC');
  });

  test('pc-q35 versioned machine types are accepted', () => {
    expect(planDomain(vmi({ domain: { machine: { type: 'pc-q35-7.2' } } as VmiSpec['domain'] }), env({})).machine).toBe('pc-q35-7.2');
  });
});

/** A pod as containerd gives one on a usual node: 1M open files, IPv4 only, Linux's ephemeral range. */
const POD: PodNetworkFacts = { backend: 'passt', openFilesLimit: 1 << 20, ipFamilies: 1, ephemeralPorts: { start: 32768, end: 60999 }, socketDir: '/run/passt' };

describe('passtForwards: every port when the open-files limit allows it, else the lowest that fit', () => {
  const none: Parameters<typeof passtForwards>[1] = [];
  test.each<[string, Partial<PodNetworkFacts>, ReturnType<typeof passtForwards>]>([
    ['1M files: everything', {}, { tcp: 'all', udp: 'all' }],
    ['exactly enough for both protocols', { openFilesLimit: PASST_FD_RESERVE + 2 * 37303 }, { tcp: 'all', udp: 'all' }],
    ['one short: TCP all, UDP what is left', { openFilesLimit: PASST_FD_RESERVE + 2 * 37303 - 1 }, { tcp: 'all', udp: [{ start: 1, end: 32767 }] }],
    ['TCP all and a little UDP', { openFilesLimit: PASST_FD_RESERVE + 37303 + 100 }, { tcp: 'all', udp: [{ start: 1, end: 100 }] }],
    ['this machine: 20000, IPv4', { openFilesLimit: 20000 }, { tcp: [{ start: 1, end: 14232 }], udp: [{ start: 1, end: 4744 }] }],
    ['20000 with IPv4 and IPv6: half the ports', { openFilesLimit: 20000, ipFamilies: 2 }, { tcp: [{ start: 1, end: 7116 }], udp: [{ start: 1, end: 2372 }] }],
    ['1024 files: nothing but the declared ports', { openFilesLimit: 1024 }, { tcp: [], udp: [] }],
    ['a narrow ephemeral range makes room', { openFilesLimit: 1 << 17, ephemeralPorts: { start: 60000, end: 60999 } }, { tcp: 'all', udp: 'all' }],
    ['ranges stay below the ephemeral range', { openFilesLimit: PASST_FD_RESERVE + 37303 + 35000, ephemeralPorts: { start: 32768, end: 60999 } }, { tcp: 'all', udp: [{ start: 1, end: 32767 }] }],
  ])('%s', (_what, over, expected) => {
    expect(passtForwards({ ...POD, ...over }, none)).toEqual(expected);
  });

  test('declared ports beyond the ranges are added once, in order, by protocol', () => {
    const declared = [
      { port: 50000, protocol: 'TCP' as const },
      { port: 22, protocol: 'TCP' as const },
      { port: 9000, protocol: 'UDP' as const },
      { port: 8000, protocol: 'TCP' as const },
    ];
    expect(passtForwards({ ...POD, openFilesLimit: 1024 }, declared)).toEqual({
      tcp: [{ start: 22, end: 22 }, { start: 8000, end: 8000 }, { start: 50000, end: 50000 }],
      udp: [{ start: 9000, end: 9000 }],
    });
    expect(passtForwards({ ...POD, openFilesLimit: 20000 }, declared).tcp).toEqual([{ start: 1, end: 14232 }, { start: 50000, end: 50000 }]);
  });
});

describe('planDomain: the masquerade interface', () => {
  test('defaults: one masquerade NIC on 10.0.2.0/24, virtio, a stable MAC, no ports', () => {
    const v = vmi({});
    const plan = planDomain(v, env({}));
    expect(plan.interfaces).toEqual([
      { name: 'default', model: 'virtio', mac: stableMac(v.spec.domain.firmware!.uuid!), binding: 'masquerade', backend: 'passt', ports: [], forward: { tcp: 'all', udp: 'all' }, passtSocket: '/var/run/libvirt/passt/default.sock', cidr: '10.0.2.0/24' },
    ]);
    expect(planDomain(vmi({}), env({})).interfaces[0]!.mac).toBe(plan.interfaces[0]!.mac);
  });

  test('ports (TCP by default), MAC, model, boot order and the network CIDR pass through', () => {
    const v = vmi({
      domain: {
        devices: {
          interfaces: [{ name: 'pod', masquerade: {}, model: 'e1000e', macAddress: '02:AA:BB:CC:DD:EE', bootOrder: 3, ports: [{ port: 22 }, { port: 53, protocol: 'UDP' }] }],
        },
      },
      networks: [{ name: 'pod', pod: { vmNetworkCIDR: '172.16.0.0/16' } }],
    });
    expect(planDomain(v, env({}, { podNetwork: { ...POD, backend: 'slirp' } })).interfaces[0]).toEqual({
      name: 'pod',
      model: 'e1000e',
      mac: '02:aa:bb:cc:dd:ee',
      binding: 'masquerade',
      backend: 'slirp',
      ports: [
        { port: 22, protocol: 'TCP' },
        { port: 53, protocol: 'UDP' },
      ],
      cidr: '172.16.0.0/16',
      bootOrder: 3,
    });
  });

  test('passt: what the pod can forward, the declared ports always', () => {
    const v = vmi({ domain: { devices: { interfaces: [{ name: 'default', masquerade: {}, ports: [{ port: 40000 }, { port: 22 }] }] } } });
    const nic = planDomain(v, env({}, { podNetwork: { ...POD, openFilesLimit: 20000 } })).interfaces[0]!;
    expect(nic).toMatchObject({ backend: 'passt', passtSocket: '/run/passt/default.sock', forward: { tcp: [{ start: 1, end: 14232 }, { start: 40000, end: 40000 }], udp: [{ start: 1, end: 4744 }] } });
  });

  test('autoattachPodInterface false: no NIC', () => {
    expect(planDomain(vmi({ domain: { devices: { autoattachPodInterface: false } } }), env({})).interfaces).toEqual([]);
  });

  test.each<[string, Record<string, unknown>, string | undefined]>([
    ['bad MAC', { macAddress: '02:aa:bb:cc:dd' }, undefined],
    ['MAC with an option injection', { macAddress: '02:aa:bb:cc:dd:ee,romfile=/x' }, undefined],
    ['port 0', { ports: [{ port: 0 }] }, undefined],
    ['port 70000', { ports: [{ port: 70000 }] }, undefined],
    ['a port declared twice', { ports: [{ port: 80 }, { port: 80, protocol: 'TCP' }] }, undefined],
    ['unknown model', { model: 'vmxnet3' }, undefined],
    ['bridge binding', { masquerade: undefined, bridge: {} }, undefined],
    ['a CIDR too small for gateway and guest', {}, '10.0.2.0/31'],
    ['an IPv6 CIDR', {}, 'fd10:0:2::/120'],
  ])('%s is INVALID_SPEC', (_what, iface, cidr) => {
    const v = vmi({
      domain: { devices: { interfaces: [{ name: 'default', masquerade: {}, ...iface }] } },
      networks: [{ name: 'default', pod: cidr === undefined ? {} : { vmNetworkCIDR: cidr } }],
    });
    expect(codeOf(() => planDomain(v, env({})))).toBe('INVALID_SPEC');
  });

  test('the same port on TCP and UDP is fine', () => {
    const v = vmi({ domain: { devices: { interfaces: [{ name: 'default', masquerade: {}, ports: [{ port: 53 }, { port: 53, protocol: 'UDP' }] }] } } });
    expect(planDomain(v, env({})).interfaces[0]!.ports).toHaveLength(2);
  });

  test.each<[string, string, string, string]>([
    ['10.0.2.0/24', '10.0.2.0', '10.0.2.1', '10.0.2.2'],
    ['10.0.2.77/24', '10.0.2.0', '10.0.2.1', '10.0.2.2'],
    ['192.168.100.0/30', '192.168.100.0', '192.168.100.1', '192.168.100.2'],
    ['172.16.0.0/12', '172.16.0.0', '172.16.0.1', '172.16.0.2'],
  ])('masqueradeAddresses(%s)', (cidr, network, gateway, guest) => {
    expect(masqueradeAddresses(cidr)).toMatchObject({ network, gateway, guest });
  });

  test('stableMac is locally administered unicast and follows the UUID', () => {
    expect(stableMac('6A1F4C2E-0000-5000-8000-00000000BEEF')).toBe('02:00:00:00:be:ef');
    expect(stableMac('6a1f4c2e-0000-5000-8000-0123456789ab')).toBe('02:23:45:67:89:ab');
  });
});

describe('pod paths (KubeVirt layout)', () => {
  const v = vmi({}, 'web');
  test.each<[Parameters<typeof podVolumePath>[0], 'filesystem' | 'block', string]>([
    [{ name: 'root' }, 'filesystem', '/var/run/kubevirt-private/vmi-disks/root/disk.img'],
    [{ name: 'root' }, 'block', '/dev/root'],
    [{ name: 'ci', cloudInitNoCloud: {} }, 'filesystem', '/var/run/kubevirt-ephemeral-disks/cloud-init-data/ns/web/noCloud.iso'],
    [{ name: 'scratch', emptyDisk: { capacity: '1Gi' } }, 'filesystem', '/var/run/libvirt/empty-disks/scratch.qcow2'],
  ])('%j (%s) → %s', (volume, mode, path) => {
    expect(podVolumePath(volume, v, mode)).toBe(path);
  });

  test('runtime sockets', () => {
    expect(podRuntimePaths('u1')).toEqual({
      serialSocket: '/var/run/kubevirt-private/u1/virt-serial0',
      serialLog: '/var/run/kubevirt-private/u1/virt-serial0-log',
      vncSocket: '/var/run/kubevirt-private/u1/virt-vnc',
      consoleSocket: '/var/run/kubevirt-private/u1/console.sock',
    });
  });
});
