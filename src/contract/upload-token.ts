/**
 * The upload token: what the token API signs and the upload proxy checks. As CDI's
 * (`pkg/token/token.go`): a compact JWS, alg PS256 (RSASSA-PSS, SHA-256, salt length = hash
 * length as RFC 7518 §3.5 requires), issuer `cdi-apiserver`, `iat`/`nbf`/`exp` in seconds, and
 * the private claims `operation`, `name`, `namespace`, `resource` {group, version, resource} and
 * `params`. Verification allows CDI's 10 s of clock skew.
 *
 * Only PS256 with an RSA public key is accepted: a header naming `none`, HS256 (the classic
 * "verify an HMAC with the public key as its secret" confusion) or anything else is refused before
 * any signature is looked at, and the key type is checked, not taken from the token.
 *
 * `signToken`/`verifyToken` are the one codec of every token of this shape: upload tokens here,
 * clone tokens in ./clone-token.ts (another operation, another key pair).
 */

import { constants, createPublicKey, type KeyObject, sign, verify } from 'node:crypto';

export const UPLOAD_TOKEN_ALG = 'PS256';
export const UPLOAD_TOKEN_ISSUER = 'cdi-apiserver';
/** CDI's token lifetime: five minutes from issue. */
export const UPLOAD_TOKEN_TTL_SECONDS = 5 * 60;
/** Clock skew tolerated on `nbf`, `iat` and `exp` (CDI's jwt leeway). */
export const UPLOAD_TOKEN_LEEWAY_SECONDS = 10;

export const TokenOperation = { Upload: 'Upload', Clone: 'Clone' } as const;
export type TokenOperation = (typeof TokenOperation)[keyof typeof TokenOperation];

export interface GroupVersionResource {
  readonly group: string;
  readonly version: string;
  readonly resource: string;
}

/** The resource an upload token is for: core/v1 PersistentVolumeClaims. */
export const PVC_RESOURCE: GroupVersionResource = Object.freeze({ group: '', version: 'v1', resource: 'persistentvolumeclaims' });

export interface UploadTokenClaims {
  readonly operation: TokenOperation;
  readonly name: string;
  readonly namespace: string;
  readonly resource: GroupVersionResource;
  readonly params?: Readonly<Record<string, string>>;
  readonly issuer: string;
  /** Seconds since the epoch, as JWT's NumericDate. */
  readonly issuedAt: number;
  readonly notBefore: number;
  readonly expiresAt: number;
}

/** Why a token was refused; the proxy maps each to an HTTP status (upload-api.ts). */
export const TokenError = {
  Malformed: 'MALFORMED',
  WrongAlgorithm: 'WRONG_ALGORITHM',
  BadSignature: 'BAD_SIGNATURE',
  WrongIssuer: 'WRONG_ISSUER',
  Expired: 'EXPIRED',
  NotYetValid: 'NOT_YET_VALID',
  WrongOperation: 'WRONG_OPERATION',
  WrongResource: 'WRONG_RESOURCE',
  MissingTarget: 'MISSING_TARGET',
  WrongTarget: 'WRONG_TARGET',
} as const;
export type TokenError = (typeof TokenError)[keyof typeof TokenError];

export type TokenVerdict =
  | { readonly ok: true; readonly claims: UploadTokenClaims }
  | { readonly ok: false; readonly code: TokenError; readonly message: string };

/** What the caller wants the token to be for; a field left out is not checked. */
export interface ExpectedTarget {
  readonly namespace?: string;
  readonly name?: string;
  /** Each entry must be in the token's params with exactly this value (a clone token's target). */
  readonly params?: Readonly<Record<string, string>>;
}

/** What a verifier demands beyond signature, issuer and clock: the operation, and its object. */
export interface TokenExpectation extends ExpectedTarget {
  readonly operation: TokenOperation;
}

const b64 = (data: Buffer | string): string => Buffer.from(data).toString('base64url');

const PSS = { padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST } as const;

/** The claims of an upload token for one PVC, issued `now` (ms) and valid for CDI's five minutes. */
export function uploadClaims(namespace: string, name: string, nowMs: number, ttlSeconds = UPLOAD_TOKEN_TTL_SECONDS): UploadTokenClaims {
  const now = Math.floor(nowMs / 1000);
  return { operation: TokenOperation.Upload, name, namespace, resource: PVC_RESOURCE, issuer: UPLOAD_TOKEN_ISSUER, issuedAt: now, notBefore: now, expiresAt: now + ttlSeconds };
}

/**
 * Signs `claims` with an RSA private key: `header.payload.signature`, each base64url. The one
 * signer of CDI's token shape, for upload and clone tokens alike (./clone-token.ts).
 */
export function signToken(claims: UploadTokenClaims, privateKey: KeyObject): string {
  const header = b64(JSON.stringify({ alg: UPLOAD_TOKEN_ALG, typ: 'JWT' }));
  const body: Record<string, unknown> = {
    iss: claims.issuer,
    iat: claims.issuedAt,
    nbf: claims.notBefore,
    exp: claims.expiresAt,
    operation: claims.operation,
    name: claims.name,
    namespace: claims.namespace,
    resource: claims.resource,
  };
  if (claims.params !== undefined && Object.keys(claims.params).length > 0) body.params = claims.params;
  const input = `${header}.${b64(JSON.stringify(body))}`;
  const signature = sign('sha256', Buffer.from(input), { key: privateKey, ...PSS });
  return `${input}.${b64(signature)}`;
}

const refuse = (code: TokenError, message: string): TokenVerdict => ({ ok: false, code, message });

function jsonPart(part: string): Record<string, unknown> | undefined {
  if (!/^[A-Za-z0-9_-]*$/.test(part)) return undefined;
  try {
    const value: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}

const isInt = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v);

function resourceOf(value: unknown): GroupVersionResource | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const r = value as Record<string, unknown>;
  const str = (v: unknown): string => (typeof v === 'string' ? v : '');
  return { group: str(r.group), version: str(r.version), resource: str(r.resource) };
}

function paramsOf(value: unknown): Record<string, string> | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const entries = Object.entries(value as Record<string, unknown>).filter((e): e is [string, string] => typeof e[1] === 'string');
  return entries.length > 0 ? Object.fromEntries(entries) : undefined;
}

/** Signs an upload token (CDI's shape; the same signer as every token). */
export const signUploadToken = signToken;

/**
 * Checks `token` against the public key and the clock (`nowMs`), then that it is an upload token
 * for a PVC (and for `expected`, where given). Never throws: a refusal carries its code.
 */
export function verifyUploadToken(token: string, publicKey: KeyObject, nowMs: number, expected: ExpectedTarget = {}): TokenVerdict {
  return verifyToken(token, publicKey, nowMs, { ...expected, operation: TokenOperation.Upload });
}

/**
 * The one verifier of CDI's token shape: the public key and the clock (`nowMs`), then that the
 * token is for `expected.operation` on a PVC, and for the namespace, name and params given.
 * Never throws: a refusal carries its code.
 */
export function verifyToken(token: string, publicKey: KeyObject, nowMs: number, expected: TokenExpectation): TokenVerdict {
  const parts = token.split('.');
  if (parts.length !== 3) return refuse(TokenError.Malformed, 'the token is not a compact JWS (three dot-separated parts)');
  const [headerPart, payloadPart, signaturePart] = parts as [string, string, string];
  const header = jsonPart(headerPart);
  if (header === undefined) return refuse(TokenError.Malformed, 'the token header is not base64url JSON');
  if (header.alg !== UPLOAD_TOKEN_ALG) return refuse(TokenError.WrongAlgorithm, `the token is signed with ${JSON.stringify(header.alg)}; only ${UPLOAD_TOKEN_ALG} is accepted`);
  if (header.crit !== undefined) return refuse(TokenError.Malformed, 'the token header has critical extensions this verifier does not know');
  if (publicKey.type !== 'public' || (publicKey.asymmetricKeyType !== 'rsa' && publicKey.asymmetricKeyType !== 'rsa-pss')) {
    return refuse(TokenError.WrongAlgorithm, 'the verification key is not an RSA public key');
  }
  if (!/^[A-Za-z0-9_-]+$/.test(signaturePart)) return refuse(TokenError.Malformed, 'the token signature is not base64url');
  const signed = verify('sha256', Buffer.from(`${headerPart}.${payloadPart}`), { key: publicKey, ...PSS }, Buffer.from(signaturePart, 'base64url'));
  if (!signed) return refuse(TokenError.BadSignature, 'the token signature does not verify');
  const body = jsonPart(payloadPart);
  if (body === undefined) return refuse(TokenError.Malformed, 'the token payload is not base64url JSON');
  if (!isInt(body.exp) || !isInt(body.iat)) return refuse(TokenError.Malformed, 'the token has no numeric exp and iat');
  if (body.nbf !== undefined && !isInt(body.nbf)) return refuse(TokenError.Malformed, 'the token nbf is not a number');
  if (body.iss !== UPLOAD_TOKEN_ISSUER) return refuse(TokenError.WrongIssuer, `the token was issued by ${JSON.stringify(body.iss)}, not ${UPLOAD_TOKEN_ISSUER}`);
  const now = Math.floor(nowMs / 1000);
  const notBefore = isInt(body.nbf) ? body.nbf : body.iat;
  if (now + UPLOAD_TOKEN_LEEWAY_SECONDS < notBefore || now + UPLOAD_TOKEN_LEEWAY_SECONDS < body.iat) {
    return refuse(TokenError.NotYetValid, `the token is not valid before ${new Date(notBefore * 1000).toISOString()}`);
  }
  if (now - UPLOAD_TOKEN_LEEWAY_SECONDS >= body.exp) return refuse(TokenError.Expired, `the token expired at ${new Date(body.exp * 1000).toISOString()}`);
  if (body.operation !== expected.operation) return refuse(TokenError.WrongOperation, `the token is for operation ${JSON.stringify(body.operation)}, not ${expected.operation}`);
  const resource = resourceOf(body.resource);
  if (resource?.resource !== PVC_RESOURCE.resource) return refuse(TokenError.WrongResource, `the token is for resource ${JSON.stringify(resource?.resource)}, not ${PVC_RESOURCE.resource}`);
  const name = typeof body.name === 'string' ? body.name : '';
  const namespace = typeof body.namespace === 'string' ? body.namespace : '';
  if (name === '' || namespace === '') return refuse(TokenError.MissingTarget, 'the token names no PVC (empty name or namespace)');
  if ((expected.namespace !== undefined && expected.namespace !== namespace) || (expected.name !== undefined && expected.name !== name)) {
    return refuse(TokenError.WrongTarget, `the token is for ${namespace}/${name}, not ${expected.namespace ?? namespace}/${expected.name ?? name}`);
  }
  const params = paramsOf(body.params);
  for (const [key, want] of Object.entries(expected.params ?? {})) {
    const got = params?.[key];
    if (got !== want) return refuse(TokenError.WrongTarget, `the token's ${key} is ${JSON.stringify(got ?? null)}, not ${JSON.stringify(want)}`);
  }
  return {
    ok: true,
    claims: {
      operation: expected.operation,
      name,
      namespace,
      resource,
      ...(params !== undefined ? { params } : {}),
      issuer: UPLOAD_TOKEN_ISSUER,
      issuedAt: body.iat,
      notBefore,
      expiresAt: body.exp,
    },
  };
}

/** Reads a PEM public key (the proxy's `cdi-api-signing-key` public half). */
export function publicKeyFromPem(pem: string): KeyObject {
  return createPublicKey(pem);
}

/**
 * Where the token API publishes the public half of its signing key for the upload proxy (which
 * mounts it): ConfigMap `ferry-upload-token-public`, key `public.pem`, in Ferry's namespace.
 */
export const UPLOAD_TOKEN_PUBLIC_CONFIGMAP = 'ferry-upload-token-public';
export const UPLOAD_TOKEN_PUBLIC_KEY = 'public.pem';
