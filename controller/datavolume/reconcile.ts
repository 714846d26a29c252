/**
 * One DataVolume reconcile: read the caches, plan, apply. Level-triggered: whatever woke it, it
 * looks at the DataVolume and the PVC of its name. A PVC missing from the cache for a DataVolume
 * that already has one is asked of the apiserver first, so a cache that lags behind the create
 * never reads as "deleted underneath".
 */

import type { V1PersistentVolumeClaim } from '@kubernetes/client-node';
import type { DataVolume } from '../../src/api/datavolume.js';
import type { Logger } from '../../src/logging.js';
import { splitKey } from '../runtime/keys.js';
import type { HandlerResult } from '../runtime/work-queue.js';
import type { DataVolumeWriter } from './apply.js';
import { type DvConfig, planDataVolume } from './plan.js';

export interface DvCaches {
  getDataVolume(namespace: string, name: string): DataVolume | undefined;
  getPvc(namespace: string, name: string): V1PersistentVolumeClaim | undefined;
}

export interface DvReconcileDeps {
  readonly caches: DvCaches;
  readonly writer: Pick<DataVolumeWriter, 'apply'>;
  readonly config: DvConfig;
  readonly logger: Logger;
  readonly now: () => number;
  /** Reads a PVC from the apiserver (undefined when it does not exist). */
  readonly readPvc: (namespace: string, name: string) => Promise<V1PersistentVolumeClaim | undefined>;
}

export async function reconcileDataVolume(key: string, deps: DvReconcileDeps): Promise<HandlerResult> {
  const [namespace, name] = splitKey(key);
  const dv = deps.caches.getDataVolume(namespace, name);
  if (!dv) return {};
  let pvc = deps.caches.getPvc(namespace, name);
  if (!pvc && dv.status?.claimName) pvc = await deps.readPvc(namespace, name);
  const plan = planDataVolume({ dv, ...(pvc ? { pvc } : {}), now: deps.now() }, deps.config);
  const log = deps.logger.child({ dv: key });
  for (const action of plan.actions) {
    if (action.type === 'event') log.info({ reason: action.reason, eventType: action.eventType }, action.message);
    else if (action.type === 'patchStatus') log.debug({ phase: action.status.phase }, 'status');
    else log.info({ action: action.type }, 'applying');
    await deps.writer.apply(dv, action);
  }
  return {};
}
