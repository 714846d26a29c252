/**
 * The aggregated API's request handling, without sockets: a request (already authenticated by
 * ./requestheader.ts, body already read) in, an answer out. Discovery and health are public; the one
 * resource, `uploadtokenrequests`, takes `create` only, for an identified user whom a
 * SubjectAccessReview allows — CDI's check (cdi.md §3.1 step 3, `pkg/apiserver/authorizer.go`):
 * verb `create` on `uploadtokenrequests.upload.cdi.kubevirt.io` in the request's namespace. The token
 * is for `spec.pvcName` in that namespace, so a user with rights only in his own namespace gets
 * tokens only for PVCs there.
 *
 * `?dryRun=All` is honoured: the request is authorized and validated as a real one and answered,
 * but no token is signed (a dry run must have no effect, and a token is one).
 */

import { randomBytes } from 'node:crypto';
import { uploadClaims } from '../src/contract/upload-token.js';
import {
  parseUploadTokenRequest,
  TokenRequestProblem,
  UPLOAD_API_VERSION,
  UPLOAD_GROUP,
  UPLOAD_TOKEN_REQUEST_PLURAL,
  UPLOAD_VERSION,
  type UploadTokenRequest,
} from '../src/api/upload-token-request.js';
import { discoveryAt } from './discovery.js';
import type { Identity, User } from './requestheader.js';
import { failure, StatusReason } from './status.js';

/** Largest request body read (a token request is a few hundred bytes). */
export const MAX_BODY_BYTES = 1 << 20;

export interface ApiRequest {
  readonly method: string;
  /** The URL path, without the query. */
  readonly path: string;
  readonly query: URLSearchParams;
  readonly contentType?: string;
  /** The body, or `tooLarge` when it passed MAX_BODY_BYTES. */
  readonly body: Buffer | 'tooLarge';
  readonly identity: Identity;
}

export interface ApiAnswer {
  readonly status: number;
  readonly body: object | string;
}

export interface ResourceAttributes {
  readonly namespace: string;
  readonly verb: string;
  readonly group: string;
  readonly version: string;
  readonly resource: string;
  readonly subresource?: string;
  readonly name?: string;
}

export type Decision = { readonly allowed: true } | { readonly allowed: false; readonly reason: string };

export interface TokenApiDeps {
  /** A SubjectAccessReview for `user`. */
  authorize(user: User, attributes: ResourceAttributes): Promise<Decision>;
  /** Signs an upload token for the claims. */
  sign(claims: ReturnType<typeof uploadClaims>): string;
  now(): number;
  /** Five characters for generateName, as the kube-apiserver's (default: random). */
  nameSuffix?(): string;
}

const HEALTH_PATHS = new Set(['/healthz', '/readyz', '/livez']);
const TOKEN_PATH = new RegExp(`^/apis/${UPLOAD_API_VERSION.replace(/\./g, '\\.')}/namespaces/([^/]+)/${UPLOAD_TOKEN_REQUEST_PLURAL}(/.*)?$`);
const NAME_ALPHABET = 'bcdfghjklmnpqrstvwxz2456789';

function randomSuffix(): string {
  return [...randomBytes(5)].map((b) => NAME_ALPHABET[b % NAME_ALPHABET.length]).join('');
}

const answer = (status: number, body: object | string): ApiAnswer => ({ status, body });
const fail = (reason: StatusReason, message: string, details?: Parameters<typeof failure>[2]): ApiAnswer => {
  const status = failure(reason, message, details);
  return answer(status.code, status);
};

const groupResource = `${UPLOAD_TOKEN_REQUEST_PLURAL}.${UPLOAD_GROUP}`;

function forbidden(user: User, namespace: string, reason: string): ApiAnswer {
  const message = `${groupResource} is forbidden: User "${user.name}" cannot create resource "${UPLOAD_TOKEN_REQUEST_PLURAL}" in API group "${UPLOAD_GROUP}" in the namespace "${namespace}"${reason ? `: ${reason}` : ''}`;
  return fail(StatusReason.Forbidden, message, { group: UPLOAD_GROUP, kind: UPLOAD_TOKEN_REQUEST_PLURAL });
}

/** JSON, or no Content-Type at all (the kube-apiserver then takes its first serializer, JSON; `kubectl create --raw` sends none). */
function isJson(contentType: string | undefined): boolean {
  const type = (contentType ?? '').split(';')[0]!.trim().toLowerCase();
  return type === 'application/json' || type === '';
}

/** Answers one request. Never throws: a failed dependency is a 500 Status. */
export async function handle(req: ApiRequest, deps: TokenApiDeps): Promise<ApiAnswer> {
  if (HEALTH_PATHS.has(req.path)) return answer(200, 'ok');
  const path = req.path.length > 1 ? req.path.replace(/\/$/, '') : req.path;
  const doc = discoveryAt(path);
  if (doc !== undefined) return req.method === 'GET' || req.method === 'HEAD' ? answer(200, doc) : fail(StatusReason.MethodNotAllowed, `${req.method} is not supported on ${path}`);
  const m = TOKEN_PATH.exec(path);
  if (!m) return fail(StatusReason.NotFound, 'the server could not find the requested resource');
  let namespace: string;
  try {
    namespace = decodeURIComponent(m[1]!);
  } catch {
    return fail(StatusReason.BadRequest, 'the namespace in the path is not valid');
  }
  if (m[2] !== undefined || req.method !== 'POST') {
    return fail(StatusReason.MethodNotAllowed, `${UPLOAD_TOKEN_REQUEST_PLURAL} only supports create (POST to the collection)`);
  }
  if (req.identity.kind === 'anonymous') return fail(StatusReason.Unauthorized, `Unauthorized: ${req.identity.why}`);
  const user = req.identity.user;
  let decision: Decision;
  try {
    decision = await deps.authorize(user, { namespace, verb: 'create', group: UPLOAD_GROUP, version: UPLOAD_VERSION, resource: UPLOAD_TOKEN_REQUEST_PLURAL });
  } catch (err) {
    return fail(StatusReason.InternalError, `the authorization check failed: ${(err as Error).message.split('\n')[0]}`);
  }
  if (!decision.allowed) return forbidden(user, namespace, decision.reason);

  const dryRun = req.query.getAll('dryRun');
  if (dryRun.some((d) => d !== 'All')) return fail(StatusReason.BadRequest, `invalid dryRun value ${JSON.stringify(dryRun)}: only "All" is supported`);
  if (req.body === 'tooLarge') return fail(StatusReason.RequestEntityTooLarge, `the request body is larger than ${MAX_BODY_BYTES} bytes`);
  if (!isJson(req.contentType)) return fail(StatusReason.UnsupportedMediaType, `the body must be application/json, not ${JSON.stringify(req.contentType ?? '')}`);
  let body: unknown;
  try {
    body = JSON.parse(req.body.toString('utf8'));
  } catch (err) {
    return fail(StatusReason.BadRequest, `the body is not JSON: ${(err as Error).message}`);
  }
  const parsed = parseUploadTokenRequest(body, namespace);
  if (!parsed.ok) {
    if (parsed.problem === TokenRequestProblem.Invalid) {
      return fail(StatusReason.Invalid, `UploadTokenRequest is invalid: ${parsed.message}`, {
        kind: 'UploadTokenRequest',
        group: UPLOAD_GROUP,
        causes: [{ reason: 'FieldValueInvalid', message: parsed.message, ...(parsed.field ? { field: parsed.field } : {}) }],
      });
    }
    return fail(StatusReason.BadRequest, parsed.message);
  }
  const request = parsed.request;
  const nowMs = deps.now();
  const name = request.metadata.name ?? `${request.metadata.generateName}${(deps.nameSuffix ?? randomSuffix)()}`;
  const answered: UploadTokenRequest = {
    ...request,
    metadata: { ...request.metadata, name, namespace, creationTimestamp: new Date(Math.floor(nowMs / 1000) * 1000).toISOString().replace('.000Z', 'Z') },
    status: dryRun.length > 0 ? {} : { token: deps.sign(uploadClaims(namespace, request.spec.pvcName, nowMs)) },
  };
  return answer(201, answered);
}
