/** planClone (controller/clone/plan.ts) and the seal (./authorization.ts), as tables. No clients, no clock. */

import { describe, expect, test } from '@jest/globals';
import { generateKeyPairSync } from 'node:crypto';
import type { V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';
import { CLONE_SEAL_ANNOTATION, judgeClone, sealClone } from '../../controller/clone/authorization.js';
import { sourceNodes, targetMetricsPort } from '../../controller/clone/clone-pods.js';
import { type CloneAction, type CloneObserved, planClone, sourceWriters } from '../../controller/clone/plan.js';
import { coveredBy, createCloneProgressMetrics, progressPercent } from '../../clone/progress.js';
import { decodeCloneTargetProgress } from '../../src/contract/clone-env.js';
import { WORKER_NODE_OPTIONS } from '../../src/contract/import-spec.js';
import type { CloneEvent } from '../../src/contract/clone-stream.js';
import { CLONE_PROGRESS_METRIC, decodeProgress } from '../../src/contract/import-progress.js';
import { codeOf } from './helpers.js';
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
    // Both run with the data-path pods' V8 heap cap.
    expect(env.NODE_OPTIONS).toBe(WORKER_NODE_OPTIONS);
    expect(src.pod.spec?.containers[0]?.env?.find((e) => e.name === 'NODE_OPTIONS')?.value).toBe(WORKER_NODE_OPTIONS);
  });

  test("both pods take the worker pods' resources (CDIConfig podResourceRequirements, resolved into the config)", () => {
    const resources = { requests: { cpu: '250m', memory: '300Mi' }, limits: { cpu: '1', memory: '600Mi' } };
    const withResources = { ...config, importerResources: resources };
    const start = planClone(base(), withResources).actions.find((a) => a.type === 'startTarget') as Extract<CloneAction, { type: 'startTarget' }>;
    expect(start.pod.spec?.containers[0]?.resources).toEqual(resources);
    const src = planClone(base({ targetPod: pod('cdi-upload-disk', 'Running', { ready: true }) }), withResources).actions.find((a) => a.type === 'startSource') as Extract<CloneAction, { type: 'startSource' }>;
    expect(src.pod.spec?.containers[0]?.resources).toEqual(resources);
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

describe('progress: the target serves the import contract, the plan scrapes it while the data moves', () => {
  const running = (env: Record<string, string>, podIP = '10.0.0.7'): V1Pod => ({
    ...pod('cdi-upload-disk', 'Running', { ready: true }),
    spec: { containers: [{ name: 'clone-target', env: Object.entries(env).map(([name, value]) => ({ name, value })) }] },
    status: { ...pod('cdi-upload-disk', 'Running', { ready: true }).status, podIP },
  });
  const source = pod('target-uid-source-pod', 'Running', { owner: false });

  test("the target pod is told its owner UID (the PVC's single owner, else the PVC) and a metrics port apart from its own 8443", () => {
    const start = (pvc: V1PersistentVolumeClaim, cfg = config) => planClone(base({ pvc }), cfg).actions.find((a) => a.type === 'startTarget') as Extract<CloneAction, { type: 'startTarget' }>;
    const env = (p: V1Pod) => Object.fromEntries((p.spec?.containers[0]?.env ?? []).map((e) => [e.name, e.value]));
    expect(env(start(target()).pod)).toMatchObject({ OWNER_UID: UID, FERRY_METRICS_PORT: '8444', UPLOAD_PORT: '8443' });
    const ofDv = { ...target(), metadata: { ...target().metadata, ownerReferences: [{ apiVersion: 'cdi.kubevirt.io/v1beta1', kind: 'DataVolume', name: 'disk', uid: 'dv-uid', controller: true }] } };
    expect(env(start(ofDv).pod).OWNER_UID).toBe('dv-uid');
    expect(env(start(target(), { ...config, importerMetricsPort: 9100 }).pod).FERRY_METRICS_PORT).toBe('9100');
    expect(targetMetricsPort({ ...config, importerMetricsPort: 8443 })).toBe(8444);
  });

  test('target and source running: scrape the port and owner the target pod was made with, again after the interval', () => {
    const plan = planClone(base({ targetPod: running({ FERRY_METRICS_PORT: '8444', OWNER_UID: 'dv-uid' }), sourcePod: source }), config);
    expect(plan.scrape).toEqual({ podIP: '10.0.0.7', port: 8444, ownerUid: 'dv-uid' });
    expect(plan.requeueAfterMs).toBe(config.progressIntervalMs);
  });

  test.each<[string, Partial<CloneObserved>]>([
    ['no source pod yet (nothing moves)', { targetPod: running({ FERRY_METRICS_PORT: '8444', OWNER_UID: 'u' }) }],
    ['a target pod made without a metrics port', { targetPod: running({ OWNER_UID: 'u' }), sourcePod: source }],
    ['no pod IP yet', { targetPod: running({ FERRY_METRICS_PORT: '8444', OWNER_UID: 'u' }, ''), sourcePod: source }],
  ])('no scrape: %s', (_what, o) => {
    expect(planClone(base(o), config).scrape).toBeUndefined();
  });

  test('the counter the target serves is read back by the import decoder (either CDI name), only ever up', async () => {
    const metrics = createCloneProgressMetrics('dv-uid');
    metrics.report(12.5);
    metrics.report(40);
    metrics.report(30);
    const page = await metrics.registry.metrics();
    expect(page).toContain(`${CLONE_PROGRESS_METRIC}{ownerUID="dv-uid"} 40`);
    expect(decodeProgress(page, 'dv-uid')).toBe(40);
    expect(decodeProgress(page, 'someone-else')).toBeUndefined();
  });

  test.each<[string, CloneEvent, number | undefined]>([
    ['data reaches its end', { type: 'data', offset: 4096, bytes: Buffer.alloc(512) }, 4608],
    ['a hole is done when it arrives', { type: 'hole', offset: 1 << 20, length: 1 << 30 }, (1 << 20) + (1 << 30)],
    ['the end record carries no position', { type: 'end', dataBytes: 10 }, undefined],
  ])('coveredBy: %s', (_what, event, want) => {
    expect(coveredBy(event)).toBe(want);
  });

  test.each([[0, 100, 0], [50, 200, 25], [300, 200, 100], [5, 0, 0]])('progressPercent(%d of %d) = %d', (covered, size, want) => {
    expect(progressPercent(covered, size)).toBe(want);
  });

  test('the target env: the port must not be its own; unset means no endpoint', () => {
    expect(decodeCloneTargetProgress({ OWNER_UID: 'u', FERRY_METRICS_PORT: '8444' }, 8443)).toEqual({ ownerUid: 'u', metricsPort: 8444 });
    expect(decodeCloneTargetProgress({}, 8443)).toEqual({ ownerUid: '', metricsPort: 0 });
    expect(codeOf(() => decodeCloneTargetProgress({ FERRY_METRICS_PORT: '8443' }, 8443))).toBe('INVALID_SPEC');
    expect(codeOf(() => decodeCloneTargetProgress({ FERRY_METRICS_PORT: 'x' }, 8443))).toBe('INVALID_SPEC');
  });
});

describe('the source pod on the node a ReadWriteOnce source is attached to', () => {
  const user = (name: string, node: string | undefined, o: { phase?: string; claim?: string; readOnly?: boolean; clone?: boolean } = {}): V1Pod => ({
    metadata: { name, ...(o.clone ? { labels: { 'ferry.dev/clone': 'source' } } : {}) },
    spec: { ...(node ? { nodeName: node } : {}), containers: [], volumes: [{ name: 'v', persistentVolumeClaim: { claimName: o.claim ?? 'fedora', ...(o.readOnly ? { readOnly: true } : {}) } }] },
    status: { phase: o.phase ?? 'Running' },
  });
  const rwo = (modes: string[]): V1PersistentVolumeClaim => ({ ...SOURCE, spec: { ...SOURCE.spec, accessModes: modes } });

  test.each<[string, string[], V1Pod[], string[]]>([
    ['RWO, a reader on node-a', ['ReadWriteOnce'], [user('reader', 'node-a', { readOnly: true })], ['node-a']],
    ['RWOP, a pod on node-b', ['ReadWriteOncePod'], [user('p', 'node-b')], ['node-b']],
    ['RWO, two pods on one node', ['ReadWriteOnce'], [user('a', 'node-a'), user('b', 'node-a')], ['node-a']],
    ['RWO, nobody uses it', ['ReadWriteOnce'], [], []],
    ['RWO, finished pods, unscheduled pods, other claims and our own clone pods do not count', ['ReadWriteOnce'], [user('done', 'n1', { phase: 'Succeeded' }), user('failed', 'n2', { phase: 'Failed' }), user('pending', undefined, { phase: 'Pending' }), user('other', 'n3', { claim: 'other' }), user('ours', 'n4', { clone: true })], []],
    ['RWX: any node will do', ['ReadWriteMany'], [user('a', 'node-a')], []],
    ['RWO and ROX: can be read on many nodes', ['ReadWriteOnce', 'ReadOnlyMany'], [user('a', 'node-a')], []],
  ])('%s', (_what, modes, pods, nodes) => {
    expect(sourceNodes(rwo(modes), pods)).toEqual(nodes);
    const src = planClone(base({ sourcePvc: rwo(modes), targetPod: pod('cdi-upload-disk', 'Running', { ready: true }), sourceNamespacePods: pods }), config).actions.find((a) => a.type === 'startSource') as Extract<CloneAction, { type: 'startSource' }>;
    const affinity = src.pod.spec?.affinity;
    if (nodes.length === 0) expect(affinity?.nodeAffinity).toBeUndefined();
    else expect(affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms).toEqual([{ matchFields: [{ key: 'metadata.name', operator: 'In', values: nodes }] }]);
    // Next to the target stays a preference either way.
    expect(affinity?.podAffinity?.preferredDuringSchedulingIgnoredDuringExecution?.[0]?.podAffinityTerm.labelSelector?.matchLabels).toEqual({ service: 'cdi-upload-disk' });
  });
});
