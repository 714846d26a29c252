/**
 * One reconcile of a clone target PVC: read the caches (the source PVC from the apiserver when it
 * is not cached: its namespace may be unwatched), the pods in the source namespace while the clone
 * has not started, the keys, the verdict; plan; apply. Level-triggered.
 */

import type { V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';
import type { UploadCaches } from '../upload/reconcile.js';
import { Annotation, PodPhase } from '../../src/api/cdi.js';
import { parseCloneRequest } from '../../src/contract/clone-token.js';
import { uploadServiceName } from '../../src/contract/upload-api.js';
import type { Logger } from '../../src/logging.js';
import type { ControllerConfig } from '../config.js';
import { configWithSettings, type SettingsSource } from '../runtime/cdi-settings.js';
import { splitKey } from '../runtime/keys.js';
import type { HandlerResult } from '../runtime/work-queue.js';
import type { CloneWriter } from './apply.js';
import { CLONE_SEAL_ANNOTATION, judgeClone, sealClone } from './authorization.js';
import { cloneOf, sourcePodName, targetPodName } from './clone-pods.js';
import type { CloneKeySource } from './keys.js';
import { cloneRequestOf, planClone } from './plan.js';
import { formatProgress, scrapeProgress } from '../import/progress-scrape.js';

/** The upload controller's caches: the PVCs, the (clone) pods, the Services. */
export type CloneCaches = UploadCaches;

export interface CloneReconcileDeps {
  readonly caches: CloneCaches;
  readonly writer: Pick<CloneWriter, 'apply'>;
  readonly keys: CloneKeySource;
  readonly config: ControllerConfig;
  /** CDIConfig's settings (the worker pods' resources), read on every reconcile; absent: the flags. */
  readonly settings?: SettingsSource;
  readonly logger: Logger;
  readonly now: () => number;
  readPvc(namespace: string, name: string): Promise<V1PersistentVolumeClaim | undefined>;
  listPods(namespace: string): Promise<readonly V1Pod[]>;
  /** Reads a target's progress (default: the import controller's scraper, the same contract). */
  readonly scrape?: (podIP: string, port: number, ownerUid: string) => Promise<number | undefined>;
}

export async function reconcileClone(key: string, deps: CloneReconcileDeps): Promise<HandlerResult> {
  const [namespace, name] = splitKey(key);
  const pvc = deps.caches.getPvc(namespace, name);
  const request = pvc && cloneRequestOf(pvc);
  if (!pvc || request === undefined) return {};
  const source = parseCloneRequest(request);
  const a = pvc.metadata?.annotations ?? {};
  const over = a[Annotation.PodPhase] === PodPhase.Succeeded || a[Annotation.FatalError] === 'true' || pvc.metadata?.deletionTimestamp !== undefined;
  const uid = pvc.metadata?.uid ?? '';
  let facts = {};
  if (source) {
    const targetPod = deps.caches.getPod(namespace, targetPodName(name));
    const sourcePod = deps.caches.getPod(source.namespace, sourcePodName(uid));
    facts = { ...(targetPod ? { targetPod } : {}), ...(sourcePod ? { sourcePod } : {}) };
    if (!over) {
      const clone = cloneOf(pvc, source);
      const sealKey = await deps.keys.sealKey();
      const tokenKey = a[CLONE_SEAL_ANNOTATION] === undefined ? await deps.keys.tokenKey() : undefined;
      const verdict = judgeClone(a, uid, clone, { ...(tokenKey ? { tokenKey } : {}), sealKey }, deps.now());
      const sourcePvc = deps.caches.getPvc(source.namespace, source.name) ?? (await deps.readPvc(source.namespace, source.name));
      // Who else uses the source matters only before the source pod starts (CloneSourceInUse, the RWO node).
      const sourceNamespacePods = verdict.kind === 'sealed' && !sourcePod ? await deps.listPods(source.namespace) : undefined;
      facts = { ...facts, verdict, seal: sealClone(sealKey, uid, clone), ...(sourcePvc ? { sourcePvc } : {}), ...(sourceNamespacePods ? { sourceNamespacePods } : {}) };
    }
  }
  const service = deps.caches.getService(namespace, uploadServiceName(name));
  const plan = planClone({ pvc, ...facts, ...(service ? { service } : {}), now: deps.now() }, configWithSettings(deps.config, deps.settings?.current(), pvc.spec?.storageClassName));
  const log = deps.logger.child({ pvc: key });
  for (const action of plan.actions) {
    if (action.type === 'event') log.info({ reason: action.reason, eventType: action.eventType }, action.message);
    else if (action.type !== 'annotate') log.info({ action: action.type }, 'applying');
    await deps.writer.apply(pvc, action);
  }
  if (plan.scrape) {
    const percent = await (deps.scrape ?? scrapeProgress)(plan.scrape.podIP, plan.scrape.port, plan.scrape.ownerUid);
    const text = percent === undefined ? undefined : formatProgress(percent);
    if (text !== undefined && a[Annotation.Progress] !== text) await deps.writer.apply(pvc, { type: 'annotate', annotations: { [Annotation.Progress]: text } });
  }
  return plan.requeueAfterMs !== undefined ? { requeueAfterMs: plan.requeueAfterMs } : {};
}
