/**
 * Issue #17's acceptance test: the talk's seed demo (examples/seed-demo/) end to end on a real
 * one-node cluster (tools/node-cluster/node-cluster.ts) with Ferry installed from the built images and
 * the manifests. The YAML is applied as it is in the repo but for the PVC's endpoint address (no
 * cluster DNS here: the node address, where busybox httpd serves the boot disk inside the netns)
 * and the VMI's placeholder SSH key (a key generated here): both substitutions are asserted to be
 * the only change. Then the same steps by hand, without Kubernetes (`ferry import` + `ferry
 * launcher` in a network namespace), in the same run, for bench/README.md ("Seed demo on a real node").
 *
 * Needs root, the binaries of scripts/build-control-plane.sh and dist/images/*.oci.tar.
 */

import { execFileSync, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { chmodSync, copyFileSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import * as k8s from '@kubernetes/client-node';
import { Annotation, PodPhase } from '../../src/api/cdi.js';
import { LAUNCHER_SECCOMP_PROFILE } from '../../controller/vm/launcher-pod.js';
import { FERRY_BIN, freePort, REPO_ROOT } from '../helpers/ferry-process.js';
import { removeDir, tempDir } from '../helpers/fixtures.js';
import { launchInNetns, Netns, POD_IP, serialMarker, sshArgs, sshKeyPair, stopLauncher, tcpRead } from '../helpers/netns-guest.js';
import {
  imageArchive, imageName, installFerry, NODE_IP, type NodeCluster, type NodeProcess, restrictedNamespace, SECCOMP_DAEMONSET, startNodeCluster, until,
} from '../../tools/node-cluster/node-cluster.js';

const NS = 'seed-demo';
const HTTP_PORT = 8080;
const NODE_PORT = 30000;
const EXAMPLE = join(REPO_ROOT, 'examples', 'seed-demo');
const IMPORT_TIMEOUT_MS = 240_000;
const BOOT_TIMEOUT_MS = 420_000;
/** The talk's placeholders, replaced here and nowhere else. */
const EXAMPLE_ENDPOINT = 'http://disk-server.seed-demo.svc.cluster.local:8080/disk.raw';
const EXAMPLE_KEY = /ssh-ed25519 AAAA\S*Placeholder\S* you@laptop/;

let cluster: NodeCluster;
let core: k8s.CoreV1Api;
let custom: k8s.CustomObjectsApi;
let http: NodeProcess;
let dir: string;
let bootDisk: string;
let key: { key: string; publicKey: string };
const timings: Record<string, number> = {};

const seconds = (ms: number): string => (ms / 1000).toFixed(1);
const note = (line: string): void => void process.stderr.write(`seed demo: ${line}\n`);

/** The lines of `changed` that differ from `original` (same line count asserted). */
function changedLines(original: string, changed: string): string[] {
  const a = original.split('\n');
  const b = changed.split('\n');
  expect(b).toHaveLength(a.length);
  return b.filter((line, i) => line !== a[i]);
}

type Vmi = { status?: { phase?: string; nodeName?: string; conditions?: { type: string; status: string }[] } };
const vmiStatus = async (): Promise<Vmi> =>
  (await custom.getNamespacedCustomObject({ group: 'kubevirt.io', version: 'v1', namespace: NS, plural: 'virtualmachineinstances', name: 'seed' })) as Vmi;

/** What a failing wait prints: the PVC, the VMI, the namespace's pods and events, the launcher's and the controller's logs. */
async function diagnose(): Promise<string> {
  const out = async (args: string[]): Promise<string> => {
    const r = await cluster.kubectl(args);
    return `${r.stdout}${r.stderr}`.trim();
  };
  return [
    `pvc: ${await out(['-n', NS, 'get', 'pvc', 'seed-disk', '-o', 'jsonpath={.metadata.annotations}'])}`,
    `vmi: ${JSON.stringify(await vmiStatus().catch((e: Error) => e.message))}`,
    `pods:\n${await out(['-n', NS, 'get', 'pods', '-o', 'wide'])}`,
    `events:\n${(await out(['-n', NS, 'get', 'events', '--sort-by=.lastTimestamp'])).split('\n').slice(-15).join('\n')}`,
    `launcher log:\n${(await out(['-n', NS, 'logs', '-l', 'kubevirt.io=virt-launcher', '--tail=30'])).slice(-4000)}`,
    `controller log:\n${await out(['-n', 'ferry-system', 'logs', 'deploy/ferry-controller', '--tail=15'])}`,
  ].join('\n');
}

/** Runs a program inside the cluster's netns (the node's network), bounded. */
function inNodeNet(file: string, args: readonly string[], timeoutMs: number): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = spawn('nsenter', [`--net=/run/netns/${cluster.netns}`, '--', file, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, out });
    });
  });
}

beforeAll(async () => {
  let t = Date.now();
  const lap = (what: string): void => {
    note(`${what} ${seconds(Date.now() - t)} s`);
    t = Date.now();
  };
  cluster = await startNodeCluster({ volumes: 2 });
  core = cluster.kubeConfig.makeApiClient(k8s.CoreV1Api);
  custom = cluster.kubeConfig.makeApiClient(k8s.CustomObjectsApi);
  lap(`cluster started (Node Ready ${cluster.readyAfterSeconds.toFixed(1)} s after containerd):`);
  const ferry = imageArchive('ferry');
  const launcher = imageArchive('ferry-launcher');
  expect(await cluster.importImage(ferry)).toContain(imageName(ferry));
  expect(await cluster.importImage(launcher)).toContain(imageName(launcher));
  lap('images imported:');
  dir = tempDir('ferry-seed-demo-');
  await restrictedNamespace(cluster, NS);
  await installFerry(cluster, imageName(ferry), dir);
  lap('kubectl apply -k → controller rolled out:');

  bootDisk = execFileSync('bash', [join(REPO_ROOT, 'scripts', 'make-boot-disk.sh')], { encoding: 'utf8' }).trim().split('\n').pop() ?? '';
  const www = join(dir, 'www');
  mkdirSync(www);
  copyFileSync(bootDisk, join(www, 'disk.raw'));
  http = cluster.startInNode('httpd', 'busybox', ['httpd', '-f', '-v', '-p', `${NODE_IP}:${HTTP_PORT}`, '-h', www]);
  key = sshKeyPair(dir);
}, 600_000);

afterAll(async () => {
  await http?.stop();
  await cluster?.stop();
  if (dir) removeDir(dir);
  note(`timings (s): ${JSON.stringify(Object.fromEntries(Object.entries(timings).map(([k, v]) => [k, Number(seconds(v))])))}`);
}, 180_000);

describe('the seed demo on a real node (examples/seed-demo, the talk\'s YAML)', () => {
  let vmiApplied = 0;

  it('1. pvc.yaml with only the endpoint address changed: a real importer pod, storage.pod.phase Succeeded', async () => {
    const original = readFileSync(join(EXAMPLE, 'pvc.yaml'), 'utf8');
    expect(original).toContain(EXAMPLE_ENDPOINT);
    const endpoint = `http://${NODE_IP}:${HTTP_PORT}/disk.raw`;
    const pvcYaml = original.replace(EXAMPLE_ENDPOINT, endpoint);
    expect(changedLines(original, pvcYaml)).toEqual([`    kubevirt.io/storage.import.endpoint: "${endpoint}"`]);

    const t0 = Date.now();
    await cluster.kubectlOk(['-n', NS, 'apply', '-f', '-'], { input: pvcYaml });
    const done = await until('seed-disk storage.pod.phase Succeeded', IMPORT_TIMEOUT_MS, async () => {
      const p = await core.readNamespacedPersistentVolumeClaim({ name: 'seed-disk', namespace: NS });
      return p.metadata?.annotations?.[Annotation.PodPhase] === PodPhase.Succeeded ? p : undefined;
    }, diagnose);
    timings['pvc apply → Succeeded'] = Date.now() - t0;
    note(`kubectl apply pvc.yaml → Succeeded in ${seconds(timings['pvc apply → Succeeded'])} s`);
    expect(done.status?.phase).toBe('Bound');
    // The disk on the PV is the boot disk (the rest of the claim's size reads as zeroes).
    execFileSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', bootDisk, join(cluster.volumeDir(done.spec?.volumeName ?? ''), 'disk.img')]);
    // The importer read it from a pod address (the pod network).
    expect(readFileSync(http.logFile, 'utf8')).toMatch(/^10\.244\.0\.\d+:\d+: /m);
  }, IMPORT_TIMEOUT_MS + 30_000);

  it('2. vmi.yaml with only the placeholder key replaced: a real launcher pod under TCG, the VMI Running and Ready', async () => {
    const original = readFileSync(join(EXAMPLE, 'vmi.yaml'), 'utf8');
    expect(original).toMatch(EXAMPLE_KEY);
    const vmiYaml = original.replace(EXAMPLE_KEY, key.publicKey);
    expect(changedLines(original, vmiYaml)).toEqual([`          - ${key.publicKey}`]);

    vmiApplied = Date.now();
    await cluster.kubectlOk(['-n', NS, 'apply', '-f', '-'], { input: vmiYaml });
    const running = await until('VMI seed Running and Ready', BOOT_TIMEOUT_MS, async () => {
      const v = await vmiStatus();
      return v.status?.phase === 'Running' && v.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ? v : undefined;
    }, diagnose);
    timings['vmi apply → Running+Ready'] = Date.now() - vmiApplied;
    note(`kubectl apply vmi.yaml → Running and Ready in ${seconds(timings['vmi apply → Running+Ready'])} s`);
    expect(running.status?.nodeName).toBe('fnode');
    const pods = await core.listNamespacedPod({ namespace: NS, labelSelector: 'kubevirt.io=virt-launcher' });
    expect(pods.items).toHaveLength(1);
    const pod = pods.items[0]!;
    // The restricted profile holds (the namespace enforces it): passt's sandbox runs under the
    // launcher's Localhost seccomp profile (RuntimeDefault refuses its user namespace), no capability.
    expect(pod.spec?.securityContext?.seccompProfile).toEqual({ type: 'Localhost', localhostProfile: LAUNCHER_SECCOMP_PROFILE });
    expect(pod.spec?.containers[0]?.securityContext?.capabilities).toEqual({ drop: ['ALL'] });
    expect(pod.spec?.containers[0]?.args).toEqual(expect.arrayContaining(['--pod-network', 'passt']));
    const log = (await cluster.kubectlOk(['-n', NS, 'logs', pod.metadata?.name ?? ''])).split('\n');
    const passt = log.find((l) => l.includes('"passt started"'));
    expect(passt).toBeDefined();
    note(`launcher: ${passt?.slice(0, 400)}`);
  }, BOOT_TIMEOUT_MS + 30_000);

  it('3. service.yaml unchanged: ssh -p 30000 to the node address logs in to the guest with the cloud-init key and runs a command', async () => {
    const serviceYaml = readFileSync(join(EXAMPLE, 'service.yaml'), 'utf8');
    await cluster.kubectlOk(['-n', NS, 'apply', '-f', '-'], { input: serviceYaml });
    // The guest boots under TCG after the VMI is Ready: bounded retries for the banner, then ssh.
    const banner = await until(`an SSH banner on ${NODE_IP}:${NODE_PORT}`, BOOT_TIMEOUT_MS, async () => {
      const r = await inNodeNet('busybox', ['nc', '-w', '5', NODE_IP, String(NODE_PORT)], 15_000);
      return r.out.startsWith('SSH-') ? r.out.split('\n')[0] : undefined;
    }, diagnose);
    timings['vmi apply → SSH banner'] = Date.now() - vmiApplied;
    note(`kubectl apply vmi.yaml → SSH banner (${banner?.trim()}) through NodePort ${NODE_PORT} in ${seconds(timings['vmi apply → SSH banner'])} s`);
    const said = await until('ssh login', 120_000, async () => {
      const r = await inNodeNet('ssh', sshArgs(key.key, NODE_PORT, NODE_IP, 'echo "guest says $(cat /proc/sys/kernel/hostname) $((6 * 7))"; ip -4 -o addr show eth0'), 60_000);
      return r.code === 0 ? r.out : undefined;
    }, diagnose);
    expect(said).toMatch(/^guest says \S+ 42$/m);
    expect(said).toContain('inet 10.0.2.2/24'); // KubeVirt's masquerade address, from passt's DHCP
  }, BOOT_TIMEOUT_MS + 150_000);

  it('4. deleting the VMI and the PVC (and the Service) leaves no pod, Service or volume claim of Ferry\'s', async () => {
    await cluster.kubectlOk(['-n', NS, 'delete', '-f', '-', '--wait=true', '--timeout=150s'], {
      input: ['service.yaml', 'vmi.yaml', 'pvc.yaml'].map((f) => readFileSync(join(EXAMPLE, f), 'utf8')).join('\n---\n'),
      timeoutMs: 160_000,
    });
    const left = await until('nothing left in the namespace', 120_000, async () => {
      const [pods, services, claims] = await Promise.all([
        core.listNamespacedPod({ namespace: NS }),
        core.listNamespacedService({ namespace: NS }),
        core.listNamespacedPersistentVolumeClaim({ namespace: NS }),
      ]);
      const names = [...pods.items, ...services.items, ...claims.items].map((o) => `${o.kind ?? ''}/${o.metadata?.name ?? ''}`);
      return names.length === 0 ? names : undefined;
    }, async () => `${(await cluster.kubectl(['-n', NS, 'get', 'all,pvc'])).stdout}\n${await diagnose()}`);
    expect(left).toEqual([]);
    // Nor anywhere else: no importer, launcher or scratch claim of Ferry's in any namespace; what
    // runs is the install (ferry-system's Deployments: every pod there owned by a ReplicaSet; the
    // seccomp profile's DaemonSet in ferry-node).
    const pods = await core.listPodForAllNamespaces({});
    const installed = (ns: string | undefined, owner: string | undefined): boolean =>
      (ns === 'ferry-system' && owner === 'ReplicaSet') || (ns === SECCOMP_DAEMONSET.namespace && owner === 'DaemonSet');
    const notInstalled = pods.items.filter((p) => !installed(p.metadata?.namespace, p.metadata?.ownerReferences?.[0]?.kind));
    expect(notInstalled.map((p) => `${p.metadata?.namespace}/${p.metadata?.name}`)).toEqual([]);
    const claims = await core.listPersistentVolumeClaimForAllNamespaces({});
    expect(claims.items.map((c) => `${c.metadata?.namespace}/${c.metadata?.name}`)).toEqual([]);
  }, 300_000);
});

describe('the same steps by hand, without Kubernetes (for bench/README.md)', () => {
  it('ferry import from an HTTP server, then ferry launcher with the same VMI in a network namespace: ssh logs in', async () => {
    const www = join(dir, 'www');
    const port = await freePort();
    const server = spawn('busybox', ['httpd', '-f', '-p', `127.0.0.1:${port}`, '-h', www], { stdio: 'ignore' });
    const ns = await Netns.create();
    // A short path (libvirt's sockets below it must fit in 107 bytes), traversable by QEMU's own user.
    const root = tempDir('fsd-');
    chmodSync(root, 0o711);
    let run: ReturnType<typeof launchInNetns> | undefined;
    try {
      const disk = join(root, 'disk.img');
      const t0 = Date.now();
      execFileSync(process.execPath, [FERRY_BIN, 'import', '--url', `http://127.0.0.1:${port}/disk.raw`, '--dest', disk, '--size', '1Gi'], { stdio: 'pipe', timeout: IMPORT_TIMEOUT_MS });
      timings['by hand: ferry import'] = Date.now() - t0;
      execFileSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', bootDisk, disk]);
      // The same VMI, with the namespace and uid the controller would give it.
      const vmiYaml = readFileSync(join(EXAMPLE, 'vmi.yaml'), 'utf8')
        .replace(EXAMPLE_KEY, key.publicKey)
        .replace(/^ {2}name: seed\n/m, `  name: seed\n  namespace: ${NS}\n  uid: ${randomUUID()}\n`);
      const t1 = Date.now();
      run = launchInNetns(ns, join(root, 'l'), disk, vmiYaml, ['--pod-network', 'passt']);
      await serialMarker(run, 'FERRY-SSH-OK', BOOT_TIMEOUT_MS);
      const banner = await until(`an SSH banner on ${POD_IP}:22`, 120_000, async () => {
        const out = await tcpRead(ns, POD_IP, 22).catch(() => '');
        return out.startsWith('SSH-') ? out : undefined;
      });
      timings['by hand: ferry launcher → SSH banner'] = Date.now() - t1;
      expect(banner).toMatch(/^SSH-2\.0-dropbear/);
      const said = await ns.exec('ssh', sshArgs(key.key, 22, POD_IP, 'echo "guest says $((6 * 7))"'), 90_000);
      expect(said).toMatch(/^guest says 42$/m);
      note(`by hand: ferry import ${seconds(timings['by hand: ferry import']!)} s, ferry launcher → SSH banner ${seconds(timings['by hand: ferry launcher → SSH banner']!)} s`);
    } finally {
      if (run) await stopLauncher(run);
      ns.close();
      server.kill('SIGKILL');
      removeDir(root);
    }
  }, IMPORT_TIMEOUT_MS + BOOT_TIMEOUT_MS + 200_000);
});
