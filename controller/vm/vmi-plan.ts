/**
 * The VMI controller's behaviour as one pure function: the VMI, its launcher pod, the PVCs its
 * volumes name, and what the launcher reported → what to do. Phases follow KubeVirt (Pending →
 * Scheduling → Scheduled → Running → Succeeded/Failed); unlike KubeVirt there is no node agent, so
 * the launcher pod's own status carries the guest's: Ready means the domain runs, Succeeded means
 * the guest powered off, Failed carries the launcher's termination message. A pod that disappears
 * under a started VMI makes it Failed: terminal, never stuck.
 *
 * A `dataVolume: {name}` volume mounts the PVC of that name; while its DataVolume has not Succeeded
 * the VMI stays Pending (no pod; PodScheduled False, reason DataVolumeNotReady; DataVolumesReady
 * False, reason NotAllDVsReady) and a DataVolume that Failed makes a VMI that has not started
 * Failed, reason FailedDataVolumeImport, with the DataVolume's error (KubeVirt's updateStatus).
 * A volume whose DataVolume does not exist uses the PVC of its name, as KubeVirt does.
 */

import type { V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';
import { Annotation, PodPhase } from '../../src/api/cdi.js';
import {
  claimOf,
  dataVolumeNames,
  type Condition,
  ConditionReason,
  ConditionType,
  FOREGROUND_FINALIZER,
  isFinal,
  type VirtualMachineInstance,
  VmiPhase,
  type VmiStatus,
} from '../../src/api/kubevirt.js';
import { parseQuantity } from '../../src/quantity.js';
import { defaultVmiSpec, validateVmiSpec } from '../../src/api/kubevirt-defaults.js';
import { type ConditionInput, nextConditions, sameJson } from './conditions.js';
import { buildLauncherPod, type ClaimInfo, type LauncherConfig, launcherPodName } from './launcher-pod.js';
import { dataVolumesReady, describeDvState, type DvState, type ObservedDataVolumes, phaseState } from './datavolumes.js';
import { buildProvisioningPod, provisioningPodName } from './provisioning-pod.js';
import { markedWaiting } from '../runtime/binding.js';

/** What the launcher said about the guest: its termination message, or its live /status. */
export interface LauncherReport {
  readonly phase?: 'Succeeded' | 'Failed';
  readonly reason?: string;
  readonly message?: string;
  /** 'tcg' when the guest runs under software emulation. */
  readonly accel?: 'kvm' | 'tcg';
}

export interface VmiObserved {
  readonly vmi: VirtualMachineInstance;
  /** The pod with the launcher's deterministic name for this VMI, if any. */
  readonly pod?: V1Pod;
  /** The temporary pod that binds WaitForFirstConsumer volumes (provisioning-pod.ts), if any. */
  readonly provisioningPod?: V1Pod;
  /** Each claim the VMI's volumes name → the PVC, or undefined when it does not exist. */
  readonly claims: ReadonlyMap<string, V1PersistentVolumeClaim | undefined>;
  /** Each DataVolume the VMI's volumes name → the cached one (undefined: none of that name). */
  readonly dataVolumes?: ObservedDataVolumes;
  readonly report?: LauncherReport;
  readonly now: number;
}

export type VmiAction =
  | { readonly type: 'createPod'; readonly pod: V1Pod }
  | { readonly type: 'deletePod'; readonly name: string }
  | { readonly type: 'setFinalizers'; readonly finalizers: readonly string[] }
  | { readonly type: 'patchStatus'; readonly status: VmiStatus }
  | { readonly type: 'event'; readonly eventType: 'Normal' | 'Warning'; readonly reason: string; readonly message: string };

export interface VmiPlan {
  readonly actions: readonly VmiAction[];
  /** Ask the launcher for its live status (accelerator) at this pod IP. */
  readonly scrape?: { readonly podIP: string };
}

const StartedPhases: readonly string[] = [VmiPhase.Scheduling, VmiPhase.Scheduled, VmiPhase.Running];

/** The pod's Ready condition (the launcher's readiness probe: the domain runs), else its container's. */
function podReady(pod: V1Pod): boolean {
  const ready = pod.status?.conditions?.find((c) => c.type === 'Ready');
  return ready ? ready.status === 'True' : pod.status?.containerStatuses?.[0]?.ready === true;
}

/** Reasons a container waits in while the kubelet gets on with starting it. */
const PROGRESSING_WAITS: readonly string[] = ['ContainerCreating', 'PodInitializing'];

/**
 * Why the launcher pod's containers cannot start, from the kubelet's waiting state: any reason but
 * the progressing ones (CreateContainerError — a missing seccomp profile, say —, ErrImagePull,
 * ImagePullBackOff, CreateContainerConfigError, CrashLoopBackOff, …), with its message.
 */
function launcherWaiting(pod: V1Pod): { reason: string; message: string } | undefined {
  for (const s of [...(pod.status?.initContainerStatuses ?? []), ...(pod.status?.containerStatuses ?? [])]) {
    const w = s.state?.waiting;
    if (w?.reason && !PROGRESSING_WAITS.includes(w.reason)) return { reason: w.reason, message: `container ${s.name}: ${w.message ?? w.reason}`.slice(0, 1024) };
  }
  return undefined;
}

/** The state of each DataVolume the VMI's volumes name that exists. */
function dataVolumeStates(vmi: VirtualMachineInstance, dataVolumes: ObservedDataVolumes | undefined): DvState[] {
  return dataVolumeNames(vmi.spec).flatMap((name) => {
    const dv = dataVolumes?.get(name);
    return dv ? [phaseState(name, dv)] : [];
  });
}

/** Why a VMI cannot start yet: a DataVolume not done, a missing PVC, or one CDI is still importing into. */
function claimsBlocking(vmi: VirtualMachineInstance, claims: VmiObserved['claims'], states: readonly DvState[]): ConditionInput | undefined {
  const pending = states.find((s) => s.kind !== 'succeeded');
  if (pending) return { type: ConditionType.PodScheduled, status: 'False', reason: ConditionReason.DataVolumeNotReady, message: describeDvState(pending) };
  for (const volume of vmi.spec.volumes ?? []) {
    const claim = claimOf(volume);
    if (!claim) continue;
    const pvc = claims.get(claim.claimName);
    if (!pvc) {
      return { type: ConditionType.PodScheduled, status: 'False', reason: ConditionReason.PvcNotFound, message: `PVC ${vmi.metadata.namespace}/${claim.claimName} does not exist` };
    }
    const annotations = pvc.metadata?.annotations ?? {};
    const importing = (annotations[Annotation.Endpoint] !== undefined || annotations[Annotation.LegacyEndpoint] !== undefined || annotations[Annotation.Source] !== undefined) &&
      annotations[Annotation.PodPhase] !== PodPhase.Succeeded;
    if (importing) {
      return { type: ConditionType.PodScheduled, status: 'False', reason: ConditionReason.DataVolumeNotReady, message: `PVC ${claim.claimName} is still being imported` };
    }
  }
  return undefined;
}

function quantityOrUndefined(text: unknown): number | undefined {
  if (text === undefined || text === null) return undefined;
  try {
    return parseQuantity(String(text));
  } catch {
    return undefined;
  }
}

function claimInfo(claims: VmiObserved['claims']): Map<string, ClaimInfo> {
  const info = new Map<string, ClaimInfo>();
  for (const [name, pvc] of claims) {
    if (!pvc) continue;
    const sizes = [quantityOrUndefined(pvc.spec?.resources?.requests?.storage), quantityOrUndefined(pvc.status?.capacity?.storage)].filter((n): n is number => n !== undefined);
    info.set(name, { block: pvc.spec?.volumeMode === 'Block', ...(sizes.length > 0 ? { capacityBytes: Math.min(...sizes) } : {}) });
  }
  return info;
}

interface Desired {
  phase: VmiPhase;
  reason?: string;
  conditions: ConditionInput[];
  nodeName?: string;
  podIP?: string;
}

/** KubeVirt's aggregateDataVolumesConditions: DataVolumesReady whenever the VMI has DataVolumes. */
function withDataVolumesReady(conditions: readonly ConditionInput[], states: readonly DvState[]): ConditionInput[] {
  const summary = dataVolumesReady(states);
  return summary ? [...conditions, { type: ConditionType.DataVolumesReady, ...summary }] : [...conditions];
}

function statusFrom(observed: VmiObserved, desired: Desired, spec: VirtualMachineInstance['spec']): VmiStatus {
  const now = new Date(observed.now).toISOString();
  const current = observed.vmi.status ?? {};
  const transitions = [...(current.phaseTransitionTimestamps ?? [])];
  if (current.phase !== desired.phase) transitions.push({ phase: desired.phase, phaseTransitionTimestamp: now });
  const pod = observed.pod;
  const status: VmiStatus = {
    ...current,
    phase: desired.phase,
    conditions: nextConditions(current.conditions, withDataVolumesReady(desired.conditions, dataVolumeStates(observed.vmi, observed.dataVolumes)), now),
    phaseTransitionTimestamps: transitions,
    machine: { type: spec.domain.machine?.type ?? 'q35' },
  };
  if (desired.reason !== undefined) status.reason = desired.reason;
  else delete status.reason;
  if (desired.nodeName !== undefined) status.nodeName = desired.nodeName;
  if (pod?.metadata?.uid && desired.nodeName !== undefined) status.activePods = { [pod.metadata.uid]: desired.nodeName };
  if (desired.podIP !== undefined) {
    const ips = pod?.status?.podIPs?.map((p) => p.ip).filter((ip): ip is string => typeof ip === 'string') ?? [desired.podIP];
    const iface = spec.domain.devices?.interfaces?.[0];
    status.interfaces = [{ ...(iface ? { name: iface.name } : {}), ipAddress: desired.podIP, ipAddresses: ips, infoSource: 'pod' }];
  }
  return status;
}

function patchIfChanged(observed: VmiObserved, status: VmiStatus): VmiAction[] {
  const current = observed.vmi.status ?? {};
  const comparable = (s: VmiStatus): unknown => ({
    ...s,
    conditions: (s.conditions ?? []).map((c: Condition) => ({ type: c.type, status: c.status, reason: c.reason, message: c.message })),
  });
  return sameJson(comparable(current), comparable(status)) ? [] : [{ type: 'patchStatus', status }];
}

function emulationCondition(observed: VmiObserved): ConditionInput[] {
  if (observed.report?.accel !== 'tcg') return [];
  return [{ type: ConditionType.SoftwareEmulation, status: 'True', reason: ConditionReason.NoKvm, message: 'the guest runs under QEMU TCG (no usable /dev/kvm on the node)' }];
}

/** The claims the VMI's volumes name that wait for a first consumer (runtime/binding.ts). */
function waitingClaims(vmi: VirtualMachineInstance, claims: VmiObserved['claims']): string[] {
  const names = (vmi.spec.volumes ?? []).flatMap((v) => {
    const claim = claimOf(v);
    return claim && markedWaiting(claims.get(claim.claimName)) ? [claim.claimName] : [];
  });
  return [...new Set(names)];
}

/** Why the provisioning pod has not bound the volumes yet, from its PodScheduled condition. */
function provisioningMessage(waiting: readonly string[], pod: V1Pod | undefined): string {
  const scheduled = pod?.status?.conditions?.find((c) => c.type === 'PodScheduled');
  const why = scheduled && scheduled.status !== 'True' && scheduled.message ? `: ${scheduled.message}` : '';
  return `PVC ${waiting.join(', ')} wait for a first consumer; pod ${pod?.metadata?.name ?? '(being created)'} consumes them so they bind${why}`;
}

export function planVmi(observed: VmiObserved, config: LauncherConfig): VmiPlan {
  const withBinding = planVmiLauncher(observed, config);
  // The temporary binding pod goes as soon as nothing waits (or the VMI is going away).
  const temp = observed.provisioningPod;
  if (!temp || temp.metadata?.deletionTimestamp) return withBinding;
  const stillWaiting = !observed.vmi.metadata.deletionTimestamp && !isFinal(observed.vmi.status?.phase) && waitingClaims(observed.vmi, observed.claims).length > 0;
  if (stillWaiting) return withBinding;
  return { ...withBinding, actions: [...withBinding.actions, { type: 'deletePod', name: temp.metadata?.name ?? '' }] };
}

function planVmiLauncher(observed: VmiObserved, config: LauncherConfig): VmiPlan {
  const { vmi, pod } = observed;
  const finalizers = vmi.metadata.finalizers ?? [];
  const phase = vmi.status?.phase;

  if (vmi.metadata.deletionTimestamp) {
    if (pod && !pod.metadata?.deletionTimestamp) return { actions: [{ type: 'deletePod', name: pod.metadata?.name ?? '' }] };
    if (!pod && finalizers.includes(FOREGROUND_FINALIZER)) {
      return { actions: [{ type: 'setFinalizers', finalizers: finalizers.filter((f) => f !== FOREGROUND_FINALIZER) }] };
    }
    return { actions: [] };
  }

  const actions: VmiAction[] = [];
  if (!isFinal(phase) && !finalizers.includes(FOREGROUND_FINALIZER)) {
    actions.push({ type: 'setFinalizers', finalizers: [...finalizers, FOREGROUND_FINALIZER] });
  }
  if (isFinal(phase)) {
    // A finished VMI keeps its pod (logs) but lets go of the finalizer: nothing left to stop.
    if (!pod && finalizers.includes(FOREGROUND_FINALIZER)) {
      actions.push({ type: 'setFinalizers', finalizers: finalizers.filter((f) => f !== FOREGROUND_FINALIZER) });
    }
    return { actions };
  }

  const spec = defaultVmiSpec(vmi.spec, vmi.metadata);
  const notReady = (reason: string, message?: string): ConditionInput => ({ type: ConditionType.Ready, status: 'False', reason, ...(message ? { message } : {}) });

  const problems = validateVmiSpec(spec);
  if (problems.length > 0) {
    const message = problems.join('; ');
    const status = statusFrom(observed, { phase: VmiPhase.Failed, reason: 'InvalidSpec', conditions: [notReady('InvalidSpec', message)] }, spec);
    return { actions: [...actions, ...patchIfChanged(observed, status), { type: 'event', eventType: 'Warning', reason: 'FailedCreate', message }] };
  }

  if (!pod) {
    if (phase !== undefined && StartedPhases.includes(phase)) {
      const message = 'the launcher pod disappeared';
      const status = statusFrom(observed, { phase: VmiPhase.Failed, reason: ConditionReason.PodNotExists, conditions: [notReady(ConditionReason.PodNotExists, message)] }, spec);
      return { actions: [...actions, ...patchIfChanged(observed, status), { type: 'event', eventType: 'Warning', reason: 'Stopped', message }] };
    }
    const states = dataVolumeStates(vmi, observed.dataVolumes);
    const failed = states.find((s) => s.kind === 'failed');
    if (failed) {
      const message = describeDvState(failed);
      const reason = ConditionReason.FailedDataVolumeImport;
      const status = statusFrom(observed, { phase: VmiPhase.Failed, reason, conditions: [notReady(reason, message.slice(0, 1024))] }, spec);
      return { actions: [...actions, ...patchIfChanged(observed, status), { type: 'event', eventType: 'Warning', reason, message: message.slice(0, 512) }] };
    }
    const blocking = claimsBlocking(vmi, observed.claims, states);
    if (blocking) {
      const waiting = waitingClaims(vmi, observed.claims);
      const conditions: ConditionInput[] = [notReady(ConditionReason.PodNotExists), blocking];
      if (waiting.length > 0) {
        const temp = observed.provisioningPod;
        conditions.push({ type: ConditionType.Provisioning, status: 'True', reason: ConditionReason.WaitForFirstConsumer, message: provisioningMessage(waiting, temp) });
        if (!temp) {
          const created = buildProvisioningPod({ ...vmi, spec }, claimInfo(observed.claims), waiting, config);
          actions.push(
            { type: 'createPod', pod: created },
            { type: 'event', eventType: 'Normal', reason: 'SuccessfulCreate', message: `Created temporary pod ${created.metadata?.name ?? ''} to bind PVC ${waiting.join(', ')} (WaitForFirstConsumer)` },
          );
        }
      }
      const status = statusFrom(observed, { phase: VmiPhase.Pending, conditions }, spec);
      return { actions: [...actions, ...patchIfChanged(observed, status)] };
    }
    const defaulted: VirtualMachineInstance = { ...vmi, spec };
    const created = buildLauncherPod(defaulted, claimInfo(observed.claims), config);
    const status = statusFrom(observed, { phase: VmiPhase.Scheduling, conditions: [notReady(ConditionReason.GuestNotRunning)] }, spec);
    return {
      actions: [
        ...actions,
        { type: 'createPod', pod: created },
        ...patchIfChanged(observed, status),
        { type: 'event', eventType: 'Normal', reason: 'SuccessfulCreate', message: `Created virtual machine pod ${created.metadata?.name ?? ''}` },
      ],
    };
  }

  const podPhase = pod.status?.phase;
  const nodeName = pod.spec?.nodeName;
  const podIP = pod.status?.podIP;
  const emulation = emulationCondition(observed);
  let desired: Desired;
  let event: VmiAction | undefined;
  if (podPhase === 'Succeeded') {
    desired = { phase: VmiPhase.Succeeded, conditions: [notReady(ConditionReason.GuestNotRunning, 'the guest shut down')] };
    event = { type: 'event', eventType: 'Normal', reason: 'Stopped', message: 'The virtual machine was shut down.' };
  } else if (podPhase === 'Failed') {
    const reason = observed.report?.reason ?? 'LauncherFailed';
    const message = observed.report?.message ?? pod.status?.containerStatuses?.[0]?.state?.terminated?.message ?? pod.status?.message ?? 'the launcher pod failed';
    desired = { phase: VmiPhase.Failed, reason, conditions: [notReady(reason, message.slice(0, 1024))] };
    event = { type: 'event', eventType: 'Warning', reason: 'Stopped', message: `The virtual machine failed: ${message.slice(0, 512)}` };
  } else if (podPhase === 'Running' && podReady(pod) && !pod.metadata?.deletionTimestamp) {
    desired = {
      phase: VmiPhase.Running,
      conditions: [{ type: ConditionType.Ready, status: 'True' }, ...emulation],
      ...(nodeName ? { nodeName } : {}),
      ...(podIP ? { podIP } : {}),
    };
    if (phase !== VmiPhase.Running) event = { type: 'event', eventType: 'Normal', reason: 'Started', message: 'VirtualMachineInstance started.' };
  } else if (podPhase === 'Running') {
    const terminating = pod.metadata?.deletionTimestamp !== undefined && pod.metadata?.deletionTimestamp !== null;
    desired = {
      // Once running, a guest that is being stopped stays Running until the pod ends.
      phase: phase === VmiPhase.Running ? VmiPhase.Running : VmiPhase.Scheduled,
      conditions: [notReady(terminating ? ConditionReason.PodTerminating : ConditionReason.GuestNotRunning), ...emulation],
      ...(nodeName ? { nodeName } : {}),
      ...(podIP ? { podIP } : {}),
    };
  } else {
    const scheduled = pod.status?.conditions?.find((c) => c.type === 'PodScheduled');
    // A launcher the kubelet cannot start says why in Ready (the kubelet keeps retrying: not Failed).
    const waiting = pod.metadata?.deletionTimestamp ? undefined : launcherWaiting(pod);
    desired = {
      phase: VmiPhase.Scheduling,
      conditions: [
        pod.metadata?.deletionTimestamp
          ? notReady(ConditionReason.PodTerminating)
          : waiting ? notReady(waiting.reason, waiting.message) : notReady(ConditionReason.GuestNotRunning),
        ...(scheduled && scheduled.status !== 'True'
          ? [{ type: ConditionType.PodScheduled, status: scheduled.status as Condition['status'], ...(scheduled.reason ? { reason: scheduled.reason } : {}), ...(scheduled.message ? { message: scheduled.message } : {}) }]
          : []),
      ],
    };
  }
  const status = statusFrom(observed, desired, spec);
  const patch = patchIfChanged(observed, status);
  const announce = event && phase !== desired.phase ? [event] : [];
  return {
    actions: [...actions, ...patch, ...announce],
    ...(podPhase === 'Running' && podIP && observed.report?.accel === undefined ? { scrape: { podIP } } : {}),
  };
}

export { launcherPodName, provisioningPodName };
