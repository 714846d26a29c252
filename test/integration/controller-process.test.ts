/**
 * `ferry controller` as a real process against the real apiserver: health endpoints, leader
 * election between two replicas, work, and a graceful exit that hands the Lease over.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { CoordinationV1Api, CoreV1Api } from '@kubernetes/client-node';
import { startControlPlane, type ControlPlane } from '../helpers/cluster.js';
import { freePort, startFerry, type RunningProcess } from '../helpers/ferry-process.js';
import { waitFor } from '../helpers/kubelet.js';

let cp: ControlPlane;

beforeAll(async () => {
  cp = await startControlPlane();
}, 120_000);

afterAll(async () => {
  await cp?.stop();
});

async function status(url: string): Promise<number | undefined> {
  return fetch(url).then((r) => r.status, () => undefined);
}

describe('ferry controller process', () => {
  test('two replicas: one acts, both are healthy; SIGTERM exits 0 and the other takes over', async () => {
    const ns = await cp.newNamespace();
    const leaseNs = await cp.newNamespace('lease');
    const core = cp.kubeConfig.makeApiClient(CoreV1Api);
    const leases = cp.kubeConfig.makeApiClient(CoordinationV1Api);
    const ports = [await freePort(), await freePort()];
    const start = (id: string, port: number): RunningProcess =>
      startFerry(['controller', '--kubeconfig', cp.kubeconfigPath, '--namespace', ns, '--lease-namespace', leaseNs, '--id', id, '--health-port', String(port), '--importer-image', 'localhost/ferry:test', '--log-level', 'warn']);
    const a = start('replica-a', ports[0] as number);
    await waitFor('replica-a holds the lease', async () => {
      const lease = await leases.readNamespacedLease({ namespace: leaseNs, name: 'ferry-controller' }).catch(() => undefined);
      return lease?.spec?.holderIdentity === 'replica-a' ? true : undefined;
    });
    const b = start('replica-b', ports[1] as number);
    for (const port of ports) {
      await waitFor(`healthz on ${port}`, async () => ((await status(`http://127.0.0.1:${port}/healthz`)) === 200 ? true : undefined));
      await waitFor(`readyz on ${port}`, async () => ((await status(`http://127.0.0.1:${port}/readyz`)) === 200 ? true : undefined));
    }
    const metrics = await fetch(`http://127.0.0.1:${ports[0]}/metrics`).then((r) => r.text());
    expect(metrics).toContain('ferry_controller_reconcile_total');

    await core.createNamespacedPersistentVolumeClaim({
      namespace: ns,
      body: { metadata: { name: 'one', annotations: { 'cdi.kubevirt.io/storage.import.endpoint': 'http://127.0.0.1:9/a.img' } }, spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } } },
    });
    await waitFor('importer pod', () => core.readNamespacedPod({ namespace: ns, name: 'importer-one' }).catch(() => undefined));

    a.kill('SIGTERM');
    const exitA = await a.done;
    expect(exitA.code).toBe(0);
    await waitFor('replica-b takes the lease', async () => {
      const lease = await leases.readNamespacedLease({ namespace: leaseNs, name: 'ferry-controller' }).catch(() => undefined);
      return lease?.spec?.holderIdentity === 'replica-b' ? true : undefined;
    }, 20_000);
    // The new leader works too: it imports a second PVC.
    await core.createNamespacedPersistentVolumeClaim({
      namespace: ns,
      body: { metadata: { name: 'two', annotations: { 'cdi.kubevirt.io/storage.import.endpoint': 'http://127.0.0.1:9/b.img' } }, spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } } },
    });
    await waitFor('second importer pod', () => core.readNamespacedPod({ namespace: ns, name: 'importer-two' }).catch(() => undefined));
    expect((await core.listNamespacedPod({ namespace: ns })).items.map((p) => p.metadata?.name).sort()).toEqual(['importer-one', 'importer-two']);
    b.kill('SIGTERM');
    expect((await b.done).code).toBe(0);
  }, 90_000);
});
