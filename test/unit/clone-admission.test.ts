/**
 * The clone admission webhook's decision over AdmissionReview JSON: which objects are clones, CDI's
 * two SubjectAccessReviews across namespaces, the refusal text, the token patch, and UPDATE. The
 * authorizer here is a table of what each user may do (the real SubjectAccessReview runs in
 * test/integration/clone-admission.test.ts).
 */

import { describe, expect, test } from '@jest/globals';
import { generateKeyPairSync } from 'node:crypto';
import { admitClone, cloneSourceOf, tokenPatch, type CloneAdmissionDeps } from '../../apiserver/clone-admission.js';
import { servingCertificate, webhookCaPatch } from '../../apiserver/keys.js';
import { CLONE_WEBHOOK_CONFIGURATION, parseApiServerArgs } from '../../apiserver/main.js';
import { webhookCallerProblem } from '../../apiserver/requestheader.js';
import { X509Certificate } from 'node:crypto';
import { createCa, validFor } from '../../src/pki/x509.js';
import { CLONE_TOKEN_ANNOTATION, signCloneToken, verifyCloneToken, type CloneRef } from '../../src/contract/clone-token.js';
import type { ResourceAttributes } from '../../apiserver/token-api.js';
import type { DataSource } from '../../src/api/datasource.js';

const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
const NOW = Date.UTC(2026, 11, 1, 12, 0, 0);

/** `user` → the SARs it passes, as "verb resource[/subresource] namespace[/name]". */
function deps(grants: Record<string, string[]>, dataSources: Record<string, DataSource> = {}): CloneAdmissionDeps & { asked: string[] } {
  const asked: string[] = [];
  const key = (a: ResourceAttributes): string => `${a.verb} ${a.resource}${a.subresource ? `/${a.subresource}` : ''} ${a.namespace}${a.name ? `/${a.name}` : ''}`;
  return {
    asked,
    authorize: async (user, a) => {
      asked.push(`${user.name}: ${key(a)}`);
      return (grants[user.name] ?? []).includes(key(a)) ? { allowed: true } : { allowed: false, reason: '' };
    },
    dataSource: async (ns, name) => dataSources[`${ns}/${name}`],
    signClone: (clone: CloneRef) => signCloneToken(clone, privateKey, NOW),
  };
}

function reviewOf(resource: 'datavolumes' | 'persistentvolumeclaims', object: unknown, opts: { user?: string; namespace?: string; operation?: string; oldObject?: unknown } = {}): unknown {
  return {
    apiVersion: 'admission.k8s.io/v1',
    kind: 'AdmissionReview',
    request: {
      uid: 'u-1',
      operation: opts.operation ?? 'CREATE',
      namespace: opts.namespace ?? 'alice-ns',
      resource: { group: resource === 'datavolumes' ? 'cdi.kubevirt.io' : '', version: 'v1', resource },
      userInfo: { username: opts.user ?? 'alice', uid: 'a-uid', groups: ['system:authenticated'] },
      object,
      ...(opts.oldObject !== undefined ? { oldObject: opts.oldObject } : {}),
    },
  };
}

const dv = (spec: Record<string, unknown>, annotations?: Record<string, string>): unknown => ({ metadata: { name: 'my-disk', namespace: 'alice-ns', ...(annotations ? { annotations } : {}) }, spec });
const pvcDv = (namespace?: string): unknown => dv({ source: { pvc: { ...(namespace ? { namespace } : {}), name: 'fedora' } }, storage: {} });
const patchOf = (out: Awaited<ReturnType<typeof admitClone>>): Array<{ op: string; path: string; value?: unknown }> => JSON.parse(Buffer.from(out.response.patch!, 'base64').toString());
const DATASOURCE: DataSource = { apiVersion: 'cdi.kubevirt.io/v1beta1', kind: 'DataSource', metadata: { name: 'fedora', namespace: 'golden-images' }, spec: { source: { pvc: { name: 'fedora-41' } } } };

describe('clone admission: DataVolumes', () => {
  test('same namespace: allowed without any SubjectAccessReview, token for source and target', async () => {
    const d = deps({});
    const out = await admitClone(reviewOf('datavolumes', pvcDv()), d);
    expect(out.response).toMatchObject({ uid: 'u-1', allowed: true, patchType: 'JSONPatch' });
    expect(d.asked).toEqual([]);
    const [op] = patchOf(out);
    expect(op).toMatchObject({ op: 'add', path: '/metadata/annotations' });
    const token = (op!.value as Record<string, string>)[CLONE_TOKEN_ANNOTATION]!;
    expect(verifyCloneToken(token, publicKey, NOW, { source: { namespace: 'alice-ns', name: 'fedora' }, target: { namespace: 'alice-ns', name: 'my-disk' } }).ok).toBe(true);
  });

  test('across namespaces: datavolumes/source on the PVC allows; the SAR names the PVC', async () => {
    const d = deps({ alice: ['create datavolumes/source golden-images/fedora'] });
    const out = await admitClone(reviewOf('datavolumes', pvcDv('golden-images')), d);
    expect(out.response.allowed).toBe(true);
    expect(d.asked).toEqual(['alice: create datavolumes/source golden-images/fedora']);
  });

  test('across namespaces: create pods there allows (the second review)', async () => {
    const d = deps({ alice: ['create pods golden-images'] });
    expect((await admitClone(reviewOf('datavolumes', pvcDv('golden-images')), d)).response.allowed).toBe(true);
    expect(d.asked).toEqual(['alice: create datavolumes/source golden-images/fedora', 'alice: create pods golden-images']);
  });

  test('across namespaces without either: 403 with the message, no patch', async () => {
    const d = deps({ alice: ['create datavolumes/source golden-images/debian', 'create pods alice-ns'] });
    const out = await admitClone(reviewOf('datavolumes', pvcDv('golden-images')), d);
    expect(out.response).toEqual({ uid: 'u-1', allowed: false, status: { code: 403, reason: 'Forbidden', message: 'user "alice" may not clone golden-images/fedora: needs create on datavolumes/source in golden-images' } });
  });

  test('a failing authorizer fails closed', async () => {
    const d: CloneAdmissionDeps = { ...deps({}), authorize: async () => Promise.reject(new Error('connection refused')) };
    const out = await admitClone(reviewOf('datavolumes', pvcDv('golden-images')), d);
    expect(out.response).toMatchObject({ allowed: false, status: { code: 500 } });
  });

  test('sourceRef → DataSource → its PVC: the review is for the PVC the DataSource names', async () => {
    const d = deps({ bob: ['create datavolumes/source golden-images/fedora-41'] }, { 'golden-images/fedora': DATASOURCE });
    const spec = { sourceRef: { kind: 'DataSource', namespace: 'golden-images', name: 'fedora' }, storage: {} };
    const out = await admitClone(reviewOf('datavolumes', dv(spec), { user: 'bob' }), d);
    expect(out.response.allowed).toBe(true);
    const token = (patchOf(out)[0]!.value as Record<string, string>)[CLONE_TOKEN_ANNOTATION]!;
    expect(verifyCloneToken(token, publicKey, NOW, { source: { namespace: 'golden-images', name: 'fedora-41' }, target: { namespace: 'alice-ns', name: 'my-disk' } }).ok).toBe(true);
    const denied = await admitClone(reviewOf('datavolumes', dv(spec)), d);
    expect(denied.response.status?.message).toBe('user "alice" may not clone golden-images/fedora-41: needs create on datavolumes/source in golden-images');
    const missing = await admitClone(reviewOf('datavolumes', dv({ ...spec, sourceRef: { kind: 'DataSource', name: 'nope' } })), d);
    expect(missing.response).toMatchObject({ allowed: false, status: { code: 422, message: 'DataSource alice-ns/nope does not exist' } });
  });

  test('a DataVolume that is no clone passes untouched', async () => {
    const out = await admitClone(reviewOf('datavolumes', dv({ source: { http: { url: 'http://x/disk.img' } }, storage: {} })), deps({}));
    expect(out.response).toEqual({ uid: 'u-1', allowed: true });
  });
});

describe('clone admission: PVCs and tokens', () => {
  const pvc = (annotations: Record<string, string>): unknown => ({ metadata: { name: 'my-disk', namespace: 'alice-ns', annotations }, spec: {} });

  test('a hand-written token is removed and replaced', async () => {
    const out = await admitClone(reviewOf('persistentvolumeclaims', pvc({ 'k8s.io/CloneRequest': 'alice-ns/fedora', [CLONE_TOKEN_ANNOTATION]: 'forged' })), deps({}));
    const patch = patchOf(out);
    expect(patch.map((p) => [p.op, p.path])).toEqual([
      ['remove', '/metadata/annotations/cdi.kubevirt.io~1storage.clone.token'],
      ['add', '/metadata/annotations/cdi.kubevirt.io~1storage.clone.token'],
    ]);
    expect(patch[1]!.value).not.toBe('forged');
  });

  test('a malformed CloneRequest is refused (422)', async () => {
    const out = await admitClone(reviewOf('persistentvolumeclaims', pvc({ 'k8s.io/CloneRequest': 'fedora' })), deps({}));
    expect(out.response).toMatchObject({ allowed: false, status: { code: 422 } });
  });

  test('UPDATE: adding or changing CloneRequest is refused; leaving it alone is allowed', async () => {
    const before = pvc({});
    const after = pvc({ 'k8s.io/CloneRequest': 'golden-images/fedora', [CLONE_TOKEN_ANNOTATION]: 'minted-elsewhere' });
    const added = await admitClone(reviewOf('persistentvolumeclaims', after, { operation: 'UPDATE', oldObject: before }), deps({}));
    expect(added.response).toMatchObject({ allowed: false, status: { code: 403 } });
    const same = await admitClone(reviewOf('persistentvolumeclaims', after, { operation: 'UPDATE', oldObject: after }), deps({}));
    expect(same.response).toEqual({ uid: 'u-1', allowed: true });
  });

  test('not an AdmissionReview: refused', async () => {
    expect((await admitClone({ kind: 'Pod' }, deps({}))).response.allowed).toBe(false);
  });

  test('tokenPatch and cloneSourceOf on their own', () => {
    expect(tokenPatch({ metadata: {} }, 't')).toEqual([{ op: 'add', path: '/metadata/annotations', value: { [CLONE_TOKEN_ANNOTATION]: 't' } }]);
    expect(cloneSourceOf('persistentvolumeclaims', { metadata: {} }, 'ns')).toBeUndefined();
    expect(cloneSourceOf('datavolumes', { spec: { sourceRef: { kind: 'PVC', name: 'x' } } }, 'ns')).toMatchObject({ kind: 'invalid' });
  });

  test('webhookCaPatch sets each caBundle behind a test of the name', () => {
    const ca = '-----BEGIN CERTIFICATE-----\nx\n-----END CERTIFICATE-----\n';
    const b64 = Buffer.from(ca).toString('base64');
    expect(webhookCaPatch({ webhooks: [{ name: 'a', clientConfig: {}, admissionReviewVersions: ['v1'], sideEffects: 'None' }, { name: 'b', clientConfig: { caBundle: b64 }, admissionReviewVersions: ['v1'], sideEffects: 'None' }] }, ca)).toEqual([
      { op: 'test', path: '/webhooks/0/name', value: 'a' },
      { op: 'add', path: '/webhooks/0/clientConfig/caBundle', value: b64 },
    ]);
  });

  test('flags: the clone key Secret, the webhook configuration and extra serving hosts', () => {
    const d = parseApiServerArgs([], {}).config;
    expect(d).toMatchObject({ cloneSigningSecret: 'ferry-clone-token-signing-key', webhookConfiguration: CLONE_WEBHOOK_CONFIGURATION, servingHosts: [] });
    const c = parseApiServerArgs(['--webhook-configuration', '', '--serving-host', '127.0.0.1', '--serving-host', 'localhost'], {}).config;
    expect(c).toMatchObject({ webhookConfiguration: '', servingHosts: ['127.0.0.1', 'localhost'] });
    const now = new Date(NOW);
    const cert = new X509Certificate(servingCertificate(createCa({ commonName: 'ca' }, validFor(now, 1)), 'ferry-apiserver', 'ferry-system', now, c.servingHosts).cert);
    expect(cert.subjectAltName).toContain('IP Address:127.0.0.1');
    expect(cert.subjectAltName).toContain('DNS:ferry-apiserver.ferry-system.svc');
    expect(cert.checkIP('127.0.0.1')).toBe('127.0.0.1');
  });

  test.each([
    ['no webhook client CA configured: anyone', undefined, undefined, undefined],
    ['configured, no certificate', { ca: 'x', names: [] }, undefined, 'no client certificate from the webhook client CA'],
    ['configured, a certificate from another CA (front proxy)', { ca: 'x', names: [] }, { verified: true, webhookClient: false, commonName: 'front-proxy-client' }, 'no client certificate from the webhook client CA'],
    ['configured, right CA, wrong name', { ca: 'x', names: ['kube-apiserver'] }, { verified: false, webhookClient: true, commonName: 'alice' }, 'the client certificate\'s common name "alice" is not an allowed webhook client'],
    ['configured, right CA, server-only usage', { ca: 'x', names: [] }, { verified: false, webhookClient: true, extKeyUsage: ['1.3.6.1.5.5.7.3.1'] }, 'the client certificate is not for client authentication'],
    ['configured, right CA and name', { ca: 'x', names: ['kube-apiserver'] }, { verified: false, webhookClient: true, commonName: 'kube-apiserver' }, undefined],
  ])('webhook caller: %s', (_what, config, peer, problem) => {
    expect(webhookCallerProblem(config, peer)).toBe(problem);
  });
});

describe('clone admission: VirtualMachines (dataVolumeTemplates)', () => {
  const vm = (templates: unknown[]): unknown => ({ metadata: { name: 'vm1', namespace: 'alice-ns' }, spec: { dataVolumeTemplates: templates, template: { spec: {} } } });
  const fromDs = { metadata: { name: 'vm1-root' }, spec: { sourceRef: { kind: 'DataSource', namespace: 'golden-images', name: 'fedora' }, storage: {} } };
  const http = { metadata: { name: 'vm1-data' }, spec: { source: { http: { url: 'http://x/disk.img' } }, storage: {} } };
  const review = (object: unknown, opts: { user?: string; operation?: string; oldObject?: unknown } = {}): unknown => {
    const r = reviewOf('datavolumes', object, opts) as { request: { resource: unknown } };
    r.request.resource = { group: 'kubevirt.io', version: 'v1', resource: 'virtualmachines' };
    return r;
  };
  const grants = { alice: ['create datavolumes/source golden-images/fedora-41'] };

  test('the user writing the VM must be allowed each clone: allowed without a patch, refused with the DataVolume message', async () => {
    const d = deps(grants, { 'golden-images/fedora': DATASOURCE });
    expect((await admitClone(review(vm([http, fromDs])), d)).response).toEqual({ uid: 'u-1', allowed: true });
    const bob = await admitClone(review(vm([http, fromDs]), { user: 'bob' }), d);
    expect(bob.response).toEqual({ uid: 'u-1', allowed: false, status: { code: 403, reason: 'Forbidden', message: 'user "bob" may not clone golden-images/fedora-41: needs create on datavolumes/source in golden-images' } });
    expect(d.asked).toEqual(['alice: create datavolumes/source golden-images/fedora-41', 'bob: create datavolumes/source golden-images/fedora-41', 'bob: create pods golden-images']);
  });

  test('no cloning template, a same-namespace clone, a missing DataSource, a bad kind', async () => {
    const d = deps({}, { 'golden-images/fedora': DATASOURCE });
    expect((await admitClone(review(vm([http]), { user: 'bob' }), d)).response.allowed).toBe(true);
    expect((await admitClone(review(vm([{ metadata: { name: 'c' }, spec: { source: { pvc: { name: 'mine' } } } }]), { user: 'bob' }), d)).response.allowed).toBe(true);
    expect(d.asked).toEqual([]);
    const missing = await admitClone(review(vm([{ ...fromDs, spec: { sourceRef: { kind: 'DataSource', name: 'nope' } } }])), d);
    expect(missing.response).toMatchObject({ allowed: false, status: { code: 422, message: 'DataSource alice-ns/nope does not exist' } });
    const kind = await admitClone(review(vm([{ ...fromDs, spec: { sourceRef: { kind: 'PVC', name: 'x' } } }])), d);
    expect(kind.response).toMatchObject({ allowed: false, status: { code: 422, message: 'spec.dataVolumeTemplates "vm1-root": spec.sourceRef.kind must be DataSource, not "PVC"' } });
  });

  test('UPDATE: an unchanged template is not checked again (the controller may update the VM); a new clone source is', async () => {
    const d = deps({}, { 'golden-images/fedora': DATASOURCE });
    const old = vm([fromDs]);
    expect((await admitClone(review(vm([fromDs]), { user: 'system:serviceaccount:ferry-system:ferry-controller', operation: 'UPDATE', oldObject: old }), d)).response.allowed).toBe(true);
    expect(d.asked).toEqual([]);
    const added = vm([fromDs, { metadata: { name: 'vm1-more' }, spec: { source: { pvc: { namespace: 'golden-images', name: 'secret-disk' } } } }]);
    const out = await admitClone(review(added, { user: 'bob', operation: 'UPDATE', oldObject: old }), d);
    expect(out.response.status?.message).toBe('user "bob" may not clone golden-images/secret-disk: needs create on datavolumes/source in golden-images');
  });
});
