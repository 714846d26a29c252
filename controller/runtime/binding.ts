/**
 * WaitForFirstConsumer, as CDI honours it (feature gate HonorWaitForFirstConsumer, on by default):
 * a PVC whose storage class binds on first consumer is left alone until something that uses it is
 * scheduled, so the volume lands on the node the workload picks — not on whichever node the
 * importer happened to land on. Nothing waits when the PVC is already bound or pre-bound to a PV,
 * or when the user asked for `cdi.kubevirt.io/storage.bind.immediate.requested` (any value).
 */

import type { V1PersistentVolumeClaim, V1StorageClass } from '@kubernetes/client-node';
import { Annotation, EventReason } from '../../src/api/cdi.js';
import { annotate, type AnnotateAction, type EventAction, withEvent } from './pvc-status.js';

export const WAIT_FOR_FIRST_CONSUMER = 'WaitForFirstConsumer';

/** Whether a worker pod for `pvc` must wait; `storageClass` is the class the PVC names, if it exists. */
export function waitsForFirstConsumer(pvc: V1PersistentVolumeClaim, storageClass: V1StorageClass | undefined): boolean {
  if (pvc.status?.phase === 'Bound' || pvc.spec?.volumeName) return false;
  if (pvc.metadata?.annotations?.[Annotation.ImmediateBinding] !== undefined) return false;
  return storageClass?.volumeBindingMode === WAIT_FOR_FIRST_CONSUMER;
}

/** Why the PVC waits, in one line (the Bound message and the event's). */
export function waitingMessage(pvc: V1PersistentVolumeClaim): string {
  const name = pvc.metadata?.name ?? '';
  const className = pvc.spec?.storageClassName ?? '';
  return `PVC ${name} waits for a first consumer: storage class ${className} binds on first use (annotate ${Annotation.ImmediateBinding} to import now)`;
}

/** The PVC's annotations that say it waits (written by the import and upload controllers, read back by DataVolumes and VMIs). */
export function waitingAnnotations(pvc: V1PersistentVolumeClaim): Record<string, string> {
  return {
    [Annotation.BoundCondition]: 'false',
    [Annotation.BoundReason]: WAIT_FOR_FIRST_CONSUMER,
    [Annotation.BoundMessage]: waitingMessage(pvc),
  };
}

/**
 * The step the import and upload plans take while the PVC waits and no worker pod exists: mark it
 * waiting, with `also` (the controller's own annotations for that state), and say so in a Normal
 * event that goes with the change — a repeated reconcile patches nothing and repeats no event.
 * Pure: `current` is the PVC's annotations now.
 */
export function planWaiting(pvc: V1PersistentVolumeClaim, current: Readonly<Record<string, string>>, also: Readonly<Record<string, string>> = {}): Array<AnnotateAction | EventAction> {
  const changes = annotate(current, { ...waitingAnnotations(pvc), ...also });
  return [...changes, ...withEvent(changes, 'Normal', EventReason.WaitForFirstConsumer, waitingMessage(pvc))];
}

/** Once a worker starts: the waiting annotations removed, if the PVC was marked waiting. */
export function stopWaiting(current: Readonly<Record<string, string>>): Readonly<Record<string, null>> {
  return current[Annotation.BoundReason] === WAIT_FOR_FIRST_CONSUMER ? NOT_WAITING : {};
}

/** The same keys, removed (a merge-patch with nulls). */
export const NOT_WAITING: Readonly<Record<string, null>> = Object.freeze({
  [Annotation.BoundCondition]: null,
  [Annotation.BoundReason]: null,
  [Annotation.BoundMessage]: null,
});

/** Whether the PVC is marked as waiting for a first consumer and still is not bound. */
export function markedWaiting(pvc: V1PersistentVolumeClaim | undefined): boolean {
  return pvc !== undefined && pvc.status?.phase !== 'Bound' && pvc.metadata?.annotations?.[Annotation.BoundReason] === WAIT_FOR_FIRST_CONSUMER;
}
