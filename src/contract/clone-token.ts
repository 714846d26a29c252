/**
 * The clone token: what the clone admission webhook (`ferry apiserver`, ADR 0014) signs onto a
 * cloning DataVolume or PVC, and what the clone controller checks before it touches the source
 * namespace. CDI's shape (`pkg/token`, `pkg/controller/clone`): the same PS256 JWS as the upload
 * token (./upload-token.ts signs and verifies both), with `operation: Clone`, `name`/`namespace`
 * naming the *source* PVC, `resource: persistentvolumeclaims` and `params`
 * {targetNamespace, targetName} naming the object it was issued for; five minutes.
 *
 * It is signed with its own key pair (Secret `ferry-clone-token-signing-key`, public half in
 * ConfigMap `ferry-clone-token-public`), so an upload token never verifies as a clone token even
 * before its operation is looked at, and the two keys rotate apart.
 */

import type { KeyObject } from 'node:crypto';
import {
  PVC_RESOURCE,
  signToken,
  TokenOperation,
  UPLOAD_TOKEN_ISSUER,
  UPLOAD_TOKEN_TTL_SECONDS,
  verifyToken,
  type TokenVerdict,
  type UploadTokenClaims,
} from './upload-token.js';

/** The annotation the token travels in, on the target DataVolume or PVC (CDI's key). */
export const CLONE_TOKEN_ANNOTATION = 'cdi.kubevirt.io/storage.clone.token';
/** CDI's older PVC-only clone form: `"<namespace>/<name>"` of the source PVC. */
export const CLONE_REQUEST_ANNOTATION = 'k8s.io/CloneRequest';

/** The params keys naming the clone's target (CDI's). */
export const CloneParam = { TargetNamespace: 'targetNamespace', TargetName: 'targetName' } as const;

export const CLONE_TOKEN_TTL_SECONDS = UPLOAD_TOKEN_TTL_SECONDS;

/** Where `ferry apiserver` keeps the signing key, and publishes its public half for the controller. */
export const CLONE_TOKEN_SIGNING_SECRET = 'ferry-clone-token-signing-key';
export const CLONE_TOKEN_PUBLIC_CONFIGMAP = 'ferry-clone-token-public';
export const CLONE_TOKEN_PUBLIC_KEY = 'public.pem';

export interface ObjectRef {
  readonly namespace: string;
  readonly name: string;
}

/** A clone: the source PVC and the object (DataVolume or PVC) that is to become its copy. */
export interface CloneRef {
  readonly source: ObjectRef;
  readonly target: ObjectRef;
}

/** The claims of a clone token for `clone`, issued `nowMs` and valid for five minutes. */
export function cloneClaims(clone: CloneRef, nowMs: number, ttlSeconds = CLONE_TOKEN_TTL_SECONDS): UploadTokenClaims {
  const now = Math.floor(nowMs / 1000);
  return {
    operation: TokenOperation.Clone,
    name: clone.source.name,
    namespace: clone.source.namespace,
    resource: PVC_RESOURCE,
    params: { [CloneParam.TargetNamespace]: clone.target.namespace, [CloneParam.TargetName]: clone.target.name },
    issuer: UPLOAD_TOKEN_ISSUER,
    issuedAt: now,
    notBefore: now,
    expiresAt: now + ttlSeconds,
  };
}

export function signCloneToken(clone: CloneRef, privateKey: KeyObject, nowMs: number): string {
  return signToken(cloneClaims(clone, nowMs), privateKey);
}

/**
 * Verifies a clone token against the object it guards: signature, issuer, clock, operation Clone,
 * resource, the source PVC, and the target namespace and name in params. All of them, always: a
 * verifier that can be called with less would be the hole (a token for another target).
 */
export function verifyCloneToken(token: string, publicKey: KeyObject, nowMs: number, clone: CloneRef): TokenVerdict {
  return verifyToken(token, publicKey, nowMs, {
    operation: TokenOperation.Clone,
    namespace: clone.source.namespace,
    name: clone.source.name,
    params: { [CloneParam.TargetNamespace]: clone.target.namespace, [CloneParam.TargetName]: clone.target.name },
  });
}

/** Pure: `"<namespace>/<name>"` of the CloneRequest annotation, or undefined when it is not that shape. */
export function parseCloneRequest(value: string): ObjectRef | undefined {
  const m = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\/([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$/.exec(value);
  return m ? { namespace: m[1]!, name: m[3]! } : undefined;
}
