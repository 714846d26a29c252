/**
 * Ferry on a real one-node cluster (tools/node-cluster/node-cluster.ts): the images built by
 * `npm run images` are imported into containerd, the controller runs from the manifests as a
 * Deployment (`kubectl apply -k` of an overlay that only changes the image names), and the kubelet
 * runs the importer pods it creates, under the restricted Pod Security Standard. The HTTP source is
 * busybox's httpd, started inside the cluster's network namespace on the node address.
 *
 * Needs root, the binaries of scripts/build-control-plane.sh and dist/images/*.oci.tar.
 */

import { execFileSync, spawn } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import type { V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';
import * as k8s from '@kubernetes/client-node';
import { Annotation, PodPhase } from '../../src/api/cdi.js';
import { ErrorCode } from '../../src/errors.js';
import { parseQuantity } from '../../src/quantity.js';
import { memorySyncEveryBytesFor } from '../../importer/engine/tuning.js';
import { FERRY_BIN, REPO_ROOT } from '../helpers/ferry-process.js';
import { convertImage, makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { pushImage, startRegistry, writeOciLayout } from '../helpers/registry.js';
import { startRgw } from '../helpers/rgw.js';
import {
  imageArchive, imageName, NODE_IP, type NodeCluster, type NodeProcess, SECCOMP_DAEMONSET, startNodeCluster, StorageClass, until,
} from '../../tools/node-cluster/node-cluster.js';
import { setUpFerry, vmiRunningAndReady, vmiStatus } from '../../tools/node-cluster/ferry-on-node.js';

const NS = 'ferry-node-test';
const HTTP_PORT = 8080;
const REGISTRY_PORT = 5000;
const S3_PORT = 9000;
const IMPORT_TIMEOUT_MS = 240_000;

let cluster: NodeCluster;
let core: k8s.CoreV1Api;
let http: NodeProcess;
let fixtures: string;
let ferryImage: string;
let served: string;
let overlay: string;
const raw = (): string => join(fixtures, 'disk.raw');

async function pvc(name: string): Promise<V1PersistentVolumeClaim> {
  return core.readNamespacedPersistentVolumeClaim({ name, namespace: NS });
}

async function createPvc(name: string, storageClass: string, annotations: Record<string, string>): Promise<void> {
  await core.createNamespacedPersistentVolumeClaim({
    namespace: NS,
    body: {
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      metadata: { name, annotations },
      spec: { accessModes: ['ReadWriteOnce'], storageClassName: storageClass, resources: { requests: { storage: '1Gi' } } },
    },
  });
}

/** What a failing wait prints: the PVC's annotations, the namespace's pods and events, the controller's log. */
async function diagnose(name: string): Promise<string> {
  const a = await pvc(name).then((p) => JSON.stringify(p.metadata?.annotations ?? {}, null, 1), (e: Error) => e.message);
  const pods = (await cluster.kubectl(['-n', NS, 'get', 'pods', '-o', 'wide'])).stdout;
  const events = (await cluster.kubectl(['-n', NS, 'get', 'events', '--sort-by=.lastTimestamp'])).stdout.split('\n').slice(-15).join('\n');
  const logs = (await cluster.kubectl(['-n', 'ferry-system', 'logs', 'deploy/ferry-controller', '--tail=20'])).stdout;
  return `PVC ${name} annotations: ${a}\npods:\n${pods}\nevents:\n${events}\ncontroller log:\n${logs}`;
}

async function phaseOf(name: string, phase: string): Promise<V1PersistentVolumeClaim> {
  return until(`${name} ${Annotation.PodPhase}=${phase}`, IMPORT_TIMEOUT_MS, async () => {
    const p = await pvc(name);
    return p.metadata?.annotations?.[Annotation.PodPhase] === phase ? p : undefined;
  }, () => diagnose(name));
}

/** The directory behind the PV the claim is bound to. */
async function boundDir(name: string): Promise<string> {
  const p = await pvc(name);
  expect(p.status?.phase).toBe('Bound');
  return cluster.volumeDir(p.spec?.volumeName ?? '(unbound)');
}

beforeAll(async () => {
  const ferryArchive = imageArchive('ferry');
  let t = Date.now();
  const lap = (what: string): void => {
    process.stderr.write(`node test: ${what} ${((Date.now() - t) / 1000).toFixed(1)} s\n`);
    t = Date.now();
  };
  cluster = await startNodeCluster({ volumes: 9 });
  lap(`cluster started (Node Ready ${cluster.readyAfterSeconds.toFixed(1)} s after containerd):`);
  core = cluster.kubeConfig.makeApiClient(k8s.CoreV1Api);
  fixtures = tempDir('ferry-node-fixtures-');
  ({ ferryImage, overlay } = await setUpFerry(cluster, fixtures, { images: ['ferry'], namespaces: [NS], progress: (line) => void process.stderr.write(`node test: ${line}\n`) }));
  expect(ferryImage).toBe(imageName(ferryArchive));

  makeRawDisk(raw(), 64 * MiB);
  served = join(fixtures, 'www');
  mkdirSync(served);
  convertImage(raw(), 'qcow2', join(served, 'disk.qcow2'));
  // A real HTTP server with Range support, on the node address, inside the netns only.
  http = cluster.startInNode('httpd', 'busybox', ['httpd', '-f', '-v', '-p', `${NODE_IP}:${HTTP_PORT}`, '-h', served]);
}, 600_000);

afterAll(async () => {
  const t = Date.now();
  await http?.stop();
  await cluster?.stop();
  process.stderr.write(`node test: cluster stopped and removed in ${((Date.now() - t) / 1000).toFixed(1)} s\n`);
  if (fixtures) removeDir(fixtures);
}, 180_000);

describe('Ferry on a real node', () => {
  it('runs the controller from the manifests as a Deployment: both replicas Running as uid 65532, one holds the Lease', async () => {
    const pods = await core.listNamespacedPod({ namespace: 'ferry-system', labelSelector: 'app.kubernetes.io/component=controller' });
    expect(pods.items).toHaveLength(2);
    for (const p of pods.items) {
      expect(p.status?.phase).toBe('Running');
      expect(p.spec?.nodeName).toBe('fnode');
      expect(p.spec?.containers[0]?.image).toBe(ferryImage);
    }
    const coordination = cluster.kubeConfig.makeApiClient(k8s.CoordinationV1Api);
    const holder = await until('a Lease holder in ferry-system', 60_000, async () => {
      const leases = await coordination.listNamespacedLease({ namespace: 'ferry-system' });
      return leases.items.map((l) => l.spec?.holderIdentity).find((h) => h !== undefined && h !== '');
    });
    expect(pods.items.map((p) => p.metadata?.name)).toContain(holder);
    // The process really runs as the manifests' non-root user (through the kubelet's exec).
    const uid = await cluster.kubectlOk(['-n', 'ferry-system', 'exec', holder, '--', 'node', '-e', 'console.log(process.getuid(), process.getgid())']);
    expect(uid.trim()).toBe('65532 65532');
    const importerImage = (await core.readNamespacedConfigMap({ name: 'ferry-controller', namespace: 'ferry-system' })).data?.IMPORTER_IMAGE;
    expect(importerImage).toBe(ferryImage);
  });

  it('imports a qcow2 over HTTP: a real importer pod runs on the kubelet and the PV holds the same disk', async () => {
    const t0 = Date.now();
    await createPvc('http-qcow2', StorageClass.Immediate, {
      [Annotation.Endpoint]: `http://${NODE_IP}:${HTTP_PORT}/disk.qcow2`,
      [Annotation.RetainAfterCompletion]: 'true',
    });
    const done = await phaseOf('http-qcow2', PodPhase.Succeeded);
    process.stderr.write(`node test: http-qcow2 PVC created → Succeeded in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
    const podName = done.metadata?.annotations?.[Annotation.ImportPodName] ?? '';
    const pod: V1Pod = await core.readNamespacedPod({ name: podName, namespace: NS });
    expect(pod.spec?.nodeName).toBe('fnode');
    expect(pod.spec?.containers[0]?.image).toBe(ferryImage);
    expect(pod.status?.containerStatuses?.[0]?.state?.terminated?.exitCode).toBe(0);
    const disk = join(await boundDir('http-qcow2'), 'disk.img');
    execFileSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', raw(), disk]);
    // The reads came from a pod address (the pod network), as ranged requests (nbdkit's curl plugin).
    expect(readFileSync(http.logFile, 'utf8')).toMatch(/^10\.244\.0\.\d+:\d+: response:206$/m);
    // The importer read its container's memory limit from the cgroup files the kubelet set up: the
    // flushes that only bound memory come every quarter of it.
    const limit = pod.spec?.containers[0]?.resources?.limits?.memory;
    expect(limit).toBeDefined();
    const log = await core.readNamespacedPodLog({ name: podName, namespace: NS });
    const routed = log.split('\n').filter((l) => l.includes('"route chosen"')).map((l) => JSON.parse(l) as { memorySyncEveryBytes?: number });
    expect(routed.map((r) => r.memorySyncEveryBytes)).toEqual([memorySyncEveryBytesFor(parseQuantity(limit ?? ''))]);
  }, IMPORT_TIMEOUT_MS + 30_000);

  it('a 404 ends in the Failed phase with SOURCE_NOT_FOUND, not retried', async () => {
    await createPvc('http-404', StorageClass.Immediate, { [Annotation.Endpoint]: `http://${NODE_IP}:${HTTP_PORT}/missing.qcow2` });
    const failed = await phaseOf('http-404', PodPhase.Failed);
    expect(failed.metadata?.annotations?.[Annotation.ErrorCode]).toBe(ErrorCode.SourceNotFound);
    expect(failed.metadata?.annotations?.[Annotation.FatalError]).toBe('true');
    expect(failed.metadata?.annotations?.[Annotation.PodRestarts] ?? '0').toBe('0');
  }, IMPORT_TIMEOUT_MS + 30_000);

  it('a blank import leaves a sparse raw disk of the claim\'s size (less filesystem overhead)', async () => {
    await createPvc('blank', StorageClass.Immediate, { [Annotation.Source]: 'none' });
    await phaseOf('blank', PodPhase.Succeeded);
    const disk = join(await boundDir('blank'), 'disk.img');
    const info = JSON.parse(execFileSync('qemu-img', ['info', '--output=json', '-f', 'raw', disk], { encoding: 'utf8' })) as { 'virtual-size': number; 'actual-size': number };
    expect(info['virtual-size']).toBeGreaterThan(900 * MiB);
    expect(info['virtual-size']).toBeLessThanOrEqual(1024 * MiB);
    expect(info['actual-size']).toBeLessThan(16 * MiB);
  }, IMPORT_TIMEOUT_MS + 30_000);

  it('a WaitForFirstConsumer claim with storage.bind.immediate.requested imports at once: the importer pod is its first consumer', async () => {
    await createPvc('wffc-now', StorageClass.WaitForFirstConsumer, {
      [Annotation.Endpoint]: `http://${NODE_IP}:${HTTP_PORT}/disk.qcow2`,
      [Annotation.RetainAfterCompletion]: 'true',
      'cdi.kubevirt.io/storage.bind.immediate.requested': 'true',
    });
    const done = await phaseOf('wffc-now', PodPhase.Succeeded);
    const pod = await core.readNamespacedPod({ name: done.metadata?.annotations?.[Annotation.ImportPodName] ?? '', namespace: NS });
    expect(pod.spec?.nodeName).toBe('fnode');
    // The scheduler bound the claim to a PV of the WaitForFirstConsumer class for that pod.
    const pv = await core.readPersistentVolume({ name: done.spec?.volumeName ?? '' });
    expect(pv.spec?.storageClassName).toBe(StorageClass.WaitForFirstConsumer);
    expect(pv.spec?.claimRef?.name).toBe('wffc-now');
    execFileSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', raw(), join(await boundDir('wffc-now'), 'disk.img')]);
  }, IMPORT_TIMEOUT_MS + 30_000);

  it('a WaitForFirstConsumer claim imports once a workload pod using it is scheduled (what Ferry does before that is recorded)', async () => {
    await createPvc('wffc', StorageClass.WaitForFirstConsumer, { [Annotation.Endpoint]: `http://${NODE_IP}:${HTTP_PORT}/disk.qcow2` });
    // Ten seconds without a consumer: does Ferry start an importer pod (which then is the first
    // consumer and picks the node) or wait, as CDI does? Printed for the record, both are allowed here.
    let importerBeforeConsumer = false;
    for (let i = 0; i < 10 && !importerBeforeConsumer; i++) {
      const pods = await core.listNamespacedPod({ namespace: NS, fieldSelector: `metadata.name=importer-wffc` });
      importerBeforeConsumer = pods.items.length > 0;
      if (!importerBeforeConsumer) await sleep(1000);
    }
    const early = await pvc('wffc');
    process.stderr.write(`node test: WaitForFirstConsumer without a consumer: importer pod ${importerBeforeConsumer ? 'created' : 'not created'} within 10 s, PVC ${early.status?.phase}, ${Annotation.PodPhase}=${early.metadata?.annotations?.[Annotation.PodPhase] ?? '(none)'}\n`);
    // A workload (restricted, the ferry image, exits at once) that mounts the claim.
    await core.createNamespacedPod({
      namespace: NS,
      body: {
        metadata: { name: 'wffc-consumer' },
        spec: {
          restartPolicy: 'Never',
          automountServiceAccountToken: false,
          securityContext: { runAsNonRoot: true, runAsUser: 107, fsGroup: 107, seccompProfile: { type: 'RuntimeDefault' } },
          containers: [{
            name: 'consumer', image: ferryImage, imagePullPolicy: 'Never', command: ['node', '-e', '0'],
            volumeMounts: [{ name: 'data', mountPath: '/data' }],
            securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } },
          }],
          volumes: [{ name: 'data', persistentVolumeClaim: { claimName: 'wffc' } }],
        },
      },
    });
    const done = await phaseOf('wffc', PodPhase.Succeeded);
    const pv = await core.readPersistentVolume({ name: done.spec?.volumeName ?? '' });
    expect(pv.spec?.storageClassName).toBe(StorageClass.WaitForFirstConsumer);
    execFileSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', raw(), join(await boundDir('wffc'), 'disk.img')]);
  }, IMPORT_TIMEOUT_MS + 60_000);

  it('the leader SIGKILLed mid-import (no chance to release its Lease): a Lease holder again (the restarted container under the same pod name, or the other replica) finishes the PVC without a second importer run', async () => {
    const coordination = cluster.kubeConfig.makeApiClient(k8s.CoordinationV1Api);
    const holderNow = async (): Promise<string | undefined> =>
      (await coordination.listNamespacedLease({ namespace: 'ferry-system' })).items.map((l) => l.spec?.holderIdentity).find((h) => h);
    const leader = await until('a Lease holder', 60_000, holderNow);
    await createPvc('failover', StorageClass.Immediate, { [Annotation.Endpoint]: `http://${NODE_IP}:${HTTP_PORT}/disk.qcow2` });
    // The leader has acted (the importer pod exists): SIGKILL its container through containerd.
    await until('the importer pod of failover', 60_000, async () => ((await pvc('failover')).metadata?.annotations?.[Annotation.ImportPodName] ? true : undefined));
    const before = await core.readNamespacedPod({ name: leader, namespace: 'ferry-system' });
    const containerId = (before.status?.containerStatuses?.[0]?.containerID ?? '').replace(/^containerd:\/\//, '');
    expect(containerId).not.toBe('');
    const t0 = Date.now();
    const killed = await cluster.ctr(['tasks', 'kill', '-s', 'SIGKILL', containerId]);
    expect(killed.stderr).toBe('');
    const done = await phaseOf('failover', PodPhase.Succeeded);
    process.stderr.write(`node test: leader ${leader} SIGKILLed → failover PVC Succeeded ${((Date.now() - t0) / 1000).toFixed(1)} s later, Lease now held by ${await holderNow()}\n`);
    // It really died: the kubelet restarted its container.
    const after = await until('the killed container restarted', 60_000, async () => {
      const p = await core.readNamespacedPod({ name: leader, namespace: 'ferry-system' });
      return (p.status?.containerStatuses?.[0]?.restartCount ?? 0) >= 1 ? p : undefined;
    });
    expect(after.status?.containerStatuses?.[0]?.lastState?.terminated?.exitCode).toBe(137);
    expect(await holderNow()).toBeDefined();
    expect(done.metadata?.annotations?.[Annotation.PodRestarts] ?? '0').toBe('0');
    execFileSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', raw(), join(await boundDir('failover'), 'disk.img')]);
  }, IMPORT_TIMEOUT_MS + 90_000);
});

/**
 * Each program a Ferry pod runs, run in the built image by the kubelet (restricted pod, the image's
 * own user): a program missing from an image fails here, not in a user's import. Keep in step with
 * what the code spawns: importer/qemu-img.ts (qemu-img, qemu-io), importer/nbdkit.ts (nbdkit + its
 * curl plugin), the decompressors, src/io's runTool (blockdev, fallocate, getent, mkfifo), the one-stream
 * path's child curl and the size bound's prlimit (importer/sources/curl-fetch.ts); the launcher's
 * libvirtd, virsh (launcher/virsh.ts), qemu-system-x86_64, qemu-img (launcher/volumes.ts), xorrisofs
 * (launcher/domain/cloud-init.ts), passt (launcher/passt.ts).
 */
const PROGRAMS: Record<'ferry' | 'ferry-launcher', readonly (readonly string[])[]> = {
  ferry: [
    ['node', '--version'], ['qemu-img', '--version'], ['qemu-io', '--version'], ['nbdkit', 'curl', '--version'],
    ['xz', '--version'], ['zstd', '--version'], ['bzip2', '--help'], ['gzip', '--version'],
    ['blockdev', '--version'], ['fallocate', '--version'], ['getent', 'passwd', 'qemu'], ['mkfifo', '--version'],
    ['curl', '--version'], ['prlimit', '--version'],
  ],
  'ferry-launcher': [
    ['node', '--version'], ['libvirtd', '--version'], ['virsh', '--version'], ['qemu-system-x86_64', '--version'],
    ['qemu-img', '--version'], ['xorrisofs', '--version'], ['getent', 'passwd', 'qemu'], ['passt', '--version'],
  ],
};

describe('the images hold every program their pods run', () => {
  for (const image of ['ferry', 'ferry-launcher'] as const) {
    it(`${image}: ${PROGRAMS[image].map((p) => p[0]).join(', ')}`, async () => {
      const path = imageArchive(image);
      const name = imageName(path);
      if (image !== 'ferry') expect(await cluster.importImage(path)).toContain(name);
      const podName = `programs-${image}`;
      await core.createNamespacedPod({
        namespace: NS,
        body: {
          metadata: { name: podName },
          spec: {
            restartPolicy: 'Never',
            automountServiceAccountToken: false,
            securityContext: { runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } },
            containers: PROGRAMS[image].map((argv, i) => ({
              name: `p${i}-${argv[0]!.replace(/[^a-z0-9]/g, '')}`.slice(0, 63),
              image: name,
              imagePullPolicy: 'Never',
              command: [...argv],
              securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } },
            })),
          },
        },
      });
      const pod = await until(`pod ${podName} to finish`, 120_000, async () => {
        const p = await core.readNamespacedPod({ name: podName, namespace: NS });
        return p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed' ? p : undefined;
      }, () => diagnose(podName));
      const results = (pod.status?.containerStatuses ?? [])
        .map((c) => ({ name: c.name, exit: c.state?.terminated?.exitCode, why: c.state?.terminated?.message ?? c.state?.terminated?.reason }))
        .sort((a, b) => a.name.localeCompare(b.name, 'en', { numeric: true }));
      expect(results).toHaveLength(PROGRAMS[image].length);
      expect(results.filter((r) => r.exit !== 0)).toEqual([]);
    }, 300_000);
  }
});

describe('the launcher\'s seccomp profile, installed by the DaemonSet (ADR 0011)', () => {
  const profile = (): string => join(cluster.kubeletSeccompDir, 'ferry', 'launcher.json');

  it('is on the node, byte for byte launcher/seccomp-launcher.json, root-owned 0644, written by a pod without capabilities', async () => {
    expect(readFileSync(profile())).toEqual(readFileSync(join(REPO_ROOT, 'launcher', 'seccomp-launcher.json')));
    const st = statSync(profile());
    expect([st.uid, st.mode & 0o777]).toEqual([0, 0o644]);
    const pods = await core.listNamespacedPod({ namespace: SECCOMP_DAEMONSET.namespace, labelSelector: 'app.kubernetes.io/component=seccomp-profile' });
    expect(pods.items).toHaveLength(1);
    const pod = pods.items[0]!;
    expect(pod.spec?.containers[0]?.image).toBe(ferryImage);
    expect(pod.status?.containerStatuses?.[0]?.ready).toBe(true);
    expect(pod.spec?.containers[0]?.securityContext?.capabilities?.drop).toEqual(['ALL']);
    expect(pod.spec?.containers[0]?.securityContext?.capabilities?.add).toBeUndefined();
    expect(pod.spec?.volumes?.map((v) => v.hostPath?.path)).toEqual([join(cluster.kubeletSeccompDir, 'ferry')]);
    // In the container, the installer has no effective capability at all.
    const status = await cluster.kubectlOk(['-n', SECCOMP_DAEMONSET.namespace, 'exec', pod.metadata?.name ?? '', '--', 'node', '-e', "process.stdout.write(require('fs').readFileSync('/proc/self/status','utf8'))"]);
    expect(status).toMatch(/^CapEff:\s+0+$/m);
  }, 120_000);

  it('a pod under the profile that lands on a node before the profile waits in CreateContainerError (the kubelet retries), and starts once the DaemonSet has written it', async () => {
    // A node the DaemonSet has not reached yet: no DaemonSet pod, no file.
    await cluster.kubectlOk(['-n', SECCOMP_DAEMONSET.namespace, 'delete', 'daemonset', SECCOMP_DAEMONSET.name, '--cascade=foreground', '--wait=true', '--timeout=90s'], { timeoutMs: 100_000 });
    rmSync(profile());
    await core.createNamespacedPod({
      namespace: NS,
      body: {
        metadata: { name: 'before-profile' },
        spec: {
          restartPolicy: 'Never',
          automountServiceAccountToken: false,
          securityContext: { runAsNonRoot: true, runAsUser: 107, seccompProfile: { type: 'Localhost', localhostProfile: 'ferry/launcher.json' } },
          containers: [{
            name: 'c', image: ferryImage, imagePullPolicy: 'Never', command: ['node', '-e', 'console.log("started under ferry/launcher.json")'],
            securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } },
          }],
        },
      },
    });
    const waiting = await until('before-profile in CreateContainerError', 120_000, async () => {
      const w = (await core.readNamespacedPod({ name: 'before-profile', namespace: NS })).status?.containerStatuses?.[0]?.state?.waiting;
      return w?.reason === 'CreateContainerError' ? w : undefined;
    }, () => diagnose('before-profile'));
    expect(waiting.message).toMatch(/seccomp/i);
    const events = await cluster.kubectlOk(['-n', NS, 'get', 'events', '--field-selector', 'involvedObject.name=before-profile,type=Warning', '-o', 'jsonpath={.items[*].message}']);
    expect(events).toMatch(/seccomp/i);
    process.stderr.write(`node test: a pod before its Localhost profile: ${waiting.reason}: ${waiting.message}\n`);

    const t0 = Date.now();
    await cluster.kubectlOk(['apply', '-k', overlay]);
    await cluster.kubectlOk(['-n', SECCOMP_DAEMONSET.namespace, 'rollout', 'status', `daemonset/${SECCOMP_DAEMONSET.name}`, '--timeout=120s'], { timeoutMs: 130_000 });
    const installed = Date.now();
    const done = await until('before-profile Succeeded', 120_000, async () => {
      const p = await core.readNamespacedPod({ name: 'before-profile', namespace: NS });
      return p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed' ? p : undefined;
    }, () => diagnose('before-profile'));
    expect(done.status?.phase).toBe('Succeeded');
    process.stderr.write(`node test: DaemonSet re-applied → profile on the node in ${((installed - t0) / 1000).toFixed(1)} s → the waiting pod Succeeded ${((Date.now() - installed) / 1000).toFixed(1)} s later (the kubelet's retry)\n`);
    expect(readFileSync(profile())).toEqual(readFileSync(join(REPO_ROOT, 'launcher', 'seccomp-launcher.json')));
  }, 400_000);
});

describe('a registry import on the node', () => {
  it('imports a containerDisk image from docker-registry on the node address (plain HTTP, insecureSkipVerify): Succeeded, the PV holds the disk', async () => {
    // The image is pushed to a loopback registry (skopeo runs in the root namespace), whose store a
    // second docker-registry then serves inside the netns on the node address, where pods reach it.
    const regDir = join(fixtures, 'registry');
    const layout = join(fixtures, 'layout');
    await writeOciLayout(layout, 'v1', { layers: [{ entries: [{ name: 'disk', type: 'directory' }, { name: 'disk/disk.img', file: raw() }] }] });
    const loopback = await startRegistry(regDir);
    try {
      await pushImage(layout, 'v1', loopback, 'ferry/disk');
    } finally {
      await loopback.stop();
    }
    const config = join(regDir, 'node-config.yml');
    writeFileSync(config, `version: 0.1\nlog: {level: warn, accesslog: {disabled: true}}\nstorage: {filesystem: {rootdirectory: ${JSON.stringify(loopback.dataDir)}}}\nhttp: {addr: "${NODE_IP}:${REGISTRY_PORT}"}\n`);
    const registry = cluster.startInNode('registry', 'docker-registry', ['serve', config]);
    try {
      const t0 = Date.now();
      await createPvc('registry-disk', StorageClass.Immediate, {
        [Annotation.Source]: 'registry',
        [Annotation.Endpoint]: `docker://${NODE_IP}:${REGISTRY_PORT}/ferry/disk:v1`,
        [Annotation.InsecureSkipVerify]: 'true',
      });
      await phaseOf('registry-disk', PodPhase.Succeeded);
      process.stderr.write(`node test: registry PVC created → Succeeded in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
      execFileSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', raw(), join(await boundDir('registry-disk'), 'disk.img')]);
    } finally {
      await registry.stop();
    }
  }, IMPORT_TIMEOUT_MS + 120_000);
});

describe('an S3 import on the node', () => {
  it('imports a qcow2 object from radosgw (SigV4, keys in a Secret) reached from the pod network on the node address: Succeeded, the PV holds the disk', async () => {
    // radosgw (test/helpers/rgw.ts) listens on the root namespace's loopback; the node reaches it
    // on its own address through socat → a unix socket in the fixtures → socat → 127.0.0.1.
    const rgw = await startRgw();
    const sock = join(fixtures, 's3.sock');
    const out = spawn('socat', [`UNIX-LISTEN:${sock},fork,mode=600`, `TCP:${new URL(rgw.url).host}`], { stdio: 'ignore' });
    const relay = cluster.startInNode('s3-relay', 'socat', [`TCP-LISTEN:${S3_PORT},bind=${NODE_IP},reuseaddr,fork`, `UNIX-CONNECT:${sock}`]);
    try {
      await rgw.createBucket('images');
      await rgw.putFile('images', 'disk.qcow2', join(served, 'disk.qcow2'));
      await core.createNamespacedSecret({ namespace: NS, body: { metadata: { name: 's3-creds' }, stringData: { accessKeyId: rgw.accessKeyId, secretKey: rgw.secretKey } } });
      const t0 = Date.now();
      await createPvc('s3-disk', StorageClass.Immediate, {
        [Annotation.Source]: 's3',
        [Annotation.Endpoint]: `http://${NODE_IP}:${S3_PORT}/images/disk.qcow2`,
        [Annotation.SecretName]: 's3-creds',
      });
      await phaseOf('s3-disk', PodPhase.Succeeded);
      process.stderr.write(`node test: S3 PVC created → Succeeded in ${((Date.now() - t0) / 1000).toFixed(1)} s (radosgw cold start ${(rgw.startMs / 1000).toFixed(1)} s)\n`);
      execFileSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', raw(), join(await boundDir('s3-disk'), 'disk.img')]);
    } finally {
      await relay.stop();
      out.kill('SIGKILL');
      await rgw.stop();
    }
  }, IMPORT_TIMEOUT_MS + 180_000);
});

/** `ferry console` (root namespace, through the kubelet's exec) until `marker` shows or `ms` pass; then stopped by PID. */
function consoleUntil(vmi: string, marker: string, ms: number): Promise<string> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [FERRY_BIN, 'console', vmi, '-n', NS, '--kubeconfig', cluster.kubeconfigPath], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    const finish = (): void => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      resolve(out);
    };
    const timer = setTimeout(finish, ms);
    const take = (d: Buffer): void => {
      out += d.toString();
      if (out.includes(marker)) finish();
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.once('close', () => {
      clearTimeout(timer);
      resolve(out);
    });
  });
}

describe('a VMI on the node', () => {
  it('boots the imported test disk in a real launcher pod under TCG: Running and Ready, the guest seen through ferry console; deleting it removes the pod', async () => {
    const launcherArchive = imageArchive('ferry-launcher');
    expect(await cluster.importImage(launcherArchive)).toContain(imageName(launcherArchive));
    const bootDisk = execFileSync('bash', [join(REPO_ROOT, 'scripts', 'make-boot-disk.sh')], { encoding: 'utf8' }).trim().split('\n').pop() ?? '';
    cpSync(bootDisk, join(served, 'boot.raw'));
    await createPvc('boot', StorageClass.Immediate, { [Annotation.Endpoint]: `http://${NODE_IP}:${HTTP_PORT}/boot.raw` });
    await phaseOf('boot', PodPhase.Succeeded);

    const t0 = Date.now();
    await cluster.kubectlOk(['-n', NS, 'apply', '-f', '-'], {
      input: `apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: guest
spec:
  domain:
    memory: {guest: 256Mi}
    devices:
      disks:
      - {name: rootdisk, bootOrder: 1, disk: {bus: virtio}}
      - {name: cloudinit, disk: {bus: sata}}
  volumes:
  - {name: rootdisk, persistentVolumeClaim: {claimName: boot}}
  - name: cloudinit
    cloudInitNoCloud:
      userData: |
        ferry-marker: on-a-real-node
        ferry-hold: yes
`,
    });
    const running = await vmiRunningAndReady(cluster, NS, 'guest', 300_000, {
      describe: async () => `${JSON.stringify(await vmiStatus(cluster, NS, 'guest').catch(() => ({})), null, 1)}\n${await diagnose('boot')}`,
    });
    process.stderr.write(`node test: VMI applied → Running and Ready in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
    expect(running.status?.nodeName).toBe('fnode');
    const seen = await consoleUntil('guest', 'FERRY-CLOUDINIT on-a-real-node', 240_000);
    expect(seen).toContain('FERRY-BOOT-OK');
    expect(seen).toContain('FERRY-CLOUDINIT on-a-real-node');

    await cluster.kubectlOk(['-n', NS, 'delete', 'vmi', 'guest', '--wait=true', '--timeout=120s'], { timeoutMs: 130_000 });
    await until('the launcher pod gone', 120_000, async () => {
      const pods = await core.listNamespacedPod({ namespace: NS, labelSelector: 'kubevirt.io=virt-launcher' });
      return pods.items.length === 0 ? true : undefined;
    });
  }, 900_000);
});
