/**
 * The real control plane (etcd + kube-apiserver, test/helpers/cluster.ts) answers the API calls
 * Ferry's controller makes, through @kubernetes/client-node 1.x: PVCs carrying CDI's import
 * annotations, merge patches, watches, server-side dry-run and the server version.
 */

import * as k8s from '@kubernetes/client-node';
import { controlPlaneVersions, startControlPlane, type ControlPlane } from '../helpers/cluster.js';

const ENDPOINT = 'cdi.kubevirt.io/storage.import.endpoint';
const PHASE = 'cdi.kubevirt.io/storage.pod.phase';

let cp: ControlPlane;
let core: k8s.CoreV1Api;
let apps: k8s.AppsV1Api;
let ns: string;

beforeAll(async () => {
  cp = await startControlPlane();
  core = cp.kubeConfig.makeApiClient(k8s.CoreV1Api);
  apps = cp.kubeConfig.makeApiClient(k8s.AppsV1Api);
  ns = await cp.newNamespace('ferry-it');
}, 90_000);

afterAll(async () => {
  await cp?.stop();
}, 30_000);

function pvc(name: string): k8s.V1PersistentVolumeClaim {
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: { name, annotations: { [ENDPOINT]: 'http://127.0.0.1:8080/images/cirros.qcow2' } },
    spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } },
  };
}

/** The status code of a rejected call (client-node 1.x throws ApiException). */
async function statusOf(call: Promise<unknown>): Promise<number> {
  try {
    await call;
    return 200;
  } catch (e) {
    if (e instanceof k8s.ApiException) return e.code;
    throw e;
  }
}

test('reports the Kubernetes version it was built as', async () => {
  const version = await cp.kubeConfig.makeApiClient(k8s.VersionApi).getCode();
  expect(version.gitVersion).toBe(controlPlaneVersions().kubernetes);
  expect(version.gitVersion).toBe('v1.36.3');
  expect(version.major).toBe('1');
  expect(version.minor).toBe('36');
});

test('newNamespace gives unique, existing namespaces', async () => {
  const other = await cp.newNamespace('ferry-it');
  expect(other).not.toBe(ns);
  expect(other).toMatch(/^ferry-it-[a-z0-9]{5}$/);
  const read = await core.readNamespace({ name: other });
  expect(read.status?.phase).toBe('Active');
});

test('stores a PVC with the CDI import annotation and reads it back', async () => {
  const created = await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: pvc('disk-a') });
  expect(created.metadata?.uid).toBeTruthy();

  const read = await core.readNamespacedPersistentVolumeClaim({ name: 'disk-a', namespace: ns });
  expect(read.metadata?.annotations?.[ENDPOINT]).toBe('http://127.0.0.1:8080/images/cirros.qcow2');
  expect(read.spec?.accessModes).toEqual(['ReadWriteOnce']);
  expect(read.spec?.resources?.requests?.storage).toBe('1Gi');
  expect(read.spec?.volumeMode).toBe('Filesystem'); // defaulted by the apiserver
  expect(read.status?.phase).toBe('Pending'); // nothing binds it: there is no controller

  // A second create of the same name is a real conflict, not a client-side check.
  expect(await statusOf(core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: pvc('disk-a') }))).toBe(409);
  // The apiserver validates: a PVC without a storage request is rejected.
  const invalid = pvc('disk-invalid');
  invalid.spec!.resources = {};
  expect(await statusOf(core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: invalid }))).toBe(422);
});

test('merge-patches an annotation and a watch sees the change', async () => {
  await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: pvc('disk-b') });
  const list = await core.listNamespacedPersistentVolumeClaim({ namespace: ns, fieldSelector: 'metadata.name=disk-b' });
  expect(list.items.map((i) => i.metadata?.name)).toEqual(['disk-b']);
  const rv = list.metadata?.resourceVersion;
  expect(rv).toBeTruthy();

  // Watch from the list's resourceVersion, so the only event is the patch below.
  const events: Array<{ type: string; obj: k8s.V1PersistentVolumeClaim }> = [];
  let resolveModified!: () => void;
  const modified = new Promise<void>((resolve) => (resolveModified = resolve));
  const watch = new k8s.Watch(cp.kubeConfig);
  const ctl = await watch.watch(
    `/api/v1/namespaces/${ns}/persistentvolumeclaims`,
    { resourceVersion: rv, fieldSelector: 'metadata.name=disk-b' },
    (type, obj: k8s.V1PersistentVolumeClaim) => {
      events.push({ type, obj });
      if (type === 'MODIFIED' && obj.metadata?.annotations?.[PHASE] === 'Running') resolveModified();
    },
    () => undefined,
  );
  try {
    const patched = await core.patchNamespacedPersistentVolumeClaim(
      { name: 'disk-b', namespace: ns, body: { metadata: { annotations: { [PHASE]: 'Running' } } } },
      k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
    );
    // A merge patch adds the key and keeps the others.
    expect(patched.metadata?.annotations?.[PHASE]).toBe('Running');
    expect(patched.metadata?.annotations?.[ENDPOINT]).toBe('http://127.0.0.1:8080/images/cirros.qcow2');

    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      modified,
      new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`no MODIFIED event in 10 s; saw ${JSON.stringify(events.map((e) => e.type))}`)), 10_000))),
    ]).finally(() => clearTimeout(timer));
    expect(events.map((e) => e.type)).toEqual(['MODIFIED']);
    expect(events[0]!.obj.metadata?.resourceVersion).toBe(patched.metadata?.resourceVersion);
  } finally {
    ctl.abort();
  }

  // A merge patch with null deletes the key.
  const removed = await core.patchNamespacedPersistentVolumeClaim(
    { name: 'disk-b', namespace: ns, body: { metadata: { annotations: { [PHASE]: null } } } },
    k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch),
  );
  expect(removed.metadata?.annotations?.[PHASE]).toBeUndefined();
  expect(removed.metadata?.annotations?.[ENDPOINT]).toBeDefined();
});

test('server-side dry-run create of a Deployment validates and defaults without storing', async () => {
  const deployment: k8s.V1Deployment = {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata: { name: 'ferry-controller' },
    spec: {
      selector: { matchLabels: { app: 'ferry' } },
      template: {
        metadata: { labels: { app: 'ferry' } },
        spec: { containers: [{ name: 'controller', image: 'ferry:dev' }] },
      },
    },
  };
  const dry = await apps.createNamespacedDeployment({ namespace: ns, body: deployment, dryRun: 'All' });
  expect(dry.metadata?.name).toBe('ferry-controller');
  expect(dry.spec?.replicas).toBe(1); // defaults applied by the apiserver
  expect(dry.spec?.strategy?.type).toBe('RollingUpdate');
  expect(dry.spec?.template.spec?.containers[0]?.imagePullPolicy).toBe('IfNotPresent');
  // Nothing was stored.
  expect(await statusOf(apps.readNamespacedDeployment({ name: 'ferry-controller', namespace: ns }))).toBe(404);

  // A selector that does not match the template's labels is rejected, dry-run or not.
  const bad: k8s.V1Deployment = { ...deployment, spec: { ...deployment.spec!, selector: { matchLabels: { app: 'other' } } } };
  expect(await statusOf(apps.createNamespacedDeployment({ namespace: ns, body: bad, dryRun: 'All' }))).toBe(422);
});
