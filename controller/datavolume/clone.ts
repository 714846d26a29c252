/**
 * The DataVolume controller's clone case, pure: a DataVolume with `spec.source.pvc` or
 * `spec.sourceRef` (→ a DataSource → its `spec.source.pvc`) becomes a target PVC carrying CDI's
 * clone request (`k8s.io/CloneRequest: "<ns>/<name>"`) and the webhook's token (passed with the
 * DataVolume's annotations), which the clone controller (controller/clone/) carries out. The PVC
 * is created only for a DataVolume whose own token verifies for this source and target: the PVC's
 * create is admitted for the controller's service account, which may clone anything, so this is
 * where the requesting user's authorization is held to. `spec.storage` without a size takes the
 * source PVC's.
 *
 * The webhook's token lives five minutes; a DataVolume may wait far longer for its source (CDI's
 * "extended token"). So the first good verification seals the DataVolume (ADR 0014): the clone
 * controller's HMAC seal, bound to the DataVolume's UID, its source and itself as target; from then
 * on the seal is what is checked, and a seal that does not match is refused, never "try the token".
 * The seal is not carried onto the PVC (another UID: it would be refused there); once the PVC exists
 * this controller seals it for its own UID (sealClaim), the DataVolume's seal standing for the user.
 */

import type { V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { type DataVolume, DvConditionType, DvPhase } from '../../src/api/datavolume.js';
import { CLONE_REQUEST_ANNOTATION, type ObjectRef } from '../../src/contract/clone-token.js';
import { CLONE_AUTHORIZATION_FAILED, CLONE_SEAL_ANNOTATION, type CloneVerdict } from '../clone/authorization.js';
import { cond, type ConditionWanted } from './status.js';

/** What reconcile found out for a cloning DataVolume that has no PVC yet. */
export interface DvCloneFacts {
  /** The PVC to copy (resolved through the DataSource); absent with `problem`. */
  readonly source?: ObjectRef;
  /** The source PVC, when it exists. */
  readonly sourcePvc?: V1PersistentVolumeClaim;
  /** The DataVolume's seal, else its token, checked for `source` → the DataVolume. */
  readonly verdict?: CloneVerdict;
  /** The seal to write on the DataVolume when the verdict is `token` (../clone/authorization.ts `sealClone`). */
  readonly seal?: string;
  /** Why the source cannot be resolved (a DataSource missing or naming no PVC). */
  readonly problem?: string;
}

export const CloneReason = {
  SourceNotFound: 'CloneSourceNotFound',
  AuthorizationFailed: CLONE_AUTHORIZATION_FAILED,
} as const;

export type CloneClaimDecision =
  | { readonly kind: 'create'; readonly claim: V1PersistentVolumeClaim }
  | { readonly kind: 'wait' | 'refuse'; readonly phase: DvPhase; readonly conditions: readonly ConditionWanted[]; readonly event: { readonly reason: string; readonly message: string } };

const notRunning = cond(DvConditionType.Running, 'False');

/** Writes annotations on the DataVolume, or on its PVC (merge patch of metadata.annotations). */
export type DvAnnotateAction = { readonly type: 'annotateDv' | 'annotatePvc'; readonly annotations: Readonly<Record<string, string>> };

/** Pure: seal the DataVolume when its token has just verified (the seal then outlives the token). */
export function sealDataVolume(facts: DvCloneFacts | undefined): DvAnnotateAction[] {
  return facts?.verdict?.kind === 'token' && facts.seal !== undefined ? [{ type: 'annotateDv', annotations: { [CLONE_SEAL_ANNOTATION]: facts.seal } }] : [];
}

/** The source's size: its requested storage, else its capacity. */
export function sourceSize(pvc: V1PersistentVolumeClaim | undefined): string | undefined {
  const q = pvc?.spec?.resources?.requests?.storage ?? pvc?.status?.capacity?.storage;
  return q === undefined ? undefined : String(q);
}

/**
 * Pure: seal the PVC the DataVolume made (`seal`: the clone controller's seal for the PVC's UID,
 * given only while the DataVolume's own seal holds for the PVC's clone request), so the PVC's clone
 * does not hang on the five minutes of the token the PVC webhook gave it either.
 */
export function sealClaim(pvc: V1PersistentVolumeClaim, seal: string | undefined): DvAnnotateAction[] {
  const a = pvc.metadata?.annotations ?? {};
  return seal !== undefined && a[CLONE_REQUEST_ANNOTATION] !== undefined && a[CLONE_SEAL_ANNOTATION] === undefined ? [{ type: 'annotatePvc', annotations: { [CLONE_SEAL_ANNOTATION]: seal } }] : [];
}

/** Pure: the target PVC for a cloning DataVolume (from the ordinary claim), or why not yet / never. */
export function cloneClaim(dv: DataVolume, claim: V1PersistentVolumeClaim, facts: DvCloneFacts | undefined): CloneClaimDecision {
  const target = `${dv.metadata.namespace ?? ''}/${dv.metadata.name ?? ''}`;
  if (!facts?.source) {
    const message = facts?.problem ?? `the clone source of ${target} is not resolved yet`;
    return wait(DvPhase.Pending, CloneReason.SourceNotFound, message);
  }
  const source = `${facts.source.namespace}/${facts.source.name}`;
  const verdict = facts.verdict;
  if (verdict?.kind === 'refused') {
    const message = `${verdict.code}: ${verdict.message}`;
    return { kind: 'refuse', phase: DvPhase.Failed, conditions: [cond(DvConditionType.Ready, 'False', CloneReason.AuthorizationFailed, message), cond(DvConditionType.Bound, 'False', CloneReason.AuthorizationFailed, 'No PVC created: the clone is not authorized'), notRunning], event: { reason: CloneReason.AuthorizationFailed, message } };
  }
  if (!facts.sourcePvc) return wait(DvPhase.Pending, CloneReason.SourceNotFound, `source PVC ${source} not found`);
  if (verdict === undefined) return wait(DvPhase.Pending, CloneReason.AuthorizationFailed, 'the clone token has not been checked yet');
  const spec = { ...claim.spec };
  if (spec.resources?.requests?.storage === undefined) {
    const size = sourceSize(facts.sourcePvc);
    if (size === undefined) return wait(DvPhase.Pending, CloneReason.SourceNotFound, `source PVC ${source} has no size yet`);
    spec.resources = { ...spec.resources, requests: { ...spec.resources?.requests, storage: size } };
  }
  const { [CLONE_SEAL_ANNOTATION]: _dvSeal, ...annotations } = claim.metadata?.annotations ?? {};
  return { kind: 'create', claim: { ...claim, metadata: { ...claim.metadata, annotations: { ...annotations, [CLONE_REQUEST_ANNOTATION]: source } }, spec } };
}

function wait(phase: DvPhase, reason: string, message: string): CloneClaimDecision {
  return { kind: 'wait', phase, conditions: [cond(DvConditionType.Ready, 'False', reason, message), cond(DvConditionType.Bound, 'False', reason, message), notRunning], event: { reason, message } };
}
