/** The clone token: CDI's clone claims on the shared PS256 codec, checked against the object it guards. */

import { describe, expect, test } from '@jest/globals';
import { generateKeyPairSync } from 'node:crypto';
import { CloneParam, cloneClaims, parseCloneRequest, signCloneToken, verifyCloneToken, type CloneRef } from '../../src/contract/clone-token.js';
import { signUploadToken, TokenError, TokenOperation, uploadClaims } from '../../src/contract/upload-token.js';

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
const NOW = Date.UTC(2026, 11, 1, 12, 0, 0);
const CLONE: CloneRef = { source: { namespace: 'golden-images', name: 'fedora' }, target: { namespace: 'alice', name: 'my-disk' } };

describe('clone token', () => {
  test('round trip: the claims are CDI\'s and verify against the same clone', () => {
    const token = signCloneToken(CLONE, privateKey, NOW);
    const verdict = verifyCloneToken(token, publicKey, NOW + 60_000, CLONE);
    expect(verdict).toEqual({
      ok: true,
      claims: {
        operation: TokenOperation.Clone,
        name: 'fedora',
        namespace: 'golden-images',
        resource: { group: '', version: 'v1', resource: 'persistentvolumeclaims' },
        params: { targetNamespace: 'alice', targetName: 'my-disk' },
        issuer: 'cdi-apiserver',
        issuedAt: NOW / 1000,
        notBefore: NOW / 1000,
        expiresAt: NOW / 1000 + 300,
      },
    });
    expect(cloneClaims(CLONE, NOW).params).toEqual({ [CloneParam.TargetNamespace]: 'alice', [CloneParam.TargetName]: 'my-disk' });
  });

  test('expired after five minutes (and the 10 s leeway)', () => {
    const token = signCloneToken(CLONE, privateKey, NOW);
    expect(verifyCloneToken(token, publicKey, NOW + 300_000 + 5_000, CLONE).ok).toBe(true);
    expect(verifyCloneToken(token, publicKey, NOW + 300_000 + 10_000, CLONE)).toMatchObject({ ok: false, code: TokenError.Expired });
  });

  test('tampered: a changed payload, or another key, does not verify', () => {
    const token = signCloneToken(CLONE, privateKey, NOW);
    const [h, p, s] = token.split('.') as [string, string, string];
    const body = JSON.parse(Buffer.from(p, 'base64url').toString()) as { params: Record<string, string> };
    body.params.targetNamespace = 'mallory';
    const tampered = `${h}.${Buffer.from(JSON.stringify(body)).toString('base64url')}.${s}`;
    const otherClone = { ...CLONE, target: { namespace: 'mallory', name: 'my-disk' } };
    expect(verifyCloneToken(tampered, publicKey, NOW, otherClone)).toMatchObject({ ok: false, code: TokenError.BadSignature });
    expect(verifyCloneToken(signCloneToken(CLONE, other.privateKey, NOW), publicKey, NOW, CLONE)).toMatchObject({ ok: false, code: TokenError.BadSignature });
  });

  test.each([
    ['another target namespace', { ...CLONE, target: { namespace: 'bob', name: 'my-disk' } }],
    ['another target name', { ...CLONE, target: { namespace: 'alice', name: 'other-disk' } }],
    ['another source PVC', { ...CLONE, source: { namespace: 'golden-images', name: 'debian' } }],
    ['another source namespace', { ...CLONE, source: { namespace: 'secrets', name: 'fedora' } }],
  ])('wrong target: a token for one clone is refused for %s', (_what, asked) => {
    const token = signCloneToken(CLONE, privateKey, NOW);
    expect(verifyCloneToken(token, publicKey, NOW, asked)).toMatchObject({ ok: false, code: TokenError.WrongTarget });
  });

  test('wrong operation: an upload token (even with the clone key and matching names) is not a clone token', () => {
    const upload = signUploadToken({ ...uploadClaims('golden-images', 'fedora', NOW), params: { targetNamespace: 'alice', targetName: 'my-disk' } }, privateKey);
    expect(verifyCloneToken(upload, publicKey, NOW, CLONE)).toMatchObject({ ok: false, code: TokenError.WrongOperation });
  });

  test('an upload token signed with the upload key is refused by the clone key', () => {
    const upload = signUploadToken(uploadClaims('golden-images', 'fedora', NOW), other.privateKey);
    expect(verifyCloneToken(upload, publicKey, NOW, CLONE)).toMatchObject({ ok: false, code: TokenError.BadSignature });
  });

  test('a clone token without params is refused (no target to match)', () => {
    const { params: _params, ...bare } = cloneClaims(CLONE, NOW);
    expect(verifyCloneToken(signUploadToken(bare, privateKey), publicKey, NOW, CLONE)).toMatchObject({ ok: false, code: TokenError.WrongTarget });
  });

  test.each([
    ['golden-images/fedora', { namespace: 'golden-images', name: 'fedora' }],
    ['ns/disk.v1', { namespace: 'ns', name: 'disk.v1' }],
    ['fedora', undefined],
    ['a/b/c', undefined],
    ['/fedora', undefined],
    ['Golden/fedora', undefined],
  ])('CloneRequest annotation %j', (value, want) => {
    expect(parseCloneRequest(value)).toEqual(want);
  });
});
