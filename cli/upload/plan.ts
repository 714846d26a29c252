/**
 * `ferry image-upload`, the pure part: its flags (virtctl's, with virtctl's meaning), the objects
 * it creates (the PVC or DataVolume exactly as virtctl renders them), and what each observation
 * of the cluster means for the wait (ready, keep waiting, or an error with the reason). No
 * clients, no clock: cli/upload/run.ts does the calls.
 */

import { parseArgs } from 'node:util';
import { ErrorCode, FerryError } from '../../src/errors.js';
import { Annotation } from '../../src/api/cdi.js';
import { parseQuantity } from '../../src/quantity.js';
import { FERRY_TOKEN_REQUEST_PREFIX, UploadAnnotation, UploadLabel, UploadProxyService, UploadTokenApi } from '../../src/contract/upload-api.js';

export const IMAGE_UPLOAD_USAGE = `Usage: ferry image-upload pvc|dv NAME --image-path FILE [--size SIZE] [options]

Uploads a local disk image (raw, qcow2, vmdk, vhd(x), vdi, compressed or not; a tar with
--archive-path) into a PVC or a DataVolume, as virtctl image-upload does: creates the target (unless
--no-create), waits for its upload server, gets an upload token, uploads with progress (resuming
after a broken connection where the proxy offers it) and waits for the import to finish.

  --image-path FILE        the image to upload
  --archive-path TAR       a tar archive to unpack into the volume (content type archive)
  --size SIZE              size of a new PVC/DataVolume (e.g. 10Gi); required unless it exists
  --uploadproxy-url URL    the upload proxy; default: CDIConfig "config" (spec.uploadProxyURLOverride, else
                           status.uploadProxyURL) if it answers, else a port-forward through the Kubernetes API
                           to a ready pod of Service ferry-system/ferry-uploadproxy
  --insecure               do not verify the proxy's TLS certificate
  --no-create              use an existing PVC/DataVolume (a PVC gets the upload annotation if it lacks it)
  --storage-class SC       storage class of a new target
  --access-mode MODE       ReadWriteOnce (default for a PVC), ReadWriteMany or ReadWriteOncePod
  --volume-mode MODE       filesystem or block
  --force-bind             bind at once, even with a WaitForFirstConsumer storage class
  --wait-secs N            how long to wait for the upload server (default 300)
  --retry N                upload attempts (default 5)
  -n, --namespace NS       namespace (default: the kubeconfig's)
  --kubeconfig FILE        kubeconfig (default: KUBECONFIG, then ~/.kube/config)`;

export const TargetKind = { Pvc: 'pvc', Dv: 'dv' } as const;
export type TargetKind = (typeof TargetKind)[keyof typeof TargetKind];

export interface ImageUploadOptions {
  readonly kind: TargetKind;
  readonly name: string;
  readonly imagePath: string;
  readonly archive: boolean;
  readonly size?: string;
  readonly proxyUrl?: string;
  readonly insecure: boolean;
  readonly noCreate: boolean;
  readonly storageClass?: string;
  readonly accessMode?: string;
  readonly volumeMode?: 'Filesystem' | 'Block';
  readonly forceBind: boolean;
  readonly waitSecs: number;
  readonly retry: number;
  readonly namespace?: string;
  readonly kubeconfig?: string;
}

const invalid = (message: string): never => {
  throw new FerryError(ErrorCode.InvalidSpec, message);
};

function count(flag: string, text: string | undefined, fallback: number, min: number): number {
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text) || Number(text) < min) invalid(`--${flag} must be a whole number ≥ ${min}; got "${text}"`);
  return Number(text);
}

/** Pure: the command line as options (or `help`), every refusal an INVALID_SPEC naming the flag. */
export function parseImageUploadArgs(argv: readonly string[]): ImageUploadOptions | 'help' {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      options: {
        'image-path': { type: 'string' },
        'archive-path': { type: 'string' },
        size: { type: 'string' },
        'uploadproxy-url': { type: 'string' },
        insecure: { type: 'boolean' },
        'no-create': { type: 'boolean' },
        'storage-class': { type: 'string' },
        'access-mode': { type: 'string' },
        'volume-mode': { type: 'string' },
        'force-bind': { type: 'boolean' },
        'wait-secs': { type: 'string' },
        retry: { type: 'string' },
        namespace: { type: 'string', short: 'n' },
        kubeconfig: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    return invalid(`${(err as Error).message}\n${IMAGE_UPLOAD_USAGE}`);
  }
  const { values: v, positionals } = parsed;
  if (v.help) return 'help';
  const [kind, name, ...extra] = positionals;
  if (kind !== TargetKind.Pvc && kind !== TargetKind.Dv) return invalid(`the target kind must be pvc or dv; got "${kind ?? ''}"`);
  if (name === undefined || name === '') return invalid(`a ${kind} name is required`);
  if (!/^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/.test(name) || name.length > 253) invalid(`"${name}" is not a valid ${kind} name (lowercase letters, digits, "-" and ".")`);
  if (extra.length > 0) invalid(`unexpected arguments: ${extra.join(' ')}`);
  const image = v['image-path'];
  const archivePath = v['archive-path'];
  if (image !== undefined && archivePath !== undefined) invalid('--image-path and --archive-path exclude each other');
  const imagePath = image ?? archivePath ?? invalid('--image-path (or --archive-path) is required');
  if (v.size !== undefined) parseQuantity(v.size);
  if (!v['no-create'] && v.size === undefined) invalid('when creating a resource, the size must be specified (--size)');
  const accessMode = v['access-mode'];
  if (accessMode === 'ReadOnlyMany') invalid('cannot upload to a readonly volume, use either ReadWriteOnce, ReadWriteMany or ReadWriteOncePod if supported');
  if (accessMode !== undefined && !['ReadWriteOnce', 'ReadWriteMany', 'ReadWriteOncePod'].includes(accessMode)) invalid(`--access-mode must be ReadWriteOnce, ReadWriteMany or ReadWriteOncePod; got "${accessMode}"`);
  const modeText = v['volume-mode']?.toLowerCase();
  if (modeText !== undefined && modeText !== 'filesystem' && modeText !== 'block') invalid(`--volume-mode must be filesystem or block; got "${v['volume-mode']}"`);
  const proxyUrl = v['uploadproxy-url'];
  return {
    kind,
    name,
    imagePath,
    archive: archivePath !== undefined,
    insecure: v.insecure === true,
    noCreate: v['no-create'] === true,
    forceBind: v['force-bind'] === true,
    waitSecs: count('wait-secs', v['wait-secs'], 300, 0),
    retry: count('retry', v.retry, 5, 1),
    ...(v.size !== undefined ? { size: v.size } : {}),
    ...(proxyUrl !== undefined && proxyUrl !== '' ? { proxyUrl } : {}),
    ...(v['storage-class'] !== undefined ? { storageClass: v['storage-class'] } : {}),
    ...(accessMode !== undefined ? { accessMode } : {}),
    ...(modeText !== undefined ? { volumeMode: modeText === 'block' ? ('Block' as const) : ('Filesystem' as const) } : {}),
    ...(v.namespace !== undefined ? { namespace: v.namespace } : {}),
    ...(v.kubeconfig !== undefined ? { kubeconfig: v.kubeconfig } : {}),
  };
}

const contentType = (o: ImageUploadOptions): string => (o.archive ? 'archive' : 'kubevirt');

/** Pure: the PVC virtctl creates for `pvc` (RenderPVC plus its annotations and label). */
export function uploadPvc(o: ImageUploadOptions, namespace: string): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: {
      name: o.name,
      namespace,
      labels: { [UploadLabel.ApplyStorageProfile]: 'true' },
      annotations: {
        [UploadAnnotation.UploadTarget]: '',
        [Annotation.ContentType]: contentType(o),
        [UploadAnnotation.Resumable]: 'true',
        ...(o.forceBind ? { [UploadAnnotation.BindImmediate]: '' } : {}),
      },
    },
    spec: {
      accessModes: [o.accessMode ?? 'ReadWriteOnce'],
      resources: { requests: { storage: o.size } },
      ...(o.storageClass !== undefined ? { storageClassName: o.storageClass } : {}),
      ...(o.volumeMode !== undefined ? { volumeMode: o.volumeMode } : {}),
    },
  };
}

/** Pure: the DataVolume virtctl creates for `dv`: `source.upload: {}` and `spec.storage`. */
export function uploadDataVolume(o: ImageUploadOptions, namespace: string): Record<string, unknown> {
  return {
    apiVersion: 'cdi.kubevirt.io/v1beta1',
    kind: 'DataVolume',
    // The DataVolume's annotations pass to its PVC: the upload server gets scratch, so the upload resumes.
    metadata: { name: o.name, namespace, annotations: { [UploadAnnotation.Resumable]: 'true', ...(o.forceBind ? { [UploadAnnotation.BindImmediate]: '' } : {}) } },
    spec: {
      contentType: contentType(o),
      source: { upload: {} },
      storage: {
        resources: { requests: { storage: o.size } },
        ...(o.accessMode !== undefined ? { accessModes: [o.accessMode] } : {}),
        ...(o.storageClass !== undefined ? { storageClassName: o.storageClass } : {}),
        ...(o.volumeMode !== undefined ? { volumeMode: o.volumeMode } : {}),
      },
    },
  };
}

/** Pure: the UploadTokenRequest for a target (its token names the PVC; for a DV, the DV's name). */
export function tokenRequest(pvcName: string): Record<string, unknown> {
  return {
    apiVersion: `${UploadTokenApi.group}/${UploadTokenApi.version}`,
    kind: UploadTokenApi.kind,
    metadata: { generateName: FERRY_TOKEN_REQUEST_PREFIX },
    spec: { pvcName },
  };
}

interface Meta {
  readonly name?: string;
  readonly uid?: string;
  readonly annotations?: Readonly<Record<string, string>>;
}
export interface PvcLike {
  readonly metadata?: Meta;
}
export interface DvLike {
  readonly metadata?: Meta;
  readonly status?: { readonly phase?: string; readonly claimName?: string };
}
export interface EventLike {
  readonly involvedObject?: { readonly kind?: string; readonly uid?: string; readonly name?: string };
  readonly reason?: string;
  readonly message?: string;
}

/**
 * Pure: what to do with a PVC that already exists (virtctl: it must be an upload target unless
 * --no-create, which then adds the annotation; never an upload that already succeeded; with
 * --archive-path its content type must be archive).
 */
export function existingPvcVerdict(pvc: PvcLike, o: ImageUploadOptions): 'use' | 'annotate' {
  const a = pvc.metadata?.annotations ?? {};
  const where = `PVC ${o.name}`;
  if (a[Annotation.PodPhase] === 'Succeeded') invalid(`${where} already successfully imported/cloned/updated`);
  if (o.archive && a[Annotation.ContentType] !== 'archive') invalid(`${where} doesn't have archive contentType annotation`);
  if (a[UploadAnnotation.UploadTarget] !== undefined) return 'use';
  if (!o.noCreate) invalid(`${where} not available for upload: it exists and is not an upload target (use --no-create to upload into it)`);
  return 'annotate';
}

/** virtctl's strconv.ParseBool. */
const parseBool = (text: string | undefined): boolean => text !== undefined && ['1', 't', 'T', 'TRUE', 'true', 'True'].includes(text);

export type WaitStep = { readonly done: true } | { readonly done: false; readonly note?: string };

/** Pure: a PVC's readiness for the upload (its server's pod is ready). */
export function pvcReadiness(pvc: PvcLike | undefined): WaitStep {
  if (pvc === undefined) return { done: false, note: 'PVC not found yet' };
  return parseBool(pvc.metadata?.annotations?.[UploadAnnotation.PodReady]) ? { done: true } : { done: false };
}

/** Pure: a DataVolume's readiness (phase UploadReady); WaitForFirstConsumer is an error without --force-bind. */
export function dvReadiness(dv: DvLike | undefined, forceBind: boolean): WaitStep {
  if (dv === undefined) return { done: false, note: 'DataVolume not found yet' };
  const phase = dv.status?.phase;
  if ((phase === 'WaitForFirstConsumer' || phase === 'PendingPopulation') && !forceBind) {
    invalid(`cannot upload to DataVolume in ${phase} phase, make sure the PVC is Bound, or use force-bind flag`);
  }
  return phase === 'UploadReady' ? { done: true } : { done: false, ...(phase ? { note: `phase ${phase}` } : {}) };
}

/** Pure: an Event that ends the wait (virtctl: ProvisioningFailed on the PVC, ErrClaimNotValid on the DV). */
export function fatalEvent(events: readonly EventLike[], pvcUid: string | undefined, dvUid: string | undefined): string | undefined {
  for (const e of events) {
    const on = e.involvedObject ?? {};
    if (on.kind === 'PersistentVolumeClaim' && pvcUid !== undefined && on.uid === pvcUid && e.reason === 'ProvisioningFailed' && !/the object has been modified/.test(e.message ?? '')) {
      return `provisioning failed: ${e.message ?? ''}`;
    }
    if (on.kind === 'DataVolume' && dvUid !== undefined && on.uid === dvUid && e.reason === 'ErrClaimNotValid') return `the DataVolume's claim is not valid: ${e.message ?? ''}`;
  }
  return undefined;
}

/** Pure: whether the import after the upload is done: pod.phase Succeeded; Failed is the reason. */
export function processingStep(pvc: PvcLike | undefined): WaitStep {
  const a = pvc?.metadata?.annotations ?? {};
  const phase = a[Annotation.PodPhase];
  if (phase === 'Succeeded') return { done: true };
  if (phase === 'Failed') {
    const reason = [a[Annotation.RunningReason], a[Annotation.RunningMessage]].filter((x) => x !== undefined && x !== '').join(': ');
    throw new FerryError(ErrorCode.TargetError, `processing the upload failed${reason ? `: ${reason}` : ''}`);
  }
  return { done: false };
}

/**
 * Pure: how to reach the proxy from outside the cluster (virtctl prints a hint too): the exact
 * `kubectl port-forward` to Ferry's proxy Service, and the flags to run the same upload through it
 * (--insecure: the proxy's certificate names the Service, not 127.0.0.1; or trust its CA with
 * SSL_CERT_FILE and keep verifying).
 */
export function portForwardHint(): string {
  const { namespace, name, port, localPort } = UploadProxyService;
  return [
    `to reach the upload proxy through the Kubernetes API, forward a local port to it in another terminal:`,
    `  kubectl port-forward -n ${namespace} service/${name} ${localPort}:${port}`,
    `and run this command again with --uploadproxy-url https://127.0.0.1:${localPort} --insecure`,
  ].join('\n');
}

/**
 * Pure: the proxy URL CDIConfig `config` names (override first), with https:// added as virtctl
 * does; undefined when it names none (the upload then goes through a port-forward, proxy-route.ts).
 */
export function proxyUrlFromConfig(config: { readonly spec?: { readonly uploadProxyURLOverride?: string }; readonly status?: { readonly uploadProxyURL?: string } } | undefined): string | undefined {
  const url = config?.spec?.uploadProxyURLOverride || config?.status?.uploadProxyURL;
  if (!url) return undefined;
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(url) ? url : `https://${url}`;
}

/**
 * The 2 s poll virtctl uses (wait.PollUntilContextTimeout, immediate): `step` until done or
 * `timeoutMs` has passed; bounded by the injected clock. A timeout is an error naming `what`.
 */
export async function pollUntil(
  step: () => Promise<WaitStep>,
  options: {
    readonly what: string;
    readonly intervalMs: number;
    /** Start at `firstIntervalMs` and grow by half each look up to `intervalMs` (default: `intervalMs` throughout). */
    readonly firstIntervalMs?: number;
    readonly timeoutMs: number;
    readonly now: () => number;
    readonly sleep: (ms: number) => Promise<void>;
    readonly onNote?: (note: string) => void;
  },
): Promise<void> {
  const deadline = options.now() + options.timeoutMs;
  let interval = Math.min(options.firstIntervalMs ?? options.intervalMs, options.intervalMs);
  for (;;) {
    const result = await step();
    if (result.done) return;
    if (result.note !== undefined) options.onNote?.(result.note);
    const left = deadline - options.now();
    if (left <= 0) throw new FerryError(ErrorCode.SourceUnavailable, `timed out after ${Math.round(options.timeoutMs / 1000)} s waiting for ${options.what}`, { retryable: false });
    await options.sleep(Math.min(interval, left));
    interval = Math.min(Math.round(interval * 1.5), options.intervalMs);
  }
}
