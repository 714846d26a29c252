/**
 * One DataVolume reconcile: read the caches, plan, apply. Level-triggered: whatever woke it, it
 * looks at the DataVolume and the PVC of its name. A PVC missing from the cache for a DataVolume
 * that already has one is asked of the apiserver first, so a cache that lags behind the create
 * never reads as "deleted underneath".
 */

import type { V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { cloneSourceOfDv, type DataVolume } from '../../src/api/datavolume.js';
import type { Logger } from '../../src/logging.js';
import { splitKey } from '../runtime/keys.js';
import type { HandlerResult } from '../runtime/work-queue.js';
import type { DataVolumeWriter } from './apply.js';
import { type DvConfig, planDataVolume } from './plan.js';
import { dataSourcePvc, type DataSource } from '../../src/api/datasource.js';
import { CLONE_SEAL_ANNOTATION, judgeClone, sealClone } from '../clone/authorization.js';
import type { CloneKeySource } from '../clone/keys.js';
import type { DvCloneFacts } from './clone.js';
import { isOwnedBy } from './claim.js';
import { Annotation, PodPhase } from '../../src/api/cdi.js';
import { CLONE_REQUEST_ANNOTATION, parseCloneRequest } from '../../src/contract/clone-token.js';

const CLONE_WAIT_MS = 10_000;

/** What the clone case reads: the webhook's public key, the controller's seal key, and DataSources. */
export interface DvCloneDeps {
  readonly keys: CloneKeySource;
  readDataSource(namespace: string, name: string): Promise<DataSource | undefined>;
}

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
  /** Without it a cloning DataVolume waits (its source is never resolved). */
  readonly clone?: DvCloneDeps;
}

/** For a cloning DataVolume about to get its PVC: the source resolved and read, the token checked. */
async function cloneFacts(dv: DataVolume, deps: DvReconcileDeps): Promise<DvCloneFacts | undefined> {
  const namespace = dv.metadata.namespace ?? '';
  const wanted = cloneSourceOfDv(dv.spec, namespace);
  if (!wanted || !deps.clone) return undefined;
  let source = { namespace: wanted.namespace, name: wanted.name };
  if (wanted.kind === 'dataSource') {
    const ds = await deps.clone.readDataSource(wanted.namespace, wanted.name);
    const pvc = ds && dataSourcePvc(ds);
    if (!pvc) return { problem: `DataSource ${wanted.namespace}/${wanted.name} ${ds ? 'names no spec.source.pvc' : 'not found'}` };
    source = pvc;
  }
  const sourcePvc = deps.caches.getPvc(source.namespace, source.name) ?? (await deps.readPvc(source.namespace, source.name));
  // The DataVolume's seal once it has one (ADR 0014: the token's five minutes are over by then), else its token.
  const annotations = dv.metadata.annotations ?? {};
  const clone = { source, target: { namespace, name: dv.metadata.name ?? '' } };
  const uid = dv.metadata.uid ?? '';
  const sealKey = await deps.clone.keys.sealKey();
  const tokenKey = annotations[CLONE_SEAL_ANNOTATION] === undefined ? await deps.clone.keys.tokenKey() : undefined;
  const verdict = judgeClone(annotations, uid, clone, { ...(tokenKey ? { tokenKey } : {}), sealKey }, deps.now());
  return { source, verdict, ...(uid !== '' ? { seal: sealClone(sealKey, uid, clone) } : {}), ...(sourcePvc ? { sourcePvc } : {}) };
}

/**
 * For a DataVolume's unsealed clone PVC: the PVC's seal, when the DataVolume's own seal holds for
 * the PVC's clone request (the source the DataVolume controller wrote there). Else undefined: the
 * clone controller then goes by the PVC's token.
 */
async function pvcSeal(dv: DataVolume, pvc: V1PersistentVolumeClaim, deps: DvReconcileDeps): Promise<string | undefined> {
  const a = pvc.metadata?.annotations ?? {};
  const source = parseCloneRequest(a[CLONE_REQUEST_ANNOTATION] ?? '');
  const dvSeal = dv.metadata.annotations?.[CLONE_SEAL_ANNOTATION];
  if (!deps.clone || !source || dvSeal === undefined || a[CLONE_SEAL_ANNOTATION] !== undefined || a[Annotation.PodPhase] === PodPhase.Succeeded || a[Annotation.FatalError] === 'true' || !isOwnedBy(pvc, dv)) return undefined;
  const sealKey = await deps.clone.keys.sealKey();
  const verdict = judgeClone({ [CLONE_SEAL_ANNOTATION]: dvSeal }, dv.metadata.uid ?? '', { source, target: { namespace: dv.metadata.namespace ?? '', name: dv.metadata.name ?? '' } }, { sealKey }, deps.now());
  const uid = pvc.metadata?.uid ?? '';
  return verdict.kind === 'sealed' && uid !== '' ? sealClone(sealKey, uid, { source, target: { namespace: pvc.metadata?.namespace ?? '', name: pvc.metadata?.name ?? '' } }) : undefined;
}

export async function reconcileDataVolume(key: string, deps: DvReconcileDeps): Promise<HandlerResult> {
  const [namespace, name] = splitKey(key);
  const dv = deps.caches.getDataVolume(namespace, name);
  if (!dv) return {};
  let pvc = deps.caches.getPvc(namespace, name);
  if (!pvc && dv.status?.claimName) pvc = await deps.readPvc(namespace, name);
  const clone = !pvc && !dv.status?.claimName && !dv.metadata.deletionTimestamp ? await cloneFacts(dv, deps) : undefined;
  const sealForPvc = pvc ? await pvcSeal(dv, pvc, deps) : undefined;
  const plan = planDataVolume({ dv, ...(pvc ? { pvc } : {}), ...(clone ? { clone } : {}), ...(sealForPvc ? { pvcSeal: sealForPvc } : {}), now: deps.now() }, deps.config);
  const log = deps.logger.child({ dv: key });
  for (const action of plan.actions) {
    if (action.type === 'event') log.info({ reason: action.reason, eventType: action.eventType }, action.message);
    else if (action.type === 'patchStatus') log.debug({ phase: action.status.phase }, 'status');
    else log.info({ action: action.type }, 'applying');
    await deps.writer.apply(dv, action);
  }
  // A clone waiting for its source (nothing watched wakes it) looks again.
  const waiting = clone !== undefined && clone.verdict?.kind !== 'refused' && !plan.actions.some((a) => a.type === 'createPvc');
  return waiting ? { requeueAfterMs: CLONE_WAIT_MS } : {};
}
