/**
 * `ferry image-upload` against a real kube-apiserver, up to where the cluster side exists today:
 * the PVC created exactly as virtctl creates it, an existing PVC used, annotated or refused, the
 * wait for the upload server (the test sets `storage.pod.ready` as the upload controller does:
 * that annotation is the controller's contract) and its timeout, an Event that ends the wait, and
 * the proxy URL from CDIConfig. What needs the token API (issue #14, another branch) ends at the
 * UploadTokenRequest, and the test checks that it does, with the apiserver's reason.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { writeFileSync } from 'node:fs';
import { type AddressInfo, createServer as createTcpServer, type Server as TcpServer } from 'node:net';
import { join } from 'node:path';
import { CoreV1Api, PatchStrategy, setHeaderOptions, type V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { imageUploadCommand } from '../../cli/image-upload-main.js';
import { startControlPlane, type ControlPlane } from '../helpers/cluster.js';
import { waitFor } from '../helpers/kubelet.js';
import { removeDir, tempDir } from '../helpers/fixtures.js';

let cp: ControlPlane;
let core: CoreV1Api;
let dir: string;
let image: string;
/** A TCP port that takes connections (the proxy's address is probed before the token is asked for). */
let listening: TcpServer;
let openPort: number;

beforeAll(async () => {
  cp = await startControlPlane();
  core = cp.kubeConfig.makeApiClient(CoreV1Api);
  dir = tempDir('ferry-image-upload-');
  image = join(dir, 'disk.raw');
  writeFileSync(image, Buffer.alloc(1 << 20, 7));
  listening = createTcpServer((socket) => socket.destroy());
  await new Promise<void>((resolve) => listening.listen(0, '127.0.0.1', resolve));
  openPort = (listening.address() as AddressInfo).port;
}, 120_000);

afterAll(async () => {
  await new Promise<void>((resolve) => (listening ? listening.close(() => resolve()) : resolve()));
  await cp?.stop();
  if (dir) removeDir(dir);
});

interface Run {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

async function run(args: string[]): Promise<Run> {
  let stdout = '';
  let stderr = '';
  const code = await imageUploadCommand([...args, '--kubeconfig', cp.kubeconfigPath], {
    stdout: { write: (s: string) => ((stdout += s), true) } as unknown as NodeJS.WritableStream,
    stderr: { write: (s: string) => ((stderr += s), true) } as unknown as NodeJS.WritableStream,
  }, {});
  return { code, stdout, stderr };
}

const readPvc = (namespace: string, name: string): Promise<V1PersistentVolumeClaim> => core.readNamespacedPersistentVolumeClaim({ name, namespace });
const annotate = (namespace: string, name: string, annotations: Record<string, string>) =>
  core.patchNamespacedPersistentVolumeClaim({ name, namespace, body: { metadata: { annotations } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));

/** What the upload controller does once the server pod is ready. */
async function markReadyWhenCreated(namespace: string, name: string): Promise<void> {
  await waitFor(`PVC ${name}`, () => readPvc(namespace, name).catch(() => undefined));
  await annotate(namespace, name, { 'cdi.kubevirt.io/storage.pod.ready': 'true' });
}

describe('ferry image-upload pvc', () => {
  test('creates the PVC as virtctl does, waits every 2 s, and times out after --wait-secs with the PVC left', async () => {
    const ns = await cp.newNamespace('iu');
    const started = Date.now();
    const result = await run(['pvc', 'up1', '--image-path', image, '--size', '1Gi', '--wait-secs', '3', '-n', ns, '--uploadproxy-url', 'https://127.0.0.1:1']);
    const took = Date.now() - started;
    expect(result.code).toBe(13);
    expect(result.stdout).toContain(`PersistentVolumeClaim ${ns}/up1 created`);
    expect(result.stdout).toContain('Waiting for PVC up1 upload pod to be ready...');
    expect(result.stderr).toContain(`timed out after 3 s waiting for the upload server of pvc ${ns}/up1 (--wait-secs 3) [SOURCE_UNAVAILABLE]`);
    expect(took).toBeGreaterThanOrEqual(3000);
    expect(took).toBeLessThan(15_000);
    const pvc = await readPvc(ns, 'up1');
    expect(pvc.metadata?.labels).toEqual({ 'cdi.kubevirt.io/applyStorageProfile': 'true' });
    // virtctl's annotations, and Ferry's request for a resumable upload (scratch from the first server on, ADR 0010).
    expect(pvc.metadata?.annotations).toEqual({ 'cdi.kubevirt.io/storage.upload.target': '', 'cdi.kubevirt.io/storage.contentType': 'kubevirt', 'ferry.dev/upload.resumable': 'true' });
    expect(pvc.spec?.accessModes).toEqual(['ReadWriteOnce']);
    expect(pvc.spec?.resources?.requests).toEqual({ storage: '1Gi' });
    expect(pvc.spec?.storageClassName).toBeUndefined();
  }, 60_000);

  test('--archive-path: content type archive; once pod.ready is set it asks for a token (without the token API: that error, with the apiserver\'s reason)', async () => {
    const ns = await cp.newNamespace('iu');
    const ready = markReadyWhenCreated(ns, 'up2');
    const result = await run(['pvc', 'up2', '--archive-path', image, '--size', '1Gi', '--wait-secs', '20', '-n', ns, '--uploadproxy-url', `https://127.0.0.1:${openPort}`]);
    await ready;
    expect(result.stdout).toContain('Pod now ready');
    expect(result.stderr).toMatch(/request an upload token \(UploadTokenRequest\): .*404/);
    expect(result.code).toBe(10);
    expect((await readPvc(ns, 'up2')).metadata?.annotations?.['cdi.kubevirt.io/storage.contentType']).toBe('archive');
  }, 60_000);

  test('--no-create: a plain PVC gets the upload annotation; a missing one is an error; no --size needed', async () => {
    const ns = await cp.newNamespace('iu');
    await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: { metadata: { name: 'plain' }, spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } } } });
    const result = await run(['pvc', 'plain', '--image-path', image, '--no-create', '--wait-secs', '0', '-n', ns, '--uploadproxy-url', 'https://127.0.0.1:1']);
    expect(result.stdout).toContain(`PVC ${ns}/plain marked as an upload target`);
    expect((await readPvc(ns, 'plain')).metadata?.annotations?.['cdi.kubevirt.io/storage.upload.target']).toBe('');
    expect(result.stderr).toContain('timed out after 0 s');
    const missing = await run(['pvc', 'nosuch', '--image-path', image, '--no-create', '-n', ns]);
    expect(missing).toMatchObject({ code: 10 });
    expect(missing.stderr).toContain(`PVC ${ns}/nosuch not found`);
  }, 60_000);

  test('an existing PVC that is not an upload target, or already Succeeded, is refused before anything is sent', async () => {
    const ns = await cp.newNamespace('iu');
    await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: { metadata: { name: 'plain' }, spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } } } });
    const plain = await run(['pvc', 'plain', '--image-path', image, '--size', '1Gi', '-n', ns]);
    expect(plain.code).toBe(2);
    expect(plain.stderr).toContain('not available for upload');
    await core.createNamespacedPersistentVolumeClaim({ namespace: ns, body: { metadata: { name: 'done', annotations: { 'cdi.kubevirt.io/storage.upload.target': '', 'cdi.kubevirt.io/storage.pod.phase': 'Succeeded' } }, spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } } } });
    const done = await run(['pvc', 'done', '--image-path', image, '-n', ns, '--no-create']);
    expect(done.code).toBe(2);
    expect(done.stderr).toContain('already successfully imported');
  }, 60_000);

  test('a ProvisioningFailed Event on the PVC ends the wait with its message', async () => {
    const ns = await cp.newNamespace('iu');
    const failing = (async () => {
      const pvc = await waitFor('PVC ev', () => readPvc(ns, 'ev').catch(() => undefined));
      await core.createNamespacedEvent({
        namespace: ns,
        body: { metadata: { name: 'ev.1' }, involvedObject: { kind: 'PersistentVolumeClaim', name: 'ev', namespace: ns, uid: pvc.metadata?.uid ?? '' }, reason: 'ProvisioningFailed', message: 'storageclass "nosuch" not found', type: 'Warning' },
      });
    })();
    const result = await run(['pvc', 'ev', '--image-path', image, '--size', '1Gi', '--wait-secs', '30', '-n', ns, '--uploadproxy-url', 'https://127.0.0.1:1']);
    await failing;
    expect(result.code).toBe(32);
    expect(result.stderr).toContain('provisioning failed: storageclass "nosuch" not found [TARGET_ERROR]');
  }, 60_000);

  test('without --uploadproxy-url and no CDIConfig: a port-forward is tried, and without the proxy Service it fails with the hint; a missing --storage-class is refused before the PVC', async () => {
    const ns = await cp.newNamespace('iu');
    const ready = markReadyWhenCreated(ns, 'nourl');
    const result = await run(['pvc', 'nourl', '--image-path', image, '--size', '1Gi', '--wait-secs', '20', '-n', ns]);
    await ready;
    expect(result.code).toBe(10);
    expect(result.stderr).toContain('error: cannot port-forward to the upload proxy: Service ferry-system/ferry-uploadproxy not found (is Ferry installed?);\n');
    expect(result.stderr).toContain('kubectl port-forward -n ferry-system service/ferry-uploadproxy 18443:443');
    expect(result.stderr).toContain('[SOURCE_NOT_FOUND]');
    const sc = await run(['pvc', 'sc', '--image-path', image, '--size', '1Gi', '--storage-class', 'nosuch', '-n', ns]);
    expect(sc.code).toBe(10);
    expect(sc.stderr).toContain('storage class nosuch');
    expect(await readPvc(ns, 'sc').catch((e: { code?: number }) => e.code)).toBe(404);
  }, 60_000);

  test('a proxy URL that takes no connection: SOURCE_UNAVAILABLE at once, before a token is asked for, with the exact kubectl port-forward to use', async () => {
    const ns = await cp.newNamespace('iu');
    const closed = createTcpServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const ready = markReadyWhenCreated(ns, 'unreach');
    const result = await run(['pvc', 'unreach', '--image-path', image, '--size', '1Gi', '--wait-secs', '20', '-n', ns, '--uploadproxy-url', `https://127.0.0.1:${port}`]);
    await ready;
    expect(result.stdout).toContain('Pod now ready');
    expect(result.stderr).toContain(`error: cannot reach the upload proxy at https://127.0.0.1:${port} (ECONNREFUSED);`);
    expect(result.stderr).toContain('  kubectl port-forward -n ferry-system service/ferry-uploadproxy 18443:443\n');
    expect(result.stderr).toContain('--uploadproxy-url https://127.0.0.1:18443 --insecure [SOURCE_UNAVAILABLE]');
    // Not the token request's error (the test cluster has no token API): the probe came first.
    expect(result.stderr).not.toContain('UploadTokenRequest');
    expect(result.code).not.toBe(0);
  }, 60_000);

  test('a missing image fails before any request', async () => {
    const ns = await cp.newNamespace('iu');
    const result = await run(['pvc', 'x', '--image-path', join(dir, 'nosuch.qcow2'), '--size', '1Gi', '-n', ns]);
    expect(result).toMatchObject({ code: 10 });
    expect(result.stderr).toContain('nosuch.qcow2: no such file or directory');
    expect(await readPvc(ns, 'x').catch((e: { code?: number }) => e.code)).toBe(404);
  }, 30_000);
});
