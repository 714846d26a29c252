/**
 * The DataVolume controller inside `ferry controller`, a real process against the real apiserver:
 * registered by default beside the import controller (a DataVolume becomes a PVC, the PVC an
 * importer pod), and selectable alone with --controllers.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { DV_GROUP, DV_PLURAL, DV_VERSION } from '../../src/api/datavolume.js';
import { startControlPlane, type ControlPlane } from '../helpers/cluster.js';
import { installCrds } from '../helpers/crds.js';
import { freePort, startFerry, type RunningProcess } from '../helpers/ferry-process.js';
import { waitFor } from '../helpers/kubelet.js';

let cp: ControlPlane;

beforeAll(async () => {
  cp = await startControlPlane();
  await installCrds(cp.kubeConfig);
}, 120_000);

afterAll(async () => {
  await cp?.stop();
});

async function run(extra: string[], body: (port: number) => Promise<void>): Promise<void> {
  const port = await freePort();
  const p: RunningProcess = startFerry(['controller', '--kubeconfig', cp.kubeconfigPath, '--leader-elect', 'false', '--health-port', String(port), '--importer-image', 'localhost/ferry:test', '--log-level', 'warn', ...extra]);
  try {
    await waitFor('readyz 200', async () => ((await fetch(`http://127.0.0.1:${port}/readyz`).then((r) => r.status, () => 0)) === 200 ? true : undefined), 30_000);
    await body(port);
  } finally {
    p.kill('SIGTERM');
    const timer = setTimeout(() => p.kill('SIGKILL'), 5000);
    const result = await p.done;
    clearTimeout(timer);
    expect(result.code).toBe(0);
  }
}

const dv = (name: string) => ({ apiVersion: `${DV_GROUP}/${DV_VERSION}`, kind: 'DataVolume', metadata: { name }, spec: { source: { blank: {} }, storage: { resources: { requests: { storage: '16Mi' } } } } });

describe('ferry controller with DataVolumes', () => {
  test('by default: the DataVolume gets its PVC, the import controller its importer pod, the DataVolume its phase', async () => {
    const ns = await cp.newNamespace();
    const core = cp.kubeConfig.makeApiClient(CoreV1Api);
    const custom = cp.kubeConfig.makeApiClient(CustomObjectsApi);
    await run([], async () => {
      await custom.createNamespacedCustomObject({ group: DV_GROUP, version: DV_VERSION, namespace: ns, plural: DV_PLURAL, body: dv('disk') });
      await waitFor('importer pod', () => core.readNamespacedPod({ namespace: ns, name: 'importer-disk' }).catch(() => undefined));
      await waitFor('phase ImportScheduled', async () => {
        const got = (await custom.getNamespacedCustomObject({ group: DV_GROUP, version: DV_VERSION, namespace: ns, plural: DV_PLURAL, name: 'disk' })) as { status?: { phase?: string } };
        return got.status?.phase === 'ImportScheduled' ? true : undefined;
      });
    });
  });

  test('--controllers datavolume: the PVC is created, no importer runs', async () => {
    const ns = await cp.newNamespace();
    const core = cp.kubeConfig.makeApiClient(CoreV1Api);
    const custom = cp.kubeConfig.makeApiClient(CustomObjectsApi);
    await run(['--controllers', 'datavolume'], async () => {
      await custom.createNamespacedCustomObject({ group: DV_GROUP, version: DV_VERSION, namespace: ns, plural: DV_PLURAL, body: dv('only') });
      await waitFor('the PVC', () => core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: 'only' }).catch(() => undefined));
      await new Promise((r) => setTimeout(r, 1000));
      expect((await core.listNamespacedPod({ namespace: ns })).items).toHaveLength(0);
    });
  });
});
