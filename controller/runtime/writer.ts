/**
 * What every controller's writes share: `tolerate` (AlreadyExists on a create of a deterministic
 * name, NotFound on a delete, count as done), the patch content types, and events. Each controller's
 * own apply (controller/import/apply.ts, controller/vm/apply.ts) maps its plan's actions onto these.
 */

import { type CoreV1Api, type CoreV1Event, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { isKube, type KubeError, kubeCall } from './errors.js';

export const COMPONENT = 'ferry-controller';

export const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
export const jsonPatch = setHeaderOptions('Content-Type', PatchStrategy.JsonPatch);

/** Runs `op`; a failure of one of the kinds in `done` (e.g. AlreadyExists on a create) counts as done. */
export async function tolerate<T>(op: Promise<T>, ...done: readonly KubeError[]): Promise<void> {
  try {
    await op;
  } catch (err) {
    if (!done.some((kind) => isKube(err, kind))) throw err;
  }
}

/** The object an event is about. */
export interface Involved {
  readonly apiVersion: string;
  readonly kind: string;
  readonly metadata: { name?: string; namespace?: string; uid?: string; resourceVersion?: string };
}

/** Records an event about `obj`, from the controller, its message capped at 1 KiB. */
export async function recordEvent(core: CoreV1Api, obj: Involved, type: 'Normal' | 'Warning', reason: string, message: string, now: Date): Promise<void> {
  const namespace = obj.metadata.namespace ?? '';
  const body: CoreV1Event = {
    metadata: { generateName: `${obj.metadata.name ?? obj.kind.toLowerCase()}.`, namespace },
    involvedObject: {
      apiVersion: obj.apiVersion,
      kind: obj.kind,
      name: obj.metadata.name ?? '',
      namespace,
      uid: obj.metadata.uid ?? '',
      resourceVersion: obj.metadata.resourceVersion ?? '',
    },
    reason,
    message: message.slice(0, 1024),
    type,
    source: { component: COMPONENT },
    reportingComponent: COMPONENT,
    reportingInstance: COMPONENT,
    firstTimestamp: now,
    lastTimestamp: now,
    count: 1,
  };
  await kubeCall({ verb: 'create', resource: 'events', namespace }, () => core.createNamespacedEvent({ namespace, body }));
}
