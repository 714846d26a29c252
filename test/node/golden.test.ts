/**
 * Issue #15's walkthrough on a real one-node cluster (tools/node-cluster/node-cluster.ts), with Ferry
 * installed from the built images and the manifests (`kubectl apply -k`: the controller, and
 * `ferry apiserver` serving the clone webhook through its Service, the kube-apiserver calling it
 * with the caBundle ferry apiserver wrote). The YAML of examples/golden-images/ is applied as it is
 * in the repo, but for the DataVolume's URL (no cluster DNS here: the node address, where busybox
 * httpd serves the boot disk inside the netns), asserted to be the only change.
 *
 * The admin imports the disk into `golden-images` and names it with a DataSource; alice and bob
 * are real users (client certificates issued through the cluster's CertificateSigningRequest API,
 * no group), each with `edit` in their own namespace; only alice is bound to ferry:clone-sourcer in
 * golden-images. bob's VirtualMachine is refused by `kubectl apply` with the webhook's message and
 * nothing is created; alice's clones, the clone is byte-identical to the golden disk, and it boots.
 * The clone source pod reaches the target's Service by name through the same cluster DNS.
 * Common steps: tools/node-cluster/ferry-on-node.ts.
 *
 * Needs root, the binaries of scripts/build-control-plane.sh and dist/images/*.oci.tar.
 */

import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from '@jest/globals';
import * as k8s from '@kubernetes/client-node';
import { REPO_ROOT } from '../helpers/ferry-process.js';
import { kubectlAs, type KubectlRun } from '../helpers/cluster.js';
import { removeDir, tempDir } from '../helpers/fixtures.js';
import { type NodeCluster, startNodeCluster, until } from '../../tools/node-cluster/node-cluster.js';
import { describeCluster, type DiskServer, formatTimings, setUpFerry, startDiskServer, vmiRunningAndReady } from '../../tools/node-cluster/ferry-on-node.js';

const GOLDEN = 'golden-images';
const EXAMPLE = join(REPO_ROOT, 'examples', 'golden-images');
const IMPORT_TIMEOUT_MS = 240_000;
const CLONE_TIMEOUT_MS = 300_000;
const BOOT_TIMEOUT_MS = 420_000;
/** The example's URL: the disk-server Service, by name. */
const EXAMPLE_URL = 'http://disk-server.golden-images.svc.cluster.local:8080/fedora.raw';
/** What bob's `kubectl apply` must print: apiserver/clone-admission.ts cloneDeniedMessage. */
const BOB_REFUSED = 'user "bob" may not clone golden-images/fedora-41: needs create on datavolumes/source in golden-images';

let cluster: NodeCluster;
let core: k8s.CoreV1Api;
let custom: k8s.CustomObjectsApi;
let disk: DiskServer;
let dir: string;
const users: Record<string, string> = {};
const timings: Record<string, number> = {};

const seconds = (ms: number): string => (ms / 1000).toFixed(1);
const note = (line: string): void => void process.stderr.write(`golden images: ${line}\n`);
const example = (file: string): string => readFileSync(join(EXAMPLE, file), 'utf8');

/** kubectl as a user (their kubeconfig), `yaml` given as a file as a user would. */
async function kubectlUser(user: string, args: readonly string[], yaml?: string): Promise<KubectlRun> {
  if (yaml === undefined) return kubectlAs(users[user]!, args);
  const file = join(dir, `${user}-${Date.now()}.yaml`);
  writeFileSync(file, yaml);
  return kubectlAs(users[user]!, [...args, '-f', file]);
}

/**
 * A real user: a key, a CSR with CN `name` and no organization, signed by the cluster's signer
 * (kubernetes.io/kube-apiserver-client) once the admin approves it; a kubeconfig with that pair and
 * `namespace` as its default.
 */
async function createUser(name: string, namespace: string): Promise<string> {
  const key = join(dir, `${name}.key`);
  const csr = join(dir, `${name}.csr`);
  execFileSync('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', key], { stdio: 'pipe' });
  execFileSync('openssl', ['req', '-new', '-key', key, '-subj', `/CN=${name}`, '-out', csr], { stdio: 'pipe' });
  const certs = cluster.kubeConfig.makeApiClient(k8s.CertificatesV1Api);
  const csrName = `user-${name}`;
  await certs.createCertificateSigningRequest({
    body: {
      metadata: { name: csrName },
      spec: { request: readFileSync(csr).toString('base64'), signerName: 'kubernetes.io/kube-apiserver-client', usages: ['client auth'], expirationSeconds: 86_400 },
    },
  });
  await cluster.kubectlOk(['certificate', 'approve', csrName]);
  const cert = await until(`${name}'s certificate`, 60_000, async () => (await certs.readCertificateSigningRequest({ name: csrName })).status?.certificate || undefined);
  const server = cluster.kubeConfig.getCurrentCluster()!;
  const kubeconfig = [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: fnode',
    `  cluster: {server: "${server.server}", certificate-authority-data: ${server.caData}}`,
    'users:',
    `- name: ${name}`,
    `  user: {client-certificate-data: ${cert}, client-key-data: ${readFileSync(key).toString('base64')}}`,
    'contexts:',
    `- name: ${name}`,
    `  context: {cluster: fnode, user: ${name}, namespace: ${namespace}}`,
    `current-context: ${name}`,
    '',
  ].join('\n');
  const path = join(dir, `${name}.kubeconfig`);
  writeFileSync(path, kubeconfig, { mode: 0o600 });
  return path;
}

type WithPhase = { status?: { phase?: string; conditions?: { type: string; status: string; reason?: string }[] }; spec?: { volumeName?: string } };
const dvPhase = async (namespace: string, name: string): Promise<string | undefined> =>
  ((await custom.getNamespacedCustomObject({ group: 'cdi.kubevirt.io', version: 'v1beta1', namespace, plural: 'datavolumes', name })) as WithPhase).status?.phase;

/** Waits for a DataVolume to succeed; a Failed one ends the wait at once (with what the cluster shows). */
async function dvSucceeds(namespace: string, name: string, ms: number): Promise<void> {
  const failed = await until(`DataVolume ${namespace}/${name} Succeeded`, ms, async () => {
    const phase = await dvPhase(namespace, name);
    return phase === 'Succeeded' || phase === 'Failed' ? phase : undefined;
  }, diagnose);
  if (failed === 'Failed') throw new Error(`DataVolume ${namespace}/${name} Failed\n${await diagnose()}`);
}

/** What a failing wait prints: DataVolumes, PVCs, pods, events, and the Ferry logs. */
async function diagnose(): Promise<string> {
  const apiserver = await cluster.kubectl(['-n', 'ferry-system', 'logs', 'deploy/ferry-apiserver', '--tail=10']);
  return `${await describeCluster(cluster, [GOLDEN, 'alice', 'bob'])}\napiserver log:\n${`${apiserver.stdout}${apiserver.stderr}`.slice(-3000)}`;
}

/** The disk file on the PV bound to `namespace/claim`. */
async function diskOf(namespace: string, claim: string): Promise<string> {
  const pvc = await core.readNamespacedPersistentVolumeClaim({ namespace, name: claim });
  return join(cluster.volumeDir(pvc.spec?.volumeName ?? ''), 'disk.img');
}

beforeAll(async () => {
  let t = Date.now();
  const lap = (what: string): void => {
    note(`${what} ${seconds(Date.now() - t)} s`);
    t = Date.now();
  };
  cluster = await startNodeCluster({ volumes: 4 });
  core = cluster.kubeConfig.makeApiClient(k8s.CoreV1Api);
  custom = cluster.kubeConfig.makeApiClient(k8s.CustomObjectsApi);
  lap(`cluster started (Node Ready ${cluster.readyAfterSeconds.toFixed(1)} s after containerd):`);
  dir = tempDir('ferry-golden-');
  await setUpFerry(cluster, dir, { images: ['ferry', 'ferry-launcher'], namespaces: [GOLDEN, 'alice', 'bob'], apiserver: true, progress: note });
  t = Date.now();
  disk = await startDiskServer(cluster, dir, 'fedora.raw', [GOLDEN]);
  for (const user of ['alice', 'bob']) {
    users[user] = await createUser(user, user);
    // Each user may edit their own namespace, nothing else (ferry:edit aggregates VMs and DataVolumes into edit).
    await cluster.kubectlOk(['-n', user, 'create', 'rolebinding', `${user}-edit`, '--clusterrole=edit', `--user=${user}`]);
  }
  lap('disk server, users alice and bob:');
}, 600_000);

afterAll(async () => {
  await cluster?.stop();
  if (dir) removeDir(dir);
  note(`timings (s): ${formatTimings(timings)}`);
}, 180_000);

describe('golden images on a real node (examples/golden-images)', () => {
  it('1. the admin imports the disk into golden-images (fedora-dv.yaml unchanged, the cluster DNS names disk-server): DataVolume Succeeded', async () => {
    const yaml = example('fedora-dv.yaml');
    expect(yaml).toContain(EXAMPLE_URL);
    const t0 = Date.now();
    await cluster.kubectlOk(['apply', '-f', '-'], { input: yaml });
    await dvSucceeds(GOLDEN, 'fedora-41', IMPORT_TIMEOUT_MS);
    timings['import'] = Date.now() - t0;
    note(`kubectl apply fedora-dv.yaml → Succeeded in ${seconds(timings['import'])} s`);
    execFileSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', disk.bootDisk, await diskOf(GOLDEN, 'fedora-41')]);
  }, IMPORT_TIMEOUT_MS + 30_000);

  it('2. datasource.yaml unchanged: the DataSource controller sets Ready (kubectl wait)', async () => {
    await cluster.kubectlOk(['apply', '-f', '-'], { input: example('datasource.yaml') });
    const waited = await cluster.kubectl(['-n', GOLDEN, 'wait', '--for=condition=Ready', 'datasource/fedora', '--timeout=60s'], { timeoutMs: 70_000 });
    expect(waited).toMatchObject({ code: 0, stdout: expect.stringContaining('datasource.cdi.kubevirt.io/fedora condition met') });
    const ds = (await custom.getNamespacedCustomObject({ group: 'cdi.kubevirt.io', version: 'v1beta1', namespace: GOLDEN, plural: 'datasources', name: 'fedora' })) as WithPhase;
    expect(ds.status?.conditions).toEqual([expect.objectContaining({ type: 'Ready', status: 'True', reason: 'Ready' })]);
  }, 90_000);

  it('3. clone-sourcer-alice.yaml unchanged: alice may clone from golden-images but still not read it', async () => {
    await cluster.kubectlOk(['apply', '-f', '-'], { input: example('clone-sourcer-alice.yaml') });
    expect(await kubectlUser('alice', ['auth', 'can-i', 'create', 'datavolumes.cdi.kubevirt.io/fedora-41', '--subresource=source', '-n', GOLDEN])).toMatchObject({ stdout: 'yes\n' });
    expect(await kubectlUser('bob', ['auth', 'can-i', 'create', 'datavolumes.cdi.kubevirt.io/fedora-41', '--subresource=source', '-n', GOLDEN])).toMatchObject({ stdout: 'no\n' });
    const read = await kubectlUser('alice', ['-n', GOLDEN, 'get', 'pvc,datasource']);
    expect(read.code).not.toBe(0);
    expect(read.stderr).toContain('Forbidden');
  }, 60_000);

  it('4. bob applies vm.yaml: refused at apply time with the webhook\'s message, nothing created', async () => {
    const refused = await kubectlUser('bob', ['apply'], example('vm.yaml'));
    note(`bob: ${refused.stderr.trim()}`);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain(`admission webhook "virtualmachine-clone-authorization.kubevirt.io" denied the request: ${BOB_REFUSED}`);
    // A DataVolume of his own naming the same source: refused the same way.
    const dvYaml = [
      'apiVersion: cdi.kubevirt.io/v1beta1', 'kind: DataVolume', 'metadata:', '  name: stolen', 'spec:',
      '  sourceRef: {kind: DataSource, namespace: golden-images, name: fedora}', '  storage: {resources: {requests: {storage: 1Gi}}}', '',
    ].join('\n');
    const dv = await kubectlUser('bob', ['apply'], dvYaml);
    expect(dv.stderr).toContain(`admission webhook "datavolume-clone-authorization.cdi.kubevirt.io" denied the request: ${BOB_REFUSED}`);
    const [vms, dvs, pvcs] = await Promise.all([
      custom.listNamespacedCustomObject({ group: 'kubevirt.io', version: 'v1', namespace: 'bob', plural: 'virtualmachines' }) as Promise<{ items: unknown[] }>,
      custom.listNamespacedCustomObject({ group: 'cdi.kubevirt.io', version: 'v1beta1', namespace: 'bob', plural: 'datavolumes' }) as Promise<{ items: unknown[] }>,
      core.listNamespacedPersistentVolumeClaim({ namespace: 'bob' }),
    ]);
    expect([vms.items, dvs.items, pvcs.items]).toEqual([[], [], []]);
  }, 60_000);

  it('5. alice applies vm.yaml unchanged: the root disk is cloned from golden-images (byte-identical) and the VM boots, Running and Ready', async () => {
    const t0 = Date.now();
    const applied = await kubectlUser('alice', ['apply'], example('vm.yaml'));
    expect(applied).toMatchObject({ code: 0, stdout: expect.stringContaining('virtualmachine.kubevirt.io/fedora-vm created') });
    await dvSucceeds('alice', 'fedora-vm-root', CLONE_TIMEOUT_MS);
    timings['vm apply → clone Succeeded'] = Date.now() - t0;
    note(`kubectl apply vm.yaml → clone Succeeded in ${seconds(timings['vm apply → clone Succeeded'])} s`);
    execFileSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', await diskOf(GOLDEN, 'fedora-41'), await diskOf('alice', 'fedora-vm-root')]);
    await vmiRunningAndReady(cluster, 'alice', 'fedora-vm', BOOT_TIMEOUT_MS, { describe: diagnose });
    timings['vm apply → Running+Ready'] = Date.now() - t0;
    note(`kubectl apply vm.yaml → Running and Ready in ${seconds(timings['vm apply → Running+Ready'])} s`);
    // alice sees her VM as a KubeVirt user would; the golden PVC is untouched and still Ready to clone.
    expect(await kubectlUser('alice', ['get', 'vmi', 'fedora-vm', '-o', 'jsonpath={.status.phase}'])).toMatchObject({ code: 0, stdout: 'Running' });
    execFileSync('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', disk.bootDisk, await diskOf(GOLDEN, 'fedora-41')]);
  }, CLONE_TIMEOUT_MS + BOOT_TIMEOUT_MS + 30_000);
});
