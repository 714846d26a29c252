/**
 * The DataVolume controller beside the import controller, sharing one InformerFactory, against a
 * real kube-apiserver + etcd. There is no kubelet: the tests play its part (the real importer run
 * locally with the pod's environment, its exit reported as the pod's status). There is no
 * kube-controller-manager either, so no garbage collector: "deleting a DataVolume deletes its PVC"
 * is asserted as the owner reference the garbage collector follows, not as the deletion itself.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CoreV1Api, CustomObjectsApi, PatchStrategy, setHeaderOptions, type V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { Annotation } from '../../src/api/cdi.js';
import { type DataVolume, type DataVolumeStatus, DV_GROUP, DV_PLURAL, DV_VERSION, DvAnnotation } from '../../src/api/datavolume.js';
import { encodeTermination } from '../../src/contract/termination.js';
import { silentLogger } from '../../src/logging.js';
import type { ControllerConfig } from '../../controller/config.js';
import { DataVolumeController } from '../../controller/datavolume/datavolume-controller.js';
import { ImportController } from '../../controller/import/import-controller.js';
import { InformerFactory } from '../../controller/runtime/informers.js';
import { controlPlaneBinDir, startControlPlane, type ControlPlane } from '../helpers/cluster.js';
import { installCrds } from '../helpers/crds.js';
import { makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { importerPod, runPod, testControllerConfig } from '../helpers/import-harness.js';
import { runImporterLocally, setPodStatus, waitFor } from '../helpers/kubelet.js';

let cp: ControlPlane;
let core: CoreV1Api;
let custom: CustomObjectsApi;
let informers: InformerFactory;
let imports: ImportController;
let dvs: DataVolumeController;
let config: ControllerConfig;
let dir: string;
let server: TestServer;

const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

beforeAll(async () => {
  cp = await startControlPlane();
  core = cp.kubeConfig.makeApiClient(CoreV1Api);
  custom = cp.kubeConfig.makeApiClient(CustomObjectsApi);
  await installCrds(cp.kubeConfig);
  dir = tempDir();
  makeRawDisk(join(dir, 'disk.raw'), 8 * MiB);
  server = await startServer();
  server.route('/disk.raw', { file: join(dir, 'disk.raw') });
  server.route('/slow.raw', { file: join(dir, 'disk.raw'), slow: { chunk: 512 * 1024, delayMs: 150 } });
  server.route('/missing.qcow2', { status: 404 });
  config = await testControllerConfig();
  // One set of caches for both controllers, as in controller/main.ts.
  informers = new InformerFactory(cp.kubeConfig, [], silentLogger());
  imports = new ImportController({ kubeConfig: cp.kubeConfig, config, logger: silentLogger(), registry: new Registry(), informers });
  dvs = new DataVolumeController({ kubeConfig: cp.kubeConfig, config, logger: silentLogger(), informers });
  await Promise.all([imports.start(), dvs.start()]);
}, 120_000);

afterAll(async () => {
  await Promise.all([imports?.stop(), dvs?.stop()]);
  await informers?.stop();
  await server?.close();
  await cp?.stop();
  if (dir) removeDir(dir);
});

const api = { group: DV_GROUP, version: DV_VERSION, plural: DV_PLURAL };

async function createDv(namespace: string, name: string, spec: object, annotations: Record<string, string> = {}): Promise<DataVolume> {
  return (await custom.createNamespacedCustomObject({ ...api, namespace, body: { apiVersion: `${DV_GROUP}/${DV_VERSION}`, kind: 'DataVolume', metadata: { name, annotations }, spec } })) as DataVolume;
}

async function readDv(namespace: string, name: string): Promise<DataVolume> {
  return (await custom.getNamespacedCustomObject({ ...api, namespace, name })) as DataVolume;
}

/** The DataVolume's status once `predicate` holds. */
function statusWhen(namespace: string, name: string, predicate: (s: DataVolumeStatus) => boolean, timeoutMs = 30_000): Promise<DataVolumeStatus> {
  return waitFor(`status of DataVolume ${namespace}/${name}`, async () => {
    const s = (await readDv(namespace, name)).status ?? {};
    return predicate(s) ? s : undefined;
  }, timeoutMs);
}

const condition = (s: DataVolumeStatus, type: string) => s.conditions?.find((c) => c.type === type);
const storage = (size: string, extra: object = {}) => ({ storage: { resources: { requests: { storage: size } }, ...extra } });

async function dvEvents(namespace: string, name: string): Promise<string[]> {
  const list = await core.listNamespacedEvent({ namespace, fieldSelector: `involvedObject.kind=DataVolume,involvedObject.name=${name}` });
  return list.items.map((e) => e.reason ?? '');
}

describe('DataVolumes over the import controller', () => {
  test('http: the PVC is created and owned, the real importer runs, progress and conditions reach the DataVolume, Succeeded', async () => {
    const ns = await cp.newNamespace();
    const dv = await createDv(ns, 'fedora', { source: { http: { url: `${server.url}/slow.raw` } }, ...storage('64Mi') }, { [Annotation.RetainAfterCompletion]: 'false' });
    const pvc = await waitFor('the PVC', () => core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: 'fedora' }).catch(() => undefined));
    expect(pvc.metadata?.ownerReferences).toEqual([{ apiVersion: 'cdi.kubevirt.io/v1beta1', kind: 'DataVolume', name: 'fedora', uid: dv.metadata.uid, controller: true, blockOwnerDeletion: true }]);
    expect(pvc.metadata?.annotations).toMatchObject({
      [Annotation.Endpoint]: `${server.url}/slow.raw`,
      [Annotation.Source]: 'http',
      [Annotation.ContentType]: 'kubevirt',
      [DvAnnotation.CreatedForDataVolume]: dv.metadata.uid,
      [Annotation.RetainAfterCompletion]: 'false',
    });

    const pod = await importerPod(core, ns, 'fedora');
    // Progress is reported under the DataVolume's UID (the PVC's single owner), as in CDI.
    expect(pod.spec?.containers?.[0]?.env?.find((e) => e.name === 'OWNER_UID')?.value).toBe(dv.metadata.uid);
    const scheduled = await statusWhen(ns, 'fedora', (s) => s.phase === 'ImportScheduled');
    expect(scheduled).toMatchObject({ claimName: 'fedora', restartCount: 0, progress: 'N/A' });

    await setPodStatus(core, pod, 'Running', { podIP: '127.0.0.1' });
    const run = runImporterLocally(pod, join(dir, 'fedora-volumes'), { FERRY_METRICS_PORT: String(config.importerMetricsPort) });
    const during = await statusWhen(ns, 'fedora', (s) => s.phase === 'ImportInProgress' && /^\d+\.\d\d%$/.test(s.progress ?? '') && Number.parseFloat(s.progress ?? '0') > 0);
    expect(condition(during, 'Running')).toMatchObject({ status: 'True', reason: 'Pod is running' });
    expect(condition(during, 'Ready')).toMatchObject({ status: 'False', reason: 'TransferRunning' });
    const result = await run.done;
    expect(result.exitCode).toBe(0);
    await setPodStatus(core, pod, 'Succeeded', { terminated: { exitCode: 0, message: result.terminationMessage } });

    const done = await statusWhen(ns, 'fedora', (s) => s.phase === 'Succeeded');
    expect(done).toMatchObject({ progress: '100.0%', restartCount: 0, claimName: 'fedora' });
    expect(condition(done, 'Ready')).toMatchObject({ status: 'True' });
    expect(condition(done, 'Running')).toMatchObject({ status: 'False', reason: 'Completed' });
    // No provisioner binds PVCs here.
    expect(condition(done, 'Bound')).toMatchObject({ status: 'False', reason: 'Pending', message: 'PVC fedora Pending' });
    for (const c of done.conditions ?? []) expect(Date.parse(c.lastTransitionTime ?? '')).toBeGreaterThan(0);
    const reasons = await waitFor('the DataVolume events', async () => {
      const r = await dvEvents(ns, 'fedora');
      return r.includes('ImportSucceeded') ? r : undefined;
    });
    expect(reasons).toEqual(expect.arrayContaining(['ImportScheduled', 'ImportInProgress', 'ImportSucceeded']));
    const kubectl = join(controlPlaneBinDir(), 'kubectl');
    if (existsSync(kubectl)) {
      const rows = execFileSync(kubectl, ['--kubeconfig', cp.kubeconfigPath, 'get', 'dv', '-n', ns], { encoding: 'utf8' }).trimEnd().split('\n');
      expect(rows.map((r) => r.split(/\s+/).slice(0, 4))).toEqual([
        ['NAME', 'PHASE', 'PROGRESS', 'RESTARTS'],
        ['fedora', 'Succeeded', '100.0%', '0'],
      ]);
    }
  });

  test('http with extraHeaders and secretExtraHeaders: CDI\'s numbered PVC annotations, the pod\'s env and read-only Secret volumes; the real importer sends every header, the Secret\'s value shows nowhere', async () => {
    const ns = await cp.newNamespace();
    const token = `t-${Date.now().toString(36)}-secret`;
    server.route('/private.raw', { file: join(dir, 'disk.raw'), require: { authorization: `Bearer ${token}`, 'x-tenant': 'blue' } });
    await core.createNamespacedSecret({ namespace: ns, body: { metadata: { name: 'api-token' }, stringData: { auth: `Authorization: Bearer ${token}` } } });
    await createDv(ns, 'private', { source: { http: { url: `${server.url}/private.raw`, extraHeaders: ['X-Tenant: blue'], secretExtraHeaders: ['api-token'] } }, ...storage('64Mi') });
    const pvc = await waitFor('the PVC', () => core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: 'private' }).catch(() => undefined));
    expect(pvc.metadata?.annotations).toMatchObject({
      [`${Annotation.ExtraHeaders}.0`]: 'X-Tenant: blue',
      [`${Annotation.SecretExtraHeaders}.0`]: 'api-token',
    });

    const pod = await importerPod(core, ns, 'private');
    const container = pod.spec?.containers?.[0];
    expect(container?.env).toEqual(expect.arrayContaining([
      { name: 'IMPORTER_EXTRA_HEADER_0', value: 'X-Tenant: blue' },
      { name: 'IMPORTER_SECRET_EXTRA_HEADERS_DIR', value: '/extraheaders' },
    ]));
    expect(pod.spec?.volumes).toContainEqual({ name: 'extra-headers-0', secret: { secretName: 'api-token', defaultMode: 0o440 } });
    expect(container?.volumeMounts).toContainEqual({ name: 'extra-headers-0', mountPath: '/extraheaders/0', readOnly: true });
    // The apiserver accepted the pod as built: still the restricted profile's settings.
    expect(container?.securityContext).toMatchObject({ allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] }, runAsNonRoot: true });
    expect(JSON.stringify(pod)).not.toContain(token);

    // The kubelet's part: the Secret mounted as files, one per key.
    const volumes = join(dir, 'private-volumes');
    const secret = await core.readNamespacedSecret({ namespace: ns, name: 'api-token' });
    mkdirSync(join(volumes, 'extraheaders', '0'), { recursive: true });
    for (const [key, value] of Object.entries(secret.data ?? {})) writeFileSync(join(volumes, 'extraheaders', '0', key), Buffer.from(value, 'base64'));
    const since = server.requests.length;
    await setPodStatus(core, pod, 'Running', { podIP: '127.0.0.1' });
    const run = await runImporterLocally(pod, volumes, { FERRY_METRICS_PORT: '0', IMPORTER_SECRET_EXTRA_HEADERS_DIR: join(volumes, 'extraheaders') }).done;
    expect(run.exitCode).toBe(0);
    await setPodStatus(core, pod, 'Succeeded', { terminated: { exitCode: 0, message: run.terminationMessage } });
    await statusWhen(ns, 'private', (st) => st.phase === 'Succeeded');
    const seen = server.requests.slice(since).filter((r) => r.path === '/private.raw');
    expect(seen.length).toBeGreaterThan(0);
    for (const r of seen) expect([r.headers.authorization, r.headers['x-tenant']]).toEqual([`Bearer ${token}`, 'blue']);
    expect(run.terminationMessage).not.toContain(token);
    const events = await core.listNamespacedEvent({ namespace: ns });
    expect(JSON.stringify(events.items)).not.toContain(token);
    const after = await core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: 'private' });
    expect(JSON.stringify(after.metadata)).not.toContain(token);
  });

  test('a bad header line on the PVC: INVALID_SPEC on the DataVolume, no importer pod, the line not in the message', async () => {
    const ns = await cp.newNamespace();
    // The CRD refuses a bad line at create; a PVC annotation can still carry one (CDI's key on a bare or edited PVC).
    await createDv(ns, 'badheader', { source: { http: { url: `${server.url}/disk.raw` } }, ...storage('64Mi') }, { [`${Annotation.ExtraHeaders}.0`]: 'Bearer t-oops-secret' });
    const failed = await statusWhen(ns, 'badheader', (st) => (condition(st, 'Running')?.message ?? '').includes('INVALID_SPEC'));
    expect(condition(failed, 'Running')?.message).toContain(`${Annotation.ExtraHeaders}.0`);
    expect(JSON.stringify(failed)).not.toContain('t-oops-secret');
    expect(await core.readNamespacedPod({ namespace: ns, name: 'importer-badheader' }).then(() => true, () => false)).toBe(false);
  });

  test.each<[string, object, Record<string, string>, string]>([
    ['s3', { s3: { url: 'https://s3.example/images/disk.qcow2', secretRef: 'keys' } }, { [Annotation.Source]: 's3', [Annotation.SecretName]: 'keys' }, 's3'],
    ['registry', { registry: { url: 'docker://registry.example/disks/fedora:40', pullMethod: 'pod', certConfigMap: 'ca' } }, { [Annotation.Source]: 'registry', [Annotation.CertConfigMap]: 'ca' }, 'registry'],
  ])('%s: the PVC carries CDI\'s annotations and the importer pod gets the source', async (name, source, annotations, importerSource) => {
    const ns = await cp.newNamespace();
    await createDv(ns, name, { source, ...storage('64Mi') });
    const pod = await importerPod(core, ns, name);
    const pvc = await core.readNamespacedPersistentVolumeClaim({ namespace: ns, name });
    expect(pvc.metadata?.annotations).toMatchObject(annotations);
    expect(pod.spec?.containers?.[0]?.env?.find((e) => e.name === 'IMPORTER_SOURCE')?.value).toBe(importerSource);
    await statusWhen(ns, name, (s) => s.phase === 'ImportScheduled');
  });

  test('blank: the importer makes an empty disk, Succeeded', async () => {
    const ns = await cp.newNamespace();
    await createDv(ns, 'scratchpad', { source: { blank: {} }, ...storage('16Mi') });
    const pod = await importerPod(core, ns, 'scratchpad');
    expect(pod.spec?.containers?.[0]?.env?.find((e) => e.name === 'IMPORTER_SOURCE')?.value).toBe('blank');
    const run = await runPod(core, pod, join(dir, 'blank-volumes'));
    expect(run.exitCode).toBe(0);
    await statusWhen(ns, 'scratchpad', (s) => s.phase === 'Succeeded' && s.progress === '100.0%');
  });

  test('a 404 fails permanently: Failed, the error code in the Running condition message', async () => {
    const ns = await cp.newNamespace();
    await createDv(ns, 'gone', { source: { http: { url: `${server.url}/missing.qcow2` } }, ...storage('64Mi') });
    const pod = await importerPod(core, ns, 'gone');
    const run = await runPod(core, pod, join(dir, 'gone-volumes'));
    expect(run.exitCode).not.toBe(0);
    const failed = await statusWhen(ns, 'gone', (s) => s.phase === 'Failed');
    expect(failed.restartCount).toBe(0);
    expect(condition(failed, 'Running')).toMatchObject({ status: 'False', reason: 'SOURCE_NOT_FOUND' });
    expect(condition(failed, 'Running')?.message).toMatch(/^SOURCE_NOT_FOUND: /);
    expect(condition(failed, 'Ready')).toMatchObject({ status: 'False' });
    await waitFor('the ErrImportFailed event', async () => ((await dvEvents(ns, 'gone')).includes('ErrImportFailed') ? true : undefined));
  });

  test('a retryable failure is counted in restartCount; the next attempt succeeds', async () => {
    const ns = await cp.newNamespace();
    await createDv(ns, 'flaky', { source: { http: { url: `${server.url}/disk.raw` } }, ...storage('64Mi') });
    const first = await importerPod(core, ns, 'flaky');
    await setPodStatus(core, first, 'Failed', { terminated: { exitCode: 13, message: encodeTermination({ kind: 'failure', code: 'SOURCE_UNAVAILABLE', message: 'HTTP 503', retryable: true }) } });
    const retrying = await statusWhen(ns, 'flaky', (s) => s.restartCount === 1);
    expect(retrying.phase).toBe('ImportScheduled');
    expect(condition(retrying, 'Running')).toMatchObject({ reason: 'SOURCE_UNAVAILABLE' });
    const second = await importerPod(core, ns, 'flaky', first.metadata?.uid);
    expect((await runPod(core, second, join(dir, 'flaky-volumes'))).exitCode).toBe(0);
    const done = await statusWhen(ns, 'flaky', (s) => s.phase === 'Succeeded');
    expect(done.restartCount).toBe(1);
  });

  test('spec.storage: defaults filled, the size grown by the filesystem overhead (Block: not grown)', async () => {
    const ns = await cp.newNamespace();
    await createDv(ns, 'fs', { source: { blank: {} }, ...storage('1Gi') });
    await createDv(ns, 'blk', { source: { blank: {} }, ...storage('1Gi', { volumeMode: 'Block', accessModes: ['ReadWriteMany'], storageClassName: 'fast' }) });
    const fs = await waitFor('fs PVC', () => core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: 'fs' }).catch(() => undefined));
    expect(fs.spec).toMatchObject({ accessModes: ['ReadWriteOnce'], volumeMode: 'Filesystem' });
    // ceil(1 GiB / (1 − 0.06)) bytes, as CDI's GetRequiredSpace.
    expect(String(fs.spec?.resources?.requests?.storage)).toBe(String(Math.ceil((1024 * MiB) / 0.94)));
    const blk = await waitFor('blk PVC', () => core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: 'blk' }).catch(() => undefined));
    expect(blk.spec).toMatchObject({ accessModes: ['ReadWriteMany'], volumeMode: 'Block', storageClassName: 'fast' });
    expect(String(blk.spec?.resources?.requests?.storage)).toBe(String(1024 * MiB));
  });

  test('deleting a DataVolume: its PVC carries the owner reference the garbage collector follows (no GC runs here)', async () => {
    const ns = await cp.newNamespace();
    const dv = await createDv(ns, 'short-lived', { source: { blank: {} }, ...storage('16Mi') });
    const pvc = await waitFor('the PVC', () => core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: 'short-lived' }).catch(() => undefined));
    await custom.deleteNamespacedCustomObject({ ...api, namespace: ns, name: 'short-lived', propagationPolicy: 'Background' });
    await waitFor('DataVolume deleted', async () => ((await readDv(ns, 'short-lived').catch(() => undefined)) ? undefined : true));
    // What kube-controller-manager's garbage collector deletes the PVC by: a controller owner that is gone.
    const after = await core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: 'short-lived' });
    expect(after.metadata?.uid).toBe(pvc.metadata?.uid);
    expect(after.metadata?.ownerReferences).toEqual([expect.objectContaining({ kind: 'DataVolume', uid: dv.metadata.uid, controller: true, blockOwnerDeletion: true })]);
  });

  test('a PVC deleted underneath the DataVolume is reported, not imported again', async () => {
    const ns = await cp.newNamespace();
    await createDv(ns, 'orphan', { source: { blank: {} }, ...storage('16Mi') });
    await statusWhen(ns, 'orphan', (s) => s.claimName === 'orphan');
    await core.deleteNamespacedPersistentVolumeClaim({ namespace: ns, name: 'orphan' });
    // pvc-protection's finalizer is removed by kube-controller-manager, which does not run here.
    await core.patchNamespacedPersistentVolumeClaim({ namespace: ns, name: 'orphan', body: { metadata: { finalizers: null } } }, merge).catch(() => undefined);
    const lost = await statusWhen(ns, 'orphan', (s) => s.phase === 'Failed');
    expect(condition(lost, 'Bound')).toMatchObject({ status: 'False', reason: 'NotFound' });
    await new Promise((r) => setTimeout(r, 500));
    expect(await core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: 'orphan' }).catch(() => undefined)).toBeUndefined();
  });

  test('an existing PVC of the same name: a conflict, unless CDI\'s adoption rule allows it', async () => {
    const ns = await cp.newNamespace();
    const claim = (name: string, annotations: Record<string, string>): V1PersistentVolumeClaim => ({
      metadata: { name, annotations },
      spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '16Mi' } } },
    });
    await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: claim('taken', {}) });
    await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: claim('golden', { [DvAnnotation.PopulatedFor]: 'golden' }) });
    await createDv(ns, 'taken', { source: { blank: {} }, ...storage('16Mi') });
    const golden = await createDv(ns, 'golden', { source: { http: { url: `${server.url}/disk.raw` } }, ...storage('16Mi') });

    const conflict = await statusWhen(ns, 'taken', (s) => condition(s, 'Bound')?.reason === 'ClaimExists');
    expect(conflict.phase).toBe('Pending');
    expect((await core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: 'taken' })).metadata?.ownerReferences).toBeUndefined();

    await statusWhen(ns, 'golden', (s) => s.phase === 'Succeeded');
    const adopted = await core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: 'golden' });
    expect(adopted.metadata?.ownerReferences).toEqual([expect.objectContaining({ uid: golden.metadata.uid, controller: true })]);
    // Populated already: no importer.
    expect((await core.listNamespacedPod({ namespace: ns })).items).toHaveLength(0);
  });
});
