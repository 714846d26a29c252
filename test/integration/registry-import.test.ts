/**
 * A registry import end to end on a real kube-apiserver: a PVC annotated for CDI's `registry`
 * source with a Secret (accessKeyId/secretKey) and a CA ConfigMap becomes an importer pod; the
 * tests play the kubelet (resolving the secret references and mounting the ConfigMap into a temp
 * dir) and run the real importer against a real TLS + htpasswd registry. A qcow2 containerDisk
 * needs scratch: the first pod asks for it and the controller recreates the pod with it.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CoreV1Api } from '@kubernetes/client-node';
import { Annotation, PodPath } from '../../src/api/cdi.js';
import { decodeTermination } from '../../src/contract/termination.js';
import type { ImportController } from '../../controller/import/import-controller.js';
import { startControlPlane, type ControlPlane } from '../helpers/cluster.js';
import { convertImage, expectSameDisk, makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { annotationsWhen, importerPod, newImportController, pvcBody, runPod, testControllerConfig } from '../helpers/import-harness.js';
import { waitFor } from '../helpers/kubelet.js';
import { pushImage, startRegistry, type TestRegistry, writeOciLayout } from '../helpers/registry.js';

const USER = 'puller';
const PASSWORD = 'registry-pw';

let cp: ControlPlane;
let core: CoreV1Api;
let controller: ImportController;
let dir: string;
let registry: TestRegistry;

beforeAll(async () => {
  dir = tempDir('ferry-registry-int-');
  cp = await startControlPlane();
  core = cp.kubeConfig.makeApiClient(CoreV1Api);
  makeRawDisk(join(dir, 'disk.raw'), 8 * MiB);
  convertImage(join(dir, 'disk.raw'), 'qcow2', join(dir, 'disk.qcow2'));
  registry = await startRegistry(join(dir, 'registry'), { tls: true, htpasswd: { user: USER, password: PASSWORD } });
  for (const [name, file] of [['qcow2', 'disk.qcow2'], ['raw', 'disk.img']] as const) {
    const layout = join(dir, `layout-${name}`);
    const source = join(dir, name === 'qcow2' ? 'disk.qcow2' : 'disk.raw');
    await writeOciLayout(layout, 'v1', { layers: [{ entries: [{ name: 'disk/', type: 'directory' }, { name: `disk/${file}`, file: source }] }] });
    await pushImage(layout, 'v1', registry, `containerdisks/${name}`, { creds: `${USER}:${PASSWORD}` });
  }
  controller = newImportController(cp.kubeConfig, await testControllerConfig());
  await controller.start();
}, 180_000);

afterAll(async () => {
  await controller?.stop();
  await registry?.stop();
  await cp?.stop();
  if (dir) removeDir(dir);
});

async function withCredentials(namespace: string, password: string): Promise<void> {
  await core.createNamespacedSecret({ namespace, body: { metadata: { name: 'registry-creds' }, stringData: { accessKeyId: USER, secretKey: password } } });
  await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: 'registry-ca' }, data: { 'ca.crt': readFileSync(registry.caFile ?? '', 'utf8') } } });
}

function registryAnnotations(repo: string): Record<string, string> {
  return {
    [Annotation.Endpoint]: `docker://${registry.host}/${repo}:v1`,
    [Annotation.Source]: 'registry',
    [Annotation.SecretName]: 'registry-creds',
    [Annotation.CertConfigMap]: 'registry-ca',
  };
}

/** The disk the importer wrote: the image, grown to the PVC's usable size (6 % overhead). */
const USABLE = Math.floor(Math.ceil(0.94 * 64 * MiB) / MiB) * MiB;

describe('registry imports through the controller', () => {
  test('a qcow2 containerDisk with a secret and a CA: the first pod asks for scratch, the second completes', async () => {
    const ns = await cp.newNamespace();
    await withCredentials(ns, PASSWORD);
    await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: pvcBody('vm-disk', registryAnnotations('containerdisks/qcow2'), { storageClassName: 'local' }) });
    const first = await importerPod(core, ns, 'vm-disk');
    const container = first.spec?.containers?.[0];
    const plainEnv = Object.fromEntries((container?.env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, e.value]));
    expect(plainEnv).toMatchObject({ IMPORTER_SOURCE: 'registry', IMPORTER_ENDPOINT: `docker://${registry.host}/containerdisks/qcow2:v1`, IMPORTER_CERT_DIR: PodPath.Certs });
    expect(container?.env?.find((e) => e.name === 'IMPORTER_SECRET_KEY')?.valueFrom?.secretKeyRef).toMatchObject({ name: 'registry-creds', key: 'secretKey' });
    expect(JSON.stringify(first)).not.toContain(PASSWORD);

    const firstRun = await runPod(core, first, join(dir, 'vm-disk-1'));
    expect(firstRun.exitCode).toBe(0);
    expect(decodeTermination(firstRun.terminationMessage)).toMatchObject({ kind: 'success', scratchSpaceRequired: true });
    await annotationsWhen(core, ns, 'vm-disk', (a) => a[Annotation.RequiresScratch] === 'true');

    const second = await importerPod(core, ns, 'vm-disk', first.metadata?.uid);
    expect(second.spec?.volumes?.find((v) => v.name === 'scratch')).toMatchObject({ persistentVolumeClaim: { claimName: 'vm-disk-scratch' } });
    const volumes = join(dir, 'vm-disk-2');
    const secondRun = await runPod(core, second, volumes);
    expect(secondRun.exitCode).toBe(0);
    expect(decodeTermination(secondRun.terminationMessage)).toMatchObject({ kind: 'success', scratchSpaceRequired: false, sourceFormat: 'qcow2' });

    const done = await annotationsWhen(core, ns, 'vm-disk', (a) => a[Annotation.PodPhase] === 'Succeeded');
    expect(done).toMatchObject({
      [Annotation.RunningCondition]: 'false',
      [Annotation.RunningReason]: 'Completed',
      [Annotation.Progress]: '100.0%',
      [Annotation.RequiresScratch]: 'true',
    });
    expect(done[Annotation.ErrorCode]).toBeUndefined();
    expect(expectSameDisk(join(volumes, 'data', 'disk.img'), join(dir, 'disk.raw'), USABLE)).toBe(true);
    const events = await waitFor('ImportSucceeded event', async () => {
      const list = await core.listNamespacedEvent({ namespace: ns, fieldSelector: 'involvedObject.name=vm-disk' });
      const reasons = list.items.map((e) => e.reason);
      return reasons.includes('ImportSucceeded') ? reasons : undefined;
    });
    expect(events).toContain('ImportSucceeded');
    await waitFor('scratch PVC deleted', async () => {
      const left = await core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: 'vm-disk-scratch' }).catch(() => undefined);
      return !left || left.metadata?.deletionTimestamp ? true : undefined;
    });
  });

  test('a raw containerDisk completes in the first pod, without scratch', async () => {
    const ns = await cp.newNamespace();
    await withCredentials(ns, PASSWORD);
    await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: pvcBody('raw-disk', registryAnnotations('containerdisks/raw'), { storageClassName: 'local' }) });
    const pod = await importerPod(core, ns, 'raw-disk');
    const volumes = join(dir, 'raw-disk');
    const run = await runPod(core, pod, volumes);
    expect(run.exitCode).toBe(0);
    const done = await annotationsWhen(core, ns, 'raw-disk', (a) => a[Annotation.PodPhase] === 'Succeeded');
    expect(done[Annotation.RequiresScratch]).toBeUndefined();
    expect(expectSameDisk(join(volumes, 'data', 'disk.img'), join(dir, 'disk.raw'), USABLE)).toBe(true);
  });

  test('a wrong password in the secret fails at once with UNAUTHORIZED on the PVC', async () => {
    const ns = await cp.newNamespace();
    await withCredentials(ns, 'not-the-password');
    await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: pvcBody('denied', registryAnnotations('containerdisks/raw'), { storageClassName: 'local' }) });
    const pod = await importerPod(core, ns, 'denied');
    const run = await runPod(core, pod, join(dir, 'denied'));
    expect(run.exitCode).toBe(11);
    const failed = await annotationsWhen(core, ns, 'denied', (a) => a[Annotation.PodPhase] === 'Failed');
    expect(failed).toMatchObject({ [Annotation.FatalError]: 'true', [Annotation.ErrorCode]: 'UNAUTHORIZED', [Annotation.PodRestarts]: '0' });
  });
});
