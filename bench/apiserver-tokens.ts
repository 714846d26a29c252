/**
 * Benchmark: upload tokens from `ferry apiserver` on the real kube-apiserver. N token requests
 * through the kube-apiserver (APIService → front proxy → SubjectAccessReview → sign) as a real
 * RBAC user, then N straight to the server with the front-proxy certificate; latency percentiles,
 * rate, and the server process's peak RSS.
 * Run: npm run build && node dist/bench/apiserver-tokens.js [N]
 */

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { request } from 'node:https';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiregistrationV1Api, CoreV1Api, CustomObjectsApi, RbacAuthorizationV1Api } from '@kubernetes/client-node';
import { startControlPlane } from '../test/helpers/cluster.js';
import { FERRY_BIN, freePort } from '../test/helpers/ferry-process.js';
import { newUploadTokenRequest, tokenOf, UPLOAD_APISERVICE_NAME, UPLOAD_GROUP, UPLOAD_VERSION } from '../src/api/upload-token-request.js';

const peakRssMiB = (pid: number): number => Number(/VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
const pct = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((sorted.length * p) / 100))]!;

function summary(what: string, ms: number[], totalMs: number): string {
  const s = [...ms].sort((a, b) => a - b);
  return `${what}: n=${s.length} rate=${((s.length * 1000) / totalMs).toFixed(0)}/s p50=${pct(s, 50).toFixed(1)}ms p90=${pct(s, 90).toFixed(1)}ms p99=${pct(s, 99).toFixed(1)}ms`;
}

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? 300);
  const cp = await startControlPlane();
  const core = cp.kubeConfig.makeApiClient(CoreV1Api);
  const ns = await cp.newNamespace('ferry-system');
  const target = await cp.newNamespace('uploads');
  const port = await freePort();
  await core.createNamespacedService({ namespace: ns, body: { metadata: { name: 'ferry-apiserver' }, spec: { type: 'ExternalName', externalName: 'localhost', ports: [{ port }] } } });
  const apireg = cp.kubeConfig.makeApiClient(ApiregistrationV1Api);
  await apireg.createAPIService({
    body: { metadata: { name: UPLOAD_APISERVICE_NAME }, spec: { group: UPLOAD_GROUP, version: UPLOAD_VERSION, groupPriorityMinimum: 1000, versionPriority: 15, service: { name: 'ferry-apiserver', namespace: ns, port } } },
  });
  await cp.kubeConfig.makeApiClient(RbacAuthorizationV1Api).createNamespacedRole({
    namespace: target,
    body: { metadata: { name: 'tokens' }, rules: [{ apiGroups: [UPLOAD_GROUP], resources: ['uploadtokenrequests'], verbs: ['create'] }] },
  });
  await cp.kubeConfig.makeApiClient(RbacAuthorizationV1Api).createNamespacedRoleBinding({
    namespace: target,
    body: { metadata: { name: 'tokens' }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name: 'tokens' }, subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: 'alice' }] },
  });
  const server = spawn(process.execPath, [FERRY_BIN, 'apiserver', '--kubeconfig', cp.kubeconfigPath, '--namespace', ns, '--port', String(port), '--bind-address', '127.0.0.1', '--log-level', 'warn'], {
    stdio: ['ignore', 'ignore', 'inherit'],
    // FERRY_BENCH_NODE_OPTIONS: V8 settings for the server (manifests/apiserver.yaml's, to compare).
    env: { ...process.env, NODE_OPTIONS: process.env.FERRY_BENCH_NODE_OPTIONS ?? '' },
  });
  try {
    for (let i = 0; i < 120; i++) {
      const svc = await apireg.readAPIService({ name: UPLOAD_APISERVICE_NAME });
      if (svc.status?.conditions?.some((c) => c.type === 'Available' && c.status === 'True')) break;
      await sleep(500);
    }
    const idleRss = peakRssMiB(server.pid!);
    const alice = cp.userKubeconfig('alice').kubeConfig.makeApiClient(CustomObjectsApi);
    const body = newUploadTokenRequest('disk1');
    const through: number[] = [];
    let t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const s = performance.now();
      const answer = await alice.createNamespacedCustomObject({ group: UPLOAD_GROUP, version: UPLOAD_VERSION, namespace: target, plural: 'uploadtokenrequests', body });
      if (!tokenOf(answer)) throw new Error('no token');
      through.push(performance.now() - s);
    }
    const throughTotal = performance.now() - t0;

    const caSecret = await core.readNamespacedSecret({ namespace: ns, name: 'ferry-apiserver-ca' });
    const tls = { ca: Buffer.from(caSecret.data!['tls.crt']!, 'base64'), cert: readFileSync(cp.certs.frontProxyClient.cert), key: readFileSync(cp.certs.frontProxyClient.key), servername: `ferry-apiserver.${ns}.svc` };
    const payload = JSON.stringify(body);
    const directOne = (): Promise<void> =>
      new Promise((resolve, reject) => {
        const req = request(
          { host: '127.0.0.1', port, method: 'POST', path: `/apis/${UPLOAD_GROUP}/${UPLOAD_VERSION}/namespaces/${target}/uploadtokenrequests`, ...tls, headers: { 'content-type': 'application/json', 'x-remote-user': 'alice', 'x-remote-group': 'system:authenticated' } },
          (res) => {
            res.resume();
            res.on('end', () => (res.statusCode === 201 ? resolve() : reject(new Error(`status ${res.statusCode}`))));
          },
        );
        req.on('error', reject);
        req.end(payload);
      });
    const direct: number[] = [];
    t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const s = performance.now();
      await directOne();
      direct.push(performance.now() - s);
    }
    const directTotal = performance.now() - t0;
    process.stdout.write(`${summary('through the kube-apiserver (client-node, user alice)', through, throughTotal)}\n`);
    process.stdout.write(`${summary('direct with the front-proxy certificate (new TLS connection each)', direct, directTotal)}\n`);
    process.stdout.write(`ferry apiserver peak RSS: ${idleRss.toFixed(1)} MiB after start, ${peakRssMiB(server.pid!).toFixed(1)} MiB after the requests\n`);
  } finally {
    server.kill('SIGTERM');
    await new Promise((r) => server.once('exit', r));
    await cp.stop();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});
