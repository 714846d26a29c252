/**
 * The upload HTTP API that the upload proxy serves to clients and the upload server serves to the
 * proxy: CDI's paths (`pkg/common/common.go`) and the one table of statuses a client sees
 * (cdi.md §3.1b). Both programs answer from this table; neither writes a status literal.
 */

import { Annotation } from '../api/cdi.js';
import { CDICONFIG_GROUP, CDICONFIG_NAME, CDICONFIG_PLURAL, CDICONFIG_VERSION } from '../api/cdiconfig.js';
import { UPLOAD_GROUP, UPLOAD_TOKEN_REQUEST_KIND, UPLOAD_TOKEN_REQUEST_PLURAL, UPLOAD_VERSION } from '../api/upload-token-request.js';

export const UploadPath = {
  Sync: '/v1beta1/upload',
  Async: '/v1beta1/upload-async',
  Form: '/v1beta1/upload-form',
  FormAsync: '/v1beta1/upload-form-async',
  /** Server side only: CDI's proxy rewrites to it for archive targets. */
  Archive: '/v1beta1/upload-archive',
  AlphaSync: '/v1alpha1/upload',
  AlphaAsync: '/v1alpha1/upload-async',
  AlphaForm: '/v1alpha1/upload-form',
  AlphaFormAsync: '/v1alpha1/upload-form-async',
  AlphaArchive: '/v1alpha1/upload-archive',
  /** Ferry's addition (ADR 0010): tus 1.0 core, the upload staged, then imported. */
  Resumable: '/v1beta1/upload-resumable',
  Healthz: '/healthz',
} as const;
export type UploadPath = (typeof UploadPath)[keyof typeof UploadPath];

/** How an upload path wants its body: raw or multipart (field `file`), answered when done or when received. */
export interface UploadMode {
  readonly form: boolean;
  readonly async: boolean;
}

const MODES: Readonly<Record<string, UploadMode>> = Object.freeze({
  [UploadPath.Sync]: { form: false, async: false },
  [UploadPath.Async]: { form: false, async: true },
  [UploadPath.Form]: { form: true, async: false },
  [UploadPath.FormAsync]: { form: true, async: true },
  [UploadPath.Archive]: { form: false, async: false },
  [UploadPath.AlphaSync]: { form: false, async: false },
  [UploadPath.AlphaAsync]: { form: false, async: true },
  [UploadPath.AlphaForm]: { form: true, async: false },
  [UploadPath.AlphaFormAsync]: { form: true, async: true },
  [UploadPath.AlphaArchive]: { form: false, async: false },
});

/** The multipart field the form paths read the image from. */
export const UPLOAD_FORM_FIELD = 'file';

/** Pure: the mode of an upload path (query string ignored), or undefined for any other path. */
export function uploadModeOf(url: string): UploadMode | undefined {
  const path = url.split('?')[0] ?? '';
  return Object.prototype.hasOwnProperty.call(MODES, path) ? MODES[path] : undefined;
}

/** Paths the proxy accepts from clients (the archive path is the server's); each needs a token. */
export function isProxyUploadPath(url: string): boolean {
  const path = url.split('?')[0] ?? '';
  return path === UploadPath.Resumable || (uploadModeOf(path) !== undefined && path !== UploadPath.Archive && path !== UploadPath.AlphaArchive);
}

/**
 * tus 1.0 core (https://tus.io/protocols/resumable-upload) on `UploadPath.Resumable`. The PVC is
 * the resource (the token names it), so there is no creation step: `Upload-Length` comes with the
 * first PATCH, as in the `creation-defer-length` extension.
 */
export const TUS_VERSION = '1.0.0';
export const TUS_CONTENT_TYPE = 'application/offset+octet-stream';
export const TusHeader = {
  Resumable: 'tus-resumable',
  Version: 'tus-version',
  Offset: 'upload-offset',
  Length: 'upload-length',
  DeferLength: 'upload-defer-length',
  MaxSize: 'tus-max-size',
  /** tus's `key base64value,...`; Ferry's client puts its fingerprint of the file here (FINGERPRINT_KEY). */
  Metadata: 'upload-metadata',
} as const;

/** Headers the proxy passes on to the server: what describes the body or its place, nothing that authenticates. */
export const FORWARDED_REQUEST_HEADERS = ['content-type', 'content-length', 'x-cdi-content-type', TusHeader.Resumable, TusHeader.Offset, TusHeader.Length, TusHeader.Metadata] as const;

/**
 * The Upload-Metadata key of the uploaded file's fingerprint (ADR 0010, "Which file is resumed"):
 * sent with every HEAD and PATCH, recorded with the durable offset; a staged upload is resumed only
 * by a request with the same fingerprint, else it starts over.
 */
export const FINGERPRINT_KEY = 'fingerprint';
/** A fingerprint is short and printable: `v1:<size>:<sha256 hex>`. */
const FINGERPRINT_RE = /^[A-Za-z0-9:._-]{1,200}$/;

/** Pure: the Upload-Metadata header value for `fields` (tus: `key base64(value)`, comma-separated). */
export function encodeUploadMetadata(fields: Readonly<Record<string, string>>): string {
  return Object.entries(fields)
    .map(([key, value]) => `${key} ${Buffer.from(value, 'utf8').toString('base64')}`)
    .join(',');
}

/** Pure: the fingerprint an Upload-Metadata header carries, or undefined (absent, malformed, not one). */
export function fingerprintOf(header: string | string[] | undefined): string | undefined {
  if (typeof header !== 'string' || header.length > 4096) return undefined;
  for (const pair of header.split(',')) {
    const [key, value, ...rest] = pair.trim().split(' ');
    if (key !== FINGERPRINT_KEY || value === undefined || rest.length > 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(value)) continue;
    const text = Buffer.from(value, 'base64').toString('utf8');
    return FINGERPRINT_RE.test(text) ? text : undefined;
  }
  return undefined;
}

/** Pure: a non-negative integer header (Upload-Offset, Upload-Length, Content-Length), or undefined. */
export function byteCountOf(header: string | string[] | undefined): number | undefined {
  if (typeof header !== 'string' || !/^\d{1,16}$/.test(header)) return undefined;
  const n = Number(header);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * Where Ferry's upload proxy runs (manifests/uploadproxy.yaml): what a user outside the cluster
 * forwards a local port to when its URL is not reachable, and the local port the hint suggests.
 * `pod` is the StatefulSet's one pod, the name RBAC lets every user find and port-forward to
 * (manifests/rbac-upload-users.yaml) when it may not list the pods or EndpointSlices.
 */
export const UploadProxyService = { namespace: 'ferry-system', name: 'ferry-uploadproxy', port: 443, localPort: 18443, pod: 'ferry-uploadproxy-0' } as const;

/** The name the proxy's serving certificate is checked for when it is reached by a port-forward (127.0.0.1). */
export const UPLOAD_PROXY_TLS_NAME = `${UploadProxyService.name}.${UploadProxyService.namespace}.svc`;

/**
 * Where the CA that signs the proxy's serving certificate is kept (controller/certs): a Secret in
 * Ferry's namespace (the CA's key too, its trust bundle under `key`), and its trust bundle alone
 * in a ConfigMap every authenticated user may read (manifests/rbac-upload-users.yaml), under
 * `configMapKey`. `ferry image-upload` verifies the proxy against it.
 */
export const UploadProxyCaBundle = { namespace: UploadProxyService.namespace, secret: 'ferry-uploadproxy-ca', key: 'ca-bundle.crt', configMap: 'ferry-uploadproxy-ca', configMapKey: 'ca.crt' } as const;

/** The header that carries Ferry's error code beside CDI's text body (server and proxy answers). */
export const ERROR_CODE_HEADER = 'x-ferry-error-code';

/** CDI's message prefix for a failed upload, and its wording for an image too big for the volume. */
export const SAVING_FAILED = 'Saving stream failed';
export const TOO_BIG_REASON = 'effective image size is larger than the reported available storage';

/**
 * Every answer of the upload API, by condition. `component` says who answers; the status is what a
 * client such as virtctl acts on (only 200 is success; a first 401 aborts; the rest is retried).
 */
export const UploadAnswer = {
  // upload proxy
  NoBearer: { component: 'proxy', status: 400, meaning: 'no Authorization header, or not "Bearer <token>"' },
  BadToken: { component: 'proxy', status: 401, meaning: 'bad signature, wrong algorithm, expired or not yet valid, wrong issuer, malformed' },
  BadClaims: { component: 'proxy', status: 400, meaning: 'token operation is not Upload, resource not persistentvolumeclaims, or no name/namespace' },
  TargetUnavailable: { component: 'proxy', status: 503, meaning: 'PVC missing, not an upload target, already uploaded, or its server not ready within 10 s' },
  ProxyTransport: { component: 'proxy', status: 502, meaning: 'the upload server could not be reached (body "error in upload-proxy: ...")' },
  // upload server
  NotFound: { component: 'server', status: 404, meaning: 'a method other than POST (HEAD on the async paths is 200), or an unknown path' },
  ClientRefused: { component: 'server', status: 401, meaning: 'no client certificate signed by the client CA, or the wrong common name' },
  Busy: { component: 'server', status: 503, meaning: 'an upload is already running' },
  AlreadyDone: { component: 'server', status: 409, meaning: 'the upload already succeeded' },
  TooBig: { component: 'server', status: 400, meaning: `"${SAVING_FAILED}: ${TOO_BIG_REASON}: ..."` },
  BadRequest: { component: 'server', status: 400, meaning: 'the form body has no "file" field or is not multipart' },
  Failed: { component: 'server', status: 500, meaning: `"${SAVING_FAILED}: ..." (any other processing error)` },
  // upload server, resumable path (tus 1.0 core)
  TusPatched: { component: 'server', status: 204, meaning: 'PATCH appended and made durable (Upload-Offset: the new offset); OPTIONS' },
  TusBadHeaders: { component: 'server', status: 400, meaning: 'Upload-Offset missing, Upload-Length missing on the first PATCH or changed, or the body goes past it' },
  TusOffsetConflict: { component: 'server', status: 409, meaning: 'Upload-Offset is not the durable offset (answer carries the durable one): HEAD and resume from there' },
  TusVersion: { component: 'server', status: 412, meaning: 'Tus-Resumable missing or not 1.0.0' },
  TusContentType: { component: 'server', status: 415, meaning: 'a PATCH without Content-Type application/offset+octet-stream' },
  TusLocked: { component: 'server', status: 423, meaning: 'another PATCH is still being written (a broken one not yet noticed): HEAD again shortly' },
  TusUnavailable: { component: 'server', status: 404, meaning: 'this upload server has no scratch space to stage on: use the one-shot paths' },
  // both
  Ok: { component: 'both', status: 200, meaning: 'sync: the disk is complete; async: the body is received; HEAD on async paths; /healthz' },
} as const;
export type UploadAnswer = keyof typeof UploadAnswer;

/** The proxy's message when the reverse proxy cannot reach the server (CDI's wording). */
export function proxyTransportMessage(reason: string): string {
  return `error in upload-proxy: ${reason}`;
}

/** CDI's body for a failed upload. */
export function savingFailedMessage(reason: string): string {
  return `${SAVING_FAILED}: ${reason}`;
}

/**
 * The common name the upload server requires of its client certificate (CDI's `CLIENT_NAME` for
 * the proxy's certificate).
 */
export const UPLOAD_PROXY_CLIENT_NAME = 'client.upload-server.cdi.kubevirt.io';

/** Where, in a cluster, the upload server of a PVC is reached: CDI's per-PVC Service. */
export const UPLOAD_SERVER_SERVICE_PREFIX = 'cdi-upload-';
/**
 * The port of the upload server, on its pod and on its Service: CDI's proxy dials
 * `https://cdi-upload-<pvc>.<ns>.svc:8443<path>` (cdi.md §1), not 443.
 */
export const UPLOAD_SERVER_PORT = 8443;

/** The Service name of a PVC's upload server, CDI's `cdi-upload-<pvc>` (a DNS label: at most 63). */
export function uploadServiceName(pvc: string): string {
  return `${UPLOAD_SERVER_SERVICE_PREFIX}${pvc}`.slice(0, 63).replace(/-+$/, '');
}

/** `cdi-upload-<pvc>.<ns>.svc`: the host name the proxy dials and checks the server certificate for. */
export function uploadServiceHost(namespace: string, pvc: string): string {
  return `${uploadServiceName(pvc)}.${namespace}.svc`;
}

/** The bearer token of an Authorization header, with CDI's pattern, or undefined. */
export function bearerTokenOf(header: string | undefined): string | undefined {
  const match = /^Bearer\s+([A-Za-z0-9\-._~+/]+)$/i.exec(header ?? '');
  return match?.[1];
}

/**
 * What an upload client (virtctl, `ferry image-upload`) and the upload controller agree on through
 * the Kubernetes API, with CDI's names: the PVC's annotations and label, the token request, and
 * where CDIConfig names the proxy. (The import annotations, `storage.contentType` and
 * `storage.pod.phase` among them, are in src/api/cdi.ts.)
 */
export const UploadAnnotation = {
  /** `""`: the PVC takes an upload (the controller then starts its upload server). */
  UploadTarget: 'cdi.kubevirt.io/storage.upload.target',
  /** `"true"` once the upload server accepts data (virtctl: strconv.ParseBool). */
  PodReady: 'cdi.kubevirt.io/storage.pod.ready',
  /** `""`: bind now rather than wait for a first consumer (`--force-bind`). */
  BindImmediate: Annotation.ImmediateBinding,
  /**
   * Ferry's: `"true"` asks for a resumable upload, so the upload server gets scratch space from its
   * first pod (tus stages there; ADR 0010). `ferry image-upload` sets it on what it creates.
   */
  Resumable: 'ferry.dev/upload.resumable',
} as const;
export const UploadLabel = {
  ApplyStorageProfile: 'cdi.kubevirt.io/applyStorageProfile',
} as const;

/** CDI's token API (`create` only), served by the aggregated upload API. */
export const UploadTokenApi = {
  group: UPLOAD_GROUP,
  version: UPLOAD_VERSION,
  plural: UPLOAD_TOKEN_REQUEST_PLURAL,
  kind: UPLOAD_TOKEN_REQUEST_KIND,
} as const;
/** Ferry's client names its token requests so (virtctl v1.9: `token-for-virtctl-`, v1.8: that name without the dash). */
export const FERRY_TOKEN_REQUEST_PREFIX = 'token-for-ferry-';

/** CDIConfig: the cluster-scoped `config` object whose spec or status names the proxy URL. */
export const CdiConfigApi = { group: CDICONFIG_GROUP, version: CDICONFIG_VERSION, plural: CDICONFIG_PLURAL, name: CDICONFIG_NAME } as const;
