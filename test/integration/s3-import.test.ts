/**
 * An S3 import the CDI way, end to end: a PVC annotated with an S3 endpoint and a secret on a real
 * kube-apiserver, the controller's importer pod, and the real importer program run locally with
 * that pod's environment (secret references resolved as the kubelet would) against a real radosgw.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { join } from 'node:path';
import { CoreV1Api, type V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { Annotation } from '../../src/api/cdi.js';
import type { ImportController } from '../../controller/import/import-controller.js';
import { startControlPlane, type ControlPlane } from '../helpers/cluster.js';
import { convertImage, expectSameDisk, makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { annotationsWhen, importerPod, newImportController, pvcBody, runPod, testControllerConfig } from '../helpers/import-harness.js';
import { startRgw, type Rgw } from '../helpers/rgw.js';

let cp: ControlPlane;
let rgw: Rgw;
let core: CoreV1Api;
let controller: ImportController;
let dir: string;

beforeAll(async () => {
  dir = tempDir();
  makeRawDisk(join(dir, 'disk.raw'), 8 * MiB);
  convertImage(join(dir, 'disk.raw'), 'qcow2', join(dir, 'disk.qcow2'));
  [cp, rgw] = await Promise.all([startControlPlane(), startRgw()]);
  await rgw.createBucket('images');
  await rgw.putFile('images', 'fedora/disk.qcow2', join(dir, 'disk.qcow2'));
  core = cp.kubeConfig.makeApiClient(CoreV1Api);
  controller = newImportController(cp.kubeConfig, await testControllerConfig({ maxRetries: 0 }));
  await controller.start();
}, 180_000);

afterAll(async () => {
  await controller?.stop();
  await rgw?.stop();
  await cp?.stop();
  if (dir) removeDir(dir);
});

function s3Pvc(name: string, secretName: string): V1PersistentVolumeClaim {
  return pvcBody(name, { [Annotation.Endpoint]: `${rgw.url}/images/fedora/disk.qcow2`, [Annotation.Source]: 's3', [Annotation.SecretName]: secretName });
}

describe('s3 import through the controller', () => {
  test('an s3-annotated PVC with a key secret is imported (qcow2, through scratch space as CDI does)', async () => {
    const ns = await cp.newNamespace();
    await core.createNamespacedSecret({ namespace: ns, body: { metadata: { name: 's3-keys' }, stringData: { accessKeyId: rgw.accessKeyId, secretKey: rgw.secretKey } } });
    await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: s3Pvc('from-s3', 's3-keys') });

    const first = await importerPod(core, ns, 'from-s3');
    const env = first.spec?.containers?.[0]?.env ?? [];
    expect(env.find((e) => e.name === 'IMPORTER_SOURCE')?.value).toBe('s3');
    expect(env.find((e) => e.name === 'IMPORTER_ENDPOINT')?.value).toBe(`${rgw.url}/images/fedora/disk.qcow2`);
    expect(env.find((e) => e.name === 'IMPORTER_ACCESS_KEY_ID')?.valueFrom?.secretKeyRef).toMatchObject({ name: 's3-keys', key: 'accessKeyId' });
    expect(env.find((e) => e.name === 'IMPORTER_SECRET_KEY')?.valueFrom?.secretKeyRef).toMatchObject({ name: 's3-keys', key: 'secretKey' });
    expect(JSON.stringify(first)).not.toContain(rgw.secretKey);

    // The first run finds a qcow2 and no scratch volume, and says so.
    const volumes = join(dir, 'from-s3-volumes');
    const asked = await runPod(core, first, volumes);
    expect(asked.exitCode).toBe(0);
    await annotationsWhen(core, ns, 'from-s3', (a) => a[Annotation.RequiresScratch] === 'true');

    // The second pod has scratch space; the import completes.
    const second = await importerPod(core, ns, 'from-s3', first.metadata?.uid);
    const done = await runPod(core, second, volumes);
    expect(done.exitCode).toBe(0);
    const a = await annotationsWhen(core, ns, 'from-s3', (x) => x[Annotation.PodPhase] === 'Succeeded');
    expect(a[Annotation.RunningReason]).toBe('Completed');
    expect(a[Annotation.ErrorCode]).toBeUndefined();
    const usable = Math.floor(Math.ceil(0.94 * 64 * MiB) / MiB) * MiB;
    expect(expectSameDisk(join(volumes, 'data', 'disk.img'), join(dir, 'disk.raw'), usable)).toBe(true);
  });

  test('a secret with the wrong key fails the import as UNAUTHORIZED, for good', async () => {
    const ns = await cp.newNamespace();
    await core.createNamespacedSecret({ namespace: ns, body: { metadata: { name: 'bad-keys' }, stringData: { accessKeyId: rgw.accessKeyId, secretKey: 'not-the-secret' } } });
    await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: s3Pvc('denied', 'bad-keys') });
    const pod = await importerPod(core, ns, 'denied');
    const run = await runPod(core, pod, join(dir, 'denied-volumes'));
    expect(run.exitCode).toBe(11);
    const a = await annotationsWhen(core, ns, 'denied', (x) => x[Annotation.PodPhase] === 'Failed');
    expect(a[Annotation.ErrorCode]).toBe('UNAUTHORIZED');
    expect(a[Annotation.FatalError]).toBe('true');
    expect(a[Annotation.RunningMessage]).toContain('SignatureDoesNotMatch');
  });
});
