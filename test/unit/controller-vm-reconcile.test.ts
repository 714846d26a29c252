/**
 * The VM controller's thin reconcile: it reads the caches, calls the pure plans and hands every
 * action to the writer in order; the launcher's live /status and termination message become the
 * plan's report through pure functions. Fakes for caches and writer; no clients, no timers.
 */

import { describe, expect, test } from '@jest/globals';
import type { V1Pod } from '@kubernetes/client-node';
import { launcherPodName } from '../../controller/vm/launcher-pod.js';
import { launcherReport, liveReportFromStatus } from '../../controller/vm/launcher-scrape.js';
import { reconcileVmKey, type VmCaches, type VmiObject, type VmObject, type VmReconcileDeps } from '../../controller/vm/reconcile.js';
import { DEFAULT_VM_CONFIG, type VmAction } from '../../controller/vm/vm-plan.js';
import type { LauncherReport, VmiAction } from '../../controller/vm/vmi-plan.js';
import { kindKey, objectKey, splitKey, splitKindKey } from '../../controller/runtime/keys.js';
import { silentLogger } from '../../src/logging.js';
import { FOREGROUND_FINALIZER, VmiPhase } from '../../src/api/kubevirt.js';
import { encodeLauncherStatus, encodeLauncherStatusBody } from '../../src/contract/launcher-status.js';
import type { DataVolume } from '../../src/api/datavolume.js';
import type { VirtualMachine } from '../../src/api/kubevirt.js';
import { LAUNCHER_CONFIG, makeVm, makeVmi, makeVmPvc, VM_NAME, VM_NS, VM_UID, vmiIn } from './helpers.js';

const NOW = Date.parse('2024-05-01T12:00:00.000Z');
const POD_IP = '10.244.1.7';
const POD_UID = 'pod-uid-1';

function runningPod(o: { terminated?: string } = {}): V1Pod {
  return {
    metadata: { name: launcherPodName(makeVmi()), namespace: VM_NS, uid: POD_UID },
    spec: { containers: [{ name: 'compute' }], nodeName: 'node-1' },
    status: {
      phase: o.terminated ? 'Failed' : 'Running',
      conditions: [
        { type: 'PodScheduled', status: 'True' },
        { type: 'Ready', status: o.terminated ? 'False' : 'True' },
      ],
      podIP: POD_IP,
      podIPs: [{ ip: POD_IP }],
      ...(o.terminated ? { containerStatuses: [{ name: 'compute', image: 'x', imageID: '', ready: false, restartCount: 0, state: { terminated: { exitCode: 4, message: o.terminated } } }] } : {}),
    },
  };
}

interface World {
  vms?: VmObject[];
  vmis?: VmiObject[];
  pods?: V1Pod[];
  apiPods?: V1Pod[];
  scrape?: LauncherReport;
  reports?: Map<string, LauncherReport>;
  dvs?: DataVolume[];
  apiDvs?: DataVolume[];
}

function harness(world: World) {
  const find = <T extends { metadata?: { name?: string; namespace?: string } }>(items: readonly T[] | undefined, ns: string, name: string) =>
    items?.find((o) => o.metadata?.name === name && o.metadata?.namespace === ns);
  const caches: VmCaches = {
    getVm: (ns, name) => find(world.vms, ns, name),
    getVmi: (ns, name) => find(world.vmis, ns, name),
    getPod: (ns, name) => find(world.pods, ns, name),
    getPvc: (ns, name) => (ns === VM_NS ? makeVmPvc(name) : undefined),
    getDataVolume: (ns, name) => find(world.dvs, ns, name),
  };
  const applied: Array<{ on: string; action: VmAction | VmiAction }> = [];
  const reads: string[] = [];
  const scrapes: string[] = [];
  const reports = world.reports ?? new Map<string, LauncherReport>();
  const deps: VmReconcileDeps = {
    caches,
    writer: {
      applyVm: async (vm, action) => void applied.push({ on: `vm:${vm.metadata.name}`, action }),
      applyVmi: async (vmi, action) => void applied.push({ on: `vmi:${vmi.metadata.name}`, action }),
    },
    config: { ...LAUNCHER_CONFIG, ...DEFAULT_VM_CONFIG },
    logger: silentLogger(),
    now: () => NOW,
    readPod: async (ns, name) => {
      reads.push(`${ns}/${name}`);
      return find(world.apiPods, ns, name);
    },
    readDataVolume: async (ns, name) => {
      reads.push(`dv ${ns}/${name}`);
      return find(world.apiDvs, ns, name);
    },
    scrape: async (ip, port) => {
      scrapes.push(`${ip}:${port}`);
      return world.scrape;
    },
    reports,
  };
  return { deps, applied, reads, scrapes, reports };
}

const types = (applied: ReadonlyArray<{ action: { type: string } }>): string[] => applied.map((a) => a.action.type);

describe('reconcileVmKey', () => {
  test('a key whose object is gone: nothing read from the apiserver, nothing written', async () => {
    const h = harness({});
    expect(await reconcileVmKey(kindKey('vm', VM_NS, 'gone'), h.deps)).toEqual({});
    expect(await reconcileVmKey(kindKey('vmi', VM_NS, 'gone'), h.deps)).toEqual({});
    expect(h.applied).toEqual([]);
    expect(h.reads).toEqual([]);
  });

  test('a new VMI: the plan’s actions go to the writer, in order, on that VMI', async () => {
    const h = harness({ vmis: [makeVmi() as VmiObject] });
    await reconcileVmKey(kindKey('vmi', VM_NS, VM_NAME), h.deps);
    expect(types(h.applied)[0]).toBe('setFinalizers');
    expect(h.applied.every((a) => a.on === `vmi:${VM_NAME}`)).toBe(true);
  });

  test('a VM with runStrategy Always and no VMI: createVmi through applyVm', async () => {
    const h = harness({ vms: [makeVm({ runStrategy: 'Always' }) as VmObject] });
    await reconcileVmKey(kindKey('vm', VM_NS, VM_NAME), h.deps);
    expect(types(h.applied)).toContain('createVmi');
    expect(h.applied.every((a) => a.on === `vm:${VM_NAME}`)).toBe(true);
  });

  describe('a VM with a dataVolumeTemplates entry', () => {
    const base = makeVm({ runStrategy: 'Always' });
    const vm = { ...base, spec: { ...base.spec, dataVolumeTemplates: [{ metadata: { name: 'root' }, spec: { source: { blank: {} }, storage: { resources: { requests: { storage: '1Gi' } } } } }] } } as VirtualMachine as VmObject;
    const dv = (phase: string): DataVolume => ({
      apiVersion: 'cdi.kubevirt.io/v1beta1',
      kind: 'DataVolume',
      metadata: { name: 'root', namespace: VM_NS, ownerReferences: [{ apiVersion: 'kubevirt.io/v1', kind: 'VirtualMachine', name: VM_NAME, uid: VM_UID, controller: true }] },
      spec: {},
      status: { phase: phase as 'Succeeded' },
    });

    test('not in the cache: the apiserver is asked first; absent there too, it is created and the VMI waits', async () => {
      const h = harness({ vms: [vm] });
      await reconcileVmKey(kindKey('vm', VM_NS, VM_NAME), h.deps);
      expect(h.reads).toEqual([`dv ${VM_NS}/root`]);
      expect(types(h.applied)).toContain('createDataVolume');
      expect(types(h.applied)).not.toContain('createVmi');
    });

    test('created but not cached yet: the apiserver\'s copy counts, nothing is created twice', async () => {
      const h = harness({ vms: [vm], apiDvs: [dv('ImportInProgress')] });
      await reconcileVmKey(kindKey('vm', VM_NS, VM_NAME), h.deps);
      expect(types(h.applied)).not.toContain('createDataVolume');
      expect(types(h.applied)).not.toContain('createVmi');
    });

    test('cached and Succeeded: no apiserver read, the VMI is created', async () => {
      const h = harness({ vms: [vm], dvs: [dv('Succeeded')] });
      await reconcileVmKey(kindKey('vm', VM_NS, VM_NAME), h.deps);
      expect(h.reads).toEqual([]);
      expect(types(h.applied)).toContain('createVmi');
    });
  });

  test('a running launcher not yet asked: /status is scraped at the pod IP and port, kept by pod UID, and the VMI looked at again at once', async () => {
    const h = harness({ vmis: [vmiIn(VmiPhase.Scheduled, { finalizers: [FOREGROUND_FINALIZER] }) as VmiObject], pods: [runningPod()], scrape: { accel: 'tcg' } });
    expect(await reconcileVmKey(kindKey('vmi', VM_NS, VM_NAME), h.deps)).toEqual({ requeueAfterMs: 0 });
    expect(h.scrapes).toEqual([`${POD_IP}:${LAUNCHER_CONFIG.launcherStatusPort}`]);
    expect(h.reports.get(POD_UID)).toEqual({ accel: 'tcg' });
  });

  test('a launcher that does not answer /status: no report, no immediate requeue', async () => {
    const h = harness({ vmis: [vmiIn(VmiPhase.Scheduled, { finalizers: [FOREGROUND_FINALIZER] }) as VmiObject], pods: [runningPod()] });
    expect(await reconcileVmKey(kindKey('vmi', VM_NS, VM_NAME), h.deps)).toEqual({});
    expect(h.reports.size).toBe(0);
  });

  test('a started VMI whose pod the cache has not seen: the apiserver is asked before "no pod" counts', async () => {
    const h = harness({ vmis: [vmiIn(VmiPhase.Running, { finalizers: [FOREGROUND_FINALIZER] }) as VmiObject], apiPods: [runningPod()], reports: new Map([[POD_UID, { accel: 'kvm' }]]) });
    await reconcileVmKey(kindKey('vmi', VM_NS, VM_NAME), h.deps);
    expect(h.reads).toEqual([`${VM_NS}/${launcherPodName(makeVmi())}`]);
    // The pod was found: the VMI is not failed for a missing pod.
    const status = h.applied.find((a) => a.action.type === 'patchStatus')?.action as Extract<VmiAction, { type: 'patchStatus' }> | undefined;
    expect(status?.status.phase ?? VmiPhase.Running).toBe(VmiPhase.Running);
  });

  test('a pending VMI without a pod: no apiserver read (nothing was started)', async () => {
    const h = harness({ vmis: [vmiIn(VmiPhase.Pending, { finalizers: [FOREGROUND_FINALIZER] }) as VmiObject] });
    await reconcileVmKey(kindKey('vmi', VM_NS, VM_NAME), h.deps);
    expect(h.reads).toEqual([]);
  });
});

describe('liveReportFromStatus (the launcher’s GET /status body, through the contract codec)', () => {
  test.each<[string, string, LauncherReport | undefined]>([
    ['running under TCG', encodeLauncherStatusBody({ phase: 'Running', domainState: 'running', accel: 'tcg', timings: {} }), { accel: 'tcg' }],
    ['running under KVM', encodeLauncherStatusBody({ phase: 'Running', accel: 'kvm', timings: {} }), { accel: 'kvm' }],
    ['starting, no accelerator yet', encodeLauncherStatusBody({ phase: 'Starting', timings: {} }), undefined],
    ['no phase: not the launcher’s body', JSON.stringify({ accel: 'tcg' }), undefined],
    ['an unknown accelerator', JSON.stringify({ phase: 'Running', accel: 'hvf' }), undefined],
    ['not JSON (a proxy’s error page)', '<html>bad gateway</html>', undefined],
    ['null', 'null', undefined],
  ])('%s', (_name, body, expected) => {
    expect(liveReportFromStatus(body)).toEqual(expected);
  });
});

describe('launcherReport', () => {
  const message = encodeLauncherStatus({ phase: 'Failed', reason: 'Crashed', message: 'qemu exited', accel: 'kvm' });
  test.each<[string, V1Pod | undefined, LauncherReport | undefined, LauncherReport | undefined]>([
    ['no pod', undefined, { accel: 'tcg' }, undefined],
    ['running: what it said live', runningPod(), { accel: 'tcg' }, { accel: 'tcg' }],
    ['ended: the termination message over the live report', runningPod({ terminated: message }), { accel: 'tcg' }, { phase: 'Failed', reason: 'Crashed', message: 'qemu exited', accel: 'kvm' }],
    ['ended with a log tail, not the codec’s JSON: the live report', runningPod({ terminated: 'panic: oops' }), { accel: 'tcg' }, { accel: 'tcg' }],
  ])('%s', (_name, pod, live, expected) => {
    expect(launcherReport(pod, live)).toEqual(expected);
  });
});

describe('keys', () => {
  test('namespace/name and kind:namespace/name round trips', () => {
    expect(splitKey('ns/name')).toEqual(['ns', 'name']);
    expect(splitKindKey(kindKey('vmi', 'ns', 'a'))).toEqual({ kind: 'vmi', namespace: 'ns', name: 'a' });
    expect(objectKey({ metadata: { namespace: 'ns', name: 'a' } })).toBe('ns/a');
    expect(objectKey({ metadata: { name: 'a' } })).toBeUndefined();
  });
});
