/**
 * CDIConfig on the real apiserver: the generated CRD, the controller creating `config` and keeping
 * its status at the effective values (spec where set, else its flags), the schema refusing a bad
 * fraction, `kubectl get cdiconfig config -o yaml`, and a plain user reading it as virtctl does
 * (the reader role from manifests/apiserver-rbac.yaml).
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiException, CustomObjectsApi, type KubernetesObject, KubernetesObjectApi, loadAllYaml, loadYaml, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { type CdiConfig, CDICONFIG_GROUP, CDICONFIG_NAME, CDICONFIG_PLURAL, CDICONFIG_VERSION } from '../../src/api/cdiconfig.js';
import { createLogger } from '../../src/logging.js';
import { CdiConfigController } from '../../controller/cdiconfig/cdiconfig-controller.js';
import { controlPlaneBinDir, startControlPlane, type ControlPlane } from '../helpers/cluster.js';
import { installCrds } from '../helpers/crds.js';
import { REPO_ROOT, runFerry, startFerry } from '../helpers/ferry-process.js';

const KUBECTL = join(controlPlaneBinDir(), 'kubectl');
const where = { group: CDICONFIG_GROUP, version: CDICONFIG_VERSION, plural: CDICONFIG_PLURAL } as const;
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

let cp: ControlPlane;
let custom: CustomObjectsApi;
let controller: CdiConfigController;

function kubectl(kubeconfig: string, args: readonly string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(KUBECTL, ['--kubeconfig', kubeconfig, ...args], { encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) => resolve({ code: err ? 1 : 0, stdout, stderr }));
  });
}

const read = async (): Promise<CdiConfig> => (await custom.getClusterCustomObject({ ...where, name: CDICONFIG_NAME })) as CdiConfig;

/** Polls until `check` holds for the object (bounded: 15 s). */
async function until(what: string, check: (c: CdiConfig) => boolean): Promise<CdiConfig> {
  let last: CdiConfig | undefined;
  for (let i = 0; i < 75; i++) {
    try {
      last = await read();
      if (check(last)) return last;
    } catch (err) {
      if (!(err instanceof ApiException && err.code === 404)) throw err;
    }
    await sleep(200);
  }
  throw new Error(`CDIConfig never showed ${what}: ${JSON.stringify(last)}`);
}

beforeAll(async () => {
  cp = await startControlPlane();
  await installCrds(cp.kubeConfig);
  custom = cp.kubeConfig.makeApiClient(CustomObjectsApi);
  controller = new CdiConfigController({
    kubeConfig: cp.kubeConfig,
    logger: createLogger({ name: 'cdiconfig-test', level: 'warn' }),
    defaults: { uploadProxyURL: 'https://upload.example:31001', filesystemOverhead: 0.06, podResourceRequirements: { requests: { cpu: '100m', memory: '64Mi' } } },
    resyncMs: 200,
  });
  await controller.start();
}, 120_000);

afterAll(async () => {
  await controller?.stop();
  await cp?.stop();
});

describe('CDIConfig', () => {
  test('the controller creates config and fills status from its defaults', async () => {
    const config = await until('status', (c) => c.status?.uploadProxyURL !== undefined);
    expect(config.spec).toEqual({});
    expect(config.status).toEqual({
      uploadProxyURL: 'https://upload.example:31001',
      filesystemOverhead: { global: '0.06' },
      defaultPodResourceRequirements: { requests: { cpu: '100m', memory: '64Mi' } },
    });
  });

  test('an admin spec change shows in status (override, overhead per class, scratch class, proxy)', async () => {
    await until('status', (c) => c.status?.uploadProxyURL !== undefined);
    const spec = {
      uploadProxyURLOverride: 'https://proxy.corp.example',
      filesystemOverhead: { global: '0.1', storageClass: { local: '0.055' } },
      scratchSpaceStorageClass: 'fast',
      importProxy: { HTTPSProxy: 'http://squid:3128', noProxy: '.svc' },
    };
    await custom.patchClusterCustomObject({ ...where, name: CDICONFIG_NAME, body: { spec } }, mergePatch);
    const config = await until('the new spec', (c) => c.status?.uploadProxyURL === spec.uploadProxyURLOverride);
    expect(config.status).toMatchObject({ filesystemOverhead: spec.filesystemOverhead, scratchSpaceStorageClass: 'fast', importProxy: spec.importProxy });
    const printed = await kubectl(cp.kubeconfigPath, ['get', 'cdiconfig', 'config', '-o', 'yaml']);
    expect(printed.stderr).toBe('');
    const y = loadYaml<{ kind: string; status: { uploadProxyURL: string } }>(printed.stdout);
    expect(y.kind).toBe('CDIConfig');
    expect(y.status.uploadProxyURL).toBe(spec.uploadProxyURLOverride);
  });

  test('the schema refuses a filesystem overhead that is not a fraction', async () => {
    let refused: ApiException<unknown> | undefined;
    try {
      await custom.patchClusterCustomObject({ ...where, name: CDICONFIG_NAME, body: { spec: { filesystemOverhead: { global: '1.5' } } } }, mergePatch);
    } catch (err) {
      if (err instanceof ApiException) refused = err;
      else throw err;
    }
    expect(refused?.code).toBe(422);
    expect(String(refused?.body)).toContain('spec.filesystemOverhead.global');
  });

  test('a plain authenticated user may read config (as virtctl does), not change it', async () => {
    const objects = KubernetesObjectApi.makeApiClient(cp.kubeConfig);
    const rbac = (loadAllYaml(readFileSync(join(REPO_ROOT, 'manifests', 'apiserver-rbac.yaml'), 'utf8')) as KubernetesObject[]).filter((o) => o.metadata?.name === 'ferry:cdiconfig-reader');
    expect(rbac.map((o) => o.kind).sort()).toEqual(['ClusterRole', 'ClusterRoleBinding']);
    for (const o of rbac) await objects.create(o);
    const erin = cp.userKubeconfig('erin');
    const got = await kubectl(erin.path, ['get', '--raw', `/apis/${CDICONFIG_GROUP}/${CDICONFIG_VERSION}/cdiconfigs/config`]);
    expect(got.code).toBe(0);
    expect((JSON.parse(got.stdout) as CdiConfig).status?.uploadProxyURL).toBeDefined();
    const edit = await kubectl(erin.path, ['patch', 'cdiconfig', 'config', '--type', 'merge', '-p', '{"spec":{"uploadProxyURLOverride":"https://evil"}}']);
    expect(edit.code).not.toBe(0);
    expect(edit.stderr).toContain('forbidden');
  });
});

describe('ferry controller keeps CDIConfig (the wiring in controller/main.ts)', () => {
  test('--upload-proxy-url reaches status.uploadProxyURL of a config it creates; a URL without scheme is refused', async () => {
    await controller.stop(); // the in-process one steps aside
    await custom.deleteClusterCustomObject({ ...where, name: CDICONFIG_NAME });
    const proc = startFerry(
      ['controller', '--kubeconfig', cp.kubeconfigPath, '--controllers', 'datavolume', '--leader-elect', 'false', '--health-port', '0', '--upload-proxy-url', 'https://uploads.example:8443'],
      {},
      120_000,
    );
    try {
      const config = await until('the process\'s status', (c) => c.status?.uploadProxyURL === 'https://uploads.example:8443');
      expect(config.spec).toEqual({});
      expect(config.status?.filesystemOverhead?.global).toBe('0.06');
    } finally {
      proc.kill('SIGTERM');
      expect((await proc.done).code).toBe(0);
    }
    const bad = await runFerry(['controller', '--kubeconfig', cp.kubeconfigPath, '--controllers', 'datavolume', '--leader-elect', 'false', '--health-port', '0', '--upload-proxy-url', '127.0.0.1:31001']);
    expect(bad.code).toBe(2);
    expect(bad.stdout + bad.stderr).toContain('--upload-proxy-url must be an http(s):// URL');
  }, 90_000);
});
