/**
 * The upload controller (`ferry controller` as a process) against a real kube-apiserver + etcd,
 * with the real upload server and the real upload proxy. There is no kubelet: the test plays its
 * part — it reads the pod the controller made, runs `ferry uploadserver` locally with that pod's
 * environment and the certificate Secret the controller made for it (a temp dir standing in for
 * each volume), reports Running/Ready and the real termination message through the API. The proxy
 * runs with the controller's Secrets, a kubeconfig and a token signed by a test key.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { generateKeyPairSync, type KeyObject } from 'node:crypto';
import { createReadStream, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions, StorageV1Api, type V1Pod } from '@kubernetes/client-node';
import { setTimeout as sleep } from 'node:timers/promises';
import { uploadProxyEnv } from '../helpers/upload-stack.js';
import { BOTH_IMPORT_AND_UPLOAD } from '../../controller/upload/plan.js';
import { Annotation, UploadAnnotation } from '../../src/api/cdi.js';
import { DV_GROUP, DV_PLURAL, DV_VERSION } from '../../src/api/datavolume.js';
import { UploadServerEnv } from '../../src/contract/upload-server.js';
import { signUploadToken, uploadClaims } from '../../src/contract/upload-token.js';
import { startControlPlane, type ControlPlane } from '../helpers/cluster.js';
import { installCrds } from '../helpers/crds.js';
import { compress, convertImage, expectSameDisk, makeRawDisk, makeTar, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { FERRY_BIN, freePort, type RunningProcess, startFerry } from '../helpers/ferry-process.js';
import { annotationsWhen, pvcBody } from '../helpers/import-harness.js';
import { setPodStatus, waitFor } from '../helpers/kubelet.js';
import { type ChildProcess, spawn } from 'node:child_process';

let cp: ControlPlane;
let core: CoreV1Api;
let custom: CustomObjectsApi;
let dir: string;
let ferryNs: string;
let controller: RunningProcess;
let proxy: RunningProcess;
let proxyPort: number;
let serverPort: number;
let proxyCa: string;
let signer: KeyObject;
/** Upload servers still running, stopped by PID in afterAll if a test fails before they exit. */
const servers = new Set<ChildProcess>();

const b64 = (s: string | undefined): string => Buffer.from(s ?? '', 'base64').toString('utf8');

async function secretData(namespace: string, name: string): Promise<Record<string, string>> {
  const secret = await waitFor(`secret ${namespace}/${name}`, () => core.readNamespacedSecret({ namespace, name }).catch(() => undefined), 30_000);
  return Object.fromEntries(Object.entries(secret.data ?? {}).map(([k, v]) => [k, b64(v)]));
}

beforeAll(async () => {
  cp = await startControlPlane();
  core = cp.kubeConfig.makeApiClient(CoreV1Api);
  custom = cp.kubeConfig.makeApiClient(CustomObjectsApi);
  await installCrds(cp.kubeConfig);
  dir = tempDir('ferry-upload-ctl-');
  ferryNs = await cp.newNamespace('ferry');
  makeRawDisk(join(dir, 'disk.raw'), 8 * MiB);
  convertImage(join(dir, 'disk.raw'), 'qcow2', join(dir, 'disk.qcow2'));
  compress('xz', join(dir, 'disk.qcow2'), join(dir, 'disk.qcow2.xz'));
  await makeTar(join(dir, 'root.tar'), [{ name: 'etc', type: 'directory' }, { name: 'etc/hostname', content: 'uploaded\n' }, { name: 'README', content: 'an archive upload\n' }]);

  controller = startFerry(
    ['controller', '--kubeconfig', cp.kubeconfigPath, '--controllers', 'import,upload,datavolume', '--leader-elect', 'false', '--health-port', '0', '--ferry-namespace', ferryNs, '--importer-image', 'localhost/ferry:test', '--retry-backoff-ms', '300', '--log-level', 'warn'],
    {},
    600_000,
  );
  // The controller makes the CAs and the proxy's Secrets at start.
  const client = await secretData(ferryNs, 'ferry-uploadproxy-client');
  const serving = await secretData(ferryNs, 'ferry-uploadproxy-tls');
  proxyCa = serving['ca.crt'] ?? '';
  for (const [name, text] of Object.entries({ 'client.key': client['tls.key'], 'client.crt': client['tls.crt'], 'server-ca.crt': client['ca.crt'], 'proxy.key': serving['tls.key'], 'proxy.crt': serving['tls.crt'] })) {
    writeFileSync(join(dir, name), text ?? '');
  }
  const keys = generateKeyPairSync('rsa', { modulusLength: 2048 });
  signer = keys.privateKey;
  writeFileSync(join(dir, 'signer.pub'), keys.publicKey.export({ type: 'spki', format: 'pem' }));
  proxyPort = await freePort();
  serverPort = await freePort();
  proxy = startFerry(['uploadproxy'], uploadProxyEnv(dir, { kubeconfig: cp.kubeconfigPath }, proxyPort, serverPort), 600_000);
  await waitFor('the proxy', async () => ((await send('/healthz', 'GET')).status === 200 ? true : undefined), 20_000);
}, 180_000);

afterAll(async () => {
  for (const child of servers) child.kill('SIGKILL');
  proxy?.kill('SIGTERM');
  controller?.kill('SIGTERM');
  await Promise.all([proxy?.done, controller?.done]);
  await cp?.stop();
  if (dir) removeDir(dir);
});

/** One HTTPS request to the proxy, verified against the proxy CA the controller published. */
function send(path: string, method: string, options: { token?: string; file?: string } = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve) => {
    const headers: Record<string, string | number> = {};
    if (options.token) headers.authorization = `Bearer ${options.token}`;
    if (options.file) Object.assign(headers, { 'content-type': 'application/octet-stream', 'content-length': statSync(options.file).size });
    const req = request({ host: '127.0.0.1', port: proxyPort, path, method, headers, ca: proxyCa, servername: `ferry-uploadproxy.${ferryNs}.svc`, agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', (err) => resolve({ status: 0, body: err.message }));
    if (options.file) createReadStream(options.file).pipe(req);
    else req.end();
  });
}

const token = (ns: string, pvc: string): string => signUploadToken(uploadClaims(ns, pvc, Date.now()), signer);

async function uploadPod(ns: string, pvc: string, notUid?: string): Promise<V1Pod> {
  return waitFor(`upload pod for ${pvc}`, async () => {
    const pod = await core.readNamespacedPod({ namespace: ns, name: `cdi-upload-${pvc}` }).catch(() => undefined);
    return pod && pod.metadata?.uid !== notUid && !pod.metadata?.deletionTimestamp ? pod : undefined;
  }, 30_000);
}

const gone = (what: string, read: () => Promise<unknown>) => waitFor(`${what} deleted`, async () => ((await read().then(() => true, () => false)) ? undefined : true), 30_000);

interface ServerRun {
  readonly volumes: string;
  readonly done: Promise<{ code: number; termination: string }>;
}

/** The kubelet's part: the pod's container run locally, its volumes and Secret as directories. */
async function runServer(pod: V1Pod, volumes: string): Promise<ServerRun> {
  const ns = pod.metadata?.namespace ?? '';
  const tlsDir = join(volumes, 'tls');
  mkdirSync(join(volumes, 'data'), { recursive: true });
  mkdirSync(join(volumes, 'scratch'), { recursive: true });
  mkdirSync(tlsDir, { recursive: true });
  const secretName = pod.spec?.volumes?.find((v) => v.name === 'tls')?.secret?.secretName ?? '';
  for (const [key, value] of Object.entries(await secretData(ns, secretName))) writeFileSync(join(tlsDir, key), value);
  const env: Record<string, string> = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', FERRY_LOG_LEVEL: 'warn' };
  for (const e of pod.spec?.containers?.[0]?.env ?? []) {
    if (e.value === undefined) continue;
    env[e.name] = e.value
      .replace(/^\/data(?=\/|$)/, join(volumes, 'data'))
      .replace(/^\/scratch(?=\/|$)/, join(volumes, 'scratch'))
      .replace(/^\/etc\/ferry\/upload-tls(?=\/|$)/, tlsDir);
  }
  Object.assign(env, { [UploadServerEnv.Port]: String(serverPort), [UploadServerEnv.Host]: '127.0.0.1', [UploadServerEnv.TerminationLog]: join(volumes, 'termination-log') });
  const child = spawn(process.execPath, [FERRY_BIN, 'uploadserver'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
  servers.add(child);
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
  const done = new Promise<{ code: number; termination: string }>((resolve) =>
    child.on('close', (code) => {
      clearTimeout(timer);
      servers.delete(child);
      let termination = stderr.slice(-2000);
      try {
        termination = readFileSync(join(volumes, 'termination-log'), 'utf8');
      } catch {
        // no termination message: the stderr tail stands in, as FallbackToLogsOnError would
      }
      resolve({ code: code ?? 1, termination });
    }),
  );
  return { volumes, done };
}

/** The kubelet's readiness probe: HTTPS GET /healthz, the certificate not checked. */
function probe(): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port: serverPort, path: '/healthz', rejectUnauthorized: false, agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.end();
  });
}

/** The pod made Running and, once its probe passes, Ready by "the kubelet"; waits for the PVC to say so. */
async function becomeReady(pod: V1Pod, pvc: string): Promise<void> {
  await setPodStatus(core, pod, 'Running', { podIP: '127.0.0.1', ready: false });
  await waitFor('the readiness probe', async () => ((await probe()) ? true : undefined), 20_000);
  await setPodStatus(core, pod, 'Running', { podIP: '127.0.0.1', ready: true });
  await annotationsWhen(core, pod.metadata?.namespace ?? '', pvc, (a) => a[UploadAnnotation.PodReady] === 'true');
}

/** The server's exit reported as the pod's status. */
async function exited(pod: V1Pod, run: ServerRun): Promise<{ code: number; termination: string }> {
  const result = await run.done;
  await setPodStatus(core, pod, result.code === 0 ? 'Succeeded' : 'Failed', { terminated: { exitCode: result.code, message: result.termination } });
  return result;
}

/** PVC → pod (→ a second pod with scratch when the format needs it) → upload through the proxy → Succeeded and cleaned up. */
async function uploadTarget(ns: string, pvc: string, file: string, needsScratch: boolean): Promise<string> {
  let pod = await uploadPod(ns, pvc);
  let volumes = join(dir, `${ns}-${pvc}`);
  let run = await runServer(pod, volumes);
  await becomeReady(pod, pvc);
  if (needsScratch) {
    const first = await send('/v1beta1/upload', 'POST', { token: token(ns, pvc), file });
    expect(first.status).toBe(500);
    expect(first.body).toContain('needs scratch space');
    expect(JSON.parse((await exited(pod, run)).termination)).toMatchObject({ scratchSpaceRequired: true });
    await annotationsWhen(core, ns, pvc, (a) => a[Annotation.RequiresScratch] === 'true');
    const oldUid = pod.metadata?.uid;
    pod = await uploadPod(ns, pvc, oldUid);
    expect(pod.spec?.volumes?.find((v) => v.name === 'scratch')?.persistentVolumeClaim?.claimName).toBe(`${pvc}-scratch`);
    await waitFor('scratch PVC', () => core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: `${pvc}-scratch` }).catch(() => undefined));
    volumes = join(dir, `${ns}-${pvc}-2`);
    run = await runServer(pod, volumes);
    await becomeReady(pod, pvc);
  }
  const answer = await send('/v1beta1/upload', 'POST', { token: token(ns, pvc), file });
  expect(answer).toEqual({ status: 200, body: '' });
  const result = await exited(pod, run);
  expect(result.code).toBe(0);
  const a = await annotationsWhen(core, ns, pvc, (x) => x[Annotation.PodPhase] === 'Succeeded');
  expect(a).toMatchObject({ [UploadAnnotation.PodReady]: 'false', [Annotation.RunningReason]: 'Completed', [Annotation.RunningMessage]: 'Upload Complete' });
  await gone('the upload pod', () => core.readNamespacedPod({ namespace: ns, name: `cdi-upload-${pvc}` }));
  await gone('the upload Service', () => core.readNamespacedService({ namespace: ns, name: `cdi-upload-${pvc}` }));
  await gone('the TLS Secret', () => core.readNamespacedSecret({ namespace: ns, name: `cdi-upload-${pvc}-tls` }));
  if (needsScratch) {
    // Deleted: the pvc-protection finalizer keeps it visible (no controller-manager here), marked for deletion.
    await waitFor('the scratch PVC deleted', async () => {
      const scratch = await core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: `${pvc}-scratch` }).catch(() => undefined);
      return scratch === undefined || scratch.metadata?.deletionTimestamp ? true : undefined;
    }, 30_000);
  }
  // Finished: the proxy refuses another upload (CDI's 503), from the PVC's annotations.
  const again = await send('/v1beta1/upload', 'POST', { token: token(ns, pvc), file });
  expect(again.status).toBe(503);
  expect(again.body).toContain('already finished uploading');
  return volumes;
}

describe('upload controller on a real apiserver, with the real upload server and proxy', () => {
  test('an upload target gets a restricted server pod, a Service on 8443, a certificate for its Service names, and CDI annotations', async () => {
    const ns = await cp.newNamespace();
    const pvc = await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: pvcBody('spec', { [UploadAnnotation.Target]: '' }) });
    const pod = await uploadPod(ns, 'spec');
    expect(pod.metadata?.labels).toMatchObject({ app: 'containerized-data-importer', 'cdi.kubevirt.io': 'cdi-upload-server', service: 'cdi-upload-spec' });
    expect(pod.metadata?.ownerReferences?.[0]).toMatchObject({ kind: 'PersistentVolumeClaim', name: 'spec', uid: pvc.metadata?.uid, controller: true });
    const spec = pod.spec!;
    const c = spec.containers[0]!;
    expect({ restartPolicy: spec.restartPolicy, image: c.image, args: c.args }).toEqual({ restartPolicy: 'Never', image: 'localhost/ferry:test', args: ['uploadserver'] });
    expect(spec.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    expect(c.securityContext).toEqual({ allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] }, runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    expect(c.readinessProbe?.httpGet).toMatchObject({ path: '/healthz', port: 8443, scheme: 'HTTPS' });
    expect(spec.volumes?.map((v) => v.name).sort()).toEqual(['data', 'tls']);
    const env = Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value]));
    expect(env).toMatchObject({ DESTINATION: '/data/disk.img', UPLOAD_IMAGE_SIZE: String(64 * MiB), CLIENT_NAME: 'client.upload-server.cdi.kubevirt.io', UPLOAD_PORT: '8443' });
    expect(Date.parse(env.DEADLINE ?? '')).toBeGreaterThan(Date.now());
    const service = await core.readNamespacedService({ namespace: ns, name: 'cdi-upload-spec' });
    expect(service.spec?.ports?.[0]).toMatchObject({ port: 8443, targetPort: 8443 });
    expect(service.spec?.selector).toEqual({ service: 'cdi-upload-spec' });
    const tls = await secretData(ns, 'cdi-upload-spec-tls');
    const { X509Certificate } = await import('node:crypto');
    const cert = new X509Certificate(tls['tls.crt'] ?? '');
    expect(cert.subjectAltName).toContain(`DNS:cdi-upload-spec.${ns}.svc`);
    expect(cert.checkIssued(new X509Certificate((await secretData(ferryNs, 'ferry-upload-server-ca'))['tls.crt'] ?? ''))).toBe(true);
    expect(tls['client-ca.crt']).toBe((await secretData(ferryNs, 'ferry-upload-client-ca'))['ca-bundle.crt']);
    const a = await annotationsWhen(core, ns, 'spec', (x) => x[Annotation.PodPhase] === 'Pending');
    expect(a).toMatchObject({ [UploadAnnotation.PodName]: 'cdi-upload-spec', [UploadAnnotation.PodReady]: 'false', [Annotation.PodRestarts]: '0' });
    await setPodStatus(core, pod, 'Running', { ready: false });
    await annotationsWhen(core, ns, 'spec', (x) => x[Annotation.PodPhase] === 'Running' && x[Annotation.RunningCondition] === 'true' && x[UploadAnnotation.PodReady] === 'false');
    await setPodStatus(core, pod, 'Running', { ready: true });
    await annotationsWhen(core, ns, 'spec', (x) => x[UploadAnnotation.PodReady] === 'true');
  }, 60_000);

  test('raw, qcow2, qcow2.xz and archive uploads through proxy and server land byte-identical', async () => {
    const ns = await cp.newNamespace();
    for (const name of ['raw', 'qcow2', 'xz']) await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: pvcBody(name, { [UploadAnnotation.Target]: '', [Annotation.ContentType]: 'kubevirt' }) });
    await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: pvcBody('tree', { [UploadAnnotation.Target]: '', [Annotation.ContentType]: 'archive' }) });
    const raw = await uploadTarget(ns, 'raw', join(dir, 'disk.raw'), false);
    expect(expectSameDisk(join(raw, 'data', 'disk.img'), join(dir, 'disk.raw'))).toBe(true);
    const qcow2 = await uploadTarget(ns, 'qcow2', join(dir, 'disk.qcow2'), true);
    expect(expectSameDisk(join(qcow2, 'data', 'disk.img'), join(dir, 'disk.raw'))).toBe(true);
    const xz = await uploadTarget(ns, 'xz', join(dir, 'disk.qcow2.xz'), true);
    expect(expectSameDisk(join(xz, 'data', 'disk.img'), join(dir, 'disk.raw'))).toBe(true);
    const tree = await uploadTarget(ns, 'tree', join(dir, 'root.tar'), false);
    expect(readFileSync(join(tree, 'data', 'etc', 'hostname'), 'utf8')).toBe('uploaded\n');
    expect(readFileSync(join(tree, 'data', 'README'), 'utf8')).toBe('an archive upload\n');
    const reasons = (await core.listNamespacedEvent({ namespace: ns, fieldSelector: 'involvedObject.name=qcow2' })).items.map((e) => e.reason);
    expect(reasons).toEqual(expect.arrayContaining(['UploadReady', 'ScratchSpaceRequired', 'UploadSucceeded']));
  }, 240_000);

  test("the proxy's 503 rows from the API: a missing PVC, a PVC that is not an upload target", async () => {
    const ns = await cp.newNamespace();
    await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: pvcBody('plain', {}) });
    const missing = await send('/v1beta1/upload', 'POST', { token: token(ns, 'nope'), file: join(dir, 'disk.raw') });
    expect(missing.status).toBe(503);
    expect(missing.body).toContain(`${ns}/nope that does not exist`);
    const plain = await send('/v1beta1/upload-async', 'POST', { token: token(ns, 'plain'), file: join(dir, 'disk.raw') });
    expect(plain.status).toBe(503);
    expect(plain.body).toContain('is not an upload target');
  }, 60_000);

  test('the proxy waits (at most 10 s) for the server pod: 503 when it stays not ready, forwarded once it becomes ready', async () => {
    const ns = await cp.newNamespace();
    await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: pvcBody('late', { [UploadAnnotation.Target]: '' }) });
    const pod = await uploadPod(ns, 'late');
    await annotationsWhen(core, ns, 'late', (a) => a[UploadAnnotation.PodReady] === 'false');
    const never = await send('/v1beta1/upload', 'POST', { token: token(ns, 'late'), file: join(dir, 'disk.raw') });
    expect(never.status).toBe(503);
    expect(never.body).toContain('is not ready');
    // Asked while not ready; the server comes up and turns Ready during the proxy's wait.
    const answer = send('/v1beta1/upload', 'POST', { token: token(ns, 'late'), file: join(dir, 'disk.raw') });
    const run = await runServer(pod, join(dir, `${ns}-late`));
    await becomeReady(pod, 'late');
    expect(await answer).toEqual({ status: 200, body: '' });
    expect((await exited(pod, run)).code).toBe(0);
    expect(expectSameDisk(join(dir, `${ns}-late`, 'data', 'disk.img'), join(dir, 'disk.raw'))).toBe(true);
  }, 90_000);

  test('a DataVolume with source.upload: UploadScheduled → UploadReady → Succeeded', async () => {
    const ns = await cp.newNamespace();
    await custom.createNamespacedCustomObject({
      group: DV_GROUP,
      version: DV_VERSION,
      namespace: ns,
      plural: DV_PLURAL,
      body: { apiVersion: `${DV_GROUP}/${DV_VERSION}`, kind: 'DataVolume', metadata: { name: 'up' }, spec: { source: { upload: {} }, pvc: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '64Mi' } } } } },
    });
    const phase = async (want: string) =>
      waitFor(`DataVolume phase ${want}`, async () => {
        const dv = (await custom.getNamespacedCustomObject({ group: DV_GROUP, version: DV_VERSION, namespace: ns, plural: DV_PLURAL, name: 'up' })) as { status?: { phase?: string } };
        return dv.status?.phase === want ? true : undefined;
      }, 30_000);
    await annotationsWhen(core, ns, 'up', (a) => a[UploadAnnotation.Target] === '');
    await phase('UploadScheduled');
    const pod = await uploadPod(ns, 'up');
    const run = await runServer(pod, join(dir, `${ns}-up`));
    await becomeReady(pod, 'up');
    await phase('UploadReady');
    expect((await send('/v1beta1/upload', 'POST', { token: token(ns, 'up'), file: join(dir, 'disk.raw') })).status).toBe(200);
    expect((await exited(pod, run)).code).toBe(0);
    await phase('Succeeded');
    expect(expectSameDisk(join(dir, `${ns}-up`, 'data', 'disk.img'), join(dir, 'disk.raw'))).toBe(true);
  }, 90_000);

  test('WaitForFirstConsumer: no upload server until the PVC binds (CDI\'s bound condition, one event, the DataVolume\'s phase), or at once with immediate binding', async () => {
    const ns = await cp.newNamespace();
    const storage = cp.kubeConfig.makeApiClient(StorageV1Api);
    const className = `${ns}-local`;
    await storage.createStorageClass({ body: { metadata: { name: className }, provisioner: 'kubernetes.io/no-provisioner', volumeBindingMode: 'WaitForFirstConsumer' } });
    try {
      await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: pvcBody('later', { [UploadAnnotation.Target]: '' }, { storageClassName: className }) });
      await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: pvcBody('now', { [UploadAnnotation.Target]: '', [Annotation.ImmediateBinding]: '' }, { storageClassName: className }) });
      await custom.createNamespacedCustomObject({
        group: DV_GROUP,
        version: DV_VERSION,
        namespace: ns,
        plural: DV_PLURAL,
        body: { apiVersion: `${DV_GROUP}/${DV_VERSION}`, kind: 'DataVolume', metadata: { name: 'dvlater' }, spec: { source: { upload: {} }, storage: { storageClassName: className, resources: { requests: { storage: '64Mi' } } } } },
      });
      const a = await annotationsWhen(core, ns, 'later', (x) => x[Annotation.BoundReason] === 'WaitForFirstConsumer');
      expect(a[Annotation.BoundCondition]).toBe('false');
      expect(a[Annotation.BoundMessage]).toContain(`storage class ${className} binds on first use`);
      expect(a[UploadAnnotation.PodReady]).toBe('false');
      // With immediate binding asked for, the upload server is the first consumer.
      await uploadPod(ns, 'now');
      await waitFor('DataVolume phase WaitForFirstConsumer', async () => {
        const dv = (await custom.getNamespacedCustomObject({ group: DV_GROUP, version: DV_VERSION, namespace: ns, plural: DV_PLURAL, name: 'dvlater' })) as { status?: { phase?: string } };
        return dv.status?.phase === 'WaitForFirstConsumer' ? true : undefined;
      }, 30_000);
      await sleep(2000);
      expect((await core.listNamespacedPod({ namespace: ns })).items.map((p) => p.metadata?.name)).toEqual(['cdi-upload-now']);
      const events = (await core.listNamespacedEvent({ namespace: ns, fieldSelector: 'involvedObject.name=later' })).items;
      expect(events.filter((e) => e.reason === 'WaitForFirstConsumer')).toHaveLength(1);

      // A consumer was scheduled: the PV binder binds the claim (played here through the status subresource).
      await core.patchNamespacedPersistentVolumeClaimStatus({ namespace: ns, name: 'later', body: { status: { phase: 'Bound' } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
      await uploadPod(ns, 'later');
      const after = await annotationsWhen(core, ns, 'later', (x) => x[Annotation.BoundReason] === undefined);
      expect(after[Annotation.BoundCondition]).toBeUndefined();
      expect(after[Annotation.PodPhase]).toBe('Pending');
    } finally {
      await storage.deleteStorageClass({ name: className });
    }
  }, 90_000);

  test('a PVC annotated for an import and an upload: refused once (INVALID_SPEC, a Warning event, the running condition), neither an importer nor an upload pod', async () => {
    const ns = await cp.newNamespace();
    await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: pvcBody('both', { [UploadAnnotation.Target]: '', [Annotation.Endpoint]: 'http://127.0.0.1:9/disk.img' }) });
    const a = await annotationsWhen(core, ns, 'both', (x) => x[Annotation.RunningReason] === BOTH_IMPORT_AND_UPLOAD);
    expect(a).toMatchObject({ [Annotation.PodPhase]: 'Failed', [Annotation.ErrorCode]: 'INVALID_SPEC', [Annotation.RunningCondition]: 'false', [UploadAnnotation.PodReady]: 'false' });
    expect(a[Annotation.RunningMessage]).toMatch(/asks for an import .* and for an upload/);
    const version = (await core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: 'both' })).metadata?.resourceVersion;
    // Both controllers have had time to act (the import controller starts a pod within a second otherwise).
    await sleep(3000);
    expect((await core.listNamespacedPod({ namespace: ns })).items).toEqual([]);
    expect((await core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: 'both' })).metadata?.resourceVersion).toBe(version);
    const events = (await core.listNamespacedEvent({ namespace: ns, fieldSelector: 'involvedObject.name=both' })).items;
    expect(events.map((e) => [e.type, e.reason])).toEqual([['Warning', BOTH_IMPORT_AND_UPLOAD]]);
    expect(events[0]?.message).toContain('INVALID_SPEC');
  }, 60_000);
});
