/**
 * What the PVC-level controllers (import, upload) share when they mirror a worker pod onto the
 * PVC: only-changed annotation patches, events that go with a change, CDI's running-condition
 * annotations, a pending pod's waiting reason and a finished pod's termination message. Pure.
 */

import type { V1Pod } from '@kubernetes/client-node';
import { Annotation } from '../../src/api/cdi.js';
import { decodeTermination, type TerminationMessage } from '../../src/contract/termination.js';

/** Merge-patch of the PVC's annotations; null removes a key. Only changed keys are listed. */
export type AnnotateAction = { readonly type: 'annotate'; readonly annotations: Readonly<Record<string, string | null>> };
export type EventAction = { readonly type: 'event'; readonly eventType: 'Normal' | 'Warning'; readonly reason: string; readonly message: string };

export function annotate(current: Readonly<Record<string, string>>, desired: Readonly<Record<string, string | null>>): AnnotateAction[] {
  const changed: Record<string, string | null> = {};
  for (const [key, value] of Object.entries(desired)) {
    if (value === null ? key in current : current[key] !== value) changed[key] = value;
  }
  return Object.keys(changed).length > 0 ? [{ type: 'annotate', annotations: changed }] : [];
}

/** An event goes with a change of the PVC's status, so a repeated reconcile does not repeat it. */
export function withEvent(changes: readonly unknown[], eventType: 'Normal' | 'Warning', reason: string, message: string): EventAction[] {
  return changes.length > 0 ? [{ type: 'event', eventType, reason, message }] : [];
}

export function running(status: 'true' | 'false', reason: string, message: string): Record<string, string> {
  return { [Annotation.RunningCondition]: status, [Annotation.RunningReason]: reason, [Annotation.RunningMessage]: message };
}

/** The termination message of the container `name` (else the first one), if it has ended. */
export function terminationOf(pod: V1Pod, name: string): TerminationMessage | undefined {
  const status = pod.status?.containerStatuses?.find((c) => c.name === name) ?? pod.status?.containerStatuses?.[0];
  const message = status?.state?.terminated?.message;
  return message === undefined ? undefined : decodeTermination(message);
}

/** Why a pending pod is waiting, in CDI's words for image pulls. */
export function waitingReason(pod: V1Pod): { reason: string; message: string } | undefined {
  const waiting = pod.status?.containerStatuses?.[0]?.state?.waiting;
  if (!waiting?.reason) return undefined;
  if (['ImagePullBackOff', 'ErrImagePull', 'InvalidImageName'].includes(waiting.reason)) {
    return { reason: 'ImagePullFailed', message: `failed to pull image: ${pod.spec?.containers?.[0]?.image ?? ''}` };
  }
  return { reason: waiting.reason, message: waiting.message ?? '' };
}
