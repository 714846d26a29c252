/**
 * `ferry controller` as a real process against the real apiserver: health endpoints, leader
 * election between two replicas, work, and a graceful exit that hands the Lease over; a missing
 * Lease namespace said in one line and shown by readiness; the watched namespaces honoured by the
 * VM controller; a bounded exit when the apiserver stops answering.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { CoordinationV1Api, CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { API_VERSION, GROUP, Kind, Plural, VERSION, type VirtualMachineInstance } from '../../src/api/kubevirt.js';
import { startControlPlane, type ControlPlane } from '../helpers/cluster.js';
import { installVmCrds } from '../helpers/crds.js';
import { freePort, startFerry, type ProcessResult, type RunningProcess } from '../helpers/ferry-process.js';
import { waitFor } from '../helpers/kubelet.js';
import { startTcpRelay } from '../helpers/tcp-relay.js';

let cp: ControlPlane;

beforeAll(async () => {
  cp = await startControlPlane();
  await installVmCrds(cp.kubeConfig);
}, 120_000);

afterAll(async () => {
  await cp?.stop();
});

async function status(url: string): Promise<number | undefined> {
  return fetch(url).then((r) => r.status, () => undefined);
}

async function readyz(port: number): Promise<{ status: number; body: string } | undefined> {
  return fetch(`http://127.0.0.1:${port}/readyz`).then(async (r) => ({ status: r.status, body: await r.text() }), () => undefined);
}

/** The process's pino lines, parsed. */
function logLines(result: ProcessResult): Array<Record<string, unknown> & { raw: string }> {
  return result.stdout
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((raw) => ({ ...(JSON.parse(raw) as Record<string, unknown>), raw }));
}

/** Stops a process started here: SIGTERM, then SIGKILL after 5 s. */
async function stop(p: RunningProcess): Promise<ProcessResult> {
  p.kill('SIGTERM');
  const timer = setTimeout(() => p.kill('SIGKILL'), 5000);
  const result = await p.done;
  clearTimeout(timer);
  return result;
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

  test('a missing Lease namespace: one line naming it and the fixes, readiness 503 with it; it leads once the namespace exists', async () => {
    const ns = await cp.newNamespace();
    const leaseNs = `ferry-missing-${process.pid}`;
    const port = await freePort();
    const p = startFerry(['controller', '--kubeconfig', cp.kubeconfigPath, '--namespace', ns, '--lease-namespace', leaseNs, '--id', 'lonely', '--health-port', String(port), '--importer-image', 'localhost/ferry:test']);
    let result: ProcessResult | undefined;
    try {
      await waitFor('readyz answers', async () => ((await readyz(port)) ? true : undefined));
      // Two attempts at least (they are 5 s apart).
      await sleep(6000);
      const ready = await readyz(port);
      expect(ready?.status).toBe(503);
      expect(ready?.body).toContain(leaseNs);
      expect(ready?.body).toContain('--leader-elect false');
      await cp.kubeConfig.makeApiClient(CoreV1Api).createNamespace({ body: { metadata: { name: leaseNs } } });
      await waitFor('leader once the namespace exists', async () => ((await readyz(port))?.status === 200 ? true : undefined), 20_000);
    } finally {
      result = await stop(p);
    }
    const lines = logLines(result);
    const told = lines.filter((l) => String(l.msg).includes(leaseNs));
    expect(told).toHaveLength(1);
    expect(told[0]?.msg).toMatch(/does not exist/);
    expect(told[0]?.msg).toContain('kubectl apply -k manifests/');
    expect(told[0]?.msg).toContain('--lease-namespace');
    expect(told[0]?.msg).toContain('--leader-elect false');
    // No raw client-node dump anywhere.
    for (const l of lines) {
      expect(l.raw).not.toContain('HTTP-Code');
      expect(l.raw).not.toContain('Headers:');
    }
    expect(result.code).toBe(0);
  }, 60_000);

  test('two --namespace flags: the VM controller reconciles VMIs in both and leaves a third namespace alone', async () => {
    const [a, b, c] = [await cp.newNamespace('vm-a'), await cp.newNamespace('vm-b'), await cp.newNamespace('vm-c')];
    const custom = cp.kubeConfig.makeApiClient(CustomObjectsApi);
    const core = cp.kubeConfig.makeApiClient(CoreV1Api);
    const vmi = (namespace: string) =>
      custom.createNamespacedCustomObject({
        group: GROUP,
        version: VERSION,
        namespace,
        plural: Plural.VMI,
        body: {
          apiVersion: API_VERSION,
          kind: Kind.VMI,
          metadata: { name: 'guest' },
          spec: { domain: { memory: { guest: '128Mi' }, devices: {} } },
        } satisfies VirtualMachineInstance,
      });
    for (const ns of [a, b, c]) await vmi(ns);
    const p = startFerry(['controller', '--kubeconfig', cp.kubeconfigPath, '--controllers', 'vm', '--namespace', a, '--namespace', b, '--leader-elect', 'false', '--health-port', '0', '--launcher-image', 'localhost/ferry-launcher:test', '--log-level', 'warn']);
    try {
      const read = async (namespace: string) => (await custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: Plural.VMI, name: 'guest' })) as VirtualMachineInstance;
      for (const ns of [a, b]) await waitFor(`the VMI in ${ns} has a phase`, async () => ((await read(ns)).status?.phase ? true : undefined));
      // The watched namespaces were reconciled; give the unwatched one the same time and more.
      await sleep(2000);
      expect((await core.listNamespacedPod({ namespace: c })).items.map((pod) => pod.metadata?.name)).toEqual([]);
      const untouched = await read(c);
      expect(untouched.status).toBeUndefined();
      expect(untouched.metadata.finalizers ?? []).toEqual([]);
    } finally {
      await stop(p);
    }
  }, 60_000);

  test('SIGTERM while the apiserver does not answer: the process exits within seconds', async () => {
    const ns = await cp.newNamespace();
    const leaseNs = await cp.newNamespace('lease');
    const server = new URL(cp.server);
    const relay = await startTcpRelay(server.hostname, Number(server.port));
    const kubeconfig = join(cp.runDir, 'relay.kubeconfig');
    writeFileSync(kubeconfig, readFileSync(cp.kubeconfigPath, 'utf8').split(cp.server).join(`https://127.0.0.1:${relay.port}`));
    const port = await freePort();
    const leases = cp.kubeConfig.makeApiClient(CoordinationV1Api);
    const p = startFerry(['controller', '--kubeconfig', kubeconfig, '--namespace', ns, '--lease-namespace', leaseNs, '--id', 'hung', '--health-port', String(port), '--importer-image', 'localhost/ferry:test', '--log-level', 'warn']);
    try {
      await waitFor('the lease is held', async () => {
        const lease = await leases.readNamespacedLease({ namespace: leaseNs, name: 'ferry-controller' }).catch(() => undefined);
        return lease?.spec?.holderIdentity === 'hung' ? true : undefined;
      });
      await waitFor('ready', async () => ((await readyz(port))?.status === 200 ? true : undefined));
      relay.freeze();
      const began = Date.now();
      p.kill('SIGTERM');
      const giveUp = new AbortController();
      const outcome = await Promise.race([
        p.done.then((r) => ({ exited: true as const, r })),
        sleep(10_000, undefined, { signal: giveUp.signal }).then(() => ({ exited: false as const }), () => ({ exited: false as const })),
      ]);
      giveUp.abort();
      expect(outcome.exited).toBe(true);
      expect(Date.now() - began).toBeLessThan(10_000);
      if (outcome.exited) expect(outcome.r.code).toBe(0);
    } finally {
      p.kill('SIGKILL');
      await p.done;
      await relay.close();
    }
  }, 60_000);
});
