/**
 * The DataVolume controller's behaviour as one pure function: the DataVolume and the PVC of its
 * name → what to do. It creates the PVC and lets the PVC-level controller (controller/import/) do
 * the work, adopts an existing PVC only when CDI would, and mirrors the PVC back into the
 * DataVolume's status. No clients, no clock, no logger.
 *
 * Adoption rule (CDI's): a PVC of the DataVolume's name that the DataVolume does not own is adopted
 * when it has no controller owner and either the PVC is annotated
 * `cdi.kubevirt.io/storage.populatedFor: <dv name>` or the DataVolume is annotated
 * `cdi.kubevirt.io/allowClaimAdoption: "true"`. Otherwise the DataVolume reports the conflict
 * (phase Pending, Bound False, reason ClaimExists) and leaves the PVC alone.
 */

import type { V1OwnerReference, V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { cloneSourceOfDv, type DataVolume, type DataVolumeStatus, DvAnnotation, DvConditionType, DvPhase, DvReason } from '../../src/api/datavolume.js';
import { isFerryError } from '../../src/errors.js';
import { buildClaim, isOwnedBy, type OverheadOf, ownerReference, routeOf, type SourceRoute } from './claim.js';
import { cloneClaim, type DvAnnotateAction, type DvCloneFacts, sealClaim, sealDataVolume } from './clone.js';
import { cond, type ConditionWanted, statusFromClaim, withTimes } from './status.js';

export interface DvObserved {
  readonly dv: DataVolume;
  /** The PVC of the DataVolume's name; undefined only once the apiserver confirmed it is absent. */
  readonly pvc?: V1PersistentVolumeClaim;
  /** Milliseconds since the epoch. */
  readonly now: number;
  /** For a cloning DataVolume without its PVC: the source and the token's verdict (./clone.ts). */
  readonly clone?: DvCloneFacts;
  /** For a cloning DataVolume with its PVC unsealed: the seal for the PVC, when the DataVolume's seal holds. */
  readonly pvcSeal?: string;
}

export interface DvConfig {
  readonly filesystemOverhead: OverheadOf;
}

export type DvAction =
  | { readonly type: 'createPvc'; readonly pvc: V1PersistentVolumeClaim }
  /** Adds the DataVolume as the PVC's controller owner, at the resourceVersion it was seen at. */
  | { readonly type: 'adoptPvc'; readonly name: string; readonly resourceVersion: string; readonly ownerReferences: readonly V1OwnerReference[] }
  /** Replaces the DataVolume's status (the controller owns all of it). */
  | { readonly type: 'patchStatus'; readonly status: DataVolumeStatus }
  | { readonly type: 'event'; readonly eventType: 'Normal' | 'Warning'; readonly reason: string; readonly message: string }
  | DvAnnotateAction;

export interface DvPlan {
  readonly actions: readonly DvAction[];
}

export const DvEventReason = {
  ImportScheduled: 'ImportScheduled',
  ImportInProgress: 'ImportInProgress',
  ImportSucceeded: 'ImportSucceeded',
  ImportFailed: 'ErrImportFailed',
  UploadScheduled: 'UploadScheduled',
  UploadReady: 'UploadReady',
  UploadSucceeded: 'UploadSucceeded',
  CloneScheduled: 'CloneScheduled',
  CloneInProgress: 'CloneInProgress',
  CloneSucceeded: 'CloneSucceeded',
  CloneFailed: 'CloneFailed',
  ClaimExists: 'ErrClaimNotValid',
  ClaimDeleted: 'ErrClaimLost',
  InvalidSpec: 'ErrInvalidSpec',
} as const;

type Wanted = Omit<DataVolumeStatus, 'conditions'> & { readonly conditions: readonly ConditionWanted[] };

const NOTHING: DvPlan = Object.freeze({ actions: [] });

export function planDataVolume(observed: DvObserved, config: DvConfig): DvPlan {
  const { dv, pvc } = observed;
  if (dv.metadata.deletionTimestamp) return NOTHING;
  const name = dv.metadata.name ?? '';

  let route: SourceRoute;
  try {
    route = routeOf(dv.spec);
  } catch (err) {
    if (!isFerryError(err)) throw err;
    return report(observed, failedSpec(err.message), []);
  }

  if (!pvc) {
    if (dv.status?.claimName) {
      // Created before and gone now: say so, do not import again behind the user's back.
      return report(observed, lostClaim(name), []);
    }
    let claim: V1PersistentVolumeClaim;
    try {
      claim = buildClaim(dv, config.filesystemOverhead);
    } catch (err) {
      if (!isFerryError(err)) throw err;
      return report(observed, failedSpec(err.message), []);
    }
    if (cloneSourceOfDv(dv.spec, dv.metadata.namespace ?? '')) {
      const decision = cloneClaim(dv, claim, observed.clone);
      const seal = sealDataVolume(observed.clone);
      if (decision.kind !== 'create') {
        const plan = report(observed, { phase: decision.phase, progress: 'N/A', restartCount: 0, conditions: decision.conditions }, seal);
        // The status carries the reason; the event goes with a change of it, as phase events do.
        const changed = plan.actions.length > seal.length && dv.status?.conditions?.find((c) => c.type === DvConditionType.Ready)?.message !== decision.conditions[0]?.message;
        const eventType = decision.kind === 'refuse' ? 'Warning' : 'Normal';
        return changed ? { actions: [...plan.actions.filter((a) => a.type !== 'event'), { type: 'event', eventType, reason: decision.event.reason, message: decision.event.message }] } : plan;
      }
      return report(observed, statusFromClaim(decision.claim, route), [...seal, { type: 'createPvc', pvc: decision.claim }]);
    }
    return report(observed, statusFromClaim(claim, route), [{ type: 'createPvc', pvc: claim }]);
  }

  if (isOwnedBy(pvc, dv)) return report(observed, statusFromClaim(pvc, route), sealClaim(pvc, observed.pvcSeal));

  const controlled = pvc.metadata?.ownerReferences?.some((o) => o.controller === true) === true;
  const adoptable =
    !controlled && (pvc.metadata?.annotations?.[DvAnnotation.PopulatedFor] === name || dv.metadata.annotations?.[DvAnnotation.AllowClaimAdoption] === 'true');
  if (!adoptable) return report(observed, claimConflict(name), []);
  const adopt: DvAction = {
    type: 'adoptPvc',
    name,
    resourceVersion: pvc.metadata?.resourceVersion ?? '',
    ownerReferences: [...(pvc.metadata?.ownerReferences ?? []), ownerReference(dv)],
  };
  return report(observed, statusFromClaim(pvc, route), [adopt]);
}

/** `before`, then a status patch and a phase event when the status differs from the DataVolume's. */
function report({ dv, now }: DvObserved, wanted: Wanted, before: DvAction[]): DvPlan {
  const status: DataVolumeStatus = { ...wanted, conditions: withTimes(dv.status?.conditions, wanted.conditions, new Date(now).toISOString()) };
  const actions = [...before];
  if (!sameStatus(dv.status, status)) {
    actions.push({ type: 'patchStatus', status });
    const event = phaseEvent(dv, status);
    if (event && status.phase !== dv.status?.phase) actions.push(event);
  }
  return { actions };
}

function sameStatus(a: DataVolumeStatus | undefined, b: DataVolumeStatus): boolean {
  const canonical = (s: DataVolumeStatus | undefined) =>
    JSON.stringify({ phase: s?.phase ?? '', progress: s?.progress ?? '', restartCount: s?.restartCount ?? 0, claimName: s?.claimName ?? '', conditions: s?.conditions ?? [] });
  return canonical(a) === canonical(b);
}

/** The event a phase change carries (CDI's DataVolume events). */
function phaseEvent(dv: DataVolume, status: DataVolumeStatus): DvAction | undefined {
  const claim = dv.metadata.name ?? '';
  const running = status.conditions?.find((c) => c.type === DvConditionType.Running);
  const bound = status.conditions?.find((c) => c.type === DvConditionType.Bound);
  switch (status.phase) {
    case DvPhase.ImportScheduled:
      return { type: 'event', eventType: 'Normal', reason: DvEventReason.ImportScheduled, message: `Import into ${claim} scheduled` };
    case DvPhase.ImportInProgress:
      return { type: 'event', eventType: 'Normal', reason: DvEventReason.ImportInProgress, message: `Import into ${claim} in progress` };
    case DvPhase.UploadScheduled:
      return { type: 'event', eventType: 'Normal', reason: DvEventReason.UploadScheduled, message: `Upload into ${claim} scheduled` };
    case DvPhase.UploadReady:
      return { type: 'event', eventType: 'Normal', reason: DvEventReason.UploadReady, message: `Upload into ${claim} ready` };
    case DvPhase.CloneScheduled:
      return { type: 'event', eventType: 'Normal', reason: DvEventReason.CloneScheduled, message: `Cloning from ${cloneFrom(dv)} into ${claim} scheduled` };
    case DvPhase.CloneInProgress:
      return { type: 'event', eventType: 'Normal', reason: DvEventReason.CloneInProgress, message: `Cloning from ${cloneFrom(dv)} into ${claim} in progress` };
    case DvPhase.Succeeded:
      if (cloneSourceOfDv(dv.spec, dv.metadata.namespace ?? '')) return { type: 'event', eventType: 'Normal', reason: DvEventReason.CloneSucceeded, message: `Successfully cloned from ${cloneFrom(dv)} into ${claim}` };
      return dv.spec.source?.upload !== undefined
        ? { type: 'event', eventType: 'Normal', reason: DvEventReason.UploadSucceeded, message: `Successfully uploaded into PVC ${claim}` }
        : { type: 'event', eventType: 'Normal', reason: DvEventReason.ImportSucceeded, message: `Successfully imported into PVC ${claim}` };
    case DvPhase.Failed: {
      const ready = status.conditions?.find((c) => c.type === DvConditionType.Ready);
      const failed = cloneSourceOfDv(dv.spec, dv.metadata.namespace ?? '') ? DvEventReason.CloneFailed : DvEventReason.ImportFailed;
      const reason = ready?.reason === DvReason.InvalidSpec ? DvEventReason.InvalidSpec : bound?.reason === DvReason.NotFound ? DvEventReason.ClaimDeleted : failed;
      const message = reason === failed ? (running?.message ?? `${failed === DvEventReason.CloneFailed ? 'clone' : 'import'} failed`) : ((reason === DvEventReason.ClaimDeleted ? bound?.message : ready?.message) ?? '');
      return { type: 'event', eventType: 'Warning', reason, message };
    }
    case DvPhase.Pending:
      return bound?.reason === DvReason.ClaimExists ? { type: 'event', eventType: 'Warning', reason: DvEventReason.ClaimExists, message: bound.message ?? '' } : undefined;
    default:
      return undefined;
  }
}

const notRunning = cond(DvConditionType.Running, 'False');

/** `<ns>/<name>` of what a cloning DataVolume names (the PVC, or the DataSource). */
function cloneFrom(dv: DataVolume): string {
  const source = cloneSourceOfDv(dv.spec, dv.metadata.namespace ?? '');
  return source ? `${source.kind === 'dataSource' ? 'DataSource ' : ''}${source.namespace}/${source.name}` : '';
}

function failedSpec(message: string): Wanted {
  return { phase: DvPhase.Failed, progress: 'N/A', restartCount: 0, conditions: [cond(DvConditionType.Ready, 'False', DvReason.InvalidSpec, message), cond(DvConditionType.Bound, 'False', DvReason.NotFound, 'No PVC found'), notRunning] };
}

function lostClaim(name: string): Wanted {
  return {
    phase: DvPhase.Failed,
    progress: 'N/A',
    restartCount: 0,
    claimName: name,
    conditions: [
      cond(DvConditionType.Ready, 'False'),
      cond(DvConditionType.Bound, 'False', DvReason.NotFound, `PVC ${name} was deleted; delete and re-create the DataVolume to import again`),
      notRunning,
    ],
  };
}

function claimConflict(name: string): Wanted {
  return {
    phase: DvPhase.Pending,
    progress: 'N/A',
    restartCount: 0,
    conditions: [
      cond(DvConditionType.Ready, 'False'),
      cond(
        DvConditionType.Bound,
        'False',
        DvReason.ClaimExists,
        `PVC ${name} exists and is not owned by this DataVolume; delete it, or annotate the DataVolume ${DvAnnotation.AllowClaimAdoption}: "true" to adopt it`,
      ),
      notRunning,
    ],
  };
}
