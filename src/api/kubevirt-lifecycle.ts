/**
 * What `start`, `stop` and `restart` mean for a VM under each run strategy, as KubeVirt's
 * subresource API defines them, turned into the JSON patches a client sends (Ferry has no aggregated
 * API server): Halted/Always flip the run strategy, Manual and RerunOnFailure queue a state-change
 * request in the VM's status, and impossible requests fail with the reason KubeVirt gives.
 */

import { ErrorCode, FerryError } from '../errors.js';
import { isFinal, RunStrategy, runStrategyOf, type StateChangeRequest, StateChangeAction, type VirtualMachine, type VirtualMachineInstance } from './kubevirt.js';

export type JsonPatchOp = { op: 'add' | 'replace' | 'test' | 'remove'; path: string; value?: unknown };

export type LifecycleChange =
  /** A JSON patch of the VM object (its run strategy). */
  | { readonly target: 'spec'; readonly patch: JsonPatchOp[] }
  /** A JSON patch of the VM's status subresource (state-change requests). */
  | { readonly target: 'status'; readonly patch: JsonPatchOp[] }
  /** Delete the running VMI; the run strategy brings up a new one. */
  | { readonly target: 'deleteVmi'; readonly uid: string };

function conflict(message: string): FerryError {
  return new FerryError(ErrorCode.InvalidSpec, message);
}

/** Switches the run strategy, guarded by a test op so a concurrent change is not overwritten. */
function setStrategy(vm: VirtualMachine, to: RunStrategy): LifecycleChange {
  if (vm.spec.runStrategy === undefined) {
    // The deprecated `running` field: replace it by the strategy, as KubeVirt does.
    const ops: JsonPatchOp[] = vm.spec.running !== undefined ? [{ op: 'test', path: '/spec/running', value: vm.spec.running }, { op: 'remove', path: '/spec/running' }] : [];
    return { target: 'spec', patch: [...ops, { op: 'add', path: '/spec/runStrategy', value: to }] };
  }
  return { target: 'spec', patch: [{ op: 'test', path: '/spec/runStrategy', value: vm.spec.runStrategy }, { op: 'replace', path: '/spec/runStrategy', value: to }] };
}

function request(vm: VirtualMachine, add: StateChangeRequest[], vmi?: VirtualMachineInstance): LifecycleChange {
  const existing = vm.status?.stateChangeRequests ?? [];
  // A Stop whose VMI is gone only records that the VM was stopped (RerunOnFailure): replaced.
  const settled = existing.length === 1 && existing[0]?.action === StateChangeAction.Stop && !running(vmi);
  if (existing.length > 0 && !settled) throw conflict(`VM ${vm.metadata.name} already has a pending request (${existing.map((r) => r.action).join(', ')})`);
  return {
    target: 'status',
    patch: [
      { op: 'test', path: '/metadata/resourceVersion', value: vm.metadata.resourceVersion },
      ...(vm.status ? [] : [{ op: 'add' as const, path: '/status', value: {} }]),
      { op: 'add', path: '/status/stateChangeRequests', value: add },
    ],
  };
}

function running(vmi: VirtualMachineInstance | undefined): boolean {
  return vmi !== undefined && !isFinal(vmi.status?.phase) && !vmi.metadata.deletionTimestamp;
}

export function startChange(vm: VirtualMachine, vmi?: VirtualMachineInstance): LifecycleChange {
  const strategy = runStrategyOf(vm);
  if (running(vmi)) throw conflict(`VM ${vm.metadata.name} is already running`);
  const finished = vmi?.metadata.uid;
  switch (strategy) {
    case RunStrategy.Halted:
      return setStrategy(vm, RunStrategy.Always);
    case RunStrategy.Manual:
    case RunStrategy.RerunOnFailure:
      return request(
        vm,
        [...(finished ? [{ action: StateChangeAction.Stop, uid: finished }] : []), { action: StateChangeAction.Start }],
        vmi,
      );
    default:
      throw conflict(`runStrategy ${strategy} does not support manual start requests`);
  }
}

export function stopChange(vm: VirtualMachine, vmi?: VirtualMachineInstance): LifecycleChange {
  const strategy = runStrategyOf(vm);
  switch (strategy) {
    case RunStrategy.Halted:
      throw conflict(`VM ${vm.metadata.name} is not running`);
    case RunStrategy.Always:
    case RunStrategy.Once:
      return setStrategy(vm, RunStrategy.Halted);
    default:
      if (!vmi || !running(vmi)) throw conflict(`VM ${vm.metadata.name} is not running`);
      return request(vm, [{ action: StateChangeAction.Stop, uid: vmi.metadata.uid ?? '' }], vmi);
  }
}

export function restartChange(vm: VirtualMachine, vmi?: VirtualMachineInstance): LifecycleChange {
  const strategy = runStrategyOf(vm);
  if (strategy === RunStrategy.Halted || strategy === RunStrategy.Once) throw conflict(`runStrategy ${strategy} does not support restart`);
  if (!vmi?.metadata.uid) throw conflict(`VM ${vm.metadata.name} is not running`);
  if (strategy === RunStrategy.Manual) {
    return request(vm, [{ action: StateChangeAction.Stop, uid: vmi.metadata.uid }, { action: StateChangeAction.Start }], vmi);
  }
  return { target: 'deleteVmi', uid: vmi.metadata.uid };
}
