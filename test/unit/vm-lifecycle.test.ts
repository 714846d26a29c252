/** start / stop / restart per run strategy (KubeVirt's subresource API, reference §5) as patches. */

import { describe, expect, test } from '@jest/globals';
import { ErrorCode } from '../../src/errors.js';
import { RunStrategy, type VirtualMachine, type VirtualMachineInstance, VmiPhase } from '../../src/api/kubevirt.js';
import { type JsonPatchOp, type LifecycleChange, restartChange, startChange, stopChange } from '../../src/api/kubevirt-lifecycle.js';
import { ferryErrorOf, makeVm, VMI_UID, vmiIn } from './helpers.js';

type Verb = (vm: VirtualMachine, vmi?: VirtualMachineInstance) => LifecycleChange;
type VmiState = 'none' | 'running' | 'succeeded' | 'failed';

const VMI: Record<VmiState, VirtualMachineInstance | undefined> = {
  none: undefined,
  running: vmiIn(VmiPhase.Running),
  succeeded: vmiIn(VmiPhase.Succeeded),
  failed: vmiIn(VmiPhase.Failed),
};

const RV: JsonPatchOp = { op: 'test', path: '/metadata/resourceVersion', value: '42' };
const toStrategy = (from: string, to: string): LifecycleChange => ({
  target: 'spec',
  patch: [
    { op: 'test', path: '/spec/runStrategy', value: from },
    { op: 'replace', path: '/spec/runStrategy', value: to },
  ],
});
const requests = (...add: Array<{ action: string; uid?: string }>): LifecycleChange => ({
  target: 'status',
  patch: [RV, { op: 'add', path: '/status/stateChangeRequests', value: add }],
});
const START = { action: 'Start' };
const STOP = { action: 'Stop', uid: VMI_UID };

/** `expected` is the change, or a regexp the INVALID_SPEC error's message must match. */
type Row = [RunStrategy, VmiState, LifecycleChange | RegExp];

function check(verb: Verb, strategy: RunStrategy, state: VmiState, expected: LifecycleChange | RegExp): void {
  const vm = makeVm({ runStrategy: strategy, status: { printableStatus: 'Stopped' } });
  if (expected instanceof RegExp) {
    const err = ferryErrorOf(() => verb(vm, VMI[state]));
    expect(err.code).toBe(ErrorCode.InvalidSpec);
    expect(err.message).toMatch(expected);
  } else {
    expect(verb(vm, VMI[state])).toEqual(expected);
  }
}

const ALREADY = /already running/;
const NOT_RUNNING = /is not running/;
const NO_START = /does not support manual start requests/;
const NO_RESTART = /does not support restart/;

describe('startChange', () => {
  test.each<Row>([
    [RunStrategy.Halted, 'none', toStrategy('Halted', 'Always')],
    [RunStrategy.Halted, 'running', ALREADY],
    [RunStrategy.Halted, 'succeeded', toStrategy('Halted', 'Always')],
    [RunStrategy.Halted, 'failed', toStrategy('Halted', 'Always')],
    [RunStrategy.Always, 'none', NO_START],
    [RunStrategy.Always, 'running', ALREADY],
    [RunStrategy.Always, 'succeeded', NO_START],
    [RunStrategy.Always, 'failed', NO_START],
    [RunStrategy.Once, 'none', NO_START],
    [RunStrategy.Once, 'running', ALREADY],
    [RunStrategy.Once, 'succeeded', NO_START],
    [RunStrategy.Manual, 'none', requests(START)],
    [RunStrategy.Manual, 'running', ALREADY],
    [RunStrategy.Manual, 'succeeded', requests(STOP, START)],
    [RunStrategy.Manual, 'failed', requests(STOP, START)],
    [RunStrategy.RerunOnFailure, 'none', requests(START)],
    [RunStrategy.RerunOnFailure, 'running', ALREADY],
    [RunStrategy.RerunOnFailure, 'succeeded', requests(STOP, START)],
    [RunStrategy.RerunOnFailure, 'failed', requests(STOP, START)],
  ])('%s with VMI %s', (strategy, state, expected) => check(startChange, strategy, state, expected));

  test('a VMI being deleted does not count as running', () => {
    const vm = makeVm({ runStrategy: RunStrategy.Manual, status: {} });
    expect(startChange(vm, vmiIn(VmiPhase.Running, { deleting: true }))).toEqual(requests(STOP, START));
  });

  test('a VM without status gets one before the request', () => {
    const vm = makeVm({ runStrategy: RunStrategy.Manual });
    expect(startChange(vm)).toEqual({
      target: 'status',
      patch: [RV, { op: 'add', path: '/status', value: {} }, { op: 'add', path: '/status/stateChangeRequests', value: [START] }],
    });
  });
});

describe('stopChange', () => {
  test.each<Row>([
    [RunStrategy.Halted, 'none', NOT_RUNNING],
    [RunStrategy.Halted, 'succeeded', NOT_RUNNING],
    [RunStrategy.Always, 'none', toStrategy('Always', 'Halted')],
    [RunStrategy.Always, 'running', toStrategy('Always', 'Halted')],
    [RunStrategy.Always, 'failed', toStrategy('Always', 'Halted')],
    [RunStrategy.Once, 'running', toStrategy('Once', 'Halted')],
    [RunStrategy.Once, 'succeeded', toStrategy('Once', 'Halted')],
    [RunStrategy.Manual, 'none', NOT_RUNNING],
    [RunStrategy.Manual, 'running', requests(STOP)],
    [RunStrategy.Manual, 'succeeded', NOT_RUNNING],
    [RunStrategy.RerunOnFailure, 'none', NOT_RUNNING],
    [RunStrategy.RerunOnFailure, 'running', requests(STOP)],
    [RunStrategy.RerunOnFailure, 'failed', NOT_RUNNING],
  ])('%s with VMI %s', (strategy, state, expected) => check(stopChange, strategy, state, expected));
});

describe('restartChange', () => {
  test.each<Row>([
    [RunStrategy.Halted, 'none', NO_RESTART],
    [RunStrategy.Halted, 'running', NO_RESTART],
    [RunStrategy.Once, 'running', NO_RESTART],
    [RunStrategy.Always, 'none', NOT_RUNNING],
    [RunStrategy.Always, 'running', { target: 'deleteVmi', uid: VMI_UID }],
    [RunStrategy.RerunOnFailure, 'none', NOT_RUNNING],
    [RunStrategy.RerunOnFailure, 'running', { target: 'deleteVmi', uid: VMI_UID }],
    [RunStrategy.Manual, 'none', NOT_RUNNING],
    [RunStrategy.Manual, 'running', requests(STOP, START)],
  ])('%s with VMI %s', (strategy, state, expected) => check(restartChange, strategy, state, expected));
});

describe('the deprecated running field', () => {
  test.each<[string, Verb, boolean | undefined, unknown[]]>([
    ['start, running: false', startChange, false, [{ op: 'test', path: '/spec/running', value: false }, { op: 'remove', path: '/spec/running' }, { op: 'add', path: '/spec/runStrategy', value: 'Always' }]],
    ['start, neither field', startChange, undefined, [{ op: 'add', path: '/spec/runStrategy', value: 'Always' }]],
    ['stop, running: true', stopChange, true, [{ op: 'test', path: '/spec/running', value: true }, { op: 'remove', path: '/spec/running' }, { op: 'add', path: '/spec/runStrategy', value: 'Halted' }]],
  ])('%s → replaced by runStrategy', (_, verb, running, patch) => {
    expect(verb(makeVm(running === undefined ? {} : { running }), running ? VMI.running : undefined)).toEqual({ target: 'spec', patch });
  });

  test.each<[string, Verb, boolean | undefined, RegExp]>([
    ['start, running: true (Always)', startChange, true, NO_START],
    ['stop, running: false (Halted)', stopChange, false, NOT_RUNNING],
    ['restart, no field (Halted)', restartChange, undefined, NO_RESTART],
  ])('%s → refused', (_, verb, running, message) => {
    const err = ferryErrorOf(() => verb(makeVm(running === undefined ? {} : { running })));
    expect(err.code).toBe(ErrorCode.InvalidSpec);
    expect(err.message).toMatch(message);
  });

  test('restart with running: true deletes the VMI (Always)', () => {
    expect(restartChange(makeVm({ running: true }), VMI.running)).toEqual({ target: 'deleteVmi', uid: VMI_UID });
  });
});

describe('a pending request', () => {
  test.each<[string, Verb, VmiState]>([
    ['start', startChange, 'none'],
    ['stop', stopChange, 'running'],
    ['restart', restartChange, 'running'],
  ])('%s is refused while another request is pending', (_, verb, state) => {
    const vm = makeVm({ runStrategy: RunStrategy.Manual, status: { stateChangeRequests: [{ action: 'Start' }] } });
    const err = ferryErrorOf(() => verb(vm, VMI[state]));
    expect(err.code).toBe(ErrorCode.InvalidSpec);
    expect(err.message).toMatch(/already has a pending request \(Start\)/);
  });

  test('a Stop whose VMI is gone (RerunOnFailure keeps it as the record) is replaced by a start', () => {
    const vm = makeVm({ runStrategy: RunStrategy.RerunOnFailure, status: { stateChangeRequests: [{ action: 'Stop', uid: 'old' }] } });
    const change = startChange(vm);
    expect(change.target).toBe('status');
    expect(change.target === 'status' ? change.patch.at(-1) : undefined).toEqual({ op: 'add', path: '/status/stateChangeRequests', value: [{ action: 'Start' }] });
  });

  test('an empty request list is no obstacle', () => {
    const vm = makeVm({ runStrategy: RunStrategy.Manual, status: { stateChangeRequests: [] } });
    expect(startChange(vm)).toEqual(requests(START));
  });
});
