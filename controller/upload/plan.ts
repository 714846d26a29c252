/**
 * The upload controller's behaviour as one pure function: an upload-target PVC, its upload server
 * pod, Service and scratch PVC → what to do, and when to look again. The shape of
 * controller/import/plan.ts: CDI's status annotations on the PVC, events with changes, run-once
 * pods recreated by the controller, scratch only once the server has said it needs it.
 */

import type { V1PersistentVolumeClaim, V1Pod, V1Service } from '@kubernetes/client-node';
import { Annotation, PodPhase, UploadAnnotation, UploadEventReason } from '../../src/api/cdi.js';
import { ErrorCode } from '../../src/errors.js';
import { importRequestFromAnnotations } from '../../src/api/import-request.js';
import type { ContentType } from '../../src/contract/import-spec.js';
import { UploadAnnotation as UploadClientAnnotation, uploadServiceName } from '../../src/contract/upload-api.js';
import type { ControllerConfig } from '../config.js';
import { annotate, backoffRemaining, countFailure, running, terminationOf, waitingReason, withEvent } from '../runtime/pvc-status.js';
import { buildScratchPvc, scratchPvcName, settingsOf } from '../import/importer-pod.js';
import type { CdiSettings } from '../../src/api/cdiconfig.js';
import { planWaiting, stopWaiting, WAIT_FOR_FIRST_CONSUMER, waitingMessage } from '../runtime/binding.js';
import type { Action as ImportAction } from '../import/plan.js';
import { buildUploadPod, buildUploadService, contentTypeOf, uploadPodName, uploadServerHosts, uploadTlsSecretName } from './upload-pod.js';

export interface UploadObserved {
  readonly pvc: V1PersistentVolumeClaim;
  readonly pod?: V1Pod;
  readonly service?: V1Service;
  readonly scratchPvc?: V1PersistentVolumeClaim;
  /**
   * The PVC's storage class binds on first consumer, nothing has consumed it yet and it does not
   * ask for immediate binding (runtime/binding.ts). With immediate binding asked for, the upload
   * pod is the first consumer.
   */
  readonly waitForFirstConsumer?: boolean;
  /** Milliseconds since the epoch. */
  readonly now: number;
  /** CDIConfig's settings in effect (scratch class and overheads); absent: the controller's flags. */
  readonly settings?: CdiSettings;
}

export type UploadAction =
  /**
   * Start a server: issue its certificate for `hosts` into the TLS Secret (replaced if present),
   * create the Service if `service` is set, then the pod. The pod's deadline is moved earlier if
   * the certificate ends sooner.
   */
  | { readonly type: 'startServer'; readonly pod: V1Pod; readonly service?: V1Service; readonly hosts: readonly string[] }
  | { readonly type: 'deleteService'; readonly name: string }
  | { readonly type: 'deleteTlsSecret'; readonly name: string }
  /** Pod and scratch deletes, scratch creates, annotations, events: the import controller's own, applied by its writer. */
  | Exclude<ImportAction, { type: 'createPod' }>;

export interface UploadPlan {
  readonly actions: readonly UploadAction[];
  readonly requeueAfterMs?: number;
}

const NOTHING: UploadPlan = Object.freeze({ actions: [] });

/** The prefix of the upload server's termination message when its deadline passed (importer/upload-server-main.ts). */
export const DEADLINE_PASSED = 'deadlinePassed';

/** The condition reason and event reason of a PVC that asks for an import and an upload at once. */
export const BOTH_IMPORT_AND_UPLOAD = 'ErrImportAndUploadRequested';

/** Whether the annotations ask for an import (valid or not: the import controller's own reading). */
export function asksForImport(annotations: Readonly<Record<string, string>>): boolean {
  try {
    return importRequestFromAnnotations(annotations) !== undefined;
  } catch {
    return true;
  }
}

export function isUploadTarget(pvc: V1PersistentVolumeClaim): boolean {
  return pvc.metadata?.annotations?.[UploadAnnotation.Target] !== undefined;
}

/** The kubelet's verdict: the Ready condition, or (without conditions) every container ready. */
export function podReady(pod: V1Pod): boolean {
  const condition = pod.status?.conditions?.find((c) => c.type === 'Ready');
  if (condition) return condition.status === 'True';
  const containers = pod.status?.containerStatuses ?? [];
  return containers.length > 0 && containers.every((c) => c.ready);
}

interface Context {
  readonly pvc: V1PersistentVolumeClaim;
  readonly contentType: ContentType;
  readonly current: Readonly<Record<string, string>>;
  readonly observed: UploadObserved;
  readonly config: ControllerConfig;
  readonly retain: boolean;
}

export function planUpload(observed: UploadObserved, config: ControllerConfig): UploadPlan {
  const { pvc, pod, service, scratchPvc } = observed;
  if (pvc.metadata?.deletionTimestamp || !isUploadTarget(pvc)) return NOTHING;
  const current = pvc.metadata?.annotations ?? {};
  const name = pvc.metadata?.name ?? '';
  const ours = (o: { metadata?: { ownerReferences?: { uid: string }[] } } | undefined): boolean =>
    o?.metadata?.ownerReferences?.some((r) => r.uid === pvc.metadata?.uid) === true;
  const retain = current[Annotation.RetainAfterCompletion] === 'true';

  if (asksForImport(current) && current[Annotation.PodPhase] !== PodPhase.Succeeded) {
    // One source per volume: neither controller starts a pod (the import controller leaves upload
    // targets alone); this one says why, once, and removes an upload server started before.
    const message = `PVC ${name} asks for an import (${Annotation.Endpoint} or ${Annotation.Source}) and for an upload (${UploadAnnotation.Target}); remove one of them`;
    const changes = annotate(current, { [Annotation.PodPhase]: PodPhase.Failed, [Annotation.ErrorCode]: ErrorCode.InvalidSpec, [UploadAnnotation.PodReady]: 'false', ...running('false', BOTH_IMPORT_AND_UPLOAD, message) });
    const tidy: UploadAction[] = [];
    if (pod && ours(pod)) tidy.push({ type: 'deletePod', name: uploadPodName(name) });
    if (service && ours(service)) tidy.push({ type: 'deleteTlsSecret', name: uploadTlsSecretName(name) }, { type: 'deleteService', name: uploadServiceName(name) });
    return { actions: [...changes, ...withEvent(changes, 'Warning', BOTH_IMPORT_AND_UPLOAD, `${ErrorCode.InvalidSpec}: ${message}`), ...tidy] };
  }

  const contentType = contentTypeOf(pvc);
  if (contentType === undefined) {
    const message = `${Annotation.ContentType} must be kubevirt or archive; got "${current[Annotation.ContentType]}"`;
    const changes = annotate(current, { [Annotation.PodPhase]: PodPhase.Failed, [Annotation.ErrorCode]: ErrorCode.InvalidSpec, [UploadAnnotation.PodReady]: 'false', ...running('false', ErrorCode.InvalidSpec, message) });
    return { actions: [...changes, ...withEvent(changes, 'Warning', UploadEventReason.UploadFailed, `${ErrorCode.InvalidSpec}: ${message}`)] };
  }

  // Done (or given up): tidy up what is left; a retained pod stays.
  if (current[Annotation.PodPhase] === PodPhase.Succeeded || current[Annotation.FatalError] === 'true') {
    const actions: UploadAction[] = [];
    if (pod && ours(pod) && !retain && pod.status?.phase !== PodPhase.Running) actions.push({ type: 'deletePod', name: uploadPodName(name) });
    if (service && ours(service)) actions.push({ type: 'deleteTlsSecret', name: uploadTlsSecretName(name) }, { type: 'deleteService', name: uploadServiceName(name) });
    if (scratchPvc && ours(scratchPvc)) actions.push({ type: 'deleteScratchPvc', name: scratchPvcName(name) });
    return { actions };
  }

  if ((pod && !ours(pod)) || (service && !ours(service))) {
    const what = pod && !ours(pod) ? `pod ${uploadPodName(name)}` : `service ${uploadServiceName(name)}`;
    const changes = annotate(current, { [UploadAnnotation.PodReady]: 'false', ...running('false', 'UploadPodNameTaken', `${what} exists and does not belong to this PVC`) });
    return { actions: [...changes, ...withEvent(changes, 'Warning', UploadEventReason.PodNameTaken, `${what} exists and does not belong to this PVC`)], requeueAfterMs: config.retryBackoffMs };
  }

  const ctx: Context = { pvc, contentType, current, observed, config, retain };
  if (!pod && observed.waitForFirstConsumer) {
    // CDI's HonorWaitForFirstConsumer: no upload server until a workload has picked the volume's
    // node (virtctl reports the DataVolume's WaitForFirstConsumer phase; --force-bind asks for now).
    return { actions: planWaiting(pvc, current, { [UploadAnnotation.PodReady]: 'false', ...running('false', WAIT_FOR_FIRST_CONSUMER, waitingMessage(pvc)) }) };
  }
  if (!pod) return planStart(ctx);

  switch (pod.status?.phase) {
    case PodPhase.Running: {
      const ready = podReady(pod);
      const changes = annotate(current, { [Annotation.PodPhase]: PodPhase.Running, [UploadAnnotation.PodReady]: String(ready), ...running('true', 'Pod is running', '') });
      const becameReady = ready && current[UploadAnnotation.PodReady] !== 'true';
      return { actions: [...changes, ...(becameReady ? [{ type: 'event', eventType: 'Normal', reason: UploadEventReason.UploadReady, message: `Upload server ${uploadPodName(name)} is ready for an upload` } as const] : [])] };
    }
    case PodPhase.Succeeded:
      return planSucceeded(ctx, pod);
    case PodPhase.Failed:
      return planFailed(ctx, pod);
    default: {
      const waiting = waitingReason(pod);
      return {
        actions: annotate(current, {
          [Annotation.PodPhase]: PodPhase.Pending,
          [UploadAnnotation.PodReady]: 'false',
          ...running('false', waiting?.reason ?? 'Pending', waiting?.message ?? 'upload server pod is pending'),
        }),
      };
    }
  }
}

function planStart({ pvc, contentType, current, observed, config }: Context): UploadPlan {
  const { now, service, scratchPvc } = observed;
  const wait = backoffRemaining(current, now, config);
  if (wait > 0) return { actions: [], requeueAfterMs: wait };
  const name = pvc.metadata?.name ?? '';
  // Scratch once a format has needed it, or from the start when the client asked for a resumable
  // upload: tus stages on scratch, and the scratch PVC outlives a server pod, so a new pod resumes.
  const withScratch = current[Annotation.RequiresScratch] === 'true' || current[UploadClientAnnotation.Resumable] === 'true';
  const actions: UploadAction[] = [];
  if (withScratch && !scratchPvc) actions.push({ type: 'createScratchPvc', pvc: buildScratchPvc(pvc, settingsOf(config, observed.settings)) });
  actions.push(
    ...annotate(current, {
      [UploadAnnotation.PodName]: uploadPodName(name),
      [Annotation.PodPhase]: PodPhase.Pending,
      [UploadAnnotation.PodReady]: 'false',
      [Annotation.PodRestarts]: current[Annotation.PodRestarts] ?? '0',
      ...stopWaiting(current),
    }),
  );
  actions.push({
    type: 'startServer',
    pod: buildUploadPod(pvc, contentType, config, { withScratch, deadline: now + config.uploadDeadlineMs }),
    ...(service ? {} : { service: buildUploadService(pvc) }),
    hosts: uploadServerHosts(pvc.metadata?.namespace ?? '', name),
  });
  return { actions };
}

function planSucceeded(ctx: Context, pod: V1Pod): UploadPlan {
  const { pvc, current, observed, retain } = ctx;
  const message = terminationOf(pod, 'uploadserver');
  if (message?.kind === 'failure') return planFailed(ctx, pod);
  const name = pvc.metadata?.name ?? '';
  if (message?.scratchSpaceRequired) {
    // The upload was a format that must be staged: a new server with scratch takes the retry.
    const changes = annotate(current, {
      [Annotation.RequiresScratch]: 'true',
      [UploadAnnotation.PodReady]: 'false',
      ...running('false', 'Scratch space required', 'scratch space required and none found'),
    });
    return {
      actions: [...changes, ...withEvent(changes, 'Normal', UploadEventReason.ScratchRequired, 'The upload must be staged; starting the upload server again with scratch space'), { type: 'deletePod', name: uploadPodName(name) }],
    };
  }
  const changes = annotate(current, {
    [Annotation.PodPhase]: PodPhase.Succeeded,
    [UploadAnnotation.PodReady]: 'false',
    [Annotation.ErrorCode]: null,
    [Annotation.LastFailureTime]: null,
    ...(message?.preallocationApplied ? { [Annotation.Preallocation]: 'true' } : {}),
    ...running('false', 'Completed', 'Upload Complete'),
  });
  const actions: UploadAction[] = [...changes, ...withEvent(changes, 'Normal', UploadEventReason.UploadSucceeded, 'Upload Successful')];
  if (!retain) actions.push({ type: 'deletePod', name: uploadPodName(name) });
  if (observed.service) actions.push({ type: 'deleteTlsSecret', name: uploadTlsSecretName(name) }, { type: 'deleteService', name: uploadServiceName(name) });
  if (observed.scratchPvc) actions.push({ type: 'deleteScratchPvc', name: scratchPvcName(name) });
  return { actions };
}

function planFailed({ pvc, current, observed, config, retain }: Context, pod: V1Pod): UploadPlan {
  const name = pvc.metadata?.name ?? '';
  const podName = uploadPodName(name);
  const message = terminationOf(pod, 'uploadserver');
  const failure =
    message?.kind === 'failure'
      ? message
      : { code: ErrorCode.Internal, message: pod.status?.message ?? 'the upload server pod failed without a termination message', retryable: true };
  if (failure.message.startsWith(DEADLINE_PASSED)) {
    // No upload came in the server's lifetime: a new one, with a new certificate; not a failure.
    return { actions: [...annotate(current, { [UploadAnnotation.PodReady]: 'false', ...running('false', 'DeadlinePassed', 'the upload server is replaced: no upload before its deadline') }), { type: 'deletePod', name: podName }] };
  }
  const verdict = countFailure(current, failure, pod.metadata?.uid ?? '', observed.now, config);
  if (verdict.kind === 'counted') return { actions: retain && current[Annotation.FatalError] === 'true' ? [] : [{ type: 'deletePod', name: podName }] };
  if (verdict.kind === 'retry') {
    return {
      actions: [
        ...annotate(current, { ...verdict.annotations, [UploadAnnotation.PodReady]: 'false' }),
        { type: 'event', eventType: 'Warning', reason: UploadEventReason.UploadFailed, message: `${failure.code}: ${failure.message}; starting a new upload server (${verdict.restarts}/${config.maxRetries})` },
        { type: 'deletePod', name: podName },
      ],
      requeueAfterMs: verdict.delayMs,
    };
  }
  const actions: UploadAction[] = [
    ...annotate(current, { ...verdict.annotations, [UploadAnnotation.PodReady]: 'false' }),
    { type: 'event', eventType: 'Warning', reason: UploadEventReason.UploadFailed, message: `${failure.code}: ${verdict.why}` },
  ];
  if (!retain) actions.push({ type: 'deletePod', name: podName });
  if (observed.service) actions.push({ type: 'deleteTlsSecret', name: uploadTlsSecretName(name) }, { type: 'deleteService', name: uploadServiceName(name) });
  return { actions };
}
