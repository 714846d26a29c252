/**
 * One reconcile: read the caches, plan, apply. Level-triggered: whatever event woke it, it looks
 * at the whole current state of one PVC.
 */

import type { V1PersistentVolumeClaim, V1Pod, V1StorageClass } from '@kubernetes/client-node';
import { Annotation } from '../../src/api/cdi.js';
import type { Logger } from '../../src/logging.js';
import type { ControllerConfig } from '../config.js';
import type { SettingsSource } from '../runtime/cdi-settings.js';
import { waitsForFirstConsumer } from '../runtime/binding.js';
import { splitKey } from '../runtime/keys.js';
import type { HandlerResult } from '../runtime/work-queue.js';
import type { ImportWriter } from './apply.js';
import { importerPodName, ownerUid, scratchPvcName } from './importer-pod.js';
import { planImport } from './plan.js';
import { formatProgress } from './progress-scrape.js';

export interface Caches {
  getPvc(namespace: string, name: string): V1PersistentVolumeClaim | undefined;
  getPod(namespace: string, name: string): V1Pod | undefined;
  getStorageClass(name: string): V1StorageClass | undefined;
}

export interface ReconcilerDeps {
  readonly caches: Caches;
  readonly writer: Pick<ImportWriter, 'apply' | 'annotate'>;
  readonly config: ControllerConfig;
  readonly logger: Logger;
  readonly now: () => number;
  readonly scrape: (podIP: string, port: number, ownerUid: string) => Promise<number | undefined>;
  /** CDIConfig's settings, read on every reconcile; absent: the flags. */
  readonly settings?: SettingsSource;
}

export async function reconcile(key: string, deps: ReconcilerDeps): Promise<HandlerResult> {
  const [namespace, name] = splitKey(key);
  const pvc = deps.caches.getPvc(namespace, name);
  if (!pvc) return {};
  const plan = planImport(
    {
      pvc,
      pod: deps.caches.getPod(namespace, importerPodName(name)),
      scratchPvc: deps.caches.getPvc(namespace, scratchPvcName(name)),
      waitForFirstConsumer: waitsForFirstConsumer(pvc, pvc.spec?.storageClassName ? deps.caches.getStorageClass(pvc.spec.storageClassName) : undefined),
      now: deps.now(),
      ...(deps.settings ? { settings: deps.settings.current() } : {}),
    },
    deps.config,
  );
  const log = deps.logger.child({ pvc: key });
  for (const action of plan.actions) {
    if (action.type === 'event') log.info({ reason: action.reason, eventType: action.eventType }, action.message);
    else if (action.type !== 'annotate') log.info({ action: action.type }, 'applying');
    await deps.writer.apply(pvc, action);
  }
  if (plan.scrape) {
    const percent = await deps.scrape(plan.scrape.podIP, deps.config.importerMetricsPort, ownerUid(pvc));
    if (percent !== undefined) {
      const text = formatProgress(percent);
      if (pvc.metadata?.annotations?.[Annotation.Progress] !== text) await deps.writer.annotate(namespace, name, { [Annotation.Progress]: text });
    }
  }
  return plan.requeueAfterMs !== undefined ? { requeueAfterMs: plan.requeueAfterMs } : {};
}
