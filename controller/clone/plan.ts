/**
 * The clone controller's behaviour as one pure function: a target PVC that carries a clone
 * request (`k8s.io/CloneRequest: "<ns>/<name>"`, from a DataVolume or written by a user through the
 * webhook), the source PVC, the two pods, the pods that use the source, and the authorization
 * verdict (./authorization.ts) → what to do. The shape of controller/upload/plan.ts: CDI's status
 * annotations on the target PVC, events with changes, run-once pods: a failed pair is replaced
 * after a backoff while the failure is retryable.
 *
 * Order: the target server first (its Service, its certificate, its pod); the source pod only once
 * the target is Ready, so the source never dials a server that is not there. Success is the target's
 * termination message alone: the source saying "sent" proves nothing about what was written.
 */

import type { V1PersistentVolumeClaim, V1Pod, V1Service } from '@kubernetes/client-node';
import { Annotation, PodPhase } from '../../src/api/cdi.js';
import { CLONE_REQUEST_ANNOTATION, type CloneRef, parseCloneRequest } from '../../src/contract/clone-token.js';
import type { ContentType } from '../../src/contract/import-spec.js';
import { uploadServiceName } from '../../src/contract/upload-api.js';
import { ErrorCode } from '../../src/errors.js';
import type { ControllerConfig } from '../config.js';
import { requestedBytes } from '../import/importer-pod.js';
import { annotate, backoffRemaining, countFailure, running, terminationOf, waitingReason, withEvent, type AnnotateAction, type EventAction } from '../runtime/pvc-status.js';
import { podReady } from '../upload/plan.js';
import { buildUploadService, contentTypeOf, uploadServerHosts, uploadTlsSecretName } from '../upload/upload-pod.js';
import { CLONE_AUTHORIZATION_FAILED, CLONE_SEAL_ANNOTATION, type CloneVerdict } from './authorization.js';
import { buildSourcePod, buildTargetPod, CLONE_LABEL, cloneOf, sourcePodName, sourceSecretName, targetPodName, targetProgressOf } from './clone-pods.js';

export interface CloneObserved {
  readonly pvc: V1PersistentVolumeClaim;
  readonly sourcePvc?: V1PersistentVolumeClaim;
  readonly targetPod?: V1Pod;
  readonly sourcePod?: V1Pod;
  readonly service?: V1Service;
  /** Pods in the source namespace (only needed before the source pod starts: who writes it, where it is attached). */
  readonly sourceNamespacePods?: readonly V1Pod[];
  /** The authorization verdict; undefined once the clone is over (not looked at then). */
  readonly verdict?: CloneVerdict;
  /** The seal to write when the verdict is `token` (./authorization.ts `sealClone`). */
  readonly seal?: string;
  /** Milliseconds since the epoch. */
  readonly now: number;
}

export type CloneAction =
  | { readonly type: 'startTarget'; readonly pod: V1Pod; readonly service?: V1Service; readonly hosts: readonly string[] }
  /** Issue the source's client certificate (CN = the client name) into its Secret, then create the pod. */
  | { readonly type: 'startSource'; readonly pod: V1Pod; readonly clone: CloneRef }
  | { readonly type: 'deletePod'; readonly name: string }
  | { readonly type: 'deleteService'; readonly name: string }
  | { readonly type: 'deleteTlsSecret'; readonly name: string }
  | { readonly type: 'deleteSourcePod'; readonly namespace: string; readonly name: string }
  | { readonly type: 'deleteSourceSecret'; readonly namespace: string; readonly name: string }
  | AnnotateAction
  | EventAction;

export interface ClonePlan {
  readonly actions: readonly CloneAction[];
  readonly requeueAfterMs?: number;
  /** Scrape the running target's progress metric (the import contract) into the PVC's progress. */
  readonly scrape?: { readonly podIP: string; readonly port: number; readonly ownerUid: string };
}

/** CDI's event reasons on the target PVC (CloneSourceInUse is CDI's exact word). */
export const CloneEventReason = {
  SourceInUse: 'CloneSourceInUse',
  SourceNotFound: 'CloneSourceNotFound',
  AuthorizationFailed: CLONE_AUTHORIZATION_FAILED,
  Scheduled: 'CloneScheduled',
  Succeeded: 'CloneSucceeded',
  Failed: 'CloneFailed',
} as const;

/** How often a waiting clone looks again (the pods using the source are not watched). */
export const CLONE_WAIT_MS = 5_000;

const NOTHING: ClonePlan = Object.freeze({ actions: [] });

export function cloneRequestOf(pvc: V1PersistentVolumeClaim): string | undefined {
  return pvc.metadata?.annotations?.[CLONE_REQUEST_ANNOTATION];
}

/** Pure: the pods (not the clone's own) that write the source: mount it read-write and have not finished. */
export function sourceWriters(pods: readonly V1Pod[], sourceName: string): V1Pod[] {
  return pods.filter(
    (p) =>
      p.metadata?.labels?.[CLONE_LABEL] === undefined &&
      p.status?.phase !== PodPhase.Succeeded &&
      p.status?.phase !== PodPhase.Failed &&
      (p.spec?.volumes ?? []).some((v) => v.persistentVolumeClaim?.claimName === sourceName && v.persistentVolumeClaim.readOnly !== true),
  );
}

interface Ctx {
  readonly observed: CloneObserved;
  readonly config: ControllerConfig;
  readonly clone: CloneRef;
  readonly current: Readonly<Record<string, string>>;
  readonly contentType: ContentType;
}

export function planClone(observed: CloneObserved, config: ControllerConfig): ClonePlan {
  const { pvc } = observed;
  const request = cloneRequestOf(pvc);
  if (pvc.metadata?.deletionTimestamp || request === undefined) return NOTHING;
  const current = pvc.metadata?.annotations ?? {};
  const source = parseCloneRequest(request);
  const contentType = contentTypeOf(pvc);
  if (source === undefined || contentType === undefined) {
    const message = source === undefined ? `${CLONE_REQUEST_ANNOTATION} must be "<namespace>/<name>"; got "${request}"` : `${Annotation.ContentType} must be kubevirt or archive; got "${current[Annotation.ContentType]}"`;
    return fatal(current, ErrorCode.InvalidSpec, CloneEventReason.Failed, message);
  }
  const clone = cloneOf(pvc, source);
  const ctx: Ctx = { observed, config, clone, current, contentType };

  if (current[Annotation.PodPhase] === PodPhase.Succeeded || current[Annotation.FatalError] === 'true') return { actions: cleanup(ctx) };

  const verdict = observed.verdict;
  if (verdict === undefined) return NOTHING;
  if (verdict.kind === 'refused') {
    const plan = fatal(current, ErrorCode.Unauthorized, CloneEventReason.AuthorizationFailed, `${verdict.code}: ${verdict.message}`, CLONE_AUTHORIZATION_FAILED);
    return { actions: [...plan.actions, ...cleanup(ctx)] };
  }
  // A good token: seal it to this PVC before anything else, so the clone outlives the token.
  if (verdict.kind === 'token') return observed.seal ? { actions: annotate(current, { [CLONE_SEAL_ANNOTATION]: observed.seal }) } : NOTHING;

  const { targetPod, sourcePod, sourcePvc } = observed;
  const ours = targetPod?.metadata?.ownerReferences?.some((r) => r.uid === pvc.metadata?.uid) === true;
  if (targetPod && !ours) return waitWith(ctx, 'CloneTargetPodNameTaken', `pod ${targetPod.metadata?.name} exists and does not belong to this PVC`, CloneEventReason.Failed, 'Warning');

  if (!targetPod) {
    if (sourcePod) return { actions: [{ type: 'deleteSourcePod', namespace: source.namespace, name: sourcePod.metadata?.name ?? '' }], requeueAfterMs: CLONE_WAIT_MS };
    if (!sourcePvc) return waitWith(ctx, CloneEventReason.SourceNotFound, `source PVC ${request} not found`, CloneEventReason.SourceNotFound, 'Warning');
    const tooSmall = sizeProblem(pvc, sourcePvc);
    if (tooSmall) return fatal(current, ErrorCode.TargetTooSmall, CloneEventReason.Failed, tooSmall);
    const writers = sourceWriters(observed.sourceNamespacePods ?? [], source.name);
    if (writers.length > 0) {
      const names = writers.map((p) => p.metadata?.name ?? '').join(', ');
      return waitWith(ctx, CloneEventReason.SourceInUse, `pod ${source.namespace}/${names} is using PersistentVolumeClaim ${source.name}`, CloneEventReason.SourceInUse, 'Normal');
    }
    const wait = backoffRemaining(current, observed.now, config);
    if (wait > 0) return { actions: [], requeueAfterMs: wait };
    const changes = annotate(current, { [Annotation.PodPhase]: PodPhase.Pending, [Annotation.PodRestarts]: current[Annotation.PodRestarts] ?? '0', ...running('false', 'Pending', 'clone target pod is starting') });
    return {
      actions: [
        ...changes,
        ...withEvent(changes, 'Normal', CloneEventReason.Scheduled, `Cloning ${request} into ${clone.target.namespace}/${clone.target.name}`),
        {
          type: 'startTarget',
          pod: buildTargetPod(pvc, contentType, clone, config, observed.now + config.uploadDeadlineMs),
          ...(observed.service ? {} : { service: buildUploadService(pvc) }),
          hosts: uploadServerHosts(clone.target.namespace, clone.target.name),
        },
      ],
    };
  }

  switch (targetPod.status?.phase) {
    case PodPhase.Succeeded:
      return planTargetDone(ctx, targetPod);
    case PodPhase.Failed:
      return planFailure(ctx, targetPod, 'clone-target');
    case PodPhase.Running: {
      if (sourcePod?.status?.phase === PodPhase.Failed) return planFailure(ctx, sourcePod, 'clone-source');
      const changes = annotate(current, { [Annotation.PodPhase]: PodPhase.Running, ...running('true', 'Pod is running', '') });
      if (!sourcePod && podReady(targetPod)) {
        if (!sourcePvc) return waitWith(ctx, CloneEventReason.SourceNotFound, `source PVC ${request} not found`, CloneEventReason.SourceNotFound, 'Warning');
        return { actions: [...changes, { type: 'startSource', pod: buildSourcePod(pvc, sourcePvc, contentType, clone, config, observed.sourceNamespacePods), clone }] };
      }
      // The data moves while the source runs: look at the target's progress every interval.
      const progress = targetProgressOf(targetPod);
      const podIP = targetPod.status?.podIP;
      if (sourcePod && progress && podIP) return { actions: changes, requeueAfterMs: config.progressIntervalMs, scrape: { podIP, ...progress } };
      return { actions: changes };
    }
    default: {
      const waiting = waitingReason(targetPod);
      return { actions: annotate(current, { [Annotation.PodPhase]: PodPhase.Pending, ...running('false', waiting?.reason ?? 'Pending', waiting?.message ?? 'clone target pod is pending') }) };
    }
  }
}

/** Pure: why the target cannot hold the source (its request below the source's), or undefined. */
export function sizeProblem(target: V1PersistentVolumeClaim, source: V1PersistentVolumeClaim): string | undefined {
  const want = requestedBytes(source);
  const have = requestedBytes(target);
  if (want === undefined || have === undefined || have >= want) return undefined;
  return `the target PVC requests ${have} bytes, less than the source PVC's ${want}`;
}

function planTargetDone(ctx: Ctx, pod: V1Pod): ClonePlan {
  const message = terminationOf(pod, 'clone-target');
  if (message?.kind !== 'success') return planFailure(ctx, pod, 'clone-target');
  const { current, clone } = ctx;
  const changes = annotate(current, {
    [Annotation.PodPhase]: PodPhase.Succeeded,
    [Annotation.ErrorCode]: null,
    [Annotation.LastFailureTime]: null,
    [Annotation.Progress]: '100.0%',
    ...(message.preallocationApplied ? { [Annotation.Preallocation]: 'true' } : {}),
    ...running('false', 'Completed', 'Clone Complete'),
  });
  return {
    actions: [
      ...changes,
      ...withEvent(changes, 'Normal', CloneEventReason.Succeeded, `Successfully cloned ${clone.source.namespace}/${clone.source.name} into ${clone.target.namespace}/${clone.target.name}`),
      ...cleanup(ctx),
    ],
  };
}

/** A failed pod of the pair (the target's code is the one that counts; the source's when it failed first). */
function planFailure(ctx: Ctx, pod: V1Pod, container: string): ClonePlan {
  const { current, observed, config } = ctx;
  const message = terminationOf(pod, container);
  const failure =
    message?.kind === 'failure' ? message : { code: ErrorCode.Internal, message: pod.status?.message ?? `the ${container} pod ended without a failure's termination message`, retryable: true };
  const verdict = countFailure(current, failure, pod.metadata?.uid ?? '', observed.now, config);
  const pair = pairDeletes(ctx);
  if (verdict.kind === 'counted') return { actions: pair, requeueAfterMs: CLONE_WAIT_MS };
  if (verdict.kind === 'retry') {
    return {
      actions: [
        ...annotate(current, verdict.annotations),
        { type: 'event', eventType: 'Warning', reason: CloneEventReason.Failed, message: `${failure.code}: ${failure.message}; starting a new pair of clone pods (${verdict.restarts}/${config.maxRetries})` },
        ...pair,
      ],
      requeueAfterMs: verdict.delayMs,
    };
  }
  return { actions: [...annotate(current, verdict.annotations), { type: 'event', eventType: 'Warning', reason: CloneEventReason.Failed, message: `${failure.code}: ${verdict.why}` }, ...cleanup(ctx)] };
}

/** The two pods and the source's Secret (a retry makes a new pair with new certificates). */
function pairDeletes({ observed, clone }: Ctx): CloneAction[] {
  const uid = observed.pvc.metadata?.uid ?? '';
  const actions: CloneAction[] = [];
  if (observed.targetPod) actions.push({ type: 'deletePod', name: targetPodName(clone.target.name) });
  if (observed.sourcePod) actions.push({ type: 'deleteSourcePod', namespace: clone.source.namespace, name: sourcePodName(uid) });
  actions.push({ type: 'deleteSourceSecret', namespace: clone.source.namespace, name: sourceSecretName(uid) });
  return actions;
}

/** Everything the clone made: both pods, the Service, both Secrets (a retained target pod stays). */
function cleanup(ctx: Ctx): CloneAction[] {
  const { observed, clone, current } = ctx;
  const retain = current[Annotation.RetainAfterCompletion] === 'true';
  const uid = observed.pvc.metadata?.uid ?? '';
  const actions: CloneAction[] = [];
  // A finished target pod is kept when asked to be; a running one (a clone refused or given up meanwhile) never.
  if (observed.targetPod && !(retain && observed.targetPod.status?.phase !== PodPhase.Running)) actions.push({ type: 'deletePod', name: targetPodName(clone.target.name) });
  if (observed.sourcePod) actions.push({ type: 'deleteSourcePod', namespace: clone.source.namespace, name: sourcePodName(uid) });
  if (observed.service) actions.push({ type: 'deleteService', name: uploadServiceName(clone.target.name) }, { type: 'deleteTlsSecret', name: uploadTlsSecretName(clone.target.name) });
  if (observed.sourcePod || observed.targetPod) actions.push({ type: 'deleteSourceSecret', namespace: clone.source.namespace, name: sourceSecretName(uid) });
  return actions;
}

function fatal(current: Readonly<Record<string, string>>, code: ErrorCode, reason: string, message: string, runningReason: string = code): ClonePlan {
  const changes = annotate(current, { [Annotation.PodPhase]: PodPhase.Failed, [Annotation.FatalError]: 'true', [Annotation.ErrorCode]: code, ...running('false', runningReason, message) });
  return { actions: [...changes, ...withEvent(changes, 'Warning', reason, runningReason === code ? `${code}: ${message}` : message)] };
}

function waitWith({ current }: Ctx, runningReason: string, message: string, eventReason: string, eventType: 'Normal' | 'Warning'): ClonePlan {
  const changes = annotate(current, { [Annotation.PodPhase]: PodPhase.Pending, ...running('false', runningReason, message) });
  return { actions: [...changes, ...withEvent(changes, eventType, eventReason, message)], requeueAfterMs: CLONE_WAIT_MS };
}
