/**
 * VM dataVolumeTemplates and `dataVolume:` volumes in the pure plans: the DataVolume a template
 * becomes, create / adopt / report per template, the VMI held back until every one Succeeded, the
 * VM's printable status and DataVolumesReady condition, and the VMI waiting for or failing with
 * its DataVolumes (KubeVirt's handleDataVolumes, setPrintableStatus, aggregateDataVolumesConditions).
 */

import { describe, expect, test } from '@jest/globals';
import { launcherPodName } from '../../controller/vm/launcher-pod.js';
import { dataVolumeFromTemplate, dataVolumesReady, phaseState, templateState } from '../../controller/vm/datavolumes.js';
import { DEFAULT_VM_CONFIG, planVm, type VmAction, type VmPlan } from '../../controller/vm/vm-plan.js';
import { planVmi, type VmiAction, type VmiPlan } from '../../controller/vm/vmi-plan.js';
import type { DataVolume, DataVolumeStatus } from '../../src/api/datavolume.js';
import { type DataVolumeTemplateSpec, RunStrategy, type VirtualMachine, type VirtualMachineInstance, VmiPhase, type VmStatus } from '../../src/api/kubevirt.js';
import { LAUNCHER_CONFIG, makeVm, makeVmi, makeVmPvc, VM_NAME, VM_NS, VM_UID, vmiSpec } from './helpers.js';

const NOW = Date.parse('2024-05-01T12:00:00.000Z');
const ROOT = 'root';

const TEMPLATE: DataVolumeTemplateSpec = {
  metadata: { name: ROOT, labels: { os: 'fedora' }, annotations: { 'cdi.kubevirt.io/storage.bind.immediate.requested': 'true' } },
  spec: { source: { http: { url: 'https://images.example/fedora.qcow2' } }, storage: { resources: { requests: { storage: '10Gi' } } } },
};

/** The default VM with the template, its root disk on the template's DataVolume. */
function dvVm(o: { runStrategy?: RunStrategy; templates?: DataVolumeTemplateSpec[]; status?: VmStatus; priorityClassName?: string } = {}): VirtualMachine {
  const base = makeVm({ runStrategy: o.runStrategy ?? RunStrategy.Always, ...(o.status ? { status: o.status } : {}) });
  return {
    ...base,
    spec: {
      ...base.spec,
      template: {
        metadata: { labels: { app: VM_NAME } },
        spec: vmiSpec({ volumes: [{ name: 'rootdisk', dataVolume: { name: ROOT } }], ...(o.priorityClassName ? { priorityClassName: o.priorityClassName } : {}) }),
      },
      dataVolumeTemplates: o.templates ?? [TEMPLATE],
    },
  };
}

type Owner = 'vm' | 'none' | 'other';
function dv(status: DataVolumeStatus | undefined, o: { owner?: Owner; deleting?: boolean; name?: string } = {}): DataVolume {
  const owner = o.owner ?? 'vm';
  return {
    apiVersion: 'cdi.kubevirt.io/v1beta1',
    kind: 'DataVolume',
    metadata: {
      name: o.name ?? ROOT,
      namespace: VM_NS,
      resourceVersion: '7',
      ...(owner === 'vm' ? { ownerReferences: [{ apiVersion: 'kubevirt.io/v1', kind: 'VirtualMachine', name: VM_NAME, uid: VM_UID, controller: true, blockOwnerDeletion: true }] } : {}),
      ...(owner === 'other' ? { ownerReferences: [{ apiVersion: 'kubevirt.io/v1', kind: 'VirtualMachine', name: 'db', uid: 'other-uid', controller: true }] } : {}),
      ...(o.deleting ? { deletionTimestamp: new Date(NOW - 1000) } : {}),
    },
    spec: TEMPLATE.spec,
    ...(status ? { status } : {}),
  };
}

const importing: DataVolumeStatus = { phase: 'ImportInProgress', progress: '45.00%' };
const succeeded: DataVolumeStatus = { phase: 'Succeeded', progress: '100.0%' };
const failed: DataVolumeStatus = {
  phase: 'Failed',
  conditions: [
    { type: 'Ready', status: 'False' },
    { type: 'Running', status: 'False', reason: 'SOURCE_NOT_FOUND', message: 'SOURCE_NOT_FOUND: HTTP 404 from https://images.example/fedora.qcow2' },
  ],
};

const dvs = (entry?: DataVolume): Map<string, DataVolume | undefined> => new Map([[ROOT, entry]]);
const plan = (vm: VirtualMachine, dataVolumes: Map<string, DataVolume | undefined>, vmi?: VirtualMachineInstance): VmPlan =>
  planVm({ vm, ...(vmi ? { vmi } : {}), dataVolumes, now: NOW }, DEFAULT_VM_CONFIG);
const types = (p: { actions: readonly { type: string }[] }): string[] => p.actions.map((a) => a.type);
const of = <T extends VmAction['type']>(p: VmPlan, type: T): Array<Extract<VmAction, { type: T }>> => p.actions.filter((a): a is Extract<VmAction, { type: T }> => a.type === type);
const statusOf = (vm: VirtualMachine, p: VmPlan): VmStatus => of(p, 'patchVmStatus')[0]?.status ?? vm.status ?? {};
const dvCondition = (s: VmStatus | { conditions?: VmStatus['conditions'] }) => s.conditions?.find((c) => c.type === 'DataVolumesReady');

describe('dataVolumeFromTemplate (KubeVirt\'s CreateDataVolumeManifest)', () => {
  test('named as the template, in the VM\'s namespace, owned by the VM, labelled created-by, claim adoption allowed', () => {
    const made = dataVolumeFromTemplate(dvVm(), TEMPLATE);
    expect(made).toEqual({
      apiVersion: 'cdi.kubevirt.io/v1beta1',
      kind: 'DataVolume',
      metadata: {
        name: ROOT,
        namespace: VM_NS,
        labels: { os: 'fedora', 'kubevirt.io/created-by': VM_UID },
        annotations: { 'cdi.kubevirt.io/storage.bind.immediate.requested': 'true', 'cdi.kubevirt.io/allowClaimAdoption': 'true' },
        ownerReferences: [{ apiVersion: 'kubevirt.io/v1', kind: 'VirtualMachine', name: VM_NAME, uid: VM_UID, controller: true, blockOwnerDeletion: true }],
      },
      spec: TEMPLATE.spec,
    });
  });

  test.each<[string, string | undefined, string | undefined, string | undefined]>([
    ['neither names one', undefined, undefined, undefined],
    ['the VMI\'s priorityClassName when the template names none', undefined, 'vm-high', 'vm-high'],
    ['the template\'s own wins', 'dv-low', 'vm-high', 'dv-low'],
  ])('priorityClassName: %s', (_name, own, vmi, expected) => {
    const template = { ...TEMPLATE, spec: { ...TEMPLATE.spec, ...(own ? { priorityClassName: own } : {}) } };
    expect(dataVolumeFromTemplate(dvVm({ ...(vmi ? { priorityClassName: vmi } : {}) }), template).spec.priorityClassName).toBe(expected);
  });
});

describe('templateState and phaseState', () => {
  test.each<[string, DataVolume | undefined, string]>([
    ['absent', undefined, 'missing'],
    ['no controller owner', dv(importing, { owner: 'none' }), 'orphan'],
    ['another VM\'s', dv(succeeded, { owner: 'other' }), 'foreign'],
    ['the VM\'s, importing', dv(importing), 'importing'],
    ['the VM\'s, no phase yet', dv(undefined), 'importing'],
    ['the VM\'s, WaitForFirstConsumer', dv({ phase: 'WaitForFirstConsumer' }), 'waitingForConsumer'],
    ['the VM\'s, Succeeded', dv(succeeded), 'succeeded'],
    ['the VM\'s, Failed', dv(failed), 'failed'],
    ['the VM\'s, being deleted', dv(succeeded, { deleting: true }), 'deleting'],
  ])('%s', (_name, observed, kind) => {
    expect(templateState(dvVm(), ROOT, observed).kind).toBe(kind);
  });

  test('a failure carries the Running condition\'s message (the error code first)', () => {
    expect(phaseState(ROOT, dv(failed))).toEqual({ kind: 'failed', name: ROOT, message: 'SOURCE_NOT_FOUND: HTTP 404 from https://images.example/fedora.qcow2' });
  });

  test('DataVolumesReady: KubeVirt\'s reasons, a failure before a conflict before waiting', () => {
    expect(dataVolumesReady([])).toBeUndefined();
    expect(dataVolumesReady([{ kind: 'succeeded', name: 'a' }])).toEqual({ status: 'True', reason: 'AllDVsReady', message: 'All of the VMI\'s DVs are bound and ready' });
    expect(dataVolumesReady([{ kind: 'succeeded', name: 'a' }, { kind: 'importing', name: 'b', phase: 'ImportInProgress', progress: '10.00%' }])).toEqual({
      status: 'False',
      reason: 'NotAllDVsReady',
      message: 'Not all of the VMI\'s DVs are ready: DataVolume b is ImportInProgress (10.00%)',
    });
    expect(dataVolumesReady([{ kind: 'foreign', name: 'a', owner: 'VirtualMachine db' }, { kind: 'failed', name: 'b', message: 'boom' }])?.reason).toBe('FailedDataVolumeImport');
    expect(dataVolumesReady([{ kind: 'importing', name: 'b', phase: 'Pending' }, { kind: 'foreign', name: 'a', owner: 'VirtualMachine db' }])?.reason).toBe('DataVolumeNotOwned');
  });
});

describe('planVm with dataVolumeTemplates', () => {
  test.each<[string, RunStrategy, DataVolume | undefined, string[], string, string | undefined]>([
    // name, strategy, DataVolume, actions, printableStatus, DataVolumesReady reason
    ['missing, Always: created, the VMI waits', RunStrategy.Always, undefined, ['createDataVolume', 'event', 'patchVmStatus'], 'Provisioning', 'NotAllDVsReady'],
    ['missing, Halted: created all the same (KubeVirt creates DataVolumes at once)', RunStrategy.Halted, undefined, ['createDataVolume', 'event', 'patchVmStatus'], 'Stopped', 'NotAllDVsReady'],
    ['importing: the VMI waits', RunStrategy.Always, dv(importing), ['patchVmStatus'], 'Provisioning', 'NotAllDVsReady'],
    ['importing, Halted: Provisioning too (as KubeVirt)', RunStrategy.Halted, dv(importing), ['patchVmStatus'], 'Provisioning', 'NotAllDVsReady'],
    ['WaitForFirstConsumer: the VMI is created (its pod is the first consumer)', RunStrategy.Always, dv({ phase: 'WaitForFirstConsumer' }), ['createVmi', 'event', 'patchVmStatus'], 'WaitingForVolumeBinding', 'NotAllDVsReady'],
    ['Succeeded: the VMI is created', RunStrategy.Always, dv(succeeded), ['createVmi', 'event', 'patchVmStatus'], 'Stopped', 'AllDVsReady'],
    ['Failed: no VMI, DataVolumeError and a warning', RunStrategy.Always, dv(failed), ['event', 'patchVmStatus'], 'DataVolumeError', 'FailedDataVolumeImport'],
    ['orphaned: adopted, the VMI waits for the adoption', RunStrategy.Always, dv(succeeded, { owner: 'none' }), ['adoptDataVolume', 'patchVmStatus'], 'Provisioning', 'NotAllDVsReady'],
    ['another controller\'s: reported, neither adopted nor used', RunStrategy.Always, dv(succeeded, { owner: 'other' }), ['event', 'patchVmStatus'], 'DataVolumeError', 'DataVolumeNotOwned'],
    ['being deleted: waits to create it again', RunStrategy.Always, dv(failed, { deleting: true }), ['patchVmStatus'], 'Provisioning', 'NotAllDVsReady'],
  ])('%s', (_name, runStrategy, observed, actions, printableStatus, reason) => {
    const vm = dvVm({ runStrategy });
    const p = plan(vm, dvs(observed));
    expect(types(p)).toEqual(actions);
    const status = statusOf(vm, p);
    expect(status.printableStatus).toBe(printableStatus);
    expect(dvCondition(status)?.reason).toBe(reason);
  });

  test('the events: KubeVirt\'s reasons, the failure\'s error code in the message', () => {
    expect(of(plan(dvVm(), dvs(undefined)), 'event')).toEqual([{ type: 'event', eventType: 'Normal', reason: 'SuccessfulDataVolumeCreate', message: 'Created DataVolume root' }]);
    expect(of(plan(dvVm(), dvs(dv(failed))), 'event')).toEqual([
      { type: 'event', eventType: 'Warning', reason: 'FailedDataVolumeImport', message: 'DataVolume root failed: SOURCE_NOT_FOUND: HTTP 404 from https://images.example/fedora.qcow2' },
    ]);
    expect(of(plan(dvVm(), dvs(dv(succeeded, { owner: 'other' }))), 'event')[0]).toMatchObject({ eventType: 'Warning', reason: 'FailedDataVolumeCreate', message: expect.stringContaining('controlled by VirtualMachine db') });
  });

  test('level-triggered: a failure already reported is not announced again, nor the status patched', () => {
    const first = plan(dvVm(), dvs(dv(failed)));
    const vm = dvVm({ status: statusOf(dvVm(), first) });
    expect(types(plan(vm, dvs(dv(failed))))).toEqual([]);
  });

  test('adoption makes the VM the controller owner at the resourceVersion seen', () => {
    const orphan = dv(succeeded, { owner: 'none' });
    expect(of(plan(dvVm(), dvs(orphan)), 'adoptDataVolume')).toEqual([
      { type: 'adoptDataVolume', name: ROOT, resourceVersion: '7', ownerReferences: [{ apiVersion: 'kubevirt.io/v1', kind: 'VirtualMachine', name: VM_NAME, uid: VM_UID, controller: true, blockOwnerDeletion: true }] },
    ]);
  });

  test('two templates: each created once; the VMI waits for both', () => {
    const second: DataVolumeTemplateSpec = { metadata: { name: 'data' }, spec: { source: { blank: {} }, storage: { resources: { requests: { storage: '1Gi' } } } } };
    const vm = dvVm({ templates: [TEMPLATE, second, TEMPLATE] });
    const p = plan(vm, new Map([[ROOT, dv(succeeded)], ['data', undefined]]));
    expect(of(p, 'createDataVolume').map((a) => a.dataVolume.metadata.name)).toEqual(['data']);
    expect(types(p)).not.toContain('createVmi');
    const ready = plan(vm, new Map([[ROOT, dv(succeeded)], ['data', dv(succeeded, { name: 'data' })]]));
    expect(types(ready)).toContain('createVmi');
  });

  test('a running VMI is left alone while a DataVolume changes (only the start waits)', () => {
    const vmi = { ...makeVmi(), status: { phase: VmiPhase.Running, conditions: [{ type: 'Ready', status: 'True' as const }] } };
    const vmiOwned = { ...vmi, metadata: { ...vmi.metadata, ownerReferences: [{ apiVersion: 'kubevirt.io/v1', kind: 'VirtualMachine', name: VM_NAME, uid: VM_UID, controller: true }] } };
    const p = plan(dvVm(), dvs(dv(failed)), vmiOwned);
    expect(types(p)).not.toContain('deleteVmi');
    expect(statusOf(dvVm(), p).printableStatus).toBe('Running');
  });

  test('a VM being deleted creates nothing', () => {
    const base = dvVm();
    const vm = { ...base, metadata: { ...base.metadata, deletionTimestamp: '2024-05-01T11:00:00.000Z' } };
    expect(types(plan(vm, dvs(undefined)))).toEqual([]);
  });

  test('a `dataVolume:` volume no template creates: reported, not created, not waited for by the VM', () => {
    const vm = dvVm({ templates: [] });
    expect(types(plan(vm, dvs(dv(importing, { owner: 'none' }))))).toEqual(['createVmi', 'event', 'patchVmStatus']);
    const p = plan(vm, dvs(dv(failed, { owner: 'none' })));
    expect(statusOf(vm, p).printableStatus).toBe('DataVolumeError');
  });
});

describe('planVmi with `dataVolume:` volumes', () => {
  const vmi = makeVmi({ spec: vmiSpec({ volumes: [{ name: 'rootdisk', dataVolume: { name: ROOT } }] }) });
  const claims = new Map([[ROOT, makeVmPvc(ROOT)]]);
  const planFor = (observed: DataVolume | undefined): VmiPlan => planVmi({ vmi, claims, dataVolumes: dvs(observed), now: NOW }, LAUNCHER_CONFIG);
  const patched = (p: VmiPlan) => (p.actions.find((a): a is Extract<VmiAction, { type: 'patchStatus' }> => a.type === 'patchStatus'))?.status;

  test.each<[string, DataVolume | undefined, string, string | undefined, string | undefined]>([
    // name, DataVolume, phase, PodScheduled reason, DataVolumesReady reason
    ['importing: Pending, no pod', dv(importing), 'Pending', 'DataVolumeNotReady', 'NotAllDVsReady'],
    ['being deleted: Pending', dv(succeeded, { deleting: true }), 'Pending', 'DataVolumeNotReady', 'NotAllDVsReady'],
    ['Succeeded: the pod is created', dv(succeeded), 'Scheduling', undefined, 'AllDVsReady'],
    ['Failed: the VMI fails', dv(failed), 'Failed', undefined, 'FailedDataVolumeImport'],
    ['no DataVolume of the name: the PVC of the name is used (as KubeVirt)', undefined, 'Scheduling', undefined, undefined],
  ])('%s', (_name, observed, phase, scheduledReason, readyReason) => {
    const p = planFor(observed);
    const status = patched(p);
    expect(status?.phase).toBe(phase);
    expect(status?.conditions?.find((c) => c.type === 'PodScheduled')?.reason).toBe(scheduledReason);
    expect(status?.conditions?.find((c) => c.type === 'DataVolumesReady')?.reason).toBe(readyReason);
    expect(types(p).includes('createPod')).toBe(phase === 'Scheduling');
  });

  test('a failed DataVolume: reason FailedDataVolumeImport, the error in the Ready condition and a warning', () => {
    const p = planFor(dv(failed));
    const status = patched(p);
    expect(status?.reason).toBe('FailedDataVolumeImport');
    expect(status?.conditions?.find((c) => c.type === 'Ready')).toMatchObject({ status: 'False', reason: 'FailedDataVolumeImport', message: expect.stringContaining('SOURCE_NOT_FOUND') });
    expect(p.actions.find((a) => a.type === 'event')).toMatchObject({ eventType: 'Warning', reason: 'FailedDataVolumeImport' });
  });

  test('the launcher pod mounts the DataVolume\'s PVC', () => {
    const pod = (planFor(dv(succeeded)).actions.find((a) => a.type === 'createPod') as Extract<VmiAction, { type: 'createPod' }>).pod;
    expect(pod.spec?.volumes).toEqual(expect.arrayContaining([expect.objectContaining({ name: 'rootdisk', persistentVolumeClaim: expect.objectContaining({ claimName: ROOT }) })]));
  });

  test('a started VMI does not fail when its DataVolume does later', () => {
    const running = makeVmi({ spec: vmi.spec, status: { phase: VmiPhase.Scheduling }, finalizers: ['kubevirt.io/foregroundDeleteVirtualMachine'] });
    const pod = { metadata: { name: launcherPodName(running), namespace: VM_NS, uid: 'pod-1' }, spec: { containers: [{ name: 'compute' }] }, status: { phase: 'Pending' } };
    const p = planVmi({ vmi: running, pod, claims, dataVolumes: dvs(dv(failed)), now: NOW }, LAUNCHER_CONFIG);
    expect(patched(p)?.phase ?? 'Scheduling').not.toBe('Failed');
  });
});
