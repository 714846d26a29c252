/**
 * A DataVolume's status from its PVC, as pure functions: phase (through the source's route),
 * progress, restartCount, claimName, and the conditions Ready, Bound and Running with CDI's reasons
 * and messages. Transition times move only when a status changes, heartbeat times when its reason
 * or message does (CDI's updateCondition), so an unchanged PVC yields an unchanged status.
 */

import type { V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { Annotation, UploadAnnotation } from '../../src/api/cdi.js';
import {
  type ConditionStatus,
  type DataVolumeCondition,
  type DataVolumeStatus,
  DvConditionType,
  DvPhase,
  DvReason,
} from '../../src/api/datavolume.js';
import { CLONE_REQUEST_ANNOTATION } from '../../src/contract/clone-token.js';
import { markedWaiting } from '../runtime/binding.js';
import type { SourceRoute } from './claim.js';

/** A condition before its times are set. */
export interface ConditionWanted {
  readonly type: DvConditionType;
  readonly status: ConditionStatus;
  readonly reason: string;
  readonly message: string;
}

export const cond = (type: DvConditionType, status: ConditionStatus, reason = '', message = ''): ConditionWanted => ({ type, status, reason, message });

/** The conditions with times carried over or set to `now` (ISO), in the order Ready, Bound, Running. */
export function withTimes(current: readonly DataVolumeCondition[] | undefined, wanted: readonly ConditionWanted[], now: string): DataVolumeCondition[] {
  return wanted.map((w) => {
    const old = current?.find((c) => c.type === w.type);
    const sameStatus = old?.status === w.status;
    const sameText = sameStatus && (old?.reason ?? '') === w.reason && (old?.message ?? '') === w.message;
    const transition = sameStatus ? (old?.lastTransitionTime ?? now) : now;
    const heartbeat = sameText ? (old?.lastHeartbeatTime ?? now) : now;
    return {
      type: w.type,
      status: w.status,
      ...(w.reason ? { reason: w.reason } : {}),
      ...(w.message ? { message: w.message } : {}),
      lastTransitionTime: transition,
      lastHeartbeatTime: heartbeat,
    };
  });
}

/** Bound, from the PVC's phase (CDI's messages), or from `storage.condition.bound*` while the PVC is not Bound. */
export function boundCondition(pvc: V1PersistentVolumeClaim): ConditionWanted {
  const name = pvc.metadata?.name ?? '';
  const a = pvc.metadata?.annotations ?? {};
  if (pvc.status?.phase !== 'Bound' && a[Annotation.BoundCondition] !== undefined) {
    const status: ConditionStatus = a[Annotation.BoundCondition]!.toLowerCase() === 'true' ? 'True' : 'False';
    return cond(DvConditionType.Bound, status, a[Annotation.BoundReason] ?? '', a[Annotation.BoundMessage] ?? '');
  }
  switch (pvc.status?.phase) {
    case 'Bound':
      return cond(DvConditionType.Bound, 'True', DvReason.Bound, `PVC ${name} Bound`);
    case 'Lost':
      return cond(DvConditionType.Bound, 'False', DvReason.ClaimLost, 'Claim Lost');
    default:
      return cond(DvConditionType.Bound, 'False', DvReason.Pending, `PVC ${name} Pending`);
  }
}

/** Running, from the import controller's running annotations; a failure's message leads with its error code. */
export function runningCondition(a: Readonly<Record<string, string>>, failed: boolean): ConditionWanted {
  const value = a[Annotation.RunningCondition]?.toLowerCase();
  const status: ConditionStatus = value === 'true' ? 'True' : value === undefined || value === 'false' ? 'False' : 'Unknown';
  const reason = a[Annotation.RunningReason] ?? '';
  let message = a[Annotation.RunningMessage] ?? '';
  const code = a[Annotation.ErrorCode];
  if (failed && code && !message.startsWith(code)) message = message ? `${code}: ${message}` : code;
  return cond(DvConditionType.Running, status, reason, message);
}

/** The whole status for a DataVolume whose PVC exists and is its own. */
export function statusFromClaim(pvc: V1PersistentVolumeClaim, route: SourceRoute | undefined): Omit<DataVolumeStatus, 'conditions'> & { conditions: ConditionWanted[] } {
  const a = pvc.metadata?.annotations ?? {};
  const name = pvc.metadata?.name ?? '';
  // An adopted PVC that asks for no import, upload or clone holds its data already (CDI's populated-claim rule).
  const requested = a[Annotation.Endpoint] !== undefined || a[Annotation.Source] !== undefined || a[UploadAnnotation.Target] !== undefined || a[CLONE_REQUEST_ANNOTATION] !== undefined;
  const worker = requested ? route?.phase(a) : DvPhase.Succeeded;
  const phase = worker ?? (pvc.status?.phase === 'Bound' ? DvPhase.PVCBound : markedWaiting(pvc) ? DvPhase.WaitForFirstConsumer : DvPhase.Pending);
  const running = requested ? runningCondition(a, phase === DvPhase.Failed) : cond(DvConditionType.Running, 'False', DvReason.Completed, 'the PVC was populated before the DataVolume adopted it');
  const ready =
    phase === DvPhase.Succeeded
      ? cond(DvConditionType.Ready, 'True')
      : running.status === 'True'
        ? cond(DvConditionType.Ready, 'False', DvReason.TransferRunning)
        : cond(DvConditionType.Ready, 'False');
  return {
    phase,
    progress: phase === DvPhase.Succeeded ? '100.0%' : (a[Annotation.Progress] ?? 'N/A'),
    restartCount: Number(a[Annotation.PodRestarts] ?? '0') || 0,
    claimName: name,
    conditions: [ready, boundCondition(pvc), running],
  };
}
