/**
 * The whole Ferry upload stack on one real control plane, for test/integration/upload-e2e.test.ts
 * and bench/upload.ts: `ferry controller` (import, datavolume, upload), `ferry apiserver` behind a
 * real APIService (ExternalName → localhost, as in apiserver.test.ts), the real `ferry uploadproxy`
 * on loopback, and the real `ferry uploadserver` run for each upload pod by a loop playing the
 * kubelet (./upload-kubelet.ts). Every process is stopped by PID in `stop()`.
 */

import { execFile } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ApiregistrationV1Api, CoreV1Api, CustomObjectsApi, KubernetesObjectApi, type KubernetesObject, loadAllYaml, RbacAuthorizationV1Api, type V1Deployment, type V1StatefulSet } from '@kubernetes/client-node';
import { DV_GROUP, DV_PLURAL } from '../../src/api/datavolume.js';
import { UPLOAD_APISERVICE_NAME } from '../../src/api/upload-token-request.js';
import { UPLOAD_TOKEN_PUBLIC_CONFIGMAP, UPLOAD_TOKEN_PUBLIC_KEY } from '../../src/contract/upload-token.js';
import { startControlPlane, type ControlPlane } from './cluster.js';
import { installCrds } from './crds.js';
import { FERRY_BIN, freePort, REPO_ROOT, type RunningProcess, startFerry } from './ferry-process.js';
import { waitFor } from './kubelet.js';
import { startUploadKubelet, type UploadKubelet, type UploadKubeletOptions } from './upload-kubelet.js';

export interface UploadStack {
  readonly cp: ControlPlane;
  readonly core: CoreV1Api;
  readonly custom: CustomObjectsApi;
  readonly kubelet: UploadKubelet;
  readonly proxyPort: number;
  /** https://127.0.0.1:<proxyPort> */
  readonly proxyUrl: string;
  /** With `kubeconfigProxy`: a second proxy on the same servers that reaches the API through a kubeconfig (client-node loaded). */
  readonly kubeconfigProxy?: { readonly port: number; readonly url: string };
  /** A namespace where `user` may make PVCs and DataVolumes and ask for upload tokens (no more). */
  namespaceFor(user: string): Promise<string>;
  stop(): Promise<void>;
}

export interface Run {
  readonly code: number;
  readonly out: string;
}

/** Runs a program with only PATH and HOME from this environment (a user's shell, not the test's). */
export function exec(bin: string, args: readonly string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 180_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(bin, args, { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024, env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof (err as { code?: unknown }).code === 'number' ? (err as { code: number }).code : -1) : 0, out: stdout + stderr });
    });
  });
}

/** `ferry image-upload ARGS --kubeconfig K`. */
export const ferryImageUpload = (kubeconfig: string, args: readonly string[], timeoutMs?: number): Promise<Run> => exec(process.execPath, [FERRY_BIN, 'image-upload', ...args, '--kubeconfig', kubeconfig], {}, timeoutMs);

/**
 * How `ferry uploadproxy` reaches the API in a test: as in its pod (a token of its ServiceAccount
 * and the cluster CA in a directory, KUBERNETES_SERVICE_HOST/PORT: the installed pod's path, with the
 * RBAC of manifests/uploadproxy.yaml), or through a kubeconfig (client-node loaded: a developer's run).
 */
export type ProxyApiAccess = { readonly kubeconfig: string } | { readonly inCluster: { readonly server: string; readonly dir: string } };

/**
 * `ferry uploadproxy`'s environment on loopback, its files in `dir` (signer.pub, proxy.key/.crt,
 * client.key/.crt, server-ca.crt). No cluster DNS here: every server is dialled at `serverPort`;
 * its certificate is still checked for cdi-upload-<pvc>.<ns>.svc.
 */
export function uploadProxyEnv(dir: string, access: ProxyApiAccess, proxyPort: number, serverPort: number, logLevel = 'warn'): NodeJS.ProcessEnv {
  const api = 'kubeconfig' in access
    ? { KUBECONFIG: access.kubeconfig }
    : { KUBERNETES_SERVICE_HOST: new URL(access.inCluster.server).hostname, KUBERNETES_SERVICE_PORT: new URL(access.inCluster.server).port || '443', UPLOADPROXY_SERVICE_ACCOUNT_DIR: access.inCluster.dir };
  return {
    ...api,
    APISERVER_PUBLIC_KEY_FILE: join(dir, 'signer.pub'),
    TLS_KEY_FILE: join(dir, 'proxy.key'),
    TLS_CERT_FILE: join(dir, 'proxy.crt'),
    UPLOAD_SERVER_CLIENT_KEY_FILE: join(dir, 'client.key'),
    UPLOAD_SERVER_CLIENT_CERT_FILE: join(dir, 'client.crt'),
    UPLOAD_SERVER_CA_CERT_FILE: join(dir, 'server-ca.crt'),
    UPLOADPROXY_PORT: String(proxyPort),
    UPLOADPROXY_HOST: '127.0.0.1',
    UPLOADPROXY_SERVER_ADDRESS: `127.0.0.1:${serverPort}`,
    FERRY_LOG_LEVEL: logLevel,
    // The V8 settings the proxy's StatefulSet gives it, so tests and benches run what is installed.
    NODE_OPTIONS: manifestEnv('uploadproxy.yaml', 'uploadproxy', 'NODE_OPTIONS') ?? '',
  };
}

/**
 * The proxy's in-cluster access as its pod would have it: manifests/uploadproxy.yaml's
 * ServiceAccount, ClusterRole and ClusterRoleBinding (in `namespace`), a token for that account
 * from the TokenRequest API, and the cluster CA, written to `<dir>/serviceaccount/`.
 */
export async function proxyServiceAccount(cp: ControlPlane, namespace: string, dir: string): Promise<ProxyApiAccess> {
  const objects = KubernetesObjectApi.makeApiClient(cp.kubeConfig);
  for (const o of manifestObjects('uploadproxy.yaml').filter((o) => ['ServiceAccount', 'ClusterRole', 'ClusterRoleBinding'].includes(o.kind ?? ''))) {
    const text = JSON.stringify(o).replaceAll('"namespace":"ferry-system"', `"namespace":${JSON.stringify(namespace)}`);
    await objects.create(JSON.parse(text) as KubernetesObject);
  }
  const name = manifestObjects('uploadproxy.yaml').find((o) => o.kind === 'ServiceAccount')?.metadata?.name ?? 'ferry-uploadproxy';
  const core = cp.kubeConfig.makeApiClient(CoreV1Api);
  const answer = await core.createNamespacedServiceAccountToken({ namespace, name, body: { spec: { audiences: [], expirationSeconds: 24 * 3600 } } });
  const saDir = join(dir, 'serviceaccount');
  mkdirSync(saDir, { recursive: true });
  writeFileSync(join(saDir, 'token'), answer.status?.token ?? '');
  writeFileSync(join(saDir, 'ca.crt'), Buffer.from(cp.kubeConfig.getCurrentCluster()?.caData ?? '', 'base64'));
  return { inCluster: { server: cp.server, dir: saDir } };
}

/** The value of `name` in the env of container `container` of the workload (Deployment, StatefulSet) in manifests/`file`. */
function manifestEnv(file: string, container: string, name: string): string | undefined {
  const workload = manifestObjects(file).find((o): o is V1Deployment | V1StatefulSet => o.kind === 'Deployment' || o.kind === 'StatefulSet');
  return workload?.spec?.template.spec?.containers.find((c) => c.name === container)?.env?.find((e) => e.name === name)?.value;
}

const b64 = (s: string | undefined): string => Buffer.from(s ?? '', 'base64').toString('utf8');

function manifestObjects(file: string): KubernetesObject[] {
  return loadAllYaml(readFileSync(join(REPO_ROOT, 'manifests', file), 'utf8')) as KubernetesObject[];
}

export async function startUploadStack(dir: string, options: { blockDevice?: UploadKubeletOptions['blockDevice']; serverTimeoutMs?: number; logLevel?: string; kubeconfigProxy?: boolean } = {}): Promise<UploadStack> {
  const cp = await startControlPlane();
  const core = cp.kubeConfig.makeApiClient(CoreV1Api);
  const custom = cp.kubeConfig.makeApiClient(CustomObjectsApi);
  const processes: RunningProcess[] = [];
  let kubelet: UploadKubelet | undefined;
  const stop = async (): Promise<void> => {
    await kubelet?.stop();
    for (const p of processes) p.kill('SIGTERM');
    const results = await Promise.all(processes.map((p) => p.done));
    for (const r of results) if (r && r.code !== 0 && r.code !== null) process.stderr.write(`exit ${r.code}: ${r.stderr.slice(-1500)}\n`);
    await cp.stop();
  };
  try {
    const logLevel = options.logLevel ?? 'warn';
    await installCrds(cp.kubeConfig);
    const ferryNs = await cp.newNamespace('ferry-system');
    const proxyPort = await freePort();
    const proxyUrl = `https://127.0.0.1:${proxyPort}`;
    const secretData = async (namespace: string, name: string): Promise<Record<string, string>> => {
      const secret = await waitFor(`secret ${namespace}/${name}`, () => core.readNamespacedSecret({ namespace, name }).catch(() => undefined), 60_000);
      return Object.fromEntries(Object.entries(secret.data ?? {}).map(([k, v]) => [k, b64(v)]));
    };

    // The aggregated API, as apiserver.test.ts registers it.
    const apiPort = await freePort();
    await core.createNamespacedService({ namespace: ferryNs, body: { metadata: { name: 'ferry-apiserver' }, spec: { type: 'ExternalName', externalName: 'localhost', ports: [{ name: 'https', port: apiPort }] } } });
    const apiService = manifestObjects('apiserver.yaml').find((o) => o.kind === 'APIService') as unknown as { spec: { service: Record<string, unknown> } } & KubernetesObject;
    apiService.spec.service = { name: 'ferry-apiserver', namespace: ferryNs, port: apiPort };
    await cp.kubeConfig.makeApiClient(ApiregistrationV1Api).createAPIService({ body: apiService as never });
    const objects = KubernetesObjectApi.makeApiClient(cp.kubeConfig);
    for (const o of manifestObjects('apiserver-rbac.yaml').filter((o) => o.metadata?.name?.startsWith('ferry:'))) await objects.create(o);
    processes.push(startFerry(['apiserver', '--kubeconfig', cp.kubeconfigPath, '--namespace', ferryNs, '--service', 'ferry-apiserver', '--port', String(apiPort), '--bind-address', '127.0.0.1'], {}, 3_600_000));
    processes.push(
      startFerry(
        ['controller', '--kubeconfig', cp.kubeconfigPath, '--controllers', 'import,upload,datavolume', '--leader-elect', 'false', '--health-port', '0', '--ferry-namespace', ferryNs, '--importer-image', 'localhost/ferry:test', '--retry-backoff-ms', '300', '--log-level', logLevel, '--upload-proxy-url', proxyUrl],
        {},
        3_600_000,
      ),
    );
    const client = await secretData(ferryNs, 'ferry-uploadproxy-client');
    const serving = await secretData(ferryNs, 'ferry-uploadproxy-tls');
    const publicKey = await waitFor('the token public key', async () => (await core.readNamespacedConfigMap({ namespace: ferryNs, name: UPLOAD_TOKEN_PUBLIC_CONFIGMAP }).catch(() => undefined))?.data?.[UPLOAD_TOKEN_PUBLIC_KEY], 60_000);
    for (const [name, text] of Object.entries({ 'client.key': client['tls.key'], 'client.crt': client['tls.crt'], 'server-ca.crt': client['ca.crt'], 'proxy.key': serving['tls.key'], 'proxy.crt': serving['tls.crt'], 'signer.pub': publicKey })) {
      writeFileSync(join(dir, name), text ?? '');
    }
    const serverPort = await freePort();
    // As its pod runs it: in-cluster, with its ServiceAccount's token and RBAC.
    const access = await proxyServiceAccount(cp, ferryNs, dir);
    processes.push(startFerry(['uploadproxy'], uploadProxyEnv(dir, access, proxyPort, serverPort, logLevel), 3_600_000));
    let kubeconfigProxy: UploadStack['kubeconfigProxy'];
    if (options.kubeconfigProxy) {
      const port = await freePort();
      processes.push(startFerry(['uploadproxy'], uploadProxyEnv(dir, { kubeconfig: cp.kubeconfigPath }, port, serverPort, logLevel), 3_600_000));
      kubeconfigProxy = { port, url: `https://127.0.0.1:${port}` };
    }
    kubelet = startUploadKubelet(core, { serverPort, dir, ...(options.blockDevice ? { blockDevice: options.blockDevice } : {}), ...(options.serverTimeoutMs ? { serverTimeoutMs: options.serverTimeoutMs } : {}) });
    const apireg = cp.kubeConfig.makeApiClient(ApiregistrationV1Api);
    await waitFor('the APIService Available', async () => ((await apireg.readAPIService({ name: UPLOAD_APISERVICE_NAME })).status?.conditions?.find((c) => c.type === 'Available')?.status === 'True' ? true : undefined), 60_000, 500);

    const rbac = cp.kubeConfig.makeApiClient(RbacAuthorizationV1Api);
    const namespaceFor = async (user: string): Promise<string> => {
      const ns = await cp.newNamespace('up');
      await rbac.createNamespacedRole({
        namespace: ns,
        body: {
          metadata: { name: 'uploader' },
          rules: [
            { apiGroups: [''], resources: ['persistentvolumeclaims'], verbs: ['get', 'list', 'watch', 'create'] },
            { apiGroups: [DV_GROUP], resources: [DV_PLURAL], verbs: ['get', 'list', 'watch', 'create'] },
            // As `edit`/`view`: virtctl lists the PVC's events while it waits.
            { apiGroups: [''], resources: ['events'], verbs: ['get', 'list', 'watch'] },
          ],
        },
      });
      const subjects = [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: user }];
      await rbac.createNamespacedRoleBinding({ namespace: ns, body: { metadata: { name: 'uploader' }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'uploader' }, subjects } });
      await rbac.createNamespacedRoleBinding({ namespace: ns, body: { metadata: { name: 'tokens' }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'ClusterRole', name: 'ferry:upload-token-requester' }, subjects } });
      return ns;
    };
    return { cp, core, custom, kubelet, proxyPort, proxyUrl, ...(kubeconfigProxy ? { kubeconfigProxy } : {}), namespaceFor, stop };
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
}
