/**
 * The clone admission webhook (ADR 0014), without sockets: an AdmissionReview in, an
 * AdmissionReview out. For CREATE of a cloning PVC (`k8s.io/CloneRequest: "<ns>/<name>"`) or
 * DataVolume (`spec.source.pvc`, or `spec.sourceRef` → a DataSource → its `spec.source.pvc`), CDI's
 * rule: the same namespace is allowed; across namespaces the requesting user (the review's
 * userInfo) needs `create` on `cdi.kubevirt.io/datavolumes/source` (name = the source PVC) in the
 * source namespace, or `create pods` there. Allowed → a JSON patch that drops any token the user
 * wrote and adds a freshly signed clone token; refused → 403 naming the missing permission.
 *
 * A VirtualMachine's dataVolumeTemplates that clone are checked the same way for the user who
 * creates or changes the VM (no token: see admitVirtualMachine).
 *
 * On UPDATE the clone source is fixed: a PVC that gains or changes `k8s.io/CloneRequest`, or a
 * DataVolume whose clone source changes, is refused. Without that, a token minted for a clone (the
 * token is bound to source and target only) could be carried onto an object that never went
 * through the check at creation.
 */

import { CLONE_REQUEST_ANNOTATION, CLONE_TOKEN_ANNOTATION, parseCloneRequest, type CloneRef, type ObjectRef } from '../src/contract/clone-token.js';
import { DATASOURCE_KIND, dataSourcePvc, type DataSource } from '../src/api/datasource.js';
import { DV_GROUP, DV_PLURAL, DV_VERSION } from '../src/api/datavolume.js';
import { Plural } from '../src/api/kubevirt.js';
import type { User } from './requestheader.js';
import type { Decision, ResourceAttributes } from './token-api.js';

export const CLONE_ADMISSION_PATH = '/admission/clone';
export const ADMISSION_API_VERSION = 'admission.k8s.io/v1';

export interface CloneAdmissionDeps {
  /** A SubjectAccessReview for `user`. */
  authorize(user: User, attributes: ResourceAttributes): Promise<Decision>;
  /** The DataSource, or undefined when there is none. */
  dataSource(namespace: string, name: string): Promise<DataSource | undefined>;
  /** A signed clone token for `clone`. */
  signClone(clone: CloneRef): string;
}

/** What an object asks to be cloned from: a PVC directly, or a DataSource to resolve. */
export type CloneSource =
  | { readonly kind: 'pvc'; readonly ref: ObjectRef }
  | { readonly kind: 'dataSource'; readonly ref: ObjectRef }
  | { readonly kind: 'invalid'; readonly message: string };

type Obj = { metadata?: { name?: string; namespace?: string; annotations?: Record<string, string> }; spec?: Record<string, unknown> };

const isRecord = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Pure: the clone source of a PVC or DataVolume in `namespace`; undefined when it is no clone. */
export function cloneSourceOf(resource: string, object: unknown, namespace: string): CloneSource | undefined {
  if (!isRecord(object)) return undefined;
  const o = object as Obj;
  if (resource === 'persistentvolumeclaims') {
    const value = o.metadata?.annotations?.[CLONE_REQUEST_ANNOTATION];
    if (value === undefined) return undefined;
    const ref = parseCloneRequest(value);
    return ref ? { kind: 'pvc', ref } : { kind: 'invalid', message: `annotation ${CLONE_REQUEST_ANNOTATION} must be "<namespace>/<name>", not ${JSON.stringify(value)}` };
  }
  if (resource !== DV_PLURAL) return undefined;
  const spec = isRecord(o.spec) ? o.spec : {};
  const source = isRecord(spec.source) ? spec.source : {};
  if (isRecord(source.pvc)) {
    const name = source.pvc.name;
    const ns = typeof source.pvc.namespace === 'string' && source.pvc.namespace !== '' ? source.pvc.namespace : namespace;
    if (typeof name !== 'string' || name === '') return { kind: 'invalid', message: 'spec.source.pvc.name is required' };
    return { kind: 'pvc', ref: { namespace: ns, name } };
  }
  if (isRecord(spec.sourceRef)) {
    const { kind, name } = spec.sourceRef;
    const ns = typeof spec.sourceRef.namespace === 'string' && spec.sourceRef.namespace !== '' ? spec.sourceRef.namespace : namespace;
    if (kind !== DATASOURCE_KIND) return { kind: 'invalid', message: `spec.sourceRef.kind must be ${DATASOURCE_KIND}, not ${JSON.stringify(kind)}` };
    if (typeof name !== 'string' || name === '') return { kind: 'invalid', message: 'spec.sourceRef.name is required' };
    return { kind: 'dataSource', ref: { namespace: ns, name } };
  }
  return undefined;
}

/** The message of a refused clone (exactly this text reaches `kubectl apply`). */
export function cloneDeniedMessage(user: string, source: ObjectRef): string {
  return `user ${JSON.stringify(user)} may not clone ${source.namespace}/${source.name}: needs create on datavolumes/source in ${source.namespace}`;
}

/** The two SubjectAccessReviews of CDI's rule, in order: either one allows. */
export function cloneAuthorizations(source: ObjectRef): readonly ResourceAttributes[] {
  return [
    { namespace: source.namespace, verb: 'create', group: DV_GROUP, version: DV_VERSION, resource: DV_PLURAL, subresource: 'source', name: source.name },
    { namespace: source.namespace, verb: 'create', group: '', version: 'v1', resource: 'pods' },
  ];
}

const escapePointer = (s: string): string => s.replace(/~/g, '~0').replace(/\//g, '~1');

/** Pure: the JSON patch that replaces whatever token `object` carries with `token`. */
export function tokenPatch(object: unknown, token: string): object[] {
  const annotations = (object as Obj).metadata?.annotations;
  if (annotations === undefined || annotations === null) return [{ op: 'add', path: '/metadata/annotations', value: { [CLONE_TOKEN_ANNOTATION]: token } }];
  const path = `/metadata/annotations/${escapePointer(CLONE_TOKEN_ANNOTATION)}`;
  return [...(CLONE_TOKEN_ANNOTATION in annotations ? [{ op: 'remove', path }] : []), { op: 'add', path, value: token }];
}

interface AdmissionRequest {
  readonly uid: string;
  readonly operation: string;
  readonly namespace: string;
  readonly resource: { readonly group: string; readonly resource: string };
  readonly userInfo: { readonly username: string; readonly uid?: string; readonly groups?: string[]; readonly extra?: Record<string, string[]> };
  readonly object?: unknown;
  readonly oldObject?: unknown;
}

export interface AdmissionResponse {
  readonly uid: string;
  readonly allowed: boolean;
  readonly status?: { readonly code: number; readonly message: string; readonly reason?: string };
  readonly patchType?: 'JSONPatch';
  readonly patch?: string;
}

export interface AdmissionReviewOut {
  readonly apiVersion: typeof ADMISSION_API_VERSION;
  readonly kind: 'AdmissionReview';
  readonly response: AdmissionResponse;
}

/** Pure: the request of an AdmissionReview, or why it is not one this webhook can answer. */
export function admissionRequestOf(review: unknown): AdmissionRequest | { readonly problem: string } {
  if (!isRecord(review) || review.kind !== 'AdmissionReview' || review.apiVersion !== ADMISSION_API_VERSION) return { problem: `the body is not an ${ADMISSION_API_VERSION} AdmissionReview` };
  const r = review.request;
  if (!isRecord(r) || typeof r.uid !== 'string' || r.uid === '' || typeof r.operation !== 'string') return { problem: 'the AdmissionReview has no request with a uid and an operation' };
  if (!isRecord(r.resource) || typeof r.resource.resource !== 'string') return { problem: 'the AdmissionReview request names no resource' };
  if (!isRecord(r.userInfo) || typeof r.userInfo.username !== 'string') return { problem: 'the AdmissionReview request has no userInfo' };
  return {
    uid: r.uid,
    operation: r.operation,
    namespace: typeof r.namespace === 'string' ? r.namespace : '',
    resource: { group: typeof r.resource.group === 'string' ? r.resource.group : '', resource: r.resource.resource },
    userInfo: r.userInfo as AdmissionRequest['userInfo'],
    object: r.object,
    oldObject: r.oldObject,
  };
}

const review = (response: AdmissionResponse): AdmissionReviewOut => ({ apiVersion: ADMISSION_API_VERSION, kind: 'AdmissionReview', response });
const deny = (uid: string, code: number, reason: string, message: string): AdmissionReviewOut => review({ uid, allowed: false, status: { code, reason, message } });
const sameSource = (a: CloneSource | undefined, b: CloneSource | undefined): boolean => JSON.stringify(a ?? null) === JSON.stringify(b ?? null);

function userOf(info: AdmissionRequest['userInfo']): User {
  return { name: info.username, groups: info.groups ?? [], extra: info.extra ?? {}, ...(info.uid ? { uid: info.uid } : {}) };
}

type Refusal = { readonly code: number; readonly reason: string; readonly message: string };

/**
 * CDI's rule for one clone source, for `user` creating a clone target in `namespace`: resolves a
 * DataSource to its PVC, then the same namespace is allowed, else one of the two reviews must allow.
 * Fails closed: a failed read or review is a refusal.
 */
async function checkClone(source: Exclude<CloneSource, { kind: 'invalid' }>, namespace: string, user: User, deps: CloneAdmissionDeps): Promise<{ readonly pvc: ObjectRef } | { readonly refused: Refusal }> {
  let pvc: ObjectRef;
  if (source.kind === 'dataSource') {
    let ds: DataSource | undefined;
    try {
      ds = await deps.dataSource(source.ref.namespace, source.ref.name);
    } catch (err) {
      return { refused: { code: 500, reason: 'InternalError', message: `reading DataSource ${source.ref.namespace}/${source.ref.name} failed: ${(err as Error).message.split('\n')[0]}` } };
    }
    const resolved = ds && dataSourcePvc(ds);
    if (resolved === undefined) return { refused: { code: 422, reason: 'Invalid', message: `DataSource ${source.ref.namespace}/${source.ref.name} ${ds ? 'names no spec.source.pvc' : 'does not exist'}` } };
    pvc = resolved;
  } else pvc = source.ref;
  if (pvc.namespace === namespace) return { pvc };
  try {
    for (const attributes of cloneAuthorizations(pvc)) {
      if ((await deps.authorize(user, attributes)).allowed) return { pvc };
    }
  } catch (err) {
    return { refused: { code: 500, reason: 'InternalError', message: `the authorization check failed: ${(err as Error).message.split('\n')[0]}` } };
  }
  return { refused: { code: 403, reason: 'Forbidden', message: cloneDeniedMessage(user.name, pvc) } };
}

type Template = { metadata?: { name?: string }; spec?: unknown };

/** Pure: a VirtualMachine's dataVolumeTemplates that clone, as `name → source` (KubeVirt's own check, at virt-api). */
export function vmCloneSources(object: unknown, namespace: string): ReadonlyMap<string, CloneSource> {
  const templates = isRecord(object) && isRecord(object.spec) && Array.isArray(object.spec.dataVolumeTemplates) ? (object.spec.dataVolumeTemplates as Template[]) : [];
  const out = new Map<string, CloneSource>();
  for (const t of templates) {
    const source = isRecord(t) ? cloneSourceOf(DV_PLURAL, { metadata: t.metadata, spec: t.spec }, namespace) : undefined;
    if (source !== undefined) out.set(typeof t.metadata?.name === 'string' ? t.metadata.name : '', source);
  }
  return out;
}

/**
 * A VirtualMachine whose dataVolumeTemplates clone: the user creating (or changing) it must be
 * allowed each clone, as KubeVirt's virt-api checks. Without this a user could have the controller
 * (which may create pods everywhere, so passes CDI's rule for any source) clone any PVC for them.
 * No token here: the DataVolumes the controller creates from the templates get theirs from the
 * DataVolume webhook. On UPDATE only a template whose clone source is new is checked.
 */
async function admitVirtualMachine(req: AdmissionRequest, deps: CloneAdmissionDeps): Promise<AdmissionReviewOut> {
  const { uid } = req;
  if (req.operation !== 'CREATE' && req.operation !== 'UPDATE') return review({ uid, allowed: true });
  const before = req.operation === 'UPDATE' ? vmCloneSources(req.oldObject, req.namespace) : new Map<string, CloneSource>();
  for (const [name, source] of vmCloneSources(req.object, req.namespace)) {
    if (sameSource(source, before.get(name))) continue;
    if (source.kind === 'invalid') return deny(uid, 422, 'Invalid', `spec.dataVolumeTemplates ${JSON.stringify(name)}: ${source.message}`);
    const checked = await checkClone(source, req.namespace, userOf(req.userInfo), deps);
    if ('refused' in checked) return deny(uid, checked.refused.code, checked.refused.reason, checked.refused.message);
  }
  return review({ uid, allowed: true });
}

/**
 * Answers one AdmissionReview. Fails closed: a failed SubjectAccessReview or DataSource read is a
 * refusal (the apiserver then refuses the create), never an allowed clone.
 */
export async function admitClone(body: unknown, deps: CloneAdmissionDeps): Promise<AdmissionReviewOut> {
  const req = admissionRequestOf(body);
  if ('problem' in req) return deny('', 400, 'BadRequest', req.problem);
  const { uid } = req;
  const resource = req.resource.resource;
  if (resource === Plural.VM) return admitVirtualMachine(req, deps);
  const source = cloneSourceOf(resource, req.object, req.namespace);
  if (req.operation === 'UPDATE') {
    if (sameSource(source, cloneSourceOf(resource, req.oldObject, req.namespace))) return review({ uid, allowed: true });
    return deny(uid, 403, 'Forbidden', 'the clone source of an object is set when it is created and cannot be changed');
  }
  if (req.operation !== 'CREATE' || source === undefined) return review({ uid, allowed: true });
  if (source.kind === 'invalid') return deny(uid, 422, 'Invalid', source.message);
  const targetName = (req.object as Obj).metadata?.name ?? '';
  if (targetName === '' || req.namespace === '') return deny(uid, 422, 'Invalid', 'a clone target needs metadata.name and a namespace (generateName is not supported for clones)');
  const checked = await checkClone(source, req.namespace, userOf(req.userInfo), deps);
  if ('refused' in checked) return deny(uid, checked.refused.code, checked.refused.reason, checked.refused.message);
  const clone: CloneRef = { source: checked.pvc, target: { namespace: req.namespace, name: targetName } };
  const patch = tokenPatch(req.object, deps.signClone(clone));
  return review({ uid, allowed: true, patchType: 'JSONPatch', patch: Buffer.from(JSON.stringify(patch)).toString('base64') });
}
