/**
 * What the import controller's integration tests share: the controller configured for tests, the
 * PVC they annotate, the waits on its annotations and importer pod, and the kubelet's part (secret
 * references resolved, the CA ConfigMap mounted, the real importer run with the pod's environment,
 * its exit reported as the pod's status).
 */

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { CoreV1Api, KubeConfig, V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { silentLogger } from '../../src/logging.js';
import { type ControllerConfig, DEFAULT_CONFIG } from '../../controller/config.js';
import { ImportController } from '../../controller/import/import-controller.js';
import { freePort } from './ferry-process.js';
import { runImporterLocally, setPodStatus, waitFor } from './kubelet.js';

/** Short retries and progress intervals, a test image name, a free metrics port. */
export async function testControllerConfig(overrides: Partial<ControllerConfig> = {}): Promise<ControllerConfig> {
  return Object.freeze({
    ...DEFAULT_CONFIG,
    importerImage: 'localhost/ferry:test',
    maxRetries: 2,
    retryBackoffMs: 300,
    retryBackoffMaxMs: 1000,
    progressIntervalMs: 200,
    importerMetricsPort: await freePort(),
    ...overrides,
  });
}

export function newImportController(kubeConfig: KubeConfig, config: ControllerConfig): ImportController {
  return new ImportController({ kubeConfig, config, logger: silentLogger(), registry: new Registry() });
}

/** A 64Mi ReadWriteOnce claim with the given annotations. */
export function pvcBody(name: string, annotations: Record<string, string>, spec: Partial<NonNullable<V1PersistentVolumeClaim['spec']>> = {}): V1PersistentVolumeClaim {
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: { name, annotations },
    spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '64Mi' } }, ...spec },
  };
}

/** The claim's annotations once `predicate` holds. */
export async function annotationsWhen(
  core: CoreV1Api,
  namespace: string,
  name: string,
  predicate: (a: Record<string, string>) => boolean,
  timeoutMs = 20_000,
): Promise<Record<string, string>> {
  return waitFor(`annotations of ${namespace}/${name}`, async () => {
    const a = (await core.readNamespacedPersistentVolumeClaim({ namespace, name })).metadata?.annotations ?? {};
    return predicate(a) ? a : undefined;
  }, timeoutMs);
}

/** The live importer pod of a claim (not `notUid`, not being deleted). */
export async function importerPod(core: CoreV1Api, namespace: string, pvc: string, notUid?: string): Promise<V1Pod> {
  return waitFor(`importer pod for ${pvc}`, async () => {
    const pod = await core.readNamespacedPod({ namespace, name: `importer-${pvc}` }).catch(() => undefined);
    return pod && pod.metadata?.uid !== notUid && !pod.metadata?.deletionTimestamp ? pod : undefined;
  });
}

/**
 * What the kubelet does that runImporterLocally does not: resolves secretKeyRef variables from the
 * Secret, and mounts the `certs` ConfigMap volume (a directory under `volumes`).
 */
export async function kubeletEnv(core: CoreV1Api, pod: V1Pod, volumes: string): Promise<Record<string, string>> {
  const namespace = pod.metadata?.namespace ?? '';
  const env: Record<string, string> = { FERRY_METRICS_PORT: '0' };
  for (const e of pod.spec?.containers?.[0]?.env ?? []) {
    const ref = e.valueFrom?.secretKeyRef;
    if (!ref) continue;
    const secret = await core.readNamespacedSecret({ namespace, name: ref.name ?? '' });
    const value = secret.data?.[ref.key];
    if (value !== undefined) env[e.name] = Buffer.from(value, 'base64').toString('utf8');
  }
  const certs = pod.spec?.volumes?.find((v) => v.name === 'certs')?.configMap?.name;
  if (certs) {
    const cm = await core.readNamespacedConfigMap({ namespace, name: certs });
    const mount = join(volumes, 'certs');
    mkdirSync(mount, { recursive: true });
    for (const [key, text] of Object.entries(cm.data ?? {})) writeFileSync(join(mount, key), text);
    env.IMPORTER_CERT_DIR = mount;
  }
  return env;
}

/** Plays the kubelet for one pod: Running, the real importer, then Succeeded/Failed with its termination message. */
export async function runPod(core: CoreV1Api, pod: V1Pod, volumes: string): Promise<{ exitCode: number; terminationMessage: string }> {
  await setPodStatus(core, pod, 'Running', { podIP: '127.0.0.1' });
  const run = await runImporterLocally(pod, volumes, await kubeletEnv(core, pod, volumes)).done;
  await setPodStatus(core, pod, run.exitCode === 0 ? 'Succeeded' : 'Failed', { terminated: { exitCode: run.exitCode, message: run.terminationMessage } });
  return run;
}
