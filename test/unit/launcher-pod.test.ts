/** VMI → launcher pod: KubeVirt's metadata, restricted security, mounts, resources (reference §2.2–2.6). */

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from '@jest/globals';
import type { V1Container, V1Pod } from '@kubernetes/client-node';
import {
  buildLauncherPod,
  type ClaimInfo,
  type LauncherConfig,
  launcherPodName,
  launcherResources,
  launcherVmi,
} from '../../controller/vm/launcher-pod.js';
import type { VirtualMachineInstance, VmiSpec } from '../../src/api/kubevirt.js';
import { defaultVmiSpec, validateVmiSpec } from '../../src/api/kubevirt-defaults.js';
import { cloudInitSecretDir } from '../../src/contract/launch-plan.js';
import { memoryOverheadBytes } from '../../src/api/vm-overhead.js';
import { REPO_ROOT } from '../helpers/ferry-process.js';
import { LAUNCHER_CONFIG, makeVmi, type VmiOptions, VM_NAME, VM_NS, VMI_UID, vmiSpec } from './helpers.js';

const MiB = 2 ** 20;
const KVM = { ...LAUNCHER_CONFIG, allowEmulation: false };
const NO_CLAIMS = new Map<string, ClaimInfo>();

/** A VMI as the controller hands it over: defaulted. */
function vmiOf(o: VmiOptions = {}): VirtualMachineInstance {
  const vmi = makeVmi(o);
  return { ...vmi, spec: defaultVmiSpec(vmi.spec, vmi.metadata) };
}
const podOf = (o: VmiOptions = {}, claims: ReadonlyMap<string, ClaimInfo> = NO_CLAIMS, config: LauncherConfig = LAUNCHER_CONFIG): V1Pod => buildLauncherPod(vmiOf(o), claims, config);
const compute = (pod: V1Pod): V1Container => pod.spec!.containers[0]!;
const withDomain = (domain: VmiSpec['domain'], over: Partial<VmiSpec> = {}): VmiSpec => vmiSpec({ domain, ...over });
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

describe('launcherPodName', () => {
  test.each([
    ['web'],
    ['a'.repeat(100)],
    [`${'x'.repeat(42)}-${'y'.repeat(20)}`],
    [`${'x'.repeat(42)}.${'y'.repeat(20)}`],
  ])('%s: virt-launcher-<name>-<hash>, at most 63 characters, a valid name', (name) => {
    const pod = launcherPodName(makeVmi({ name }));
    expect(pod.length).toBeLessThanOrEqual(63);
    expect(pod).toMatch(/^virt-launcher-/);
    expect(pod).toMatch(/-[0-9a-f]{5}$/);
    expect(pod).toMatch(DNS_SUBDOMAIN);
    expect(pod).not.toMatch(/[-.]{2}/);
    expect(pod.startsWith(`virt-launcher-${name.slice(0, 10)}`)).toBe(true);
  });

  test('deterministic per VMI UID: the same UID the same name, a new UID a new name', () => {
    const a = launcherPodName(makeVmi({ uid: 'u-1' }));
    expect(launcherPodName(makeVmi({ uid: 'u-1' }))).toBe(a);
    expect(launcherPodName(makeVmi({ uid: 'u-2' }))).not.toBe(a);
    expect(launcherPodName(makeVmi({ uid: 'u-1', name: 'other' }))).not.toBe(a);
  });

  test('the pod carries that name', () => {
    expect(podOf().metadata?.name).toBe(launcherPodName(makeVmi()));
  });
});

describe('buildLauncherPod: metadata', () => {
  test('labels: the VMI labels plus KubeVirt launcher labels', () => {
    const pod = podOf({ labels: { app: 'web', 'kubevirt.io': 'overridden', 'kubevirt.io/domain': 'web' } });
    expect(pod.metadata?.labels).toEqual({
      app: 'web',
      'kubevirt.io/domain': 'web',
      'kubevirt.io': 'virt-launcher',
      'kubevirt.io/created-by': VMI_UID,
      'vmi.kubevirt.io/id': VM_NAME,
    });
  });

  test.each([
    ['a'.repeat(63), 'a'.repeat(63)],
    ['b'.repeat(64), null],
    [`vm-${'c'.repeat(200)}`, null],
  ])('the id label of name #%# fits a label value', (name, exact) => {
    const id = podOf({ name }).metadata?.labels?.['vmi.kubevirt.io/id'] ?? '';
    expect(id.length).toBeLessThanOrEqual(63);
    if (exact) expect(id).toBe(exact);
    else expect(id).toMatch(new RegExp(`^${name.slice(0, 54)}-[0-9a-f]{8}$`));
  });

  test('annotations: the VMI ones except kubectl.kubernetes.io/*, domain, default container, memory overhead', () => {
    const vmi = vmiOf({ annotations: { note: 'x', 'kubectl.kubernetes.io/last-applied-configuration': '{}' } });
    const pod = buildLauncherPod(vmi, NO_CLAIMS, LAUNCHER_CONFIG);
    expect(pod.metadata?.annotations).toEqual({
      note: 'x',
      'kubevirt.io/domain': VM_NAME,
      'kubectl.kubernetes.io/default-container': 'compute',
      'kubevirt.io/memory-overhead-bytes': String(memoryOverheadBytes(vmi.spec, { emulation: true })),
    });
  });

  test('owned by the VMI, in its namespace', () => {
    const pod = podOf();
    expect(pod.metadata?.namespace).toBe(VM_NS);
    expect(pod.metadata?.ownerReferences).toEqual([{ apiVersion: 'kubevirt.io/v1', kind: 'VirtualMachineInstance', name: VM_NAME, uid: VMI_UID, controller: true, blockOwnerDeletion: true }]);
  });
});

describe('buildLauncherPod: security (restricted Pod Security Standard)', () => {
  const pod = podOf();

  test('pod: non-root 107, fsGroup 107, the launcher\'s Localhost seccomp profile (passt), only the safe port sysctl', () => {
    expect(pod.spec?.securityContext).toEqual({
      runAsNonRoot: true,
      runAsUser: 107,
      runAsGroup: 107,
      fsGroup: 107,
      seccompProfile: { type: 'Localhost', localhostProfile: 'ferry/launcher.json' },
      sysctls: [{ name: 'net.ipv4.ip_unprivileged_port_start', value: '0' }],
    });
  });

  test('compute container: no escalation, drop ALL, no capability added', () => {
    expect(compute(pod).securityContext).toEqual({
      allowPrivilegeEscalation: false,
      runAsNonRoot: true,
      capabilities: { drop: ['ALL'] },
      seccompProfile: { type: 'Localhost', localhostProfile: 'ferry/launcher.json' },
    });
    expect(compute(pod).securityContext?.privileged).toBeUndefined();
  });

  test('nothing the restricted profile forbids', () => {
    expect(pod.spec?.hostNetwork).toBeUndefined();
    expect(pod.spec?.hostPID).toBeUndefined();
    expect(pod.spec?.volumes?.filter((v) => v.hostPath)).toEqual([]);
    expect(pod.spec?.automountServiceAccountToken).toBe(false);
    expect(pod.spec?.enableServiceLinks).toBe(false);
    expect(pod.spec?.restartPolicy).toBe('Never');
  });
});

describe('buildLauncherPod: storage', () => {
  const spec = withDomain(
    { memory: { guest: '1Gi' } },
    {
      volumes: [
        { name: 'rootdisk', persistentVolumeClaim: { claimName: 'disk' } },
        { name: 'shared', persistentVolumeClaim: { claimName: 'golden', readOnly: true } },
        { name: 'data', dataVolume: { name: 'data-dv' } },
        { name: 'raw', persistentVolumeClaim: { claimName: 'lvm' } },
        { name: 'scratch', emptyDisk: { capacity: '1Gi' } },
        { name: 'ci', cloudInitNoCloud: { secretRef: { name: 'ud' }, networkDataSecretRef: { name: 'nd' } } },
      ],
    },
  );
  const claims = new Map<string, ClaimInfo>([
    ['disk', { block: false }],
    ['golden', { block: false }],
    ['data-dv', { block: false }],
    ['lvm', { block: true }],
  ]);
  const pod = podOf({ spec }, claims);

  test('pod volumes: PVCs (a dataVolume is its PVC), cloud-init secrets, scratch emptyDirs', () => {
    expect(pod.spec?.volumes).toEqual([
      { name: 'rootdisk', persistentVolumeClaim: { claimName: 'disk', readOnly: false } },
      { name: 'shared', persistentVolumeClaim: { claimName: 'golden', readOnly: true } },
      { name: 'data', persistentVolumeClaim: { claimName: 'data-dv', readOnly: false } },
      { name: 'raw', persistentVolumeClaim: { claimName: 'lvm', readOnly: false } },
      { name: 'ci-udata', secret: { secretName: 'ud' } },
      { name: 'ci-ndata', secret: { secretName: 'nd' } },
      { name: 'private', emptyDir: {} },
      { name: 'ephemeral-disks', emptyDir: {} },
      { name: 'libvirt-runtime', emptyDir: {} },
    ]);
  });

  test.each([
    ['rootdisk', '/var/run/kubevirt-private/vmi-disks/rootdisk', false],
    ['shared', '/var/run/kubevirt-private/vmi-disks/shared', true],
    ['data', '/var/run/kubevirt-private/vmi-disks/data', false],
    ['ci-udata', cloudInitSecretDir('ci', 'user'), true],
    ['ci-ndata', cloudInitSecretDir('ci', 'network'), true],
  ])('volume %s mounted at %s (readOnly %s)', (name, mountPath, readOnly) => {
    expect(compute(pod).volumeMounts?.filter((m) => m.name === name)).toEqual([{ name, mountPath, readOnly }]);
  });

  test('the cloud-init secret directories are the launcher contract', () => {
    expect(cloudInitSecretDir('ci', 'user')).toBe('/var/run/kubevirt-private/secret/ci');
    expect(cloudInitSecretDir('ci', 'network')).toBe('/var/run/kubevirt-private/secret/ci-ndata');
  });

  test('a block PVC is a device at /dev/<volume>, not a mount', () => {
    expect(compute(pod).volumeDevices).toEqual([{ name: 'raw', devicePath: '/dev/raw' }]);
    expect(compute(pod).volumeMounts?.some((m) => m.name === 'raw')).toBe(false);
  });

  test('no block PVC → no volumeDevices', () => {
    expect(compute(podOf()).volumeDevices).toBeUndefined();
  });

  const duplicates = (p: V1Pod): string[] => (p.spec?.volumes ?? []).map((v) => v.name).filter((n, i, all) => all.indexOf(n) !== i);

  test('every mount and device names a pod volume, each pod volume name once', () => {
    const names = (pod.spec?.volumes ?? []).map((v) => v.name);
    expect(duplicates(pod)).toEqual([]);
    for (const m of [...(compute(pod).volumeMounts ?? []), ...(compute(pod).volumeDevices ?? [])]) expect(names).toContain(m.name);
  });

  // The apiserver refuses a pod with two volumes of one name, so such a VMI would never start and
  // never say why: either the spec is refused up front or the pod's volume names stay unique.
  test.each([
    ['a PVC volume named like a scratch emptyDir', [{ name: 'private', persistentVolumeClaim: { claimName: 'disk' } }]],
    ['a PVC volume named like a cloud-init secret volume', [{ name: 'ci-udata', persistentVolumeClaim: { claimName: 'disk' } }, { name: 'ci', cloudInitNoCloud: { secretRef: { name: 'ud' } } }]],
  ])('%s: refused by validation or given a unique pod volume', (_, volumes) => {
    const vmi = vmiOf({ spec: withDomain({ memory: { guest: '1Gi' } }, { volumes }) });
    const refused = validateVmiSpec(vmi.spec).length > 0;
    expect(refused ? [] : duplicates(buildLauncherPod(vmi, claims, LAUNCHER_CONFIG))).toEqual([]);
  });
});

describe('buildLauncherPod: the compute container', () => {
  const spec = withDomain(
    { memory: { guest: '1Gi' }, devices: { interfaces: [{ name: 'default', masquerade: {}, ports: [{ name: 'ssh', port: 22 }, { port: 53, protocol: 'UDP' }] }] } },
    { networks: [{ name: 'default', pod: {} }] },
  );

  test('ports: the interface ports, then the launcher status port', () => {
    expect(compute(podOf({ spec })).ports).toEqual([
      { name: 'ssh', containerPort: 22, protocol: 'TCP' },
      { containerPort: 53, protocol: 'UDP' },
      { name: 'launcher-status', containerPort: 8443, protocol: 'TCP' },
    ]);
  });

  test('readiness: GET /readyz on the status port', () => {
    expect(compute(podOf()).readinessProbe?.httpGet).toEqual({ path: '/readyz', port: 8443 });
  });

  test.each<[string, LauncherConfig, string[]]>([
    ['emulation allowed', LAUNCHER_CONFIG, ['launcher', '--status-port', '8443', '--accel', 'auto', '--allow-emulation', '--pod-network', 'passt']],
    ['KVM only', KVM, ['launcher', '--status-port', '8443', '--accel', 'auto', '--pod-network', 'passt']],
  ])('image and arguments, %s', (_, config, args) => {
    const c = compute(podOf({}, NO_CLAIMS, config));
    expect(c.name).toBe('compute');
    expect(c.image).toBe(config.launcherImage);
    expect(c.imagePullPolicy).toBe(config.launcherPullPolicy);
    expect(c.args).toEqual(args);
  });

  test('FERRY_VMI round-trips to the VMI identity and spec, nothing the controller owns', () => {
    const vmi = vmiOf({ labels: { app: 'web' }, annotations: { secret: 'not for the launcher' }, finalizers: ['x'], status: { phase: 'Scheduling' } });
    const env = compute(buildLauncherPod(vmi, NO_CLAIMS, LAUNCHER_CONFIG)).env?.find((e) => e.name === 'FERRY_VMI');
    const decoded = JSON.parse(env?.value ?? 'null') as VirtualMachineInstance;
    expect(decoded).toEqual(launcherVmi(vmi));
    expect(decoded).toEqual({
      apiVersion: 'kubevirt.io/v1',
      kind: 'VirtualMachineInstance',
      metadata: { name: VM_NAME, namespace: VM_NS, uid: VMI_UID, labels: { app: 'web' } },
      spec: vmi.spec,
    });
  });

  test('POD_NAME from the downward API', () => {
    expect(compute(podOf()).env?.find((e) => e.name === 'POD_NAME')).toEqual({ name: 'POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } });
  });
});

describe('launcherResources', () => {
  const mi = (bytes: number): string => `${Math.ceil(bytes / MiB)}Mi`;

  test.each<[string, VmiSpec['domain'], LauncherConfig, (overhead: number) => { requests: Record<string, string>; limits: Record<string, string> }]>([
    ['guest only, emulation', { memory: { guest: '128Mi' } }, LAUNCHER_CONFIG, (o) => ({ requests: { memory: mi(128 * MiB + o), cpu: '100m' }, limits: {} })],
    ['guest only, KVM', { memory: { guest: '128Mi' } }, KVM, (o) => ({ requests: { memory: mi(128 * MiB + o), cpu: '100m' }, limits: { 'devices.kubevirt.io/kvm': '1' } })],
    ['a topology of 4 vCPUs', { memory: { guest: '1Gi' }, cpu: { sockets: 2, cores: 2 } }, LAUNCHER_CONFIG, (o) => ({ requests: { memory: mi(1024 * MiB + o), cpu: '400m' }, limits: {} })],
    ['a CPU request of 2 → 2 sockets', { memory: { guest: '1Gi' }, resources: { requests: { cpu: '2' } } }, LAUNCHER_CONFIG, (o) => ({ requests: { memory: mi(1024 * MiB + o), cpu: '2' }, limits: {} })],
    [
      'requests and limits',
      { resources: { requests: { memory: '1Gi', cpu: '1' }, limits: { memory: '2Gi', cpu: '2' } } },
      KVM,
      (o) => ({ requests: { memory: mi(1024 * MiB + o), cpu: '1' }, limits: { memory: mi(2048 * MiB + o), cpu: '2', 'devices.kubevirt.io/kvm': '1' } }),
    ],
    ['a request above the guest memory', { memory: { guest: '1Gi' }, resources: { requests: { memory: '3Gi' } } }, LAUNCHER_CONFIG, (o) => ({ requests: { memory: mi(3072 * MiB + o), cpu: '100m' }, limits: {} })],
    [
      'overcommitGuestOverhead: the request is the guest memory alone',
      { resources: { requests: { memory: '1Gi' }, limits: { memory: '1Gi' }, overcommitGuestOverhead: true } },
      LAUNCHER_CONFIG,
      (o) => ({ requests: { memory: '1024Mi', cpu: '100m' }, limits: { memory: mi(1024 * MiB + o) } }),
    ],
  ])('%s', (_, domain, config, expected) => {
    const vmi = vmiOf({ spec: vmiSpec({ domain }) });
    const overhead = memoryOverheadBytes(vmi.spec, { emulation: config.allowEmulation });
    const { requests, limits } = expected(overhead);
    expect(launcherResources(vmi, config)).toEqual({ requests, limits, overhead });
    const resources = compute(buildLauncherPod(vmi, NO_CLAIMS, config)).resources;
    expect(resources).toEqual({ requests, ...(Object.keys(limits).length > 0 ? { limits } : {}) });
  });

  test('allowing emulation reserves more (the TCG translation cache)', () => {
    const vmi = vmiOf();
    expect(launcherResources(vmi, LAUNCHER_CONFIG).overhead).toBe(memoryOverheadBytes(vmi.spec, { emulation: true }));
    expect(launcherResources(vmi, KVM).overhead).toBe(memoryOverheadBytes(vmi.spec, { emulation: false }));
    expect(launcherResources(vmi, LAUNCHER_CONFIG).overhead).toBeGreaterThan(launcherResources(vmi, KVM).overhead);
  });

  test('the overhead annotation is the overhead added to the request', () => {
    const vmi = vmiOf();
    const pod = buildLauncherPod(vmi, NO_CLAIMS, KVM);
    expect(Number(pod.metadata?.annotations?.['kubevirt.io/memory-overhead-bytes'])).toBe(launcherResources(vmi, KVM).overhead);
  });
});

describe('buildLauncherPod: scheduling', () => {
  const affinity = { nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'zone', operator: 'In', values: ['a'] }] }] } } };
  const tolerations = [{ key: 'dedicated', operator: 'Equal', value: 'vms', effect: 'NoSchedule' }];

  test('nodeSelector, affinity, tolerations, priority class and scheduler are passed through', () => {
    const pod = podOf({ spec: vmiSpec({ nodeSelector: { disk: 'ssd' }, affinity, tolerations, priorityClassName: 'vm-high', schedulerName: 'custom' }) });
    expect(pod.spec?.nodeSelector).toEqual({ disk: 'ssd' });
    expect(pod.spec?.affinity).toEqual(affinity);
    expect(pod.spec?.tolerations).toEqual(tolerations);
    expect(pod.spec?.priorityClassName).toBe('vm-high');
    expect(pod.spec?.schedulerName).toBe('custom');
  });

  test('none given → none set', () => {
    const spec = podOf().spec!;
    for (const key of ['nodeSelector', 'affinity', 'tolerations', 'priorityClassName', 'schedulerName', 'subdomain'] as const) expect(spec[key]).toBeUndefined();
  });

  test.each([
    [undefined, 60],
    [0, 30],
    [120, 150],
  ])('VMI grace %s s → pod grace %d s', (grace, expected) => {
    const pod = buildLauncherPod(makeVmi({ spec: vmiSpec(grace === undefined ? {} : { terminationGracePeriodSeconds: grace }) }), NO_CLAIMS, LAUNCHER_CONFIG);
    expect(pod.spec?.terminationGracePeriodSeconds).toBe(expected);
  });

  test.each<[string, Partial<VmiSpec>, string, string | undefined]>([
    ['web', {}, 'web', undefined],
    ['web.example', {}, 'web', undefined],
    ['web', { hostname: 'guest', subdomain: 'vms' }, 'guest', 'vms'],
  ])('VMI %s %j → hostname %s', (name, over, hostname, subdomain) => {
    const pod = podOf({ name, spec: vmiSpec(over) });
    expect(pod.spec?.hostname).toBe(hostname);
    expect(pod.spec?.subdomain).toBe(subdomain);
  });
});

describe('buildLauncherPod: the pod network forwards every port (passt), 22 included', () => {
  const withPorts = (ports: number[]): V1Pod =>
    podOf({ spec: withDomain({ memory: { guest: '128Mi' }, devices: { interfaces: [{ name: 'default', masquerade: {}, ports: ports.map((port) => ({ port })) }] } }, { networks: [{ name: 'default', pod: {} }] }) });
  const sysctl = [{ name: 'net.ipv4.ip_unprivileged_port_start', value: '0' }];

  test('a privileged port lets the non-root passt bind it through the safe sysctl, not a capability', () => {
    const pod = withPorts([22, 8080]);
    expect(pod.spec?.securityContext?.sysctls).toEqual(sysctl);
    expect(compute(pod).securityContext?.capabilities).toEqual({ drop: ['ALL'] });
  });

  test('the sysctl also when only unprivileged ports are declared: undeclared ones (22) are forwarded too', () => {
    expect(withPorts([8080]).spec?.securityContext?.sysctls).toEqual(sysctl);
  });

  test('the sysctl for the seed demo VMI: no interfaces declared, the default masquerade one added', () => {
    const pod = podOf({ spec: withDomain({ memory: { guest: '128Mi' } }) });
    expect(pod.spec?.securityContext?.sysctls).toEqual(sysctl);
  });

  test('no sysctl and RuntimeDefault seccomp without a pod interface (autoattachPodInterface: false): no passt to sandbox', () => {
    const pod = podOf({ spec: withDomain({ memory: { guest: '128Mi' }, devices: { autoattachPodInterface: false } }) });
    expect(pod.spec?.securityContext?.sysctls).toBeUndefined();
    expect(pod.spec?.securityContext?.seccompProfile).toEqual({ type: 'RuntimeDefault' });
    expect(compute(pod).securityContext?.seccompProfile).toEqual({ type: 'RuntimeDefault' });
  });

  test('the launcher profile is RuntimeDefault (containerd 1.6, caps dropped) plus exactly passt\'s sandbox calls', () => {
    const profile = JSON.parse(readFileSync(join(REPO_ROOT, 'launcher', 'seccomp-launcher.json'), 'utf8')) as { defaultAction: string; syscalls: { names: string[]; action: string; args?: unknown[] }[] };
    expect(profile.defaultAction).toBe('SCMP_ACT_ERRNO');
    const allowed = profile.syscalls.filter((r) => r.action === 'SCMP_ACT_ALLOW' && !r.args).flatMap((r) => r.names);
    expect(allowed).toEqual(expect.arrayContaining(['unshare', 'mount', 'umount2', 'pivot_root']));
    // Still not: what only CAP_SYS_ADMIN's part of RuntimeDefault adds beyond passt's needs.
    for (const name of ['setns', 'bpf', 'perf_event_open', 'open_by_handle_at', 'kexec_load', 'init_module', 'sethostname', 'fanotify_init']) expect(allowed).not.toContain(name);
    // clone keeps its namespace-flag mask (passt unshares; it does not clone into namespaces).
    expect(profile.syscalls.find((r) => r.names.includes('clone'))?.args).toEqual([{ index: 0, value: 2114060288, op: 'SCMP_CMP_MASKED_EQ' }]);
  });
});

describe('buildLauncherPod: disk.img sizing handed to the launcher', () => {
  const spec = (readOnly = false): VmiSpec =>
    withDomain({ memory: { guest: '128Mi' }, devices: { disks: [{ name: 'root' }, { name: 'data' }] } }, {
      volumes: [
        { name: 'root', persistentVolumeClaim: { claimName: 'root-pvc', readOnly } },
        { name: 'data', dataVolume: { name: 'data-dv' } },
      ],
    });

  test('each writable filesystem PVC gets --volume-size <volume>=<bytes>; block and unknown sizes get none', () => {
    const claims = new Map<string, ClaimInfo>([
      ['root-pvc', { block: false, capacityBytes: 10 * 1024 * MiB }],
      ['data-dv', { block: true, capacityBytes: 5 * 1024 * MiB }],
    ]);
    const args = compute(podOf({ spec: spec() }, claims)).args ?? [];
    expect(args).toContain(`root=${10 * 1024 * MiB}`);
    expect(args.filter((a) => a === '--volume-size')).toHaveLength(1);
    expect(compute(podOf({ spec: spec() }, new Map([['root-pvc', { block: false }]]))).args).not.toContain('--volume-size');
  });

  test('a read-only PVC is never grown', () => {
    const claims = new Map<string, ClaimInfo>([['root-pvc', { block: false, capacityBytes: MiB * 64 }]]);
    expect(compute(podOf({ spec: spec(true) }, claims)).args).not.toContain('--volume-size');
  });
});
