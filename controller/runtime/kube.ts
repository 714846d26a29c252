/**
 * The controller's only writes to the cluster: create/delete by deterministic name (AlreadyExists
 * and NotFound count as done), merge-patches of the PVC's annotations, and events.
 */

import {
  type CoreV1Api,
  type CoreV1Event,
  PatchStrategy,
  setHeaderOptions,
  type V1PersistentVolumeClaim,
} from '@kubernetes/client-node';
import type { Action } from '../import/plan.js';

export const COMPONENT = 'ferry-controller';

function status(err: unknown): number | undefined {
  const e = err as { code?: unknown; statusCode?: unknown; body?: unknown };
  if (typeof e.code === 'number') return e.code;
  if (typeof e.statusCode === 'number') return e.statusCode;
  return undefined;
}

/** Runs `op`; the HTTP status `ok` (409 on a create, 404 on a delete) counts as done. */
export async function tolerate<T>(op: Promise<T>, ok: number): Promise<void> {
  try {
    await op;
  } catch (err) {
    if (status(err) !== ok) throw err;
  }
}

export class ClusterWriter {
  constructor(
    private readonly core: CoreV1Api,
    private readonly now: () => Date = () => new Date(),
  ) {}

  async apply(pvc: V1PersistentVolumeClaim, action: Action): Promise<void> {
    const namespace = pvc.metadata?.namespace ?? '';
    const name = pvc.metadata?.name ?? '';
    switch (action.type) {
      case 'createPod':
        return tolerate(this.core.createNamespacedPod({ namespace, body: action.pod }), 409);
      case 'deletePod':
        return tolerate(this.core.deleteNamespacedPod({ namespace, name: action.name, gracePeriodSeconds: 0 }), 404);
      case 'createScratchPvc':
        return tolerate(this.core.createNamespacedPersistentVolumeClaim({ namespace, body: action.pvc }), 409);
      case 'deleteScratchPvc':
        return tolerate(this.core.deleteNamespacedPersistentVolumeClaim({ namespace, name: action.name }), 404);
      case 'annotate':
        await this.annotate(namespace, name, action.annotations);
        return;
      case 'event':
        await this.event(pvc, action.eventType, action.reason, action.message);
        return;
    }
  }

  async annotate(namespace: string, name: string, annotations: Readonly<Record<string, string | null>>): Promise<void> {
    await this.core.patchNamespacedPersistentVolumeClaim(
      { namespace, name, body: { metadata: { annotations } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
  }

  async event(pvc: V1PersistentVolumeClaim, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    await recordEvent(this.core, { apiVersion: 'v1', kind: 'PersistentVolumeClaim', metadata: pvc.metadata ?? {} }, type, reason, message, this.now());
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
  await core.createNamespacedEvent({ namespace, body });
}
