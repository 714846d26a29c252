/**
 * Benchmark: N annotated PVCs → N importer pods, on the real apiserver. Measures the time from the
 * first PVC create to the N-th importer pod existing, and the controller process's peak RSS.
 * Run: npm run build && node dist/bench/controller-scale.js [N]
 */

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { CoreV1Api } from '@kubernetes/client-node';
import { startControlPlane } from '../test/helpers/cluster.js';
import { FERRY_BIN } from '../test/helpers/ferry-process.js';

function rssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const hwm = /VmHWM:\s+(\d+) kB/.exec(status);
  return hwm ? Number(hwm[1]) / 1024 : 0;
}

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? 1000);
  const cp = await startControlPlane();
  const core = cp.kubeConfig.makeApiClient(CoreV1Api);
  const ns = await cp.newNamespace('bench');
  const controller = spawn(process.execPath, [FERRY_BIN, 'controller', '--kubeconfig', cp.kubeconfigPath, '--leader-elect', 'false', '--health-port', '0', '--log-level', 'warn', '--namespace', ns], {
    stdio: ['ignore', 'ignore', 'inherit'],
    // FERRY_BENCH_NODE_OPTIONS lets a run compare V8 heap settings for the controller process.
    env: { ...process.env, NODE_OPTIONS: process.env.FERRY_BENCH_NODE_OPTIONS ?? '' },
  });
  try {
    await new Promise((r) => setTimeout(r, 2000));
    const start = Date.now();
    // Create the PVCs with bounded parallelism, as a user applying a big manifest would.
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < n) {
        const i = next++;
        await core.createNamespacedPersistentVolumeClaim({
          namespace: ns,
          body: {
            metadata: { name: `disk-${i}`, annotations: { 'cdi.kubevirt.io/storage.import.endpoint': `http://images.example/disk-${i}.qcow2` } },
            spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } },
          },
        });
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
    const created = Date.now();
    let pods = 0;
    const deadline = Date.now() + 300_000;
    while (Date.now() < deadline) {
      pods = (await core.listNamespacedPod({ namespace: ns, labelSelector: 'cdi.kubevirt.io=importer' })).items.length;
      if (pods >= n) break;
      await new Promise((r) => setTimeout(r, 250));
    }
    const done = Date.now();
    const rss = rssMiB(controller.pid ?? 0);
    console.log(JSON.stringify({ pvcs: n, pods, createPvcsSeconds: (created - start) / 1000, allPodsSeconds: (done - start) / 1000, controllerPeakRssMiB: Math.round(rss) }));
  } finally {
    controller.kill('SIGTERM');
    await cp.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
