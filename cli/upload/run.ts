/**
 * `ferry image-upload`, the calls, in virtctl's order (shared/reference/virtctl-upload.md §2): the
 * target is read, created or annotated; its upload server is waited for every 2 s up to
 * --wait-secs (Events read meanwhile); the proxy is reached at the flag's or CDIConfig's URL, or
 * through a port-forward (reach-proxy.ts); a token
 * from an UploadTokenRequest; the upload (cli/upload/client.ts); then the PVC is watched every 2 s
 * until the import is done. Decisions are cli/upload/plan.ts's.
 */

import { stat } from 'node:fs/promises';
import { CoreV1Api, CustomObjectsApi, type KubeConfig, PatchStrategy, setHeaderOptions, StorageV1Api } from '@kubernetes/client-node';
import { ErrorCode, FerryError } from '../../src/errors.js';
import { DV_GROUP, DV_PLURAL, DV_VERSION } from '../../src/api/datavolume.js';
import { UploadAnnotation, UploadTokenApi } from '../../src/contract/upload-api.js';
import { apiError, orUndefined } from './api-errors.js';
import { uploadImage, type UploadOutcome } from './client.js';
import { reachProxy } from './reach-proxy.js';
import {
  type DvLike,
  dvReadiness,
  type EventLike,
  existingPvcVerdict,
  fatalEvent,
  type ImageUploadOptions,
  pollUntil,
  processingStep,
  type PvcLike,
  pvcReadiness,
  TargetKind,
  tokenRequest,
  uploadDataVolume,
  uploadPvc,
  type WaitStep,
} from './plan.js';
import { createProgressReporter, type ProgressOutput } from './progress.js';

export const POLL_INTERVAL_MS = 2000;
/** The first look after the upload; each next one waits half again as long, up to POLL_INTERVAL_MS. */
export const FIRST_PROCESSING_POLL_MS = 200;
/** virtctl waits up to 24 h for processing after the upload. */
export const PROCESSING_TIMEOUT_MS = 24 * 3600 * 1000;

export interface ImageUploadDeps {
  readonly kc: KubeConfig;
  /** Status lines. */
  readonly say: (line: string) => void;
  /** Where the progress goes (a terminal gets a redrawn line). */
  readonly progressOut: ProgressOutput;
  readonly now: () => number;
  readonly sleep: (ms: number) => Promise<void>;
  /** PEM bundle to verify the proxy with, beside the system's (the composition root reads it). */
  readonly ca?: string | Buffer;
  /** Notices that are not the command's output (stderr): that a port-forward is used, its errors. */
  readonly warn: (line: string) => void;
  /** Aborted on Ctrl-C/SIGTERM: the port-forward is closed at once. */
  readonly signal?: AbortSignal;
}

export async function imageUpload(o: ImageUploadOptions, deps: ImageUploadDeps): Promise<UploadOutcome> {
  const { kc, say } = deps;
  const size = await stat(o.imagePath).then(
    (s) => (s.isFile() ? s.size : Number.NaN),
    (err: NodeJS.ErrnoException) => {
      throw new FerryError(ErrorCode.SourceNotFound, `open ${o.imagePath}: ${err.code === 'ENOENT' ? 'no such file or directory' : err.message}`);
    },
  );
  if (!Number.isFinite(size)) throw new FerryError(ErrorCode.InvalidSpec, `${o.imagePath} is not a regular file`);
  const namespace = o.namespace ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? 'default';
  const core = kc.makeApiClient(CoreV1Api);
  const custom = kc.makeApiClient(CustomObjectsApi);
  const name = o.name;
  const readPvc = (): Promise<PvcLike | undefined> => orUndefined(core.readNamespacedPersistentVolumeClaim({ name, namespace })).catch((e: unknown) => Promise.reject(apiError(`get PVC ${namespace}/${name}`, e)));
  const readDv = (): Promise<DvLike | undefined> =>
    orUndefined(custom.getNamespacedCustomObject({ group: DV_GROUP, version: DV_VERSION, namespace, plural: DV_PLURAL, name }) as Promise<DvLike>).catch((e: unknown) => Promise.reject(apiError(`get DataVolume ${namespace}/${name}`, e)));

  // 1. The target: existing (checked, maybe annotated) or created.
  const existing = await readPvc();
  if (existing) {
    if (o.kind === TargetKind.Dv) {
      if ((await readDv()) === undefined) throw new FerryError(ErrorCode.InvalidSpec, `No DataVolume is associated with the existing PVC ${namespace}/${name}`);
    } else if (existingPvcVerdict(existing, o) === 'annotate') {
      await core
        .patchNamespacedPersistentVolumeClaim({ name, namespace, body: { metadata: { annotations: { [UploadAnnotation.UploadTarget]: '', [UploadAnnotation.Resumable]: 'true' } } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch))
        .catch((e: unknown) => Promise.reject(apiError(`annotate PVC ${namespace}/${name}`, e)));
      say(`PVC ${namespace}/${name} marked as an upload target`);
    }
    say(`Using existing PVC ${namespace}/${name}`);
  } else {
    if (o.noCreate) throw new FerryError(ErrorCode.SourceNotFound, `PVC ${namespace}/${name} not found (--no-create: nothing is created)`);
    if (o.storageClass !== undefined) {
      const sc = o.storageClass;
      await kc
        .makeApiClient(StorageV1Api)
        .readStorageClass({ name: sc })
        .catch((e: unknown) => Promise.reject(apiError(`storage class ${sc}`, e)));
    }
    if (o.kind === TargetKind.Pvc) {
      await core.createNamespacedPersistentVolumeClaim({ namespace, body: uploadPvc(o, namespace) }).catch((e: unknown) => Promise.reject(apiError(`create PVC ${namespace}/${name}`, e)));
      say(`PersistentVolumeClaim ${namespace}/${name} created`);
    } else {
      await custom
        .createNamespacedCustomObject({ group: DV_GROUP, version: DV_VERSION, namespace, plural: DV_PLURAL, body: uploadDataVolume(o, namespace) })
        .catch((e: unknown) => Promise.reject(apiError(`create DataVolume ${namespace}/${name}`, e)));
      say(`DataVolume ${namespace}/${name} created`);
    }
  }

  // 2. Its upload server.
  say(`Waiting for ${o.kind === TargetKind.Pvc ? 'PVC' : 'DataVolume'} ${name} upload pod to be ready...`);
  await waitReady(o, namespace, core, readPvc, readDv, deps);
  say('Pod now ready');

  // 3. The proxy (the URL, or a port-forward: reach-proxy.ts), the token, the upload.
  const proxy = await reachProxy(o.proxyUrl, o.insecure, { kc, warn: deps.warn, ...(deps.ca !== undefined ? { ca: deps.ca } : {}) });
  const stopOnInterrupt = (): void => void proxy.close();
  deps.signal?.addEventListener('abort', stopOnInterrupt, { once: true });
  let outcome: UploadOutcome;
  try {
    const token = async (): Promise<string> => {
      const answer = (await custom
        .createNamespacedCustomObject({ group: UploadTokenApi.group, version: UploadTokenApi.version, namespace, plural: UploadTokenApi.plural, body: tokenRequest(name) })
        .catch((e: unknown) => Promise.reject(apiError('request an upload token (UploadTokenRequest)', e)))) as { status?: { token?: string } };
      const t = answer.status?.token;
      if (!t) throw new FerryError(ErrorCode.Unauthorized, 'the UploadTokenRequest came back without a token (is the upload token API installed?)');
      return t;
    };
    say(`Uploading data to ${proxy.forwardedTo !== undefined ? `${proxy.url} (port-forward to pod ${proxy.forwardedTo})` : proxy.url}`);
    const progress = createProgressReporter({ total: size, out: deps.progressOut, now: deps.now });
    const ca = proxy.ca ?? (deps.ca !== undefined ? [deps.ca] : undefined);
    outcome = await uploadImage({
      proxyUrl: proxy.url,
      file: o.imagePath,
      size,
      token,
      insecure: o.insecure,
      ...(ca !== undefined ? { ca } : {}),
      ...(proxy.servername !== undefined ? { servername: proxy.servername } : {}),
      retry: o.retry,
      onProgress: (n) => progress.update(n),
      onMessage: say,
      sleep: deps.sleep,
    });
    progress.done();
  } finally {
    deps.signal?.removeEventListener('abort', stopOnInterrupt);
    await proxy.close();
  }

  // 4. The import behind it.
  say('Uploading data completed successfully, waiting for processing to complete, you can hit ctrl-c without interrupting the progress');
  // Processing often ends within a second of the last byte (a raw upload written in place): look
  // again soon, then every 2 s as virtctl does, instead of waiting out a whole 2 s first.
  await pollUntil(async () => processingStep(await readPvc()), {
    what: `PVC ${namespace}/${name} to finish processing`,
    intervalMs: POLL_INTERVAL_MS,
    firstIntervalMs: FIRST_PROCESSING_POLL_MS,
    timeoutMs: PROCESSING_TIMEOUT_MS,
    now: deps.now,
    sleep: deps.sleep,
  });
  say('Processing completed successfully');
  say(`Uploading ${o.imagePath} completed successfully`);
  return outcome;
}

async function waitReady(o: ImageUploadOptions, namespace: string, core: CoreV1Api, readPvc: () => Promise<PvcLike | undefined>, readDv: () => Promise<DvLike | undefined>, deps: ImageUploadDeps): Promise<void> {
  const fatal = async (pvc: PvcLike | undefined, dv: DvLike | undefined): Promise<void> => {
    const events = await core.listNamespacedEvent({ namespace }).then(
      (l) => l.items as EventLike[],
      () => [],
    );
    const reason = fatalEvent(events, pvc?.metadata?.uid, dv?.metadata?.uid);
    if (reason !== undefined) throw new FerryError(ErrorCode.TargetError, reason);
  };
  const step = async (): Promise<WaitStep> => {
    if (o.kind === TargetKind.Pvc) {
      const pvc = await readPvc();
      const verdict = pvcReadiness(pvc);
      if (!verdict.done) await fatal(pvc, undefined);
      return verdict;
    }
    const dv = await readDv();
    const verdict = dvReadiness(dv, o.forceBind);
    if (!verdict.done) await fatal(dv?.status?.claimName ? await readPvc() : undefined, dv);
    return verdict;
  };
  await pollUntil(step, { what: `the upload server of ${o.kind} ${namespace}/${o.name} (--wait-secs ${o.waitSecs})`, intervalMs: POLL_INTERVAL_MS, timeoutMs: o.waitSecs * 1000, now: deps.now, sleep: deps.sleep });
}
