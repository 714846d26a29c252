/**
 * What a user who is not an admin needs to reach and verify the upload proxy, on a real apiserver
 * with the manifests' RBAC (issue #14, docs/adr/0016): the controller, as its ServiceAccount,
 * publishes the proxy CA's bundle in a ConfigMap and rotates it with the CA's Secret; every
 * authenticated user may read that ConfigMap and nothing else in ferry-system; `ferry
 * image-upload`'s trust (reachProxy) verifies a proxy certificate from that CA without --insecure
 * or SSL_CERT_FILE; and a port-forward is authorized to the proxy's pod ferry-uploadproxy-0 and
 * refused (403) to another pod there. No kubelet here: a port-forward the apiserver authorizes
 * ends at "no host assigned" (400) instead of 403, which is the decision under test.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import { get as httpsGet, createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { AuthorizationV1Api, CoreV1Api, KubernetesObjectApi, type KubeConfig, type KubernetesObject, loadAllYaml } from '@kubernetes/client-node';
import { UploadCertificates, UploadSecret } from '../../controller/certs/upload-certs.js';
import { openPortForward } from '../../cli/upload/port-forward.js';
import { reachProxy } from '../../cli/upload/reach-proxy.js';
import { ErrorCode, FerryError } from '../../src/errors.js';
import { silentLogger } from '../../src/logging.js';
import { UploadProxyCaBundle, UploadProxyService } from '../../src/contract/upload-api.js';
import { CertUsage, issueCertificate, validFor } from '../../src/pki/x509.js';
import { startControlPlane, type ControlPlane } from '../helpers/cluster.js';
import { REPO_ROOT } from '../helpers/ferry-process.js';

const DAY = 86_400_000;
const NS = UploadProxyService.namespace;
const OTHER_POD = 'ferry-controller-5d9c7b6f4-abcde';
let cp: ControlPlane;
let core: CoreV1Api;
/** A real user with no role of its own: only what system:authenticated is granted. */
let alice: { readonly path: string; readonly kubeConfig: KubeConfig };
let now = Date.now();
let certs: UploadCertificates;

const manifests = (file: string): KubernetesObject[] => loadAllYaml(readFileSync(join(REPO_ROOT, 'manifests', file), 'utf8')) as KubernetesObject[];
const status = (err: unknown): number | undefined => (err as { code?: number }).code;
const certsIn = (bundle: string | undefined): number => (bundle ?? '').split('BEGIN CERTIFICATE').length - 1;

async function secretData(name: string): Promise<Record<string, string>> {
  const secret = await core.readNamespacedSecret({ namespace: NS, name });
  return Object.fromEntries(Object.entries(secret.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
}

/** A pod object as the StatefulSet (or a Deployment) would make it; Ready when `ready`. No kubelet runs it. */
async function pod(name: string, labels: Record<string, string>, ready: boolean): Promise<void> {
  await core.createNamespacedPod({ namespace: NS, body: { metadata: { name, labels }, spec: { containers: [{ name: 'c', image: 'ferry', ports: [{ name: 'https', containerPort: 8443 }] }] } } });
  if (!ready) return;
  const current = await core.readNamespacedPod({ namespace: NS, name });
  await core.replaceNamespacedPodStatus({ namespace: NS, name, body: { ...current, status: { phase: 'Running', conditions: [{ type: 'Ready', status: 'True' }] } } });
}

beforeAll(async () => {
  cp = await startControlPlane();
  core = cp.kubeConfig.makeApiClient(CoreV1Api);
  await core.createNamespace({ body: { metadata: { name: NS } } });
  const objects = KubernetesObjectApi.makeApiClient(cp.kubeConfig);
  // The install's RBAC for the controller's certificates, for every user, and CDIConfig's reader role.
  const install = [
    ...manifests('rbac-upload.yaml'),
    ...manifests('rbac-upload-users.yaml'),
    ...manifests('apiserver-rbac.yaml').filter((o) => o.metadata?.name === 'ferry:cdiconfig-reader'),
    ...manifests('uploadproxy.yaml').filter((o) => o.kind === 'Service'),
  ];
  for (const o of install) await objects.create(o);
  alice = cp.userKubeconfig('alice');
  // The controller as RBAC sees its ServiceAccount (the username is what a ServiceAccount subject matches).
  const controller = cp.userKubeconfig('system:serviceaccount:ferry-system:ferry-controller');
  certs = new UploadCertificates(controller.kubeConfig.makeApiClient(CoreV1Api), NS, { caLifetimeMs: 30 * DAY, leafLifetimeMs: 7 * DAY }, silentLogger(), () => new Date(now));
  await certs.ensure();
}, 120_000);

afterAll(async () => {
  await cp?.stop();
});

describe('the proxy CA, published', () => {
  test('any authenticated user may read it, and not the CA Secret or another ConfigMap', async () => {
    await core.createNamespacedConfigMap({ namespace: NS, body: { metadata: { name: 'ferry-controller' }, data: { a: 'b' } } });
    const asAlice = alice.kubeConfig.makeApiClient(CoreV1Api);
    const cm = await asAlice.readNamespacedConfigMap({ namespace: NS, name: UploadProxyCaBundle.configMap });
    expect(certsIn(cm.data?.[UploadProxyCaBundle.configMapKey])).toBeGreaterThan(0);
    expect(await asAlice.readNamespacedSecret({ namespace: NS, name: UploadProxyCaBundle.secret }).then(() => 200, status)).toBe(403);
    expect(await asAlice.readNamespacedConfigMap({ namespace: NS, name: 'ferry-controller' }).then(() => 200, status)).toBe(403);
    expect(await asAlice.listNamespacedConfigMap({ namespace: NS }).then(() => 200, status)).toBe(403);
  });

  test("ferry image-upload's trust verifies a proxy certificate from that CA, as that user, with no --insecure or SSL_CERT_FILE", async () => {
    const ca = await secretData(UploadSecret.ProxyCa);
    const leaf = issueCertificate({ key: ca['tls.key'] ?? '', cert: ca['tls.crt'] ?? '' }, { commonName: 'proxy', usage: CertUsage.Server, hosts: ['localhost'], ...validFor(new Date(), 1) });
    const server: Server = createServer({ key: leaf.key, cert: leaf.cert }, (_req, res) => res.end('OK'));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const url = `https://localhost:${(server.address() as AddressInfo).port}`;
    const fetch = (trust: readonly (string | Buffer)[] | undefined): Promise<string> =>
      new Promise((resolve) => {
        httpsGet(`${url}/healthz`, { ...(trust ? { ca: [...trust] } : {}) }, (res) => resolve(String(res.statusCode))).on('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
      });
    try {
      const access = await reachProxy(url, false, { kc: alice.kubeConfig, warn: () => undefined });
      expect(access.ca).toBeDefined();
      expect(await fetch(access.ca)).toBe('200');
      // What the same request trusts without it: the system's roots, which know nothing of Ferry's CA.
      expect(await fetch(undefined)).toBe('UNABLE_TO_VERIFY_LEAF_SIGNATURE');
      // --insecure reads nothing.
      expect((await reachProxy(url, true, { kc: alice.kubeConfig, warn: () => undefined })).ca).toBeUndefined();
    } finally {
      server.close();
    }
  });

  // Last: it moves the clock past a rotation (the CA then is not valid yet in real time).
  test('the controller keeps it in a ConfigMap beside the Secret, kept as it is, rotated with it', async () => {
    const cm = await core.readNamespacedConfigMap({ namespace: NS, name: UploadProxyCaBundle.configMap });
    const bundle = (await secretData(UploadSecret.ProxyCa))[UploadProxyCaBundle.key];
    expect(cm.data).toEqual({ [UploadProxyCaBundle.configMapKey]: bundle });
    expect(certsIn(bundle)).toBe(1);
    // The serving certificate chains to it.
    const serving = await secretData(UploadSecret.ProxyServing);
    expect(new X509Certificate(serving['tls.crt'] ?? '').verify(new X509Certificate(bundle ?? '').publicKey)).toBe(true);

    now += DAY;
    await certs.ensure();
    expect((await core.readNamespacedConfigMap({ namespace: NS, name: UploadProxyCaBundle.configMap })).metadata?.resourceVersion).toBe(cm.metadata?.resourceVersion);

    // Past two thirds of the CA's life: the new CA and the old one, in the Secret and the ConfigMap alike.
    now += 20 * DAY;
    await certs.ensure();
    const rotated = (await core.readNamespacedConfigMap({ namespace: NS, name: UploadProxyCaBundle.configMap })).data?.[UploadProxyCaBundle.configMapKey];
    expect(certsIn(rotated)).toBe(2);
    expect(rotated).toBe((await secretData(UploadSecret.ProxyCa))[UploadProxyCaBundle.key]);
    expect(rotated).toContain((bundle ?? '').trim());
  });
});

describe('port-forward to the proxy pod only', () => {
  beforeAll(async () => {
    const selector = (manifests('uploadproxy.yaml').find((o) => o.kind === 'Service') as unknown as { spec: { selector: Record<string, string> } }).spec.selector;
    await pod(UploadProxyService.pod, selector, true);
    await pod(OTHER_POD, { 'app.kubernetes.io/name': 'ferry', 'app.kubernetes.io/component': 'controller' }, true);
  });

  test('a SubjectAccessReview: create and get pods/portforward allowed on ferry-uploadproxy-0, on no other pod', async () => {
    const authz = cp.kubeConfig.makeApiClient(AuthorizationV1Api);
    const may = async (verb: string, name: string): Promise<boolean> =>
      (await authz.createSubjectAccessReview({ body: { spec: { user: 'alice', groups: ['system:authenticated'], resourceAttributes: { namespace: NS, verb, resource: 'pods', subresource: 'portforward', name } } } })).status?.allowed === true;
    expect([await may('create', UploadProxyService.pod), await may('get', UploadProxyService.pod)]).toEqual([true, true]);
    expect([await may('create', OTHER_POD), await may('get', OTHER_POD), await may('create', 'ferry-apiserver-0')]).toEqual([false, false, false]);
  });

  test("the user's real port-forward (the client's WebSocket upgrade) is refused with 403 to another pod, authorized to the proxy's", async () => {
    const refusal = (podName: string): Promise<FerryError> =>
      openPortForward(alice.kubeConfig, { namespace: NS, pod: podName, port: 8443 }, () => undefined).then(
        async (forward) => {
          await forward.close();
          throw new Error(`a port-forward to ${podName} opened without a kubelet`);
        },
        (err: FerryError) => err,
      );
    const other = await refusal(OTHER_POD);
    expect([other.code, other.details?.status]).toEqual([ErrorCode.Unauthorized, 403]);
    const proxy = await refusal(UploadProxyService.pod);
    // Past authorization: the apiserver looked for the pod's node (none: no kubelet here).
    expect(proxy.code).not.toBe(ErrorCode.Unauthorized);
    expect(proxy.details?.status).toBe(400);
    expect(proxy.message).toMatch(/does not have a host assigned/);
  });

  test('ferry image-upload, as that user with no URL configured, finds the proxy pod by name and gets past authorization', async () => {
    const lines: string[] = [];
    const err = await reachProxy(undefined, false, { kc: alice.kubeConfig, warn: (line) => lines.push(line) }).then(
      () => undefined,
      (e: FerryError) => e,
    );
    // The Service and the pod read by name (no list of pods or EndpointSlices), the CA read, the forward authorized: the missing kubelet is what stops it.
    expect(err?.message).toMatch(new RegExp(`port-forward to pod ${NS}/${UploadProxyService.pod} port 8443 refused \\(HTTP 400\\)`));
    expect(err?.code).not.toBe(ErrorCode.Unauthorized);
  });
});
