/**
 * The clone admission webhook for real: `ferry apiserver` as a process, registered with the real
 * kube-apiserver by the manifest's MutatingWebhookConfiguration (clientConfig.url on loopback, the
 * caBundle written by the server), and users with client certificates from the cluster's CA whose
 * RBAC decides (never the admin). PVC clones go through `kubectl apply` as those users; DataVolume
 * clones (whose CRD still refuses pvc sources and sourceRef, ADR 0008) are sent to the running
 * webhook as AdmissionReviews, so the decision is the real SubjectAccessReview's.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { AdmissionregistrationV1Api, CoreV1Api, CustomObjectsApi, KubernetesObjectApi, type KubernetesObject, loadAllYaml, RbacAuthorizationV1Api, type V1MutatingWebhookConfiguration } from '@kubernetes/client-node';
import { CLONE_TOKEN_ANNOTATION, CLONE_TOKEN_PUBLIC_CONFIGMAP, CLONE_TOKEN_PUBLIC_KEY, verifyCloneToken, type CloneRef } from '../../src/contract/clone-token.js';
import { publicKeyFromPem } from '../../src/contract/upload-token.js';
import { kubectlAs, startControlPlane, WEBHOOK_CLIENT_NAME, type ControlPlane, type KubectlRun } from '../helpers/cluster.js';
import { installCrds } from '../helpers/crds.js';
import { freePort, REPO_ROOT, startFerry, type RunningProcess } from '../helpers/ferry-process.js';

const WEBHOOKS = 'ferry-clone-authorization';

let cp: ControlPlane;
let ns: string; // ferry apiserver's namespace
let golden: string;
let port: number;
let server: RunningProcess | undefined;
let core: CoreV1Api;
const users: Record<string, { path: string; ns: string }> = {};

type Run = KubectlRun;
const kubectl = kubectlAs;

function manifestObjects(file: string): KubernetesObject[] {
  return loadAllYaml(readFileSync(join(REPO_ROOT, 'manifests', file), 'utf8')) as KubernetesObject[];
}

const rbac = (): RbacAuthorizationV1Api => cp.kubeConfig.makeApiClient(RbacAuthorizationV1Api);

async function bind(namespace: string, user: string, kind: 'Role' | 'ClusterRole', role: string): Promise<void> {
  await rbac().createNamespacedRoleBinding({
    namespace,
    body: { metadata: { name: `${user}-${role.replace(/:/g, '-')}` }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind, name: role }, subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: user }] },
  });
}

async function role(namespace: string, name: string, rules: Array<{ apiGroups: string[]; resources: string[]; verbs: string[] }>): Promise<void> {
  await rbac().createNamespacedRole({ namespace, body: { metadata: { name }, rules } });
}

/** A user with a namespace of its own where it may create and read PVCs. */
async function user(name: string): Promise<void> {
  const own = await cp.newNamespace(name);
  await role(own, 'pvc-owner', [{ apiGroups: [''], resources: ['persistentvolumeclaims'], verbs: ['create', 'get', 'list'] }]);
  await bind(own, name, 'Role', 'pvc-owner');
  users[name] = { path: cp.userKubeconfig(name, ['clone-testers']).path, ns: own };
}

function pvcFile(name: string, annotations: Record<string, string>): string {
  const file = join(cp.runDir, `pvc-${name}-${Math.random().toString(36).slice(2)}.yaml`);
  const ann = Object.entries(annotations).map(([k, v]) => `    ${k}: ${JSON.stringify(v)}`).join('\n');
  writeFileSync(file, `apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: ${name}\n  annotations:\n${ann}\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: 1Gi\n`);
  return file;
}

async function applyAs(who: string, name: string, annotations: Record<string, string>): Promise<Run> {
  return kubectl(users[who]!.path, ['apply', '-n', users[who]!.ns, '-f', pvcFile(name, annotations)]);
}

async function tokenOn(namespace: string, name: string): Promise<string | undefined> {
  const pvc = await core.readNamespacedPersistentVolumeClaim({ namespace, name });
  return pvc.metadata?.annotations?.[CLONE_TOKEN_ANNOTATION];
}

async function cloneKey(): Promise<ReturnType<typeof publicKeyFromPem>> {
  const cm = await core.readNamespacedConfigMap({ namespace: ns, name: CLONE_TOKEN_PUBLIC_CONFIGMAP });
  return publicKeyFromPem(cm.data![CLONE_TOKEN_PUBLIC_KEY]!);
}

type Caller = { readonly cert: string; readonly key: string } | undefined;

/**
 * POSTs an AdmissionReview straight to the webhook, trusting only the server's own CA, with the
 * client certificate of `as` (default: the kube-apiserver's webhook client pair).
 */
async function sendReview(review: unknown, as: Caller | 'none' = cp.certs.webhookClient): Promise<{ status: number; body: { response: { allowed: boolean; status?: { code: number; message: string }; patch?: string }; message?: string } }> {
  const client = as === 'none' || as === undefined ? {} : { cert: readFileSync(as.cert), key: readFileSync(as.key) };
  const ca = await core.readNamespacedSecret({ namespace: ns, name: 'ferry-apiserver-ca' });
  const text = JSON.stringify(review);
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port, path: '/admission/clone', method: 'POST', ...client, ca: Buffer.from(ca.data!['tls.crt']!, 'base64'), headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }, timeout: 10_000 },
      (res) => {
        let data = '';
        res.on('data', (c: Buffer) => (data += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(data) }));
      },
    );
    req.on('error', reject);
    req.end(text);
  });
}

const dvReview = (who: string, namespace: string, spec: Record<string, unknown>): unknown => ({
  apiVersion: 'admission.k8s.io/v1',
  kind: 'AdmissionReview',
  request: {
    uid: `review-${Math.random().toString(36).slice(2)}`,
    operation: 'CREATE',
    namespace,
    resource: { group: 'cdi.kubevirt.io', version: 'v1beta1', resource: 'datavolumes' },
    userInfo: { username: who, groups: ['clone-testers', 'system:authenticated'] },
    object: { apiVersion: 'cdi.kubevirt.io/v1beta1', kind: 'DataVolume', metadata: { name: 'vm-disk', namespace }, spec },
  },
});

beforeAll(async () => {
  cp = await startControlPlane();
  core = cp.kubeConfig.makeApiClient(CoreV1Api);
  await installCrds(cp.kubeConfig);
  ns = await cp.newNamespace('ferry-system');
  golden = await cp.newNamespace('golden-images');
  port = await freePort();
  const objects = KubernetesObjectApi.makeApiClient(cp.kubeConfig);
  for (const o of manifestObjects('rbac-clone.yaml')) await objects.create(o);
  // The manifest's webhooks, called by URL on loopback instead of through the Service; no caBundle yet.
  const config = manifestObjects('apiserver.yaml').find((o) => o.kind === 'MutatingWebhookConfiguration') as V1MutatingWebhookConfiguration;
  for (const w of config.webhooks ?? []) {
    expect(w.clientConfig.caBundle).toBeUndefined();
    w.clientConfig = { url: `https://127.0.0.1:${port}/admission/clone` };
  }
  await cp.kubeConfig.makeApiClient(AdmissionregistrationV1Api).createMutatingWebhookConfiguration({ body: config });
  server = startFerry(
    ['apiserver', '--kubeconfig', cp.kubeconfigPath, '--namespace', ns, '--port', String(port), '--bind-address', '127.0.0.1', '--apiservice', '', '--serving-host', '127.0.0.1', '--refresh-seconds', '1',
      '--webhook-client-ca', cp.certs.webhookClientCa, '--webhook-client-name', WEBHOOK_CLIENT_NAME],
    {},
    600_000,
  );
  // Ready when both webhooks carry the server's CA.
  const admission = cp.kubeConfig.makeApiClient(AdmissionregistrationV1Api);
  for (let i = 0; ; i++) {
    const now = await admission.readMutatingWebhookConfiguration({ name: WEBHOOKS });
    if ((now.webhooks ?? []).every((w) => (w.clientConfig.caBundle ?? '') !== '')) break;
    if (i > 120) throw new Error('ferry apiserver never wrote the webhook caBundle');
    await sleep(500);
  }
  for (const name of ['alice', 'bob', 'carol']) await user(name);
  // The golden namespace: a PVC to clone; alice is a clone-sourcer there, bob may create pods there.
  await core.createNamespacedPersistentVolumeClaim({ namespace: golden, body: { metadata: { name: 'fedora' }, spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } } } });
  await bind(golden, 'alice', 'ClusterRole', 'ferry:clone-sourcer');
  await role(golden, 'pod-creator', [{ apiGroups: [''], resources: ['pods'], verbs: ['create'] }]);
  await bind(golden, 'bob', 'Role', 'pod-creator');
  await cp.kubeConfig.makeApiClient(CustomObjectsApi).createNamespacedCustomObject({
    group: 'cdi.kubevirt.io',
    version: 'v1beta1',
    namespace: golden,
    plural: 'datasources',
    body: { apiVersion: 'cdi.kubevirt.io/v1beta1', kind: 'DataSource', metadata: { name: 'fedora-latest' }, spec: { source: { pvc: { name: 'fedora' } } } },
  });
}, 240_000);

afterAll(async () => {
  if (server) {
    server.kill('SIGTERM');
    const result = await server.done;
    if (result.code !== 0) process.stderr.write(`ferry apiserver exited ${result.code}:\n${result.stderr.slice(-2000)}\n${result.stdout.slice(-3000)}\n`);
  }
  await cp?.stop();
});

describe('clone admission through kubectl apply, as real users', () => {
  test('same namespace: allowed, a token added that verifies with the published key for this clone', async () => {
    const a = users.alice!;
    await core.createNamespacedPersistentVolumeClaim({ namespace: a.ns, body: { metadata: { name: 'mine' }, spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } } } });
    const run = await applyAs('alice', 'copy-of-mine', { 'k8s.io/CloneRequest': `${a.ns}/mine` });
    expect(run).toMatchObject({ code: 0, stderr: '' });
    const token = await tokenOn(a.ns, 'copy-of-mine');
    const clone: CloneRef = { source: { namespace: a.ns, name: 'mine' }, target: { namespace: a.ns, name: 'copy-of-mine' } };
    const verdict = verifyCloneToken(token ?? '', await cloneKey(), Date.now(), clone);
    expect(verdict).toMatchObject({ ok: true, claims: { operation: 'Clone', name: 'mine', namespace: a.ns, params: { targetNamespace: a.ns, targetName: 'copy-of-mine' } } });
  });

  test('across namespaces: allowed by a RoleBinding of ferry:clone-sourcer in the source namespace', async () => {
    const run = await applyAs('alice', 'fedora-copy', { 'k8s.io/CloneRequest': `${golden}/fedora` });
    expect(run).toMatchObject({ code: 0, stderr: '' });
    const verdict = verifyCloneToken((await tokenOn(users.alice!.ns, 'fedora-copy')) ?? '', await cloneKey(), Date.now(), { source: { namespace: golden, name: 'fedora' }, target: { namespace: users.alice!.ns, name: 'fedora-copy' } });
    expect(verdict.ok).toBe(true);
  });

  test('across namespaces: allowed by create pods there', async () => {
    const run = await applyAs('bob', 'fedora-copy', { 'k8s.io/CloneRequest': `${golden}/fedora` });
    expect(run).toMatchObject({ code: 0, stderr: '' });
    expect(await tokenOn(users.bob!.ns, 'fedora-copy')).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+$/);
  });

  test('denied with the message that names the permission, and nothing created', async () => {
    const run = await applyAs('carol', 'fedora-copy', { 'k8s.io/CloneRequest': `${golden}/fedora`, [CLONE_TOKEN_ANNOTATION]: 'hand-written' });
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain(`user "carol" may not clone ${golden}/fedora: needs create on datavolumes/source in ${golden}`);
    const list = await core.listNamespacedPersistentVolumeClaim({ namespace: users.carol!.ns });
    expect(list.items.map((p) => p.metadata?.name)).toEqual([]);
  });

  test('a user-written token is replaced by the webhook\'s', async () => {
    const a = users.alice!;
    const run = await applyAs('alice', 'with-forged-token', { 'k8s.io/CloneRequest': `${golden}/fedora`, [CLONE_TOKEN_ANNOTATION]: 'hand-written' });
    expect(run).toMatchObject({ code: 0, stderr: '' });
    const token = await tokenOn(a.ns, 'with-forged-token');
    expect(token).not.toBe('hand-written');
    expect(verifyCloneToken(token ?? '', await cloneKey(), Date.now(), { source: { namespace: golden, name: 'fedora' }, target: { namespace: a.ns, name: 'with-forged-token' } }).ok).toBe(true);
  });

  test('adding CloneRequest to an existing PVC is refused (the source is fixed at creation)', async () => {
    const c = users.carol!;
    await core.createNamespacedPersistentVolumeClaim({ namespace: c.ns, body: { metadata: { name: 'plain' }, spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } } } });
    await role(c.ns, 'pvc-patcher', [{ apiGroups: [''], resources: ['persistentvolumeclaims'], verbs: ['patch', 'update'] }]);
    await bind(c.ns, 'carol', 'Role', 'pvc-patcher');
    const run = await kubectl(c.path, ['annotate', '-n', c.ns, 'pvc', 'plain', `k8s.io/CloneRequest=${golden}/fedora`, `${CLONE_TOKEN_ANNOTATION}=minted-elsewhere`]);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain('the clone source of an object is set when it is created and cannot be changed');
    expect(await tokenOn(c.ns, 'plain')).toBeUndefined();
  });
});

describe('DataVolume decisions from the running webhook (real SubjectAccessReviews)', () => {
  test('source.pvc across namespaces: alice (clone-sourcer) allowed, carol refused with the message', async () => {
    const spec = { source: { pvc: { namespace: golden, name: 'fedora' } }, storage: {} };
    const allowed = await sendReview(dvReview('alice', users.alice!.ns, spec));
    expect(allowed.status).toBe(200);
    expect(allowed.body.response.allowed).toBe(true);
    const patch = JSON.parse(Buffer.from(allowed.body.response.patch!, 'base64').toString()) as Array<{ value: Record<string, string> }>;
    const token = patch[0]!.value[CLONE_TOKEN_ANNOTATION]!;
    expect(verifyCloneToken(token, await cloneKey(), Date.now(), { source: { namespace: golden, name: 'fedora' }, target: { namespace: users.alice!.ns, name: 'vm-disk' } }).ok).toBe(true);
    const denied = await sendReview(dvReview('carol', users.carol!.ns, spec));
    expect(denied.body.response).toMatchObject({ allowed: false, status: { code: 403, message: `user "carol" may not clone ${golden}/fedora: needs create on datavolumes/source in ${golden}` } });
  });

  test('sourceRef → DataSource → its PVC: bob (create pods) allowed, carol refused naming the PVC', async () => {
    const spec = { sourceRef: { kind: 'DataSource', namespace: golden, name: 'fedora-latest' }, storage: {} };
    const allowed = await sendReview(dvReview('bob', users.bob!.ns, spec));
    expect(allowed.body.response.allowed).toBe(true);
    const denied = await sendReview(dvReview('carol', users.carol!.ns, spec));
    expect(denied.body.response.status?.message).toBe(`user "carol" may not clone ${golden}/fedora: needs create on datavolumes/source in ${golden}`);
  });
});

describe('only the kube-apiserver may call the webhook', () => {
  test.each([
    ['no client certificate', 'none' as const],
    ['a user\'s certificate from the cluster CA', 'alice' as const],
    ['the front proxy\'s certificate', 'front-proxy' as const],
  ])('%s: 401, no token', async (_what, who) => {
    const alicePair = { cert: join(users.alice!.path, '..', 'user.crt'), key: join(users.alice!.path, '..', 'user.key') };
    const as = who === 'none' ? 'none' : who === 'alice' ? alicePair : cp.certs.frontProxyClient;
    const out = await sendReview(dvReview('system:admin', users.carol!.ns, { source: { pvc: { namespace: golden, name: 'fedora' } }, storage: {} }), as);
    expect(out.status).toBe(401);
    expect(out.body.response).toBeUndefined();
    expect(out.body.message).toMatch(/^Unauthorized: /);
  });
});

describe('DataSource CRD on the real apiserver', () => {
  test('spec.source.snapshot is refused at admission, naming the field', async () => {
    const file = join(cp.runDir, 'snapshot-datasource.yaml');
    writeFileSync(file, `apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataSource\nmetadata:\n  name: from-snapshot\nspec:\n  source:\n    snapshot:\n      name: snap\n`);
    const run = await kubectl(cp.kubeconfigPath, ['apply', '-n', golden, '-f', file]);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain('spec.source.snapshot');
    expect(run.stderr).toContain('spec.source.pvc is required');
  });
});

describe('fail closed', () => {
  test('with ferry apiserver stopped, a cloning PVC create fails (failurePolicy Fail) and nothing is created', async () => {
    server!.kill('SIGTERM');
    const result = await server!.done;
    server = undefined;
    expect(result.code).toBe(0);
    const run = await applyAs('alice', 'while-down', { 'k8s.io/CloneRequest': `${golden}/fedora` });
    expect(run.code).not.toBe(0);
    expect(run.stderr).toMatch(/failed calling webhook "clone-authorization\.cdi\.kubevirt\.io"/);
    const list = await core.listNamespacedPersistentVolumeClaim({ namespace: users.alice!.ns });
    expect(list.items.map((p) => p.metadata?.name)).not.toContain('while-down');
    // An ordinary PVC does not reach the webhook (matchConditions) and is still created.
    const plain = await kubectl(users.alice!.path, ['create', '-n', users.alice!.ns, '-f', pvcFile('ordinary', { 'example.com/note': 'x' })]);
    expect(plain).toMatchObject({ code: 0 });
  });
});
