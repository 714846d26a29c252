/**
 * The clone controller (with the DataVolume controller, in process) on a real kube-apiserver, with
 * the real clone webhook (`ferry apiserver` as a process, registered as clone-admission.test.ts
 * does it) and real users with client certificates. No kubelet: the tests play its part, and for
 * the copy they run the pods' programs (`ferry clone-target`, `ferry clone-source`) as processes
 * with the environment the controller put on the pods, temp dirs standing in for the volumes and
 * Secrets. The namespaces enforce the "restricted" Pod Security Standard. There is no cluster DNS: the source process resolves `*.svc` to 127.0.0.1 (a preload the
 * test writes), so the target's certificate is still checked against `cdi-upload-<pvc>.<ns>.svc`.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createPrivateKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { closeSync, existsSync, lstatSync, mkdirSync, openSync, readFileSync, readlinkSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { request } from 'node:https';
import { type AddressInfo, connect, createServer as createNetServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  AdmissionregistrationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  KubernetesObjectApi,
  type KubernetesObject,
  loadAllYaml,
  PatchStrategy,
  RbacAuthorizationV1Api,
  setHeaderOptions,
  type V1MutatingWebhookConfiguration,
  type V1PersistentVolumeClaim,
  type V1Pod,
} from '@kubernetes/client-node';
import { Annotation } from '../../src/api/cdi.js';
import { type DataVolume, DV_GROUP, DV_PLURAL, DV_VERSION } from '../../src/api/datavolume.js';
import { cloneClientName } from '../../src/contract/clone-env.js';
import { CLONE_REQUEST_ANNOTATION, CLONE_TOKEN_ANNOTATION, CLONE_TOKEN_PUBLIC_CONFIGMAP, CLONE_TOKEN_PUBLIC_KEY, CLONE_TOKEN_SIGNING_SECRET, cloneClaims, verifyCloneToken } from '../../src/contract/clone-token.js';
import { publicKeyFromPem, signToken } from '../../src/contract/upload-token.js';
import { silentLogger } from '../../src/logging.js';
import { CLONE_SEAL_ANNOTATION } from '../../controller/clone/authorization.js';
import { CloneController } from '../../controller/clone/clone-controller.js';
import { CLONE_TARGET_ANNOTATION, sourcePodName, sourceSecretName } from '../../controller/clone/clone-pods.js';
import type { ControllerConfig } from '../../controller/config.js';
import { DataVolumeController } from '../../controller/datavolume/datavolume-controller.js';
import { InformerFactory } from '../../controller/runtime/informers.js';
import { kubectlAs, startControlPlane, WEBHOOK_CLIENT_NAME, type ControlPlane } from '../helpers/cluster.js';
import { installCrds } from '../helpers/crds.js';
import { FERRY_BIN, freePort, REPO_ROOT, startFerry, type RunningProcess } from '../helpers/ferry-process.js';
import { MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { attachLoop, detachLoops } from '../helpers/loop-device.js';
import { testControllerConfig } from '../helpers/import-harness.js';
import { setPodStatus, waitFor } from '../helpers/kubelet.js';

let cp: ControlPlane;
let core: CoreV1Api;
let custom: CustomObjectsApi;
let ferryNs: string;
let golden: string;
let port: number;
let server: RunningProcess | undefined;
let informers: InformerFactory;
let clones: CloneController;
let dvs: DataVolumeController;
let config: ControllerConfig;
let dir: string;
let kubelet: CloneKubelet;
/** The DataVolume controller's clock is Date.now() + skew (a test moves it past the token's five minutes). */
let skew = 0;
const loops: string[] = [];
const users: Record<string, { path: string; ns: string }> = {};

const dvApi = { group: DV_GROUP, version: DV_VERSION, plural: DV_PLURAL };
const SOURCE_SIZE = '1Gi';

function manifestObjects(file: string): KubernetesObject[] {
  return loadAllYaml(readFileSync(join(REPO_ROOT, 'manifests', file), 'utf8')) as KubernetesObject[];
}

async function bind(namespace: string, user: string, kind: 'Role' | 'ClusterRole', role: string): Promise<void> {
  await cp.kubeConfig.makeApiClient(RbacAuthorizationV1Api).createNamespacedRoleBinding({
    namespace,
    body: { metadata: { name: `${user}-${role.replace(/:/g, '-')}` }, roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind, name: role }, subjects: [{ apiGroup: 'rbac.authorization.k8s.io', kind: 'User', name: user }] },
  });
}

/** A user with a namespace of its own where it may create and read PVCs and DataVolumes. */
async function user(name: string): Promise<void> {
  const own = await cp.newNamespace(name);
  await cp.kubeConfig.makeApiClient(RbacAuthorizationV1Api).createNamespacedRole({
    namespace: own,
    body: {
      metadata: { name: 'owner' },
      rules: [
        { apiGroups: [''], resources: ['persistentvolumeclaims'], verbs: ['create', 'get', 'list'] },
        { apiGroups: [DV_GROUP], resources: ['datavolumes'], verbs: ['create', 'get', 'list'] },
      ],
    },
  });
  await bind(own, name, 'Role', 'owner');
  users[name] = { path: cp.userKubeconfig(name, ['clone-testers']).path, ns: own };
}

async function sourcePvc(namespace: string, name: string, volumeDir?: string, volumeMode: 'Filesystem' | 'Block' = 'Filesystem'): Promise<void> {
  await core.createNamespacedPersistentVolumeClaim({ namespace, body: { metadata: { name }, spec: { accessModes: ['ReadWriteOnce'], volumeMode, resources: { requests: { storage: SOURCE_SIZE } } } } });
  if (volumeDir) kubelet.volume(namespace, name, volumeDir);
}

function yamlFile(text: string): string {
  const file = join(dir, `obj-${Math.random().toString(36).slice(2)}.yaml`);
  writeFileSync(file, text);
  return file;
}

/** `kubectl apply` of a DataVolume as `who`, in its namespace (`spec` lines beside the source: `storage: {}` unless given). */
async function dvAs(who: string, name: string, source: string, rest = '  storage: {}'): Promise<void> {
  const run = await kubectlAs(users[who]!.path, ['apply', '-n', users[who]!.ns, '-f', yamlFile(`apiVersion: cdi.kubevirt.io/v1beta1\nkind: DataVolume\nmetadata:\n  name: ${name}\nspec:\n${source}\n${rest}\n`)]);
  expect(run).toMatchObject({ code: 0, stderr: '' });
}

const getDv = async (namespace: string, name: string): Promise<DataVolume> => (await custom.getNamespacedCustomObject({ ...dvApi, namespace, name })) as DataVolume;
const getPvc = (namespace: string, name: string): Promise<V1PersistentVolumeClaim | undefined> => core.readNamespacedPersistentVolumeClaim({ namespace, name }).catch(() => undefined);
const getPod = (namespace: string, name: string): Promise<V1Pod | undefined> => core.readNamespacedPod({ namespace, name }).catch(() => undefined);

async function eventsOf(namespace: string, name: string): Promise<Array<[string, string]>> {
  const list = await core.listNamespacedEvent({ namespace });
  return list.items.filter((e) => e.involvedObject.name === name).map((e) => [e.reason ?? '', e.message ?? '']);
}

/** The message of the first event `reason` on the object, once it is there: events follow the status they explain. */
const eventMessage = (namespace: string, name: string, reason: string): Promise<string> =>
  waitFor(`event ${reason} on ${namespace}/${name}`, async () => (await eventsOf(namespace, name)).find((e) => e[0] === reason)?.[1], 15_000);

const annotation = async (namespace: string, name: string, key: string): Promise<string | undefined> => (await getPvc(namespace, name))?.metadata?.annotations?.[key];

/** The target pod, once the controller made it (it seals the token first). */
const targetPod = (namespace: string, pvc: string): Promise<V1Pod> => waitFor(`target pod of ${namespace}/${pvc}`, () => getPod(namespace, `cdi-upload-${pvc}`), 30_000);

async function uidOf(namespace: string, name: string): Promise<string> {
  return waitFor(`PVC ${namespace}/${name}`, async () => (await getPvc(namespace, name))?.metadata?.uid, 30_000);
}

const envOf = (pod: V1Pod): Record<string, string> => Object.fromEntries((pod.spec?.containers?.[0]?.env ?? []).map((e) => [e.name, e.value ?? '']));

/** Plays the kubelet for a clone's target pod without running it: Running and Ready. */
async function markReady(pod: V1Pod): Promise<void> {
  await setPodStatus(core, pod, 'Running', { podIP: '127.0.0.1', ready: true });
}

// ---- the kubelet's part for the clone pods, with the real programs ----

interface CloneKubelet {
  /** The directory that stands in for a source PVC's volume. */
  volume(namespace: string, pvc: string, dir: string): void;
  /** Run the pods of clones into this namespace (others are left to the tests). */
  run(targetNamespace: string): void;
  /** The target volume directory of the last run for `namespace/pvc`. */
  targetDir(namespace: string, pvc: string): string | undefined;
  /** The block device that stands in for a Block PVC (source or target). */
  device(namespace: string, pvc: string, path: string): void;
  /** Holds the source's stream to this target after `limit` bytes, until `release()`. */
  gate(namespace: string, pvc: string, limit: number): { release(): void };
  stop(): Promise<void>;
}

/**
 * A loopback relay that passes `limit` bytes from the client, then holds the rest until `open`
 * settles (TLS passes through untouched; the target decrypts what whole records arrived).
 */
async function startGatedRelay(host: string, port: number, limit: number, open: Promise<void>): Promise<{ port: number; close(): void }> {
  const sockets = new Set<Socket>();
  const server = createNetServer((client) => {
    const upstream = connect(port, host);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => s.destroy());
    }
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    upstream.pipe(client);
    let passed = 0;
    let opened = false;
    const held: Buffer[] = [];
    void open.then(() => {
      opened = true;
      for (const b of held.splice(0)) upstream.write(b);
      client.resume();
    });
    client.on('data', (chunk: Buffer) => {
      if (opened) return void upstream.write(chunk);
      const room = limit - passed;
      if (chunk.length <= room) {
        passed += chunk.length;
        return void upstream.write(chunk);
      }
      if (room > 0) upstream.write(chunk.subarray(0, room));
      passed = limit;
      held.push(chunk.subarray(Math.max(room, 0)));
      client.pause();
    });
    client.on('end', () => upstream.end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close() {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}

const b64 = (s: string | undefined): string => Buffer.from(s ?? '', 'base64').toString('utf8');

function probe(host: string, p: number): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request({ host, port: p, path: '/healthz', rejectUnauthorized: false, agent: false, timeout: 2000 }, (res) => {
      res.resume();
      resolve(res.statusCode === 200);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

function startCloneKubelet(): CloneKubelet {
  const volumes = new Map<string, string>();
  const ports = new Map<string, number>();
  const hosts = new Map<string, string>();
  const devices = new Map<string, string>();
  const gates = new Map<string, { limit: number; open: Promise<void> }>();
  const relays: Array<{ close(): void }> = [];
  const targets = new Map<string, string>();
  const namespaces = new Set<string>();
  const seen = new Set<string>();
  const children = new Set<ChildProcess>();
  const runs: Array<Promise<void>> = [];
  let stopped = false;
  let n = 0;
  // Cluster DNS stand-in for the source process: *.svc is loopback.
  // Each target pod gets a loopback address of its own (its "pod IP"), so their metrics ports never meet.
  const preload = join(dir, 'svc-dns.mjs');
  writeFileSync(
    preload,
    `import dns from 'node:dns';\nconst lookup = dns.lookup;\nconst addr = process.env.FERRY_TEST_SVC_ADDR || '127.0.0.1';\ndns.lookup = function (host, opts, cb) {\n  if (typeof opts === 'function') { cb = opts; opts = {}; }\n  if (/\\.svc$/.test(host)) return opts && opts.all ? cb(null, [{ address: addr, family: 4 }]) : cb(null, addr, 4);\n  return lookup.call(this, host, opts, cb);\n};\n`,
  );

  async function secretFiles(namespace: string, name: string, into: string): Promise<void> {
    mkdirSync(into, { recursive: true });
    const secret = await core.readNamespacedSecret({ namespace, name });
    for (const [key, value] of Object.entries(secret.data ?? {})) writeFileSync(join(into, key), b64(value));
  }

  async function runPod(pod: V1Pod): Promise<void> {
    const ns = pod.metadata?.namespace ?? '';
    const role = pod.metadata?.labels?.['ferry.dev/clone'];
    const runDir = join(dir, `pod-${++n}`);
    const tls = join(runDir, 'tls');
    const env: Record<string, string> = { PATH: process.env.PATH ?? '', HOME: process.env.HOME ?? '/tmp', FERRY_LOG_LEVEL: 'warn', FERRY_TERMINATION_LOG: join(runDir, 'termination-log') };
    const tlsVolume = pod.spec?.volumes?.find((v) => v.name === 'tls')?.secret?.secretName ?? '';
    await secretFiles(ns, tlsVolume, tls);
    let args: string[];
    let listen = 0;
    const host = `127.0.${Math.floor(n / 250) + 1}.${(n % 250) + 1}`;
    if (role === 'target') {
      const pvc = pod.spec?.volumes?.find((v) => v.name === 'data')?.persistentVolumeClaim?.claimName ?? '';
      mkdirSync(join(runDir, 'data'), { recursive: true });
      listen = await freePort();
      ports.set(`${ns}/${pvc}`, listen);
      hosts.set(`${ns}/${pvc}`, host);
      targets.set(`${ns}/${pvc}`, runDir);
      const device = devices.get(`${ns}/${pvc}`) ?? '';
      for (const [k, v] of Object.entries(envOf(pod))) env[k] = v.replace(/^\/data(?=\/|$)/, join(runDir, 'data')).replace(/^\/etc\/ferry\/upload-tls(?=\/|$)/, tls).replace(/^\/dev\/cdi-block-volume$/, device);
      Object.assign(env, { UPLOAD_PORT: String(listen), UPLOAD_HOST: host, FERRY_TERMINATION_LOG: join(runDir, 'termination-log') });
      args = [FERRY_BIN, 'clone-target'];
    } else {
      const claim = pod.spec?.volumes?.find((v) => v.name === 'source')?.persistentVolumeClaim?.claimName ?? '';
      const volume = volumes.get(`${ns}/${claim}`) ?? '';
      const device = devices.get(`${ns}/${claim}`) ?? '';
      const target = pod.metadata?.annotations?.[CLONE_TARGET_ANNOTATION] ?? '';
      let targetPort = ports.get(target) ?? 0;
      let targetHost = hosts.get(target) ?? '127.0.0.1';
      const gate = gates.get(target);
      if (gate) {
        const relay = await startGatedRelay(targetHost, targetPort, gate.limit, gate.open);
        relays.push(relay);
        [targetHost, targetPort] = ['127.0.0.1', relay.port];
      }
      for (const [k, v] of Object.entries(envOf(pod))) {
        env[k] = v.replace(/^\/var\/run\/cdi\/clone\/source(?=\/|$)/, volume).replace(/^\/dev\/cdi-block-volume$/, device).replace(/^\/etc\/ferry\/clone-tls(?=\/|$)/, tls).replace(/:8443\//, `:${targetPort}/`);
      }
      env.FERRY_TEST_SVC_ADDR = targetHost;
      args = ['--import', preload, FERRY_BIN, 'clone-source'];
    }
    const child = spawn(process.execPath, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    children.add(child);
    let stderr = '';
    child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
    const timer = setTimeout(() => child.kill('SIGKILL'), 120_000);
    const exited = new Promise<number>((resolve) =>
      child.on('close', (code) => {
        clearTimeout(timer);
        children.delete(child);
        resolve(code ?? 1);
      }),
    );
    let done = false;
    void exited.then(() => (done = true));
    const podIP = role === 'target' ? host : '127.0.0.1';
    await setPodStatus(core, pod, 'Running', { podIP, ready: role !== 'target' });
    if (role === 'target') {
      for (let i = 0; i < 200 && !done && !stopped; i++) {
        if (await probe(host, listen)) {
          await setPodStatus(core, pod, 'Running', { podIP, ready: true });
          break;
        }
        await sleep(100);
      }
    }
    // A pod deleted under it stops its program, as the kubelet would.
    while (!done && !stopped) {
      const live = await getPod(ns, pod.metadata?.name ?? '');
      if (!live || live.metadata?.uid !== pod.metadata?.uid || live.metadata?.deletionTimestamp) child.kill('SIGKILL');
      await Promise.race([exited, sleep(300)]);
    }
    const code = await exited;
    let message = stderr.slice(-2000);
    try {
      message = readFileSync(join(runDir, 'termination-log'), 'utf8');
    } catch {
      // the stderr tail stands in, as FallbackToLogsOnError would
    }
    if (stopped) return;
    await setPodStatus(core, pod, code === 0 ? 'Succeeded' : 'Failed', { terminated: { exitCode: code, message } }).catch(() => undefined);
  }

  const loop = (async () => {
    while (!stopped) {
      const pods = await core.listPodForAllNamespaces({ labelSelector: 'ferry.dev/clone' }).catch(() => undefined);
      for (const pod of pods?.items ?? []) {
        const uid = pod.metadata?.uid ?? '';
        const targetNs = pod.metadata?.labels?.['ferry.dev/clone'] === 'target' ? pod.metadata?.namespace : pod.metadata?.annotations?.[CLONE_TARGET_ANNOTATION]?.split('/')[0];
        if (seen.has(uid) || pod.metadata?.deletionTimestamp || !namespaces.has(targetNs ?? '')) continue;
        seen.add(uid);
        runs.push(runPod(pod).catch((err: unknown) => void process.stderr.write(`clone kubelet: ${String(err)}\n`)));
      }
      await sleep(200);
    }
  })();

  return {
    volume: (namespace, pvc, d) => void volumes.set(`${namespace}/${pvc}`, d),
    run: (namespace) => void namespaces.add(namespace),
    targetDir: (namespace, pvc) => targets.get(`${namespace}/${pvc}`),
    device: (namespace, pvc, path) => void devices.set(`${namespace}/${pvc}`, path),
    gate(namespace, pvc, limit) {
      let release!: () => void;
      const open = new Promise<void>((resolve) => (release = resolve));
      gates.set(`${namespace}/${pvc}`, { limit, open });
      return { release };
    },
    async stop() {
      stopped = true;
      await loop;
      for (const child of children) child.kill('SIGKILL');
      for (const relay of relays) relay.close();
      await Promise.all(runs);
    },
  };
}

/** A sparse raw disk with data at a few offsets (what an importer leaves in disk.img). */
function goldenDisk(volumeDir: string, size = 64 * MiB): string {
  mkdirSync(volumeDir, { recursive: true });
  const path = join(volumeDir, 'disk.img');
  execFileSync('qemu-img', ['create', '-q', '-f', 'raw', path, String(size)]);
  for (const [offset, fill] of [[0, 0x11], [5 * MiB, 0x22], [40 * MiB + 4096, 0x33]] as const) {
    const fd = openSync(path, 'r+');
    writeSync(fd, Buffer.alloc(256 * 1024, fill), 0, 256 * 1024, offset);
    closeSync(fd);
  }
  return path;
}

beforeAll(async () => {
  cp = await startControlPlane();
  core = cp.kubeConfig.makeApiClient(CoreV1Api);
  custom = cp.kubeConfig.makeApiClient(CustomObjectsApi);
  await installCrds(cp.kubeConfig);
  dir = tempDir('ferry-clone-');
  ferryNs = await cp.newNamespace('ferry-system');
  golden = await cp.newNamespace('golden-images');
  port = await freePort();
  const objects = KubernetesObjectApi.makeApiClient(cp.kubeConfig);
  for (const o of manifestObjects('rbac-clone.yaml')) await objects.create(o);
  const webhooks = manifestObjects('apiserver.yaml').find((o) => o.kind === 'MutatingWebhookConfiguration') as V1MutatingWebhookConfiguration;
  for (const w of webhooks.webhooks ?? []) w.clientConfig = { url: `https://127.0.0.1:${port}/admission/clone` };
  await cp.kubeConfig.makeApiClient(AdmissionregistrationV1Api).createMutatingWebhookConfiguration({ body: webhooks });
  server = startFerry(
    ['apiserver', '--kubeconfig', cp.kubeconfigPath, '--namespace', ferryNs, '--port', String(port), '--bind-address', '127.0.0.1', '--apiservice', '', '--serving-host', '127.0.0.1', '--refresh-seconds', '1',
      '--webhook-client-ca', cp.certs.webhookClientCa, '--webhook-client-name', WEBHOOK_CLIENT_NAME],
    {},
    900_000,
  );
  const admission = cp.kubeConfig.makeApiClient(AdmissionregistrationV1Api);
  await waitFor('the webhook caBundle', async () => ((await admission.readMutatingWebhookConfiguration({ name: webhooks.metadata?.name ?? '' })).webhooks ?? []).every((w) => (w.clientConfig.caBundle ?? '') !== '') || undefined, 90_000, 500);
  for (const name of ['alice', 'carol']) await user(name);
  await bind(golden, 'alice', 'ClusterRole', 'ferry:clone-sourcer');
  // The apiserver's Pod Security admission refuses any clone pod that is not "restricted".
  for (const namespace of [golden, users.alice!.ns, users.carol!.ns]) {
    await core.patchNamespace({ name: namespace, body: { metadata: { labels: { 'pod-security.kubernetes.io/enforce': 'restricted' } } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
  }
  kubelet = startCloneKubelet();
  config = await testControllerConfig({ ferryNamespace: ferryNs, retryBackoffMs: 300, retryBackoffMaxMs: 1000 });
  informers = new InformerFactory(cp.kubeConfig, [], silentLogger());
  clones = new CloneController({ kubeConfig: cp.kubeConfig, config, logger: silentLogger(), informers });
  dvs = new DataVolumeController({ kubeConfig: cp.kubeConfig, config, logger: silentLogger(), informers, now: () => Date.now() + skew });
  await Promise.all([clones.start(), dvs.start()]);
}, 300_000);

afterAll(async () => {
  await kubelet?.stop();
  await Promise.all([clones?.stop(), dvs?.stop()]);
  await informers?.stop();
  if (server) {
    server.kill('SIGTERM');
    await server.done;
  }
  await cp?.stop();
  detachLoops(loops);
  if (dir) removeDir(dir);
});

describe('DataVolume clones through the webhook, as real users', () => {
  test('the namespaces enforce "restricted" (so every clone pod created below passed it): a plain pod is refused', async () => {
    const err = await core.createNamespacedPod({ namespace: golden, body: { metadata: { name: 'plain' }, spec: { containers: [{ name: 'c', image: 'busybox' }] } } }).then(() => undefined, (e: unknown) => e as { code?: number; body?: string });
    expect(err?.code).toBe(403);
    expect((JSON.parse(String(err?.body)) as { message: string }).message).toContain('violates PodSecurity "restricted:latest"');
  });

  test('same namespace: target pod (clone-target, upload-server shaped) and Service, then the source pod once the target is Ready', async () => {
    const a = users.alice!;
    await sourcePvc(a.ns, 'mine');
    await dvAs('alice', 'copy', '  source:\n    pvc:\n      name: mine');
    const pvc = await waitFor('the target PVC', () => getPvc(a.ns, 'copy'), 30_000);
    expect(pvc.metadata?.annotations?.[CLONE_REQUEST_ANNOTATION]).toBe(`${a.ns}/mine`);
    // spec.storage without a size: the source's.
    expect(pvc.spec?.resources?.requests?.storage).toBe(SOURCE_SIZE);
    const pod = await targetPod(a.ns, 'copy');
    expect(await annotation(a.ns, 'copy', CLONE_SEAL_ANNOTATION)).toMatch(/^v1\./);
    const c = pod.spec!.containers[0]!;
    expect(c.args).toEqual(['clone-target']);
    expect(envOf(pod)).toMatchObject({ CLIENT_NAME: cloneClientName({ namespace: a.ns, name: 'mine' }, { namespace: a.ns, name: 'copy' }), DESTINATION: '/data/disk.img', TLS_KEY_FILE: '/etc/ferry/upload-tls/tls.key' });
    expect(pod.spec?.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 107, seccompProfile: { type: 'RuntimeDefault' } });
    expect(c.securityContext).toMatchObject({ allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
    expect(pod.metadata?.ownerReferences?.[0]).toMatchObject({ kind: 'PersistentVolumeClaim', name: 'copy', uid: pvc.metadata?.uid });
    expect((await core.readNamespacedService({ namespace: a.ns, name: 'cdi-upload-copy' })).spec?.ports?.[0]?.port).toBe(8443);
    // No source pod before the target is Ready.
    expect(await getPod(a.ns, sourcePodName(pvc.metadata!.uid!))).toBeUndefined();
    await markReady(pod);
    const source = await waitFor('the source pod', () => getPod(a.ns, sourcePodName(pvc.metadata!.uid!)), 30_000);
    expect(source.spec?.containers[0]?.args).toEqual(['clone-source']);
    expect(source.spec?.volumes).toEqual(expect.arrayContaining([{ name: 'source', persistentVolumeClaim: { claimName: 'mine', readOnly: true } }]));
    expect(source.spec?.containers[0]?.volumeMounts).toEqual(expect.arrayContaining([{ name: 'source', mountPath: '/var/run/cdi/clone/source', readOnly: true }]));
    expect(envOf(source)).toMatchObject({ VOLUME_MODE: 'filesystem', MOUNT_POINT: '/var/run/cdi/clone/source', UPLOAD_URL: `https://cdi-upload-copy.${a.ns}.svc:8443/v1beta1/clone` });
    expect(source.spec?.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    // The client certificate names the clone (the target pins that name).
    const secret = await core.readNamespacedSecret({ namespace: a.ns, name: sourceSecretName(pvc.metadata!.uid!) });
    const subject = execFileSync('openssl', ['x509', '-noout', '-subject', '-nameopt', 'RFC2253'], { input: b64(secret.data?.['tls.crt']) }).toString();
    expect(subject).toContain(`CN=${cloneClientName({ namespace: a.ns, name: 'mine' }, { namespace: a.ns, name: 'copy' })}`);
    await waitFor('CloneInProgress', async () => ((await getDv(a.ns, 'copy')).status?.phase === 'CloneInProgress' ? true : undefined), 30_000);
  });

  test('across namespaces (alice is a clone-sourcer in the golden namespace): the real copy, byte-identical, DataVolume Succeeded, everything cleaned up', async () => {
    const a = users.alice!;
    const volume = join(dir, 'golden-fedora');
    const disk = goldenDisk(volume);
    const sha = (): string => execFileSync('sha256sum', [disk]).toString().split(' ')[0]!;
    const before = sha();
    await sourcePvc(golden, 'fedora', volume);
    kubelet.run(a.ns);
    await dvAs('alice', 'fedora-copy', `  source:\n    pvc:\n      namespace: ${golden}\n      name: fedora`);
    const dv = await waitFor('DataVolume Succeeded', async () => {
      const got = await getDv(a.ns, 'fedora-copy');
      if (got.status?.phase === 'Failed') throw new Error(`the clone failed: ${JSON.stringify(got.status)}`);
      return got.status?.phase === 'Succeeded' ? got : undefined;
    }, 120_000, 250);
    expect(dv.status?.progress).toBe('100.0%');
    const copied = join(kubelet.targetDir(a.ns, 'fedora-copy') ?? '', 'data', 'disk.img');
    expect(execFileSync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', disk, copied]).toString()).toContain('Images are identical');
    const uid = await uidOf(a.ns, 'fedora-copy');
    await waitFor('cleanup', async () => {
      const left = await Promise.all([getPod(a.ns, 'cdi-upload-fedora-copy'), getPod(golden, sourcePodName(uid)), core.readNamespacedSecret({ namespace: golden, name: sourceSecretName(uid) }).catch(() => undefined), core.readNamespacedService({ namespace: a.ns, name: 'cdi-upload-fedora-copy' }).catch(() => undefined)]);
      return left.every((x) => x === undefined) ? true : undefined;
    }, 30_000);
    await eventMessage(a.ns, 'fedora-copy', 'CloneSucceeded');
    expect((await eventsOf(a.ns, 'fedora-copy')).map((e) => e[0])).toEqual(expect.arrayContaining(['CloneScheduled', 'CloneSucceeded']));
    // The source was never written.
    expect(sha()).toBe(before);
  }, 180_000);

  test('sourceRef → DataSource → its PVC: pods for the resolved source', async () => {
    const a = users.alice!;
    await custom.createNamespacedCustomObject({ ...dvApi, plural: 'datasources', namespace: golden, body: { apiVersion: 'cdi.kubevirt.io/v1beta1', kind: 'DataSource', metadata: { name: 'fedora-latest' }, spec: { source: { pvc: { name: 'fedora' } } } } });
    await dvAs('alice', 'from-ref', `  sourceRef:\n    kind: DataSource\n    namespace: ${golden}\n    name: fedora-latest`);
    const pvc = await waitFor('the target PVC', () => getPvc(a.ns, 'from-ref'), 30_000);
    expect(pvc.metadata?.annotations?.[CLONE_REQUEST_ANNOTATION]).toBe(`${golden}/fedora`);
    const done = await waitFor('Succeeded', async () => ((await getDv(a.ns, 'from-ref')).status?.phase === 'Succeeded' ? true : undefined), 120_000, 250);
    expect(done).toBe(true);
    expect(await eventMessage(a.ns, 'from-ref', 'CloneSucceeded')).toContain(`${golden}/fedora`);
  }, 180_000);

  test('the legacy PVC form (k8s.io/CloneRequest by kubectl apply): the webhook\'s token, then the pods', async () => {
    const a = users.alice!;
    const run = await kubectlAs(a.path, ['apply', '-n', a.ns, '-f', yamlFile(`apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata:\n  name: legacy\n  annotations:\n    k8s.io/CloneRequest: ${golden}/fedora\nspec:\n  accessModes: [ReadWriteOnce]\n  resources:\n    requests:\n      storage: ${SOURCE_SIZE}\n`)]);
    expect(run).toMatchObject({ code: 0, stderr: '' });
    await waitFor('Succeeded', async () => ((await annotation(a.ns, 'legacy', Annotation.PodPhase)) === 'Succeeded' ? true : undefined), 120_000, 250);
    expect(await eventMessage(a.ns, 'legacy', 'CloneSucceeded')).toContain(`${golden}/fedora`);
  }, 180_000);

  test('CloneSourceInUse: a pod writing the source holds the clone back; once it is done the clone goes on', async () => {
    const a = users.alice!;
    await sourcePvc(golden, 'busy');
    const restricted = { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] }, runAsNonRoot: true, runAsUser: 1000, seccompProfile: { type: 'RuntimeDefault' } };
    const writer = await core.createNamespacedPod({ namespace: golden, body: { metadata: { name: 'writer' }, spec: { containers: [{ name: 'w', image: 'busybox', securityContext: restricted }], volumes: [{ name: 'v', persistentVolumeClaim: { claimName: 'busy' } }] } } });
    await setPodStatus(core, writer, 'Running');
    await dvAs('alice', 'busy-copy', `  source:\n    pvc:\n      namespace: ${golden}\n      name: busy`);
    await waitFor('CloneSourceInUse', async () => ((await eventsOf(a.ns, 'busy-copy')).some((e) => e[0] === 'CloneSourceInUse' && e[1].includes('writer')) ? true : undefined), 30_000);
    expect(await annotation(a.ns, 'busy-copy', Annotation.RunningReason)).toBe('CloneSourceInUse');
    expect(await getPod(a.ns, 'cdi-upload-busy-copy')).toBeUndefined();
    await setPodStatus(core, writer, 'Succeeded', { terminated: { exitCode: 0, message: '' } });
    const pod = await targetPod(a.ns, 'busy-copy');
    expect(pod.metadata?.ownerReferences?.[0]?.name).toBe('busy-copy');
  }, 60_000);
});

const succeeded = (namespace: string, name: string): Promise<DataVolume> =>
  waitFor(`DataVolume ${name} Succeeded`, async () => {
    const got = await getDv(namespace, name);
    if (got.status?.phase === 'Failed') throw new Error(`the clone failed: ${JSON.stringify(got.status)}`);
    return got.status?.phase === 'Succeeded' ? got : undefined;
  }, 150_000, 250);

const fromGolden = (name: string): string => `  source:\n    pvc:\n      namespace: ${golden}\n      name: ${name}`;

describe('through the controller: progress, a late source, block devices, archive content', () => {
  test("progress: while the stream runs the DataVolume shows the clone target's percentage (scraped from its metric), 100.0% at the end", async () => {
    const a = users.alice!;
    // The relay passes the first 600 KiB of the source's stream (the first two data extents), then holds it.
    const gate = kubelet.gate(a.ns, 'slow-copy', 600 * 1024);
    await dvAs('alice', 'slow-copy', fromGolden('fedora'));
    const during = await waitFor('a progress strictly between 0 and 100', async () => {
      const got = await getDv(a.ns, 'slow-copy');
      const m = /^(\d+\.\d\d)%$/.exec(got.status?.progress ?? '');
      return m && Number(m[1]) > 0 && Number(m[1]) < 100 ? { dv: got, percent: Number(m[1]) } : undefined;
    }, 60_000, 100);
    expect(during.dv.status?.phase).toBe('CloneInProgress');
    expect(await annotation(a.ns, 'slow-copy', Annotation.Progress)).toMatch(/^\d+\.\d\d%$/);
    gate.release();
    const dv = await succeeded(a.ns, 'slow-copy');
    expect(dv.status?.progress).toBe('100.0%');
    const copied = join(kubelet.targetDir(a.ns, 'slow-copy') ?? '', 'data', 'disk.img');
    expect(execFileSync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', join(dir, 'golden-fedora', 'disk.img'), copied]).toString()).toContain('Images are identical');
  }, 180_000);

  test("a DataVolume whose source appears after the token's five minutes still clones: the seal written at first sight is what counts", async () => {
    const a = users.alice!;
    await dvAs('alice', 'late-copy', fromGolden('late'));
    const sealed = await waitFor('the DataVolume sealed while it waits for its source', async () => {
      const got = await getDv(a.ns, 'late-copy');
      return got.metadata.annotations?.[CLONE_SEAL_ANNOTATION]?.startsWith('v1.') ? got : undefined;
    }, 30_000);
    const ready = (dv: DataVolume) => dv.status?.conditions?.find((c) => c.type === 'Ready');
    await waitFor('CloneSourceNotFound', async () => (ready(await getDv(a.ns, 'late-copy'))?.reason === 'CloneSourceNotFound' ? true : undefined), 30_000);
    const publicPem = (await core.readNamespacedConfigMap({ namespace: ferryNs, name: CLONE_TOKEN_PUBLIC_CONFIGMAP })).data?.[CLONE_TOKEN_PUBLIC_KEY] ?? '';
    const clone = { source: { namespace: golden, name: 'late' }, target: { namespace: a.ns, name: 'late-copy' } };
    const token = sealed.metadata.annotations?.[CLONE_TOKEN_ANNOTATION] ?? '';
    skew = 10 * 60_000;
    try {
      // As far as the DataVolume controller can tell, the webhook's token has expired.
      expect(verifyCloneToken(token, publicKeyFromPem(publicPem), Date.now() + skew, clone)).toMatchObject({ ok: false, code: 'EXPIRED' });
      const volume = join(dir, 'golden-late');
      const disk = goldenDisk(volume);
      await sourcePvc(golden, 'late', volume);
      await succeeded(a.ns, 'late-copy');
      const copied = join(kubelet.targetDir(a.ns, 'late-copy') ?? '', 'data', 'disk.img');
      expect(execFileSync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', disk, copied]).toString()).toContain('Images are identical');
      // The PVC has its own seal (its own UID); the DataVolume's was not carried over.
      const pvcSeal = await annotation(a.ns, 'late-copy', CLONE_SEAL_ANNOTATION);
      expect(pvcSeal).toMatch(/^v1\./);
      expect(pvcSeal).not.toBe(sealed.metadata.annotations?.[CLONE_SEAL_ANNOTATION]);
    } finally {
      skew = 0;
    }
  }, 180_000);

  test.each([
    ['Block', 'Block'],
    ['Filesystem', 'Block'],
    ['Block', 'Filesystem'],
  ] as const)('%s → %s (loop devices): byte-identical through the controller', async (from, to) => {
    const a = users.alice!;
    const name = `${from}-${to}`.toLowerCase();
    const volume = join(dir, `vol-${name}`);
    const disk = goldenDisk(volume);
    const source = from === 'Block' ? attachLoop(disk, loops, true) : volume;
    const backing = join(dir, `target-${name}.img`);
    // Old contents the holes must not keep, and 16 MiB past the source's size.
    writeFileSync(backing, Buffer.alloc(64 * MiB, 0xff));
    execFileSync('truncate', ['-s', String(80 * MiB), backing]);
    const targetDevice = to === 'Block' ? attachLoop(backing, loops) : undefined;
    if (source === undefined || (to === 'Block' && targetDevice === undefined)) {
      console.warn(`SKIPPED ${from} → ${to}: losetup could not attach a loop device here`);
      return;
    }
    await sourcePvc(golden, `src-${name}`, from === 'Block' ? undefined : volume, from);
    if (from === 'Block') kubelet.device(golden, `src-${name}`, source);
    if (targetDevice) kubelet.device(a.ns, `copy-${name}`, targetDevice);
    await dvAs('alice', `copy-${name}`, fromGolden(`src-${name}`), to === 'Block' ? '  storage:\n    volumeMode: Block' : '  storage: {}');
    await succeeded(a.ns, `copy-${name}`);
    expect((await getPvc(a.ns, `copy-${name}`))?.spec?.volumeMode).toBe(to);
    const out = targetDevice ?? join(kubelet.targetDir(a.ns, `copy-${name}`) ?? '', 'data', 'disk.img');
    expect(execFileSync('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', disk, out]).toString()).toContain('Images are identical');
  }, 180_000);
});

describe('archive content through the controller', () => {
  test('contentType archive: the directory tree (files, modes, a relative symlink), lost+found left out', async () => {
    const a = users.alice!;
    const tree = join(dir, 'golden-tree');
    mkdirSync(join(tree, 'etc'), { recursive: true });
    mkdirSync(join(tree, 'lost+found'));
    writeFileSync(join(tree, 'lost+found', 'junk'), 'x');
    writeFileSync(join(tree, 'etc', 'hosts'), '127.0.0.1 localhost\n', { mode: 0o644 });
    const blob = randomBytes(300_000);
    writeFileSync(join(tree, 'data.bin'), blob, { mode: 0o600 });
    symlinkSync('etc/hosts', join(tree, 'hosts-link'));
    await sourcePvc(golden, 'tree', tree);
    await dvAs('alice', 'tree-copy', fromGolden('tree'), '  contentType: archive\n  storage: {}');
    await succeeded(a.ns, 'tree-copy');
    expect(await annotation(a.ns, 'tree-copy', Annotation.ContentType)).toBe('archive');
    const out = join(kubelet.targetDir(a.ns, 'tree-copy') ?? '', 'data');
    expect(readFileSync(join(out, 'etc', 'hosts'), 'utf8')).toBe('127.0.0.1 localhost\n');
    expect(readFileSync(join(out, 'data.bin')).equals(blob)).toBe(true);
    expect(lstatSync(join(out, 'data.bin')).mode & 0o777).toBe(0o600);
    expect(readlinkSync(join(out, 'hosts-link'))).toBe('etc/hosts');
    expect(existsSync(join(out, 'lost+found'))).toBe(false);
  }, 180_000);
});

describe('written around the webhook: no pods, the reason', () => {
  let otherKey: ReturnType<typeof generateKeyPairSync>['privateKey'];
  let realKey: ReturnType<typeof createPrivateKey>;

  beforeAll(async () => {
    otherKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
    const signing = await core.readNamespacedSecret({ namespace: ferryNs, name: CLONE_TOKEN_SIGNING_SECRET });
    realKey = createPrivateKey(b64(signing.data?.['private.pem']));
    // An admin deleted the webhook configuration: objects now arrive as written.
    await cp.kubeConfig.makeApiClient(AdmissionregistrationV1Api).deleteMutatingWebhookConfiguration({ name: 'ferry-clone-authorization' });
    await sleep(1500);
  });

  const clone = (ns: string, name: string) => ({ source: { namespace: golden, name: 'fedora' }, target: { namespace: ns, name } });
  const cases: Array<[string, (ns: string, name: string) => Record<string, string>, string]> = [
    ['no token at all', () => ({}), 'NO_TOKEN'],
    ['a token signed by another key', (ns, name) => ({ [CLONE_TOKEN_ANNOTATION]: signToken(cloneClaims(clone(ns, name), Date.now()), otherKey) }), 'BAD_SIGNATURE'],
    ['an expired token (the real key)', (ns, name) => ({ [CLONE_TOKEN_ANNOTATION]: signToken(cloneClaims(clone(ns, name), Date.now() - 600_000), realKey) }), 'EXPIRED'],
    ['a real token for another target', (ns) => ({ [CLONE_TOKEN_ANNOTATION]: signToken(cloneClaims(clone(ns, 'elsewhere'), Date.now()), realKey) }), 'WRONG_TARGET'],
    ['a hand-written seal', (ns, name) => ({ [CLONE_TOKEN_ANNOTATION]: signToken(cloneClaims(clone(ns, name), Date.now()), realKey), [CLONE_SEAL_ANNOTATION]: 'v1.forged' }), 'BAD_SEAL'],
  ];

  test.each(cases)('legacy PVC, %s', async (_what, annotations, code) => {
    const ns = users.carol!.ns;
    const name = `forged-${code.toLowerCase().replace(/_/g, '-')}`;
    await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: { metadata: { name, annotations: { [CLONE_REQUEST_ANNOTATION]: `${golden}/fedora`, ...annotations(ns, name) } }, spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: SOURCE_SIZE } } } } });
    await waitFor('the refusal', async () => ((await annotation(ns, name, Annotation.RunningReason)) === 'CloneAuthorizationFailed' ? true : undefined), 30_000);
    expect(await annotation(ns, name, Annotation.RunningMessage)).toMatch(new RegExp(`^${code}: `));
    expect(await annotation(ns, name, Annotation.PodPhase)).toBe('Failed');
    expect(await eventMessage(ns, name, 'CloneAuthorizationFailed')).toMatch(new RegExp(`^${code}: `));
    expect(await getPod(ns, `cdi-upload-${name}`)).toBeUndefined();
    const uid = await uidOf(ns, name);
    expect((await core.listNamespacedPod({ namespace: golden })).items.map((p) => p.metadata?.name)).not.toContain(sourcePodName(uid));
  });

  test.each<[string, () => Promise<string>]>([
    ['a hand-written seal', async () => 'v1.forged'],
    ["another DataVolume's seal (another UID, another target)", async () => (await getDv(users.alice!.ns, 'late-copy')).metadata.annotations?.[CLONE_SEAL_ANNOTATION] ?? 'v1.missing'],
  ])('a DataVolume with a real token and %s: Failed with BAD_SEAL, no PVC', async (what, seal) => {
    const ns = users.carol!.ns;
    const name = what.startsWith('a hand') ? 'forged-seal-dv' : 'copied-seal-dv';
    const token = signToken(cloneClaims({ source: { namespace: golden, name: 'late' }, target: { namespace: ns, name } }, Date.now()), realKey);
    await custom.createNamespacedCustomObject({ ...dvApi, namespace: ns, body: { apiVersion: 'cdi.kubevirt.io/v1beta1', kind: 'DataVolume', metadata: { name, annotations: { [CLONE_TOKEN_ANNOTATION]: token, [CLONE_SEAL_ANNOTATION]: await seal() } }, spec: { source: { pvc: { namespace: golden, name: 'late' } }, storage: {} } } });
    const dv = await waitFor('Failed', async () => {
      const got = await getDv(ns, name);
      return got.status?.phase === 'Failed' ? got : undefined;
    }, 30_000);
    expect(dv.status?.conditions?.find((c) => c.type === 'Ready')).toMatchObject({ reason: 'CloneAuthorizationFailed', message: expect.stringMatching(/^BAD_SEAL: /) });
    expect(await eventMessage(ns, name, 'CloneAuthorizationFailed')).toMatch(/^BAD_SEAL: /);
    expect(await getPvc(ns, name)).toBeUndefined();
  });

  test('a DataVolume with a forged token: Failed with the reason, no PVC', async () => {
    const ns = users.carol!.ns;
    const token = signToken(cloneClaims(clone(ns, 'forged-dv'), Date.now()), otherKey);
    await custom.createNamespacedCustomObject({ ...dvApi, namespace: ns, body: { apiVersion: 'cdi.kubevirt.io/v1beta1', kind: 'DataVolume', metadata: { name: 'forged-dv', annotations: { [CLONE_TOKEN_ANNOTATION]: token } }, spec: { source: { pvc: { namespace: golden, name: 'fedora' } }, storage: {} } } });
    const dv = await waitFor('Failed', async () => {
      const got = await getDv(ns, 'forged-dv');
      return got.status?.phase === 'Failed' ? got : undefined;
    }, 30_000);
    expect(dv.status?.conditions?.find((c) => c.type === 'Ready')).toMatchObject({ reason: 'CloneAuthorizationFailed', message: expect.stringMatching(/^BAD_SIGNATURE: /) });
    expect(await getPvc(ns, 'forged-dv')).toBeUndefined();
  });
});
