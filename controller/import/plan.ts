/**
 * The import controller's behaviour as one pure function: what the PVC, its importer pod and its
 * scratch PVC look like now → what to do, and when to look again. No clients, no clock, no logger.
 */

import type { V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';
import { Annotation, EventReason, PodPhase, UploadAnnotation } from '../../src/api/cdi.js';
import { ErrorCode, isFerryError } from '../../src/errors.js';
import { type ImportRequest, importRequestFromAnnotations } from '../../src/api/import-request.js';
import type { CdiSettings } from '../../src/api/cdiconfig.js';
import type { ControllerConfig } from '../config.js';
import { annotate, type AnnotateAction, backoffRemaining, countFailure, type EventAction, running, terminationOf, waitingReason, withEvent } from '../runtime/pvc-status.js';
import { buildImporterPod, buildScratchPvc, importerPodName, proxyCaConfigMapName, scratchPvcName, settingsOf } from './importer-pod.js';
import { planWaiting, stopWaiting } from '../runtime/binding.js';

export interface Observed {
  readonly pvc: V1PersistentVolumeClaim;
  /** The pod with the importer's deterministic name, if any. */
  readonly pod?: V1Pod;
  readonly scratchPvc?: V1PersistentVolumeClaim;
  /** The PVC's storage class binds on first consumer and nothing has consumed it yet (runtime/binding.ts). */
  readonly waitForFirstConsumer?: boolean;
  /** Milliseconds since the epoch. */
  readonly now: number;
  /** CDIConfig's settings in effect (runtime/cdi-settings.ts); absent: the controller's flags. */
  readonly settings?: CdiSettings;
}

export type Action =
  | { readonly type: 'createPod'; readonly pod: V1Pod }
  | { readonly type: 'deletePod'; readonly name: string }
  | { readonly type: 'createScratchPvc'; readonly pvc: V1PersistentVolumeClaim }
  | { readonly type: 'deleteScratchPvc'; readonly name: string }
  /** Copies key `ca.crt` of ConfigMap `from` (CDIConfig's trustedCAProxy, in Ferry's namespace) to `name` beside the PVC. */
  | { readonly type: 'copyProxyCa'; readonly from: { readonly namespace: string; readonly name: string }; readonly name: string }
  | AnnotateAction
  | EventAction;

export interface Plan {
  readonly actions: readonly Action[];
  readonly requeueAfterMs?: number;
  /** Scrape the running importer's progress metric from this address. */
  readonly scrape?: { readonly podIP: string };
}

const NOTHING: Plan = Object.freeze({ actions: [] });

/** Backoff before attempt `restarts + 1` (kept here for the import plan's callers). */
export { retryDelay } from '../runtime/pvc-status.js';

export function planImport(observed: Observed, config: ControllerConfig): Plan {
  const { pvc, pod, scratchPvc, now } = observed;
  if (pvc.metadata?.deletionTimestamp) return NOTHING;
  const current = pvc.metadata?.annotations ?? {};
  // An upload target is the upload controller's, which refuses one that asks for an import too (controller/upload/plan.ts).
  if (current[UploadAnnotation.Target] !== undefined) return NOTHING;

  let request: ImportRequest | undefined;
  try {
    request = importRequestFromAnnotations(current);
  } catch (err) {
    if (!isFerryError(err)) throw err;
    // A request that can never run is reported once on the PVC, never retried.
    const actions: Action[] = annotate(current, {
      [Annotation.PodPhase]: PodPhase.Failed,
      [Annotation.ErrorCode]: err.code,
      ...running('false', err.code, err.message),
    });
    if (actions.length > 0) actions.push({ type: 'event', eventType: 'Warning', reason: EventReason.InvalidRequest, message: `${err.code}: ${err.message}` });
    return { actions };
  }
  if (!request) return NOTHING;

  const pvcName = pvc.metadata?.name ?? '';
  const podName = importerPodName(pvcName);
  const ours = pod !== undefined && pod.metadata?.ownerReferences?.some((o) => o.uid === pvc.metadata?.uid) === true;

  // Done: tidy up what is left (a retained pod stays).
  if (current[Annotation.PodPhase] === PodPhase.Succeeded || current[Annotation.FatalError] === 'true') {
    const actions: Action[] = [];
    if (pod && ours && !request.retainPod && pod.status?.phase !== PodPhase.Running) actions.push({ type: 'deletePod', name: podName });
    if (scratchPvc) actions.push({ type: 'deleteScratchPvc', name: scratchPvcName(pvcName) });
    return { actions };
  }

  if (pod && !ours) {
    return {
      actions: annotate(current, running('false', 'ImportPodNameTaken', `pod ${podName} exists and does not belong to this PVC`)),
      requeueAfterMs: config.retryBackoffMs,
    };
  }

  const ctx: Context = { pvc, request, current, scratchPvc, now, config, settings: settingsOf(config, observed.settings) };
  if (!pod && observed.waitForFirstConsumer) {
    // CDI's HonorWaitForFirstConsumer: the workload that consumes the PVC picks its node; import after.
    return { actions: planWaiting(pvc, current) };
  }
  if (!pod) return planStart(ctx);

  switch (pod.status?.phase) {
    case PodPhase.Running:
      return {
        actions: annotate(current, { [Annotation.PodPhase]: PodPhase.Running, ...running('true', 'Pod is running', '') }),
        ...(pod.status?.podIP ? { scrape: { podIP: pod.status.podIP } } : {}),
        requeueAfterMs: config.progressIntervalMs,
      };
    case PodPhase.Succeeded:
      return planSucceeded(ctx, pod);
    case PodPhase.Failed:
      return planFailed(ctx, pod);
    default: {
      const waiting = waitingReason(pod);
      return {
        actions: annotate(current, {
          [Annotation.PodPhase]: PodPhase.Pending,
          ...running('false', waiting?.reason ?? 'Pending', waiting?.message ?? 'importer pod is pending'),
        }),
      };
    }
  }
}

/** What every step of the plan looks at. */
interface Context {
  readonly pvc: V1PersistentVolumeClaim;
  readonly request: ImportRequest;
  readonly current: Readonly<Record<string, string>>;
  readonly scratchPvc: V1PersistentVolumeClaim | undefined;
  readonly now: number;
  readonly config: ControllerConfig;
  readonly settings: CdiSettings;
}

function planStart({ pvc, request, current, scratchPvc, now, config, settings }: Context): Plan {
  const wait = backoffRemaining(current, now, config);
  if (wait > 0) return { actions: [], requeueAfterMs: wait };
  const withScratch = current[Annotation.RequiresScratch] === 'true';
  const actions: Action[] = [];
  if (withScratch && !scratchPvc) actions.push({ type: 'createScratchPvc', pvc: buildScratchPvc(pvc, settings) });
  const trusted = settings.importProxy.trustedCAProxy;
  if (trusted) actions.push({ type: 'copyProxyCa', from: { namespace: config.ferryNamespace, name: trusted }, name: proxyCaConfigMapName(pvc.metadata?.name ?? '') });
  actions.push(
    ...annotate(current, {
      [Annotation.ImportPodName]: importerPodName(pvc.metadata?.name ?? ''),
      [Annotation.PodPhase]: PodPhase.Pending,
      [Annotation.PodRestarts]: current[Annotation.PodRestarts] ?? '0',
      ...stopWaiting(current),
    }),
  );
  actions.push({ type: 'createPod', pod: buildImporterPod(pvc, request, config, { withScratch, settings }) });
  return { actions };
}

function planSucceeded(ctx: Context, pod: V1Pod): Plan {
  const { pvc, request, current, scratchPvc } = ctx;
  const message = terminationOf(pod, 'importer');
  if (message?.kind === 'failure') return planFailed(ctx, pod);
  const podName = importerPodName(pvc.metadata?.name ?? '');
  if (message?.scratchSpaceRequired) {
    // The importer found it must stage the image: start again with a scratch volume.
    const changes = annotate(current, {
      [Annotation.RequiresScratch]: 'true',
      ...running('false', 'Scratch space required', 'scratch space required and none found'),
    });
    return {
      actions: [
        ...changes,
        ...withEvent(changes, 'Normal', EventReason.ScratchRequired, 'The image must be staged; creating scratch space'),
        { type: 'deletePod', name: podName },
      ],
    };
  }
  const changes = annotate(current, {
    [Annotation.PodPhase]: PodPhase.Succeeded,
    [Annotation.Progress]: '100.0%',
    [Annotation.ErrorCode]: null,
    [Annotation.LastFailureTime]: null,
    ...(message?.preallocationApplied ? { [Annotation.Preallocation]: 'true' } : {}),
    ...running('false', 'Completed', message?.message ?? 'Import Complete'),
  });
  const actions: Action[] = [...changes, ...withEvent(changes, 'Normal', EventReason.ImportSucceeded, 'Import Successful')];
  if (!request.retainPod) actions.push({ type: 'deletePod', name: podName });
  if (scratchPvc) actions.push({ type: 'deleteScratchPvc', name: scratchPvcName(pvc.metadata?.name ?? '') });
  return { actions };
}

function planFailed({ request, current, now, config }: Context, pod: V1Pod): Plan {
  const podName = pod.metadata?.name ?? '';
  const message = terminationOf(pod, 'importer');
  const failure =
    message?.kind === 'failure'
      ? message
      : { code: ErrorCode.Internal, message: pod.status?.message ?? 'the importer pod failed without a termination message', retryable: true };
  const verdict = countFailure(current, failure, pod.metadata?.uid ?? '', now, config);
  if (verdict.kind === 'counted') {
    // Already counted (the cache still shows the pod being deleted).
    return { actions: request.retainPod && current[Annotation.FatalError] === 'true' ? [] : [{ type: 'deletePod', name: podName }] };
  }
  if (verdict.kind === 'retry') {
    return {
      actions: [
        ...annotate(current, verdict.annotations),
        { type: 'event', eventType: 'Warning', reason: EventReason.ImportFailed, message: `${failure.code}: ${failure.message}; retrying (${verdict.restarts}/${config.maxRetries})` },
        { type: 'deletePod', name: podName },
      ],
      requeueAfterMs: verdict.delayMs,
    };
  }
  const actions: Action[] = [...annotate(current, verdict.annotations), { type: 'event', eventType: 'Warning', reason: EventReason.ImportFailed, message: `${failure.code}: ${verdict.why}` }];
  if (!request.retainPod) actions.push({ type: 'deletePod', name: podName });
  return { actions };
}
