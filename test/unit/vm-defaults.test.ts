/** VMI create-time defaults and validation (KubeVirt's mutating/validating webhooks, reference §1.3). */

import { describe, expect, test } from '@jest/globals';
import type { Disk, DomainSpec, VmiSpec, Volume } from '../../src/api/kubevirt.js';
import { DEFAULT_DISK_BUS, defaultVmiSpec, firmwareUuid, guestMemoryBytes, validateVmiSpec, vcpuCount } from '../../src/api/kubevirt-defaults.js';
import { VM_NAME, VM_NS, vmiSpec } from './helpers.js';

const META = { namespace: VM_NS, name: VM_NAME };
const defaulted = (spec: VmiSpec): VmiSpec => defaultVmiSpec(spec, META);
const withDomain = (domain: DomainSpec, over: Partial<VmiSpec> = {}): VmiSpec => ({ domain, ...over });
const MASQ_PORTS = { name: 'default', masquerade: {} };

describe('defaultVmiSpec', () => {
  test.each([
    ['no machine', {}, 'q35'],
    ['a machine of its own', { machine: { type: 'pc-i440fx-8.2' } }, 'pc-i440fx-8.2'],
  ])('machine type with %s → %s', (_, domain: DomainSpec, machine) => {
    expect(defaulted(withDomain(domain)).domain.machine).toEqual({ type: machine });
  });

  test.each([
    ['memory.guest wins', { memory: { guest: '1Gi' }, resources: { requests: { memory: '2Gi' }, limits: { memory: '3Gi' } } }, '1Gi', 2 ** 30],
    ['requests.memory', { resources: { requests: { memory: '2Gi' }, limits: { memory: '3Gi' } } }, '2Gi', 2 * 2 ** 30],
    ['limits.memory', { resources: { limits: { memory: '3Gi' } } }, '3Gi', 3 * 2 ** 30],
    ['nothing', {}, undefined, undefined],
  ])('guest memory from %s', (_, domain: DomainSpec, guest, bytes) => {
    const spec = defaulted(withDomain(domain));
    expect(spec.domain.memory?.guest).toBe(guest);
    expect(guestMemoryBytes(spec)).toBe(bytes);
    expect(guestMemoryBytes(withDomain(domain))).toBe(bytes);
  });

  test.each([
    ['no CPU at all', {}, { sockets: 1, cores: 1, threads: 1 }],
    ['request "2"', { resources: { requests: { cpu: '2' } } }, { sockets: 2, cores: 1, threads: 1 }],
    ['request "1500m" (rounded up)', { resources: { requests: { cpu: '1500m' } } }, { sockets: 2, cores: 1, threads: 1 }],
    ['request "250m" (at least one)', { resources: { requests: { cpu: '250m' } } }, { sockets: 1, cores: 1, threads: 1 }],
    ['limit "3" over request "1"', { resources: { requests: { cpu: '1' }, limits: { cpu: '3' } } }, { sockets: 3, cores: 1, threads: 1 }],
    ['topology given (request ignored)', { cpu: { cores: 2 }, resources: { requests: { cpu: '4' } } }, { sockets: 1, cores: 2, threads: 1 }],
    ['full topology', { cpu: { sockets: 2, cores: 2, threads: 2 } }, { sockets: 2, cores: 2, threads: 2 }],
  ])('CPU topology with %s', (_, domain: DomainSpec, topology) => {
    const spec = defaulted(withDomain(domain));
    expect(spec.domain.cpu).toEqual(expect.objectContaining(topology));
    expect(vcpuCount(spec)).toBe(topology.sockets * topology.cores * topology.threads);
  });

  test('keeps the CPU model', () => {
    expect(defaulted(withDomain({ cpu: { model: 'host-passthrough' } })).domain.cpu?.model).toBe('host-passthrough');
  });

  test.each<[string, Disk[], Volume[], Disk[]]>([
    ['a volume without a disk gets a sata disk', [], [{ name: 'data', emptyDisk: { capacity: '1Gi' } }], [{ name: 'data', disk: { bus: 'sata' } }]],
    ['a disk without a bus gets sata', [{ name: 'root' }], [{ name: 'root', dataVolume: { name: 'root' } }], [{ name: 'root', disk: { bus: 'sata' } }]],
    ['a declared bus is kept', [{ name: 'root', disk: { bus: 'virtio', readonly: true } }], [{ name: 'root', dataVolume: { name: 'root' } }], [{ name: 'root', disk: { bus: 'virtio', readonly: true } }]],
    ['a cdrom is read-only with the tray closed', [{ name: 'iso', cdrom: {} }], [{ name: 'iso', dataVolume: { name: 'iso' } }], [{ name: 'iso', cdrom: { bus: 'sata', readonly: true, tray: 'closed' } }]],
    ['a cdrom keeps what it says', [{ name: 'iso', cdrom: { bus: 'scsi', tray: 'open' } }], [{ name: 'iso', dataVolume: { name: 'iso' } }], [{ name: 'iso', cdrom: { bus: 'scsi', readonly: true, tray: 'open' } }]],
    [
      'declared disks first, then one per undisked volume, in volume order',
      [{ name: 'b', bootOrder: 1 }],
      [{ name: 'a', emptyDisk: { capacity: '1Gi' } }, { name: 'b', dataVolume: { name: 'b' } }, { name: 'c', cloudInitNoCloud: { userData: '#cloud-config' } }],
      [{ name: 'b', bootOrder: 1, disk: { bus: 'sata' } }, { name: 'a', disk: { bus: 'sata' } }, { name: 'c', disk: { bus: 'sata' } }],
    ],
  ])('disks: %s', (_, disks, volumes, expected) => {
    const spec = defaulted(withDomain({ memory: { guest: '1Gi' }, devices: { disks } }, { volumes }));
    expect(spec.domain.devices?.disks).toEqual(expected);
  });

  test('the default bus is sata, as KubeVirt on amd64', () => {
    expect(DEFAULT_DISK_BUS).toBe('sata');
  });

  test.each<[string, VmiSpec, VmiSpec['networks'], Array<Record<string, unknown>>]>([
    ['nothing declared → pod network + masquerade', withDomain({}), [{ name: 'default', pod: {} }], [{ name: 'default', masquerade: {}, model: 'virtio' }]],
    ['explicitly empty lists → pod network + masquerade', withDomain({ devices: { interfaces: [] } }, { networks: [] }), [{ name: 'default', pod: {} }], [{ name: 'default', masquerade: {}, model: 'virtio' }]],
    ['autoattachPodInterface: false → none', withDomain({ devices: { autoattachPodInterface: false } }), [], []],
    ['autoattachPodInterface: true → pod network', withDomain({ devices: { autoattachPodInterface: true } }), [{ name: 'default', pod: {} }], [{ name: 'default', masquerade: {}, model: 'virtio' }]],
    [
      'a declared interface is kept (model virtio added)',
      withDomain({ devices: { interfaces: [{ name: 'net', masquerade: {}, ports: [{ port: 22 }] }] } }, { networks: [{ name: 'net', pod: {} }] }),
      [{ name: 'net', pod: {} }],
      [{ name: 'net', masquerade: {}, ports: [{ port: 22 }], model: 'virtio' }],
    ],
    ['a declared model is kept', withDomain({ devices: { interfaces: [{ name: 'net', masquerade: {}, model: 'e1000' }] } }, { networks: [{ name: 'net', pod: {} }] }), [{ name: 'net', pod: {} }], [{ name: 'net', masquerade: {}, model: 'e1000' }]],
    ['only a network declared → no interface invented', withDomain({}, { networks: [{ name: 'net', pod: {} }] }), [{ name: 'net', pod: {} }], []],
  ])('networks: %s', (_, spec, networks, interfaces) => {
    const out = defaulted(spec);
    expect(out.networks).toEqual(networks);
    expect(out.domain.devices?.interfaces).toEqual(interfaces);
  });

  test.each([
    ['nothing', {}, { autoattachSerialConsole: true, autoattachGraphicsDevice: true }],
    ['both off', { autoattachSerialConsole: false, autoattachGraphicsDevice: false }, { autoattachSerialConsole: false, autoattachGraphicsDevice: false }],
  ])('serial console and graphics with %s', (_, devices, expected) => {
    expect(defaulted(withDomain({ devices })).domain.devices).toEqual(expect.objectContaining(expected));
  });

  test.each([
    [undefined, 30],
    [0, 0],
    [120, 120],
  ])('grace period %s → %s', (given, expected) => {
    const spec = defaulted(withDomain({}, given === undefined ? {} : { terminationGracePeriodSeconds: given }));
    expect(spec.terminationGracePeriodSeconds).toBe(expected);
  });

  test('firmware uuid: derived from namespace/name unless given', () => {
    expect(defaulted(withDomain({})).domain.firmware?.uuid).toBe(firmwareUuid(VM_NS, VM_NAME));
    const own = '11111111-2222-3333-4444-555555555555';
    expect(defaulted(withDomain({ firmware: { uuid: own, serial: 's1' } })).domain.firmware).toEqual({ uuid: own, serial: 's1' });
    expect(defaultVmiSpec(withDomain({}), { name: VM_NAME }).domain.firmware?.uuid).toBe(firmwareUuid('default', VM_NAME));
  });

  test('is idempotent and leaves its input alone', () => {
    const input = vmiSpec({ domain: { resources: { requests: { memory: '1Gi', cpu: '2' } }, devices: { disks: [{ name: 'iso', cdrom: {} }] } }, volumes: [{ name: 'iso', dataVolume: { name: 'iso' } }, { name: 'scratch', emptyDisk: { capacity: '1Gi' } }] });
    const copy = structuredClone(input);
    const once = defaulted(input);
    expect(input).toEqual(copy);
    expect(defaulted(once)).toEqual(once);
    expect(validateVmiSpec(once)).toEqual([]);
  });
});

describe('firmwareUuid', () => {
  test.each([
    [VM_NS, VM_NAME],
    ['default', 'a'],
    ['kube-system', 'x'.repeat(253)],
  ])('%s/%s: stable and shaped as a version-5 UUID', (ns, name) => {
    const uuid = firmwareUuid(ns, name);
    expect(uuid).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    expect(firmwareUuid(ns, name)).toBe(uuid);
  });

  test('differs per namespace and per name', () => {
    const all = new Set([firmwareUuid('a', 'vm'), firmwareUuid('b', 'vm'), firmwareUuid('a', 'vm2'), firmwareUuid('a/vm', '')]);
    expect(all.size).toBe(4);
  });
});

describe('guestMemoryBytes and vcpuCount', () => {
  test.each([
    ['128Mi', 128 * 2 ** 20],
    ['1G', 1e9],
    ['1073741824', 2 ** 30],
  ])('memory.guest %s → %d bytes', (guest, bytes) => {
    expect(guestMemoryBytes(withDomain({ memory: { guest } }))).toBe(bytes);
  });

  test.each([
    [{}, 1],
    [{ sockets: 2 }, 2],
    [{ cores: 4, threads: 2 }, 8],
    [{ sockets: 2, cores: 3, threads: 2 }, 12],
  ])('topology %j → %d vCPUs', (cpu, n) => {
    expect(vcpuCount(withDomain({ cpu }))).toBe(n);
  });
});

describe('validateVmiSpec', () => {
  /** A valid defaulted spec with `over` merged in, validated. */
  const problems = (over: Partial<VmiSpec>, domain: Partial<DomainSpec> = {}): string[] => {
    const base = vmiSpec(over);
    return validateVmiSpec(defaulted({ ...base, domain: { ...base.domain, ...domain } }));
  };

  test('a valid spec has no problems', () => {
    expect(problems({})).toEqual([]);
  });

  test.each<[string, Partial<VmiSpec>, Partial<DomainSpec>, RegExp]>([
    ['a disk without a volume', {}, { devices: { disks: [{ name: 'rootdisk' }, { name: 'ghost' }] } }, /^spec\.domain\.devices\.disks\[1\] \(ghost\) has no volume of that name$/],
    ['a volume with two sources', { volumes: [{ name: 'rootdisk', persistentVolumeClaim: { claimName: 'disk' }, dataVolume: { name: 'disk' } }] }, {}, /^spec\.volumes\[0\] \(rootdisk\) needs exactly one source/],
    ['a volume with no source', { volumes: [{ name: 'rootdisk' }] }, {}, /^spec\.volumes\[0\] \(rootdisk\) needs exactly one source/],
    ['a volume name used twice', { volumes: [{ name: 'rootdisk', persistentVolumeClaim: { claimName: 'disk' } }, { name: 'rootdisk', dataVolume: { name: 'x' } }] }, {}, /^spec\.volumes\[1\]\.name "rootdisk" is used twice$/],
    ['a containerDisk', { volumes: [{ name: 'rootdisk', containerDisk: { image: 'quay.io/containerdisks/fedora' } }] }, {}, /^spec\.volumes\[0\] \(rootdisk\): containerDisk is not supported by Ferry/],
    ['a bridge binding', { networks: [{ name: 'default', pod: {} }] }, { devices: { disks: [{ name: 'rootdisk' }], interfaces: [{ name: 'default', bridge: {} }] } }, /^spec\.domain\.devices\.interfaces\[0\] \(default\): bridge binding is not supported by Ferry; use masquerade: \{\}$/],
    ['no binding', { networks: [{ name: 'default', pod: {} }] }, { devices: { disks: [{ name: 'rootdisk' }], interfaces: [{ name: 'default' }] } }, /^spec\.domain\.devices\.interfaces\[0\] \(default\): only the masquerade binding is supported$/],
    [
      'two interfaces',
      { networks: [{ name: 'a', pod: {} }, { name: 'b', pod: {} }] },
      { devices: { disks: [{ name: 'rootdisk' }], interfaces: [{ name: 'a', masquerade: {} }, { name: 'b', masquerade: {} }] } },
      /^spec\.domain\.devices\.interfaces: Ferry supports one pod-network interface$/,
    ],
    ['an interface without its network', {}, { devices: { disks: [{ name: 'rootdisk' }], interfaces: [{ name: 'lost', masquerade: {} }] } }, /^spec\.domain\.devices\.interfaces\[0\] \(lost\) has no network of that name$/],
    ['a multus network', { networks: [{ name: 'default' }] }, { devices: { disks: [{ name: 'rootdisk' }], interfaces: [{ ...MASQ_PORTS }] } }, /^spec\.networks\[0\] \(default\): only pod networks are supported$/],
    ['cloud-init with no data', { volumes: [...vmiSpec().volumes!, { name: 'ci', cloudInitNoCloud: {} }] }, {}, /^spec\.volumes\[1\]\.cloudInitNoCloud: user data or network data is required$/],
    ['cloud-init with two user data', { volumes: [...vmiSpec().volumes!, { name: 'ci', cloudInitNoCloud: { userData: 'a', secretRef: { name: 's' } } }] }, {}, /^spec\.volumes\[1\]\.cloudInitNoCloud: give only one of userData, userDataBase64, secretRef$/],
    ['cloud-init with two network data', { volumes: [...vmiSpec().volumes!, { name: 'ci', cloudInitNoCloud: { networkData: 'a', networkDataBase64: 'YQ==' } }] }, {}, /^spec\.volumes\[1\]\.cloudInitNoCloud: give only one of networkData/],
    ['two cloud-init volumes', { volumes: [...vmiSpec().volumes!, { name: 'ci1', cloudInitNoCloud: { userData: 'a' } }, { name: 'ci2', cloudInitNoCloud: { userData: 'b' } }] }, {}, /^spec\.volumes: only one cloudInitNoCloud volume is supported$/],
    ['a bad emptyDisk capacity', { volumes: [...vmiSpec().volumes!, { name: 'scratch', emptyDisk: { capacity: 'lots' } }] }, {}, /^spec\.volumes\[1\]\.emptyDisk\.capacity "lots" is not a quantity$/],
    ['a disk that is also a cdrom', {}, { devices: { disks: [{ name: 'rootdisk', disk: {}, cdrom: {} }] } }, /^spec\.domain\.devices\.disks\[0\] \(rootdisk\) is both disk and cdrom$/],
    ['an unknown bus', {}, { devices: { disks: [{ name: 'rootdisk', disk: { bus: 'ide' as 'sata' } }] } }, /^spec\.domain\.devices\.disks\[0\]\.bus "ide" is not one of virtio, sata, scsi$/],
    ['a zero boot order', {}, { devices: { disks: [{ name: 'rootdisk', bootOrder: 0 }] } }, /^spec\.domain\.devices\.disks\[0\]\.bootOrder must be a positive integer$/],
    ['missing memory', {}, { memory: {} }, /^spec\.domain\.memory\.guest or spec\.domain\.resources\.requests\.memory is required$/],
    ['a memory that is no quantity', {}, { memory: { guest: 'plenty' } }, /^spec\.domain\.memory\.guest is not a quantity$/],
    ['efi', {}, { firmware: { bootloader: { efi: {} } } }, /^spec\.domain\.firmware\.bootloader\.efi is not supported yet; use bios$/],
  ])('%s', (_, over, domain, message) => {
    const found = problems(over, domain);
    expect(found).toEqual(expect.arrayContaining([expect.stringMatching(message)]));
  });

  test.each([
    ['userData', { userData: '#cloud-config' }],
    ['userDataBase64', { userDataBase64: 'I2Nsb3VkLWNvbmZpZw==' }],
    ['secretRef', { secretRef: { name: 'ud' } }],
    ['networkData only', { networkData: 'version: 2' }],
    ['user and network data', { userData: '#cloud-config', networkDataSecretRef: { name: 'nd' } }],
  ])('cloud-init with %s is valid', (_, cloudInitNoCloud) => {
    expect(problems({ volumes: [...vmiSpec().volumes!, { name: 'ci', cloudInitNoCloud }] })).toEqual([]);
  });

  test('memory from requests or limits alone is enough', () => {
    expect(problems({}, { memory: {}, resources: { requests: { memory: '1Gi' } } })).toEqual([]);
    expect(problems({}, { memory: {}, resources: { limits: { memory: '1Gi' } } })).toEqual([]);
  });

  // The "memory is required" message must not depend on what other messages happen to contain.
  test('missing memory is reported even when a volume is named "memory"', () => {
    const spec: VmiSpec = { domain: { devices: { disks: [{ name: 'memory' }] } }, volumes: [{ name: 'memory' }] };
    expect(validateVmiSpec(defaulted(spec))).toEqual(expect.arrayContaining(['spec.domain.memory.guest or spec.domain.resources.requests.memory is required']));
  });
});
