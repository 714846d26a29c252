/**
 * The kubelet's part for upload-server pods, as a background loop: every new `cdi-upload-*` pod the
 * controller makes is run locally (`ferry uploadserver` with the pod's environment, its TLS Secret
 * and temp dirs standing in for its volumes), reported Running, then Ready once its HTTPS /healthz
 * answers, and finally Succeeded/Failed with the real termination message. One server at a time
 * listens on `serverPort` (the proxy dials that address for every pod: there is no cluster DNS).
 * The data and scratch dirs are per claim, as volumes are: a later pod for the same PVC sees what
 * an earlier one left there.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CoreV1Api, V1Pod } from '@kubernetes/client-node';
import { UploadServerEnv } from '../../src/contract/upload-server.js';
import { FERRY_BIN } from './ferry-process.js';
import { setPodStatus } from './kubelet.js';

export interface UploadKubelet {
  /** The volumes dir of the latest server run for `namespace/pvc` (its `data/disk.img` is the volume). */
  volumesOf(namespace: string, pvc: string): string | undefined;
  /** Kills the server running for `namespace` and runs none of its pods any more (a test is done with it). */
  forget(namespace: string): void;
  /** Signals the server running for `namespace/pvc` now (SIGTERM: the pod deleted; SIGKILL: its node lost); its pod then Fails. Whether one ran. */
  kill(namespace: string, pvc: string, signal?: NodeJS.Signals): boolean;
  /** How many servers have run for `namespace/pvc`. */
  runsOf(namespace: string, pvc: string): number;
  /** The largest peak RSS (VmHWM, bytes) seen of a server for `namespace/pvc`, sampled every 100 ms while it ran. */
  peakRssOf(namespace: string, pvc: string): number | undefined;
  /** Stops the loop and every server still running (by PID). */
  stop(): Promise<void>;
}

const b64 = (s: string | undefined): string => Buffer.from(s ?? '', 'base64').toString('utf8');

function probe(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path: '/healthz', rejectUnauthorized: false, agent: false, timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

export interface UploadKubeletOptions {
  readonly serverPort: number;
  readonly dir: string;
  readonly everyMs?: number;
  /** The device standing in for a block PVC's volume (`/dev/cdi-block-volume` in the pod), e.g. a loop device. */
  readonly blockDevice?: (namespace: string, pvc: string) => string | undefined;
  /** A server still running after this long is SIGKILLed (default 120 s). */
  readonly serverTimeoutMs?: number;
}

export function startUploadKubelet(core: CoreV1Api, options: UploadKubeletOptions): UploadKubelet {
  const seen = new Set<string>();
  const children = new Set<ChildProcess>();
  const volumes = new Map<string, string>();
  const running = new Map<string, ChildProcess>();
  const runCounts = new Map<string, number>();
  const peaks = new Map<string, number>();
  let stopped = false;
  const forgotten = new Set<string>();
  let runs = 0;
  let chain: Promise<void> = Promise.resolve();

  async function runPod(pod: V1Pod): Promise<void> {
    const ns = pod.metadata?.namespace ?? '';
    if (stopped || forgotten.has(ns)) return;
    const pvc = pod.spec?.volumes?.find((v) => v.name === 'data')?.persistentVolumeClaim?.claimName ?? '';
    const scratchClaim = pod.spec?.volumes?.find((v) => v.name === 'scratch')?.persistentVolumeClaim?.claimName ?? 'no-scratch';
    const dir = join(options.dir, `${ns}-${pvc}`);
    const runDir = join(dir, `run-${++runs}`);
    const tlsDir = join(runDir, 'tls');
    const scratchDir = join(dir, scratchClaim);
    for (const d of [join(dir, 'data'), scratchDir, tlsDir]) mkdirSync(d, { recursive: true });
    runCounts.set(`${ns}/${pvc}`, (runCounts.get(`${ns}/${pvc}`) ?? 0) + 1);
    const secretName = pod.spec?.volumes?.find((v) => v.name === 'tls')?.secret?.secretName ?? '';
    const secret = await core.readNamespacedSecret({ namespace: ns, name: secretName });
    for (const [key, value] of Object.entries(secret.data ?? {})) writeFileSync(join(tlsDir, key), b64(value));
    const env: Record<string, string> = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', FERRY_LOG_LEVEL: 'warn' };
    const device = pod.spec?.containers?.[0]?.volumeDevices?.find((d) => d.name === 'data')?.devicePath;
    const deviceStandIn = device === undefined ? undefined : options.blockDevice?.(ns, pvc);
    if (device !== undefined && deviceStandIn === undefined) throw new Error(`pod ${ns}/${pod.metadata?.name} wants a block device and the test gave none`);
    for (const e of pod.spec?.containers?.[0]?.env ?? []) {
      if (e.value === undefined) continue;
      if (device !== undefined && deviceStandIn !== undefined && e.value === device) {
        env[e.name] = deviceStandIn;
        continue;
      }
      env[e.name] = e.value
        .replace(/^\/data(?=\/|$)/, join(dir, 'data'))
        .replace(/^\/scratch(?=\/|$)/, scratchDir)
        .replace(/^\/etc\/ferry\/upload-tls(?=\/|$)/, tlsDir);
    }
    Object.assign(env, { [UploadServerEnv.Port]: String(options.serverPort), [UploadServerEnv.Host]: '127.0.0.1', [UploadServerEnv.TerminationLog]: join(runDir, 'termination-log') });
    volumes.set(`${ns}/${pvc}`, dir);
    const child = spawn(process.execPath, [FERRY_BIN, 'uploadserver'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    children.add(child);
    running.set(`${ns}/${pvc}`, child);
    const sample = setInterval(() => {
      try {
        const kb = Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))?.[1] ?? '0');
        peaks.set(`${ns}/${pvc}`, Math.max(peaks.get(`${ns}/${pvc}`) ?? 0, kb * 1024));
      } catch {
        // gone between two samples
      }
    }, 100);
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.serverTimeoutMs ?? 120_000);
    const exited = new Promise<number>((resolve) =>
      child.on('close', (code) => {
        clearTimeout(timer);
        clearInterval(sample);
        children.delete(child);
        if (running.get(`${ns}/${pvc}`) === child) running.delete(`${ns}/${pvc}`);
        resolve(code ?? 1);
      }),
    );
    let done = false;
    void exited.then(() => (done = true));
    await setPodStatus(core, pod, 'Running', { podIP: '127.0.0.1', ready: false });
    for (let i = 0; i < 200 && !done && !stopped; i++) {
      if (await probe(options.serverPort)) {
        await setPodStatus(core, pod, 'Running', { podIP: '127.0.0.1', ready: true });
        break;
      }
      await sleep(100);
    }
    // A pod deleted under it (its PVC deleted, a test giving up) stops its server, as the kubelet would.
    while (!done && !stopped) {
      const live = await core.readNamespacedPod({ namespace: ns, name: pod.metadata?.name ?? '' }).catch(() => undefined);
      if (forgotten.has(ns) || !live || live.metadata?.uid !== pod.metadata?.uid || live.metadata?.deletionTimestamp) child.kill('SIGKILL');
      await Promise.race([exited, sleep(500)]);
    }
    const code = await exited;
    let termination = stderr.slice(-2000);
    try {
      termination = readFileSync(join(runDir, 'termination-log'), 'utf8');
    } catch {
      // no termination message: the stderr tail stands in, as FallbackToLogsOnError would
    }
    if (stopped) return;
    await setPodStatus(core, pod, code === 0 ? 'Succeeded' : 'Failed', { terminated: { exitCode: code, message: termination } }).catch(() => undefined);
  }

  const loop = (async () => {
    while (!stopped) {
      const pods = await core.listPodForAllNamespaces({ labelSelector: 'cdi.kubevirt.io=cdi-upload-server' }).catch(() => undefined);
      for (const pod of pods?.items ?? []) {
        const uid = pod.metadata?.uid ?? '';
        if (seen.has(uid) || pod.metadata?.deletionTimestamp) continue;
        seen.add(uid);
        // One port: servers run one after another, in the order their pods appeared.
        chain = chain.then(() => runPod(pod)).catch((err: unknown) => {
          process.stderr.write(`upload kubelet: ${String(err)}\n`);
        });
      }
      await sleep(options.everyMs ?? 200);
    }
  })();

  return {
    volumesOf: (namespace, pvc) => volumes.get(`${namespace}/${pvc}`),
    forget: (namespace) => void forgotten.add(namespace),
    kill: (namespace, pvc, signal = 'SIGKILL') => running.get(`${namespace}/${pvc}`)?.kill(signal) ?? false,
    runsOf: (namespace, pvc) => runCounts.get(`${namespace}/${pvc}`) ?? 0,
    peakRssOf: (namespace, pvc) => peaks.get(`${namespace}/${pvc}`),
    async stop() {
      stopped = true;
      await loop;
      for (const child of children) child.kill('SIGKILL');
      await chain;
    },
  };
}
