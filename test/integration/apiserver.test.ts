/**
 * `ferry apiserver` as a real process, registered with the real kube-apiserver through an APIService
 * and reached through it: discovery with `kubectl get --raw`, `kubectl create -f` of an
 * UploadTokenRequest as real users (client certificates from the cluster's CA, RBAC from
 * manifests/apiserver-rbac.yaml), the token checked with the published public key; and the same
 * server called directly, where forged X-Remote-User headers must not make anyone that user.
 *
 * The APIService's Service is `type: ExternalName, externalName: localhost` (the kube-apiserver
 * refuses Endpoints on 127.0.0.0/8 but reaches an ExternalName on loopback), so the serving
 * certificate must be for `ferry-apiserver.<ns>.svc`, which is what the server makes for itself.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiregistrationV1Api, CoreV1Api, KubernetesObjectApi, type KubernetesObject, loadAllYaml, loadYaml, RbacAuthorizationV1Api } from '@kubernetes/client-node';
import { publicKeyFromPem, verifyUploadToken, UPLOAD_TOKEN_PUBLIC_CONFIGMAP, UPLOAD_TOKEN_PUBLIC_KEY } from '../../src/contract/upload-token.js';
import { UPLOAD_APISERVICE_NAME, UPLOAD_GROUP, UPLOAD_VERSION } from '../../src/api/upload-token-request.js';
import { controlPlaneBinDir, startControlPlane, type ControlPlane } from '../helpers/cluster.js';
import { freePort, REPO_ROOT, startFerry, type RunningProcess } from '../helpers/ferry-process.js';

const KUBECTL = join(controlPlaneBinDir(), 'kubectl');
const SERVICE = 'ferry-apiserver';

let cp: ControlPlane;
let ns: string; // the apiserver's own namespace
let apiPort: number;
let server: RunningProcess;
let core: CoreV1Api;

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

function kubectl(kubeconfig: string, args: readonly string[]): Promise<Run> {
  return new Promise((resolve) => {
    execFile(KUBECTL, ['--kubeconfig', kubeconfig, ...args], { encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

/** The RBAC objects users get from the manifests (the aggregated requester role). */
function manifestObjects(file: string): KubernetesObject[] {
  return loadAllYaml(readFileSync(join(REPO_ROOT, 'manifests', file), 'utf8')) as KubernetesObject[];
}

async function waitAvailable(): Promise<void> {
  const apireg = cp.kubeConfig.makeApiClient(ApiregistrationV1Api);
  let last = '';
  for (let i = 0; i < 120; i++) {
    const svc = await apireg.readAPIService({ name: UPLOAD_APISERVICE_NAME });
    const available = svc.status?.conditions?.find((c) => c.type === 'Available');
    if (available?.status === 'True') return;
    last = `${available?.reason}: ${available?.message}`;
    await sleep(500);
  }
  throw new Error(`APIService never became Available (${last})`);
}

beforeAll(async () => {
  cp = await startControlPlane();
  core = cp.kubeConfig.makeApiClient(CoreV1Api);
  ns = await cp.newNamespace('ferry-system');
  apiPort = await freePort();
  await core.createNamespacedService({
    namespace: ns,
    body: { metadata: { name: SERVICE }, spec: { type: 'ExternalName', externalName: 'localhost', ports: [{ name: 'https', port: apiPort }] } },
  });
  // The manifest's APIService, pointed at this namespace and port; no caBundle (the server writes it).
  const apiService = manifestObjects('apiserver.yaml').find((o) => o.kind === 'APIService') as unknown as { spec: { service: Record<string, unknown>; caBundle?: string } } & KubernetesObject;
  apiService.spec.service = { name: SERVICE, namespace: ns, port: apiPort };
  expect(apiService.spec.caBundle).toBeUndefined();
  await cp.kubeConfig.makeApiClient(ApiregistrationV1Api).createAPIService({ body: apiService as never });
  // The user-facing ClusterRoles from the manifest (no controller-manager aggregates them into edit here).
  const objects = KubernetesObjectApi.makeApiClient(cp.kubeConfig);
  for (const o of manifestObjects('apiserver-rbac.yaml').filter((o) => o.kind === 'ClusterRole' && o.metadata?.name?.startsWith('ferry:'))) await objects.create(o);
  server = startFerry(
    ['apiserver', '--kubeconfig', cp.kubeconfigPath, '--namespace', ns, '--service', SERVICE, '--port', String(apiPort), '--bind-address', '127.0.0.1', '--refresh-seconds', '1'],
    {},
    600_000,
  );
  await waitAvailable();
}, 180_000);

afterAll(async () => {
  if (server) {
    server.kill('SIGTERM');
    const result = await server.done;
    if (result.code !== 0) process.stderr.write(`ferry apiserver exited ${result.code}:\n${result.stderr.slice(-2000)}\n${result.stdout.slice(-3000)}\n`);
  }
  await cp?.stop();
});

async function publicKey(): Promise<ReturnType<typeof publicKeyFromPem>> {
  const cm = await core.readNamespacedConfigMap({ namespace: ns, name: UPLOAD_TOKEN_PUBLIC_CONFIGMAP });
  return publicKeyFromPem(cm.data![UPLOAD_TOKEN_PUBLIC_KEY]!);
}

/** A namespace where `user` may create uploadtokenrequests (the manifest's requester role, bound there). */
async function namespaceFor(user: string): Promise<string> {
  const target = await cp.newNamespace('uploads');
  await cp.kubeConfig.makeApiClient(RbacAuthorizationV1Api).createNamespacedRoleBinding({
    namespace: target,
    body: {
      metadata: { name: `${user}-uploads` },
      roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'ferry:upload-token-requester' },
      subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: user }],
    },
  });
  return target;
}

function requestFile(metadata: Record<string, string>, pvcName: string): string {
  const file = join(cp.runDir, `tokenrequest-${Math.random().toString(36).slice(2)}.yaml`);
  const meta = Object.entries(metadata).map(([k, v]) => `  ${k}: ${v}`).join('\n');
  writeFileSync(file, `apiVersion: ${UPLOAD_GROUP}/${UPLOAD_VERSION}\nkind: UploadTokenRequest\nmetadata:\n${meta}\nspec:\n  pvcName: ${pvcName}\n`);
  return file;
}

describe('ferry apiserver behind the kube-apiserver (APIService)', () => {
  test('discovery through the kube-apiserver lists uploadtokenrequests with verb create', async () => {
    const raw = await kubectl(cp.kubeconfigPath, ['get', '--raw', `/apis/${UPLOAD_GROUP}/${UPLOAD_VERSION}`]);
    expect(raw.stderr).toBe('');
    const list = JSON.parse(raw.stdout) as { kind: string; groupVersion: string; resources: Array<{ name: string; namespaced: boolean; kind: string; verbs: string[] }> };
    expect(list).toMatchObject({ kind: 'APIResourceList', groupVersion: `${UPLOAD_GROUP}/${UPLOAD_VERSION}` });
    expect(list.resources).toEqual([expect.objectContaining({ name: 'uploadtokenrequests', namespaced: true, kind: 'UploadTokenRequest', verbs: ['create'] })]);
    const resources = await kubectl(cp.kubeconfigPath, ['api-resources', '--api-group', UPLOAD_GROUP, '-o', 'wide']);
    expect(resources.stdout).toMatch(/uploadtokenrequests\s+upload\.cdi\.kubevirt\.io\/v1beta1\s+true\s+UploadTokenRequest\s+create/);
  });

  test('the APIService caBundle is the CA in the apiserver Secret, and the public key is published', async () => {
    const apiService = await cp.kubeConfig.makeApiClient(ApiregistrationV1Api).readAPIService({ name: UPLOAD_APISERVICE_NAME });
    const ca = await core.readNamespacedSecret({ namespace: ns, name: 'ferry-apiserver-ca' });
    expect(apiService.spec?.caBundle).toBe(ca.data?.['tls.crt']);
    const signing = await core.readNamespacedSecret({ namespace: ns, name: 'ferry-upload-token-signing-key' });
    const pub = Buffer.from(signing.data!['public.pem']!, 'base64').toString('utf8');
    const cm = await core.readNamespacedConfigMap({ namespace: ns, name: UPLOAD_TOKEN_PUBLIC_CONFIGMAP });
    expect(cm.data?.[UPLOAD_TOKEN_PUBLIC_KEY]).toBe(pub);
  });

  test('kubectl create -f as an allowed real user answers a token for that PVC (name and generateName)', async () => {
    const target = await namespaceFor('alice');
    const alice = cp.userKubeconfig('alice', ['uploaders']);
    const key = await publicKey();
    for (const metadata of [{ name: 'token-for-virtctl' }, { generateName: 'token-for-virtctl-' }] as Array<Record<string, string>>) {
      const run = await kubectl(alice.path, ['create', '-n', target, '-f', requestFile(metadata, 'disk1'), '-o', 'yaml']);
      expect(run.stderr).toBe('');
      expect(run.code).toBe(0);
      const answer = loadYaml<{ apiVersion: string; kind: string; metadata: { name: string; namespace: string }; spec: { pvcName: string }; status: { token: string } }>(run.stdout);
      expect(answer).toMatchObject({ apiVersion: `${UPLOAD_GROUP}/${UPLOAD_VERSION}`, kind: 'UploadTokenRequest', metadata: { namespace: target }, spec: { pvcName: 'disk1' } });
      if ('name' in metadata) expect(answer.metadata.name).toBe('token-for-virtctl');
      else expect(answer.metadata.name).toMatch(/^token-for-virtctl-[a-z0-9]{5}$/);
      const verdict = verifyUploadToken(answer.status.token, key, Date.now(), { namespace: target, name: 'disk1' });
      expect(verdict).toMatchObject({ ok: true, claims: { operation: 'Upload', name: 'disk1', namespace: target, resource: { resource: 'persistentvolumeclaims' } } });
      if (verdict.ok) expect(verdict.claims.expiresAt - verdict.claims.issuedAt).toBe(300);
    }
  });

  test('a dry run is authorized and validated, and answers no token', async () => {
    const target = await namespaceFor('dora');
    const dora = cp.userKubeconfig('dora');
    const run = await kubectl(dora.path, ['create', '--dry-run=server', '-n', target, '-f', requestFile({ name: 'dry' }, 'disk1'), '-o', 'json']);
    expect(run.code).toBe(0);
    const answer = JSON.parse(run.stdout) as { metadata: { name: string }; status?: { token?: string } };
    expect(answer.metadata.name).toBe('dry');
    expect(answer.status?.token).toBeUndefined();
  });

  test('a user without RBAC gets 403 and no token', async () => {
    const target = await namespaceFor('alice');
    const bob = cp.userKubeconfig('bob', ['uploaders']);
    const run = await kubectl(bob.path, ['create', '-n', target, '-f', requestFile({ name: 't' }, 'disk1'), '-o', 'yaml']);
    expect(run.code).not.toBe(0);
    expect(run.stdout).not.toContain('token');
    expect(run.stderr).toMatch(/forbidden: User "bob" cannot create resource "uploadtokenrequests" in API group "upload.cdi.kubevirt.io"/);
  });

  test('a user with rights only in his own namespace gets no token for a PVC in another', async () => {
    await namespaceFor('carol'); // her own
    const other = await namespaceFor('alice');
    const carol = cp.userKubeconfig('carol');
    const run = await kubectl(carol.path, ['create', '-n', other, '-f', requestFile({ name: 't' }, 'disk1'), '-o', 'yaml']);
    expect(run.code).not.toBe(0);
    expect(run.stderr).toContain(`User "carol" cannot create resource "uploadtokenrequests" in API group "upload.cdi.kubevirt.io" in the namespace "${other}"`);
    // A body naming the other namespace, sent to her own, is refused too: the URL's namespace is the token's.
    const own = await namespaceFor('carol');
    const body = { apiVersion: `${UPLOAD_GROUP}/${UPLOAD_VERSION}`, kind: 'UploadTokenRequest', metadata: { name: 't', namespace: other }, spec: { pvcName: 'disk1' } };
    const raw = await kubectl(carol.path, ['create', '--raw', `/apis/${UPLOAD_GROUP}/${UPLOAD_VERSION}/namespaces/${own}/uploadtokenrequests`, '-f', writeJson(body)]);
    expect(raw.code).not.toBe(0);
    expect(raw.stderr).toContain('the namespace of the provided object does not match the namespace sent on the request');
    expect(raw.stdout).not.toContain('token');
  });
});

describe('signing key rotation', () => {
  test('deleting the Secret makes a new key, published for the proxy; old tokens stop verifying', async () => {
    const target = await namespaceFor('alice');
    const alice = cp.userKubeconfig('alice');
    const tokenNow = async (): Promise<string> => {
      const run = await kubectl(alice.path, ['create', '-n', target, '-f', requestFile({ generateName: 'rot-' }, 'disk1'), '-o', 'json']);
      expect(run.code).toBe(0);
      return (JSON.parse(run.stdout) as { status: { token: string } }).status.token;
    };
    const oldKey = await publicKey();
    const oldToken = await tokenNow();
    const oldPem = oldKey.export({ type: 'spki', format: 'pem' }).toString();
    await core.deleteNamespacedSecret({ namespace: ns, name: 'ferry-upload-token-signing-key' });
    let newKey = oldKey;
    for (let i = 0; i < 60 && newKey.export({ type: 'spki', format: 'pem' }).toString() === oldPem; i++) {
      await sleep(250);
      newKey = await publicKey();
    }
    expect(newKey.export({ type: 'spki', format: 'pem' }).toString()).not.toBe(oldPem);
    // The server may still sign with the old key for up to one refresh after publishing: bounded retry.
    let fresh = await tokenNow();
    for (let i = 0; i < 20 && !verifyUploadToken(fresh, newKey, Date.now()).ok; i++) {
      await sleep(250);
      fresh = await tokenNow();
    }
    expect(verifyUploadToken(fresh, newKey, Date.now(), { namespace: target, name: 'disk1' }).ok).toBe(true);
    expect(verifyUploadToken(oldToken, newKey, Date.now())).toMatchObject({ ok: false, code: 'BAD_SIGNATURE' });
  });
});

function writeJson(body: object): string {
  const file = join(cp.runDir, `body-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, JSON.stringify(body));
  return file;
}

interface Direct {
  readonly status: number;
  readonly body: string;
}

/** POSTs straight to the aggregated server (not through the kube-apiserver), trusting its own CA. */
async function direct(namespace: string, headers: Record<string, string>, client?: { cert: Buffer; key: Buffer }): Promise<Direct> {
  const caSecret = await core.readNamespacedSecret({ namespace: ns, name: 'ferry-apiserver-ca' });
  const ca = Buffer.from(caSecret.data!['tls.crt']!, 'base64');
  const body = JSON.stringify({ apiVersion: `${UPLOAD_GROUP}/${UPLOAD_VERSION}`, kind: 'UploadTokenRequest', metadata: { name: 'forged' }, spec: { pvcName: 'disk1' } });
  return new Promise((resolve, reject) => {
    const req = request(
      {
        host: '127.0.0.1',
        port: apiPort,
        method: 'POST',
        path: `/apis/${UPLOAD_GROUP}/${UPLOAD_VERSION}/namespaces/${namespace}/uploadtokenrequests`,
        servername: `${SERVICE}.${ns}.svc`,
        ca,
        ...(client ?? {}),
        headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), ...headers },
        timeout: 10_000,
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (c: string) => (text += c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(body);
  });
}

describe('ferry apiserver called directly', () => {
  const forged = { 'x-remote-user': 'alice', 'x-remote-group': 'system:masters' };

  test('forged X-Remote-User headers without the front-proxy certificate make nobody that user', async () => {
    const target = await namespaceFor('alice');
    const noCert = await direct(target, forged);
    expect(noCert.status).toBe(401);
    expect(JSON.parse(noCert.body)).toMatchObject({ kind: 'Status', reason: 'Unauthorized', code: 401 });
    expect(noCert.body).not.toContain('token"');
    // A certificate from the cluster's client CA (the admin's, system:masters) is not the front proxy's either.
    const adminCert = await direct(target, forged, { cert: readFileSync(cp.certs.admin.cert), key: readFileSync(cp.certs.admin.key) });
    expect(adminCert.status).toBe(401);
  });

  test('with the front-proxy certificate the forwarded user is trusted and authorized (the check can pass and fail)', async () => {
    const target = await namespaceFor('alice');
    const proxyCert = { cert: readFileSync(cp.certs.frontProxyClient.cert), key: readFileSync(cp.certs.frontProxyClient.key) };
    const allowed = await direct(target, { 'x-remote-user': 'alice' }, proxyCert);
    expect(allowed.status).toBe(201);
    const token = (JSON.parse(allowed.body) as { status: { token: string } }).status.token;
    expect(verifyUploadToken(token, await publicKey(), Date.now(), { namespace: target, name: 'disk1' }).ok).toBe(true);
    const denied = await direct(target, { 'x-remote-user': 'mallory', 'x-remote-group': 'uploaders' }, proxyCert);
    expect(denied.status).toBe(403);
    expect(JSON.parse(denied.body)).toMatchObject({ kind: 'Status', apiVersion: 'v1', reason: 'Forbidden', code: 403 });
  });
});

