/**
 * A VirtualMachine with `spec.dataVolumeTemplates`, end to end on a real kube-apiserver + etcd:
 * the import, DataVolume and VM controllers side by side on one InformerFactory (as
 * controller/main.ts runs them). One manifest, applied with the real kubectl: the VM controller
 * creates the DataVolume, the DataVolume controller its PVC, the real importer (run locally with
 * the importer pod's environment, as the kubelet would) fetches the image from a loopback HTTP
 * server, and once the DataVolume Succeeded the VMI starts and its launcher pod mounts the PVC.
 * There is no kubelet: the tests play the pods' part through the API. Where libvirtd and QEMU are
 * installed, the last test boots the imported disk with the real launcher under TCG, started with
 * the launcher pod's own command line and VMI, the importer's volume as the pod's PVC mount.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, readFileSync, renameSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  AuthorizationV1Api,
  CoreV1Api,
  CustomObjectsApi,
  type KubernetesObject,
  KubernetesObjectApi,
  loadAllYaml,
  loadYaml,
  PatchStrategy,
  setHeaderOptions,
  StorageV1Api,
  type V1Pod,
} from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { type DataVolume, type DataVolumeStatus, DV_GROUP, DV_PLURAL, DV_VERSION } from '../../src/api/datavolume.js';
import { API_VERSION, GROUP, Kind, Plural, VERSION, type VirtualMachine, type VirtualMachineInstance } from '../../src/api/kubevirt.js';
import { silentLogger } from '../../src/logging.js';
import type { ControllerConfig } from '../../controller/config.js';
import { DataVolumeController } from '../../controller/datavolume/datavolume-controller.js';
import { ImportController } from '../../controller/import/import-controller.js';
import { InformerFactory } from '../../controller/runtime/informers.js';
import { launcherPodName } from '../../controller/vm/launcher-pod.js';
import { provisioningPodName } from '../../controller/vm/provisioning-pod.js';
import { VmController } from '../../controller/vm/vm-controller.js';
import { controlPlaneBinDir, startControlPlane, type ControlPlane } from '../helpers/cluster.js';
import { installCrds } from '../helpers/crds.js';
import { freePort, REPO_ROOT, startFerry } from '../helpers/ferry-process.js';
import { decodeLauncherStatus } from '../../src/contract/launcher-status.js';
import { LAUNCHER_CONTAINER, LauncherPodEnv } from '../../src/contract/launcher-pod.js';
import { expectSameDisk, makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { importerPod, runPod, testControllerConfig } from '../helpers/import-harness.js';
import { setPodStatus, waitFor } from '../helpers/kubelet.js';

let cp: ControlPlane;
let core: CoreV1Api;
let custom: CustomObjectsApi;
let informers: InformerFactory;
let imports: ImportController;
let dvController: DataVolumeController;
let vms: VmController;
let config: ControllerConfig;
let dir: string;
let server: TestServer;

const kubectl = (): string | undefined => {
  const bin = join(controlPlaneBinDir(), 'kubectl');
  return existsSync(bin) ? bin : undefined;
};

beforeAll(async () => {
  cp = await startControlPlane();
  core = cp.kubeConfig.makeApiClient(CoreV1Api);
  custom = cp.kubeConfig.makeApiClient(CustomObjectsApi);
  await installCrds(cp.kubeConfig);
  dir = tempDir();
  makeRawDisk(join(dir, 'fedora.raw'), 8 * MiB);
  server = await startServer();
  server.route('/fedora.raw', { file: join(dir, 'fedora.raw') });
  server.route('/missing.qcow2', { status: 404 });
  // Nothing listens on the launcher status port: the live /status scrape finds no answer.
  config = await testControllerConfig({ launcherImage: 'localhost/ferry-launcher:test', allowEmulation: true, launcherStatusPort: await freePort() });
  informers = new InformerFactory(cp.kubeConfig, [], silentLogger());
  imports = new ImportController({ kubeConfig: cp.kubeConfig, config, logger: silentLogger(), registry: new Registry(), informers });
  dvController = new DataVolumeController({ kubeConfig: cp.kubeConfig, config, logger: silentLogger(), informers });
  vms = new VmController({ kubeConfig: cp.kubeConfig, config, logger: silentLogger(), informers });
  await Promise.all([imports.start(), dvController.start(), vms.start()]);
}, 120_000);

afterAll(async () => {
  await Promise.all([imports?.stop(), dvController?.stop(), vms?.stop()]);
  await informers?.stop();
  await server?.close();
  await cp?.stop();
  if (dir) removeDir(dir);
});

/** The one manifest: a VM that imports its root disk over HTTP and runs it. */
function manifest(name: string, url: string, memory = '128Mi'): string {
  return `apiVersion: kubevirt.io/v1
kind: VirtualMachine
metadata:
  name: ${name}
spec:
  runStrategy: Always
  dataVolumeTemplates:
    - metadata:
        name: ${name}-root
      spec:
        source:
          http:
            url: ${url}
        storage:
          resources:
            requests:
              storage: 64Mi
  template:
    metadata:
      labels:
        kubevirt.io/vm: ${name}
    spec:
      domain:
        memory:
          guest: ${memory}
        devices:
          disks:
            - name: rootdisk
              disk:
                bus: virtio
      volumes:
        - name: rootdisk
          dataVolume:
            name: ${name}-root
`;
}

async function apply(namespace: string, yaml: string): Promise<void> {
  const bin = kubectl();
  if (bin) {
    execFileSync(bin, ['--kubeconfig', cp.kubeconfigPath, 'apply', '-n', namespace, '-f', '-'], { input: yaml, encoding: 'utf8' });
    return;
  }
  await custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: Plural.VM, body: loadYaml(yaml) });
}

const dvApi = { group: DV_GROUP, version: DV_VERSION, plural: DV_PLURAL };
const readDv = async (namespace: string, name: string): Promise<DataVolume | undefined> =>
  (await custom.getNamespacedCustomObject({ ...dvApi, namespace, name }).catch(() => undefined)) as DataVolume | undefined;
const readVm = async (namespace: string, name: string): Promise<VirtualMachine> =>
  (await custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: Plural.VM, name })) as VirtualMachine;
const readVmi = async (namespace: string, name: string): Promise<VirtualMachineInstance | undefined> =>
  (await custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: Plural.VMI, name }).catch(() => undefined)) as VirtualMachineInstance | undefined;

function dvWhen(namespace: string, name: string, predicate: (s: DataVolumeStatus) => boolean, what: string): Promise<DataVolumeStatus> {
  return waitFor(`DataVolume ${name}: ${what}`, async () => {
    const s = (await readDv(namespace, name))?.status;
    return s && predicate(s) ? s : undefined;
  }, 30_000);
}

function vmWhen(namespace: string, name: string, predicate: (vm: VirtualMachine) => boolean, what: string): Promise<VirtualMachine> {
  return waitFor(`VM ${name}: ${what}`, async () => {
    const vm = await readVm(namespace, name);
    return predicate(vm) ? vm : undefined;
  }, 30_000);
}

function vmiWhen(namespace: string, name: string, predicate: (vmi: VirtualMachineInstance) => boolean, what: string): Promise<VirtualMachineInstance> {
  return waitFor(`VMI ${name}: ${what}`, async () => {
    const vmi = await readVmi(namespace, name);
    return vmi && predicate(vmi) ? vmi : undefined;
  }, 30_000);
}

const condition = (o: { status?: { conditions?: Array<{ type: string }> } }, type: string) =>
  o.status?.conditions?.find((c) => c.type === type) as { type: string; status: string; reason?: string; message?: string } | undefined;

async function vmEvents(namespace: string, name: string): Promise<string[]> {
  const list = await core.listNamespacedEvent({ namespace, fieldSelector: `involvedObject.kind=VirtualMachine,involvedObject.name=${name}` });
  return list.items.map((e) => e.reason ?? '');
}

describe('VirtualMachine spec.dataVolumeTemplates', () => {
  test('one manifest: the DataVolume is created and owned, the real importer fills its PVC, then the VMI starts with the PVC mounted', async () => {
    const ns = await cp.newNamespace('vm-dv');
    await apply(ns, manifest('fedora', `${server.url}/fedora.raw`));
    const vm = await readVm(ns, 'fedora');

    // The VM controller creates the DataVolume: the template's name, owned by the VM.
    const dv = await waitFor('the DataVolume', () => readDv(ns, 'fedora-root'));
    expect(dv.metadata.ownerReferences).toEqual([{ apiVersion: API_VERSION, kind: Kind.VM, name: 'fedora', uid: vm.metadata.uid, controller: true, blockOwnerDeletion: true }]);
    expect(dv.metadata.labels).toMatchObject({ 'kubevirt.io/created-by': vm.metadata.uid });
    expect(dv.metadata.annotations).toMatchObject({ 'cdi.kubevirt.io/allowClaimAdoption': 'true' });
    expect(dv.spec.source).toEqual({ http: { url: `${server.url}/fedora.raw` } });

    // The DataVolume controller creates its PVC; the VM waits, Provisioning, with no VMI.
    const pvc = await waitFor('the PVC', () => core.readNamespacedPersistentVolumeClaim({ namespace: ns, name: 'fedora-root' }).catch(() => undefined));
    expect(pvc.metadata?.ownerReferences).toEqual([expect.objectContaining({ kind: 'DataVolume', name: 'fedora-root', uid: dv.metadata.uid, controller: true })]);
    const provisioning = await vmWhen(ns, 'fedora', (v) => v.status?.printableStatus === 'Provisioning', 'Provisioning');
    expect(condition(provisioning, 'DataVolumesReady')).toMatchObject({ status: 'False', reason: 'NotAllDVsReady' });
    expect(await readVmi(ns, 'fedora')).toBeUndefined();

    // The kubelet's part: the real importer, with the importer pod's environment.
    const importer = await importerPod(core, ns, 'fedora-root');
    const volumes = join(dir, 'fedora-volumes');
    const run = await runPod(core, importer, volumes);
    expect(run.exitCode).toBe(0);
    expect(expectSameDisk(join(volumes, 'data', 'disk.img'), join(dir, 'fedora.raw'))).toBe(true);
    await dvWhen(ns, 'fedora-root', (s) => s.phase === 'Succeeded', 'Succeeded');

    // Then the VMI: created by the VM controller, out of Pending, its launcher pod on the PVC.
    const vmi = await vmiWhen(ns, 'fedora', (v) => v.status?.phase === 'Scheduling', 'Scheduling');
    expect(vmi.metadata.ownerReferences?.[0]).toMatchObject({ kind: 'VirtualMachine', name: 'fedora', uid: vm.metadata.uid });
    expect(condition(vmi, 'DataVolumesReady')).toMatchObject({ status: 'True', reason: 'AllDVsReady' });
    const pod = await waitFor('the launcher pod', () => core.readNamespacedPod({ namespace: ns, name: launcherPodName(vmi) }).catch(() => undefined));
    expect(pod.spec?.volumes).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'rootdisk', persistentVolumeClaim: expect.objectContaining({ claimName: 'fedora-root' }) })]));
    expect(pod.spec?.containers[0]?.volumeMounts).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'rootdisk', mountPath: '/var/run/kubevirt-private/vmi-disks/rootdisk' })]));
    await vmWhen(ns, 'fedora', (v) => v.status?.printableStatus === 'Starting' && condition(v, 'DataVolumesReady')?.status === 'True', 'Starting, DataVolumes ready');

    // The launcher's part up to a running guest.
    await runGuest(ns, pod);
    await vmiWhen(ns, 'fedora', (v) => v.status?.phase === 'Running', 'Running');
    await vmWhen(ns, 'fedora', (v) => v.status?.printableStatus === 'Running' && v.status.ready === true, 'Running');
    const reasons = await vmEvents(ns, 'fedora');
    expect(reasons).toEqual(expect.arrayContaining(['SuccessfulDataVolumeCreate', 'SuccessfulCreate']));
    // Exactly one DataVolume: no second create however often the VM was reconciled.
    expect(reasons.filter((r) => r === 'SuccessfulDataVolumeCreate')).toHaveLength(1);
  });

  test('a DataVolume that fails permanently (HTTP 404): the VM reports DataVolumeError with the error code, no VMI; a VMI on it fails', async () => {
    const ns = await cp.newNamespace('vm-dv-fail');
    await apply(ns, manifest('broken', `${server.url}/missing.qcow2`));
    const importer = await importerPod(core, ns, 'broken-root');
    const run = await runPod(core, importer, join(dir, 'broken-volumes'));
    expect(run.exitCode).not.toBe(0);
    await dvWhen(ns, 'broken-root', (s) => s.phase === 'Failed', 'Failed');

    const vm = await vmWhen(ns, 'broken', (v) => v.status?.printableStatus === 'DataVolumeError', 'DataVolumeError');
    expect(condition(vm, 'DataVolumesReady')).toMatchObject({ status: 'False', reason: 'FailedDataVolumeImport' });
    expect(condition(vm, 'DataVolumesReady')?.message).toMatch(/^DataVolume broken-root failed: SOURCE_NOT_FOUND: /);
    await waitFor('the FailedDataVolumeImport event', async () => ((await vmEvents(ns, 'broken')).includes('FailedDataVolumeImport') ? true : undefined));
    expect(await readVmi(ns, 'broken')).toBeUndefined();

    // A VMI that names the failed DataVolume directly fails, saying why.
    const body: VirtualMachineInstance = {
      apiVersion: API_VERSION,
      kind: Kind.VMI,
      metadata: { name: 'on-broken' },
      spec: { domain: { memory: { guest: '128Mi' }, devices: { disks: [{ name: 'rootdisk' }] } }, volumes: [{ name: 'rootdisk', dataVolume: { name: 'broken-root' } }] },
    };
    await custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: Plural.VMI, body });
    const failed = await vmiWhen(ns, 'on-broken', (v) => v.status?.phase === 'Failed', 'Failed');
    expect(failed.status?.reason).toBe('FailedDataVolumeImport');
    expect(condition(failed, 'Ready')?.message).toContain('SOURCE_NOT_FOUND');
    expect((await core.listNamespacedPod({ namespace: ns, labelSelector: 'kubevirt.io=virt-launcher' })).items).toHaveLength(0);
  });

  test('a VMI on a DataVolume still importing stays Pending, then starts once it Succeeded', async () => {
    const ns = await cp.newNamespace('vmi-dv');
    await custom.createNamespacedCustomObject({
      ...dvApi,
      namespace: ns,
      body: { apiVersion: `${DV_GROUP}/${DV_VERSION}`, kind: 'DataVolume', metadata: { name: 'data' }, spec: { source: { http: { url: `${server.url}/fedora.raw` } }, storage: { resources: { requests: { storage: '64Mi' } } } } },
    });
    const body: VirtualMachineInstance = {
      apiVersion: API_VERSION,
      kind: Kind.VMI,
      metadata: { name: 'waits' },
      spec: { domain: { memory: { guest: '128Mi' }, devices: { disks: [{ name: 'rootdisk' }] } }, volumes: [{ name: 'rootdisk', dataVolume: { name: 'data' } }] },
    };
    await custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: Plural.VMI, body });
    const pending = await vmiWhen(ns, 'waits', (v) => condition(v, 'DataVolumesReady')?.reason === 'NotAllDVsReady', 'NotAllDVsReady');
    expect(pending.status?.phase).toBe('Pending');
    expect(condition(pending, 'PodScheduled')).toMatchObject({ status: 'False', reason: 'DataVolumeNotReady' });
    const importer = await importerPod(core, ns, 'data');
    expect((await runPod(core, importer, join(dir, 'data-volumes'))).exitCode).toBe(0);
    const started = await vmiWhen(ns, 'waits', (v) => v.status?.phase === 'Scheduling', 'Scheduling');
    expect(condition(started, 'DataVolumesReady')).toMatchObject({ status: 'True', reason: 'AllDVsReady' });
  });

  test('WaitForFirstConsumer: the DataVolume waits, a temporary pod binds its PVC, then the import runs and the VMI starts', async () => {
    const ns = await cp.newNamespace('vm-wffc');
    const storage = cp.kubeConfig.makeApiClient(StorageV1Api);
    const className = `${ns}-local`;
    await storage.createStorageClass({ body: { metadata: { name: className }, provisioner: 'kubernetes.io/no-provisioner', volumeBindingMode: 'WaitForFirstConsumer' } });
    try {
      const yaml = manifest('late', `${server.url}/fedora.raw`).replace('        storage:\n', `        storage:\n          storageClassName: ${className}\n`);
      expect(yaml).toContain(`storageClassName: ${className}`);
      await apply(ns, yaml);
      const waiting = await dvWhen(ns, 'late-root', (s) => s.phase === 'WaitForFirstConsumer', 'WaitForFirstConsumer');
      expect(waiting.conditions?.find((c) => c.type === 'Bound')).toMatchObject({ status: 'False', reason: 'WaitForFirstConsumer' });

      // The VM starts its VMI (runStrategy Always); the VMI, Pending, makes the pod that consumes the PVC.
      const vmi = await vmiWhen(ns, 'late', (v) => condition(v, 'Provisioning')?.status === 'True', 'Provisioning');
      expect(vmi.status?.phase).toBe('Pending');
      const temp = await waitFor('the binding pod', () => core.readNamespacedPod({ namespace: ns, name: provisioningPodName(vmi) }).catch(() => undefined));
      expect(temp.metadata?.annotations).toMatchObject({ 'kubevirt.io/ephemeral-provisioning': 'true' });
      expect(temp.spec?.volumes).toEqual([{ name: 'rootdisk', persistentVolumeClaim: { claimName: 'late-root', readOnly: true } }]);
      expect((await core.listNamespacedPod({ namespace: ns })).items.map((p) => p.metadata?.name)).toEqual([provisioningPodName(vmi)]);

      // The scheduler places it and the PV binder binds the claim (played here through the status subresource).
      await core.patchNamespacedPersistentVolumeClaimStatus({ namespace: ns, name: 'late-root', body: { status: { phase: 'Bound' } } }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
      const importer = await importerPod(core, ns, 'late-root');
      await waitFor('the binding pod deleted', async () => ((await core.readNamespacedPod({ namespace: ns, name: provisioningPodName(vmi) }).catch(() => undefined)) ? undefined : true));
      expect((await runPod(core, importer, join(dir, 'late-volumes'))).exitCode).toBe(0);
      await dvWhen(ns, 'late-root', (s) => s.phase === 'Succeeded', 'Succeeded');
      const started = await vmiWhen(ns, 'late', (v) => v.status?.phase === 'Scheduling', 'Scheduling');
      expect(condition(started, 'Provisioning')).toBeUndefined();
      await waitFor('the launcher pod', () => core.readNamespacedPod({ namespace: ns, name: launcherPodName(started) }).catch(() => undefined));
    } finally {
      await storage.deleteStorageClass({ name: className });
    }
  });

  test('admission: the DataVolume rules apply inside a template, naming the field', async () => {
    const ns = await cp.newNamespace('vm-dv-admit');
    const vm = loadYaml<VirtualMachine>(manifest('refused', 'https://example.invalid/disk.img')) as unknown as { spec: { dataVolumeTemplates: Array<{ spec: Record<string, unknown> }> } };
    vm.spec.dataVolumeTemplates[0]!.spec = { source: { gcs: { url: 'gs://bucket/disk.img' } }, storage: { resources: { requests: { storage: '1Gi' } } } };
    const error = await custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: Plural.VM, body: vm }).then(
      () => undefined,
      (err: { code?: number; body?: unknown }) => err,
    );
    expect(error?.code).toBe(422);
    expect(String(error?.body)).toContain('spec.dataVolumeTemplates[0].spec.source.gcs');
    expect(String(error?.body)).toContain('gcs is not supported by Ferry');
  });

  test('kubectl explain reads the template\'s DataVolume descriptions', () => {
    const bin = kubectl();
    if (!bin) return;
    const text = execFileSync(bin, ['--kubeconfig', cp.kubeconfigPath, 'explain', 'vm.spec.dataVolumeTemplates.spec.source.http'], { encoding: 'utf8' });
    expect(text).toContain('Import from an HTTP(S) URL');
  });
});

describe('RBAC (manifests/rbac*.yaml)', () => {
  test('the controller\'s ServiceAccount may do what the VM controller does with DataVolumes', async () => {
    const api = KubernetesObjectApi.makeApiClient(cp.kubeConfig);
    for (const file of ['rbac.yaml', 'rbac-datavolume.yaml']) {
      const objects = loadAllYaml(readFileSync(join(REPO_ROOT, 'manifests', file), 'utf8')) as KubernetesObject[];
      for (const o of objects.filter((x) => x.kind === 'ClusterRole' || x.kind === 'ClusterRoleBinding')) await api.create(o);
    }
    const authz = cp.kubeConfig.makeApiClient(AuthorizationV1Api);
    const allowed = async (group: string, resource: string, verb: string, subresource?: string): Promise<boolean> => {
      const review = await authz.createSubjectAccessReview({
        body: {
          spec: {
            user: 'system:serviceaccount:ferry-system:ferry-controller',
            groups: ['system:serviceaccounts', 'system:serviceaccounts:ferry-system', 'system:authenticated'],
            resourceAttributes: { group, resource, verb, namespace: 'default', ...(subresource ? { subresource } : {}) },
          },
        },
      });
      return review.status?.allowed === true;
    };
    for (const verb of ['get', 'list', 'watch', 'create', 'patch']) expect([verb, await allowed(DV_GROUP, DV_PLURAL, verb)]).toEqual([verb, true]);
    // blockOwnerDeletion on a DataVolume owned by a VM (OwnerReferencesPermissionEnforcement).
    expect(await allowed(GROUP, Plural.VM, 'update', 'finalizers')).toBe(true);
    // Nothing more than needed: DataVolumes are never deleted by the controllers (the garbage collector does).
    expect(await allowed(DV_GROUP, DV_PLURAL, 'delete')).toBe(false);
  });
});

/** libvirtd and QEMU are on this machine: the launcher can really boot. */
const canBoot = existsSync('/usr/sbin/libvirtd') && existsSync('/usr/bin/qemu-system-x86_64');
const BOOT_TIMEOUT = 240_000;

(canBoot ? describe : describe.skip)('the imported disk boots (the real launcher under TCG)', () => {
  test('the one manifest with the tiny boot disk: imported by the importer, booted from the PVC by `ferry launcher` with the launcher pod\'s command line and VMI', async () => {
    const bootDisk = execFileSync('bash', [join(REPO_ROOT, 'scripts', 'make-boot-disk.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
    server.route('/boot.raw', { file: bootDisk });
    const ns = await cp.newNamespace('vm-boot');
    await apply(ns, manifest('tiny', `${server.url}/boot.raw`, '256Mi'));

    // Short: libvirt's unix sockets live below it (108 bytes). QEMU runs unprivileged when we are root.
    const root = tempDir('fb-');
    chmodSync(root, 0o755);
    try {
      const importer = await importerPod(core, ns, 'tiny-root');
      const imported = join(root, 'importer');
      expect((await runPod(core, importer, imported)).exitCode).toBe(0);
      expect(expectSameDisk(join(imported, 'data', 'disk.img'), bootDisk)).toBe(true);
      await dvWhen(ns, 'tiny-root', (s) => s.phase === 'Succeeded', 'Succeeded');

      const vmi = await vmiWhen(ns, 'tiny', (v) => v.status?.phase === 'Scheduling', 'Scheduling');
      const pod = await waitFor('the launcher pod', () => core.readNamespacedPod({ namespace: ns, name: launcherPodName(vmi) }).catch(() => undefined));
      const compute = pod.spec?.containers.find((c) => c.name === LAUNCHER_CONTAINER);
      const vmiJson = compute?.env?.find((e) => e.name === LauncherPodEnv.Vmi)?.value ?? '';
      expect(compute?.args?.[0]).toBe('launcher');
      // The kubelet's part: the PVC (the importer's /data) mounted as the pod's rootdisk volume.
      mkdirSync(join(root, 'volumes'));
      renameSync(join(imported, 'data'), join(root, 'volumes', 'rootdisk'));
      chmodSync(join(root, 'volumes', 'rootdisk'), 0o777);
      const statusPort = await freePort();
      const launcher = startFerry(
        [
          ...(compute?.args ?? []),
          // This runs in the machine's own network namespace, not a pod's: slirp, since passt would
          // take the machine's ports (docs/adr/0011; the later flag wins).
          '--pod-network', 'slirp',
          '--volumes-dir', join(root, 'volumes'),
          '--runtime-dir', join(root, 'run'),
          '--serial-log', join(root, 'serial.log'),
          '--termination-log', join(root, 'termination-log'),
          '--status-port', String(statusPort),
          '--status-address', '127.0.0.1',
        ],
        { [LauncherPodEnv.Vmi]: vmiJson },
        BOOT_TIMEOUT,
      );
      // The launcher's /readyz turns 200 while the domain runs; the kubelet would report that as the
      // pod's readiness. The tiny guest may power off before a poll sees it: the serial log and the
      // termination message below are the proof that it booted.
      await waitFor('the domain running', async () => ((await fetch(`http://127.0.0.1:${statusPort}/readyz`).catch(() => undefined))?.status === 200 ? true : undefined), 120_000, 200).catch(() => undefined);
      await runGuest(ns, pod);
      await vmiWhen(ns, 'tiny', (v) => v.status?.phase === 'Running' || v.status?.phase === 'Succeeded', 'Running');

      // The guest's init announces itself and powers off: the launcher exits 0, Succeeded.
      const result = await launcher.done;
      const serial = readFileSync(join(root, 'serial.log'), 'latin1');
      if (result.code !== 0) throw new Error(`launcher exited ${result.code}: ${result.stderr.slice(-2000)}`);
      expect(serial).toContain('FERRY-BOOT-OK');
      expect(serial).toContain('FERRY-POWEROFF');
      const message = readFileSync(join(root, 'termination-log'), 'utf8');
      expect(decodeLauncherStatus(message)).toMatchObject({ phase: 'Succeeded', reason: 'Shutdown', accel: 'tcg' });
      await setPodStatus(core, pod, 'Succeeded', { terminated: { exitCode: 0, message } });
      // Succeeded, then (runStrategy Always) replaced by a new VMI: the old one's events tell its end.
      const ended = await waitFor('the VMI Stopped event', async () => {
        const list = await core.listNamespacedEvent({ namespace: ns, fieldSelector: `involvedObject.kind=VirtualMachineInstance,involvedObject.uid=${vmi.metadata.uid}` });
        const reasons = list.items.map((e) => `${e.reason}: ${e.message}`);
        return reasons.some((r) => r.startsWith('Stopped: The virtual machine was shut down')) ? reasons : undefined;
      });
      expect(ended).toEqual(expect.arrayContaining(['Started: VirtualMachineInstance started.']));
    } finally {
      removeDir(root);
    }
  }, BOOT_TIMEOUT + 60_000);
});

async function runGuest(namespace: string, pod: V1Pod): Promise<void> {
  const name = pod.metadata?.name ?? '';
  await core.createNamespacedPodBinding({ namespace, name, body: { metadata: { name }, target: { apiVersion: 'v1', kind: 'Node', name: 'node-a' } } });
  await setPodStatus(core, pod, 'Running', { podIP: '127.0.0.1', ready: true });
}
