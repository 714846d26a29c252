/** planDataVolume: the DataVolume and its PVC → actions, as tables. No clients, no clock. */

import { describe, expect, test } from '@jest/globals';
import type { V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { buildClaim } from '../../controller/datavolume/claim.js';
import { type DvAction, type DvPlan, planDataVolume } from '../../controller/datavolume/plan.js';
import { Annotation } from '../../src/api/cdi.js';
import { type DataVolume, type DataVolumeSpec, type DataVolumeStatus, DvAnnotation, requiredSpace, storageClaimSpec } from '../../src/api/datavolume.js';
import { MiB } from '../../src/quantity.js';

const NOW = Date.parse('2026-12-01T10:00:00.000Z');
const T0 = '2026-12-01T09:00:00.000Z';
const DV_UID = 'dv-uid-1';
const URL = 'https://images.example/fedora.qcow2';
const cfg = { filesystemOverhead: 0.06 };
const STORAGE = { storage: { resources: { requests: { storage: '1Gi' } } } };

function makeDv(spec: DataVolumeSpec = { source: { http: { url: URL } }, ...STORAGE }, o: { status?: DataVolumeStatus; annotations?: Record<string, string>; deleting?: boolean } = {}): DataVolume {
  return {
    apiVersion: 'cdi.kubevirt.io/v1beta1',
    kind: 'DataVolume',
    metadata: {
      name: 'fedora',
      namespace: 'vms',
      uid: DV_UID,
      labels: { team: 'a' },
      ...(o.annotations ? { annotations: o.annotations } : {}),
      ...(o.deleting ? { deletionTimestamp: new Date(NOW) } : {}),
    },
    spec,
    ...(o.status ? { status: o.status } : {}),
  };
}

/** The PVC the DataVolume created, with the import controller's annotations added. */
function ownPvc(annotations: Record<string, string> = {}, phase?: 'Pending' | 'Bound' | 'Lost'): V1PersistentVolumeClaim {
  const pvc = buildClaim(makeDv(), cfg.filesystemOverhead);
  return { ...pvc, metadata: { ...pvc.metadata, resourceVersion: '7', annotations: { ...pvc.metadata?.annotations, ...annotations } }, ...(phase ? { status: { phase } } : {}) };
}

function foreignPvc(annotations: Record<string, string> = {}, owners: V1PersistentVolumeClaim['metadata'] = {}): V1PersistentVolumeClaim {
  return { apiVersion: 'v1', kind: 'PersistentVolumeClaim', metadata: { name: 'fedora', namespace: 'vms', uid: 'pvc-x', resourceVersion: '3', annotations, ...owners }, spec: {} };
}

const plan = (dv: DataVolume, pvc?: V1PersistentVolumeClaim): DvPlan => planDataVolume({ dv, ...(pvc ? { pvc } : {}), now: NOW }, cfg);
const types = (p: DvPlan) => p.actions.map((a) => a.type);
const statusOf = (p: DvPlan): DataVolumeStatus => (p.actions.find((a) => a.type === 'patchStatus') as Extract<DvAction, { type: 'patchStatus' }>).status;
const conditionsOf = (s: DataVolumeStatus) => Object.fromEntries((s.conditions ?? []).map((c) => [c.type, [c.status, c.reason ?? '', c.message ?? '']]));
const events = (p: DvPlan) => p.actions.filter((a): a is Extract<DvAction, { type: 'event' }> => a.type === 'event').map((e) => [e.eventType, e.reason, e.message]);
const createdPvc = (p: DvPlan) => (p.actions.find((a) => a.type === 'createPvc') as Extract<DvAction, { type: 'createPvc' }>).pvc;

describe('a new DataVolume: the PVC it creates', () => {
  test('same name, owned by the DataVolume (controller), CDI\'s import annotations, status Pending with the claim name', () => {
    const p = plan(makeDv(undefined, { annotations: { [Annotation.RetainAfterCompletion]: 'true', [DvAnnotation.BindImmediate]: 'true', 'kubectl.kubernetes.io/last-applied-configuration': '{}' } }));
    expect(types(p)).toEqual(['createPvc', 'patchStatus']);
    const pvc = createdPvc(p);
    expect(pvc.metadata?.name).toBe('fedora');
    expect(pvc.metadata?.ownerReferences).toEqual([{ apiVersion: 'cdi.kubevirt.io/v1beta1', kind: 'DataVolume', name: 'fedora', uid: DV_UID, controller: true, blockOwnerDeletion: true }]);
    expect(pvc.metadata?.labels).toEqual({ team: 'a', app: 'containerized-data-importer' });
    expect(pvc.metadata?.annotations).toEqual({
      [Annotation.Source]: 'http',
      [Annotation.Endpoint]: URL,
      [Annotation.ContentType]: 'kubevirt',
      [Annotation.PreallocationRequested]: 'false',
      [Annotation.PodRestarts]: '0',
      [DvAnnotation.CreatedForDataVolume]: DV_UID,
      // The user's annotations pass, as in CDI; kubectl's bookkeeping does not.
      [Annotation.RetainAfterCompletion]: 'true',
      [DvAnnotation.BindImmediate]: 'true',
    });
    const status = statusOf(p);
    expect(status).toMatchObject({ phase: 'Pending', progress: 'N/A', restartCount: 0, claimName: 'fedora' });
    expect(conditionsOf(status)).toEqual({ Ready: ['False', '', ''], Bound: ['False', 'Pending', 'PVC fedora Pending'], Running: ['False', '', ''] });
    expect(status.conditions?.every((c) => c.lastTransitionTime === new Date(NOW).toISOString())).toBe(true);
  });

  test.each<[string, DataVolumeSpec['source'], Record<string, string>]>([
    [
      'http with everything',
      { http: { url: URL, secretRef: 'creds', certConfigMap: 'ca', checksum: 'sha256:ab', insecureSkipVerify: true } },
      { [Annotation.Source]: 'http', [Annotation.Endpoint]: URL, [Annotation.SecretName]: 'creds', [Annotation.CertConfigMap]: 'ca', [Annotation.Checksum]: 'sha256:ab', [Annotation.InsecureSkipVerify]: 'true' },
    ],
    [
      'http with extra headers and their Secrets (CDI\'s numbered keys)',
      { http: { url: URL, extraHeaders: ['Authorization: Bearer t', 'X-A: 1'], secretExtraHeaders: ['tokens'] } },
      {
        [Annotation.Source]: 'http',
        [`${Annotation.ExtraHeaders}.0`]: 'Authorization: Bearer t',
        [`${Annotation.ExtraHeaders}.1`]: 'X-A: 1',
        [`${Annotation.SecretExtraHeaders}.0`]: 'tokens',
      },
    ],
    ['s3', { s3: { url: 'https://s3.example/b/k', secretRef: 'keys' } }, { [Annotation.Source]: 's3', [Annotation.Endpoint]: 'https://s3.example/b/k', [Annotation.SecretName]: 'keys' }],
    [
      'registry',
      { registry: { url: 'docker://quay.io/x/y:1', pullMethod: 'pod', certConfigMap: 'ca' } },
      { [Annotation.Source]: 'registry', [Annotation.Endpoint]: 'docker://quay.io/x/y:1', [Annotation.CertConfigMap]: 'ca', [DvAnnotation.RegistryImportMethod]: 'pod' },
    ],
    ['blank (CDI writes none)', { blank: {} }, { [Annotation.Source]: 'none' }],
  ])('%s → the source annotations', (_, source, expected) => {
    const a = createdPvc(plan(makeDv({ source, ...STORAGE }))).metadata?.annotations ?? {};
    expect(a).toMatchObject(expected);
    if (!source?.http?.insecureSkipVerify) expect(a[Annotation.InsecureSkipVerify]).toBeUndefined();
  });

  test('contentType, preallocation and priorityClassName reach the PVC', () => {
    const a = createdPvc(plan(makeDv({ source: { http: { url: URL } }, ...STORAGE, contentType: 'archive', preallocation: true, priorityClassName: 'high' }))).metadata?.annotations;
    expect(a).toMatchObject({ [Annotation.ContentType]: 'archive', [Annotation.PreallocationRequested]: 'true', [DvAnnotation.PodPriorityClassName]: 'high' });
  });

  test('spec.pvc is used as given', () => {
    const pvc = { accessModes: ['ReadWriteMany'], volumeMode: 'Block', storageClassName: 'fast', resources: { requests: { storage: '10Gi' } } };
    expect(createdPvc(plan(makeDv({ source: { blank: {} }, pvc }))).spec).toEqual(pvc);
  });

  test.each<[string, DataVolumeSpec['storage'], object]>([
    ['defaults, Filesystem: grown by the overhead', { resources: { requests: { storage: '1Gi' } } }, { accessModes: ['ReadWriteOnce'], volumeMode: 'Filesystem', resources: { requests: { storage: String(Math.ceil(1024 * MiB / 0.94)) } } }],
    ['Block: not grown', { volumeMode: 'Block', resources: { requests: { storage: '1Gi' } } }, { accessModes: ['ReadWriteOnce'], volumeMode: 'Block', resources: { requests: { storage: String(1024 * MiB) } } }],
    [
      'given modes and class kept',
      { accessModes: ['ReadWriteMany'], storageClassName: 'nfs', resources: { requests: { storage: '64Mi' } } },
      { accessModes: ['ReadWriteMany'], volumeMode: 'Filesystem', storageClassName: 'nfs', resources: { requests: { storage: String(Math.ceil(64 * MiB / 0.94)) } } },
    ],
  ])('spec.storage, %s', (_, storage, expected) => {
    expect(createdPvc(plan(makeDv({ source: { blank: {} }, ...(storage ? { storage } : {}) }))).spec).toEqual(expected);
  });

  test('a source Ferry does not run, or a size that does not parse, fails the DataVolume and creates nothing', () => {
    for (const [spec, message] of [
      [{ source: { gcs: { url: 'gs://b/k' } }, ...STORAGE }, 'spec.source.gcs is not supported by Ferry'],
      [{ source: { blank: {} }, storage: { resources: { requests: { storage: 'lots' } } } }, 'not a byte quantity: "lots"'],
    ] as Array<[DataVolumeSpec, string]>) {
      const p = plan(makeDv(spec));
      expect(types(p)).toEqual(['patchStatus', 'event']);
      expect(statusOf(p).phase).toBe('Failed');
      expect(conditionsOf(statusOf(p)).Ready).toEqual(['False', 'InvalidSpec', expect.stringContaining(message)]);
      expect(events(p)[0]?.[1]).toBe('ErrInvalidSpec');
    }
  });

  test('a DataVolume being deleted is left to the garbage collector', () => {
    expect(plan(makeDv(undefined, { deleting: true }), ownPvc()).actions).toEqual([]);
  });
});

describe('the PVC read back into the status', () => {
  const RUNNING = { [Annotation.RunningCondition]: 'true', [Annotation.RunningReason]: 'Pod is running', [Annotation.RunningMessage]: '' };
  test.each<[string, Record<string, string>, 'Pending' | 'Bound' | undefined, Partial<DataVolumeStatus>, Record<string, string[]>, string[] | undefined]>([
    ['no pod yet, PVC pending', {}, undefined, { phase: 'Pending', progress: 'N/A' }, { Bound: ['False', 'Pending', 'PVC fedora Pending'] }, undefined],
    ['no pod yet, PVC bound', {}, 'Bound', { phase: 'PVCBound' }, { Bound: ['True', 'Bound', 'PVC fedora Bound'], Ready: ['False', '', ''] }, undefined],
    [
      'pod pending',
      { [Annotation.PodPhase]: 'Pending', [Annotation.RunningCondition]: 'false', [Annotation.RunningReason]: 'ContainerCreating', [Annotation.RunningMessage]: '' },
      undefined,
      { phase: 'ImportScheduled' },
      { Running: ['False', 'ContainerCreating', ''] },
      ['Normal', 'ImportScheduled', 'Import into fedora scheduled'],
    ],
    [
      'pod running, progress scraped',
      { [Annotation.PodPhase]: 'Running', [Annotation.Progress]: '42.17%', ...RUNNING },
      'Bound',
      { phase: 'ImportInProgress', progress: '42.17%' },
      { Running: ['True', 'Pod is running', ''], Ready: ['False', 'TransferRunning', ''] },
      ['Normal', 'ImportInProgress', 'Import into fedora in progress'],
    ],
    [
      'retried: restarts counted, the last error kept',
      { [Annotation.PodPhase]: 'Pending', [Annotation.PodRestarts]: '2', [Annotation.ErrorCode]: 'SOURCE_UNAVAILABLE', [Annotation.RunningCondition]: 'false', [Annotation.RunningReason]: 'SOURCE_UNAVAILABLE', [Annotation.RunningMessage]: 'HTTP 503 (retry 2 of 5 in 20s)' },
      undefined,
      { phase: 'ImportScheduled', restartCount: 2 },
      { Running: ['False', 'SOURCE_UNAVAILABLE', 'HTTP 503 (retry 2 of 5 in 20s)'] },
      ['Normal', 'ImportScheduled', 'Import into fedora scheduled'],
    ],
    [
      'succeeded',
      { [Annotation.PodPhase]: 'Succeeded', [Annotation.Progress]: '100.0%', [Annotation.RunningCondition]: 'false', [Annotation.RunningReason]: 'Completed', [Annotation.RunningMessage]: 'Import Complete' },
      undefined,
      { phase: 'Succeeded', progress: '100.0%' },
      { Ready: ['True', '', ''], Running: ['False', 'Completed', 'Import Complete'] },
      ['Normal', 'ImportSucceeded', 'Successfully imported into PVC fedora'],
    ],
    [
      'failed permanently: the code leads the Running message',
      { [Annotation.PodPhase]: 'Failed', [Annotation.FatalError]: 'true', [Annotation.ErrorCode]: 'SOURCE_NOT_FOUND', [Annotation.RunningCondition]: 'false', [Annotation.RunningReason]: 'SOURCE_NOT_FOUND', [Annotation.RunningMessage]: 'HTTP 404 from https://images.example/fedora.qcow2' },
      undefined,
      { phase: 'Failed' },
      { Ready: ['False', '', ''], Running: ['False', 'SOURCE_NOT_FOUND', 'SOURCE_NOT_FOUND: HTTP 404 from https://images.example/fedora.qcow2'] },
      ['Warning', 'ErrImportFailed', 'SOURCE_NOT_FOUND: HTTP 404 from https://images.example/fedora.qcow2'],
    ],
  ])('%s', (_, annotations, pvcPhase, status, conditions, event) => {
    const p = plan(makeDv(undefined, { status: { phase: 'Pending', claimName: 'fedora' } }), ownPvc(annotations, pvcPhase));
    expect(p.actions.some((a) => a.type === 'createPvc')).toBe(false);
    expect(statusOf(p)).toMatchObject({ claimName: 'fedora', restartCount: 0, ...status });
    expect(conditionsOf(statusOf(p))).toMatchObject(conditions);
    expect(events(p)).toEqual(event ? [event] : []);
  });

  test('an unchanged PVC gives no actions (the status is level, the times kept)', () => {
    const pvc = ownPvc({ [Annotation.PodPhase]: 'Running', [Annotation.Progress]: '10.00%', ...RUNNING });
    const first = statusOf(plan(makeDv(), pvc));
    const later = planDataVolume({ dv: makeDv(undefined, { status: first }), pvc, now: NOW + 60_000 }, cfg);
    expect(later.actions).toEqual([]);
  });

  test('transition times move with the status, heartbeat times with the reason or message', () => {
    const before: DataVolumeStatus = {
      phase: 'ImportInProgress',
      progress: '10.00%',
      restartCount: 0,
      claimName: 'fedora',
      conditions: [
        { type: 'Ready', status: 'False', reason: 'TransferRunning', lastTransitionTime: T0, lastHeartbeatTime: T0 },
        { type: 'Bound', status: 'False', reason: 'Pending', message: 'PVC fedora Pending', lastTransitionTime: T0, lastHeartbeatTime: T0 },
        { type: 'Running', status: 'True', reason: 'Pod is running', lastTransitionTime: T0, lastHeartbeatTime: T0 },
      ],
    };
    const now = new Date(NOW).toISOString();
    const p = plan(makeDv(undefined, { status: before }), ownPvc({ [Annotation.PodPhase]: 'Running', [Annotation.Progress]: '55.00%', ...RUNNING }, 'Bound'));
    const byType = Object.fromEntries((statusOf(p).conditions ?? []).map((c) => [c.type, [c.lastTransitionTime, c.lastHeartbeatTime]]));
    expect(byType).toEqual({ Ready: [T0, T0], Bound: [now, now], Running: [T0, T0] });
    expect(statusOf(p).progress).toBe('55.00%');
    // Progress alone is no phase change: no event.
    expect(events(p)).toEqual([]);
  });
});

describe('a PVC that is not (yet) the DataVolume\'s', () => {
  test('deleted underneath: reported, not imported again', () => {
    const p = plan(makeDv(undefined, { status: { phase: 'Succeeded', claimName: 'fedora', progress: '100.0%' } }));
    expect(types(p)).toEqual(['patchStatus', 'event']);
    expect(statusOf(p).phase).toBe('Failed');
    expect(conditionsOf(statusOf(p)).Bound).toEqual(['False', 'NotFound', 'PVC fedora was deleted; delete and re-create the DataVolume to import again']);
    expect(events(p)[0]?.slice(0, 2)).toEqual(['Warning', 'ErrClaimLost']);
  });

  test('someone else\'s PVC: a conflict, the PVC untouched', () => {
    const p = plan(makeDv(), foreignPvc({ [Annotation.Endpoint]: URL }));
    expect(types(p)).toEqual(['patchStatus', 'event']);
    expect(statusOf(p).phase).toBe('Pending');
    expect(conditionsOf(statusOf(p)).Bound?.slice(0, 2)).toEqual(['False', 'ClaimExists']);
    expect(events(p)[0]?.slice(0, 2)).toEqual(['Warning', 'ErrClaimNotValid']);
  });

  test('populatedFor this DataVolume: adopted as already populated (Succeeded, no import)', () => {
    const p = plan(makeDv(), foreignPvc({ [DvAnnotation.PopulatedFor]: 'fedora' }));
    expect(types(p)).toEqual(['adoptPvc', 'patchStatus', 'event']);
    expect(p.actions[0]).toEqual({ type: 'adoptPvc', name: 'fedora', resourceVersion: '3', ownerReferences: [expect.objectContaining({ uid: DV_UID, controller: true })] });
    expect(statusOf(p)).toMatchObject({ phase: 'Succeeded', progress: '100.0%' });
  });

  test('allowClaimAdoption: a PVC with an import request is adopted and its import followed', () => {
    const dv = makeDv(undefined, { annotations: { [DvAnnotation.AllowClaimAdoption]: 'true' } });
    const p = plan(dv, foreignPvc({ [Annotation.Endpoint]: URL, [Annotation.PodPhase]: 'Running', [Annotation.RunningCondition]: 'true' }, { ownerReferences: [{ apiVersion: 'v1', kind: 'ConfigMap', name: 'x', uid: 'cm' }] }));
    expect(types(p)).toEqual(['adoptPvc', 'patchStatus', 'event']);
    expect((p.actions[0] as Extract<DvAction, { type: 'adoptPvc' }>).ownerReferences.map((o) => o.uid)).toEqual(['cm', DV_UID]);
    expect(statusOf(p).phase).toBe('ImportInProgress');
  });

  test('never a PVC another controller owns, adoption or not', () => {
    const dv = makeDv(undefined, { annotations: { [DvAnnotation.AllowClaimAdoption]: 'true' } });
    const p = plan(dv, foreignPvc({}, { ownerReferences: [{ apiVersion: 'cdi.kubevirt.io/v1beta1', kind: 'DataVolume', name: 'fedora', uid: 'an-older-dv', controller: true }] }));
    expect(types(p)).toEqual(['patchStatus', 'event']);
    expect(conditionsOf(statusOf(p)).Bound?.[1]).toBe('ClaimExists');
  });
});

describe('sizing (CDI\'s GetRequiredSpace)', () => {
  test.each<[number, number, number]>([
    [1024 * MiB, 0.06, Math.ceil((1024 * MiB) / 0.94)],
    [1.5 * MiB, 0.06, Math.ceil((2 * MiB) / 0.94)],
    [1.5 * MiB, 0, 2 * MiB],
    [64 * MiB, 0.1, Math.ceil((64 * MiB) / 0.9)],
  ])('%d bytes with overhead %d → %d', (size, overhead, expected) => {
    expect(requiredSpace(size, overhead)).toBe(expected);
  });

  test('the defaults rule', () => {
    expect(storageClaimSpec({}, 0.06)).toEqual({ accessModes: ['ReadWriteOnce'], volumeMode: 'Filesystem' });
  });
});
