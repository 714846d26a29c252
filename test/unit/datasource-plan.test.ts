/** The DataSource Ready condition (controller/datasource/plan.ts): CDI's rule, table-driven, and when a write is planned. */

import { describe, expect, test } from '@jest/globals';
import type { V1PersistentVolumeClaim } from '@kubernetes/client-node';
import type { DataSource } from '../../src/api/datasource.js';
import type { DataVolume } from '../../src/api/datavolume.js';
import { planDataSource, planDataSourceLabels, readyCondition } from '../../controller/datasource/plan.js';

const ds = (status?: DataSource['status']): DataSource =>
  ({ apiVersion: 'cdi.kubevirt.io/v1beta1', kind: 'DataSource', metadata: { name: 'fedora', namespace: 'golden-images' }, spec: { source: { pvc: { name: 'fedora-41' } } }, ...(status ? { status } : {}) }) as DataSource;
const pvc = (phase: string | undefined, annotations: Record<string, string> = {}): V1PersistentVolumeClaim => ({
  metadata: { name: 'fedora-41', namespace: 'golden-images', annotations },
  ...(phase ? { status: { phase } } : {}),
});
const dv = (phase?: string): DataVolume => ({ metadata: { name: 'fedora-41', namespace: 'golden-images' }, spec: {}, ...(phase !== undefined ? { status: { phase } } : {}) }) as unknown as DataVolume;
const importing = (podPhase?: string) => ({ 'cdi.kubevirt.io/storage.import.endpoint': 'http://x/disk.img', ...(podPhase ? { 'cdi.kubevirt.io/storage.pod.phase': podPhase } : {}) });

describe('DataSource Ready', () => {
  test.each([
    ['no PVC, no DataVolume', undefined, undefined, 'False', 'NotFound', 'PVC not found'],
    ['a bare Bound PVC', pvc('Bound'), undefined, 'True', 'Ready', 'DataSource is ready to be consumed'],
    ['a bare Pending PVC (CDI would say Ready; Ferry waits for Bound)', pvc('Pending'), undefined, 'False', 'Pending', 'PVC fedora-41 phase Pending'],
    ['a PVC without status', pvc(undefined), undefined, 'False', 'Pending', 'PVC fedora-41 phase Pending'],
    ['a PVC being deleted', { ...pvc('Bound'), metadata: { ...pvc('Bound').metadata, deletionTimestamp: new Date(0) } }, undefined, 'False', 'Terminating', 'PVC fedora-41 is being deleted'],
    ['a Lost PVC', pvc('Lost'), undefined, 'False', 'Lost', 'PVC fedora-41 phase Lost'],
    ['an import target still running', pvc('Bound', importing('Running')), undefined, 'False', 'Running', 'PVC fedora-41 is being populated (pod phase Running)'],
    ['an import target not started', pvc('Bound', importing()), undefined, 'False', 'Pending', 'PVC fedora-41 is being populated (pod phase Pending)'],
    ['an import target that failed', pvc('Bound', importing('Failed')), undefined, 'False', 'Failed', 'PVC fedora-41 is being populated (pod phase Failed)'],
    ['an import target that succeeded', pvc('Bound', importing('Succeeded')), undefined, 'True', 'Ready', 'DataSource is ready to be consumed'],
    ['an upload target waiting', pvc('Bound', { 'cdi.kubevirt.io/storage.upload.target': '' }), undefined, 'False', 'Pending', 'PVC fedora-41 is being populated (pod phase Pending)'],
    ['a clone target running', pvc('Bound', { 'k8s.io/CloneRequest': 'a/b', 'cdi.kubevirt.io/storage.pod.phase': 'Running' }), undefined, 'False', 'Running', 'PVC fedora-41 is being populated (pod phase Running)'],
    ['a DataVolume importing (CDI: its phase decides)', pvc('Bound', importing('Running')), dv('ImportInProgress'), 'False', 'ImportInProgress', 'Import DataVolume phase ImportInProgress'],
    ['a DataVolume without a phase yet', undefined, dv(), 'False', 'Pending', 'Import DataVolume phase Pending'],
    ['a DataVolume that failed', pvc('Bound'), dv('Failed'), 'False', 'Failed', 'Import DataVolume phase Failed'],
    ['a DataVolume Succeeded, its PVC Bound', pvc('Bound', importing('Succeeded')), dv('Succeeded'), 'True', 'Ready', 'DataSource is ready to be consumed'],
    ['a DataVolume Succeeded whose PVC is gone', undefined, dv('Succeeded'), 'False', 'NotFound', 'PVC not found'],
  ])('%s', (_what, p, d, status, reason, message) => {
    expect(readyCondition({ dataSource: ds(), ...(p ? { pvc: p } : {}), ...(d ? { dataVolume: d } : {}) })).toEqual({ type: 'Ready', status, reason, message });
  });

  test('a PVC in another namespace is looked for where spec.source.pvc.namespace says', () => {
    const other = { ...ds(), spec: { source: { pvc: { namespace: 'other', name: 'fedora-41' } } } } as DataSource;
    expect(readyCondition({ dataSource: other }).reason).toBe('NotFound');
  });

  test('times: set on change, kept when nothing changed (no write), transition kept when only the reason changes', () => {
    const t0 = Date.parse('2026-12-01T10:00:00Z');
    const first = planDataSource({ dataSource: ds(), now: t0 });
    expect(first).toEqual({ conditions: [{ type: 'Ready', status: 'False', reason: 'NotFound', message: 'PVC not found', lastTransitionTime: '2026-12-01T10:00:00.000Z', lastHeartbeatTime: '2026-12-01T10:00:00.000Z' }], source: { pvc: { name: 'fedora-41' } } });
    // The same observation later: nothing to write, even with keys in the apiserver's order.
    const stored = Object.fromEntries(Object.entries(first!.conditions[0]!).sort(([a], [b]) => a.localeCompare(b)));
    const source = first!.source;
    expect(planDataSource({ dataSource: ds({ conditions: [stored as never], source }), now: t0 + 60_000 })).toBeUndefined();
    const pending = planDataSource({ dataSource: ds({ conditions: [stored as never], source }), pvc: pvc('Pending'), now: t0 + 60_000 });
    expect(pending!.conditions[0]).toMatchObject({ status: 'False', reason: 'Pending', lastTransitionTime: '2026-12-01T10:00:00.000Z', lastHeartbeatTime: '2026-12-01T10:01:00.000Z' });
    const ready = planDataSource({ dataSource: ds({ conditions: [pending!.conditions[0] as never], source }), pvc: pvc('Bound'), now: t0 + 120_000 });
    expect(ready!.conditions[0]).toMatchObject({ status: 'True', reason: 'Ready', lastTransitionTime: '2026-12-01T10:02:00.000Z' });
  });
});

describe("CDI's extras: status.source mirrors spec.source; the PVC's default instancetype and preference labels", () => {
  const t0 = Date.parse('2026-12-01T10:00:00Z');
  test('status.source follows spec.source: written when missing or stale, not when the same (whatever the key order)', () => {
    const first = planDataSource({ dataSource: ds(), now: t0 })!;
    expect(first.source).toEqual({ pvc: { name: 'fedora-41' } });
    const moved = { ...ds({ conditions: first.conditions as never, source: first.source }), spec: { source: { pvc: { namespace: 'golden-images', name: 'fedora-42' } } } } as DataSource;
    expect(planDataSource({ dataSource: moved, now: t0 })?.source).toEqual({ pvc: { namespace: 'golden-images', name: 'fedora-42' } });
    const same = { ...moved, status: { conditions: planDataSource({ dataSource: moved, now: t0 })!.conditions, source: { pvc: { name: 'fedora-42', namespace: 'golden-images' } } } } as DataSource;
    expect(planDataSource({ dataSource: same, now: t0 + 1000 })).toBeUndefined();
  });

  const labelled = (labels: Record<string, string>): V1PersistentVolumeClaim => ({ ...pvc('Bound'), metadata: { ...pvc('Bound').metadata, labels } });
  const IT = 'instancetype.kubevirt.io/default-instancetype';
  const PREF = 'instancetype.kubevirt.io/default-preference';
  test.each<[string, Record<string, string>, Record<string, string>, Record<string, string> | undefined]>([
    ['copied from the PVC', { [IT]: 'u1.medium', [PREF]: 'fedora', 'app': 'not-copied' }, {}, { [IT]: 'u1.medium', [PREF]: 'fedora' }],
    ['the kinds too', { 'instancetype.kubevirt.io/default-instancetype-kind': 'VirtualMachineClusterInstancetype', 'instancetype.kubevirt.io/default-preference-kind': 'VirtualMachineClusterPreference' }, {}, { 'instancetype.kubevirt.io/default-instancetype-kind': 'VirtualMachineClusterInstancetype', 'instancetype.kubevirt.io/default-preference-kind': 'VirtualMachineClusterPreference' }],
    ["the PVC's value wins", { [IT]: 'u1.large' }, { [IT]: 'u1.small' }, { [IT]: 'u1.large' }],
    ['already so: nothing to write', { [IT]: 'u1.medium' }, { [IT]: 'u1.medium' }, undefined],
    ["one the PVC lacks is left as it is", {}, { [PREF]: 'set-by-admin' }, undefined],
  ])('%s', (_what, pvcLabels, dsLabels, want) => {
    const dataSource = { ...ds(), metadata: { ...ds().metadata, labels: dsLabels } } as DataSource;
    expect(planDataSourceLabels({ dataSource, pvc: labelled(pvcLabels) })).toEqual(want);
  });

  test('no PVC: no labels', () => {
    expect(planDataSourceLabels({ dataSource: ds() })).toBeUndefined();
  });
});
