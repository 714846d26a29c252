/**
 * Issue #14 end to end: the real virtctl v1.8.4 and `ferry image-upload` as a real non-admin user
 * against the whole Ferry upload stack on one real control plane — `ferry controller` (import,
 * datavolume, upload), `ferry apiserver` behind a real APIService (ExternalName → localhost, as in
 * apiserver.test.ts), the real `ferry uploadproxy` on loopback, and the real `ferry uploadserver`
 * run for each upload pod by a loop playing the kubelet (test/helpers/upload-stack.ts, upload-kubelet.ts).
 * Skips only when virtctl cannot be built here.
 */

import { afterAll, afterEach, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { Annotation } from '../../src/api/cdi.js';
import { DV_GROUP, DV_PLURAL, DV_VERSION } from '../../src/api/datavolume.js';
import { UploadAnnotation as UploadClientAnnotation } from '../../src/contract/upload-api.js';
import type { ControlPlane } from '../helpers/cluster.js';
import { convertImage, expectSameDisk, makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { waitFor } from '../helpers/kubelet.js';
import type { UploadKubelet } from '../helpers/upload-kubelet.js';
import { startCuttingRelay } from '../helpers/upload-relay.js';
import { exec, ferryImageUpload, type Run, startUploadStack, type UploadStack } from '../helpers/upload-stack.js';
import { buildOrFindVirtctl, VIRTCTL_BUILD_TIMEOUT_MS } from '../helpers/virtctl.js';

let virtctl: string | undefined;
let skipReason = '';
try {
  virtctl = buildOrFindVirtctl();
} catch (err) {
  skipReason = `virtctl cannot be built here: ${(err as Error).message}`;
  process.stderr.write(`upload-e2e: SKIPPED — ${skipReason}\n`);
}
const maybe = virtctl ? describe : describe.skip;

/** Block PVCs get a loop device each (root only, as test/component/block-device.test.ts). */
const BLOCK_PVCS = ['blk-ferry', 'blk-virtctl'] as const;
const loops = new Map<string, string>();
let blockDir: string | undefined;
if (virtctl) {
  blockDir = tempDir('ferry-upload-block-');
  for (const name of BLOCK_PVCS) {
    try {
      execFileSync('truncate', ['-s', '64M', join(blockDir, name)]);
      loops.set(name, execFileSync('losetup', ['-f', '--show', join(blockDir, name)], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim());
    } catch {
      break;
    }
  }
  if (loops.size < BLOCK_PVCS.length) process.stderr.write('upload-e2e: block-mode uploads SKIPPED — no loop devices (needs root)\n');
}
const blockTest = loops.size === BLOCK_PVCS.length ? test : test.skip;

let stack: UploadStack;
let cp: ControlPlane;
let core: CoreV1Api;
let custom: CustomObjectsApi;
let dir: string;
let kubelet: UploadKubelet;
let proxyPort: number;
let proxyUrl: string;
/** The namespaces tests made; each test's servers are stopped when it ends (passed or not). */
const namespaces: string[] = [];

/** The measurement, for ADR 0010 and the report. */
const measured = (what: string, forwarded: number, size: number): void => void process.stderr.write(`upload-e2e: ${what}: ${forwarded} bytes through the relay for a ${size}-byte image (${(forwarded / size).toFixed(3)}×)\n`);

const virtctlRun = (kubeconfig: string, args: readonly string[]): Promise<Run> => exec(virtctl ?? 'virtctl', [...args, '--kubeconfig', kubeconfig]);
const ferryRun = ferryImageUpload;

const readIfThere = (path: string): string => {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return '';
  }
};

async function namespaceFor(user: string): Promise<string> {
  const ns = await stack.namespaceFor(user);
  namespaces.push(ns);
  return ns;
}

async function pvcPhase(ns: string, name: string, want: string): Promise<void> {
  await waitFor(`PVC ${name} pod phase ${want}`, async () => {
    const pvc = await core.readNamespacedPersistentVolumeClaim({ namespace: ns, name });
    return pvc.metadata?.annotations?.[Annotation.PodPhase] === want ? true : undefined;
  }, 60_000);
}

async function dvPhase(ns: string, name: string, want: string): Promise<void> {
  await waitFor(`DataVolume ${name} phase ${want}`, async () => {
    const dv = (await custom.getNamespacedCustomObject({ group: DV_GROUP, version: DV_VERSION, namespace: ns, plural: DV_PLURAL, name })) as { status?: { phase?: string } };
    return dv.status?.phase === want ? true : undefined;
  }, 60_000);
}

function volume(ns: string, pvc: string): string {
  const v = kubelet.volumesOf(ns, pvc);
  if (!v) throw new Error(`no upload server ran for ${ns}/${pvc}`);
  return join(v, 'data', 'disk.img');
}

beforeAll(async () => {
  if (!virtctl) return;
  dir = tempDir('ferry-upload-e2e-');
  makeRawDisk(join(dir, 'disk.raw'), 8 * MiB);
  convertImage(join(dir, 'disk.raw'), 'qcow2', join(dir, 'disk.qcow2'));
  // Incompressible, so every cut of a resumed upload falls inside a body.
  writeFileSync(join(dir, 'random.raw'), randomBytes(32 * MiB));
  convertImage(join(dir, 'random.raw'), 'qcow2', join(dir, 'random.qcow2'));
  stack = await startUploadStack(dir, { blockDevice: (_ns, pvc) => loops.get(pvc) });
  ({ cp, core, custom, kubelet, proxyPort, proxyUrl } = stack);
}, VIRTCTL_BUILD_TIMEOUT_MS + 180_000);

afterAll(async () => {
  await stack?.stop();
  if (dir) removeDir(dir);
  for (const device of loops.values()) execFileSync('losetup', ['-d', device]);
  if (blockDir) removeDir(blockDir);
}, 120_000);

afterEach(() => {
  for (const ns of namespaces.splice(0)) kubelet?.forget(ns);
});

maybe('issue #14 end to end: virtctl and ferry image-upload as a non-admin user', () => {
  test.each([
    ['raw', 'disk.raw'],
    ['qcow2', 'disk.qcow2'],
  ])('virtctl image-upload pvc (%s): exit 0, the volume byte-identical, the PVC Succeeded', async (format, file) => {
    const ns = await namespaceFor('vic');
    const vic = cp.userKubeconfig('vic');
    const r = await virtctlRun(vic.path, ['image-upload', 'pvc', format, '--size', '64Mi', '--image-path', join(dir, file), '--uploadproxy-url', proxyUrl, '--insecure', '-n', ns, '--wait-secs', '60']);
    expect(r.code === 0 ? '' : r.out).toBe('');
    expect(r.out).toContain('Processing completed successfully');
    await pvcPhase(ns, format, 'Succeeded');
    expect(expectSameDisk(volume(ns, format), join(dir, 'disk.raw'))).toBe(true);
  }, 240_000);

  test('virtctl image-upload dv: DV Succeeded, byte-identical', async () => {
    const ns = await namespaceFor('vic');
    const vic = cp.userKubeconfig('vic');
    const r = await virtctlRun(vic.path, ['image-upload', 'dv', 'vdv', '--size', '64Mi', '--image-path', join(dir, 'disk.raw'), '--uploadproxy-url', proxyUrl, '--insecure', '-n', ns, '--wait-secs', '60']);
    expect(r.code === 0 ? '' : r.out).toBe('');
    await dvPhase(ns, 'vdv', 'Succeeded');
    expect(expectSameDisk(volume(ns, 'vdv'), join(dir, 'disk.raw'))).toBe(true);
  }, 240_000);

  test('ferry image-upload pvc with --uploadproxy-url and dv from CDIConfig: both Succeeded, byte-identical', async () => {
    const ns = await namespaceFor('fay');
    const fay = cp.userKubeconfig('fay');
    const p = await ferryRun(fay.path, ['pvc', 'fp', '--size', '64Mi', '--image-path', join(dir, 'disk.raw'), '--uploadproxy-url', proxyUrl, '--insecure', '-n', ns, '--wait-secs', '60']);
    expect(p.code === 0 ? '' : p.out).toBe('');
    await pvcPhase(ns, 'fp', 'Succeeded');
    expect(expectSameDisk(volume(ns, 'fp'), join(dir, 'disk.raw'))).toBe(true);
    const d = await ferryRun(fay.path, ['dv', 'fd', '--size', '64Mi', '--image-path', join(dir, 'disk.qcow2'), '--insecure', '-n', ns, '--wait-secs', '60']);
    expect(d.code === 0 ? '' : d.out).toBe('');
    await dvPhase(ns, 'fd', 'Succeeded');
    expect(expectSameDisk(volume(ns, 'fd'), join(dir, 'disk.raw'))).toBe(true);
  }, 300_000);

  test.each([
    ['raw', 'random.raw'],
    ['qcow2', 'random.qcow2'],
  ])('ferry image-upload pvc (%s) through a connection cut at 30 %% and 70 %%: resumed on the first server pod, ≈1.0× the bytes, byte-identical', async (format, file) => {
    const ns = await namespaceFor('fay');
    const fay = cp.userKubeconfig('fay');
    const size = statSync(join(dir, file)).size;
    const relay = await startCuttingRelay(proxyPort, size, [0.3, 0.7]);
    try {
      const r = await ferryRun(fay.path, ['pvc', `cut-${format}`, '--size', '64Mi', '--image-path', join(dir, file), '--uploadproxy-url', `https://127.0.0.1:${relay.port}`, '--insecure', '-n', ns, '--wait-secs', '60']);
      expect(r.code === 0 ? '' : r.out).toBe('');
      expect(relay.cuts()).toBe(2);
      measured(`${format}, cut at 30 % and 70 %`, relay.forwarded(), size);
      expect(r.out.match(/resuming the upload at byte [1-9]/g)?.length ?? 0).toBeGreaterThanOrEqual(2);
      // Everything the relay carried towards the proxy: TLS, headers, HEADs and what was resent.
      expect(relay.forwarded()).toBeGreaterThanOrEqual(size);
      expect(relay.forwarded()).toBeLessThanOrEqual(1.1 * size);
    } finally {
      await relay.close();
    }
    await pvcPhase(ns, `cut-${format}`, 'Succeeded');
    // The client asked for a resumable upload: the first server had scratch, and it was the only one.
    const pvc = await core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: `cut-${format}` });
    expect(pvc.metadata?.annotations?.[UploadClientAnnotation.Resumable]).toBe('true');
    expect(kubelet.runsOf(ns, `cut-${format}`)).toBe(1);
    expect(expectSameDisk(volume(ns, `cut-${format}`), join(dir, 'random.raw'))).toBe(true);
  }, 240_000);

  test('ferry image-upload dv: the connection cut at 50 % and the server pod\'s node lost (SIGKILL) while the link is down: a new pod resumes what the old one staged, ≈1.0× the bytes, byte-identical', async () => {
    const ns = await namespaceFor('fay');
    const fay = cp.userKubeconfig('fay');
    const name = 'lost';
    const size = statSync(join(dir, 'random.raw')).size;
    let killed = false;
    // The link stays down 5 s; the server is killed in that time, once it has seen the break and
    // recorded its durable offset (bounded wait: on a loaded disk the fdatasync takes a while).
    const record = (): string => join(kubelet.volumesOf(ns, name) ?? '', `${name}-scratch`, 'resumable-upload.staged.offset');
    const relay = await startCuttingRelay(proxyPort, size, [0.5], 5000, () => {
      void (async () => {
        for (let i = 0; i < 40 && !/"offset":[1-9]/.test(readIfThere(record())); i++) await sleep(100);
        killed = kubelet.kill(ns, name, 'SIGKILL');
      })();
    });
    try {
      const r = await ferryRun(fay.path, ['dv', name, '--size', '64Mi', '--image-path', join(dir, 'random.raw'), '--uploadproxy-url', `https://127.0.0.1:${relay.port}`, '--insecure', '-n', ns, '--wait-secs', '60']);
      expect(r.code === 0 ? '' : r.out).toBe('');
      expect(killed).toBe(true);
      measured('cut at 50 %, server SIGKILLed', relay.forwarded(), size);
      expect(r.out).toMatch(/resuming the upload at byte [1-9]/);
      expect(relay.forwarded()).toBeGreaterThanOrEqual(size);
      expect(relay.forwarded()).toBeLessThanOrEqual(1.1 * size);
    } finally {
      await relay.close();
    }
    await dvPhase(ns, name, 'Succeeded');
    expect(kubelet.runsOf(ns, name)).toBeGreaterThanOrEqual(2);
    expect(expectSameDisk(volume(ns, name), join(dir, 'random.raw'))).toBe(true);
    // The staged file and its record went with the import.
    expect(readdirSync(join(kubelet.volumesOf(ns, name) ?? '', `${name}-scratch`))).toEqual([]);
  }, 300_000);

  test('ferry image-upload pvc: the server pod deleted (SIGTERM) in the middle of a PATCH: it makes what it has durable, the next pod resumes there, byte-identical', async () => {
    const ns = await namespaceFor('fay');
    const fay = cp.userKubeconfig('fay');
    const name = 'deleted';
    const size = statSync(join(dir, 'random.raw')).size;
    let killed = false;
    let sentBeforeKill = 0;
    // No cut: the mark at 50 % only signals the server, whose PATCH is still streaming.
    const relay = await startCuttingRelay(proxyPort, size, [0.5], 0, () => {
      sentBeforeKill = relay.forwarded();
      killed = kubelet.kill(ns, name, 'SIGTERM');
    }, false);
    let out = '';
    try {
      const r = await ferryRun(fay.path, ['pvc', name, '--size', '64Mi', '--image-path', join(dir, 'random.raw'), '--uploadproxy-url', `https://127.0.0.1:${relay.port}`, '--insecure', '-n', ns, '--wait-secs', '60']);
      out = r.out;
      expect(r.code === 0 ? '' : r.out).toBe('');
      expect(killed).toBe(true);
    } finally {
      await relay.close();
    }
    // 32 MiB is below the 64 MiB sync interval: without the flush at SIGTERM nothing would be
    // recorded and it would start over. What passed the relay but sat in the proxy's and the
    // sockets' buffers (measured 8–10 MB on loopback) is sent again.
    const resumedAt = Number(/resuming the upload at byte (\d+)/.exec(out)?.[1] ?? '0');
    measured(`server SIGTERMed at 50 % (${sentBeforeKill} bytes sent), resumed at byte ${resumedAt}`, relay.forwarded(), size);
    expect(resumedAt).toBeGreaterThanOrEqual(MiB);
    // The first PATCH can carry at most the whole image (the proxy reads and drops what the stopped
    // server no longer takes; under load that was the rest of the image, seen in a cold CI run:
    // resumed at 9.9 MB, 1.71x), so resuming sends at most 2x the image less where it resumed
    // (+ request headers); starting over would send 2x. What the resume saves is `resumedAt`.
    expect(relay.forwarded()).toBeLessThanOrEqual(2 * size - resumedAt + 64 * 1024);
    await pvcPhase(ns, name, 'Succeeded');
    expect(kubelet.runsOf(ns, name)).toBeGreaterThanOrEqual(2);
    expect(expectSameDisk(volume(ns, name), join(dir, 'random.raw'))).toBe(true);
  }, 300_000);

  blockTest.each([
    ['ferry image-upload', 'blk-ferry', 'random.raw'],
    ['virtctl image-upload', 'blk-virtctl', 'random.qcow2'],
  ])('%s pvc --volume-mode block (%s): the loop device holds the image, every byte of it overwritten', async (client, name, file) => {
    const ns = await namespaceFor('bea');
    const bea = cp.userKubeconfig('bea');
    const device = loops.get(name) as string;
    // A dirty device: an upload that skipped zero blocks would leave 0x5a where the image has zeros.
    writeFileSync(device, Buffer.alloc(64 * MiB, 0x5a));
    const args = ['pvc', name, '--size', '64Mi', '--volume-mode', 'block', '--image-path', join(dir, file), '--uploadproxy-url', proxyUrl, '--insecure', '-n', ns, '--wait-secs', '60'];
    const r = client.startsWith('ferry') ? await ferryRun(bea.path, args) : await virtctlRun(bea.path, ['image-upload', ...args]);
    expect(r.code === 0 ? '' : r.out).toBe('');
    await pvcPhase(ns, name, 'Succeeded');
    const pvc = await core.readNamespacedPersistentVolumeClaim({ namespace: ns, name });
    expect(pvc.spec?.volumeMode).toBe('Block');
    const image = readFileSync(join(dir, 'random.raw'));
    expect(readFileSync(device).subarray(0, image.length).equals(image)).toBe(true);
  }, 240_000);

  test('a user without RBAC in the namespace: forbidden (before any PVC or token), a non-zero exit (virtctl and ferry)', async () => {
    const ns = await cp.newNamespace('norbac');
    const nobody = cp.userKubeconfig('nobody');
    const v = await virtctlRun(nobody.path, ['image-upload', 'pvc', 'x', '--size', '64Mi', '--image-path', join(dir, 'disk.raw'), '--uploadproxy-url', proxyUrl, '--insecure', '-n', ns, '--wait-secs', '10']);
    expect(v.code).not.toBe(0);
    expect(v.out).toMatch(/forbidden/i);
    const f = await ferryRun(nobody.path, ['pvc', 'x', '--size', '64Mi', '--image-path', join(dir, 'disk.raw'), '--uploadproxy-url', proxyUrl, '--insecure', '-n', ns, '--wait-secs', '10']);
    expect(f.code).not.toBe(0);
    expect(f.out).toMatch(/forbidden/i);
  }, 120_000);
});

if (!virtctl) test.skip(`upload e2e: ${skipReason}`, () => undefined);
