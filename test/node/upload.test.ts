/**
 * `ferry image-upload` from outside the cluster with nothing but a kubeconfig (issue #14, "Beyond
 * CDI"), on the real one-node cluster (tools/node-cluster/node-cluster.ts) with Ferry installed
 * from the built images and the manifests: no --uploadproxy-url, and CDIConfig names either a URL
 * that does not answer or none, so the upload goes through a port-forward over the Kubernetes API
 * (the apiserver → the kubelet → containerd's streaming server → the proxy pod's port) to the
 * `ferry uploadproxy` pod (ferry-uploadproxy-0, a StatefulSet's), then to a real upload server
 * pod. The proxy's certificate is checked for its Service name with the CA Ferry publishes
 * (ConfigMap ferry-uploadproxy-ca). A user with `edit` in the namespace and no role of its own in
 * ferry-system uploads the same way, verified, with nothing but its kubeconfig (the manifests let
 * every user forward to that one pod: rbac-upload-users.yaml).
 *
 * This process runs in the root network namespace and reaches only 127.0.0.1 (the apiserver's
 * loopback bridge, the forward's listener, a closed loopback port as the "unreachable" URL).
 * Needs root, the binaries of scripts/build-control-plane.sh and dist/images/ferry.oci.tar.
 */

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import * as k8s from '@kubernetes/client-node';
import { FERRY_BIN, freePort, startFerry } from '../helpers/ferry-process.js';
import { convertImage, makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { type NodeCluster, startNodeCluster, until } from '../../tools/node-cluster/node-cluster.js';
import { describeCluster, setUpFerry } from '../../tools/node-cluster/ferry-on-node.js';
import { controlPlaneBinDir } from '../../tools/control-plane/bin-dir.js';
import { virtctlPath } from '../helpers/virtctl.js';
import { exec } from '../helpers/upload-stack.js';

const NS = 'upload-node-test';
const UPLOAD_TIMEOUT_MS = 300_000;

let cluster: NodeCluster;
let core: k8s.CoreV1Api;
let dir: string;
const raw = (): string => join(dir, 'disk.raw');
const note = (line: string): void => void process.stderr.write(`upload node test: ${line}\n`);
const seconds = (ms: number): string => (ms / 1000).toFixed(1);

/** `ferry image-upload ARGS` as a user runs it, with the cluster's kubeconfig (or `kubeconfig`). */
function imageUpload(args: readonly string[], kubeconfig = cluster.kubeconfigPath): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return startFerry(['image-upload', ...args, '-n', NS, '--kubeconfig', kubeconfig], {}, UPLOAD_TIMEOUT_MS).done;
}

async function setOverride(url: string | undefined): Promise<void> {
  await cluster.kubectlOk(['patch', 'cdiconfigs.cdi.kubevirt.io', 'config', '--type', 'merge', '-p', JSON.stringify({ spec: { uploadProxyURLOverride: url ?? null } })]);
}

/** The disk file behind the PV a claim is bound to. */
async function diskOf(name: string): Promise<string> {
  const p = await core.readNamespacedPersistentVolumeClaim({ name, namespace: NS });
  expect(p.status?.phase).toBe('Bound');
  return join(cluster.volumeDir(p.spec?.volumeName ?? '(unbound)'), 'disk.img');
}

beforeAll(async () => {
  // Five upload targets, each with scratch (ferry image-upload and the controller ask for a resumable upload): ten PVs.
  cluster = await startNodeCluster({ volumes: 10 });
  core = cluster.kubeConfig.makeApiClient(k8s.CoreV1Api);
  dir = tempDir('ferry-upload-node-');
  // The token API (ferry apiserver) and the proxy must be up: both are in the manifests.
  await setUpFerry(cluster, dir, { images: ['ferry'], namespaces: [NS], apiserver: true, progress: note });
  const t = Date.now();
  const rollout = await cluster.kubectl(['-n', 'ferry-system', 'rollout', 'status', 'statefulset/ferry-uploadproxy', '--timeout=180s'], { timeoutMs: 200_000 });
  if (rollout.code !== 0) throw new Error(`ferry-uploadproxy did not roll out: ${rollout.stderr}\n${await describeCluster(cluster, ['ferry-system'])}`);
  note(`ferry-uploadproxy rolled out: ${seconds(Date.now() - t)} s`);
  makeRawDisk(raw(), 64 * MiB);
  convertImage(raw(), 'qcow2', join(dir, 'disk.qcow2'));
}, 600_000);

afterAll(async () => {
  await cluster?.stop();
  if (dir) removeDir(dir);
}, 180_000);

describe('ferry image-upload through a port-forward (real apiserver, kubelet and containerd)', () => {
  it('CDIConfig names a URL that does not answer: the upload goes through a port-forward to the proxy pod, verified, and the volume holds the image', async () => {
    const closed = await freePort();
    await setOverride(`https://127.0.0.1:${closed}`);
    const t0 = Date.now();
    const r = await imageUpload(['pvc', 'pf-raw', '--image-path', raw(), '--size', '1Gi']);
    note(`raw 64 MiB through the port-forward: exit ${r.code} in ${seconds(Date.now() - t0)} s\n${r.stdout}${r.stderr.split('\n').filter((l) => !l.includes('\r')).join('\n')}`);
    if (r.code !== 0) throw new Error(`exit ${r.code}\n${r.stdout}\n${r.stderr}\n${await describeCluster(cluster, [NS, 'ferry-system'])}`);
    expect(r.stderr).toMatch(new RegExp(`the configured upload proxy https://127\\.0\\.0\\.1:${closed} does not answer \\(ECONNREFUSED\\): uploading through a port-forward over the Kubernetes API to pod ferry-system/ferry-uploadproxy-\\S+ port 8443 \\(local https://127\\.0\\.0\\.1:\\d+\\)`));
    expect(r.stdout).toMatch(/Uploading data to https:\/\/127\.0\.0\.1:\d+ \(port-forward to pod ferry-system\/ferry-uploadproxy-/);
    expect(r.stdout).toContain('Processing completed successfully');
    execFileSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', raw(), await diskOf('pf-raw')]);
  }, UPLOAD_TIMEOUT_MS + 60_000);

  it('no URL configured at all: a qcow2 through the port-forward lands as the same disk', async () => {
    await setOverride(undefined);
    // The controller copies the override into status.uploadProxyURL; it drops it again on its next round.
    await until('CDIConfig config without an upload proxy URL', 60_000, async () => {
      const config = JSON.parse(await cluster.kubectlOk(['get', 'cdiconfigs.cdi.kubevirt.io', 'config', '-o', 'json'])) as { spec?: { uploadProxyURLOverride?: string }; status?: { uploadProxyURL?: string } };
      return (config.spec?.uploadProxyURLOverride ?? config.status?.uploadProxyURL) === undefined ? true : undefined;
    });
    const t0 = Date.now();
    const r = await imageUpload(['pvc', 'pf-qcow2', '--image-path', join(dir, 'disk.qcow2'), '--size', '1Gi']);
    note(`qcow2 through the port-forward: exit ${r.code} in ${seconds(Date.now() - t0)} s`);
    if (r.code !== 0) throw new Error(`exit ${r.code}\n${r.stdout}\n${r.stderr}\n${await describeCluster(cluster, [NS, 'ferry-system'])}`);
    expect(r.stderr).toContain('no upload proxy URL is configured (CDIConfig config): uploading through a port-forward over the Kubernetes API to pod ferry-system/ferry-uploadproxy-');
    execFileSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', raw(), await diskOf('pf-qcow2')]);
  }, UPLOAD_TIMEOUT_MS + 60_000);

  it('Ctrl-C while the bytes go through the forward: INTERRUPTED (exit 33) at once, its listener gone', async () => {
    const big = join(dir, 'big.raw');
    makeRawDisk(big, 512 * MiB);
    const child = spawn(process.execPath, [FERRY_BIN, 'image-upload', 'pvc', 'pf-int', '--image-path', big, '--size', '1Gi', '-n', NS, '--kubeconfig', cluster.kubeconfigPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    const exited = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
    try {
      const port = await until('the port-forward notice', UPLOAD_TIMEOUT_MS, async () => /\(local https:\/\/127\.0\.0\.1:(\d+)\)/.exec(stderr)?.[1], async () => `${stdout}\n${stderr}`);
      // Let bytes flow through it first (512 MiB take more than 8 s here), and interrupt mid-upload.
      await new Promise((resolve) => setTimeout(resolve, 3000));
      expect(stdout).toContain('Uploading data to https://127.0.0.1:');
      expect(stdout).not.toContain('Uploading data completed successfully');
      const t0 = Date.now();
      child.kill('SIGINT');
      const code = await exited;
      note(`SIGINT → exit ${code} in ${seconds(Date.now() - t0)} s`);
      expect(code).toBe(33);
      expect(Date.now() - t0).toBeLessThan(10_000);
      expect(stderr).toContain('error: interrupted (SIGINT) [INTERRUPTED]');
      expect(stdout).not.toContain('Uploading data completed successfully');
      const refused = await new Promise<string>((resolve) => connect({ host: '127.0.0.1', port: Number(port) }).once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? '')).once('connect', () => resolve('connected')));
      expect(refused).toBe('ECONNREFUSED');
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    }
  }, UPLOAD_TIMEOUT_MS + 60_000);

  const virtctl = virtctlPath();
  (existsSync(virtctl) ? it : it.skip)('the hint\'s manual way, as printed but for the local port: `kubectl port-forward` to the Service, then the real virtctl image-upload through it', async () => {
    const port = await freePort();
    // The cluster's kubectl (1.36: SPDY tunnelled over WebSocket, the apiserver translating), by PID.
    const forward = spawn(join(controlPlaneBinDir(), 'kubectl'), ['--kubeconfig', cluster.kubeconfigPath, 'port-forward', '-n', 'ferry-system', 'service/ferry-uploadproxy', `${port}:443`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let said = '';
    forward.stdout.on('data', (d: Buffer) => (said += d.toString()));
    forward.stderr.on('data', (d: Buffer) => (said += d.toString()));
    const gone = new Promise<void>((resolve) => forward.on('close', () => resolve()));
    try {
      await until(`kubectl port-forward on 127.0.0.1:${port}`, 60_000, async () => (said.includes(`Forwarding from 127.0.0.1:${port}`) ? true : undefined), async () => said);
      const t0 = Date.now();
      const r = await exec(virtctl, ['image-upload', 'pvc', 'vc-raw', '--image-path', raw(), '--size', '1Gi', '--uploadproxy-url', `https://127.0.0.1:${port}`, '--insecure', '-n', NS, '--kubeconfig', cluster.kubeconfigPath, '--wait-secs', '120'], {}, UPLOAD_TIMEOUT_MS);
      note(`virtctl through kubectl port-forward: exit ${r.code} in ${seconds(Date.now() - t0)} s`);
      if (r.code !== 0) throw new Error(`virtctl exit ${r.code}\n${r.out}\n${await describeCluster(cluster, [NS, 'ferry-system'])}`);
      expect(r.out).toContain('Processing completed successfully');
      execFileSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', raw(), await diskOf('vc-raw')]);
    } finally {
      forward.kill('SIGTERM');
      await gone;
    }
  }, UPLOAD_TIMEOUT_MS + 60_000);

  it('a user with `edit` in the namespace only, from a laptop: through the port-forward to ferry-uploadproxy-0, the proxy verified with the published CA, no --insecure', async () => {
    // A ServiceAccount with the namespace's `edit` role (PVCs, upload tokens), nothing in ferry-system.
    await cluster.kubectlOk(['-n', NS, 'create', 'serviceaccount', 'uploader']);
    await cluster.kubectlOk(['-n', NS, 'create', 'rolebinding', 'uploader-edit', '--clusterrole=edit', `--serviceaccount=${NS}:uploader`]);
    const token = (await cluster.kubectlOk(['-n', NS, 'create', 'token', 'uploader', '--duration=10m'])).trim();
    const caData = cluster.kubeConfig.getCurrentCluster()?.caData ?? '';
    const kubeconfig = join(dir, 'uploader.kubeconfig');
    writeFileSync(kubeconfig, [
      'apiVersion: v1',
      'kind: Config',
      `clusters: [{name: node, cluster: {server: "${cluster.server}", certificate-authority-data: ${caData}}}]`,
      `users: [{name: uploader, user: {token: ${token}}}]`,
      `contexts: [{name: uploader, context: {cluster: node, user: uploader, namespace: ${NS}}}]`,
      'current-context: uploader',
      '',
    ].join('\n'), { mode: 0o600 });
    const r = await imageUpload(['pvc', 'pf-user', '--image-path', raw(), '--size', '1Gi'], kubeconfig);
    note(`as a namespace user: exit ${r.code}: ${r.stderr.trim().split('\n').filter((l) => !l.includes('\r')).slice(-3).join(' | ')}`);
    if (r.code !== 0) throw new Error(`exit ${r.code}\n${r.stdout}\n${r.stderr}\n${await describeCluster(cluster, [NS, 'ferry-system'])}`);
    expect(r.stderr).toContain('uploading through a port-forward over the Kubernetes API to pod ferry-system/ferry-uploadproxy-0 port 8443');
    expect(r.stdout).toContain('Processing completed successfully');
    execFileSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', raw(), await diskOf('pf-user')]);
    // What it may not do there: forward to another pod, or read the CA's Secret.
    const other = (await core.listNamespacedPod({ namespace: 'ferry-system' })).items.map((p) => p.metadata?.name ?? '').find((n) => n.startsWith('ferry-controller-'));
    expect(other).toBeDefined();
    const asUser = async (args: string[]): Promise<string> => (await exec(join(controlPlaneBinDir(), 'kubectl'), ['--kubeconfig', kubeconfig, ...args])).out.trim().split('\n').pop() ?? '';
    expect(await asUser(['auth', 'can-i', 'create', `pods/${other}`, '--subresource=portforward', '-n', 'ferry-system'])).toBe('no');
    expect(await asUser(['auth', 'can-i', 'create', 'pods/ferry-uploadproxy-0', '--subresource=portforward', '-n', 'ferry-system'])).toBe('yes');
    expect(await asUser(['auth', 'can-i', 'get', 'secrets/ferry-uploadproxy-ca', '-n', 'ferry-system'])).toBe('no');
  }, UPLOAD_TIMEOUT_MS + 60_000);
});
