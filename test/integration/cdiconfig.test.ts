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
import { isDeepStrictEqual } from 'node:util';
import { mkdirSync, writeFileSync } from 'node:fs';
import { ApiException, CoreV1Api, CustomObjectsApi, SchedulingV1Api, type KubernetesObject, KubernetesObjectApi, loadAllYaml, loadYaml, PatchStrategy, setHeaderOptions, type V1Pod } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { type CdiConfig, type CdiConfigSpec, CDICONFIG_GROUP, CDICONFIG_NAME, CDICONFIG_PLURAL, CDICONFIG_VERSION } from '../../src/api/cdiconfig.js';
import { Annotation } from '../../src/api/cdi.js';
import { DV_GROUP, DV_PLURAL, DV_VERSION, requiredSpace } from '../../src/api/datavolume.js';
import { createLogger, silentLogger } from '../../src/logging.js';
import { parseQuantity } from '../../src/quantity.js';
import { CdiConfigController } from '../../controller/cdiconfig/cdiconfig-controller.js';
import type { ControllerConfig } from '../../controller/config.js';
import { DataVolumeController } from '../../controller/datavolume/datavolume-controller.js';
import { ImportController } from '../../controller/import/import-controller.js';
import { CdiSettingsCache, flagDefaults } from '../../controller/runtime/cdi-settings.js';
import { InformerFactory } from '../../controller/runtime/informers.js';
import { convertImage, expectSameDisk, makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { annotationsWhen, importerPod, kubeletEnv, pvcBody, testControllerConfig } from '../helpers/import-harness.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { runImporterLocally, setPodStatus, waitFor } from '../helpers/kubelet.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { makePki } from '../helpers/tls.js';
import { controlPlaneBinDir, startControlPlane, type ControlPlane } from '../helpers/cluster.js';
import { installCrds } from '../helpers/crds.js';
import { REPO_ROOT, runFerry, startFerry } from '../helpers/ferry-process.js';

const KUBECTL = join(controlPlaneBinDir(), 'kubectl');
const where = { group: CDICONFIG_GROUP, version: CDICONFIG_VERSION, plural: CDICONFIG_PLURAL } as const;
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
const jsonPatch = setHeaderOptions('Content-Type', PatchStrategy.JsonPatch);

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

/**
 * The controllers read CDIConfig: an admin replaces the spec, and the next importer pod, scratch PVC
 * and DataVolume claim show it, with the controllers running on (no restart). The importer itself
 * runs for real with the pod's environment, through a real proxy on loopback.
 */
describe('the controllers take their settings from CDIConfig', () => {
  let core: CoreV1Api;
  let informers: InformerFactory;
  let settings: CdiSettingsCache;
  let imports: ImportController;
  let dvs: DataVolumeController;
  let config: ControllerConfig;
  let dir: string;
  let server: TestServer;
  let tlsServer: TestServer;
  let proxy: TestProxy;
  let caPem: string;

  /** Replaces the whole spec, and waits until the controllers' cache and the status both show it. */
  async function adminSets(spec: CdiConfigSpec): Promise<CdiConfig> {
    await custom.patchClusterCustomObject({ ...where, name: CDICONFIG_NAME, body: [{ op: 'replace', path: '/spec', value: spec }] }, jsonPatch);
    const want = spec.podResourceRequirements;
    await waitFor('the settings cache', async () => (isDeepStrictEqual(settings.current().podResourceRequirements, want) ? true : undefined));
    return until('the effective values', (c) => isDeepStrictEqual(c.status?.defaultPodResourceRequirements, want));
  }

  async function createDataVolume(namespace: string, name: string, spec: Record<string, unknown>): Promise<void> {
    const body = { apiVersion: `${DV_GROUP}/${DV_VERSION}`, kind: 'DataVolume', metadata: { name }, spec };
    await custom.createNamespacedCustomObject({ group: DV_GROUP, version: DV_VERSION, namespace, plural: DV_PLURAL, body });
  }

  /** The kubelet's part for a projected `certs` volume (ConfigMaps, with their items), beside kubeletEnv's. */
  async function projectedCerts(pod: V1Pod, volumes: string): Promise<Record<string, string>> {
    const sources = pod.spec?.volumes?.find((v) => v.name === 'certs')?.projected?.sources ?? [];
    const mount = join(volumes, 'certs');
    mkdirSync(mount, { recursive: true });
    for (const source of sources) {
      const cm = await core.readNamespacedConfigMap({ namespace: pod.metadata?.namespace ?? '', name: source.configMap?.name ?? '' });
      const items = source.configMap?.items ?? Object.keys(cm.data ?? {}).map((key) => ({ key, path: key }));
      for (const item of items) writeFileSync(join(mount, item.path), cm.data?.[item.key] ?? '');
    }
    return sources.length > 0 ? { IMPORTER_CERT_DIR: mount } : {};
  }

  /** Runs the real importer for `pod` and reports its exit as the pod's status; `expectFailure` returns its message instead of throwing. */
  async function runImporter(pod: V1Pod, volumes: string, expectFailure = false): Promise<string> {
    await setPodStatus(core, pod, 'Running', { podIP: '127.0.0.1' });
    const run = await runImporterLocally(pod, volumes, { ...(await kubeletEnv(core, pod, volumes)), ...(await projectedCerts(pod, volumes)) }).done;
    await setPodStatus(core, pod, run.exitCode === 0 ? 'Succeeded' : 'Failed', { terminated: { exitCode: run.exitCode, message: run.terminationMessage } });
    if ((run.exitCode !== 0) !== expectFailure) throw new Error(`the importer exited ${run.exitCode}: ${run.terminationMessage}`);
    return run.terminationMessage;
  }

  beforeAll(async () => {
    core = cp.kubeConfig.makeApiClient(CoreV1Api);
    dir = tempDir();
    makeRawDisk(join(dir, 'disk.raw'), 8 * MiB);
    convertImage(join(dir, 'disk.raw'), 'qcow2', join(dir, 'disk.qcow2'));
    server = await startServer();
    server.route('/disk.qcow2', { file: join(dir, 'disk.qcow2') });
    const pki = makePki(dir);
    caPem = readFileSync(pki.caFile, 'utf8');
    tlsServer = await startServer({ tls: { key: pki.key, cert: pki.cert } });
    tlsServer.route('/disk.qcow2', { file: join(dir, 'disk.qcow2') });
    proxy = await startProxy();
    config = await testControllerConfig({ ferryNamespace: 'ferry-system' });
    await core.createNamespace({ body: { metadata: { name: 'ferry-system' } } });
    informers = new InformerFactory(cp.kubeConfig, [], silentLogger());
    settings = new CdiSettingsCache(informers, custom, flagDefaults(config), silentLogger());
    imports = new ImportController({ kubeConfig: cp.kubeConfig, config, logger: silentLogger(), registry: new Registry(), informers, settings });
    dvs = new DataVolumeController({ kubeConfig: cp.kubeConfig, config, logger: silentLogger(), informers, settings });
    await Promise.all([settings.start(), imports.start(), dvs.start()]);
  }, 120_000);

  afterAll(async () => {
    await Promise.all([imports?.stop(), dvs?.stop(), settings?.stop()]);
    await informers?.stop();
    await Promise.all([server?.close(), tlsServer?.close(), proxy?.close()]);
    if (dir) removeDir(dir);
  });

  test('resources, overhead per class, scratch class and proxy reach the next pod and claim; the real importer goes through the proxy', async () => {
    const resources = { requests: { cpu: '150m', memory: '80Mi' }, limits: { cpu: '1500m', memory: '700Mi' } };
    const status = await adminSets({
      podResourceRequirements: resources,
      filesystemOverhead: { global: '0.1', storageClass: { local: '0.2' } },
      scratchSpaceStorageClass: 'scratchy',
      importProxy: { HTTPProxy: proxy.url, HTTPSProxy: proxy.url, noProxy: 'nothing.example' },
    });
    expect(status.status).toMatchObject({ filesystemOverhead: { global: '0.1', storageClass: { local: '0.2' } }, scratchSpaceStorageClass: 'scratchy', importProxy: { HTTPProxy: proxy.url } });

    const ns = await cp.newNamespace();
    await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: pvcBody('viaproxy', { [Annotation.Endpoint]: `${server.url}/disk.qcow2` }, { storageClassName: 'local' }) });
    const pod = await importerPod(core, ns, 'viaproxy');
    const container = pod.spec?.containers?.[0];
    // What the pod shows is what the status says is in effect.
    expect(container?.resources).toEqual(status.status?.defaultPodResourceRequirements);
    const env = Object.fromEntries((container?.env ?? []).map((e) => [e.name, e.value]));
    expect(env).toMatchObject({ FILESYSTEM_OVERHEAD: '0.2', http_proxy: proxy.url, https_proxy: proxy.url, no_proxy: 'nothing.example' });

    const before = proxy.seen.length;
    const volumes = join(dir, 'viaproxy');
    await runImporter(pod, volumes);
    await annotationsWhen(core, ns, 'viaproxy', (a) => a[Annotation.PodPhase] === 'Succeeded');
    expect(proxy.seen.slice(before).some((line) => line.includes(`${server.url}/disk.qcow2`))).toBe(true);
    // Byte-identical, grown to the usable size under the per-class overhead (20 %).
    expect(expectSameDisk(join(volumes, 'data', 'disk.img'), join(dir, 'disk.raw'), Math.floor(Math.ceil(0.8 * 64 * MiB) / MiB) * MiB)).toBe(true);

    // The scratch PVC takes the scratch class.
    await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: pvcBody('staged', { [Annotation.Endpoint]: `${server.url}/disk.qcow2`, [Annotation.RequiresScratch]: 'true' }, { storageClassName: 'local' }) });
    const scratch = await waitFor('scratch PVC', () => core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: 'staged-scratch' }).catch(() => undefined));
    expect(scratch.spec?.storageClassName).toBe('scratchy');

    // A DataVolume's spec.storage request grows by its class's overhead.
    await createDataVolume(ns, 'sized', { source: { blank: {} }, storage: { storageClassName: 'local', resources: { requests: { storage: '100Mi' } } } });
    const claim = await waitFor('the DataVolume claim', () => core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: 'sized' }).catch(() => undefined));
    expect(parseQuantity(String(claim.spec?.resources?.requests?.storage))).toBe(requiredSpace(100 * MiB, 0.2));
    expect(requiredSpace(100 * MiB, 0.2)).toBe(125 * MiB);

    // A second change applies to the next pod, the controllers still running.
    const next = { requests: { cpu: '50m', memory: '32Mi' }, limits: { cpu: '500m', memory: '900Mi' } };
    await adminSets({ podResourceRequirements: next });
    await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: pvcBody('later', { [Annotation.Endpoint]: `${server.url}/disk.qcow2` }) });
    const later = await importerPod(core, ns, 'later');
    expect(later.spec?.containers?.[0]?.resources).toEqual(next);
    expect(later.spec?.containers?.[0]?.env?.map((e) => e.name)).not.toContain('http_proxy');
  }, 120_000);

  test("a DataVolume's priorityClassName reaches its importer pod (through CDI's PVC annotation)", async () => {
    const scheduling = cp.kubeConfig.makeApiClient(SchedulingV1Api);
    await scheduling.createPriorityClass({ body: { metadata: { name: 'imports-first' }, value: 1000 } });
    const ns = await cp.newNamespace();
    await createDataVolume(ns, 'urgent', { priorityClassName: 'imports-first', source: { http: { url: `${server.url}/disk.qcow2` } }, storage: { resources: { requests: { storage: '64Mi' } } } });
    const pod = await importerPod(core, ns, 'urgent');
    expect(pod.spec?.priorityClassName).toBe('imports-first');
    // The apiserver's Priority admission resolved the class: the pod is really scheduled by it.
    expect(pod.spec?.priority).toBe(1000);
  });

  test("a trusted proxy CA: copied beside the PVC, mounted with the source CAs; the importer tunnels HTTPS through the proxy and trusts it", async () => {
    await core.createNamespacedConfigMap({ namespace: 'ferry-system', body: { metadata: { name: 'corp-proxy-ca' }, data: { 'ca.crt': caPem } } });
    const status = await adminSets({ podResourceRequirements: { limits: { memory: '600Mi' } }, importProxy: { HTTPSProxy: proxy.url, trustedCAProxy: 'corp-proxy-ca' } });
    // The status is replaced whole: what the spec no longer sets is gone from it (the flags' values again).
    expect(status.status?.filesystemOverhead).toEqual({ global: '0.06' });
    expect(status.status?.scratchSpaceStorageClass).toBeUndefined();
    expect(status.status?.importProxy).toEqual({ HTTPSProxy: proxy.url, trustedCAProxy: 'corp-proxy-ca' });
    const ns = await cp.newNamespace();
    await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: pvcBody('tunnel', { [Annotation.Endpoint]: `${tlsServer.url}/disk.qcow2` }) });
    const pod = await importerPod(core, ns, 'tunnel');
    const copy = await core.readNamespacedConfigMap({ namespace: ns, name: 'import-proxy-cm-tunnel' });
    expect(copy.data).toEqual({ 'ca.crt': caPem });
    expect(copy.metadata?.ownerReferences?.[0]).toMatchObject({ kind: 'PersistentVolumeClaim', name: 'tunnel', controller: true });
    expect(pod.spec?.volumes?.find((v) => v.name === 'certs')?.projected?.sources).toEqual([{ configMap: { name: 'import-proxy-cm-tunnel', items: [{ key: 'ca.crt', path: 'import-proxy-ca.crt' }] } }]);

    const before = proxy.seen.length;
    const volumes = join(dir, 'tunnel');
    await runImporter(pod, volumes);
    await annotationsWhen(core, ns, 'tunnel', (a) => a[Annotation.PodPhase] === 'Succeeded');
    const port = new URL(tlsServer.url).port;
    expect(proxy.seen.slice(before).some((line) => line.startsWith('CONNECT') && line.endsWith(`:${port}`))).toBe(true);
    expect(expectSameDisk(join(volumes, 'data', 'disk.img'), join(dir, 'disk.raw'), Math.floor(Math.ceil(0.94 * 64 * MiB) / MiB) * MiB)).toBe(true);

    // The CA is what made it work: the same import without trustedCAProxy fails TLS verification.
    await adminSets({ podResourceRequirements: { limits: { memory: '601Mi' } }, importProxy: { HTTPSProxy: proxy.url } });
    await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: pvcBody('untrusted', { [Annotation.Endpoint]: `${tlsServer.url}/disk.qcow2` }) });
    const bare = await importerPod(core, ns, 'untrusted');
    expect(bare.spec?.volumes?.map((v) => v.name)).not.toContain('certs');
    expect(await runImporter(bare, join(dir, 'untrusted'), true)).toContain('TLS_ERROR');
  }, 120_000);
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
