/**
 * There is no kubelet in the test control plane, so tests play its part through the API: they
 * write pod status (phase, IP, the container's termination message), and can run the real
 * importer program locally with the pod's environment, a temp directory standing in for each volume.
 */

import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type CoreV1Api, PatchStrategy, setHeaderOptions, type V1ContainerState, type V1Pod } from '@kubernetes/client-node';
import { FERRY_BIN } from './ferry-process.js';

export async function setPodStatus(
  core: CoreV1Api,
  pod: V1Pod,
  phase: 'Pending' | 'Running' | 'Succeeded' | 'Failed',
  options: { podIP?: string; terminated?: { exitCode: number; message: string }; waitingReason?: string; ready?: boolean } = {},
): Promise<void> {
  const container = pod.spec?.containers?.[0];
  let state: V1ContainerState;
  if (options.terminated) {
    state = {
      terminated: {
        exitCode: options.terminated.exitCode,
        message: options.terminated.message,
        reason: options.terminated.exitCode === 0 ? 'Completed' : 'Error',
        startedAt: new Date(),
        finishedAt: new Date(),
      },
    };
  } else if (phase === 'Running') {
    state = { running: { startedAt: new Date() } };
  } else {
    state = { waiting: { reason: options.waitingReason ?? 'ContainerCreating' } };
  }
  const status = {
    phase,
    ...(options.podIP ? { podIP: options.podIP, podIPs: [{ ip: options.podIP }] } : {}),
    containerStatuses: [
      {
        name: container?.name ?? 'importer',
        image: container?.image ?? 'unknown',
        imageID: '',
        ready: options.ready ?? phase === 'Running',
        restartCount: 0,
        state,
      },
    ],
  };
  await core.patchNamespacedPodStatus(
    { name: pod.metadata?.name ?? '', namespace: pod.metadata?.namespace ?? '', body: { status } },
    setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
  );
}

export interface LocalRun {
  readonly exitCode: number;
  readonly terminationMessage: string;
  readonly volumesDir: string;
}

/**
 * Runs the pod's container as a local process: `ferry importer` with the pod's environment, each
 * pod path rewritten into `volumesDir` (/data → <dir>/data, /scratch → <dir>/scratch).
 */
export function runImporterLocally(pod: V1Pod, volumesDir: string, extraEnv: Record<string, string> = {}): { done: Promise<LocalRun> } {
  const container = pod.spec?.containers?.[0];
  const env: Record<string, string> = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', FERRY_LOG_LEVEL: 'warn' };
  for (const e of container?.env ?? []) {
    if (e.value === undefined) continue;
    env[e.name] = e.value.replace(/^\/data(?=\/|$)/, join(volumesDir, 'data')).replace(/^\/scratch(?=\/|$)/, join(volumesDir, 'scratch'));
  }
  mkdirSync(join(volumesDir, 'data'), { recursive: true });
  const term = join(volumesDir, 'termination-log');
  Object.assign(env, { FERRY_TERMINATION_LOG: term, ...extraEnv });
  const done = new Promise<LocalRun>((resolve, reject) => {
    const child = spawn(process.execPath, [FERRY_BIN, 'importer'], { env, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      let terminationMessage = '';
      try {
        terminationMessage = readFileSync(term, 'utf8');
      } catch {
        terminationMessage = stderr.slice(-2000);
      }
      resolve({ exitCode: code ?? 1, terminationMessage, volumesDir });
    });
  });
  return { done };
}

/** Polls `probe` until it returns a value (not undefined), at most `timeoutMs`. */
export async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await probe();
      if (value !== undefined) return value;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`);
}

/**
 * The kubelet's part in a graceful pod deletion: once a pod is marked for deletion, its containers
 * stop and the pod object goes. Polls the namespace until stopped.
 */
export function startPodReaper(core: CoreV1Api, namespace: string, everyMs = 200): { stop(): void } {
  let stopped = false;
  const loop = async (): Promise<void> => {
    while (!stopped) {
      try {
        const pods = await core.listNamespacedPod({ namespace });
        for (const pod of pods.items.filter((p) => p.metadata?.deletionTimestamp)) {
          await core.deleteNamespacedPod({ namespace, name: pod.metadata?.name ?? '', gracePeriodSeconds: 0 }).catch(() => undefined);
        }
      } catch {
        // The apiserver going away at the end of a test run ends the loop below.
      }
      await new Promise((resolve) => setTimeout(resolve, everyMs));
    }
  };
  void loop();
  return {
    stop: () => {
      stopped = true;
    },
  };
}
