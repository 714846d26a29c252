/**
 * The import controller against a real kube-apiserver + etcd. There is no kubelet: the tests play
 * its part through the API, and the fullest test runs the real importer program with the pod's
 * environment and reports its real termination message as the pod's status.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { join } from 'node:path';
import { CoreV1Api, CoordinationV1Api, PatchStrategy, setHeaderOptions, StorageV1Api, type V1PersistentVolumeClaim, type V1Pod } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { Annotation } from '../../src/api/cdi.js';
import { silentLogger } from '../../src/logging.js';
import { encodeTermination } from '../../src/contract/termination.js';
import { type ControllerConfig, DEFAULT_CONFIG } from '../../controller/config.js';
import { ImportController } from '../../controller/import/import-controller.js';
import { LeaderElector } from '../../controller/runtime/leader-election.js';
import { startControlPlane, type ControlPlane } from '../helpers/cluster.js';
import { convertImage, expectSameDisk, makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { annotationsWhen, importerPod, newImportController, pvcBody, testControllerConfig } from '../helpers/import-harness.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { runImporterLocally, setPodStatus, waitFor } from '../helpers/kubelet.js';

let cp: ControlPlane;
let core: CoreV1Api;
let controller: ImportController;
let config: ControllerConfig;
let dir: string;
let server: TestServer;

const SUCCESS = encodeTermination({ kind: 'success', message: 'Import Complete', scratchSpaceRequired: false, preallocationApplied: false });
const failure = (code: string, retryable: boolean): string => encodeTermination({ kind: 'failure', code: code as never, message: `${code} from the test`, retryable });

function startController(): ImportController {
  return newImportController(cp.kubeConfig, config);
}

beforeAll(async () => {
  cp = await startControlPlane();
  core = cp.kubeConfig.makeApiClient(CoreV1Api);
  dir = tempDir();
  makeRawDisk(join(dir, 'disk.raw'), 8 * MiB);
  convertImage(join(dir, 'disk.raw'), 'qcow2', join(dir, 'disk.qcow2'));
  server = await startServer();
  server.route('/disk.qcow2', { file: join(dir, 'disk.qcow2') });
  server.route('/norange.qcow2', { file: join(dir, 'disk.qcow2'), ranges: false });
  server.route('/slow.raw', { file: join(dir, 'disk.raw'), slow: { chunk: 512 * 1024, delayMs: 150 } });
  config = await testControllerConfig();
  controller = startController();
  await controller.start();
}, 120_000);

afterAll(async () => {
  await controller?.stop();
  await server?.close();
  await cp?.stop();
  if (dir) removeDir(dir);
});

async function createPvc(namespace: string, body: V1PersistentVolumeClaim): Promise<V1PersistentVolumeClaim> {
  return core.createNamespacedPersistentVolumeClaim({ namespace, body });
}

async function readPvc(namespace: string, name: string): Promise<V1PersistentVolumeClaim> {
  return core.readNamespacedPersistentVolumeClaim({ namespace, name });
}

async function podGone(namespace: string, name: string): Promise<true> {
  return waitFor(`pod ${name} deleted`, async () => ((await core.readNamespacedPod({ namespace, name }).catch(() => undefined)) ? undefined : true));
}

async function events(namespace: string, pvc: string): Promise<Array<{ reason: string; message: string; type: string }>> {
  const list = await core.listNamespacedEvent({ namespace, fieldSelector: `involvedObject.name=${pvc}` });
  return list.items.map((e) => ({ reason: e.reason ?? '', message: e.message ?? '', type: e.type ?? '' }));
}

describe('import controller on a real apiserver', () => {
  test('the seed demo: a PVC with the older kubevirt.io endpoint annotation is imported', async () => {
    const ns = await cp.newNamespace();
    const pvc = await createPvc(ns, pvcBody('fedora', { 'kubevirt.io/storage.import.endpoint': 'https://images.example/Fedora-Cloud-Base.qcow2' }));
    const pod = await importerPod(core, ns, 'fedora');

    // The pod the kubelet would run.
    expect(pod.metadata?.labels).toMatchObject({ app: 'containerized-data-importer', 'cdi.kubevirt.io': 'importer' });
    expect(pod.metadata?.ownerReferences?.[0]).toMatchObject({ kind: 'PersistentVolumeClaim', name: 'fedora', uid: pvc.metadata?.uid, controller: true });
    expect(pod.spec?.restartPolicy).toBe('Never');
    const container = pod.spec?.containers?.[0];
    expect(container?.image).toBe('localhost/ferry:test');
    const env = Object.fromEntries((container?.env ?? []).map((e) => [e.name, e.value]));
    expect(env).toMatchObject({
      IMPORTER_SOURCE: 'http',
      IMPORTER_ENDPOINT: 'https://images.example/Fedora-Cloud-Base.qcow2',
      IMPORTER_TARGET_KIND: 'file',
      IMPORTER_TARGET_PATH: '/data/disk.img',
      IMPORTER_IMAGE_SIZE: String(64 * MiB),
      OWNER_UID: pvc.metadata?.uid,
    });
    expect(container?.volumeMounts).toEqual([{ name: 'data', mountPath: '/data' }]);
    expect(pod.spec?.volumes?.[0]).toMatchObject({ persistentVolumeClaim: { claimName: 'fedora' } });
    expect(container?.securityContext).toMatchObject({ allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
    expect(pod.spec?.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    let a = await annotationsWhen(core, ns, 'fedora', (x) => x[Annotation.PodPhase] === 'Pending');
    expect(a[Annotation.ImportPodName]).toBe('importer-fedora');

    await setPodStatus(core, pod, 'Running', { podIP: '127.0.0.1' });
    a = await annotationsWhen(core, ns, 'fedora', (x) => x[Annotation.PodPhase] === 'Running');
    expect(a[Annotation.RunningCondition]).toBe('true');

    await setPodStatus(core, pod, 'Succeeded', { terminated: { exitCode: 0, message: SUCCESS } });
    a = await annotationsWhen(core, ns, 'fedora', (x) => x[Annotation.PodPhase] === 'Succeeded');
    expect(a[Annotation.RunningReason]).toBe('Completed');
    expect(a[Annotation.Progress]).toBe('100.0%');
    await podGone(ns, 'importer-fedora');
    const ev = await waitFor('ImportSucceeded event', async () => (await events(ns, 'fedora')).find((e) => e.reason === 'ImportSucceeded'));
    expect(ev).toMatchObject({ type: 'Normal', message: 'Import Successful' });
  });

  test('the real importer runs with the pod environment; progress is scraped; its termination message completes the import', async () => {
    const ns = await cp.newNamespace();
    await createPvc(ns, pvcBody('golden', { [Annotation.Endpoint]: `${server.url}/slow.raw`, [Annotation.Source]: 'http' }));
    const pod = await importerPod(core, ns, 'golden');
    await setPodStatus(core, pod, 'Running', { podIP: '127.0.0.1' });
    const volumes = join(dir, 'golden-volumes');
    const run = runImporterLocally(pod, volumes, { FERRY_METRICS_PORT: String(config.importerMetricsPort) });
    const during = await annotationsWhen(core, ns, 'golden', (x) => Number.parseFloat(x[Annotation.Progress] ?? '0') > 0, 30_000);
    expect(Number.parseFloat(during[Annotation.Progress] ?? '')).toBeLessThanOrEqual(100);
    const result = await run.done;
    expect(result.exitCode).toBe(0);
    await setPodStatus(core, pod, 'Succeeded', { terminated: { exitCode: 0, message: result.terminationMessage } });
    await annotationsWhen(core, ns, 'golden', (x) => x[Annotation.PodPhase] === 'Succeeded');
    // The disk the importer wrote: the image, grown to the PVC's usable size (6 % overhead).
    const usable = Math.floor(Math.ceil(0.94 * 64 * MiB) / MiB) * MiB;
    expect(expectSameDisk(join(volumes, 'data', 'disk.img'), join(dir, 'disk.raw'), usable)).toBe(true);
  });

  test.each(['SOURCE_NOT_FOUND', 'UNAUTHORIZED', 'INVALID_IMAGE', 'CHECKSUM_MISMATCH', 'TARGET_TOO_SMALL'])('a permanent %s fails at once and says why', async (code) => {
    const ns = await cp.newNamespace();
    const name = `perm-${code.toLowerCase().replace(/_/g, '-')}`;
    await createPvc(ns, pvcBody(name, { [Annotation.Endpoint]: 'http://127.0.0.1:9/x.img' }));
    const pod = await importerPod(core, ns, name);
    await setPodStatus(core, pod, 'Failed', { terminated: { exitCode: 10, message: failure(code, false) } });
    const a = await annotationsWhen(core, ns, name, (x) => x[Annotation.PodPhase] === 'Failed');
    expect(a[Annotation.FatalError]).toBe('true');
    expect(a[Annotation.ErrorCode]).toBe(code);
    expect(a[Annotation.RunningReason]).toBe(code);
    expect(a[Annotation.PodRestarts]).toBe('0');
    await podGone(ns, `importer-${name}`);
    const ev = await waitFor('ErrImportFailed event', async () => (await events(ns, name)).find((e) => e.reason === 'ErrImportFailed'));
    expect(ev.type).toBe('Warning');
    expect(ev.message).toContain(code);
    // No new attempt follows.
    await new Promise((r) => setTimeout(r, 1500));
    expect((await core.listNamespacedPod({ namespace: ns })).items).toHaveLength(0);
  });

  test('a transient failure is retried after a backoff, then succeeds', async () => {
    const ns = await cp.newNamespace();
    await createPvc(ns, pvcBody('flaky', { [Annotation.Endpoint]: 'http://127.0.0.1:9/x.img' }));
    const first = await importerPod(core, ns, 'flaky');
    await setPodStatus(core, first, 'Failed', { terminated: { exitCode: 13, message: failure('SOURCE_UNAVAILABLE', true) } });
    const a = await annotationsWhen(core, ns, 'flaky', (x) => x[Annotation.PodRestarts] === '1');
    expect(a[Annotation.ErrorCode]).toBe('SOURCE_UNAVAILABLE');
    expect(a[Annotation.PodPhase]).toBe('Pending');
    const second = await importerPod(core, ns, 'flaky', first.metadata?.uid);
    expect(second.metadata?.uid).not.toBe(first.metadata?.uid);
    await setPodStatus(core, second, 'Succeeded', { terminated: { exitCode: 0, message: SUCCESS } });
    const done = await annotationsWhen(core, ns, 'flaky', (x) => x[Annotation.PodPhase] === 'Succeeded');
    expect(done[Annotation.PodRestarts]).toBe('1');
    expect(done[Annotation.ErrorCode]).toBeUndefined();
    // The event follows the status annotation.
    const reasons = await waitFor('both events', async () => {
      const r = (await events(ns, 'flaky')).map((e) => e.reason);
      return r.includes('ImportSucceeded') ? r : undefined;
    });
    expect(reasons).toEqual(expect.arrayContaining(['ErrImportFailed', 'ImportSucceeded']));
  });

  test('retries stop at the limit and the last reason is kept', async () => {
    const ns = await cp.newNamespace();
    await createPvc(ns, pvcBody('doomed', { [Annotation.Endpoint]: 'http://127.0.0.1:9/x.img' }));
    let uid: string | undefined;
    for (let attempt = 0; attempt <= config.maxRetries; attempt += 1) {
      const pod = await importerPod(core, ns, 'doomed', uid);
      uid = pod.metadata?.uid;
      await setPodStatus(core, pod, 'Failed', { terminated: { exitCode: 14, message: failure('TRUNCATED', true) } });
    }
    const a = await annotationsWhen(core, ns, 'doomed', (x) => x[Annotation.PodPhase] === 'Failed');
    expect(a[Annotation.ErrorCode]).toBe('TRUNCATED');
    expect(a[Annotation.PodRestarts]).toBe(String(config.maxRetries));
    expect(a[Annotation.RunningMessage]).toContain('gave up');
  });

  test('scratch: the importer asks for it, gets a scratch PVC, and the scratch PVC goes after success', async () => {
    const ns = await cp.newNamespace();
    await createPvc(ns, pvcBody('needs-scratch', { [Annotation.Endpoint]: `${server.url}/norange.qcow2` }, { storageClassName: 'fast' }));
    const first = await importerPod(core, ns, 'needs-scratch');
    const scratchMsg = encodeTermination({ kind: 'success', message: 'scratch space required and none found', scratchSpaceRequired: true, preallocationApplied: false });
    await setPodStatus(core, first, 'Succeeded', { terminated: { exitCode: 0, message: scratchMsg } });
    await annotationsWhen(core, ns, 'needs-scratch', (x) => x[Annotation.RequiresScratch] === 'true');
    const scratch = await waitFor('scratch PVC', () => core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: 'needs-scratch-scratch' }).catch(() => undefined));
    expect(scratch.spec).toMatchObject({ storageClassName: 'fast', volumeMode: 'Filesystem', resources: { requests: { storage: '64Mi' } } });
    const second = await importerPod(core, ns, 'needs-scratch', first.metadata?.uid);
    expect(second.spec?.volumes?.find((v) => v.name === 'scratch')).toMatchObject({ persistentVolumeClaim: { claimName: 'needs-scratch-scratch' } });
    expect(second.spec?.containers?.[0]?.env?.find((e) => e.name === 'IMPORTER_SCRATCH_DIR')?.value).toBe('/scratch');
    // Run the real importer with scratch this time.
    const run = await runImporterLocally(second, join(dir, 'scratch-volumes'), { FERRY_METRICS_PORT: '0' }).done;
    expect(run.exitCode).toBe(0);
    await setPodStatus(core, second, 'Succeeded', { terminated: { exitCode: 0, message: run.terminationMessage } });
    await annotationsWhen(core, ns, 'needs-scratch', (x) => x[Annotation.PodPhase] === 'Succeeded');
    await waitFor('scratch PVC deleted', async () => {
      const left = await core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: 'needs-scratch-scratch' }).catch(() => undefined);
      return !left || left.metadata?.deletionTimestamp ? true : undefined;
    });
  });

  test('block volumes get the device, not a mount', async () => {
    const ns = await cp.newNamespace();
    await createPvc(ns, pvcBody('raw-block', { [Annotation.Endpoint]: `${server.url}/disk.qcow2` }, { volumeMode: 'Block' }));
    const pod = await importerPod(core, ns, 'raw-block');
    const container = pod.spec?.containers?.[0];
    expect(container?.volumeDevices).toEqual([{ name: 'data', devicePath: '/dev/cdi-block-volume' }]);
    expect(container?.volumeMounts ?? []).toEqual([]);
    const env = Object.fromEntries((container?.env ?? []).map((e) => [e.name, e.value]));
    expect(env).toMatchObject({ IMPORTER_TARGET_KIND: 'block', IMPORTER_TARGET_PATH: '/dev/cdi-block-volume', FILESYSTEM_OVERHEAD: '0' });
  });

  test('secret and CA config map are wired by reference, never copied', async () => {
    const ns = await cp.newNamespace();
    await core.createNamespacedSecret({ namespace: ns, body: { metadata: { name: 'creds' }, stringData: { accessKeyId: 'user', secretKey: 'TOP-SECRET-VALUE' } } });
    await createPvc(ns, pvcBody('private', {
      [Annotation.Endpoint]: 'https://images.internal/disk.qcow2',
      [Annotation.SecretName]: 'creds',
      [Annotation.CertConfigMap]: 'corp-ca',
    }));
    const pod = await importerPod(core, ns, 'private');
    const env = pod.spec?.containers?.[0]?.env ?? [];
    expect(env.find((e) => e.name === 'IMPORTER_ACCESS_KEY_ID')?.valueFrom?.secretKeyRef).toMatchObject({ name: 'creds', key: 'accessKeyId' });
    expect(env.find((e) => e.name === 'IMPORTER_SECRET_KEY')?.valueFrom?.secretKeyRef).toMatchObject({ name: 'creds', key: 'secretKey' });
    expect(env.find((e) => e.name === 'IMPORTER_CERT_DIR')?.value).toBe('/certs');
    expect(pod.spec?.volumes?.find((v) => v.name === 'certs')?.configMap?.name).toBe('corp-ca');
    expect(JSON.stringify(pod)).not.toContain('TOP-SECRET-VALUE');
    expect(JSON.stringify(await readPvc(ns, 'private'))).not.toContain('TOP-SECRET-VALUE');
  });

  test('an invalid request is reported on the PVC and starts no pod', async () => {
    const ns = await cp.newNamespace();
    await createPvc(ns, pvcBody('bad', { [Annotation.Endpoint]: 'http://x/y', [Annotation.ContentType]: 'floppy' }));
    const a = await annotationsWhen(core, ns, 'bad', (x) => x[Annotation.PodPhase] === 'Failed');
    expect(a[Annotation.ErrorCode]).toBe('INVALID_SPEC');
    expect((await core.listNamespacedPod({ namespace: ns })).items).toHaveLength(0);
  });

  test('WaitForFirstConsumer: no importer pod until the PVC binds, or at once with the immediate-binding annotation', async () => {
    const ns = await cp.newNamespace();
    const storage = cp.kubeConfig.makeApiClient(StorageV1Api);
    const className = `${ns}-local`;
    await storage.createStorageClass({ body: { metadata: { name: className }, provisioner: 'kubernetes.io/no-provisioner', volumeBindingMode: 'WaitForFirstConsumer' } });
    try {
      const url = `${server.url}/disk.qcow2`;
      await createPvc(ns, pvcBody('later', { [Annotation.Endpoint]: url }, { storageClassName: className }));
      await createPvc(ns, pvcBody('now', { [Annotation.Endpoint]: url, [Annotation.ImmediateBinding]: '' }, { storageClassName: className }));
      const a = await annotationsWhen(core, ns, 'later', (x) => x[Annotation.BoundReason] === 'WaitForFirstConsumer');
      expect(a[Annotation.BoundCondition]).toBe('false');
      expect(a[Annotation.BoundMessage]).toContain(`storage class ${className} binds on first use`);
      expect(a[Annotation.PodPhase]).toBeUndefined();
      // The immediate one runs at once; the waiting one gets no pod however long it waits.
      await importerPod(core, ns, 'now');
      await controller.idle();
      expect((await core.listNamespacedPod({ namespace: ns })).items.map((p) => p.metadata?.name)).toEqual(['importer-now']);
      expect((await events(ns, 'later')).filter((e) => e.reason === 'WaitForFirstConsumer')).toHaveLength(1);

      // A consumer was scheduled: the PV binder binds the claim (played here through the status subresource).
      await core.patchNamespacedPersistentVolumeClaimStatus(
        { namespace: ns, name: 'later', body: { status: { phase: 'Bound' } } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
      await importerPod(core, ns, 'later');
      const after = await annotationsWhen(core, ns, 'later', (x) => x[Annotation.PodPhase] === 'Pending');
      expect(after[Annotation.BoundReason]).toBeUndefined();
      expect(after[Annotation.BoundCondition]).toBeUndefined();
    } finally {
      await storage.deleteStorageClass({ name: className });
    }
  });

  test('a controller restarted mid-import creates no second pod and finishes the import', async () => {
    const ns = await cp.newNamespace();
    await createPvc(ns, pvcBody('survivor', { [Annotation.Endpoint]: 'http://127.0.0.1:9/x.img' }));
    const pod = await importerPod(core, ns, 'survivor');
    await setPodStatus(core, pod, 'Running', { podIP: '127.0.0.1' });
    await annotationsWhen(core, ns, 'survivor', (x) => x[Annotation.PodPhase] === 'Running');
    await controller.stop();
    controller = startController();
    await controller.start();
    await controller.idle();
    const pods = (await core.listNamespacedPod({ namespace: ns })).items;
    expect(pods).toHaveLength(1);
    expect(pods[0]?.metadata?.uid).toBe(pod.metadata?.uid);
    await setPodStatus(core, pod, 'Succeeded', { terminated: { exitCode: 0, message: SUCCESS } });
    await annotationsWhen(core, ns, 'survivor', (x) => x[Annotation.PodPhase] === 'Succeeded');
  });
});

describe('leader election on a real Lease', () => {
  test('two candidates: one leads; when it steps down the other takes over', async () => {
    const ns = await cp.newNamespace();
    const api = cp.kubeConfig.makeApiClient(CoordinationV1Api);
    const options = (identity: string) => ({ namespace: ns, name: 'ferry-controller', identity, leaseDurationSeconds: 2, renewIntervalMs: 200 });
    const a = new LeaderElector(api, options('replica-a'), silentLogger());
    const b = new LeaderElector(api, options('replica-b'), silentLogger());
    const led: string[] = [];
    void a.run(() => led.push('a'), () => led.push('a-lost'));
    await waitFor('a leads', async () => (a.isLeader ? true : undefined));
    void b.run(() => led.push('b'), () => led.push('b-lost'));
    await new Promise((r) => setTimeout(r, 1000));
    expect(a.isLeader).toBe(true);
    expect(b.isLeader).toBe(false);
    expect((await api.readNamespacedLease({ namespace: ns, name: 'ferry-controller' })).spec?.holderIdentity).toBe('replica-a');
    await a.stop();
    await waitFor('b takes over', async () => (b.isLeader ? true : undefined), 10_000);
    expect(led).toEqual(['a', 'b']);
    expect((await api.readNamespacedLease({ namespace: ns, name: 'ferry-controller' })).spec?.holderIdentity).toBe('replica-b');
    await b.stop();
  });
});
