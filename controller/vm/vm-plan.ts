/**
 * The VM controller's behaviour as one pure function: a VirtualMachine and its VMI (same name) →
 * create or delete the VMI per run strategy, and the VM's status. Run strategies as KubeVirt's:
 * Always (restart whenever the VMI ends), RerunOnFailure (restart after Failed only), Once (run one
 * VMI to its end), Manual (only start/stop requests), Halted (no VMI); `running: true|false` maps to
 * Always|Halted. Failed starts back off exponentially, shown as CrashLoopBackOff.
 *
 * DataVolumes (KubeVirt's handleDataVolumes): every `spec.dataVolumeTemplates` entry becomes a
 * DataVolume of its name, created whatever the run strategy (as KubeVirt does without the
 * `kubevirt.io/immediate-data-volume-creation: "false"` annotation, which Ferry does not read); the
 * VMI is created only once each has Succeeded. Meanwhile the VM is Provisioning; a failed one makes
 * it DataVolumeError with the DataVolume's error in the DataVolumesReady condition. Deleting a failed
 * DataVolume makes the VM create it again.
 */

import {
  API_VERSION,
  type Condition,
  ConditionType,
  isFinal,
  Kind,
  PrintableStatus,
  RunStrategy,
  runStrategyOf,
  type StateChangeRequest,
  StateChangeAction,
  type VirtualMachine,
  type VirtualMachineInstance,
  VmiPhase,
  type VmStatus,
} from '../../src/api/kubevirt.js';
import type { V1OwnerReference } from '@kubernetes/client-node';
import type { DataVolume } from '../../src/api/datavolume.js';
import { ConditionReason, DataVolumeEventReason, dataVolumeNames } from '../../src/api/kubevirt.js';
import { firmwareUuid } from '../../src/api/kubevirt-defaults.js';
import { type ConditionInput, conditionStatus, nextConditions, sameJson } from './conditions.js';
import { dataVolumeFromTemplate, dataVolumesReady, type DvState, isBroken, letsVmiStart, type ObservedDataVolumes, phaseState, templateState, vmOwnerReference } from './datavolumes.js';
import { backoffMs } from '../../src/backoff.js';

export interface VmConfig {
  /** Delay before restarting after the first failed run; doubled per consecutive failure. */
  readonly startBackoffMs: number;
  readonly maxStartBackoffMs: number;
}

export const DEFAULT_VM_CONFIG: VmConfig = Object.freeze({ startBackoffMs: 10_000, maxStartBackoffMs: 300_000 });

export interface VmObserved {
  readonly vm: VirtualMachine;
  readonly vmi?: VirtualMachineInstance;
  /** Each DataVolume the VM names (templates and `dataVolume` volumes) → the cached one, if any. */
  readonly dataVolumes?: ObservedDataVolumes;
  readonly now: number;
}

export type VmAction =
  | { readonly type: 'createDataVolume'; readonly dataVolume: DataVolume }
  /** Makes the VM the controller owner of an orphaned DataVolume, at the resourceVersion it was seen at. */
  | { readonly type: 'adoptDataVolume'; readonly name: string; readonly resourceVersion: string; readonly ownerReferences: readonly V1OwnerReference[] }
  | { readonly type: 'createVmi'; readonly vmi: VirtualMachineInstance }
  | { readonly type: 'deleteVmi'; readonly name: string; readonly uid: string }
  | { readonly type: 'patchVmStatus'; readonly status: VmStatus }
  | { readonly type: 'event'; readonly eventType: 'Normal' | 'Warning'; readonly reason: string; readonly message: string };

export interface VmPlan {
  readonly actions: readonly VmAction[];
  readonly requeueAfterMs?: number;
}

export function startBackoffMs(failures: number, config: VmConfig): number {
  return backoffMs(failures, config.startBackoffMs, config.maxStartBackoffMs);
}

/** The VMI a VM runs: its template, named as the VM, owned by it, with a stable firmware UUID. */
export function vmiFromVm(vm: VirtualMachine): VirtualMachineInstance {
  const name = vm.metadata.name ?? '';
  const namespace = vm.metadata.namespace ?? 'default';
  const template = vm.spec.template;
  const domain = template.spec.domain ?? {};
  return {
    apiVersion: API_VERSION,
    kind: Kind.VMI,
    metadata: {
      name,
      namespace,
      ...(template.metadata?.labels ? { labels: { ...template.metadata.labels } } : {}),
      ...(template.metadata?.annotations ? { annotations: { ...template.metadata.annotations } } : {}),
      ownerReferences: [{ apiVersion: API_VERSION, kind: Kind.VM, name, uid: vm.metadata.uid ?? '', controller: true, blockOwnerDeletion: true }],
    },
    spec: {
      ...template.spec,
      domain: { ...domain, firmware: { ...(domain.firmware ?? {}), uuid: domain.firmware?.uuid ?? firmwareUuid(namespace, name) } },
    },
  };
}

type Intent = 'run' | 'stop' | 'leave';

interface Decision {
  intent: Intent;
  /** Requests left after this reconcile acted on the first one. */
  requests: StateChangeRequest[];
  /** A user asked for this (start request): no restart backoff applies. */
  requested?: boolean;
}

function decide(strategy: RunStrategy, vmi: VirtualMachineInstance | undefined, requests: readonly StateChangeRequest[]): Decision {
  const phase = vmi?.status?.phase;
  const first = requests[0];
  if ((strategy === RunStrategy.Manual || strategy === RunStrategy.RerunOnFailure) && first) {
    const rest = requests.slice(1);
    if (first.action === StateChangeAction.Stop) {
      // Done once the targeted VMI (or any, when no UID was named) is gone.
      const targeted = vmi !== undefined && (first.uid === undefined || first.uid === vmi.metadata.uid);
      if (targeted) return { intent: 'stop', requests: [...requests] };
      // RerunOnFailure would start a VM without a VMI again: a lone Stop stays as the record that
      // the user stopped it, until a Start replaces it.
      if (strategy === RunStrategy.RerunOnFailure && rest.length === 0) return { intent: 'leave', requests: [...requests] };
      return { intent: 'leave', requests: rest };
    }
    // Start: a finished VMI is removed first, then a new one is created.
    if (vmi && isFinal(phase)) return { intent: 'stop', requests: [...requests], requested: true };
    if (vmi) return { intent: 'leave', requests: rest };
    return { intent: 'run', requests: rest, requested: true };
  }
  switch (strategy) {
    case RunStrategy.Halted:
      return { intent: 'stop', requests: [] };
    case RunStrategy.Always:
      return { intent: vmi && isFinal(phase) ? 'stop' : 'run', requests: [] };
    case RunStrategy.RerunOnFailure:
      if (vmi && phase === VmiPhase.Failed) return { intent: 'stop', requests: [] };
      return { intent: vmi ? 'leave' : 'run', requests: [] };
    case RunStrategy.Once:
      return { intent: vmi ? 'leave' : 'run', requests: [] };
    case RunStrategy.Manual:
      return { intent: 'leave', requests: [] };
  }
}

/**
 * KubeVirt's setPrintableStatus, first match wins: Terminating, Stopping, Running, ErrorPvcNotFound,
 * DataVolumeError, Provisioning, WaitingForVolumeBinding, then Starting / CrashLoopBackOff / Stopped.
 */
function printable(vm: VirtualMachine, vmi: VirtualMachineInstance | undefined, backingOff: boolean, volumes: readonly DvState[], toStart: boolean): PrintableStatus {
  if (vm.metadata.deletionTimestamp) return PrintableStatus.Terminating;
  const phase = vmi?.status?.phase;
  if (vmi?.metadata.deletionTimestamp && !isFinal(phase)) return PrintableStatus.Stopping;
  if (phase === VmiPhase.Running) return PrintableStatus.Running;
  const live = vmi !== undefined && !isFinal(phase);
  const scheduled = live ? vmi.status?.conditions?.find((c) => c.type === ConditionType.PodScheduled) : undefined;
  if (scheduled?.reason === ConditionReason.PvcNotFound) return PrintableStatus.ErrorPvcNotFound;
  if (volumes.some(isBroken)) return PrintableStatus.DataVolumeError;
  const busy = volumes.some((s) => s.kind === 'importing' || s.kind === 'orphan' || s.kind === 'deleting' || (s.kind === 'missing' && toStart));
  if (toStart && !busy && volumes.some((s) => s.kind === 'waitingForConsumer')) return PrintableStatus.WaitingForVolumeBinding;
  if (busy || scheduled?.reason === ConditionReason.DataVolumeNotReady) return PrintableStatus.Provisioning;
  if (!vmi || isFinal(phase)) return backingOff ? PrintableStatus.CrashLoopBackOff : PrintableStatus.Stopped;
  return PrintableStatus.Starting;
}

interface DataVolumePlan {
  readonly actions: VmAction[];
  /** Every template's DataVolume has Succeeded or waits for a first consumer (and is the VM's): the VMI may be created. */
  readonly ready: boolean;
  /** The state of each DataVolume the VM names, templates first. */
  readonly states: DvState[];
  readonly condition?: ConditionInput;
}

/** Creates missing template DataVolumes, adopts orphans, and sums up where the VM's DataVolumes stand. */
function planDataVolumes(vm: VirtualMachine, observed: ObservedDataVolumes, previous: readonly Condition[] | undefined): DataVolumePlan {
  const actions: VmAction[] = [];
  const states: DvState[] = [];
  const templates = vm.spec.dataVolumeTemplates ?? [];
  for (const template of templates) {
    const name = template.metadata?.name ?? '';
    if (name === '' || states.some((s) => s.name === name)) continue;
    const state = templateState(vm, name, observed.get(name));
    states.push(state);
    if (state.kind === 'missing') {
      actions.push({ type: 'createDataVolume', dataVolume: dataVolumeFromTemplate(vm, template) });
      actions.push({ type: 'event', eventType: 'Normal', reason: DataVolumeEventReason.Created, message: `Created DataVolume ${name}` });
    } else if (state.kind === 'orphan') {
      actions.push({
        type: 'adoptDataVolume',
        name,
        resourceVersion: state.dv.metadata.resourceVersion ?? '',
        ownerReferences: [...(state.dv.metadata.ownerReferences ?? []), vmOwnerReference(vm)],
      });
    }
  }
  const ready = states.every(letsVmiStart);
  // DataVolumes the template's volumes name that no template creates: their phase, whoever owns them.
  for (const name of dataVolumeNames(vm.spec.template.spec)) {
    if (!states.some((s) => s.name === name) && observed.has(name)) states.push(phaseState(name, observed.get(name)));
  }
  const summary = dataVolumesReady(states);
  const condition: ConditionInput | undefined = summary && { type: ConditionType.DataVolumesReady, ...summary };
  const before = previous?.find((c) => c.type === ConditionType.DataVolumesReady);
  if (condition && condition.status === 'False' && (before?.reason !== condition.reason || before?.message !== condition.message)) {
    if (condition.reason === ConditionReason.FailedDataVolumeImport) actions.push({ type: 'event', eventType: 'Warning', reason: DataVolumeEventReason.ImportFailed, message: condition.message ?? '' });
    if (condition.reason === ConditionReason.DataVolumeNotOwned) actions.push({ type: 'event', eventType: 'Warning', reason: DataVolumeEventReason.CreateFailed, message: condition.message ?? '' });
  }
  return { actions, ready, states, ...(condition ? { condition } : {}) };
}

export function planVm(observed: VmObserved, config: VmConfig): VmPlan {
  const { vm, vmi, now } = observed;
  const strategy = runStrategyOf(vm);
  const actions: VmAction[] = [];
  const nowIso = new Date(now).toISOString();

  if (vm.metadata.deletionTimestamp) {
    if (vmi && !vmi.metadata.deletionTimestamp) actions.push({ type: 'deleteVmi', name: vmi.metadata.name ?? '', uid: vmi.metadata.uid ?? '' });
    return { actions };
  }

  // Count each failed VMI once; a VMI that reached Running clears the count.
  let startFailure = vm.status?.startFailure;
  const vmiPhase = vmi?.status?.phase;
  const restarts = strategy === RunStrategy.Always || strategy === RunStrategy.RerunOnFailure;
  if (vmi && vmiPhase === VmiPhase.Failed && restarts && startFailure?.lastFailedVMIUID !== vmi.metadata.uid) {
    const count = (startFailure?.consecutiveFailCount ?? 0) + 1;
    startFailure = {
      consecutiveFailCount: count,
      lastFailedVMIUID: vmi.metadata.uid ?? '',
      retryAfterTimestamp: new Date(now + startBackoffMs(count, config)).toISOString(),
    };
  } else if (vmiPhase === VmiPhase.Running && startFailure) {
    startFailure = undefined;
  }
  const retryAt = startFailure?.retryAfterTimestamp ? Date.parse(startFailure.retryAfterTimestamp) : undefined;
  const backingOff = retryAt !== undefined && retryAt > now;

  const decision = decide(strategy, vmi, vm.status?.stateChangeRequests ?? []);
  const volumes = planDataVolumes(vm, observed.dataVolumes ?? new Map(), vm.status?.conditions);
  actions.push(...volumes.actions);
  let requeueAfterMs: number | undefined;
  if (decision.intent === 'stop' && vmi && !vmi.metadata.deletionTimestamp) {
    actions.push({ type: 'deleteVmi', name: vmi.metadata.name ?? '', uid: vmi.metadata.uid ?? '' });
    actions.push({ type: 'event', eventType: 'Normal', reason: 'SuccessfulDelete', message: `Stopped the virtual machine by deleting the virtual machine instance ${vmi.metadata.uid ?? ''}` });
  } else if (decision.intent === 'run' && !vmi) {
    if (!volumes.ready) {
      // Waits for the DataVolumes: their informer wakes the VM when they change.
    } else if (backingOff && retryAt !== undefined && decision.requested !== true) {
      requeueAfterMs = retryAt - now;
    } else {
      actions.push({ type: 'createVmi', vmi: vmiFromVm(vm) });
      actions.push({ type: 'event', eventType: 'Normal', reason: 'SuccessfulCreate', message: `Started the virtual machine by creating the new virtual machine instance ${vm.metadata.name ?? ''}` });
    }
  }

  const created = vmi !== undefined && !vmi.metadata.deletionTimestamp;
  const ready = created && conditionStatus(vmi?.status?.conditions, ConditionType.Ready) === 'True';
  const readyCondition: Condition['status'] = ready ? 'True' : 'False';
  const status: VmStatus = {
    ...(vm.status ?? {}),
    created,
    ready,
    printableStatus: printable(vm, vmi, backingOff && decision.intent === 'run', volumes.states, decision.intent === 'run' || (decision.intent === 'leave' && vmi !== undefined && !isFinal(vmiPhase))),
    runStrategy: strategy,
    conditions: nextConditions(
      vm.status?.conditions,
      [{ type: ConditionType.Ready, status: readyCondition, ...(ready ? {} : { reason: vmi ? 'VMINotReady' : 'VMINotExists' }) }, ...(volumes.condition ? [volumes.condition] : [])],
      nowIso,
    ),
    ...(vm.metadata.generation !== undefined ? { observedGeneration: vm.metadata.generation } : {}),
  };
  if (decision.requests.length > 0) status.stateChangeRequests = decision.requests;
  else delete status.stateChangeRequests;
  if (startFailure) status.startFailure = startFailure;
  else delete status.startFailure;

  const strip = (s: VmStatus): unknown => ({ ...s, conditions: (s.conditions ?? []).map((c) => ({ type: c.type, status: c.status, reason: c.reason, message: c.message })) });
  // Status last: a Start request is only cleared after its VMI was created.
  if (!sameJson(strip(vm.status ?? {}), strip(status))) actions.push({ type: 'patchVmStatus', status });
  return { actions, ...(requeueAfterMs !== undefined ? { requeueAfterMs } : {}) };
}
