/** The VM controller's plan: run strategies, state-change requests, start backoff, status (reference §1.5). */

import { describe, expect, test } from '@jest/globals';
import {
  type Condition,
  RunStrategy,
  type StateChangeRequest,
  type VirtualMachine,
  type VirtualMachineInstance,
  VmiPhase,
  type VmStatus,
} from '../../src/api/kubevirt.js';
import { firmwareUuid } from '../../src/api/kubevirt-defaults.js';
import { DEFAULT_VM_CONFIG, planVm, startBackoffMs, type VmAction, type VmConfig, type VmPlan, vmiFromVm } from '../../controller/vm/vm-plan.js';
import { makeVm, type VmOptions, VM_NAME, VM_NS, VM_UID, VMI_UID, vmiIn, vmiSpec } from './helpers.js';

const NOW = Date.parse('2024-05-01T12:00:00.000Z');
const iso = (ms: number): string => new Date(ms).toISOString();
const cfg = DEFAULT_VM_CONFIG;

const plan = (vm: VirtualMachine, vmi?: VirtualMachineInstance, now = NOW, config: VmConfig = cfg): VmPlan => planVm({ vm, ...(vmi ? { vmi } : {}), now }, config);
const types = (p: VmPlan): string[] => p.actions.map((a) => a.type);
const of = <T extends VmAction['type']>(p: VmPlan, type: T): Array<Extract<VmAction, { type: T }>> => p.actions.filter((a): a is Extract<VmAction, { type: T }> => a.type === type);
/** The status the plan writes, or the VM's own when it writes none. */
const statusOf = (vm: VirtualMachine, p: VmPlan): VmStatus => of(p, 'patchVmStatus')[0]?.status ?? vm.status ?? {};
/** The VM after the plan's status patch. */
const applied = (vm: VirtualMachine, p: VmPlan): VirtualMachine => ({ ...vm, status: statusOf(vm, p) });

type State = 'absent' | 'Pending' | 'Running' | 'Succeeded' | 'Failed' | 'deleting';
const vmiFor = (state: State, uid = VMI_UID): VirtualMachineInstance | undefined =>
  state === 'absent' ? undefined : state === 'deleting' ? vmiIn(VmiPhase.Running, { uid, deleting: true }) : vmiIn(state, { uid });

const STRATEGIES: Record<string, VmOptions> = {
  Always: { runStrategy: RunStrategy.Always },
  Halted: { runStrategy: RunStrategy.Halted },
  Manual: { runStrategy: RunStrategy.Manual },
  RerunOnFailure: { runStrategy: RunStrategy.RerunOnFailure },
  Once: { runStrategy: RunStrategy.Once },
  'running: true': { running: true },
  'running: false': { running: false },
  'no field': {},
};

const CREATE = ['createVmi', 'event', 'patchVmStatus'];
const DELETE = ['deleteVmi', 'event', 'patchVmStatus'];
const NOTHING = ['patchVmStatus'];

describe('planVm: run strategy × VMI state', () => {
  test.each<[string, State, string[], string, RunStrategy]>([
    ['Always', 'absent', CREATE, 'Stopped', 'Always'],
    ['Always', 'Pending', NOTHING, 'Starting', 'Always'],
    ['Always', 'Running', NOTHING, 'Running', 'Always'],
    ['Always', 'Succeeded', DELETE, 'Stopped', 'Always'],
    ['Always', 'Failed', DELETE, 'Stopped', 'Always'],
    ['Always', 'deleting', NOTHING, 'Stopping', 'Always'],
    ['Halted', 'absent', NOTHING, 'Stopped', 'Halted'],
    ['Halted', 'Pending', DELETE, 'Starting', 'Halted'],
    ['Halted', 'Running', DELETE, 'Running', 'Halted'],
    ['Halted', 'Succeeded', DELETE, 'Stopped', 'Halted'],
    ['Halted', 'Failed', DELETE, 'Stopped', 'Halted'],
    ['Halted', 'deleting', NOTHING, 'Stopping', 'Halted'],
    ['Manual', 'absent', NOTHING, 'Stopped', 'Manual'],
    ['Manual', 'Pending', NOTHING, 'Starting', 'Manual'],
    ['Manual', 'Running', NOTHING, 'Running', 'Manual'],
    ['Manual', 'Succeeded', NOTHING, 'Stopped', 'Manual'],
    ['Manual', 'Failed', NOTHING, 'Stopped', 'Manual'],
    ['Manual', 'deleting', NOTHING, 'Stopping', 'Manual'],
    ['RerunOnFailure', 'absent', CREATE, 'Stopped', 'RerunOnFailure'],
    ['RerunOnFailure', 'Pending', NOTHING, 'Starting', 'RerunOnFailure'],
    ['RerunOnFailure', 'Running', NOTHING, 'Running', 'RerunOnFailure'],
    ['RerunOnFailure', 'Succeeded', NOTHING, 'Stopped', 'RerunOnFailure'],
    ['RerunOnFailure', 'Failed', DELETE, 'Stopped', 'RerunOnFailure'],
    ['RerunOnFailure', 'deleting', NOTHING, 'Stopping', 'RerunOnFailure'],
    ['Once', 'absent', CREATE, 'Stopped', 'Once'],
    ['Once', 'Pending', NOTHING, 'Starting', 'Once'],
    ['Once', 'Running', NOTHING, 'Running', 'Once'],
    ['Once', 'Succeeded', NOTHING, 'Stopped', 'Once'],
    ['Once', 'Failed', NOTHING, 'Stopped', 'Once'],
    ['Once', 'deleting', NOTHING, 'Stopping', 'Once'],
    ['running: true', 'absent', CREATE, 'Stopped', 'Always'],
    ['running: true', 'Succeeded', DELETE, 'Stopped', 'Always'],
    ['running: true', 'Running', NOTHING, 'Running', 'Always'],
    ['running: false', 'absent', NOTHING, 'Stopped', 'Halted'],
    ['running: false', 'Running', DELETE, 'Running', 'Halted'],
    ['no field', 'Running', DELETE, 'Running', 'Halted'],
  ])('%s, VMI %s → %j, %s', (strategy, state, actions, printableStatus, effective) => {
    const vm = makeVm(STRATEGIES[strategy]);
    const vmi = vmiFor(state);
    const p = plan(vm, vmi);
    expect(types(p)).toEqual(actions);
    expect(p.requeueAfterMs).toBeUndefined();
    const status = statusOf(vm, p);
    expect(status.printableStatus).toBe(printableStatus);
    expect(status.runStrategy).toBe(effective);
    expect(status.created).toBe(state !== 'absent' && state !== 'deleting');
    expect(status.ready).toBe(false);
    if (actions.includes('deleteVmi')) expect(of(p, 'deleteVmi')).toEqual([{ type: 'deleteVmi', name: VM_NAME, uid: VMI_UID }]);
    if (actions.includes('createVmi')) expect(of(p, 'createVmi')[0]?.vmi).toEqual(vmiFromVm(vm));
  });

  test.each<[string, Partial<Condition>, string]>([
    ['PVC missing', { type: 'PodScheduled', status: 'False', reason: 'PVCNotFound' }, 'ErrorPvcNotFound'],
    ['PVC importing', { type: 'PodScheduled', status: 'False', reason: 'DataVolumeNotReady' }, 'Provisioning'],
    ['unschedulable', { type: 'PodScheduled', status: 'False', reason: 'Unschedulable' }, 'Starting'],
  ])('a Pending VMI with %s shows %s', (_, condition, printable) => {
    const vmi = vmiIn(VmiPhase.Pending, { status: { conditions: [condition as Condition] } });
    expect(statusOf(makeVm(STRATEGIES.Always), plan(makeVm(STRATEGIES.Always), vmi)).printableStatus).toBe(printable);
  });

  test.each([
    ['Running and Ready', VmiPhase.Running, 'True', true],
    ['Running, not Ready', VmiPhase.Running, 'False', false],
    ['Scheduled', VmiPhase.Scheduled, 'False', false],
  ])('a VMI %s → ready %s and a Ready condition', (_, phase, readyStatus, ready) => {
    const vmi = vmiIn(phase, { status: { conditions: [{ type: 'Ready', status: readyStatus as Condition['status'] }] } });
    const vm = makeVm(STRATEGIES.Always);
    const status = statusOf(vm, plan(vm, vmi));
    expect(status.ready).toBe(ready);
    expect(status.conditions).toEqual([
      { type: 'Ready', status: readyStatus, ...(ready ? {} : { reason: 'VMINotReady' }), lastProbeTime: null, lastTransitionTime: iso(NOW) },
    ]);
  });

  test('no VMI → Ready False VMINotExists', () => {
    const vm = makeVm(STRATEGIES.Halted);
    expect(statusOf(vm, plan(vm)).conditions).toEqual([{ type: 'Ready', status: 'False', reason: 'VMINotExists', lastProbeTime: null, lastTransitionTime: iso(NOW) }]);
  });

  test('observedGeneration follows metadata.generation', () => {
    const vm = makeVm({ ...STRATEGIES.Halted, generation: 7 });
    expect(statusOf(vm, plan(vm)).observedGeneration).toBe(7);
  });
});

describe('planVm: state-change requests (Manual, RerunOnFailure)', () => {
  const STOP_OURS: StateChangeRequest = { action: 'Stop', uid: VMI_UID };
  const STOP_OTHER: StateChangeRequest = { action: 'Stop', uid: 'some-older-vmi' };
  const STOP_ANY: StateChangeRequest = { action: 'Stop' };
  const START: StateChangeRequest = { action: 'Start' };

  test.each<[string, RunStrategy, StateChangeRequest[], State, string[], StateChangeRequest[] | undefined]>([
    ['Stop for our VMI → delete it, keep the request until it is gone', RunStrategy.Manual, [STOP_OURS], 'Running', DELETE, [STOP_OURS]],
    ['Stop without uid → delete whatever runs', RunStrategy.Manual, [STOP_ANY], 'Running', DELETE, [STOP_ANY]],
    ['Stop for another VMI → dropped, nothing deleted', RunStrategy.Manual, [STOP_OTHER], 'Running', NOTHING, undefined],
    ['Stop with the VMI gone → dropped', RunStrategy.Manual, [STOP_OURS], 'absent', NOTHING, undefined],
    ['Stop while the VMI is being deleted → wait', RunStrategy.Manual, [STOP_OURS, START], 'deleting', NOTHING, [STOP_OURS, START]],
    ['Stop+Start with the VMI gone → only Start left', RunStrategy.Manual, [STOP_OURS, START], 'absent', NOTHING, [START]],
    ['Start with a Succeeded VMI → delete it first', RunStrategy.Manual, [START], 'Succeeded', DELETE, [START]],
    ['Start with a Failed VMI → delete it first', RunStrategy.Manual, [START], 'Failed', DELETE, [START]],
    ['Start when absent → create, request removed', RunStrategy.Manual, [START], 'absent', CREATE, undefined],
    ['Start while running → dropped', RunStrategy.Manual, [START], 'Running', NOTHING, undefined],
    ['RerunOnFailure: Start when absent → create', RunStrategy.RerunOnFailure, [START], 'absent', CREATE, undefined],
    ['RerunOnFailure: Stop for our VMI → delete', RunStrategy.RerunOnFailure, [STOP_OURS], 'Running', DELETE, [STOP_OURS]],
  ])('%s', (_, runStrategy, requests, state, actions, left) => {
    const vm = makeVm({ runStrategy, status: { stateChangeRequests: requests } });
    const p = plan(vm, vmiFor(state));
    expect(types(p)).toEqual(actions);
    expect(statusOf(vm, p).stateChangeRequests).toEqual(left);
  });

  test.each([RunStrategy.Always, RunStrategy.Halted, RunStrategy.Once])('%s ignores and clears requests', (runStrategy) => {
    const vm = makeVm({ runStrategy, status: { stateChangeRequests: [START] } });
    const p = plan(vm, vmiFor('Running'));
    expect(of(p, 'createVmi')).toEqual([]);
    expect(statusOf(vm, p).stateChangeRequests).toBeUndefined();
  });

  test('a full Manual restart (Stop+Start) walks through delete → wait → create', () => {
    let vm = makeVm({ runStrategy: RunStrategy.Manual, status: { stateChangeRequests: [STOP_OURS, START] } });
    const steps: Array<[VirtualMachineInstance | undefined, string[]]> = [
      [vmiFor('Running'), DELETE],
      [vmiFor('deleting'), NOTHING],
      [undefined, NOTHING],
      [undefined, CREATE],
    ];
    const seen = steps.map(([vmi]) => {
      const p = plan(vm, vmi);
      vm = applied(vm, p);
      return types(p);
    });
    expect(seen).toEqual(steps.map(([, actions]) => actions));
    expect(vm.status?.stateChangeRequests).toBeUndefined();
  });

  // `ferry vm stop` on RerunOnFailure sends a Stop request; KubeVirt then keeps the VM stopped (with
  // no VMI it only starts on a Start request or a run-strategy change, vm.go syncRunStrategy).
  test('RerunOnFailure: a VM stopped by a Stop request stays stopped', () => {
    let vm = makeVm({ runStrategy: RunStrategy.RerunOnFailure, status: { runStrategy: RunStrategy.RerunOnFailure, stateChangeRequests: [STOP_OURS] } });
    const rounds = [vmiFor('Running'), vmiFor('deleting'), undefined, undefined, undefined];
    const created = rounds.flatMap((vmi) => {
      const p = plan(vm, vmi);
      vm = applied(vm, p);
      return of(p, 'createVmi').map((a) => a.vmi.metadata.name);
    });
    expect(created).toEqual([]);
    expect(vm.status?.printableStatus).toBe('Stopped');
  });

  // KubeVirt only backs off automatic restarts (Always, RerunOnFailure); Manual starts on request.
  // Ferry drops the Start request without a VMI (vm-plan.ts: "a Start request is only cleared after
  // its VMI was created"), so the VM never starts.
  test('Manual: a Start request is honoured despite a start backoff left from another strategy', () => {
    const vm = makeVm({
      runStrategy: RunStrategy.Manual,
      status: { stateChangeRequests: [START], startFailure: { consecutiveFailCount: 2, lastFailedVMIUID: 'old', retryAfterTimestamp: iso(NOW + 60_000) } },
    });
    const p = plan(vm);
    expect({ actions: types(p), requests: statusOf(vm, p).stateChangeRequests }).toEqual({ actions: CREATE, requests: undefined });
  });
});

describe('planVm: start failures and backoff', () => {
  const failure = (count: number, uid: string, retryAt: number): VmStatus['startFailure'] => ({ consecutiveFailCount: count, lastFailedVMIUID: uid, retryAfterTimestamp: iso(retryAt) });

  test.each([
    [0, 10_000],
    [1, 10_000],
    [2, 20_000],
    [3, 40_000],
    [5, 160_000],
    [6, 300_000],
    [50, 300_000],
  ])('startBackoffMs(%d) = %d', (failures, ms) => {
    expect(startBackoffMs(failures, cfg)).toBe(ms);
  });

  test('startBackoffMs follows the config', () => {
    expect(startBackoffMs(3, { startBackoffMs: 1000, maxStartBackoffMs: 3000 })).toBe(3000);
    expect(startBackoffMs(2, { startBackoffMs: 1000, maxStartBackoffMs: 3000 })).toBe(2000);
  });

  test.each<[string, RunStrategy, VmStatus['startFailure'] | undefined, string, VmStatus['startFailure'] | undefined]>([
    ['first failure', RunStrategy.Always, undefined, 'vmi-a', failure(1, 'vmi-a', NOW + 10_000)],
    ['the same VMI again → counted once', RunStrategy.Always, failure(1, 'vmi-a', NOW - 5_000), 'vmi-a', failure(1, 'vmi-a', NOW - 5_000)],
    ['a second VMI → doubled', RunStrategy.Always, failure(1, 'vmi-a', NOW - 5_000), 'vmi-b', failure(2, 'vmi-b', NOW + 20_000)],
    ['the sixth → capped', RunStrategy.Always, failure(5, 'vmi-e', NOW - 5_000), 'vmi-f', failure(6, 'vmi-f', NOW + 300_000)],
    ['RerunOnFailure counts too', RunStrategy.RerunOnFailure, undefined, 'vmi-a', failure(1, 'vmi-a', NOW + 10_000)],
    ['Manual does not count', RunStrategy.Manual, undefined, 'vmi-a', undefined],
    ['Once does not count', RunStrategy.Once, undefined, 'vmi-a', undefined],
  ])('a Failed VMI: %s', (_, runStrategy, before, uid, after) => {
    const vm = makeVm({ runStrategy, status: before ? { startFailure: before } : {} });
    expect(statusOf(vm, plan(vm, vmiFor('Failed', uid))).startFailure).toEqual(after);
  });

  test('a Succeeded VMI is no failure', () => {
    const vm = makeVm(STRATEGIES.Always);
    expect(statusOf(vm, plan(vm, vmiFor('Succeeded'))).startFailure).toBeUndefined();
  });

  test.each([
    ['Always', RunStrategy.Always],
    ['RerunOnFailure', RunStrategy.RerunOnFailure],
  ])('%s: no VMI while backing off → CrashLoopBackOff, requeue at the retry time, no create', (_, runStrategy) => {
    const vm = makeVm({ runStrategy, status: { startFailure: failure(2, 'vmi-b', NOW + 15_000) } });
    const p = plan(vm);
    expect(types(p)).toEqual(['patchVmStatus']);
    expect(p.requeueAfterMs).toBe(15_000);
    expect(statusOf(vm, p).printableStatus).toBe('CrashLoopBackOff');
  });

  test('backoff expired → create again, failure count kept until the VMI runs', () => {
    const vm = makeVm({ runStrategy: RunStrategy.Always, status: { startFailure: failure(2, 'vmi-b', NOW - 1) } });
    const p = plan(vm);
    expect(types(p)).toEqual(CREATE);
    expect(p.requeueAfterMs).toBeUndefined();
    expect(statusOf(vm, p).printableStatus).toBe('Stopped');
    expect(statusOf(vm, p).startFailure).toEqual(failure(2, 'vmi-b', NOW - 1));
  });

  test.each([
    ['Pending', 'Pending' as State, true],
    ['Running', 'Running' as State, false],
  ])('a %s VMI: failure count kept = %s', (_, state, kept) => {
    const vm = makeVm({ runStrategy: RunStrategy.Always, status: { startFailure: failure(3, 'vmi-c', NOW - 1) } });
    expect(statusOf(vm, plan(vm, vmiFor(state, 'vmi-d'))).startFailure).toEqual(kept ? failure(3, 'vmi-c', NOW - 1) : undefined);
  });

  test('a crash loop: fail, back off, retry, fail again doubles, run resets', () => {
    let vm = makeVm({ runStrategy: RunStrategy.Always });
    const step = (vmi: VirtualMachineInstance | undefined, now: number): VmPlan => {
      const p = plan(vm, vmi, now);
      vm = applied(vm, p);
      return p;
    };
    expect(types(step(vmiFor('Failed', 'u1'), NOW))).toEqual(DELETE);
    expect(step(undefined, NOW + 1_000).requeueAfterMs).toBe(9_000);
    expect(types(step(undefined, NOW + 10_000))).toContain('createVmi');
    expect(types(step(vmiFor('Failed', 'u2'), NOW + 20_000))).toContain('deleteVmi');
    expect(vm.status?.startFailure).toEqual(failure(2, 'u2', NOW + 40_000));
    expect(step(undefined, NOW + 20_000).requeueAfterMs).toBe(20_000);
    step(vmiFor('Running', 'u3'), NOW + 45_000);
    expect(vm.status?.startFailure).toBeUndefined();
    expect(vm.status?.printableStatus).toBe('Running');
  });
});

describe('planVm: the status patch', () => {
  const scenarios: Array<[string, VirtualMachine, VirtualMachineInstance | undefined]> = [
    ['Always, absent', makeVm(STRATEGIES.Always), undefined],
    ['Always, Failed', makeVm(STRATEGIES.Always), vmiFor('Failed')],
    ['Halted, Running', makeVm({ ...STRATEGIES.Halted, generation: 2 }), vmiFor('Running')],
    ['Manual, Start request', makeVm({ runStrategy: RunStrategy.Manual, status: { stateChangeRequests: [{ action: 'Start' }] } }), undefined],
    ['Manual, Stop request', makeVm({ runStrategy: RunStrategy.Manual, status: { stateChangeRequests: [{ action: 'Stop', uid: VMI_UID }] } }), vmiFor('Running')],
    ['Once, Running and Ready', makeVm(STRATEGIES.Once), vmiIn(VmiPhase.Running, { status: { conditions: [{ type: 'Ready', status: 'True' }] } })],
  ];

  test.each(scenarios)('%s: the status patch is the last action', (_, vm, vmi) => {
    const p = plan(vm, vmi);
    expect(types(p).indexOf('patchVmStatus')).toBe(p.actions.length - 1);
  });

  test.each(scenarios)('%s: feeding the status back yields no patch', (_, vm, vmi) => {
    const first = plan(vm, vmi);
    const again = plan(applied(vm, first), vmi, NOW + 60_000);
    expect(of(again, 'patchVmStatus')).toEqual([]);
  });

  test('a changed Ready status is patched with a new transition time', () => {
    const vm = makeVm(STRATEGIES.Always);
    const before = applied(vm, plan(vm, vmiFor('Running')));
    const ready = vmiIn(VmiPhase.Running, { status: { conditions: [{ type: 'Ready', status: 'True' }] } });
    const p = plan(before, ready, NOW + 5_000);
    expect(of(p, 'patchVmStatus')[0]?.status.conditions).toEqual([{ type: 'Ready', status: 'True', lastProbeTime: null, lastTransitionTime: iso(NOW + 5_000) }]);
  });
});

describe('planVm: deletion of the VM', () => {
  test.each<[string, State, string[]]>([
    ['a live VMI is deleted', 'Running', ['deleteVmi']],
    ['a finished VMI is deleted', 'Succeeded', ['deleteVmi']],
    ['a VMI already being deleted is left', 'deleting', []],
    ['no VMI → nothing', 'absent', []],
  ])('%s', (_, state, actions) => {
    const vm = makeVm({ runStrategy: RunStrategy.Always, deleting: true, status: { stateChangeRequests: [{ action: 'Start' }] } });
    const p = plan(vm, vmiFor(state));
    expect(types(p)).toEqual(actions);
    if (actions.length > 0) expect(p.actions[0]).toEqual({ type: 'deleteVmi', name: VM_NAME, uid: VMI_UID });
  });
});

describe('vmiFromVm', () => {
  const template = {
    metadata: { name: 'ignored', labels: { app: 'web', 'kubevirt.io/domain': 'web' }, annotations: { note: 'hello' } },
    spec: vmiSpec({ terminationGracePeriodSeconds: 5 }),
  };
  const vm = makeVm({ runStrategy: RunStrategy.Always, template });

  test('named as the VM, in its namespace, owned by it', () => {
    const vmi = vmiFromVm(vm);
    expect(vmi.apiVersion).toBe('kubevirt.io/v1');
    expect(vmi.kind).toBe('VirtualMachineInstance');
    expect(vmi.metadata.name).toBe(VM_NAME);
    expect(vmi.metadata.namespace).toBe(VM_NS);
    expect(vmi.metadata.ownerReferences).toEqual([{ apiVersion: 'kubevirt.io/v1', kind: 'VirtualMachine', name: VM_NAME, uid: VM_UID, controller: true, blockOwnerDeletion: true }]);
  });

  test('copies template labels and annotations (not shared)', () => {
    const vmi = vmiFromVm(vm);
    expect(vmi.metadata.labels).toEqual(template.metadata.labels);
    expect(vmi.metadata.annotations).toEqual(template.metadata.annotations);
    expect(vmi.metadata.labels).not.toBe(template.metadata.labels);
    expect(vmi.metadata.annotations).not.toBe(template.metadata.annotations);
  });

  test('no template metadata → no labels or annotations', () => {
    const vmi = vmiFromVm(makeVm({ template: { spec: vmiSpec() } }));
    expect(vmi.metadata.labels).toBeUndefined();
    expect(vmi.metadata.annotations).toBeUndefined();
  });

  test('the spec is the template with a stable firmware uuid', () => {
    const a = vmiFromVm(vm);
    const b = vmiFromVm(structuredClone(vm));
    expect(a.spec.domain.firmware?.uuid).toBe(firmwareUuid(VM_NS, VM_NAME));
    expect(b.spec.domain.firmware?.uuid).toBe(a.spec.domain.firmware?.uuid);
    const { firmware, ...domain } = a.spec.domain;
    expect({ ...a.spec, domain }).toEqual(template.spec);
    expect(firmware).toEqual({ uuid: firmwareUuid(VM_NS, VM_NAME) });
  });

  test('a firmware uuid in the template is kept', () => {
    const own = makeVm({ template: { spec: vmiSpec({ domain: { memory: { guest: '1Gi' }, firmware: { uuid: 'fixed', serial: 'abc' } } }) } });
    expect(vmiFromVm(own).spec.domain.firmware).toEqual({ uuid: 'fixed', serial: 'abc' });
  });

  test('does not change the VM', () => {
    const copy = structuredClone(vm);
    vmiFromVm(vm);
    expect(vm).toEqual(copy);
  });
});
