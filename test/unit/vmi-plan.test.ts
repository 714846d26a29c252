/** The VMI controller's plan: VMI + launcher pod + PVCs + launcher report → phase, conditions, actions (reference §1.4, §2.1). */

import { describe, expect, test } from '@jest/globals';
import type { V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';
import { buildLauncherPod, launcherPodName } from '../../controller/vm/launcher-pod.js';
import { type LauncherReport, planVmi, type VmiAction, type VmiPlan } from '../../controller/vm/vmi-plan.js';
import { Annotation } from '../../src/api/cdi.js';
import { FOREGROUND_FINALIZER, type VirtualMachineInstance, VmiPhase, type VmiStatus } from '../../src/api/kubevirt.js';
import { defaultVmiSpec } from '../../src/api/kubevirt-defaults.js';
import { LAUNCHER_CONFIG, makeVmi, makeVmPvc, VM_NS, vmiIn, type VmiOptions, vmiSpec } from './helpers.js';

const NOW = Date.parse('2024-05-01T12:00:00.000Z');
const iso = (ms: number): string => new Date(ms).toISOString();
const NODE = 'node-1';
const POD_IP = '10.244.1.7';
const POD_UID = 'pod-uid-1';

interface PodOptions {
  readonly phase?: string;
  readonly ready?: boolean;
  readonly deleting?: boolean;
  readonly scheduled?: { status: string; reason?: string; message?: string };
  readonly terminated?: string;
  readonly waiting?: { reason: string; message?: string };
  readonly noNode?: boolean;
}

/** The launcher pod of the default VMI in a pod phase. */
function makeLauncherPod(o: PodOptions = {}): V1Pod {
  const phase = o.phase ?? 'Pending';
  const started = phase !== 'Pending';
  const conditions = [
    ...(o.scheduled ? [{ type: 'PodScheduled', ...o.scheduled }] : started ? [{ type: 'PodScheduled', status: 'True' }] : []),
    ...(started ? [{ type: 'Ready', status: o.ready ? 'True' : 'False' }] : []),
  ];
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: launcherPodName(makeVmi()), namespace: VM_NS, uid: POD_UID, ...(o.deleting ? { deletionTimestamp: new Date(NOW - 1000) } : {}) },
    spec: { containers: [{ name: 'compute' }], ...(started && !o.noNode ? { nodeName: NODE } : {}) },
    status: {
      phase,
      conditions,
      ...(started ? { podIP: POD_IP, podIPs: [{ ip: POD_IP }] } : {}),
      ...(o.terminated !== undefined ? { containerStatuses: [{ name: 'compute', image: 'x', imageID: '', ready: false, restartCount: 0, state: { terminated: { exitCode: 1, message: o.terminated } } }] } : {}),
      ...(o.waiting !== undefined ? { containerStatuses: [{ name: 'compute', image: 'x', imageID: '', ready: false, restartCount: 0, state: { waiting: o.waiting } }] } : {}),
    },
  };
}

const READY_CLAIMS = new Map<string, V1PersistentVolumeClaim | undefined>([['disk', makeVmPvc('disk')]]);

interface Observed {
  readonly vmi?: VirtualMachineInstance;
  readonly pod?: V1Pod;
  readonly claims?: ReadonlyMap<string, V1PersistentVolumeClaim | undefined>;
  readonly report?: LauncherReport;
  readonly now?: number;
}

const WITH_FINALIZER: VmiOptions = { finalizers: [FOREGROUND_FINALIZER] };
/** A VMI that already carries the finalizer, in a phase. */
const vmiAt = (phase: VmiPhase | undefined, o: VmiOptions = {}): VirtualMachineInstance => vmiIn(phase, { ...WITH_FINALIZER, ...o });

function plan(o: Observed = {}): VmiPlan {
  return planVmi(
    { vmi: o.vmi ?? vmiAt(undefined), ...(o.pod ? { pod: o.pod } : {}), claims: o.claims ?? READY_CLAIMS, ...(o.report ? { report: o.report } : {}), now: o.now ?? NOW },
    LAUNCHER_CONFIG,
  );
}
const types = (p: VmiPlan): string[] => p.actions.map((a) => a.type);
const of = <T extends VmiAction['type']>(p: VmiPlan, type: T): Array<Extract<VmiAction, { type: T }>> => p.actions.filter((a): a is Extract<VmiAction, { type: T }> => a.type === type);
const statusOf = (p: VmiPlan): VmiStatus | undefined => of(p, 'patchStatus')[0]?.status;
/** Conditions without their timestamps. */
const conds = (s: VmiStatus | undefined) => (s?.conditions ?? []).map(({ type, status, reason }) => ({ type, status, ...(reason ? { reason } : {}) }));
/** The VMI after the plan's status patch. */
const applied = (vmi: VirtualMachineInstance, p: VmiPlan): VirtualMachineInstance => ({ ...vmi, status: statusOf(p) ?? vmi.status ?? {} });

describe('planVmi: finalizer', () => {
  test.each<[string, string[] | undefined, string[] | undefined]>([
    ['none → added', undefined, [FOREGROUND_FINALIZER]],
    ['others kept, ours appended', ['example.com/keep'], ['example.com/keep', FOREGROUND_FINALIZER]],
    ['already there → no action', [FOREGROUND_FINALIZER], undefined],
  ])('%s', (_, finalizers, expected) => {
    const p = plan({ vmi: makeVmi(finalizers ? { finalizers } : {}) });
    expect(of(p, 'setFinalizers').map((a) => a.finalizers)).toEqual(expected ? [expected] : []);
    if (expected) expect(types(p)[0]).toBe('setFinalizers');
  });
});

describe('planVmi: before the pod exists', () => {
  test('an invalid spec → Failed InvalidSpec, a warning event, no pod', () => {
    const spec = vmiSpec({ volumes: [{ name: 'rootdisk', containerDisk: { image: 'quay.io/containerdisks/fedora:40' } }] });
    const p = plan({ vmi: vmiAt(undefined, { spec }) });
    expect(types(p)).toEqual(['patchStatus', 'event']);
    const status = statusOf(p);
    expect(status?.phase).toBe('Failed');
    expect(status?.reason).toBe('InvalidSpec');
    expect(status?.conditions?.[0]).toEqual(expect.objectContaining({ type: 'Ready', status: 'False', reason: 'InvalidSpec', message: expect.stringMatching(/containerDisk is not supported/) }));
    const event = of(p, 'event')[0];
    expect(event).toEqual(expect.objectContaining({ eventType: 'Warning', reason: 'FailedCreate' }));
    expect(event?.message).toBe(status?.conditions?.[0]?.message);
  });

  test('an invalid spec joins all problems', () => {
    const spec = vmiSpec({ domain: { devices: { disks: [{ name: 'ghost' }] } } });
    const message = statusOf(plan({ vmi: vmiAt(undefined, { spec }) }))?.conditions?.[0]?.message ?? '';
    expect(message.split('; ')).toEqual(
      expect.arrayContaining([expect.stringMatching(/disks\[0\] \(ghost\) has no volume/), expect.stringMatching(/memory\.guest or .* is required/)]),
    );
  });

  const importing = (annotations: Record<string, string>) => new Map([['disk', makeVmPvc('disk', { annotations })]]);
  test.each<[string, ReadonlyMap<string, V1PersistentVolumeClaim | undefined>, string | undefined, string | undefined]>([
    ['the PVC is missing', new Map([['disk', undefined]]), 'PVCNotFound', `PVC ${VM_NS}/disk does not exist`],
    ['the PVC was never looked up', new Map(), 'PVCNotFound', `PVC ${VM_NS}/disk does not exist`],
    ['CDI has not started importing', importing({ [Annotation.Endpoint]: 'https://example.com/disk.img' }), 'DataVolumeNotReady', 'PVC disk is still being imported'],
    ['CDI is importing', importing({ [Annotation.Endpoint]: 'https://example.com/disk.img', [Annotation.PodPhase]: 'Running' }), 'DataVolumeNotReady', 'PVC disk is still being imported'],
    ['the import failed', importing({ [Annotation.Endpoint]: 'https://example.com/disk.img', [Annotation.PodPhase]: 'Failed' }), 'DataVolumeNotReady', 'PVC disk is still being imported'],
    ['a legacy import is running', importing({ [Annotation.LegacyEndpoint]: 'https://example.com/disk.img', [Annotation.PodPhase]: 'Pending' }), 'DataVolumeNotReady', 'PVC disk is still being imported'],
    ['the import succeeded', importing({ [Annotation.Endpoint]: 'https://example.com/disk.img', [Annotation.PodPhase]: 'Succeeded' }), undefined, undefined],
    ['a plain PVC', READY_CLAIMS, undefined, undefined],
  ])('%s', (_, claims, reason, message) => {
    const p = plan({ claims });
    if (reason) {
      expect(types(p)).toEqual(['patchStatus']);
      expect(statusOf(p)?.phase).toBe('Pending');
      expect(conds(statusOf(p))).toEqual([
        { type: 'Ready', status: 'False', reason: 'PodNotExists' },
        { type: 'PodScheduled', status: 'False', reason },
      ]);
      expect(statusOf(p)?.conditions?.[1]?.message).toBe(message);
    } else {
      expect(types(p)).toEqual(['createPod', 'patchStatus', 'event']);
    }
  });

  test('a dataVolume volume waits for the PVC of the same name', () => {
    const spec = vmiSpec({ volumes: [{ name: 'rootdisk', dataVolume: { name: 'fedora' } }] });
    expect(conds(statusOf(plan({ vmi: vmiAt(undefined, { spec }), claims: new Map() })))[1]).toEqual({ type: 'PodScheduled', status: 'False', reason: 'PVCNotFound' });
    expect(types(plan({ vmi: vmiAt(undefined, { spec }), claims: new Map([['fedora', makeVmPvc('fedora')]]) }))).toContain('createPod');
  });

  test('volumes without a PVC need none', () => {
    const spec = vmiSpec({ volumes: [{ name: 'rootdisk', emptyDisk: { capacity: '1Gi' } }, { name: 'ci', cloudInitNoCloud: { userData: '#cloud-config' } }] });
    expect(types(plan({ vmi: vmiAt(undefined, { spec }), claims: new Map() }))).toEqual(['createPod', 'patchStatus', 'event']);
  });

  test('ready PVCs → the launcher pod of the defaulted VMI, phase Scheduling', () => {
    const vmi = vmiAt(undefined);
    const p = plan({ vmi });
    const pod = of(p, 'createPod')[0]?.pod;
    expect(pod).toEqual(buildLauncherPod({ ...vmi, spec: defaultVmiSpec(vmi.spec, vmi.metadata) }, new Map([['disk', { block: false, capacityBytes: 1024 * 1024 * 1024 }]]), LAUNCHER_CONFIG));
    expect(pod?.metadata?.name).toBe(launcherPodName(vmi));
    expect(statusOf(p)).toEqual({
      phase: 'Scheduling',
      conditions: [{ type: 'Ready', status: 'False', reason: 'GuestNotRunning', lastProbeTime: null, lastTransitionTime: iso(NOW) }],
      phaseTransitionTimestamps: [{ phase: 'Scheduling', phaseTransitionTimestamp: iso(NOW) }],
      machine: { type: 'q35' },
    });
    expect(of(p, 'event')).toEqual([{ type: 'event', eventType: 'Normal', reason: 'SuccessfulCreate', message: `Created virtual machine pod ${launcherPodName(vmi)}` }]);
  });

  test('a block PVC becomes a device in the pod', () => {
    const pod = of(plan({ claims: new Map([['disk', makeVmPvc('disk', { block: true })]]) }), 'createPod')[0]?.pod;
    expect(pod?.spec?.containers[0]?.volumeDevices).toEqual([{ name: 'rootdisk', devicePath: '/dev/rootdisk' }]);
  });

  test('a Pending VMI whose PVC appeared creates its pod', () => {
    const vmi = applied(vmiAt(undefined), plan({ claims: new Map() }));
    expect(vmi.status?.phase).toBe('Pending');
    const p = plan({ vmi });
    expect(types(p)).toEqual(['createPod', 'patchStatus', 'event']);
    expect(statusOf(p)?.phaseTransitionTimestamps?.map((t) => t.phase)).toEqual(['Pending', 'Scheduling']);
  });
});

describe('planVmi: following the launcher pod', () => {
  const UNSCHEDULABLE = { status: 'False', reason: 'Unschedulable', message: '0/3 nodes are available: 3 Insufficient devices.kubevirt.io/kvm.' };
  test.each<[string, VmiPhase, PodOptions, LauncherReport | undefined, VmiPhase, Array<Record<string, string>>, string | undefined]>([
    ['pod Pending', VmiPhase.Scheduling, { phase: 'Pending' }, undefined, VmiPhase.Scheduling, [{ type: 'Ready', status: 'False', reason: 'GuestNotRunning' }], undefined],
    [
      'pod Pending and unschedulable → PodScheduled mirrored',
      VmiPhase.Scheduling,
      { phase: 'Pending', scheduled: UNSCHEDULABLE },
      undefined,
      VmiPhase.Scheduling,
      [{ type: 'Ready', status: 'False', reason: 'GuestNotRunning' }, { type: 'PodScheduled', status: 'False', reason: 'Unschedulable' }],
      undefined,
    ],
    ['pod Pending and scheduled → no PodScheduled', VmiPhase.Scheduling, { phase: 'Pending', scheduled: { status: 'True' } }, undefined, VmiPhase.Scheduling, [{ type: 'Ready', status: 'False', reason: 'GuestNotRunning' }], undefined],
    ['pod Pending, container creating', VmiPhase.Scheduling, { phase: 'Pending', scheduled: { status: 'True' }, waiting: { reason: 'ContainerCreating' } }, undefined, VmiPhase.Scheduling, [{ type: 'Ready', status: 'False', reason: 'GuestNotRunning' }], undefined],
    ['pod Pending, seccomp profile missing → Ready says CreateContainerError', VmiPhase.Scheduling, { phase: 'Pending', scheduled: { status: 'True' }, waiting: { reason: 'CreateContainerError', message: 'failed to generate security options: cannot load seccomp profile' } }, undefined, VmiPhase.Scheduling, [{ type: 'Ready', status: 'False', reason: 'CreateContainerError' }], undefined],
    ['pod Pending, image not on the node', VmiPhase.Scheduling, { phase: 'Pending', scheduled: { status: 'True' }, waiting: { reason: 'ErrImageNeverPull' } }, undefined, VmiPhase.Scheduling, [{ type: 'Ready', status: 'False', reason: 'ErrImageNeverPull' }], undefined],
    ['a Pending pod being deleted while its container waits', VmiPhase.Scheduling, { phase: 'Pending', deleting: true, waiting: { reason: 'CreateContainerError' } }, undefined, VmiPhase.Scheduling, [{ type: 'Ready', status: 'False', reason: 'PodTerminating' }], undefined],
    ['pod Running, not ready', VmiPhase.Scheduling, { phase: 'Running' }, undefined, VmiPhase.Scheduled, [{ type: 'Ready', status: 'False', reason: 'GuestNotRunning' }], undefined],
    ['pod Running + Ready', VmiPhase.Scheduled, { phase: 'Running', ready: true }, undefined, VmiPhase.Running, [{ type: 'Ready', status: 'True' }], 'Started'],
    ['pod Running + Ready straight from Scheduling', VmiPhase.Scheduling, { phase: 'Running', ready: true }, undefined, VmiPhase.Running, [{ type: 'Ready', status: 'True' }], 'Started'],
    [
      'pod Running + Ready under TCG',
      VmiPhase.Scheduled,
      { phase: 'Running', ready: true },
      { accel: 'tcg' },
      VmiPhase.Running,
      [{ type: 'Ready', status: 'True' }, { type: 'SoftwareEmulation', status: 'True', reason: 'NoKVM' }],
      'Started',
    ],
    ['pod Running + Ready under KVM', VmiPhase.Scheduled, { phase: 'Running', ready: true }, { accel: 'kvm' }, VmiPhase.Running, [{ type: 'Ready', status: 'True' }], 'Started'],
    [
      'pod Running, not ready, under TCG',
      VmiPhase.Scheduled,
      { phase: 'Running' },
      { accel: 'tcg' },
      VmiPhase.Scheduled,
      [{ type: 'Ready', status: 'False', reason: 'GuestNotRunning' }, { type: 'SoftwareEmulation', status: 'True', reason: 'NoKVM' }],
      undefined,
    ],
    ['a Running guest whose pod lost readiness stays Running', VmiPhase.Running, { phase: 'Running' }, undefined, VmiPhase.Running, [{ type: 'Ready', status: 'False', reason: 'GuestNotRunning' }], undefined],
    ['a Running guest whose pod is terminating', VmiPhase.Running, { phase: 'Running', ready: true, deleting: true }, undefined, VmiPhase.Running, [{ type: 'Ready', status: 'False', reason: 'PodTerminating' }], undefined],
    ['a Pending pod being deleted', VmiPhase.Scheduling, { phase: 'Pending', deleting: true }, undefined, VmiPhase.Scheduling, [{ type: 'Ready', status: 'False', reason: 'PodTerminating' }], undefined],
    ['pod Succeeded', VmiPhase.Running, { phase: 'Succeeded' }, undefined, VmiPhase.Succeeded, [{ type: 'Ready', status: 'False', reason: 'GuestNotRunning' }], 'Stopped'],
    ['pod Failed with a report', VmiPhase.Running, { phase: 'Failed', terminated: 'raw text' }, { phase: 'Failed', reason: 'NoKvm', message: '/dev/kvm is missing' }, VmiPhase.Failed, [{ type: 'Ready', status: 'False', reason: 'NoKvm' }], 'Stopped'],
    ['pod Failed without a report', VmiPhase.Scheduled, { phase: 'Failed', terminated: 'qemu crashed' }, undefined, VmiPhase.Failed, [{ type: 'Ready', status: 'False', reason: 'LauncherFailed' }], 'Stopped'],
  ])('%s → %s', (_, before, podOptions, report, phase, conditions, eventReason) => {
    const p = plan({ vmi: vmiAt(before), pod: makeLauncherPod(podOptions), ...(report ? { report } : {}) });
    const status = statusOf(p);
    expect(status?.phase).toBe(phase);
    expect(conds(status)).toEqual(conditions);
    expect(of(p, 'createPod')).toEqual([]);
    expect(of(p, 'event').map((e) => e.reason)).toEqual(eventReason ? [eventReason] : []);
  });

  test('a launcher container that cannot start: its message (with the container) in Ready, no event, and none again while it stays so', () => {
    const pod = makeLauncherPod({ phase: 'Pending', scheduled: { status: 'True' }, waiting: { reason: 'CreateContainerError', message: 'cannot load seccomp profile "/var/lib/kubelet/seccomp/ferry/launcher.json"' } });
    const first = plan({ vmi: vmiAt(VmiPhase.Scheduling), pod });
    const ready = statusOf(first)?.conditions?.find((c) => c.type === 'Ready');
    expect(ready).toMatchObject({ status: 'False', reason: 'CreateContainerError', message: 'container compute: cannot load seccomp profile "/var/lib/kubelet/seccomp/ferry/launcher.json"' });
    expect(of(first, 'event')).toEqual([]);
    expect(of(plan({ vmi: applied(vmiAt(VmiPhase.Scheduling), first), pod }), 'patchStatus')).toEqual([]);
  });

  test('Running + Ready: node, addresses, active pod, no reason', () => {
    const vmi = vmiAt(VmiPhase.Scheduled, { status: { phase: VmiPhase.Scheduled, reason: 'stale' } });
    const status = statusOf(plan({ vmi, pod: makeLauncherPod({ phase: 'Running', ready: true }) }));
    expect(status?.nodeName).toBe(NODE);
    expect(status?.interfaces).toEqual([{ name: 'default', ipAddress: POD_IP, ipAddresses: [POD_IP], infoSource: 'pod' }]);
    expect(status?.activePods).toEqual({ [POD_UID]: NODE });
    expect(status?.reason).toBeUndefined();
    expect(status?.conditions?.[0]).toEqual({ type: 'Ready', status: 'True', lastProbeTime: null, lastTransitionTime: iso(NOW) });
  });

  test('the interface name is the declared one', () => {
    const spec = vmiSpec({ networks: [{ name: 'net', pod: {} }], domain: { memory: { guest: '1Gi' }, devices: { interfaces: [{ name: 'net', masquerade: {} }] } } });
    const status = statusOf(plan({ vmi: vmiAt(VmiPhase.Scheduled, { spec }), pod: makeLauncherPod({ phase: 'Running', ready: true }) }));
    expect(status?.interfaces?.[0]?.name).toBe('net');
  });

  test.each<[string, PodOptions, LauncherReport | undefined, { podIP: string } | undefined]>([
    ['Running, no report yet → scrape', { phase: 'Running', ready: true }, undefined, { podIP: POD_IP }],
    ['Running, not ready, no report → scrape', { phase: 'Running' }, undefined, { podIP: POD_IP }],
    ['Running, report with accel → none', { phase: 'Running', ready: true }, { accel: 'kvm' }, undefined],
    ['Pending → none', { phase: 'Pending' }, undefined, undefined],
    ['Succeeded → none', { phase: 'Succeeded' }, undefined, undefined],
  ])('scrape: %s', (_, podOptions, report, scrape) => {
    expect(plan({ vmi: vmiAt(VmiPhase.Scheduled), pod: makeLauncherPod(podOptions), ...(report ? { report } : {}) }).scrape).toEqual(scrape);
  });

  test.each<[string, PodOptions, LauncherReport | undefined, string, string]>([
    ['the report wins', { phase: 'Failed', terminated: 'raw' }, { phase: 'Failed', reason: 'ConvertFailed', message: 'the domain failed to start' }, 'ConvertFailed', 'the domain failed to start'],
    ['the termination message', { phase: 'Failed', terminated: 'qemu: terminating on signal 9' }, undefined, 'LauncherFailed', 'qemu: terminating on signal 9'],
    ['nothing at all', { phase: 'Failed' }, undefined, 'LauncherFailed', 'the launcher pod failed'],
  ])('pod Failed, %s → reason and message', (_, podOptions, report, reason, message) => {
    const p = plan({ vmi: vmiAt(VmiPhase.Running), pod: makeLauncherPod(podOptions), ...(report ? { report } : {}) });
    expect(statusOf(p)?.reason).toBe(reason);
    expect(statusOf(p)?.conditions?.[0]?.message).toBe(message);
    expect(of(p, 'event')[0]).toEqual({ type: 'event', eventType: 'Warning', reason: 'Stopped', message: `The virtual machine failed: ${message}` });
  });

  test('a long failure message is capped', () => {
    const p = plan({ vmi: vmiAt(VmiPhase.Running), pod: makeLauncherPod({ phase: 'Failed' }), report: { phase: 'Failed', reason: 'X', message: 'm'.repeat(5000) } });
    expect(statusOf(p)?.conditions?.[0]?.message).toHaveLength(1024);
    expect(of(p, 'event')[0]?.message.length).toBeLessThanOrEqual(600);
  });

  test.each([VmiPhase.Scheduling, VmiPhase.Scheduled, VmiPhase.Running])('the pod gone under a %s VMI → Failed PodNotExists, no new pod', (before) => {
    const p = plan({ vmi: vmiAt(before) });
    expect(types(p)).toEqual(['patchStatus', 'event']);
    expect(statusOf(p)?.phase).toBe('Failed');
    expect(statusOf(p)?.reason).toBe('PodNotExists');
    expect(conds(statusOf(p))).toEqual([{ type: 'Ready', status: 'False', reason: 'PodNotExists' }]);
    expect(of(p, 'event')[0]).toEqual(expect.objectContaining({ eventType: 'Warning', reason: 'Stopped' }));
    // Terminal: the next round does nothing but let the finalizer go.
    expect(types(plan({ vmi: applied(vmiAt(before), p) }))).toEqual(['setFinalizers']);
  });
});

describe('planVmi: finished VMIs', () => {
  test.each<[string, VmiPhase, boolean, string[] | undefined, string[]]>([
    ['Succeeded, pod gone → finalizer released, no pod', VmiPhase.Succeeded, false, [FOREGROUND_FINALIZER, 'x/keep'], ['setFinalizers']],
    ['Failed, pod gone → finalizer released, no pod', VmiPhase.Failed, false, [FOREGROUND_FINALIZER], ['setFinalizers']],
    ['Failed, pod gone, no finalizer → nothing', VmiPhase.Failed, false, undefined, []],
    ['Succeeded, pod kept → nothing', VmiPhase.Succeeded, true, [FOREGROUND_FINALIZER], []],
    ['Failed, pod kept, no finalizer → nothing (not re-added)', VmiPhase.Failed, true, undefined, []],
  ])('%s', (_, phase, withPod, finalizers, actions) => {
    const vmi = vmiIn(phase, finalizers ? { finalizers } : {});
    const p = plan({ vmi, ...(withPod ? { pod: makeLauncherPod({ phase: 'Succeeded' }) } : {}) });
    expect(types(p)).toEqual(actions);
    if (actions.length > 0) expect(of(p, 'setFinalizers')[0]?.finalizers).toEqual((finalizers ?? []).filter((f) => f !== FOREGROUND_FINALIZER));
  });
});

describe('planVmi: deletion', () => {
  test.each<[string, PodOptions | undefined, string[] | undefined, VmiAction[]]>([
    ['the pod is deleted first', { phase: 'Running', ready: true }, [FOREGROUND_FINALIZER], [{ type: 'deletePod', name: launcherPodName(makeVmi()) }]],
    ['a finished pod is deleted too', { phase: 'Succeeded' }, [FOREGROUND_FINALIZER], [{ type: 'deletePod', name: launcherPodName(makeVmi()) }]],
    ['a pod already terminating → wait', { phase: 'Running', deleting: true }, [FOREGROUND_FINALIZER], []],
    ['the pod gone → the finalizer goes, others stay', undefined, ['a/first', FOREGROUND_FINALIZER, 'b/last'], [{ type: 'setFinalizers', finalizers: ['a/first', 'b/last'] }]],
    ['the pod and the finalizer gone → nothing', undefined, ['a/first'], []],
  ])('%s', (_, podOptions, finalizers, actions) => {
    const vmi = vmiIn(VmiPhase.Running, { deleting: true, ...(finalizers ? { finalizers } : {}) });
    expect(plan({ vmi, ...(podOptions ? { pod: makeLauncherPod(podOptions) } : {}) }).actions).toEqual(actions);
  });
});

describe('planVmi: status bookkeeping', () => {
  test('phaseTransitionTimestamps: one entry per phase change, kept across rounds', () => {
    let vmi = vmiAt(undefined);
    const rounds: Array<[number, V1Pod | undefined]> = [
      [NOW, undefined],
      [NOW + 1_000, makeLauncherPod({ phase: 'Pending' })],
      [NOW + 2_000, makeLauncherPod({ phase: 'Running' })],
      [NOW + 3_000, makeLauncherPod({ phase: 'Running' })],
      [NOW + 4_000, makeLauncherPod({ phase: 'Running', ready: true })],
      [NOW + 5_000, makeLauncherPod({ phase: 'Running', ready: true })],
      [NOW + 6_000, makeLauncherPod({ phase: 'Succeeded' })],
    ];
    for (const [now, pod] of rounds) vmi = applied(vmi, plan({ vmi, ...(pod ? { pod } : {}), now, report: { accel: 'kvm' } }));
    expect(vmi.status?.phaseTransitionTimestamps).toEqual([
      { phase: 'Scheduling', phaseTransitionTimestamp: iso(NOW) },
      { phase: 'Scheduled', phaseTransitionTimestamp: iso(NOW + 2_000) },
      { phase: 'Running', phaseTransitionTimestamp: iso(NOW + 4_000) },
      { phase: 'Succeeded', phaseTransitionTimestamp: iso(NOW + 6_000) },
    ]);
    expect(vmi.status?.phase).toBe('Succeeded');
  });

  test('a condition keeps its transition time while its status holds', () => {
    const first = applied(vmiAt(VmiPhase.Scheduling), plan({ vmi: vmiAt(VmiPhase.Scheduling), pod: makeLauncherPod({ phase: 'Running' }) }));
    const second = plan({ vmi: first, pod: makeLauncherPod({ phase: 'Running', ready: true }), now: NOW + 9_000 });
    const third = plan({ vmi: applied(first, second), pod: makeLauncherPod({ phase: 'Running', ready: true, deleting: true }), now: NOW + 20_000 });
    expect(statusOf(second)?.conditions?.[0]?.lastTransitionTime).toBe(iso(NOW + 9_000));
    expect(statusOf(third)?.conditions?.[0]).toEqual(expect.objectContaining({ status: 'False', reason: 'PodTerminating', lastTransitionTime: iso(NOW + 20_000) }));
  });

  const scenarios: Array<[string, Observed]> = [
    ['invalid spec', { vmi: vmiAt(undefined, { spec: vmiSpec({ domain: {} }) }) }],
    ['PVC missing', { claims: new Map() }],
    ['PVC importing', { claims: new Map([['disk', makeVmPvc('disk', { annotations: { [Annotation.Endpoint]: 'http://x/d.img' } })]]) }],
    ['pod Pending, unschedulable', { vmi: vmiAt(VmiPhase.Scheduling), pod: makeLauncherPod({ phase: 'Pending', scheduled: { status: 'False', reason: 'Unschedulable', message: 'no' } }) }],
    ['pod Running', { vmi: vmiAt(VmiPhase.Scheduling), pod: makeLauncherPod({ phase: 'Running' }) }],
    ['pod Running + Ready under TCG', { vmi: vmiAt(VmiPhase.Scheduled), pod: makeLauncherPod({ phase: 'Running', ready: true }), report: { accel: 'tcg' } }],
    ['pod Succeeded', { vmi: vmiAt(VmiPhase.Running), pod: makeLauncherPod({ phase: 'Succeeded' }) }],
    ['pod Failed', { vmi: vmiAt(VmiPhase.Running), pod: makeLauncherPod({ phase: 'Failed', terminated: 'boom' }) }],
    ['pod gone', { vmi: vmiAt(VmiPhase.Running) }],
  ];

  test.each(scenarios)('%s: feeding the produced status back → no patchStatus, no event', (_, observed) => {
    const vmi = observed.vmi ?? vmiAt(undefined);
    const first = plan(observed);
    expect(statusOf(first)).toBeDefined();
    const again = plan({ ...observed, vmi: applied(vmi, first), now: NOW + 30_000 });
    expect(of(again, 'patchStatus')).toEqual([]);
    expect(of(again, 'event')).toEqual([]);
  });

  test('the plan leaves the VMI it was given alone', () => {
    const vmi = vmiAt(VmiPhase.Scheduled, { status: { phase: VmiPhase.Scheduled, phaseTransitionTimestamps: [{ phase: VmiPhase.Scheduled, phaseTransitionTimestamp: iso(NOW - 1) }] } });
    const copy = structuredClone(vmi);
    plan({ vmi, pod: makeLauncherPod({ phase: 'Running', ready: true }) });
    expect(vmi).toEqual(copy);
  });
});
