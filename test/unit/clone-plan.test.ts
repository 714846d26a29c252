/** planClone (controller/clone/plan.ts) and the seal (./authorization.ts), as tables. No clients, no clock. */

import { describe, expect, test } from '@jest/globals';
import { generateKeyPairSync } from 'node:crypto';
import type { V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';
import { CLONE_SEAL_ANNOTATION, judgeClone, sealClone } from '../../controller/clone/authorization.js';
import { type CloneAction, type CloneObserved, planClone, sourceWriters } from '../../controller/clone/plan.js';
import { DEFAULT_CONFIG } from '../../controller/config.js';
import { Annotation } from '../../src/api/cdi.js';
import { CLONE_REQUEST_ANNOTATION, CLONE_TOKEN_ANNOTATION, cloneClaims, type CloneRef } from '../../src/contract/clone-token.js';
import { encodeTermination } from '../../src/contract/termination.js';
import { signToken } from '../../src/contract/upload-token.js';

const NOW = Date.parse('2026-12-01T10:00:00.000Z');
const config = { ...DEFAULT_CONFIG, retryBackoffMs: 1000, maxRetries: 2 };
const UID = 'target-uid';
const CLONE: CloneRef = { source: { namespace: 'golden', name: 'fedora' }, target: { namespace: 'vms', name: 'disk' } };

function target(annotations: Record<string, string> = {}, size = '10Gi'): V1PersistentVolumeClaim {
  return { metadata: { name: 'disk', namespace: 'vms', uid: UID, annotations: { [CLONE_REQUEST_ANNOTATION]: 'golden/fedora', ...annotations } }, spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: size } } } };
}
const SOURCE: V1PersistentVolumeClaim = { metadata: { name: 'fedora', namespace: 'golden' }, spec: { resources: { requests: { storage: '10Gi' } } } };
const owned = { ownerReferences: [{ apiVersion: 'v1', kind: 'PersistentVolumeClaim', name: 'disk', uid: UID }] };

function pod(name: string, phase: string, o: { ready?: boolean; message?: string; uid?: string; owner?: boolean } = {}): V1Pod {
  return {
    metadata: { name, uid: o.uid ?? `${name}-uid`, ...(o.owner === false ? {} : owned) },
    status: {
      phase,
      ...(o.ready !== undefined ? { conditions: [{ type: 'Ready', status: o.ready ? 'True' : 'False' }] } : {}),
      ...(o.message ? { containerStatuses: [{ name: 'clone-target', image: 'i', imageID: '', ready: false, restartCount: 0, state: { terminated: { exitCode: 0, message: o.message } } }] } : {}),
    },
  };
}
const success = encodeTermination({ kind: 'success', message: 'Clone Complete', scratchSpaceRequired: false, preallocationApplied: false });
const failure = (code: string, retryable: boolean) => encodeTermination({ kind: 'failure', code: code as never, message: 'it broke', retryable });

const base = (o: Partial<CloneObserved> = {}): CloneObserved => ({ pvc: target(), sourcePvc: SOURCE, verdict: { kind: 'sealed' }, sourceNamespacePods: [], now: NOW, ...o });
const types = (actions: readonly CloneAction[]) => actions.map((a) => a.type);
const annotated = (actions: readonly CloneAction[]) => Object.assign({}, ...actions.filter((a) => a.type === 'annotate').map((a) => (a as Extract<CloneAction, { type: 'annotate' }>).annotations));
const reasons = (actions: readonly CloneAction[]) => actions.filter((a) => a.type === 'event').map((a) => (a as Extract<CloneAction, { type: 'event' }>).reason);

describe('planClone', () => {
  test.each<[string, Partial<CloneObserved>, string[], Record<string, string | null>, string[]]>([
    ['not a clone target', { pvc: { metadata: { name: 'disk', namespace: 'vms' } } }, [], {}, []],
    ['a refused verdict: Failed, the reason, no pods', { verdict: { kind: 'refused', code: 'EXPIRED', message: 'old' } }, ['annotate', 'event'], { [Annotation.PodPhase]: 'Failed', [Annotation.FatalError]: 'true', [Annotation.RunningReason]: 'CloneAuthorizationFailed', [Annotation.RunningMessage]: 'EXPIRED: old' }, ['CloneAuthorizationFailed']],
    ['a good token: only the seal is written', { verdict: { kind: 'token' }, seal: 'v1.x' }, ['annotate'], { [CLONE_SEAL_ANNOTATION]: 'v1.x' }, []],
    ['sealed, nothing yet: the target first', {}, ['annotate', 'event', 'startTarget'], { [Annotation.PodPhase]: 'Pending' }, ['CloneScheduled']],
    ['the source PVC missing: wait', { sourcePvc: undefined }, ['annotate', 'event'], { [Annotation.RunningReason]: 'CloneSourceNotFound' }, ['CloneSourceNotFound']],
    ['the target smaller than the source: TARGET_TOO_SMALL, never a pod', { pvc: target({}, '5Gi') }, ['annotate', 'event'], { [Annotation.ErrorCode]: 'TARGET_TOO_SMALL', [Annotation.PodPhase]: 'Failed' }, ['CloneFailed']],
    [
      'a pod writing the source: CloneSourceInUse, wait',
      { sourceNamespacePods: [{ metadata: { name: 'vm' }, spec: { containers: [], volumes: [{ name: 'v', persistentVolumeClaim: { claimName: 'fedora' } }] }, status: { phase: 'Running' } }] },
      ['annotate', 'event'],
      { [Annotation.RunningReason]: 'CloneSourceInUse' },
      ['CloneSourceInUse'],
    ],
    ['target pending: Pending', { targetPod: pod('cdi-upload-disk', 'Pending') }, ['annotate'], { [Annotation.PodPhase]: 'Pending' }, []],
    ['target running, not ready: no source yet', { targetPod: pod('cdi-upload-disk', 'Running', { ready: false }) }, ['annotate'], { [Annotation.PodPhase]: 'Running' }, []],
    ['target ready: the source pod', { targetPod: pod('cdi-upload-disk', 'Running', { ready: true }) }, ['annotate', 'startSource'], { [Annotation.PodPhase]: 'Running' }, []],
    [
      'target succeeded with its message: Succeeded, everything cleaned',
      { targetPod: pod('cdi-upload-disk', 'Succeeded', { message: success }), sourcePod: pod('target-uid-source-pod', 'Succeeded', { owner: false }) },
      ['annotate', 'event', 'deletePod', 'deleteSourcePod', 'deleteSourceSecret'],
      { [Annotation.PodPhase]: 'Succeeded', [Annotation.Progress]: '100.0%' },
      ['CloneSucceeded'],
    ],
    [
      'target "succeeded" without a success message: a failure, never Succeeded',
      { targetPod: pod('cdi-upload-disk', 'Succeeded') },
      ['annotate', 'event', 'deletePod', 'deleteSourceSecret'],
      { [Annotation.PodPhase]: 'Pending', [Annotation.ErrorCode]: 'INTERNAL' },
      ['CloneFailed'],
    ],
    [
      'target failed, retryable: a new pair after the backoff',
      { targetPod: pod('cdi-upload-disk', 'Failed', { message: failure('TRUNCATED', true) }), sourcePod: pod('target-uid-source-pod', 'Failed', { owner: false }) },
      ['annotate', 'event', 'deletePod', 'deleteSourcePod', 'deleteSourceSecret'],
      { [Annotation.PodRestarts]: '1', [Annotation.ErrorCode]: 'TRUNCATED' },
      ['CloneFailed'],
    ],
    [
      'target failed TARGET_TOO_SMALL: given up, Failed',
      { targetPod: pod('cdi-upload-disk', 'Failed', { message: failure('TARGET_TOO_SMALL', false) }) },
      ['annotate', 'event', 'deletePod', 'deleteSourceSecret'],
      { [Annotation.PodPhase]: 'Failed', [Annotation.FatalError]: 'true', [Annotation.ErrorCode]: 'TARGET_TOO_SMALL' },
      ['CloneFailed'],
    ],
    [
      'the source failed first while the target runs: counted from the source',
      { targetPod: pod('cdi-upload-disk', 'Running', { ready: true }), sourcePod: pod('target-uid-source-pod', 'Failed', { owner: false, message: failure('SOURCE_UNAVAILABLE', true) }) },
      ['annotate', 'event', 'deletePod', 'deleteSourcePod', 'deleteSourceSecret'],
      { [Annotation.ErrorCode]: 'SOURCE_UNAVAILABLE' },
      ['CloneFailed'],
    ],
    ['a pod of the target\'s name that is not ours: wait, never touch it', { targetPod: pod('cdi-upload-disk', 'Running', { owner: false }) }, ['annotate', 'event'], { [Annotation.RunningReason]: 'CloneTargetPodNameTaken' }, ['CloneFailed']],
    ['done: the leftovers go', { pvc: target({ [Annotation.PodPhase]: 'Succeeded' }), verdict: undefined, targetPod: pod('cdi-upload-disk', 'Succeeded') }, ['deletePod', 'deleteSourceSecret'], {}, []],
  ])('%s', (_what, o, wantTypes, wantAnnotations, wantEvents) => {
    const plan = planClone(base(o), config);
    expect(types(plan.actions)).toEqual(wantTypes);
    expect(annotated(plan.actions)).toMatchObject(wantAnnotations);
    expect(reasons(plan.actions)).toEqual(wantEvents);
  });

  test('the pods: target in the target namespace for this client, source in the source namespace reading the source read-only', () => {
    const start = planClone(base(), config).actions.find((a) => a.type === 'startTarget') as Extract<CloneAction, { type: 'startTarget' }>;
    const env = Object.fromEntries((start.pod.spec?.containers[0]?.env ?? []).map((e) => [e.name, e.value]));
    expect(start.pod.metadata?.namespace).toBe('vms');
    expect(env.CLIENT_NAME).toBe('golden/fedora-vms/disk');
    expect(start.hosts).toContain('cdi-upload-disk.vms.svc');
    const src = planClone(base({ targetPod: pod('cdi-upload-disk', 'Running', { ready: true }) }), config).actions.find((a) => a.type === 'startSource') as Extract<CloneAction, { type: 'startSource' }>;
    expect(src.pod.metadata).toMatchObject({ name: 'target-uid-source-pod', namespace: 'golden' });
    expect(src.pod.spec?.volumes?.[0]).toEqual({ name: 'source', persistentVolumeClaim: { claimName: 'fedora', readOnly: true } });
    const block = planClone(base({ sourcePvc: { ...SOURCE, spec: { ...SOURCE.spec, volumeMode: 'Block' } }, targetPod: pod('cdi-upload-disk', 'Running', { ready: true }) }), config).actions.find((a) => a.type === 'startSource') as Extract<CloneAction, { type: 'startSource' }>;
    expect(block.pod.spec?.containers[0]?.volumeDevices).toEqual([{ name: 'source', devicePath: '/dev/cdi-block-volume' }]);
    expect(Object.fromEntries((block.pod.spec?.containers[0]?.env ?? []).map((e) => [e.name, e.value])).VOLUME_MODE).toBe('block');
  });

  test('a wait says it once: the same observation again changes nothing', () => {
    const first = planClone(base({ sourcePvc: undefined }), config);
    const pvc = target(annotated(first.actions));
    expect(planClone(base({ pvc, sourcePvc: undefined }), config).actions).toEqual([]);
  });
});

describe('sourceWriters', () => {
  const using = (name: string, o: { readOnly?: boolean; phase?: string; clone?: boolean } = {}): V1Pod => ({
    metadata: { name, ...(o.clone ? { labels: { 'ferry.dev/clone': 'source' } } : {}) },
    spec: { containers: [], volumes: [{ name: 'v', persistentVolumeClaim: { claimName: 'fedora', ...(o.readOnly ? { readOnly: true } : {}) } }] },
    status: { phase: o.phase ?? 'Running' },
  });
  test('read-write and unfinished counts; read-only, finished and our own clone pods do not', () => {
    const pods = [using('rw'), using('ro', { readOnly: true }), using('done', { phase: 'Succeeded' }), using('ours', { clone: true }), using('pending', { phase: 'Pending' })];
    expect(sourceWriters(pods, 'fedora').map((p) => p.metadata?.name)).toEqual(['rw', 'pending']);
    expect(sourceWriters(pods, 'other')).toEqual([]);
  });
});

describe('judgeClone: the seal and the token', () => {
  const keys = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const other = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const sealKey = Buffer.alloc(32, 7);
  const token = (clone: CloneRef, key = keys.privateKey, at = NOW) => signToken(cloneClaims(clone, at), key);
  const judge = (a: Record<string, string>, uid = UID) => judgeClone(a, uid, CLONE, { tokenKey: keys.publicKey, sealKey }, NOW);

  test.each<[string, Record<string, string>, string, string]>([
    ['the webhook\'s token for this clone', { [CLONE_TOKEN_ANNOTATION]: token(CLONE) }, 'token', ''],
    ['no token', {}, 'refused', 'NO_TOKEN'],
    ['signed by another key', { [CLONE_TOKEN_ANNOTATION]: token(CLONE, other.privateKey) }, 'refused', 'BAD_SIGNATURE'],
    ['expired', { [CLONE_TOKEN_ANNOTATION]: token(CLONE, keys.privateKey, NOW - 600_000) }, 'refused', 'EXPIRED'],
    ['for another source', { [CLONE_TOKEN_ANNOTATION]: token({ ...CLONE, source: { namespace: 'golden', name: 'secret-stuff' } }) }, 'refused', 'WRONG_TARGET'],
    ['for another target', { [CLONE_TOKEN_ANNOTATION]: token({ ...CLONE, target: { namespace: 'vms', name: 'other' } }) }, 'refused', 'WRONG_TARGET'],
    ['the controller\'s seal for this UID (token long expired)', { [CLONE_SEAL_ANNOTATION]: sealClone(sealKey, UID, CLONE), [CLONE_TOKEN_ANNOTATION]: token(CLONE, keys.privateKey, NOW - 86_400_000) }, 'sealed', ''],
    ['a seal copied from another PVC (another UID)', { [CLONE_SEAL_ANNOTATION]: sealClone(sealKey, 'other-uid', CLONE), [CLONE_TOKEN_ANNOTATION]: token(CLONE) }, 'refused', 'BAD_SEAL'],
    ['a seal for another source', { [CLONE_SEAL_ANNOTATION]: sealClone(sealKey, UID, { ...CLONE, source: { namespace: 'golden', name: 'x' } }) }, 'refused', 'BAD_SEAL'],
    ['a seal under another key', { [CLONE_SEAL_ANNOTATION]: sealClone(Buffer.alloc(32, 8), UID, CLONE) }, 'refused', 'BAD_SEAL'],
  ])('%s', (_what, annotations, kind, code) => {
    const verdict = judge(annotations);
    expect(verdict.kind).toBe(kind);
    if (code) expect(verdict).toMatchObject({ code });
  });
});
