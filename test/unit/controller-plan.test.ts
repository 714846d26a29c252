import { describe, expect, test } from '@jest/globals';
import type { V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';
import { type ControllerConfig, DEFAULT_CONFIG } from '../../controller/config.js';
import { type Action, type Plan, planImport, retryDelay } from '../../controller/import/plan.js';
import { Annotation } from '../../src/api/cdi.js';

const NOW = Date.parse('2024-05-01T12:00:00.000Z');
const PVC_UID = 'pvc-uid-1';
const POD_UID = 'pod-uid-1';
const URL = 'https://images.example.com/disk.qcow2';
const cfg = DEFAULT_CONFIG;

type Annotations = Record<string, string>;

const IMPORT: Annotations = { [Annotation.Endpoint]: URL };

function makePvc(annotations: Annotations = IMPORT, o: { deleting?: boolean; name?: string } = {}): V1PersistentVolumeClaim {
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: {
      name: o.name ?? 'disk',
      namespace: 'vms',
      uid: PVC_UID,
      annotations: { ...annotations },
      ...(o.deleting ? { deletionTimestamp: new Date(NOW - 1000) } : {}),
    },
    spec: { accessModes: ['ReadWriteOnce'], volumeMode: 'Filesystem', resources: { requests: { storage: '10Gi' } } },
  };
}

interface PodOptions {
  readonly phase?: string;
  readonly uid?: string;
  readonly ownerUid?: string;
  readonly terminated?: string;
  readonly waiting?: string;
  readonly podIP?: string;
  readonly name?: string;
}

function makePod(o: PodOptions = {}): V1Pod {
  const state = o.terminated !== undefined ? { terminated: { exitCode: 0, message: o.terminated } } : o.waiting ? { waiting: { reason: o.waiting, message: 'back-off' } } : undefined;
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: o.name ?? 'importer-disk',
      namespace: 'vms',
      uid: o.uid ?? POD_UID,
      ownerReferences: [{ apiVersion: 'v1', kind: 'PersistentVolumeClaim', name: 'disk', uid: o.ownerUid ?? PVC_UID, controller: true }],
    },
    spec: { containers: [{ name: 'importer', image: 'ghcr.io/ferry-dev/ferry:latest' }] },
    status: {
      phase: o.phase ?? 'Pending',
      ...(o.podIP ? { podIP: o.podIP } : {}),
      ...(state ? { containerStatuses: [{ name: 'importer', image: 'x', imageID: '', ready: false, restartCount: 0, state }] } : {}),
    },
  };
}

function makeScratch(): V1PersistentVolumeClaim {
  return { metadata: { name: 'disk-scratch', namespace: 'vms', uid: 'scratch-uid' }, spec: {} };
}

function plan(pvc: V1PersistentVolumeClaim, pod?: V1Pod, scratchPvc?: V1PersistentVolumeClaim, now = NOW, config: ControllerConfig = cfg): Plan {
  return planImport({ pvc, ...(pod ? { pod } : {}), ...(scratchPvc ? { scratchPvc } : {}), now }, config);
}

const types = (p: Plan): string[] => p.actions.map((a) => a.type);
const of = <T extends Action['type']>(p: Plan, type: T): Array<Extract<Action, { type: T }>> =>
  p.actions.filter((a): a is Extract<Action, { type: T }> => a.type === type);
function annotations(p: Plan): Record<string, string | null> {
  return Object.assign({}, ...of(p, 'annotate').map((a) => a.annotations)) as Record<string, string | null>;
}
/** The PVC after a plan's annotate actions are applied (null removes). */
function applied(pvc: V1PersistentVolumeClaim, p: Plan): V1PersistentVolumeClaim {
  const next: Annotations = { ...(pvc.metadata?.annotations ?? {}) };
  for (const [k, v] of Object.entries(annotations(p))) {
    if (v === null) delete next[k];
    else next[k] = v;
  }
  return { ...pvc, metadata: { ...pvc.metadata, annotations: next } };
}

const SUCCESS = '{"message":"Import Complete","scratchSpaceRequired":false,"preallocationApplied":false}';
const SCRATCH = '{"message":"scratch space required","scratchSpaceRequired":true,"preallocationApplied":false}';
const UNAVAILABLE = '{"code":"SOURCE_UNAVAILABLE","message":"x","retryable":true}';

describe('retryDelay', () => {
  test.each<[number, number]>([
    [0, 10_000],
    [1, 10_000],
    [2, 20_000],
    [3, 40_000],
    [4, 80_000],
    [5, 160_000],
    [6, 300_000],
    [7, 300_000],
    [50, 300_000],
  ])('restarts %i → %i ms', (restarts, expected) => {
    expect(retryDelay(restarts, cfg)).toBe(expected);
  });

  test('never decreases and never exceeds the cap', () => {
    let prev = 0;
    for (let r = 0; r < 40; r++) {
      const d = retryDelay(r, cfg);
      expect(d).toBeGreaterThanOrEqual(prev);
      expect(d).toBeLessThanOrEqual(cfg.retryBackoffMaxMs);
      prev = d;
    }
  });

  test('the cap follows the config', () => {
    expect(retryDelay(3, { ...cfg, retryBackoffMs: 1000, retryBackoffMaxMs: 2500 })).toBe(2500);
  });
});

describe('planImport: nothing to do', () => {
  test.each<[string, V1PersistentVolumeClaim]>([
    ['no annotations at all', { metadata: { name: 'disk', namespace: 'vms', uid: PVC_UID } }],
    ['no import annotations', makePvc({ 'example.com/x': 'y' })],
    ['PVC being deleted', makePvc(IMPORT, { deleting: true })],
    ['invalid PVC being deleted', makePvc({ [Annotation.Source]: 'ftp' }, { deleting: true })],
  ])('%s → no actions', (_name, pvc) => {
    const p = plan(pvc);
    expect(p.actions).toEqual([]);
    expect(p.requeueAfterMs).toBeUndefined();
  });

  test('PVC being deleted with a failed pod → nothing', () => {
    expect(plan(makePvc(IMPORT, { deleting: true }), makePod({ phase: 'Failed', terminated: UNAVAILABLE })).actions).toEqual([]);
  });
});

describe('planImport: invalid request', () => {
  test.each<[string, Annotations]>([
    ['unknown source', { [Annotation.Source]: 'ftp', [Annotation.Endpoint]: URL }],
    ['http without endpoint', { [Annotation.Source]: 'http' }],
    ['bad content type', { [Annotation.Endpoint]: URL, [Annotation.ContentType]: 'iso' }],
    ['bad checksum', { [Annotation.Endpoint]: URL, [Annotation.Checksum]: 'sha256:00' }],
  ])('%s → Failed + INVALID_SPEC + one Warning event, reported once', (_name, ann) => {
    const pvc = makePvc(ann);
    const p = plan(pvc);
    expect(types(p)).toEqual(['annotate', 'event']);
    expect(annotations(p)).toMatchObject({
      [Annotation.PodPhase]: 'Failed',
      [Annotation.ErrorCode]: 'INVALID_SPEC',
      [Annotation.RunningCondition]: 'false',
      [Annotation.RunningReason]: 'INVALID_SPEC',
    });
    expect(of(p, 'event')[0]).toMatchObject({ eventType: 'Warning', reason: 'ErrInvalidImportRequest' });
    expect(types(p)).not.toContain('createPod');

    const again = plan(applied(pvc, p));
    expect(again.actions).toEqual([]);
  });

  test('fixing an invalid request afterwards starts the import', () => {
    const bad = makePvc({ [Annotation.Source]: 'http' });
    const reported = applied(bad, plan(bad));
    const fixed = makePvc({ ...(reported.metadata?.annotations ?? {}), [Annotation.Endpoint]: URL });
    const p = plan(fixed);
    expect(types(p)).toEqual(['annotate', 'createPod']);
    expect(annotations(p)[Annotation.PodPhase]).toBe('Pending');
  });
});

describe('planImport: starting', () => {
  test('no pod → annotate importPodName/Pending and createPod', () => {
    const p = plan(makePvc());
    expect(types(p)).toEqual(['annotate', 'createPod']);
    expect(annotations(p)).toEqual({
      [Annotation.ImportPodName]: 'importer-disk',
      [Annotation.PodPhase]: 'Pending',
      [Annotation.PodRestarts]: '0',
    });
    const create = of(p, 'createPod')[0];
    expect(create?.pod.metadata?.name).toBe('importer-disk');
    expect(create?.pod.metadata?.namespace).toBe('vms');
    expect(create?.pod.spec?.volumes?.some((v) => v.name === 'scratch')).toBe(false);
    expect(p.requeueAfterMs).toBeUndefined();
  });

  test('a second pass before the cache sees the pod only re-creates it (no annotate)', () => {
    const first = plan(makePvc());
    const second = plan(applied(makePvc(), first));
    expect(types(second)).toEqual(['createPod']);
  });

  test('a long PVC name gives a bounded pod name in the annotation and the pod', () => {
    const name = 'l'.repeat(200);
    const p = plan(makePvc(IMPORT, { name }));
    const podName = of(p, 'createPod')[0]?.pod.metadata?.name;
    expect(podName?.length).toBeLessThanOrEqual(63);
    expect(annotations(p)[Annotation.ImportPodName]).toBe(podName);
  });

  test('requiresScratch without scratch PVC → createScratchPvc then createPod with scratch', () => {
    const p = plan(makePvc({ ...IMPORT, [Annotation.RequiresScratch]: 'true' }));
    expect(types(p)).toEqual(['createScratchPvc', 'annotate', 'createPod']);
    expect(of(p, 'createScratchPvc')[0]?.pvc.metadata?.name).toBe('disk-scratch');
    const pod = of(p, 'createPod')[0]?.pod;
    expect(pod?.spec?.volumes?.find((v) => v.persistentVolumeClaim?.claimName === 'disk-scratch')).toBeDefined();
    expect(pod?.spec?.containers[0]?.env?.find((e) => e.name === 'IMPORTER_SCRATCH_DIR')?.value).toBe('/scratch');
  });

  test('requiresScratch with the scratch PVC present → createPod only', () => {
    const p = plan(makePvc({ ...IMPORT, [Annotation.RequiresScratch]: 'true' }), undefined, makeScratch());
    expect(types(p)).toEqual(['annotate', 'createPod']);
    expect(of(p, 'createPod')[0]?.pod.spec?.volumes?.some((v) => v.persistentVolumeClaim?.claimName === 'disk-scratch')).toBe(true);
  });

  test.each<[string, number, number]>([
    ['1 ms after a first failure', 1, 1],
    ['just before the first retry is due', 1, retryDelay(1, cfg) - 1],
    ['third restart, halfway', 3, retryDelay(3, cfg) / 2],
  ])('backoff not over (%s) → no actions, requeue for the remaining time', (_name, restarts, elapsed) => {
    const pvc = makePvc({
      ...IMPORT,
      [Annotation.PodRestarts]: String(restarts),
      [Annotation.PodPhase]: 'Pending',
      [Annotation.LastFailureTime]: new Date(NOW - elapsed).toISOString(),
    });
    const p = plan(pvc);
    expect(p.actions).toEqual([]);
    expect(p.requeueAfterMs).toBe(retryDelay(restarts, cfg) - elapsed);
  });

  test.each<[string, number, number]>([
    ['exactly due', 1, retryDelay(1, cfg)],
    ['well past due', 2, retryDelay(2, cfg) + 60_000],
  ])('backoff over (%s) → createPod', (_name, restarts, elapsed) => {
    const pvc = makePvc({
      ...IMPORT,
      [Annotation.PodRestarts]: String(restarts),
      [Annotation.PodPhase]: 'Pending',
      [Annotation.LastFailureTime]: new Date(NOW - elapsed).toISOString(),
    });
    const p = plan(pvc);
    expect(types(p)).toContain('createPod');
    expect(annotations(p)[Annotation.PodRestarts]).toBeUndefined();
    expect(p.requeueAfterMs).toBeUndefined();
  });
});

describe('planImport: pod pending or running', () => {
  test.each<[string, string, string]>([
    ['ImagePullBackOff', 'ImagePullBackOff', 'ImagePullFailed'],
    ['ErrImagePull', 'ErrImagePull', 'ImagePullFailed'],
    ['InvalidImageName', 'InvalidImageName', 'ImagePullFailed'],
    ['ContainerCreating', 'ContainerCreating', 'ContainerCreating'],
  ])('pending with %s → running reason %s', (_name, waiting, reason) => {
    const p = plan(makePvc(), makePod({ phase: 'Pending', waiting }));
    expect(types(p)).toEqual(['annotate']);
    expect(annotations(p)).toMatchObject({ [Annotation.PodPhase]: 'Pending', [Annotation.RunningCondition]: 'false', [Annotation.RunningReason]: reason });
  });

  test('image pull failure message names the image', () => {
    const p = plan(makePvc(), makePod({ phase: 'Pending', waiting: 'ImagePullBackOff' }));
    expect(annotations(p)[Annotation.RunningMessage]).toContain('ghcr.io/ferry-dev/ferry:latest');
  });

  test('pending without a reason → reason Pending', () => {
    const p = plan(makePvc(), makePod({ phase: 'Pending' }));
    expect(annotations(p)).toMatchObject({ [Annotation.PodPhase]: 'Pending', [Annotation.RunningReason]: 'Pending' });
  });

  test('running with podIP → phase Running, running=true, scrape, requeue after progress interval', () => {
    const p = plan(makePvc(), makePod({ phase: 'Running', podIP: '10.1.2.3' }));
    expect(types(p)).toEqual(['annotate']);
    expect(annotations(p)).toMatchObject({ [Annotation.PodPhase]: 'Running', [Annotation.RunningCondition]: 'true' });
    expect(p.scrape).toEqual({ podIP: '10.1.2.3' });
    expect(p.requeueAfterMs).toBe(cfg.progressIntervalMs);
  });

  test('running without podIP → no scrape, still requeued', () => {
    const p = plan(makePvc(), makePod({ phase: 'Running' }));
    expect(p.scrape).toBeUndefined();
    expect(p.requeueAfterMs).toBe(cfg.progressIntervalMs);
  });

  test('running again with annotations already in place → no annotate', () => {
    const pod = makePod({ phase: 'Running', podIP: '10.1.2.3' });
    const first = plan(makePvc(), pod);
    const second = plan(applied(makePvc(), first), pod);
    expect(second.actions).toEqual([]);
    expect(second.scrape).toEqual({ podIP: '10.1.2.3' });
  });

  test('a pod with the importer name owned by another UID → ImportPodNameTaken, never touched', () => {
    for (const phase of ['Pending', 'Running', 'Succeeded', 'Failed']) {
      const p = plan(makePvc(), makePod({ phase, ownerUid: 'someone-else', terminated: UNAVAILABLE }));
      expect(types(p)).not.toContain('createPod');
      expect(types(p)).not.toContain('deletePod');
      expect(annotations(p)).toMatchObject({ [Annotation.RunningCondition]: 'false', [Annotation.RunningReason]: 'ImportPodNameTaken' });
      expect(p.requeueAfterMs).toBeGreaterThan(0);
    }
  });

  test('a pod without owner references is not ours', () => {
    const pod = makePod({ phase: 'Failed', terminated: UNAVAILABLE });
    delete pod.metadata?.ownerReferences;
    const p = plan(makePvc(), pod);
    expect(types(p)).not.toContain('deletePod');
    expect(annotations(p)[Annotation.RunningReason]).toBe('ImportPodNameTaken');
  });
});

describe('planImport: success', () => {
  const running = { ...IMPORT, [Annotation.PodPhase]: 'Running', [Annotation.ImportPodName]: 'importer-disk', [Annotation.PodRestarts]: '0' };

  test('Succeeded → phase Succeeded, 100.0%, Completed, Normal event, deletePod', () => {
    const p = plan(makePvc(running), makePod({ phase: 'Succeeded', terminated: SUCCESS }));
    expect(types(p)).toEqual(['annotate', 'event', 'deletePod']);
    expect(annotations(p)).toMatchObject({
      [Annotation.PodPhase]: 'Succeeded',
      [Annotation.Progress]: '100.0%',
      [Annotation.RunningCondition]: 'false',
      [Annotation.RunningReason]: 'Completed',
      [Annotation.RunningMessage]: 'Import Complete',
    });
    expect(of(p, 'event')[0]).toMatchObject({ eventType: 'Normal', reason: 'ImportSucceeded' });
    expect(of(p, 'deletePod')[0]?.name).toBe('importer-disk');
  });

  test('Succeeded clears the error annotations of an earlier failure', () => {
    const pvc = makePvc({ ...running, [Annotation.ErrorCode]: 'SOURCE_UNAVAILABLE', [Annotation.LastFailureTime]: new Date(NOW - 60_000).toISOString() });
    const a = annotations(plan(pvc, makePod({ phase: 'Succeeded', terminated: SUCCESS })));
    expect(a[Annotation.ErrorCode]).toBeNull();
    expect(a[Annotation.LastFailureTime]).toBeNull();
  });

  test('preallocationApplied → preallocation annotation', () => {
    const msg = '{"message":"Import Complete","scratchSpaceRequired":false,"preallocationApplied":true}';
    expect(annotations(plan(makePvc(running), makePod({ phase: 'Succeeded', terminated: msg })))[Annotation.Preallocation]).toBe('true');
  });

  test('Succeeded with retainAfterCompletion → no deletePod', () => {
    const p = plan(makePvc({ ...running, [Annotation.RetainAfterCompletion]: 'true' }), makePod({ phase: 'Succeeded', terminated: SUCCESS }));
    expect(types(p)).toEqual(['annotate', 'event']);
  });

  test('Succeeded with a scratch PVC → deleteScratchPvc', () => {
    const p = plan(makePvc({ ...running, [Annotation.RequiresScratch]: 'true' }), makePod({ phase: 'Succeeded', terminated: SUCCESS }), makeScratch());
    expect(of(p, 'deleteScratchPvc')).toEqual([{ type: 'deleteScratchPvc', name: 'disk-scratch' }]);
  });

  test('a second pass with phase Succeeded already annotated → no event, only clean-up', () => {
    const pod = makePod({ phase: 'Succeeded', terminated: SUCCESS });
    const first = plan(makePvc(running), pod);
    const second = plan(applied(makePvc(running), first), pod);
    expect(types(second)).toEqual(['deletePod']);
    const retained = applied(makePvc({ ...running, [Annotation.RetainAfterCompletion]: 'true' }), first);
    expect(plan(retained, pod).actions).toEqual([]);
    expect(plan(applied(makePvc(running), first)).actions).toEqual([]);
  });

  test('Succeeded with scratchSpaceRequired → requiresScratch, event, deletePod, not Succeeded', () => {
    const pvc = makePvc(running);
    const pod = makePod({ phase: 'Succeeded', terminated: SCRATCH });
    const p = plan(pvc, pod);
    expect(types(p)).toEqual(['annotate', 'event', 'deletePod']);
    const a = annotations(p);
    expect(a[Annotation.RequiresScratch]).toBe('true');
    expect(a[Annotation.PodPhase]).toBeUndefined();
    expect(a[Annotation.Progress]).toBeUndefined();
    expect(of(p, 'event')[0]).toMatchObject({ eventType: 'Normal', reason: 'ScratchSpaceRequired' });

    // Seen again before the pod is gone: only the delete, no second event.
    const next = applied(pvc, p);
    expect(types(plan(next, pod))).toEqual(['deletePod']);
    // Pod gone: start again with scratch space.
    expect(types(plan(next))).toEqual(['createScratchPvc', 'annotate', 'createPod']);
  });

  test('Succeeded phase with a failure termination message is handled as a failure', () => {
    const p = plan(makePvc(running), makePod({ phase: 'Succeeded', terminated: UNAVAILABLE }));
    expect(annotations(p)).toMatchObject({ [Annotation.PodRestarts]: '1', [Annotation.ErrorCode]: 'SOURCE_UNAVAILABLE' });
    expect(annotations(p)[Annotation.PodPhase]).toBe('Pending');
  });
});

describe('planImport: failure', () => {
  const running = { ...IMPORT, [Annotation.PodPhase]: 'Running', [Annotation.ImportPodName]: 'importer-disk', [Annotation.PodRestarts]: '0' };

  test('retryable failure → restarts 1, Pending, errorCode, lastFailureTime, Warning event, deletePod, requeue', () => {
    const p = plan(makePvc(running), makePod({ phase: 'Failed', terminated: UNAVAILABLE }));
    expect(types(p)).toEqual(['annotate', 'event', 'deletePod']);
    expect(annotations(p)).toMatchObject({
      [Annotation.PodRestarts]: '1',
      [Annotation.PodPhase]: 'Pending',
      [Annotation.ErrorCode]: 'SOURCE_UNAVAILABLE',
      [Annotation.LastFailureTime]: new Date(NOW).toISOString(),
      [Annotation.LastFailedPod]: POD_UID,
      [Annotation.RunningCondition]: 'false',
      [Annotation.RunningReason]: 'SOURCE_UNAVAILABLE',
    });
    expect(annotations(p)[Annotation.FatalError]).toBeUndefined();
    expect(of(p, 'event')[0]).toMatchObject({ eventType: 'Warning', reason: 'ErrImportFailed' });
    expect(of(p, 'deletePod')[0]?.name).toBe('importer-disk');
    expect(p.requeueAfterMs).toBe(retryDelay(1, cfg));
  });

  test('the same failed pod seen again → only deletePod, restarts not incremented', () => {
    const pod = makePod({ phase: 'Failed', terminated: UNAVAILABLE });
    const first = plan(makePvc(running), pod);
    const second = plan(applied(makePvc(running), first), pod);
    expect(second.actions).toEqual([{ type: 'deletePod', name: 'importer-disk' }]);
  });

  test('a new failed pod (another uid) after a retry counts again', () => {
    const first = plan(makePvc(running), makePod({ phase: 'Failed', terminated: UNAVAILABLE }));
    const pvc = applied(makePvc(running), first);
    const later = NOW + retryDelay(1, cfg) + 5000;
    const second = plan(pvc, makePod({ phase: 'Failed', terminated: UNAVAILABLE, uid: 'pod-uid-2' }), undefined, later);
    expect(annotations(second)).toMatchObject({ [Annotation.PodRestarts]: '2', [Annotation.LastFailedPod]: 'pod-uid-2', [Annotation.LastFailureTime]: new Date(later).toISOString() });
    expect(second.requeueAfterMs).toBe(retryDelay(2, cfg));
  });

  test('a full retry cycle: fail, wait, create, fail ... until giving up', () => {
    const config: ControllerConfig = { ...cfg, maxRetries: 2 };
    let pvc = makePvc(running);
    let now = NOW;
    for (let attempt = 1; attempt <= 3; attempt++) {
      const failed = plan(pvc, makePod({ phase: 'Failed', terminated: UNAVAILABLE, uid: `uid-${attempt}` }), undefined, now, config);
      pvc = applied(pvc, failed);
      if (attempt <= 2) {
        expect(pvc.metadata?.annotations?.[Annotation.PodRestarts]).toBe(String(attempt));
        expect(plan(pvc, undefined, undefined, now + 1, config).actions).toEqual([]);
        now += failed.requeueAfterMs ?? 0;
        expect(types(plan(pvc, undefined, undefined, now, config))).toContain('createPod');
      } else {
        expect(pvc.metadata?.annotations).toMatchObject({ [Annotation.PodPhase]: 'Failed', [Annotation.FatalError]: 'true' });
        expect(plan(pvc, undefined, undefined, now + 10 ** 9, config).actions).toEqual([]);
      }
    }
  });

  test('restarts already at maxRetries and another retryable failure → Failed, fatalError, event says giving up', () => {
    const pvc = makePvc({ ...running, [Annotation.PodRestarts]: String(cfg.maxRetries), [Annotation.LastFailedPod]: 'older-pod' });
    const p = plan(pvc, makePod({ phase: 'Failed', terminated: UNAVAILABLE }));
    expect(annotations(p)).toMatchObject({
      [Annotation.PodPhase]: 'Failed',
      [Annotation.FatalError]: 'true',
      [Annotation.ErrorCode]: 'SOURCE_UNAVAILABLE',
    });
    expect(annotations(p)[Annotation.PodRestarts]).toBeUndefined();
    const event = of(p, 'event')[0];
    expect(event).toMatchObject({ eventType: 'Warning', reason: 'ErrImportFailed' });
    expect(event?.message).toMatch(/gave up|giving up/);
    expect(types(p)).toContain('deletePod');
    expect(p.requeueAfterMs).toBeUndefined();
  });

  test('maxRetries 0 → the first retryable failure is fatal', () => {
    const p = plan(makePvc(running), makePod({ phase: 'Failed', terminated: UNAVAILABLE }), undefined, NOW, { ...cfg, maxRetries: 0 });
    expect(annotations(p)).toMatchObject({ [Annotation.PodPhase]: 'Failed', [Annotation.FatalError]: 'true' });
  });

  test.each(['SOURCE_NOT_FOUND', 'UNAUTHORIZED', 'INVALID_IMAGE', 'CHECKSUM_MISMATCH', 'TARGET_TOO_SMALL', 'TLS_ERROR', 'UNSAFE_ARCHIVE'])(
    'permanent failure %s → immediately Failed + fatalError, no retry',
    (code) => {
      for (const terminated of [`{"code":"${code}","message":"nope","retryable":false}`, `{"code":"${code}","message":"nope"}`]) {
        const p = plan(makePvc(running), makePod({ phase: 'Failed', terminated }));
        expect(annotations(p)).toMatchObject({
          [Annotation.PodPhase]: 'Failed',
          [Annotation.FatalError]: 'true',
          [Annotation.ErrorCode]: code,
          [Annotation.RunningReason]: code,
        });
        expect(annotations(p)[Annotation.PodRestarts]).toBeUndefined();
        expect(annotations(p)[Annotation.LastFailureTime]).toBeUndefined();
        expect(of(p, 'event')[0]).toMatchObject({ eventType: 'Warning', reason: 'ErrImportFailed' });
        expect(of(p, 'event')[0]?.message).toContain(code);
        expect(types(p)).toContain('deletePod');
        expect(p.requeueAfterMs).toBeUndefined();
      }
    },
  );

  test('a permanent failure with retainAfterCompletion keeps the pod', () => {
    const p = plan(makePvc({ ...running, [Annotation.RetainAfterCompletion]: 'true' }), makePod({ phase: 'Failed', terminated: '{"code":"SOURCE_NOT_FOUND","message":"404"}' }));
    expect(annotations(p)[Annotation.FatalError]).toBe('true');
    expect(types(p)).not.toContain('deletePod');
  });

  test.each<[string, string | undefined]>([
    ['no termination message', undefined],
    ['a non-JSON message (a crash log)', 'panic: something broke\n  at main'],
    ['JSON of an unknown shape', '{"foo":1}'],
  ])('pod Failed with %s → retryable INTERNAL', (_name, terminated) => {
    const p = plan(makePvc(running), makePod({ phase: 'Failed', ...(terminated !== undefined ? { terminated } : {}) }));
    expect(annotations(p)).toMatchObject({ [Annotation.PodRestarts]: '1', [Annotation.PodPhase]: 'Pending', [Annotation.ErrorCode]: 'INTERNAL' });
    expect(annotations(p)[Annotation.FatalError]).toBeUndefined();
    expect(types(p)).toEqual(['annotate', 'event', 'deletePod']);
    expect(p.requeueAfterMs).toBe(retryDelay(1, cfg));
  });

  test('after fatalError, an existing failed pod is deleted', () => {
    const pvc = makePvc({ ...running, [Annotation.PodPhase]: 'Failed', [Annotation.FatalError]: 'true', [Annotation.LastFailedPod]: POD_UID });
    expect(plan(pvc, makePod({ phase: 'Failed', terminated: UNAVAILABLE })).actions).toEqual([{ type: 'deletePod', name: 'importer-disk' }]);
    expect(plan(pvc, makePod({ phase: 'Failed', terminated: UNAVAILABLE, uid: 'another' })).actions).toEqual([{ type: 'deletePod', name: 'importer-disk' }]);
  });

  test('after fatalError with retainAfterCompletion, the pod stays', () => {
    const pvc = makePvc({ ...running, [Annotation.PodPhase]: 'Failed', [Annotation.FatalError]: 'true', [Annotation.RetainAfterCompletion]: 'true' });
    expect(plan(pvc, makePod({ phase: 'Failed', terminated: UNAVAILABLE })).actions).toEqual([]);
  });

  test('after fatalError a running pod is not deleted, a scratch PVC is', () => {
    const pvc = makePvc({ ...running, [Annotation.FatalError]: 'true' });
    expect(plan(pvc, makePod({ phase: 'Running' }), makeScratch()).actions).toEqual([{ type: 'deleteScratchPvc', name: 'disk-scratch' }]);
  });

  test('after fatalError no pod is created again', () => {
    const pvc = makePvc({ ...running, [Annotation.PodPhase]: 'Failed', [Annotation.FatalError]: 'true' });
    expect(plan(pvc).actions).toEqual([]);
  });
});
