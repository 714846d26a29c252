/** WaitForFirstConsumer as CDI honours it: the rule, the import plan, the DataVolume status, and the VMI's binding pod. */

import { describe, expect, test } from '@jest/globals';
import type { V1PersistentVolumeClaim, V1Pod, V1StorageClass } from '@kubernetes/client-node';
import { DEFAULT_CONFIG } from '../../controller/config.js';
import { planImport } from '../../controller/import/plan.js';
import { markedWaiting, waitingAnnotations, waitsForFirstConsumer } from '../../controller/runtime/binding.js';
import { statusFromClaim } from '../../controller/datavolume/status.js';
import { ROUTES } from '../../controller/datavolume/claim.js';
import { buildProvisioningPod, isProvisioningPod, provisioningPodName } from '../../controller/vm/provisioning-pod.js';
import { planVmi, type VmiPlan } from '../../controller/vm/vmi-plan.js';
import { Annotation } from '../../src/api/cdi.js';
import { DvPhase, SourceKind } from '../../src/api/datavolume.js';
import { ConditionType, FOREGROUND_FINALIZER, VmiPhase } from '../../src/api/kubevirt.js';
import { LAUNCHER_CONFIG, makeVmi, makeVmPvc, vmiIn } from './helpers.js';

const NOW = Date.parse('2026-12-01T12:00:00.000Z');
const wffc: V1StorageClass = { metadata: { name: 'local' }, provisioner: 'kubernetes.io/no-provisioner', volumeBindingMode: 'WaitForFirstConsumer' };
const immediate: V1StorageClass = { metadata: { name: 'fast' }, provisioner: 'x', volumeBindingMode: 'Immediate' };

function pvc(o: { annotations?: Record<string, string>; phase?: string; volumeName?: string; className?: string } = {}): V1PersistentVolumeClaim {
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: { name: 'disk', namespace: 'vms', uid: 'pvc-uid', annotations: { [Annotation.Endpoint]: 'http://x/disk.img', ...(o.annotations ?? {}) } },
    spec: { accessModes: ['ReadWriteOnce'], storageClassName: o.className ?? 'local', resources: { requests: { storage: '1Gi' } }, ...(o.volumeName ? { volumeName: o.volumeName } : {}) },
    status: { phase: o.phase ?? 'Pending' },
  };
}

describe('waitsForFirstConsumer', () => {
  test.each([
    ['pending, WFFC class', pvc(), wffc, true],
    ['pending, Immediate class', pvc(), immediate, false],
    ['pending, class unknown', pvc(), undefined, false],
    ['bound', pvc({ phase: 'Bound' }), wffc, false],
    ['pre-bound to a PV', pvc({ volumeName: 'pv-1' }), wffc, false],
    ['immediate binding requested (empty value counts, as in CDI)', pvc({ annotations: { [Annotation.ImmediateBinding]: '' } }), wffc, false],
  ])('%s → %s', (_name, claim, storageClass, expected) => {
    expect(waitsForFirstConsumer(claim, storageClass)).toBe(expected);
  });
});

describe('the import plan', () => {
  const cfg = DEFAULT_CONFIG;

  test('a waiting PVC gets no pod, the bound-condition annotations and one event', () => {
    const p = planImport({ pvc: pvc(), waitForFirstConsumer: true, now: NOW }, cfg);
    expect(p.actions.map((a) => a.type)).toEqual(['annotate', 'event']);
    const annotate = p.actions[0];
    expect(annotate?.type === 'annotate' && annotate.annotations).toEqual(waitingAnnotations(pvc()));
    expect(waitingAnnotations(pvc())[Annotation.BoundMessage]).toContain('storage class local binds on first use');
    // Marked already: nothing more (no repeated event).
    const marked = pvc({ annotations: waitingAnnotations(pvc()) });
    expect(planImport({ pvc: marked, waitForFirstConsumer: true, now: NOW }, cfg).actions).toEqual([]);
  });

  test('once it may start, the pod is created and the waiting annotations removed', () => {
    const marked = pvc({ annotations: waitingAnnotations(pvc()), phase: 'Bound' });
    const p = planImport({ pvc: marked, waitForFirstConsumer: false, now: NOW }, cfg);
    expect(p.actions.map((a) => a.type)).toEqual(['annotate', 'createPod']);
    const annotate = p.actions[0];
    expect(annotate?.type === 'annotate' && annotate.annotations).toMatchObject({
      [Annotation.BoundCondition]: null,
      [Annotation.BoundReason]: null,
      [Annotation.BoundMessage]: null,
      [Annotation.PodPhase]: 'Pending',
    });
  });

  test('an existing importer pod is followed even if the class would make it wait', () => {
    const pod: V1Pod = {
      metadata: { name: 'importer-disk', namespace: 'vms', uid: 'p', ownerReferences: [{ apiVersion: 'v1', kind: 'PersistentVolumeClaim', name: 'disk', uid: 'pvc-uid', controller: true }] },
      status: { phase: 'Running', podIP: '10.0.0.1' },
    };
    const p = planImport({ pvc: pvc(), pod, waitForFirstConsumer: true, now: NOW }, cfg);
    expect(p.actions.some((a) => a.type === 'annotate' && a.annotations[Annotation.PodPhase] === 'Running')).toBe(true);
  });
});

describe('the DataVolume status', () => {
  const route = ROUTES[SourceKind.Http];

  test('a waiting PVC makes the DataVolume WaitForFirstConsumer, Bound False with the reason', () => {
    const s = statusFromClaim(pvc({ annotations: waitingAnnotations(pvc()) }), route);
    expect(s.phase).toBe(DvPhase.WaitForFirstConsumer);
    expect(s.conditions.find((c) => c.type === 'Bound')).toMatchObject({ status: 'False', reason: 'WaitForFirstConsumer' });
  });

  test('once bound, the PVC phase wins over the stale annotation', () => {
    const s = statusFromClaim(pvc({ annotations: waitingAnnotations(pvc()), phase: 'Bound' }), route);
    expect(s.phase).toBe(DvPhase.PVCBound);
    expect(s.conditions.find((c) => c.type === 'Bound')).toMatchObject({ status: 'True', reason: 'Bound' });
  });
});

describe('the VMI binding pod', () => {
  const waitingPvc = (): V1PersistentVolumeClaim => ({
    ...makeVmPvc('disk', { annotations: { [Annotation.Endpoint]: 'http://x/disk.img', ...waitingAnnotations(makeVmPvc('disk')) } }),
    status: { phase: 'Pending' },
  });
  const vmi = vmiIn(undefined, { finalizers: [FOREGROUND_FINALIZER] });
  const plan = (claim: V1PersistentVolumeClaim, provisioningPod?: V1Pod, over = vmi): VmiPlan =>
    planVmi({ vmi: over, claims: new Map([['disk', claim]]), ...(provisioningPod ? { provisioningPod } : {}), now: NOW }, LAUNCHER_CONFIG);

  test('a VMI whose PVC waits gets one restricted pod that mounts it, not its launcher', () => {
    expect(markedWaiting(waitingPvc())).toBe(true);
    const p = plan(waitingPvc());
    const created = p.actions.flatMap((a) => (a.type === 'createPod' ? [a.pod] : []));
    expect(created).toHaveLength(1);
    const pod = created[0]!;
    expect(pod.metadata?.name).toBe(provisioningPodName(vmi));
    expect(isProvisioningPod(pod)).toBe(true);
    expect(pod.metadata?.labels).not.toHaveProperty('app'); // the VMI's own labels are not copied
    expect(pod.spec?.volumes).toEqual([{ name: 'rootdisk', persistentVolumeClaim: { claimName: 'disk', readOnly: true } }]);
    expect(pod.spec?.containers[0]?.args).toEqual(['version']);
    expect(pod.spec?.containers[0]?.securityContext).toMatchObject({ allowPrivilegeEscalation: false, runAsNonRoot: true, capabilities: { drop: ['ALL'] } });
    expect(pod.spec?.securityContext?.seccompProfile?.type).toBe('RuntimeDefault');
    const status = p.actions.flatMap((a) => (a.type === 'patchStatus' ? [a.status] : []))[0];
    expect(status?.phase).toBe(VmiPhase.Pending);
    expect(status?.conditions?.find((c) => c.type === ConditionType.Provisioning)).toMatchObject({ status: 'True', reason: 'WaitForFirstConsumer' });
  });

  test('while it exists and the PVC still waits, nothing is created or deleted', () => {
    const temp = buildProvisioningPod(makeVmi(), new Map(), ['disk'], LAUNCHER_CONFIG);
    const p = plan(waitingPvc(), temp);
    expect(p.actions.filter((a) => a.type === 'createPod' || a.type === 'deletePod')).toEqual([]);
  });

  test('once the PVC is bound the binding pod is deleted (the import then holds the launcher back)', () => {
    const temp = buildProvisioningPod(makeVmi(), new Map(), ['disk'], LAUNCHER_CONFIG);
    const bound = { ...waitingPvc(), status: { phase: 'Bound' } };
    const p = plan(bound, temp);
    expect(p.actions.filter((a) => a.type === 'deletePod')).toEqual([{ type: 'deletePod', name: provisioningPodName(vmi) }]);
    expect(p.actions.filter((a) => a.type === 'createPod')).toEqual([]);
  });

  test('a VMI being deleted deletes its binding pod', () => {
    const temp = buildProvisioningPod(makeVmi(), new Map(), ['disk'], LAUNCHER_CONFIG);
    const deleting = vmiIn(VmiPhase.Pending, { finalizers: [FOREGROUND_FINALIZER], deleting: true });
    expect(plan(waitingPvc(), temp, deleting).actions).toContainEqual({ type: 'deletePod', name: provisioningPodName(vmi) });
  });

  test('the name is deterministic, distinct from the launcher pod, and at most 63 characters', () => {
    const long = makeVmi({ name: 'x'.repeat(80) });
    expect(provisioningPodName(long).length).toBeLessThanOrEqual(63);
    expect(provisioningPodName(vmi)).toBe(provisioningPodName(vmi));
  });
});
