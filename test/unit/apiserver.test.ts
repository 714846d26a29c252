/**
 * The pure parts of `ferry apiserver`: request-header identity (who may name a user), the token
 * API's answers (status codes and Status bodies, name/generateName, dry run), the UploadTokenRequest
 * codec and the key/CA decisions. The same server runs against the real kube-apiserver in
 * test/integration/apiserver.test.ts.
 */

import { describe, expect, test } from '@jest/globals';
import { generateKeyPairSync } from 'node:crypto';
import { newUploadTokenRequest, parseUploadTokenRequest, tokenOf } from '../../src/api/upload-token-request.js';
import { signUploadToken, verifyUploadToken } from '../../src/contract/upload-token.js';
import { createCa, validFor } from '../../src/pki/x509.js';
import { apiServicePatch, CaPlan, planCa, signingKeyOf, newSigningKeySecret } from '../../apiserver/keys.js';
import { identify, parseExtensionAuth, type RequestHeaderConfig } from '../../apiserver/requestheader.js';
import { handle, type ApiRequest, type Decision, type TokenApiDeps } from '../../apiserver/token-api.js';

const CA_PEM = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n';
const config: RequestHeaderConfig = parseExtensionAuth({
  'requestheader-client-ca-file': CA_PEM,
  'requestheader-allowed-names': '["front-proxy-client"]',
  'requestheader-username-headers': '["X-Remote-User"]',
  'requestheader-group-headers': '["X-Remote-Group"]',
  'requestheader-extra-headers-prefix': '["X-Remote-Extra-"]',
})!;
const proxy = { verified: true, commonName: 'front-proxy-client', extKeyUsage: ['1.3.6.1.5.5.7.3.2'] };

describe('request-header identity', () => {
  test('the ConfigMap parses; without a CA or username headers nobody is trusted', () => {
    expect(config).toMatchObject({ allowedNames: ['front-proxy-client'], usernameHeaders: ['X-Remote-User'], extraHeaderPrefixes: ['X-Remote-Extra-'] });
    expect(parseExtensionAuth({ 'requestheader-username-headers': '["X-Remote-User"]' })).toBeUndefined();
    expect(parseExtensionAuth(undefined)).toBeUndefined();
    expect(() => parseExtensionAuth({ 'requestheader-client-ca-file': CA_PEM, 'requestheader-username-headers': 'X-Remote-User' })).toThrow(/not a JSON list/);
  });

  test.each([
    ['no client certificate', undefined, 'anonymous'],
    ['a certificate that does not chain to the request-header CA', { ...proxy, verified: false }, 'anonymous'],
    ['a chaining certificate with another common name', { ...proxy, commonName: 'alice' }, 'anonymous'],
    ['a chaining certificate for servers only', { ...proxy, extKeyUsage: ['1.3.6.1.5.5.7.3.1'] }, 'anonymous'],
    ['the front proxy', proxy, 'user'],
  ])('%s → %s', (_, peer, kind) => {
    expect(identify(config, peer, { 'x-remote-user': ['alice'] }).kind).toBe(kind);
  });

  test('the front proxy forwards user, every group and the extras (percent-decoded keys)', () => {
    const id = identify(config, proxy, { 'x-remote-user': ['alice'], 'x-remote-group': ['a', 'system:authenticated'], 'x-remote-extra-scopes%2fone': ['x', 'y'] });
    expect(id).toEqual({ kind: 'user', user: { name: 'alice', groups: ['a', 'system:authenticated'], extra: { 'scopes/one': ['x', 'y'] } } });
    expect(identify(config, proxy, {}).kind).toBe('anonymous');
    expect(identify(undefined, proxy, { 'x-remote-user': ['alice'] }).kind).toBe('anonymous');
  });
});

describe('UploadTokenRequest codec', () => {
  test('round trip: what a client builds, the server parses', () => {
    const parsed = parseUploadTokenRequest(JSON.parse(JSON.stringify(newUploadTokenRequest('disk'))), 'ns');
    expect(parsed).toEqual({ ok: true, request: { apiVersion: 'upload.cdi.kubevirt.io/v1beta1', kind: 'UploadTokenRequest', metadata: { generateName: 'token-for-virtctl-', namespace: 'ns' }, spec: { pvcName: 'disk' }, status: {} } });
    expect(tokenOf({ status: { token: 'abc' } })).toBe('abc');
    expect(tokenOf({ status: {} })).toBeUndefined();
  });

  test.each([
    ['not an object', [], 'NOT_AN_OBJECT'],
    ['another kind', { kind: 'Pod', metadata: { name: 'a' }, spec: { pvcName: 'p' } }, 'WRONG_KIND'],
    ['another namespace', { metadata: { name: 'a', namespace: 'other' }, spec: { pvcName: 'p' } }, 'WRONG_NAMESPACE'],
    ['no name', { metadata: {}, spec: { pvcName: 'p' } }, 'INVALID'],
    ['no pvcName', { metadata: { name: 'a' }, spec: {} }, 'INVALID'],
    ['a bad pvcName', { metadata: { name: 'a' }, spec: { pvcName: '../etc' } }, 'INVALID'],
  ])('%s is refused', (_, body, problem) => {
    expect(parseUploadTokenRequest(body, 'ns')).toMatchObject({ ok: false, problem });
  });
});

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const NOW = Date.parse('2026-12-01T12:00:00Z');

function deps(decision: Decision = { allowed: true }): TokenApiDeps & { asked: unknown[] } {
  const asked: unknown[] = [];
  return {
    asked,
    authorize: async (user, attributes) => {
      asked.push({ user: user.name, ...attributes });
      return decision;
    },
    sign: (claims) => signUploadToken(claims, privateKey),
    now: () => NOW,
    nameSuffix: () => 'abcde',
  };
}

const alice = { kind: 'user', user: { name: 'alice', groups: [], extra: {} } } as const;
const post = (body: unknown, extra: Partial<ApiRequest> = {}): ApiRequest => ({
  method: 'POST',
  path: '/apis/upload.cdi.kubevirt.io/v1beta1/namespaces/ns1/uploadtokenrequests',
  query: new URLSearchParams(),
  contentType: 'application/json',
  body: Buffer.from(JSON.stringify(body)),
  identity: alice,
  ...extra,
});
const request = { apiVersion: 'upload.cdi.kubevirt.io/v1beta1', kind: 'UploadTokenRequest', metadata: { generateName: 'token-for-virtctl-' }, spec: { pvcName: 'disk' }, status: {} };

describe('the token API', () => {
  test('an allowed user gets 201 with a generated name and a token for that PVC; the SAR is CDI\'s', async () => {
    const d = deps();
    const out = await handle(post(request), d);
    expect(out.status).toBe(201);
    const body = out.body as { metadata: { name: string; namespace: string; creationTimestamp: string }; status: { token: string } };
    expect(body.metadata).toEqual({ name: 'token-for-virtctl-abcde', generateName: 'token-for-virtctl-', namespace: 'ns1', creationTimestamp: '2026-12-01T12:00:00Z' });
    expect(verifyUploadToken(body.status.token, publicKey, NOW, { namespace: 'ns1', name: 'disk' })).toMatchObject({ ok: true, claims: { expiresAt: NOW / 1000 + 300 } });
    expect(d.asked).toEqual([{ user: 'alice', namespace: 'ns1', verb: 'create', group: 'upload.cdi.kubevirt.io', version: 'v1beta1', resource: 'uploadtokenrequests' }]);
  });

  test.each([
    ['anonymous', post(request, { identity: { kind: 'anonymous', why: 'no certificate' } }), deps(), 401, 'Unauthorized'],
    ['denied by the SAR', post(request), deps({ allowed: false, reason: 'no RBAC' }), 403, 'Forbidden'],
    ['a GET of the collection', post(request, { method: 'GET' }), deps(), 405, 'MethodNotAllowed'],
    ['YAML', post(request, { contentType: 'application/yaml' }), deps(), 415, 'UnsupportedMediaType'],
    ['a body too large', post(request, { body: 'tooLarge' }), deps(), 413, 'RequestEntityTooLarge'],
    ['not JSON', post(request, { body: Buffer.from('{') }), deps(), 400, 'BadRequest'],
    ['no pvcName', post({ ...request, spec: {} }), deps(), 422, 'Invalid'],
    ['an unknown dryRun', post(request, { query: new URLSearchParams('dryRun=Some') }), deps(), 400, 'BadRequest'],
    ['another path', post(request, { path: '/apis/upload.cdi.kubevirt.io/v1beta1/namespaces/ns1/pods' }), deps(), 404, 'NotFound'],
  ])('%s → %i %s (a Kubernetes Status, no token)', async (_, req, d, code, reason) => {
    const out = await handle(req, d);
    expect(out.status).toBe(code);
    expect(out.body).toMatchObject({ kind: 'Status', apiVersion: 'v1', status: 'Failure', reason, code });
    expect(JSON.stringify(out.body)).not.toContain('token"');
  });

  test('a dry run is authorized and answered without a token', async () => {
    const d = deps();
    const out = await handle(post(request, { query: new URLSearchParams('dryRun=All') }), d);
    expect(out.status).toBe(201);
    expect((out.body as { status: object }).status).toEqual({});
    expect(d.asked).toHaveLength(1);
  });

  test('discovery and health are served to anyone', async () => {
    const anon = { kind: 'anonymous', why: 'x' } as const;
    const get = (path: string) => handle({ method: 'GET', path, query: new URLSearchParams(), body: Buffer.alloc(0), identity: anon }, deps());
    expect((await get('/apis/upload.cdi.kubevirt.io/v1beta1')).body).toMatchObject({ kind: 'APIResourceList', resources: [{ name: 'uploadtokenrequests', verbs: ['create'] }] });
    expect((await get('/apis/upload.cdi.kubevirt.io')).body).toMatchObject({ kind: 'APIGroup', preferredVersion: { version: 'v1beta1' } });
    expect((await get('/apis')).body).toMatchObject({ kind: 'APIGroupList' });
    expect(await get('/readyz')).toEqual({ status: 200, body: 'ok' });
  });
});

describe('keys and certificates', () => {
  test('a generated signing key Secret reads back as RSA; a broken one is reported, not replaced', () => {
    const key = signingKeyOf(newSigningKeySecret('ns', 'k'));
    expect('privateKey' in key && key.privateKey.asymmetricKeyType).toBe('rsa');
    expect(signingKeyOf({ metadata: { name: 'k' }, data: { 'private.pem': Buffer.from('junk').toString('base64') } })).toMatchObject({ problem: expect.stringContaining('not a PEM private key') });
  });

  test('the CA is created when absent, kept while fresh, replaced when due or broken', () => {
    const now = new Date('2026-12-01T00:00:00Z');
    const ca = createCa({ commonName: 'ca' }, validFor(now, 365));
    const secret = { data: { 'tls.crt': Buffer.from(ca.cert).toString('base64'), 'tls.key': Buffer.from(ca.key).toString('base64') } };
    expect(planCa(undefined, now).plan).toBe(CaPlan.Create);
    expect(planCa(secret, now)).toEqual({ plan: CaPlan.Keep, ca });
    expect(planCa(secret, new Date('2027-10-01T00:00:00Z')).plan).toBe(CaPlan.Replace);
    expect(planCa({ data: {} }, now).plan).toBe(CaPlan.Replace);
  });

  test('the APIService is patched only when its caBundle differs', () => {
    const b64 = Buffer.from(CA_PEM).toString('base64');
    expect(apiServicePatch({ spec: { caBundle: b64, groupPriorityMinimum: 1, versionPriority: 1 } }, CA_PEM)).toBeUndefined();
    expect(apiServicePatch({ spec: { groupPriorityMinimum: 1, versionPriority: 1 } }, CA_PEM)).toEqual({ spec: { caBundle: b64, insecureSkipTLSVerify: null } });
  });
});
