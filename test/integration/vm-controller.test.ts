/**
 * The VM controller against a real kube-apiserver + etcd with Ferry's kubevirt.io/v1 CRDs. There
 * is no kubelet: the tests play the launcher pod's part through the API (phase, readiness, pod IP,
 * the launcher's termination message) and drive VMs the way `ferry vm start|stop|restart` does.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { createServer, type Server } from 'node:http';
import {
  CoreV1Api,
  CustomObjectsApi,
  PatchStrategy,
  setHeaderOptions,
  type V1Pod,
} from '@kubernetes/client-node';
import { silentLogger } from '../../src/logging.js';
import {
  API_VERSION,
  FOREGROUND_FINALIZER,
  GROUP,
  Kind,
  Plural,
  type RunStrategy,
  VERSION,
  type VirtualMachine,
  type VirtualMachineInstance,
  type VmiSpec,
  vmiId,
} from '../../src/api/kubevirt.js';
import { encodeLauncherStatus, encodeLauncherStatusBody } from '../../src/contract/launcher-status.js';
import { DEFAULT_CONFIG } from '../../controller/config.js';
import { launcherPodName } from '../../controller/vm/launcher-pod.js';
import { VmController } from '../../controller/vm/vm-controller.js';
import { vmLifecycle } from '../../cli/vm-main.js';
import { startControlPlane, type ControlPlane } from '../helpers/cluster.js';
import { installVmCrds } from '../helpers/crds.js';
import { freePort } from '../helpers/ferry-process.js';
import { setPodStatus, startPodReaper, waitFor } from '../helpers/kubelet.js';

let cp: ControlPlane;
let core: CoreV1Api;
let custom: CustomObjectsApi;
let controller: VmController;
let statusServer: Server;
let namespace: string;
let reaper: { stop(): void } | undefined;

const at = (plural: string) => ({ group: GROUP, version: VERSION, namespace, plural });

beforeAll(async () => {
  cp = await startControlPlane();
  core = cp.kubeConfig.makeApiClient(CoreV1Api);
  custom = cp.kubeConfig.makeApiClient(CustomObjectsApi);
  await installVmCrds(cp.kubeConfig);
  // Plays the running launcher's /status endpoint: the guest runs under TCG.
  const port = await freePort();
  statusServer = createServer((req, res) => {
    if (req.url === '/status') res.writeHead(200, { 'content-type': 'application/json' }).end(encodeLauncherStatusBody({ phase: 'Running', domainState: 'running', accel: 'tcg', timings: {} }));
    else res.writeHead(404).end();
  });
  await new Promise<void>((resolve) => statusServer.listen(port, '127.0.0.1', resolve));
  controller = new VmController({
    kubeConfig: cp.kubeConfig,
    config: Object.freeze({ ...DEFAULT_CONFIG, launcherImage: 'localhost/ferry-launcher:test', allowEmulation: true, launcherStatusPort: port, startBackoffMs: 400, maxStartBackoffMs: 1600 }),
    logger: silentLogger(),
  });
  await controller.start();
  namespace = await cp.newNamespace('vm');
  reaper = startPodReaper(core, namespace);
}, 120_000);

afterAll(async () => {
  reaper?.stop();
  await controller?.stop();
  await new Promise((resolve) => statusServer?.close(resolve));
  await cp?.stop();
});

function vmiSpec(claim = 'rootdisk-pvc'): VmiSpec {
  return {
    domain: {
      memory: { guest: '128Mi' },
      devices: {
        disks: [{ name: 'rootdisk', disk: { bus: 'virtio' } }],
        interfaces: [{ name: 'default', masquerade: {}, ports: [{ name: 'ssh', port: 22 }] }],
      },
    },
    networks: [{ name: 'default', pod: {} }],
    volumes: [{ name: 'rootdisk', persistentVolumeClaim: { claimName: claim } }],
  };
}

async function createPvc(name: string, annotations: Record<string, string> = {}, block = false): Promise<void> {
  await core.createNamespacedPersistentVolumeClaim({
    namespace,
    body: {
      metadata: { name, annotations },
      spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '64Mi' } }, ...(block ? { volumeMode: 'Block' } : {}) },
    },
  });
}

async function createVmi(name: string, spec: VmiSpec, labels: Record<string, string> = {}): Promise<VirtualMachineInstance> {
  const body: VirtualMachineInstance = { apiVersion: API_VERSION, kind: Kind.VMI, metadata: { name, labels }, spec };
  return (await custom.createNamespacedCustomObject({ ...at(Plural.VMI), body })) as VirtualMachineInstance;
}

async function readVmi(name: string): Promise<VirtualMachineInstance | undefined> {
  try {
    return (await custom.getNamespacedCustomObject({ ...at(Plural.VMI), name })) as VirtualMachineInstance;
  } catch (err) {
    if ((err as { code?: unknown }).code === 404) return undefined;
    throw err;
  }
}

async function readVm(name: string): Promise<VirtualMachine> {
  return (await custom.getNamespacedCustomObject({ ...at(Plural.VM), name })) as VirtualMachine;
}

async function vmiWhen(name: string, predicate: (vmi: VirtualMachineInstance) => boolean, what: string, timeoutMs = 20_000): Promise<VirtualMachineInstance> {
  return waitFor(`VMI ${name}: ${what}`, async () => {
    const vmi = await readVmi(name);
    return vmi && predicate(vmi) ? vmi : undefined;
  }, timeoutMs);
}

async function vmWhen(name: string, predicate: (vm: VirtualMachine) => boolean, what: string, timeoutMs = 20_000): Promise<VirtualMachine> {
  return waitFor(`VM ${name}: ${what}`, async () => {
    const vm = await readVm(name);
    return predicate(vm) ? vm : undefined;
  }, timeoutMs);
}

async function launcherPod(vmi: VirtualMachineInstance): Promise<V1Pod> {
  return waitFor(`launcher pod of ${vmi.metadata.name}`, async () => {
    try {
      return await core.readNamespacedPod({ namespace, name: launcherPodName(vmi) });
    } catch {
      return undefined;
    }
  });
}

async function bindToNode(pod: V1Pod, node: string): Promise<void> {
  await core.createNamespacedPodBinding({
    namespace,
    name: pod.metadata?.name ?? '',
    body: { metadata: { name: pod.metadata?.name ?? '' }, target: { apiVersion: 'v1', kind: 'Node', name: node } },
  });
}

/** Plays the launcher pod up to a running guest. */
async function runGuest(vmi: VirtualMachineInstance): Promise<V1Pod> {
  const pod = await launcherPod(vmi);
  await bindToNode(pod, 'node-a');
  await setPodStatus(core, pod, 'Running', { podIP: '127.0.0.1', ready: true });
  return pod;
}

const phaseIs = (phase: string) => (vmi: VirtualMachineInstance) => vmi.status?.phase === phase;

describe('VirtualMachineInstance → launcher pod', () => {
  test('a VMI with a PVC disk runs through Scheduling, Scheduled and Running to Succeeded, then is deleted cleanly', async () => {
    await createPvc('rootdisk-pvc');
    const created = await createVmi('web', vmiSpec(), { app: 'web', 'kubevirt.io/vm': 'web' });
    const scheduling = await vmiWhen('web', phaseIs('Scheduling'), 'Scheduling');
    expect(scheduling.metadata.finalizers).toContain(FOREGROUND_FINALIZER);

    const pod = await launcherPod(created);
    expect(pod.metadata?.labels).toMatchObject({ app: 'web', 'kubevirt.io/vm': 'web', 'kubevirt.io': 'virt-launcher', 'vmi.kubevirt.io/id': vmiId('web'), 'kubevirt.io/created-by': created.metadata.uid });
    expect(pod.metadata?.annotations?.['kubevirt.io/domain']).toBe('web');
    expect(pod.metadata?.ownerReferences?.[0]).toMatchObject({ kind: 'VirtualMachineInstance', name: 'web', uid: created.metadata.uid, controller: true });
    const compute = pod.spec?.containers[0];
    expect(compute?.volumeMounts).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'rootdisk', mountPath: '/var/run/kubevirt-private/vmi-disks/rootdisk' })]));
    expect(pod.spec?.volumes).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'rootdisk', persistentVolumeClaim: expect.objectContaining({ claimName: 'rootdisk-pvc' }) })]));
    expect(compute?.ports).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'ssh', containerPort: 22 })]));
    expect(compute?.args).toEqual(expect.arrayContaining(['launcher', '--allow-emulation', '--volume-size', `rootdisk=${64 * 1024 * 1024}`]));
    // Guest memory plus the launcher's overhead, never less than the guest's.
    const memory = String(compute?.resources?.requests?.memory ?? '0Mi');
    expect(Number(memory.replace('Mi', ''))).toBeGreaterThan(128);
    expect(pod.spec?.securityContext).toMatchObject({ runAsNonRoot: true, runAsUser: 107, fsGroup: 107 });

    // The container started but the domain is not up yet: Scheduled, not Ready.
    await bindToNode(pod, 'node-a');
    await setPodStatus(core, pod, 'Running', { podIP: '127.0.0.1', ready: false });
    const scheduled = await vmiWhen('web', phaseIs('Scheduled'), 'Scheduled');
    expect(scheduled.status?.nodeName).toBe('node-a');
    expect(scheduled.status?.conditions?.find((c) => c.type === 'Ready')).toMatchObject({ status: 'False', reason: 'GuestNotRunning' });

    // Readiness = the domain runs. The launcher's /status says TCG, so SoftwareEmulation is reported.
    await setPodStatus(core, pod, 'Running', { podIP: '127.0.0.1', ready: true });
    const running = await vmiWhen('web', (v) => phaseIs('Running')(v) && v.status?.conditions?.some((c) => c.type === 'SoftwareEmulation') === true, 'Running with SoftwareEmulation');
    expect(running.status?.interfaces?.[0]).toMatchObject({ name: 'default', ipAddress: '127.0.0.1' });
    expect(running.status?.conditions?.find((c) => c.type === 'Ready')?.status).toBe('True');
    expect(running.status?.conditions?.find((c) => c.type === 'SoftwareEmulation')?.status).toBe('True');

    // The guest powers off: the launcher exits 0 with its termination message.
    await setPodStatus(core, pod, 'Succeeded', { terminated: { exitCode: 0, message: encodeLauncherStatus({ phase: 'Succeeded', reason: 'Shutdown', message: 'the guest powered off' }) } });
    const done = await vmiWhen('web', phaseIs('Succeeded'), 'Succeeded');
    expect(done.status?.phaseTransitionTimestamps?.map((t) => t.phase)).toEqual(['Scheduling', 'Scheduled', 'Running', 'Succeeded']);

    await custom.deleteNamespacedCustomObject({ ...at(Plural.VMI), name: 'web' });
    await waitFor('VMI web gone', async () => ((await readVmi('web')) === undefined ? true : undefined));
    const events = await core.listNamespacedEvent({ namespace, fieldSelector: 'involvedObject.name=web' });
    expect(events.items.map((e) => e.reason)).toEqual(expect.arrayContaining(['SuccessfulCreate', 'Started', 'Stopped']));
  });

  test('a block PVC becomes a raw device at /dev/<volume>', async () => {
    await createPvc('blockdisk', {}, true);
    const vmi = await createVmi('blk', vmiSpec('blockdisk'));
    const pod = await launcherPod(vmi);
    expect(pod.spec?.containers[0]?.volumeDevices).toEqual([{ name: 'rootdisk', devicePath: '/dev/rootdisk' }]);
  });

  test('a missing PVC keeps the VMI Pending until it exists; a PVC still being imported too', async () => {
    const vmi = await createVmi('waiting', vmiSpec('later-pvc'));
    const pending = await vmiWhen('waiting', (v) => v.status?.conditions?.some((c) => c.reason === 'PVCNotFound') === true, 'PVCNotFound');
    expect(pending.status?.phase).toBe('Pending');
    await createPvc('later-pvc', { 'cdi.kubevirt.io/storage.import.endpoint': 'http://127.0.0.1:1/disk.img', 'cdi.kubevirt.io/storage.pod.phase': 'Running' });
    await vmiWhen('waiting', (v) => v.status?.conditions?.some((c) => c.reason === 'DataVolumeNotReady') === true, 'DataVolumeNotReady');
    expect(await core.listNamespacedPod({ namespace, labelSelector: `vmi.kubevirt.io/id=waiting` }).then((l) => l.items.length)).toBe(0);
    await core.patchNamespacedPersistentVolumeClaim(
      { namespace, name: 'later-pvc', body: { metadata: { annotations: { 'cdi.kubevirt.io/storage.pod.phase': 'Succeeded' } } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    await launcherPod(vmi);
    await vmiWhen('waiting', phaseIs('Scheduling'), 'Scheduling');
  });

  test('a launcher pod that disappears under a running VMI makes it Failed, not stuck', async () => {
    await createPvc('gone-pvc');
    const vmi = await createVmi('gone', vmiSpec('gone-pvc'));
    const pod = await runGuest(vmi);
    await vmiWhen('gone', phaseIs('Running'), 'Running');
    await core.deleteNamespacedPod({ namespace, name: pod.metadata?.name ?? '', gracePeriodSeconds: 0 });
    const failed = await vmiWhen('gone', phaseIs('Failed'), 'Failed');
    expect(failed.status?.reason).toBe('PodNotExists');
    // Final: no new pod for the same VMI.
    await new Promise((r) => setTimeout(r, 500));
    expect((await core.listNamespacedPod({ namespace, labelSelector: `kubevirt.io/created-by=${vmi.metadata.uid}` })).items).toHaveLength(0);
  });

  test('the launcher termination message explains a failed VMI', async () => {
    await createPvc('crash-pvc');
    const vmi = await createVmi('crash', vmiSpec('crash-pvc'));
    const pod = await runGuest(vmi);
    await setPodStatus(core, pod, 'Failed', { terminated: { exitCode: 1, message: encodeLauncherStatus({ phase: 'Failed', reason: 'Crashed', message: 'qemu exited: guest crashed' }) } });
    const failed = await vmiWhen('crash', phaseIs('Failed'), 'Failed');
    expect(failed.status?.reason).toBe('Crashed');
    expect(failed.status?.conditions?.find((c) => c.type === 'Ready')?.message).toContain('guest crashed');
  });

  test('an invalid VMI fails with the field named', async () => {
    const failed = await createVmi('bad', { ...vmiSpec(), domain: { ...vmiSpec().domain, devices: { disks: [{ name: 'nope' }] } } });
    const vmi = await vmiWhen('bad', phaseIs('Failed'), 'Failed');
    expect(vmi.status?.reason).toBe('InvalidSpec');
    expect(vmi.status?.conditions?.find((c) => c.type === 'Ready')?.message).toContain('disks[0] (nope) has no volume');
    expect(failed.metadata.uid).toBeDefined();
  });
});

function vmBody(name: string, strategy: RunStrategy | { running: boolean }, claim: string): VirtualMachine {
  return {
    apiVersion: API_VERSION,
    kind: Kind.VM,
    metadata: { name, labels: { 'kubevirt.io/vm': name } },
    spec: {
      ...(typeof strategy === 'string' ? { runStrategy: strategy } : strategy),
      template: { metadata: { labels: { 'kubevirt.io/vm': name, app: name } }, spec: vmiSpec(claim) },
    },
  };
}

async function createVm(name: string, strategy: RunStrategy | { running: boolean }): Promise<VirtualMachine> {
  const claim = `${name}-disk`;
  await createPvc(claim);
  return (await custom.createNamespacedCustomObject({ ...at(Plural.VM), body: vmBody(name, strategy, claim) })) as VirtualMachine;
}

/** The pod's part for a VMI the VM controller created: run it, then end it with `phase`. */
async function endRun(name: string, phase: 'Succeeded' | 'Failed'): Promise<VirtualMachineInstance> {
  const vmi = await vmiWhen(name, (v) => v.status?.phase === 'Scheduling', 'Scheduling');
  const pod = await runGuest(vmi);
  await vmiWhen(name, phaseIs('Running'), 'Running');
  const message = encodeLauncherStatus({ phase, reason: phase === 'Failed' ? 'Crashed' : 'Shutdown', message: `guest ${phase}` });
  await setPodStatus(core, pod, phase, { terminated: { exitCode: phase === 'Failed' ? 1 : 0, message } });
  return vmi;
}

async function nextVmi(name: string, previousUid: string | undefined): Promise<VirtualMachineInstance> {
  return vmiWhen(name, (v) => v.metadata.uid !== previousUid && v.status?.phase !== undefined, 'a new VMI');
}

describe('VirtualMachine run strategies', () => {
  test('Always: starts, restarts a failed VMI after a backoff (CrashLoopBackOff), and `vm stop` halts it', async () => {
    await createVm('always', 'Always');
    const first = await endRun('always', 'Failed');
    const vm = await vmWhen('always', (v) => v.status?.startFailure?.consecutiveFailCount === 1, 'one failure counted');
    expect(vm.status?.startFailure?.lastFailedVMIUID).toBe(first.metadata.uid);
    const second = await nextVmi('always', first.metadata.uid);
    expect(second.metadata.labels).toMatchObject({ app: 'always' });
    expect(second.metadata.ownerReferences?.[0]).toMatchObject({ kind: 'VirtualMachine', name: 'always' });
    await runGuest(second);
    await vmWhen('always', (v) => v.status?.printableStatus === 'Running' && v.status.ready === true && v.status.startFailure === undefined, 'Running, failures reset');

    await vmLifecycle(cp.kubeConfig, namespace, 'always', 'stop');
    const halted = await vmWhen('always', (v) => v.status?.printableStatus === 'Stopped', 'Stopped');
    expect(halted.spec.runStrategy).toBe('Halted');
    await waitFor('VMI always gone', async () => ((await readVmi('always')) === undefined ? true : undefined));
  });

  test('Halted: no VMI until `vm start` (which switches to Always)', async () => {
    await createVm('halted', 'Halted');
    await vmWhen('halted', (v) => v.status?.printableStatus === 'Stopped', 'Stopped');
    expect(await readVmi('halted')).toBeUndefined();
    await vmLifecycle(cp.kubeConfig, namespace, 'halted', 'start');
    expect((await readVm('halted')).spec.runStrategy).toBe('Always');
    await vmiWhen('halted', phaseIs('Scheduling'), 'Scheduling');
    await vmWhen('halted', (v) => v.status?.printableStatus === 'Starting', 'Starting');
  });

  test('running: true means Always; `vm stop` replaces the deprecated field by Halted', async () => {
    await createVm('legacy', { running: true });
    await vmiWhen('legacy', phaseIs('Scheduling'), 'Scheduling');
    await vmLifecycle(cp.kubeConfig, namespace, 'legacy', 'stop');
    const vm = await readVm('legacy');
    expect(vm.spec.running).toBeUndefined();
    expect(vm.spec.runStrategy).toBe('Halted');
    await waitFor('VMI legacy gone', async () => ((await readVmi('legacy')) === undefined ? true : undefined));
  });

  test('Manual: start and stop requests, and restart replaces the VMI', async () => {
    await createVm('manual', 'Manual');
    await vmWhen('manual', (v) => v.status?.printableStatus === 'Stopped', 'Stopped');
    await new Promise((r) => setTimeout(r, 300));
    expect(await readVmi('manual')).toBeUndefined();

    await vmLifecycle(cp.kubeConfig, namespace, 'manual', 'start');
    const first = await vmiWhen('manual', phaseIs('Scheduling'), 'Scheduling');
    await vmWhen('manual', (v) => (v.status?.stateChangeRequests ?? []).length === 0, 'request consumed');
    await runGuest(first);
    await vmiWhen('manual', phaseIs('Running'), 'Running');

    await vmLifecycle(cp.kubeConfig, namespace, 'manual', 'restart');
    const second = await nextVmi('manual', first.metadata.uid);
    expect(second.metadata.uid).not.toBe(first.metadata.uid);
    await runGuest(second);
    await vmiWhen('manual', (v) => v.metadata.uid === second.metadata.uid && v.status?.phase === 'Running', 'second Running');

    await vmLifecycle(cp.kubeConfig, namespace, 'manual', 'stop');
    await waitFor('VMI manual gone', async () => ((await readVmi('manual')) === undefined ? true : undefined));
    const vm = await vmWhen('manual', (v) => v.status?.printableStatus === 'Stopped' && (v.status.stateChangeRequests ?? []).length === 0, 'Stopped');
    expect(vm.spec.runStrategy).toBe('Manual');
    await expect(vmLifecycle(cp.kubeConfig, namespace, 'manual', 'stop')).rejects.toThrow('not running');
  });

  test('RerunOnFailure: a failed VMI is replaced, one that succeeded is left stopped', async () => {
    await createVm('rerun', 'RerunOnFailure');
    const failed = await endRun('rerun', 'Failed');
    const second = await nextVmi('rerun', failed.metadata.uid);
    await runGuest(second);
    await vmiWhen('rerun', (v) => v.metadata.uid === second.metadata.uid && v.status?.phase === 'Running', 'second Running');
    const pod = await launcherPod(second);
    await setPodStatus(core, pod, 'Succeeded', { terminated: { exitCode: 0, message: encodeLauncherStatus({ phase: 'Succeeded', reason: 'Shutdown', message: 'bye' }) } });
    await vmiWhen('rerun', phaseIs('Succeeded'), 'Succeeded');
    await vmWhen('rerun', (v) => v.status?.printableStatus === 'Stopped', 'Stopped');
    await new Promise((r) => setTimeout(r, 1000));
    expect((await readVmi('rerun'))?.metadata.uid).toBe(second.metadata.uid);
  });

  test('RerunOnFailure: `vm stop` keeps it stopped (no restart), `vm start` runs it again', async () => {
    await createVm('rerun-stop', 'RerunOnFailure');
    const first = await vmiWhen('rerun-stop', phaseIs('Scheduling'), 'Scheduling');
    await runGuest(first);
    await vmiWhen('rerun-stop', phaseIs('Running'), 'Running');
    await vmLifecycle(cp.kubeConfig, namespace, 'rerun-stop', 'stop');
    await waitFor('VMI rerun-stop gone', async () => ((await readVmi('rerun-stop')) === undefined ? true : undefined));
    await vmWhen('rerun-stop', (v) => v.status?.printableStatus === 'Stopped', 'Stopped');
    await new Promise((r) => setTimeout(r, 1000));
    expect(await readVmi('rerun-stop')).toBeUndefined();
    await vmLifecycle(cp.kubeConfig, namespace, 'rerun-stop', 'start');
    const second = await vmiWhen('rerun-stop', phaseIs('Scheduling'), 'Scheduling again');
    expect(second.metadata.uid).not.toBe(first.metadata.uid);
  });

  test('Once: one run to its end, no restart after a failure', async () => {
    await createVm('once', 'Once');
    const only = await endRun('once', 'Failed');
    await vmWhen('once', (v) => v.status?.printableStatus === 'Stopped', 'Stopped');
    await new Promise((r) => setTimeout(r, 1000));
    expect((await readVmi('once'))?.metadata.uid).toBe(only.metadata.uid);
    await expect(vmLifecycle(cp.kubeConfig, namespace, 'once', 'start')).rejects.toThrow('does not support manual start');
  });

  test('a Service selecting the VM template labels selects the launcher pod', async () => {
    await createVm('svc', 'Always');
    const vmi = await vmiWhen('svc', phaseIs('Scheduling'), 'Scheduling');
    const pod = await launcherPod(vmi);
    const selector = { 'kubevirt.io/vm': 'svc' };
    await core.createNamespacedService({ namespace, body: { metadata: { name: 'svc-ssh' }, spec: { selector, ports: [{ port: 22, targetPort: 22 }] } } });
    const matched = await core.listNamespacedPod({ namespace, labelSelector: 'kubevirt.io/vm=svc' });
    expect(matched.items.map((p) => p.metadata?.name)).toEqual([pod.metadata?.name]);
  });
});

describe('the CRDs as clients see them', () => {
  /** GET on the apiserver with the test kubeconfig's credentials. */
  async function getJson(path: string): Promise<unknown> {
    const { request } = await import('node:https');
    const url = new URL(path, cp.kubeConfig.getCurrentCluster()?.server);
    const options: import('node:https').RequestOptions = { hostname: url.hostname, port: url.port, path: url.pathname, method: 'GET', headers: {} };
    await cp.kubeConfig.applyToHTTPSOptions(options);
    return new Promise((resolve, reject) => {
      const req = request(options, (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString()));
        res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(body)) : reject(new Error(`${path}: HTTP ${res.statusCode}`))));
      });
      req.on('error', reject);
      req.end();
    });
  }

  test('the published OpenAPI schema documents the subset (what kubectl explain reads)', async () => {
    const doc = (await getJson('/openapi/v3/apis/kubevirt.io/v1')) as { components: { schemas: Record<string, { properties?: Record<string, { description?: string; properties?: Record<string, unknown> }> }> } };
    // Named by reversed group: io.kubevirt.v1.VirtualMachineInstance.
    const vmi = Object.entries(doc.components.schemas).find(([k]) => k.endsWith('.v1.VirtualMachineInstance'))?.[1];
    expect(vmi?.properties?.spec?.description).toBe('Specification of the virtual machine instance.');
    expect(Object.keys(vmi?.properties?.spec?.properties ?? {})).toEqual(expect.arrayContaining(['domain', 'volumes', 'networks', 'terminationGracePeriodSeconds']));
  });

  test('fields outside the subset are kept, so KubeVirt YAML round-trips', async () => {
    const spec = { ...vmiSpec('keep-pvc'), evictionStrategy: 'LiveMigrate', domain: { ...vmiSpec('keep-pvc').domain, clock: { utc: {} } } } as VmiSpec;
    await createVmi('keep', spec);
    const stored = (await readVmi('keep')) as unknown as { spec: { evictionStrategy?: string; domain: { clock?: unknown } } };
    expect(stored.spec.evictionStrategy).toBe('LiveMigrate');
    expect(stored.spec.domain.clock).toEqual({ utc: {} });
  });
});
