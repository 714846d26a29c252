/**
 * CDI's `UploadTokenRequest` (`upload.cdi.kubevirt.io/v1beta1`): what a client POSTs to get an
 * upload token and what the token API answers. One type and one codec for both sides (`ferry
 * image-upload` builds the request, `ferry apiserver` parses it and answers), as CDI's
 * `pkg/apis/upload/v1beta1` type: `spec.pvcName` in, `status.token` out.
 *
 * virtctl v1.9.0 sends `metadata.generateName: token-for-virtctl-`, v1.8.4 `metadata.name:
 * token-for-virtctl`; both are accepted (virtctl-upload.md §2.1 step 7).
 */

export const UPLOAD_GROUP = 'upload.cdi.kubevirt.io';
export const UPLOAD_VERSION = 'v1beta1';
export const UPLOAD_API_VERSION = `${UPLOAD_GROUP}/${UPLOAD_VERSION}`;
export const UPLOAD_TOKEN_REQUEST_KIND = 'UploadTokenRequest';
export const UPLOAD_TOKEN_REQUEST_PLURAL = 'uploadtokenrequests';
/** The APIService that registers the group with the kube-apiserver (`<version>.<group>`). */
export const UPLOAD_APISERVICE_NAME = `${UPLOAD_VERSION}.${UPLOAD_GROUP}`;
/** virtctl's generateName (v1.9) / name (v1.8). */
export const VIRTCTL_TOKEN_REQUEST_PREFIX = 'token-for-virtctl';

export interface UploadTokenRequestMeta {
  readonly name?: string;
  readonly generateName?: string;
  readonly namespace?: string;
  readonly creationTimestamp?: string;
  readonly uid?: string;
}

export interface UploadTokenRequest {
  readonly apiVersion: typeof UPLOAD_API_VERSION;
  readonly kind: typeof UPLOAD_TOKEN_REQUEST_KIND;
  readonly metadata: UploadTokenRequestMeta;
  readonly spec: { readonly pvcName: string };
  readonly status: { readonly token?: string };
}

/** The path a client POSTs to, relative to the apiserver. */
export function uploadTokenRequestPath(namespace: string): string {
  return `/apis/${UPLOAD_API_VERSION}/namespaces/${encodeURIComponent(namespace)}/${UPLOAD_TOKEN_REQUEST_PLURAL}`;
}

/** The request a client sends for `pvcName` (generateName'd, as virtctl v1.9 does). */
export function newUploadTokenRequest(pvcName: string, generateName = `${VIRTCTL_TOKEN_REQUEST_PREFIX}-`): UploadTokenRequest {
  return { apiVersion: UPLOAD_API_VERSION, kind: UPLOAD_TOKEN_REQUEST_KIND, metadata: { generateName }, spec: { pvcName }, status: {} };
}

export const TokenRequestProblem = {
  NotAnObject: 'NOT_AN_OBJECT',
  WrongKind: 'WRONG_KIND',
  WrongNamespace: 'WRONG_NAMESPACE',
  Invalid: 'INVALID',
} as const;
export type TokenRequestProblem = (typeof TokenRequestProblem)[keyof typeof TokenRequestProblem];

export type ParsedTokenRequest =
  | { readonly ok: true; readonly request: UploadTokenRequest }
  | { readonly ok: false; readonly problem: TokenRequestProblem; readonly message: string; readonly field?: string };

/** A DNS-1123 subdomain, the rule for object names (PVCs, and this request's own name). */
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;
export const isObjectName = (s: string): boolean => s.length <= 253 && DNS1123_SUBDOMAIN.test(s);

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Pure: checks a decoded body sent to `namespace` (the URL's). `kind`/`apiVersion` may be left out
 * (the URL names them) but, when given, must be this type's; a `metadata.namespace` must match the
 * URL's, as the kube-apiserver requires of any create.
 */
export function parseUploadTokenRequest(body: unknown, namespace: string): ParsedTokenRequest {
  const bad = (problem: TokenRequestProblem, message: string, field?: string): ParsedTokenRequest => ({ ok: false, problem, message, ...(field ? { field } : {}) });
  if (!isRecord(body)) return bad(TokenRequestProblem.NotAnObject, 'the body is not a JSON object');
  if (body.kind !== undefined && body.kind !== UPLOAD_TOKEN_REQUEST_KIND) return bad(TokenRequestProblem.WrongKind, `kind ${JSON.stringify(body.kind)} is not ${UPLOAD_TOKEN_REQUEST_KIND}`, 'kind');
  if (body.apiVersion !== undefined && body.apiVersion !== UPLOAD_API_VERSION) {
    return bad(TokenRequestProblem.WrongKind, `apiVersion ${JSON.stringify(body.apiVersion)} is not ${UPLOAD_API_VERSION}`, 'apiVersion');
  }
  const metadata = body.metadata === undefined ? {} : body.metadata;
  if (!isRecord(metadata)) return bad(TokenRequestProblem.Invalid, 'metadata must be an object', 'metadata');
  if (metadata.namespace !== undefined && metadata.namespace !== '' && metadata.namespace !== namespace) {
    return bad(TokenRequestProblem.WrongNamespace, 'the namespace of the provided object does not match the namespace sent on the request', 'metadata.namespace');
  }
  const name = typeof metadata.name === 'string' && metadata.name !== '' ? metadata.name : undefined;
  const generateName = typeof metadata.generateName === 'string' && metadata.generateName !== '' ? metadata.generateName : undefined;
  if (name !== undefined && !isObjectName(name)) return bad(TokenRequestProblem.Invalid, `metadata.name "${name}" is not a DNS-1123 subdomain`, 'metadata.name');
  if (name === undefined && generateName === undefined) return bad(TokenRequestProblem.Invalid, 'name or generateName is required', 'metadata.name');
  if (name === undefined && generateName !== undefined && !isObjectName(`${generateName}a0000`)) {
    return bad(TokenRequestProblem.Invalid, `metadata.generateName "${generateName}" does not make a DNS-1123 subdomain`, 'metadata.generateName');
  }
  const spec = body.spec;
  if (!isRecord(spec)) return bad(TokenRequestProblem.Invalid, 'spec is required', 'spec');
  const pvcName = spec.pvcName;
  if (typeof pvcName !== 'string' || pvcName === '') return bad(TokenRequestProblem.Invalid, 'spec.pvcName is required', 'spec.pvcName');
  if (!isObjectName(pvcName)) return bad(TokenRequestProblem.Invalid, `spec.pvcName "${pvcName}" is not a valid PVC name (DNS-1123 subdomain)`, 'spec.pvcName');
  return {
    ok: true,
    request: {
      apiVersion: UPLOAD_API_VERSION,
      kind: UPLOAD_TOKEN_REQUEST_KIND,
      metadata: { ...(name !== undefined ? { name } : {}), ...(generateName !== undefined ? { generateName } : {}), namespace },
      spec: { pvcName },
      status: {},
    },
  };
}

/** The token out of an answer (what a client reads); undefined when there is none. */
export function tokenOf(answer: unknown): string | undefined {
  if (!isRecord(answer) || !isRecord(answer.status)) return undefined;
  const token = answer.status.token;
  return typeof token === 'string' && token !== '' ? token : undefined;
}
