/** planDataVolume's clone case (controller/datavolume/clone.ts): source.pvc and sourceRef → the target PVC, or why not. */

import { describe, expect, test } from '@jest/globals';
import type { V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { buildClaim } from '../../controller/datavolume/claim.js';
import type { DvCloneFacts } from '../../controller/datavolume/clone.js';
import { type DvAction, type DvPlan, planDataVolume } from '../../controller/datavolume/plan.js';
import { Annotation, PodPhase } from '../../src/api/cdi.js';
import type { DataVolume, DataVolumeSpec, DataVolumeStatus } from '../../src/api/datavolume.js';
import { CLONE_REQUEST_ANNOTATION, CLONE_TOKEN_ANNOTATION } from '../../src/contract/clone-token.js';

const NOW = Date.parse('2026-12-01T10:00:00.000Z');
const cfg = { filesystemOverhead: 0.06 };
const GOLDEN = { namespace: 'golden', name: 'fedora' };

function makeDv(spec: DataVolumeSpec, status?: DataVolumeStatus): DataVolume {
  return {
    apiVersion: 'cdi.kubevirt.io/v1beta1',
    kind: 'DataVolume',
    metadata: { name: 'disk', namespace: 'vms', uid: 'dv-1', annotations: { [CLONE_TOKEN_ANNOTATION]: 'tok' } },
    spec,
    ...(status ? { status } : {}),
  };
}

const sourcePvc = (size = '10Gi'): V1PersistentVolumeClaim => ({ metadata: { ...GOLDEN }, spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: size } } } });
const OK: DvCloneFacts = { source: GOLDEN, sourcePvc: sourcePvc(), verdict: { kind: 'token' } };
const plan = (dv: DataVolume, clone?: DvCloneFacts, pvc?: V1PersistentVolumeClaim): DvPlan => planDataVolume({ dv, ...(pvc ? { pvc } : {}), ...(clone ? { clone } : {}), now: NOW }, cfg);
const statusOf = (p: DvPlan): DataVolumeStatus | undefined => (p.actions.find((a) => a.type === 'patchStatus') as Extract<DvAction, { type: 'patchStatus' }> | undefined)?.status;
const created = (p: DvPlan) => (p.actions.find((a) => a.type === 'createPvc') as Extract<DvAction, { type: 'createPvc' }> | undefined)?.pvc;
const eventsOf = (p: DvPlan) => p.actions.filter((a): a is Extract<DvAction, { type: 'event' }> => a.type === 'event').map((e) => [e.eventType, e.reason]);

const PVC_SOURCE: DataVolumeSpec = { source: { pvc: { namespace: 'golden', name: 'fedora' } }, storage: {} };
const REF_SOURCE: DataVolumeSpec = { sourceRef: { kind: 'DataSource', namespace: 'golden', name: 'fedora-latest' }, storage: {} };

describe('a cloning DataVolume without its PVC', () => {
  test.each([
    ['source.pvc', PVC_SOURCE],
    ['sourceRef', REF_SOURCE],
  ])('%s, token good: the PVC carries the CloneRequest and the token, the source\'s size, and the DataVolume is Pending', (_what, spec) => {
    const p = plan(makeDv(spec), OK);
    const pvc = created(p);
    expect(pvc?.metadata?.annotations).toMatchObject({ [CLONE_REQUEST_ANNOTATION]: 'golden/fedora', [CLONE_TOKEN_ANNOTATION]: 'tok' });
    expect(pvc?.metadata?.annotations?.[Annotation.Endpoint]).toBeUndefined();
    expect(pvc?.spec?.resources?.requests?.storage).toBe('10Gi');
    expect(statusOf(p)?.phase).toBe('Pending');
  });

  test('a size given is kept (grown by the overhead as any spec.storage)', () => {
    const pvc = created(plan(makeDv({ ...PVC_SOURCE, storage: { resources: { requests: { storage: '20Gi' } } } }), OK));
    expect(pvc?.spec?.resources?.requests?.storage).toBe(String(Math.ceil((20 * 1024 ** 3) / 0.94)));
  });

  test.each<[string, DvCloneFacts | undefined, string, string, 'Normal' | 'Warning']>([
    ['a refused token: Failed, no PVC, the reason', { ...OK, verdict: { kind: 'refused', code: 'EXPIRED', message: 'the clone token is refused: expired' } }, 'Failed', 'CloneAuthorizationFailed', 'Warning'],
    ['no token checked yet (no keys): waits', { source: GOLDEN, sourcePvc: sourcePvc() }, 'Pending', 'CloneAuthorizationFailed', 'Normal'],
    ['the source PVC missing: waits', { source: GOLDEN, verdict: { kind: 'token' } }, 'Pending', 'CloneSourceNotFound', 'Normal'],
    ['a DataSource that names nothing: waits', { problem: 'DataSource golden/fedora-latest not found' }, 'Pending', 'CloneSourceNotFound', 'Normal'],
    ['nothing known: waits', undefined, 'Pending', 'CloneSourceNotFound', 'Normal'],
  ])('%s', (_what, facts, phase, reason, eventType) => {
    const p = plan(makeDv(PVC_SOURCE), facts);
    expect(created(p)).toBeUndefined();
    const status = statusOf(p);
    expect(status?.phase).toBe(phase);
    expect(status?.conditions?.find((c) => c.type === 'Ready')?.reason).toBe(reason);
    expect(eventsOf(p)).toEqual([[eventType, reason]]);
    // Seen again with that status: nothing more to say.
    expect(plan(makeDv(PVC_SOURCE, status), facts).actions).toEqual([]);
  });

  test('the refusal message leads with the token verifier\'s code', () => {
    const p = plan(makeDv(PVC_SOURCE), { ...OK, verdict: { kind: 'refused', code: 'BAD_SIGNATURE', message: 'the clone token is refused: the token signature does not verify' } });
    expect(statusOf(p)?.conditions?.find((c) => c.type === 'Ready')?.message).toBe('BAD_SIGNATURE: the clone token is refused: the token signature does not verify');
  });
});

describe('a cloning DataVolume with its PVC: the clone controller\'s phase read back (CDI\'s names and events)', () => {
  const own = (phase?: string): V1PersistentVolumeClaim => {
    const base = buildClaim(makeDv(PVC_SOURCE), 0.06);
    return { ...base, metadata: { ...base.metadata, annotations: { ...base.metadata?.annotations, [CLONE_REQUEST_ANNOTATION]: 'golden/fedora', ...(phase ? { [Annotation.PodPhase]: phase } : {}) } }, status: { phase: 'Bound' } };
  };
  test.each([
    [PodPhase.Pending, 'CloneScheduled', ['Normal', 'CloneScheduled']],
    [PodPhase.Running, 'CloneInProgress', ['Normal', 'CloneInProgress']],
    [PodPhase.Succeeded, 'Succeeded', ['Normal', 'CloneSucceeded']],
    [PodPhase.Failed, 'Failed', ['Warning', 'CloneFailed']],
  ])('pod phase %s → %s', (podPhase, phase, event) => {
    const p = plan(makeDv(PVC_SOURCE), undefined, own(podPhase));
    expect(statusOf(p)?.phase).toBe(phase);
    expect(eventsOf(p)).toEqual([event]);
  });
  test('before the clone controller wrote anything: PVCBound, not Succeeded (a clone request is a request)', () => {
    expect(statusOf(plan(makeDv(PVC_SOURCE), undefined, own()))?.phase).toBe('PVCBound');
  });
});
