/**
 * What the PVC-level controllers (import, upload) share when they mirror a worker pod onto the
 * PVC: only-changed annotation patches, events that go with a change, CDI's running-condition
 * annotations, a pending pod's waiting reason, a finished pod's termination message, and the
 * counting of failed pods (backoff, retries, giving up). Pure.
 */

import type { V1Pod } from '@kubernetes/client-node';
import { Annotation, PodPhase } from '../../src/api/cdi.js';
import { backoffMs } from '../../src/backoff.js';
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

export interface RetrySettings {
  readonly maxRetries: number;
  readonly retryBackoffMs: number;
  readonly retryBackoffMaxMs: number;
}

/** Backoff before attempt `restarts + 1`: base·2^(restarts−1), capped. */
export function retryDelay(restarts: number, config: RetrySettings): number {
  return backoffMs(restarts, config.retryBackoffMs, config.retryBackoffMaxMs);
}

/** How long a new worker pod must still wait after the last counted failure (0: start now). */
export function backoffRemaining(current: Readonly<Record<string, string>>, now: number, config: RetrySettings): number {
  const lastFailure = Date.parse(current[Annotation.LastFailureTime] ?? '');
  if (!Number.isFinite(lastFailure)) return 0;
  const restarts = Number(current[Annotation.PodRestarts] ?? '0') || 0;
  return Math.max(0, lastFailure + retryDelay(restarts, config) - now);
}

export interface WorkerFailure {
  readonly code: string;
  readonly message: string;
  readonly retryable: boolean;
}

/**
 * A failed worker pod, counted once: already counted (the cache still shows the pod), retried after
 * a backoff while retryable and under `maxRetries`, else given up. `annotations` are the PVC's.
 */
export type FailureVerdict =
  | { readonly kind: 'counted' }
  | { readonly kind: 'retry'; readonly restarts: number; readonly delayMs: number; readonly annotations: Record<string, string> }
  | { readonly kind: 'give-up'; readonly why: string; readonly annotations: Record<string, string> };

export function countFailure(current: Readonly<Record<string, string>>, failure: WorkerFailure, podUid: string, now: number, config: RetrySettings): FailureVerdict {
  if (podUid !== '' && current[Annotation.LastFailedPod] === podUid) return { kind: 'counted' };
  const restarts = (Number(current[Annotation.PodRestarts] ?? '0') || 0) + 1;
  if (failure.retryable && restarts <= config.maxRetries) {
    const delayMs = retryDelay(restarts, config);
    return {
      kind: 'retry',
      restarts,
      delayMs,
      annotations: {
        [Annotation.PodRestarts]: String(restarts),
        [Annotation.PodPhase]: PodPhase.Pending,
        [Annotation.ErrorCode]: failure.code,
        [Annotation.LastFailureTime]: new Date(now).toISOString(),
        [Annotation.LastFailedPod]: podUid,
        ...running('false', failure.code, `${failure.message} (retry ${restarts} of ${config.maxRetries} in ${Math.round(delayMs / 1000)}s)`),
      },
    };
  }
  const why = failure.retryable ? `${failure.message} (gave up after ${config.maxRetries} retries)` : failure.message;
  return {
    kind: 'give-up',
    why,
    annotations: {
      [Annotation.PodPhase]: PodPhase.Failed,
      [Annotation.FatalError]: 'true',
      [Annotation.ErrorCode]: failure.code,
      [Annotation.LastFailedPod]: podUid,
      ...running('false', failure.code, why),
    },
  };
}
