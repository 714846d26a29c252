/** One reconcile of an upload target: read the caches, plan, apply (level-triggered, as controller/import/reconcile.ts). */

import type { V1PersistentVolumeClaim, V1Pod, V1Service, V1StorageClass } from '@kubernetes/client-node';
import type { Logger } from '../../src/logging.js';
import { uploadServiceName } from '../../src/contract/upload-api.js';
import { scratchPvcName } from '../import/importer-pod.js';
import { splitKey } from '../runtime/keys.js';
import { waitsForFirstConsumer } from '../runtime/binding.js';
import type { HandlerResult } from '../runtime/work-queue.js';
import type { UploadWriter } from './apply.js';
import { planUpload } from './plan.js';
import type { ControllerConfig } from '../config.js';
import { configWithSettings, type SettingsSource } from '../runtime/cdi-settings.js';
import { uploadPodName } from './upload-pod.js';

export interface UploadCaches {
  getPvc(namespace: string, name: string): V1PersistentVolumeClaim | undefined;
  getPod(namespace: string, name: string): V1Pod | undefined;
  getService(namespace: string, name: string): V1Service | undefined;
  getStorageClass(name: string): V1StorageClass | undefined;
}

export interface UploadReconcilerDeps {
  readonly caches: UploadCaches;
  readonly writer: Pick<UploadWriter, 'apply'>;
  readonly config: ControllerConfig;
  readonly logger: Logger;
  readonly now: () => number;
  /** CDIConfig's settings (pod resources, filesystem overhead), read on every reconcile; absent: the flags. */
  readonly settings?: SettingsSource;
}

export async function reconcileUpload(key: string, deps: UploadReconcilerDeps): Promise<HandlerResult> {
  const [namespace, name] = splitKey(key);
  const pvc = deps.caches.getPvc(namespace, name);
  if (!pvc) return {};
  const plan = planUpload(
    {
      pvc,
      pod: deps.caches.getPod(namespace, uploadPodName(name)),
      service: deps.caches.getService(namespace, uploadServiceName(name)),
      scratchPvc: deps.caches.getPvc(namespace, scratchPvcName(name)),
      waitForFirstConsumer: waitsForFirstConsumer(pvc, pvc.spec?.storageClassName ? deps.caches.getStorageClass(pvc.spec.storageClassName) : undefined),
      now: deps.now(),
      ...(deps.settings ? { settings: deps.settings.current() } : {}),
    },
    configWithSettings(deps.config, deps.settings?.current(), pvc.spec?.storageClassName),
  );
  const log = deps.logger.child({ pvc: key });
  for (const action of plan.actions) {
    if (action.type === 'event') log.info({ reason: action.reason, eventType: action.eventType }, action.message);
    else if (action.type !== 'annotate') log.info({ action: action.type }, 'applying');
    await deps.writer.apply(pvc, action);
  }
  return plan.requeueAfterMs !== undefined ? { requeueAfterMs: plan.requeueAfterMs } : {};
}
