/** The upload token codec: PS256 compact JWS with CDI's claims, and every way a token is refused. */

import { describe, expect, test } from '@jest/globals';
import { createHmac, createPublicKey, generateKeyPairSync, type KeyObject, sign, constants } from 'node:crypto';
import {
  PVC_RESOURCE,
  signUploadToken,
  TokenError,
  TokenOperation,
  UPLOAD_TOKEN_ISSUER,
  UPLOAD_TOKEN_TTL_SECONDS,
  uploadClaims,
  verifyUploadToken,
} from '../../src/contract/upload-token.js';

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
const NOW = Date.UTC(2026, 11, 1, 12, 0, 0);
const b64 = (v: unknown): string => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

/** A token with the given header and payload, PS256-signed with `key` (for tampering tests). */
function forge(header: unknown, payload: unknown, key: KeyObject = privateKey): string {
  const input = `${b64(header)}.${b64(payload)}`;
  const sig = sign('sha256', Buffer.from(input), { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST });
  return `${input}.${sig.toString('base64url')}`;
}

const good = signUploadToken(uploadClaims('ns1', 'disk', NOW), privateKey);
const [goodHeader, goodPayload, goodSig] = good.split('.') as [string, string, string];
const payload = JSON.parse(Buffer.from(goodPayload, 'base64url').toString()) as Record<string, unknown>;

describe('signUploadToken / verifyUploadToken', () => {
  test('round trip: the claims come back, as CDI names them on the wire', () => {
    const verdict = verifyUploadToken(good, publicKey, NOW, { namespace: 'ns1', name: 'disk' });
    expect(verdict).toEqual({ ok: true, claims: uploadClaims('ns1', 'disk', NOW) });
    expect(JSON.parse(Buffer.from(goodHeader, 'base64url').toString())).toEqual({ alg: 'PS256', typ: 'JWT' });
    expect(payload).toEqual({
      iss: UPLOAD_TOKEN_ISSUER,
      iat: NOW / 1000,
      nbf: NOW / 1000,
      exp: NOW / 1000 + UPLOAD_TOKEN_TTL_SECONDS,
      operation: 'Upload',
      name: 'disk',
      namespace: 'ns1',
      resource: { group: '', version: 'v1', resource: 'persistentvolumeclaims' },
    });
  });

  test('params survive the round trip', () => {
    const claims = { ...uploadClaims('ns1', 'disk', NOW), params: { uid: 'abc' } };
    const verdict = verifyUploadToken(signUploadToken(claims, privateKey), publicKey, NOW);
    expect(verdict.ok && verdict.claims.params).toEqual({ uid: 'abc' });
  });

  test('signatures are randomized (PSS) yet each verifies', () => {
    const again = signUploadToken(uploadClaims('ns1', 'disk', NOW), privateKey);
    expect(again).not.toBe(good);
    expect(verifyUploadToken(again, publicKey, NOW).ok).toBe(true);
  });

  const s = NOW / 1000;
  test.each<[string, () => string, number, TokenError]>([
    ['signed by another key', () => signUploadToken(uploadClaims('ns1', 'disk', NOW), other.privateKey), NOW, TokenError.BadSignature],
    ['payload tampered (name changed, signature kept)', () => `${goodHeader}.${b64({ ...payload, name: 'other' })}.${goodSig}`, NOW, TokenError.BadSignature],
    ['payload tampered (exp extended)', () => `${goodHeader}.${b64({ ...payload, exp: s + 99999 })}.${goodSig}`, NOW, TokenError.BadSignature],
    // The last two characters replaced by two others (the old rule left a signature ending in "BA" unchanged: 1 run in ~4096 failed).
    ['signature flipped', () => `${goodHeader}.${goodPayload}.${goodSig.slice(0, -2)}${goodSig.slice(-2) === 'AA' ? 'BB' : 'AA'}`, NOW, TokenError.BadSignature],
    ['alg none, no signature', () => `${b64({ alg: 'none' })}.${goodPayload}.`, NOW, TokenError.WrongAlgorithm],
    ['alg none with the old signature', () => `${b64({ alg: 'none', typ: 'JWT' })}.${goodPayload}.${goodSig}`, NOW, TokenError.WrongAlgorithm],
    [
      'HS256 keyed with the public key (alg confusion)',
      () => {
        const input = `${b64({ alg: 'HS256', typ: 'JWT' })}.${goodPayload}`;
        const pem = publicKey.export({ type: 'spki', format: 'pem' });
        return `${input}.${createHmac('sha256', pem).update(input).digest('base64url')}`;
      },
      NOW,
      TokenError.WrongAlgorithm,
    ],
    ['RS256 header', () => forge({ alg: 'RS256' }, payload), NOW, TokenError.WrongAlgorithm],
    ['header with crit', () => forge({ alg: 'PS256', crit: ['x'] }, payload), NOW, TokenError.Malformed],
    ['expired (past exp + leeway)', () => good, NOW + (UPLOAD_TOKEN_TTL_SECONDS + 10) * 1000, TokenError.Expired],
    ['not yet valid (nbf beyond leeway)', () => forge({ alg: 'PS256' }, { ...payload, nbf: s + 60 }), NOW, TokenError.NotYetValid],
    ['issued in the future', () => forge({ alg: 'PS256' }, { ...payload, iat: s + 60, nbf: s + 60 }), NOW, TokenError.NotYetValid],
    ['wrong issuer', () => forge({ alg: 'PS256' }, { ...payload, iss: 'someone' }), NOW, TokenError.WrongIssuer],
    ['operation Clone', () => signUploadToken({ ...uploadClaims('ns1', 'disk', NOW), operation: TokenOperation.Clone }, privateKey), NOW, TokenError.WrongOperation],
    ['resource pods', () => signUploadToken({ ...uploadClaims('ns1', 'disk', NOW), resource: { ...PVC_RESOURCE, resource: 'pods' } }, privateKey), NOW, TokenError.WrongResource],
    ['no resource', () => forge({ alg: 'PS256' }, { ...payload, resource: undefined }), NOW, TokenError.WrongResource],
    ['empty name', () => signUploadToken(uploadClaims('ns1', '', NOW), privateKey), NOW, TokenError.MissingTarget],
    ['empty namespace', () => signUploadToken(uploadClaims('', 'disk', NOW), privateKey), NOW, TokenError.MissingTarget],
    ['two parts', () => `${goodHeader}.${goodPayload}`, NOW, TokenError.Malformed],
    ['header not JSON', () => `${b64('nope')}.${goodPayload}.${goodSig}`, NOW, TokenError.Malformed],
    ['payload not JSON (signed)', () => forge({ alg: 'PS256' }, 'not json'), NOW, TokenError.Malformed],
    ['exp missing (signed)', () => forge({ alg: 'PS256' }, { ...payload, exp: undefined }), NOW, TokenError.Malformed],
    ['exp a string (signed)', () => forge({ alg: 'PS256' }, { ...payload, exp: String(s + 300) }), NOW, TokenError.Malformed],
    ['not base64url signature', () => `${goodHeader}.${goodPayload}.***`, NOW, TokenError.Malformed],
    ['empty', () => '', NOW, TokenError.Malformed],
  ])('refuses: %s', (_what, make, now, code) => {
    const verdict = verifyUploadToken(make(), publicKey, now);
    expect(verdict.ok).toBe(false);
    if (!verdict.ok) expect(verdict.code).toBe(code);
  });

  test.each<[string, { namespace?: string; name?: string }, boolean]>([
    ['same PVC', { namespace: 'ns1', name: 'disk' }, true],
    ['another PVC', { namespace: 'ns1', name: 'other' }, false],
    ['another namespace', { namespace: 'ns2', name: 'disk' }, false],
    ['namespace only', { namespace: 'ns1' }, true],
  ])('expected target: %s', (_what, expected, ok) => {
    const verdict = verifyUploadToken(good, publicKey, NOW, expected);
    expect(verdict.ok).toBe(ok);
    if (!verdict.ok) expect(verdict.code).toBe(TokenError.WrongTarget);
  });

  test('the leeway: valid 9 s before nbf and up to 9 s after exp', () => {
    expect(verifyUploadToken(good, publicKey, NOW - 9000).ok).toBe(true);
    expect(verifyUploadToken(good, publicKey, NOW + (UPLOAD_TOKEN_TTL_SECONDS + 9) * 1000).ok).toBe(true);
  });

  test('a private key or a non-RSA key is never used to verify', () => {
    const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    for (const key of [ec.publicKey, privateKey]) {
      const verdict = verifyUploadToken(good, key, NOW);
      expect(verdict.ok ? 'ok' : verdict.code).toBe(TokenError.WrongAlgorithm);
    }
    expect(verifyUploadToken(good, createPublicKey(privateKey), NOW).ok).toBe(true);
  });
});
