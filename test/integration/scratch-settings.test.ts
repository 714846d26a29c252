/**
 * Scratch PVCs under CDIConfig on a real kube-apiserver: the import and the upload controller both
 * give scratch CDIConfig's scratchSpaceStorageClass, sized as CDI sizes it (the target's usable
 * space under its class's overhead, grown by the scratch class's overhead, whole MiB). The
 * controllers run in this process with the same settings cache `ferry controller` wires.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { Annotation, UploadAnnotation } from '../../src/api/cdi.js';
import { CDICONFIG_GROUP, CDICONFIG_NAME, CDICONFIG_PLURAL, CDICONFIG_VERSION } from '../../src/api/cdiconfig.js';
import { UploadAnnotation as UploadClientAnnotation } from '../../src/contract/upload-api.js';
import { silentLogger } from '../../src/logging.js';
import type { ControllerConfig } from '../../controller/config.js';
import { ImportController } from '../../controller/import/import-controller.js';
import { CdiSettingsCache, flagDefaults } from '../../controller/runtime/cdi-settings.js';
import { InformerFactory } from '../../controller/runtime/informers.js';
import { UploadController } from '../../controller/upload/upload-controller.js';
import { startControlPlane, type ControlPlane } from '../helpers/cluster.js';
import { installCrds } from '../helpers/crds.js';
import { pvcBody, testControllerConfig } from '../helpers/import-harness.js';
import { waitFor } from '../helpers/kubelet.js';

let cp: ControlPlane;
let core: CoreV1Api;
let informers: InformerFactory;
let settings: CdiSettingsCache;
let imports: ImportController;
let uploads: UploadController;
let config: ControllerConfig;

beforeAll(async () => {
  cp = await startControlPlane();
  core = cp.kubeConfig.makeApiClient(CoreV1Api);
  const custom = cp.kubeConfig.makeApiClient(CustomObjectsApi);
  await installCrds(cp.kubeConfig);
  // The admin's settings, there before the controllers list them.
  await custom.createClusterCustomObject({
    group: CDICONFIG_GROUP,
    version: CDICONFIG_VERSION,
    plural: CDICONFIG_PLURAL,
    body: {
      apiVersion: `${CDICONFIG_GROUP}/${CDICONFIG_VERSION}`,
      kind: 'CDIConfig',
      metadata: { name: CDICONFIG_NAME },
      spec: { scratchSpaceStorageClass: 'scratchy', filesystemOverhead: { global: '0.06', storageClass: { local: '0.2', scratchy: '0.1' } } },
    },
  });
  const ferryNs = await cp.newNamespace('ferry');
  config = await testControllerConfig({ ferryNamespace: ferryNs });
  informers = new InformerFactory(cp.kubeConfig, [], silentLogger());
  settings = new CdiSettingsCache(informers, custom, flagDefaults(config), silentLogger());
  // Resolves once CDIConfig has been listed: the first PVC is planned with the admin's settings.
  await settings.start();
  imports = new ImportController({ kubeConfig: cp.kubeConfig, config, logger: silentLogger(), registry: new Registry(), informers, settings });
  uploads = new UploadController({ kubeConfig: cp.kubeConfig, config, logger: silentLogger(), informers, settings });
  await Promise.all([imports.start(), uploads.start()]);
}, 120_000);

afterAll(async () => {
  await Promise.all([imports?.stop(), uploads?.stop(), settings?.stop()]);
  await informers?.stop();
  await cp?.stop();
});

const scratchOf = (namespace: string, pvc: string) =>
  waitFor(`scratch PVC of ${pvc}`, () => core.readNamespacedPersistentVolumeClaim({ namespace, name: `${pvc}-scratch` }).catch(() => undefined), 30_000);

// By hand, CDI's formula: 1Gi on `local` (20 %): usable floor(ceil(0.8 * 1024 MiB) / MiB) = 819 MiB;
// on `scratchy` (10 %): ceil(819 MiB / 0.9) = 910 MiB.
const SCRATCH_FOR_1GI_LOCAL = '910Mi';
// A Block target keeps all 1024 MiB: ceil(1024 MiB / 0.9) → 1138 MiB.
const SCRATCH_FOR_1GI_BLOCK = '1138Mi';

describe('scratch PVCs take CDIConfig\'s scratch class and CDI\'s size', () => {
  test('import: a PVC that requires scratch', async () => {
    const ns = await cp.newNamespace();
    await core.createNamespacedPersistentVolumeClaim({
      namespace: ns,
      body: pvcBody('staged', { [Annotation.Endpoint]: 'http://127.0.0.1:9/disk.qcow2', [Annotation.RequiresScratch]: 'true' }, { storageClassName: 'local', resources: { requests: { storage: '1Gi' } } }),
    });
    const scratch = await scratchOf(ns, 'staged');
    expect(scratch.spec?.storageClassName).toBe('scratchy');
    expect(scratch.spec?.volumeMode).toBe('Filesystem');
    expect(scratch.spec?.resources?.requests?.storage).toBe(SCRATCH_FOR_1GI_LOCAL);
  });

  test.each<[string, 'Filesystem' | 'Block', string]>([
    ['a Filesystem target', 'Filesystem', SCRATCH_FOR_1GI_LOCAL],
    ['a Block target', 'Block', SCRATCH_FOR_1GI_BLOCK],
  ])('upload: a resumable upload (scratch from the start) to %s', async (_what, volumeMode, size) => {
    const ns = await cp.newNamespace();
    const name = volumeMode === 'Block' ? 'up-block' : 'up';
    await core.createNamespacedPersistentVolumeClaim({
      namespace: ns,
      body: pvcBody(name, { [UploadAnnotation.Target]: '', [UploadClientAnnotation.Resumable]: 'true' }, { storageClassName: 'local', volumeMode, resources: { requests: { storage: '1Gi' } } }),
    });
    const scratch = await scratchOf(ns, name);
    expect(scratch.spec?.storageClassName).toBe('scratchy');
    expect(scratch.spec?.volumeMode).toBe('Filesystem');
    expect(scratch.spec?.resources?.requests?.storage).toBe(size);
    // Owned by the target, as the import's scratch is (removed with it).
    expect(scratch.metadata?.ownerReferences?.[0]).toMatchObject({ kind: 'PersistentVolumeClaim', name, controller: true });
  });
});
