/** planDataVolume's clone case (controller/datavolume/clone.ts): source.pvc and sourceRef → the target PVC, or why not. */

import { describe, expect, test } from '@jest/globals';
import type { V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { buildClaim } from '../../controller/datavolume/claim.js';
import type { DvCloneFacts } from '../../controller/datavolume/clone.js';
import { type DvAction, type DvPlan, planDataVolume } from '../../controller/datavolume/plan.js';
import { Annotation, PodPhase } from '../../src/api/cdi.js';
import type { DataVolume, DataVolumeSpec, DataVolumeStatus } from '../../src/api/datavolume.js';
import { generateKeyPairSync } from 'node:crypto';
import { CLONE_SEAL_ANNOTATION, judgeClone, sealClone } from '../../controller/clone/authorization.js';
import { CLONE_REQUEST_ANNOTATION, CLONE_TOKEN_ANNOTATION, cloneClaims } from '../../src/contract/clone-token.js';
import { signToken } from '../../src/contract/upload-token.js';

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

describe("the DataVolume's seal: the token's five minutes are not the clone's", () => {
  const SEAL = 'v1.seal-for-dv-1';
  test('a token that verifies seals the DataVolume, even while it waits for its source', () => {
    const waiting = plan(makeDv(PVC_SOURCE), { source: GOLDEN, verdict: { kind: 'token' }, seal: SEAL });
    expect(waiting.actions[0]).toEqual({ type: 'annotateDv', annotations: { [CLONE_SEAL_ANNOTATION]: SEAL } });
    expect(created(waiting)).toBeUndefined();
    const creating = plan(makeDv(PVC_SOURCE), { ...OK, seal: SEAL });
    expect(creating.actions.map((a) => a.type).slice(0, 2)).toEqual(['annotateDv', 'createPvc']);
  });

  test('sealed: the PVC is created, and the seal (bound to the DataVolume\'s UID) is not carried onto it', () => {
    const dv = makeDv(PVC_SOURCE);
    const sealed = { ...dv, metadata: { ...dv.metadata, annotations: { ...dv.metadata.annotations, [CLONE_SEAL_ANNOTATION]: SEAL } } };
    const p = plan(sealed, { source: GOLDEN, sourcePvc: sourcePvc(), verdict: { kind: 'sealed' }, seal: SEAL });
    expect(p.actions.some((a) => a.type === 'annotateDv')).toBe(false);
    expect(created(p)?.metadata?.annotations?.[CLONE_SEAL_ANNOTATION]).toBeUndefined();
    expect(created(p)?.metadata?.annotations?.[CLONE_REQUEST_ANNOTATION]).toBe('golden/fedora');
  });

  test('the PVC it made, unsealed: sealed for its own UID when reconcile found the DataVolume\'s seal good; never twice, never without', () => {
    const base = buildClaim(makeDv(PVC_SOURCE), 0.06);
    const pvc = (extra: Record<string, string> = {}): V1PersistentVolumeClaim => ({ ...base, metadata: { ...base.metadata, uid: 'pvc-1', annotations: { ...base.metadata?.annotations, [CLONE_REQUEST_ANNOTATION]: 'golden/fedora', ...extra } } });
    const withSeal = (p: V1PersistentVolumeClaim, pvcSeal?: string) => planDataVolume({ dv: makeDv(PVC_SOURCE), pvc: p, ...(pvcSeal ? { pvcSeal } : {}), now: NOW }, cfg).actions.filter((a) => a.type === 'annotatePvc');
    expect(withSeal(pvc(), 'v1.pvc-seal')).toEqual([{ type: 'annotatePvc', annotations: { [CLONE_SEAL_ANNOTATION]: 'v1.pvc-seal' } }]);
    expect(withSeal(pvc({ [CLONE_SEAL_ANNOTATION]: 'v1.already' }), 'v1.pvc-seal')).toEqual([]);
    expect(withSeal(pvc())).toEqual([]);
  });

  test('a refused seal is not overwritten: Failed with the code', () => {
    const p = plan(makeDv(PVC_SOURCE), { source: GOLDEN, sourcePvc: sourcePvc(), verdict: { kind: 'refused', code: 'BAD_SEAL', message: 'not ours' }, seal: SEAL });
    expect(p.actions.some((a) => a.type === 'annotateDv')).toBe(false);
    expect(statusOf(p)?.conditions?.find((c) => c.type === 'Ready')).toMatchObject({ reason: 'CloneAuthorizationFailed', message: 'BAD_SEAL: not ours' });
  });
});

describe("judgeClone on a DataVolume (the verdict reconcile hands the plan), with the clock injected", () => {
  const keys = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const sealKey = Buffer.alloc(32, 3);
  const CLONE = { source: GOLDEN, target: { namespace: 'vms', name: 'disk' } };
  const token = signToken(cloneClaims(CLONE, NOW), keys.privateKey);
  const later = NOW + 3_600_000;
  const judge = (a: Record<string, string>, uid = 'dv-1', at = later) => judgeClone(a, uid, CLONE, { tokenKey: keys.publicKey, sealKey }, at);

  test('an hour after admission the token alone is EXPIRED; with the seal written at first sight it still clones', () => {
    expect(judge({ [CLONE_TOKEN_ANNOTATION]: token }, 'dv-1', NOW).kind).toBe('token');
    expect(judge({ [CLONE_TOKEN_ANNOTATION]: token })).toMatchObject({ kind: 'refused', code: 'EXPIRED' });
    expect(judge({ [CLONE_TOKEN_ANNOTATION]: token, [CLONE_SEAL_ANNOTATION]: sealClone(sealKey, 'dv-1', CLONE) }).kind).toBe('sealed');
  });

  test.each<[string, string]>([
    ['forged', 'v1.forged'],
    ['copied from another DataVolume', sealClone(sealKey, 'dv-2', CLONE)],
    ['made under another key', sealClone(Buffer.alloc(32, 4), 'dv-1', CLONE)],
  ])('a seal %s is BAD_SEAL, whatever the token', (_what, seal) => {
    expect(judge({ [CLONE_TOKEN_ANNOTATION]: token, [CLONE_SEAL_ANNOTATION]: seal }, 'dv-1', NOW)).toMatchObject({ kind: 'refused', code: 'BAD_SEAL' });
  });
});
