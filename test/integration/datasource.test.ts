/**
 * The DataSource controller on the real apiserver, as the controller's ServiceAccount (a client
 * certificate with its user name and groups, bound only by manifests/rbac*.yaml): Ready False
 * NotFound while the PVC is missing, the PVC's state while it is Pending or being imported, True
 * once it is Bound and Succeeded; a DataVolume of the PVC's name decides by its phase (CDI's rule);
 * a PVC being deleted is Terminating, then NotFound; `kubectl wait --for=condition=Ready` sees it.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CoreV1Api, CustomObjectsApi, type KubernetesObject, KubernetesObjectApi, loadAllYaml, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { type DataSource, DATASOURCE_GROUP, DATASOURCE_PLURAL, DATASOURCE_VERSION } from '../../src/api/datasource.js';
import { DV_GROUP, DV_PLURAL, DV_VERSION } from '../../src/api/datavolume.js';
import { createLogger } from '../../src/logging.js';
import { DataSourceController } from '../../controller/datasource/datasource-controller.js';
import { kubectlAs, startControlPlane, type ControlPlane } from '../helpers/cluster.js';
import { installCrds } from '../helpers/crds.js';
import { REPO_ROOT } from '../helpers/ferry-process.js';
import { waitFor } from '../helpers/kubelet.js';

const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
const SA_USER = 'system:serviceaccount:ferry-system:ferry-controller';

let cp: ControlPlane;
let custom: CustomObjectsApi;
let core: CoreV1Api;
let controller: DataSourceController;
let ns: string;

const dsWhere = () => ({ group: DATASOURCE_GROUP, version: DATASOURCE_VERSION, plural: DATASOURCE_PLURAL, namespace: ns });

async function createDataSource(name: string, pvcName: string): Promise<void> {
  await custom.createNamespacedCustomObject({ ...dsWhere(), body: { apiVersion: `${DATASOURCE_GROUP}/${DATASOURCE_VERSION}`, kind: 'DataSource', metadata: { name }, spec: { source: { pvc: { name: pvcName } } } } });
}

async function createPvc(name: string, annotations: Record<string, string> = {}): Promise<void> {
  await core.createNamespacedPersistentVolumeClaim({
    namespace: ns,
    body: { metadata: { name, annotations }, spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } } },
  });
}

/** Polls the DataSource until its Ready condition has `status`, `reason` and (if given) `message` (bounded: 30 s). */
async function readyBecomes(name: string, status: string, reason: string, message?: string): Promise<{ status: string; reason?: string; message?: string }> {
  let last: unknown;
  for (let i = 0; i < 150; i++) {
    const ds = (await custom.getNamespacedCustomObject({ ...dsWhere(), name })) as DataSource;
    const ready = ds.status?.conditions?.find((c) => c.type === 'Ready');
    last = ds.status;
    if (ready?.status === status && ready.reason === reason && (message === undefined || ready.message === message)) return ready;
    await sleep(200);
  }
  throw new Error(`DataSource ${name} never became Ready=${status} (${reason}): ${JSON.stringify(last)}`);
}

beforeAll(async () => {
  cp = await startControlPlane();
  await installCrds(cp.kubeConfig);
  const objects = KubernetesObjectApi.makeApiClient(cp.kubeConfig);
  for (const file of ['rbac.yaml', 'rbac-datavolume.yaml', 'rbac-datasource.yaml']) {
    const all = loadAllYaml(readFileSync(join(REPO_ROOT, 'manifests', file), 'utf8')) as KubernetesObject[];
    for (const o of all.filter((x) => x.kind === 'ClusterRole' || x.kind === 'ClusterRoleBinding')) await objects.create(o);
  }
  custom = cp.kubeConfig.makeApiClient(CustomObjectsApi);
  core = cp.kubeConfig.makeApiClient(CoreV1Api);
  ns = await cp.newNamespace('ds');
  // The controller's own identity: only what the manifests grant it.
  const sa = cp.userKubeconfig(SA_USER, ['system:serviceaccounts', 'system:serviceaccounts:ferry-system']);
  controller = new DataSourceController({ kubeConfig: sa.kubeConfig, config: { namespaces: [], concurrency: 2 }, logger: createLogger({ name: 'datasource-test', level: 'warn' }) });
  await controller.start();
}, 120_000);

afterAll(async () => {
  await controller?.stop();
  await cp?.stop();
});

describe('DataSource Ready', () => {
  test('a bare PVC: NotFound, then its phase, then the import pod phase, then Ready; deleted: NotFound again', async () => {
    await createDataSource('fedora', 'fedora-disk');
    expect(await readyBecomes('fedora', 'False', 'NotFound')).toMatchObject({ message: 'PVC not found' });

    await createPvc('fedora-disk', { 'cdi.kubevirt.io/storage.import.endpoint': 'http://127.0.0.1:1/disk.img' });
    expect(await readyBecomes('fedora', 'False', 'Pending')).toMatchObject({ message: 'PVC fedora-disk phase Pending' });

    await core.patchNamespacedPersistentVolumeClaimStatus({ namespace: ns, name: 'fedora-disk', body: { status: { phase: 'Bound' } } }, mergePatch);
    // Same reason as before (Pending), another message: waited for by the message.
    await readyBecomes('fedora', 'False', 'Pending', 'PVC fedora-disk is being populated (pod phase Pending)');

    await core.patchNamespacedPersistentVolumeClaim({ namespace: ns, name: 'fedora-disk', body: { metadata: { annotations: { 'cdi.kubevirt.io/storage.pod.phase': 'Running' } } } }, mergePatch);
    await readyBecomes('fedora', 'False', 'Running');

    await core.patchNamespacedPersistentVolumeClaim({ namespace: ns, name: 'fedora-disk', body: { metadata: { annotations: { 'cdi.kubevirt.io/storage.pod.phase': 'Succeeded' } } } }, mergePatch);
    const ready = await readyBecomes('fedora', 'True', 'Ready');
    expect(ready).toMatchObject({ message: 'DataSource is ready to be consumed', lastTransitionTime: expect.any(String), lastHeartbeatTime: expect.any(String) });

    // What a CDI user runs before cloning.
    const wait = await kubectlAs(cp.kubeconfigPath, ['-n', ns, 'wait', '--for=condition=Ready', 'datasource/fedora', '--timeout=20s']);
    expect(wait).toMatchObject({ code: 0, stdout: expect.stringContaining('datasource.cdi.kubevirt.io/fedora condition met') });

    // Deleted: held by its pvc-protection finalizer first, then gone once that is lifted (this
    // apiserver runs no kube-controller-manager, so the test lifts it as that controller would).
    await core.deleteNamespacedPersistentVolumeClaim({ namespace: ns, name: 'fedora-disk' });
    await readyBecomes('fedora', 'False', 'Terminating');
    await core.patchNamespacedPersistentVolumeClaim({ namespace: ns, name: 'fedora-disk', body: { metadata: { finalizers: null } } }, mergePatch);
    await readyBecomes('fedora', 'False', 'NotFound');
  });

  test("CDI's extras: status.source mirrors spec.source; the PVC's default instancetype and preference labels land on the DataSource", async () => {
    await createDataSource('typed', 'typed-disk');
    await readyBecomes('typed', 'False', 'NotFound');
    const read = async (): Promise<DataSource> => (await custom.getNamespacedCustomObject({ group: DATASOURCE_GROUP, version: DATASOURCE_VERSION, plural: DATASOURCE_PLURAL, namespace: ns, name: 'typed' })) as DataSource;
    expect((await read()).status?.source).toEqual({ pvc: { name: 'typed-disk' } });
    await createPvc('typed-disk');
    await core.patchNamespacedPersistentVolumeClaim({ namespace: ns, name: 'typed-disk', body: { metadata: { labels: { 'instancetype.kubevirt.io/default-instancetype': 'u1.medium', 'instancetype.kubevirt.io/default-preference': 'fedora', other: 'x' } } } }, mergePatch);
    const labels = await waitFor('the labels copied', async () => {
      const got = (await read()).metadata?.labels ?? {};
      return got['instancetype.kubevirt.io/default-preference'] === 'fedora' ? got : undefined;
    }, 30_000);
    expect(labels).toMatchObject({ 'instancetype.kubevirt.io/default-instancetype': 'u1.medium', 'instancetype.kubevirt.io/default-preference': 'fedora' });
    expect(labels.other).toBeUndefined();
  });

  test('a DataVolume of the PVC\'s name decides by its phase, as CDI\'s', async () => {
    await custom.createNamespacedCustomObject({
      group: DV_GROUP, version: DV_VERSION, plural: DV_PLURAL, namespace: ns,
      body: { apiVersion: `${DV_GROUP}/${DV_VERSION}`, kind: 'DataVolume', metadata: { name: 'golden' }, spec: { source: { http: { url: 'http://127.0.0.1:1/disk.img' } }, storage: { resources: { requests: { storage: '1Gi' } } } } },
    });
    await createDataSource('from-dv', 'golden');
    expect(await readyBecomes('from-dv', 'False', 'Pending')).toMatchObject({ message: 'Import DataVolume phase Pending' });

    const dvStatus = (phase: string) => custom.patchNamespacedCustomObjectStatus({ group: DV_GROUP, version: DV_VERSION, plural: DV_PLURAL, namespace: ns, name: 'golden', body: { status: { phase } } }, mergePatch);
    await dvStatus('ImportInProgress');
    expect(await readyBecomes('from-dv', 'False', 'ImportInProgress')).toMatchObject({ message: 'Import DataVolume phase ImportInProgress' });

    // Succeeded, but no PVC: still not ready.
    await dvStatus('Succeeded');
    await readyBecomes('from-dv', 'False', 'NotFound');
    await createPvc('golden');
    await core.patchNamespacedPersistentVolumeClaimStatus({ namespace: ns, name: 'golden', body: { status: { phase: 'Bound' } } }, mergePatch);
    await readyBecomes('from-dv', 'True', 'Ready');
  });
});
