/**
 * The clone controller's trust decisions, pure: is this target PVC's clone authorized? The
 * webhook's short token (src/contract/clone-token.ts, five minutes) is verified once; the
 * controller then seals the clone onto the PVC (ADR 0014, "The controller's seal"): an HMAC-SHA256,
 * under a key only the controller holds, over the target's UID, the source and the target. A user
 * can copy a seal but not make one, and a seal names one object (the UID), so it is useless on any
 * other PVC, even one re-created under the same name. A waiting clone (source in use, a backoff)
 * runs on the seal long after the token expired.
 */

import { createHmac, type KeyObject, timingSafeEqual } from 'node:crypto';
import { CLONE_TOKEN_ANNOTATION, type CloneRef, verifyCloneToken } from '../../src/contract/clone-token.js';

/** The seal's annotation on the target PVC (Ferry's; written by the clone controller only). */
export const CLONE_SEAL_ANNOTATION = 'ferry.dev/clone.authorization';
const SEAL_VERSION = 'v1';

/** The stable reason on the PVC, the DataVolume and the event when a clone is not authorized. */
export const CLONE_AUTHORIZATION_FAILED = 'CloneAuthorizationFailed';

/** Why a clone is refused: the token verifier's codes, and these. */
export const CloneRefusal = {
  NoToken: 'NO_TOKEN',
  BadSeal: 'BAD_SEAL',
} as const;

export type CloneVerdict =
  /** The PVC carries this controller's seal for its own UID and this clone. */
  | { readonly kind: 'sealed' }
  /** A valid webhook token: seal it (then go on). */
  | { readonly kind: 'token' }
  | { readonly kind: 'refused'; readonly code: string; readonly message: string };

/** Pure: the seal for `clone` on the object with `uid`. */
export function sealClone(key: Buffer, uid: string, clone: CloneRef): string {
  const mac = createHmac('sha256', key).update([SEAL_VERSION, uid, clone.source.namespace, clone.source.name, clone.target.namespace, clone.target.name].join('\0')).digest('base64url');
  return `${SEAL_VERSION}.${mac}`;
}

function sealMatches(key: Buffer, uid: string, clone: CloneRef, seal: string): boolean {
  const want = Buffer.from(sealClone(key, uid, clone));
  const got = Buffer.from(seal);
  return got.length === want.length && timingSafeEqual(got, want);
}

/**
 * Pure (given the clock): the verdict for a target object. A seal that does not match is refused
 * outright (never "try the token instead": a user who wrote a seal is not to be helped along);
 * without a seal the webhook's token must verify for exactly this source and target.
 */
export function judgeClone(annotations: Readonly<Record<string, string>>, uid: string, clone: CloneRef, keys: { readonly tokenKey?: KeyObject; readonly sealKey: Buffer }, nowMs: number): CloneVerdict {
  const seal = annotations[CLONE_SEAL_ANNOTATION];
  if (seal !== undefined) {
    return uid !== '' && sealMatches(keys.sealKey, uid, clone, seal)
      ? { kind: 'sealed' }
      : { kind: 'refused', code: CloneRefusal.BadSeal, message: `annotation ${CLONE_SEAL_ANNOTATION} was not written by this controller for this object and clone` };
  }
  const token = annotations[CLONE_TOKEN_ANNOTATION];
  if (token === undefined || token === '') return { kind: 'refused', code: CloneRefusal.NoToken, message: `no clone token (${CLONE_TOKEN_ANNOTATION}): the clone webhook did not admit this object` };
  if (!keys.tokenKey) throw new Error('judgeClone needs the token key for an unsealed clone');
  return tokenVerdict(token, keys.tokenKey, nowMs, clone);
}

/** Pure: the webhook's token checked for `clone` (signature, clock, source, target). */
export function tokenVerdict(token: string | undefined, tokenKey: KeyObject, nowMs: number, clone: CloneRef): CloneVerdict {
  if (token === undefined || token === '') return { kind: 'refused', code: CloneRefusal.NoToken, message: `no clone token (${CLONE_TOKEN_ANNOTATION}): the clone webhook did not admit this object` };
  const verdict = verifyCloneToken(token, tokenKey, nowMs, clone);
  return verdict.ok ? { kind: 'token' } : { kind: 'refused', code: verdict.code, message: `the clone token is refused: ${verdict.message}` };
}
