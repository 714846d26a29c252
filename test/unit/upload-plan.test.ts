import { describe, expect, test } from '@jest/globals';
import type { V1PersistentVolumeClaim, V1Pod, V1Service } from '@kubernetes/client-node';
import { DEFAULT_CONFIG } from '../../controller/config.js';
import { planUpload, podReady, type UploadAction, type UploadObserved } from '../../controller/upload/plan.js';
import { buildUploadPod, uploadServerHosts, withEarlierDeadline } from '../../controller/upload/upload-pod.js';
import { Annotation, UploadAnnotation } from '../../src/api/cdi.js';
import { decodeUploadServerEnv } from '../../src/contract/upload-server.js';
import { WORKER_NODE_OPTIONS } from '../../src/contract/import-spec.js';
import { encodeTermination } from '../../src/contract/termination.js';
import { ErrorCode } from '../../src/errors.js';
import { targetStatusOf, addressResolver } from '../../uploadproxy/target-status.js';
import { inClusterServer } from '../../uploadproxy/kube-get.js';
import { BOTH_IMPORT_AND_UPLOAD } from '../../controller/upload/plan.js';
import { planImport } from '../../controller/import/plan.js';
import { UploadAnnotation as UploadClientAnnotation } from '../../src/contract/upload-api.js';

const NOW = Date.parse('2026-05-01T12:00:00.000Z');
const PVC_UID = 'pvc-uid';
const cfg = DEFAULT_CONFIG;
type Annotations = Record<string, string>;
const TARGET: Annotations = { [UploadAnnotation.Target]: '' };

function pvc(annotations: Annotations = TARGET, o: { block?: boolean; deleting?: boolean } = {}): V1PersistentVolumeClaim {
  return {
    metadata: { name: 'disk', namespace: 'vms', uid: PVC_UID, annotations: { ...annotations }, ...(o.deleting ? { deletionTimestamp: new Date(NOW) } : {}) },
    spec: { accessModes: ['ReadWriteOnce'], volumeMode: o.block ? 'Block' : 'Filesystem', resources: { requests: { storage: '1Gi' } } },
  };
}

const owned = (uid = PVC_UID) => [{ apiVersion: 'v1', kind: 'PersistentVolumeClaim', name: 'disk', uid, controller: true }];

function pod(phase: string, o: { ready?: boolean; terminated?: string; uid?: string; ownerUid?: string; waiting?: string } = {}): V1Pod {
  const state = o.terminated !== undefined ? { terminated: { exitCode: 0, message: o.terminated } } : o.waiting ? { waiting: { reason: o.waiting } } : { running: {} };
  return {
    metadata: { name: 'cdi-upload-disk', namespace: 'vms', uid: o.uid ?? 'pod-uid', ownerReferences: owned(o.ownerUid) },
    spec: { containers: [{ name: 'uploadserver', image: 'ferry' }] },
    status: { phase, containerStatuses: [{ name: 'uploadserver', image: 'ferry', imageID: '', ready: o.ready ?? false, restartCount: 0, state }] },
  };
}

const service = (ownerUid = PVC_UID): V1Service => ({ metadata: { name: 'cdi-upload-disk', namespace: 'vms', ownerReferences: owned(ownerUid) } });
const types = (actions: readonly UploadAction[]) => actions.map((a) => a.type);
const annotated = (actions: readonly UploadAction[]) => Object.assign({}, ...actions.filter((a) => a.type === 'annotate').map((a) => (a as { annotations: object }).annotations));
const events = (actions: readonly UploadAction[]) => actions.filter((a) => a.type === 'event').map((a) => (a as { reason: string }).reason);
const plan = (o: Partial<UploadObserved> & { pvc: V1PersistentVolumeClaim }) => planUpload({ now: NOW, ...o }, cfg);
const success = encodeTermination({ kind: 'success', message: 'Import Complete', scratchSpaceRequired: false, preallocationApplied: false });
const needsScratch = encodeTermination({ kind: 'success', message: 'scratch space required and none found', scratchSpaceRequired: true, preallocationApplied: false });

describe('planUpload', () => {
  test.each([
    ['not an upload target', { pvc: pvc({}) }, []],
    ['being deleted', { pvc: pvc(TARGET, { deleting: true }) }, []],
    ['new target: annotations, then the server (secret, service, pod)', { pvc: pvc() }, ['annotate', 'startServer']],
    ['pod pending', { pvc: pvc(), pod: pod('Pending', { waiting: 'ContainerCreating' }), service: service() }, ['annotate']],
    ['done with pod and service left: tidy up', { pvc: pvc({ ...TARGET, [Annotation.PodPhase]: 'Succeeded' }), pod: pod('Succeeded'), service: service() }, ['deletePod', 'deleteTlsSecret', 'deleteService']],
    ['done, retained pod stays', { pvc: pvc({ ...TARGET, [Annotation.PodPhase]: 'Succeeded', [Annotation.RetainAfterCompletion]: 'true' }), pod: pod('Succeeded'), service: service() }, ['deleteTlsSecret', 'deleteService']],
    ['done and clean', { pvc: pvc({ ...TARGET, [Annotation.PodPhase]: 'Succeeded' }) }, []],
  ] as const)('%s', (_name, observed, expected) => {
    expect(types(plan(observed as UploadObserved).actions)).toEqual(expected);
  });

  test('a new target gets CDI annotations and a restricted pod with the PVC, the TLS secret and a readiness probe', () => {
    const p = plan({ pvc: pvc() });
    expect(annotated(p.actions)).toEqual({ [UploadAnnotation.PodName]: 'cdi-upload-disk', [Annotation.PodPhase]: 'Pending', [UploadAnnotation.PodReady]: 'false', [Annotation.PodRestarts]: '0' });
    const start = p.actions.find((a) => a.type === 'startServer') as Extract<UploadAction, { type: 'startServer' }>;
    expect(start.hosts).toEqual(['cdi-upload-disk', 'cdi-upload-disk.vms', 'cdi-upload-disk.vms.svc', 'cdi-upload-disk.vms.svc.cluster.local']);
    expect(start.service?.spec?.ports?.[0]).toMatchObject({ port: 8443, targetPort: 8443 });
    expect(start.service?.spec?.selector).toEqual({ service: 'cdi-upload-disk' });
    const spec = start.pod.spec!;
    const c = spec.containers[0]!;
    expect(c.args).toEqual(['uploadserver']);
    expect(spec.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    expect(c.securityContext).toMatchObject({ allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] }, runAsNonRoot: true });
    expect(c.readinessProbe?.httpGet).toMatchObject({ path: '/healthz', port: 8443, scheme: 'HTTPS' });
    expect(c.volumeMounts?.map((m) => m.mountPath).sort()).toEqual(['/data', '/etc/ferry/upload-tls']);
    const env = decodeUploadServerEnv(Object.fromEntries((c.env ?? []).map((e) => [e.name, e.value])));
    expect(env).toMatchObject({ target: { kind: 'file', path: '/data/disk.img' }, contentType: 'kubevirt', capacity: 1024 ** 3, clientName: 'client.upload-server.cdi.kubevirt.io', port: 8443, deadline: NOW + cfg.uploadDeadlineMs });
    expect(env.scratchDir).toBeUndefined();
  });

  test('block volumes are a device; archive targets a directory; scratch only once required', () => {
    const block = buildUploadPod(pvc(TARGET, { block: true }), 'kubevirt', cfg, { withScratch: false, deadline: NOW });
    expect(block.spec?.containers[0]?.volumeDevices).toEqual([{ name: 'data', devicePath: '/dev/cdi-block-volume' }]);
    const archive = plan({ pvc: pvc({ ...TARGET, [Annotation.ContentType]: 'archive' }) });
    const archivePod = (archive.actions.find((a) => a.type === 'startServer') as Extract<UploadAction, { type: 'startServer' }>).pod;
    expect(archivePod.spec?.containers[0]?.env?.find((e) => e.name === 'DESTINATION')?.value).toBe('/data');
    const scratch = plan({ pvc: pvc({ ...TARGET, [Annotation.RequiresScratch]: 'true' }), service: service() });
    expect(types(scratch.actions)).toEqual(['createScratchPvc', 'annotate', 'startServer']);
    const start = scratch.actions.find((a) => a.type === 'startServer') as Extract<UploadAction, { type: 'startServer' }>;
    expect(start.service).toBeUndefined();
    expect(start.pod.spec?.containers[0]?.env?.find((e) => e.name === 'UPLOAD_SCRATCH_DIR')?.value).toBe('/scratch');
  });

  test('running and ready → storage.pod.ready "true" and one UploadReady event', () => {
    const notReady = plan({ pvc: pvc(), pod: pod('Running'), service: service() });
    expect(annotated(notReady.actions)).toMatchObject({ [Annotation.PodPhase]: 'Running', [UploadAnnotation.PodReady]: 'false', [Annotation.RunningCondition]: 'true' });
    const ready = plan({ pvc: pvc(), pod: pod('Running', { ready: true }), service: service() });
    expect(annotated(ready.actions)[UploadAnnotation.PodReady]).toBe('true');
    expect(events(ready.actions)).toEqual(['UploadReady']);
    const again = plan({ pvc: pvc({ ...TARGET, ...annotated(ready.actions) }), pod: pod('Running', { ready: true }), service: service() });
    expect(again.actions).toEqual([]);
    expect(podReady({ status: { conditions: [{ type: 'Ready', status: 'False' }], containerStatuses: [{ name: 'x', image: '', imageID: '', ready: true, restartCount: 0 }] } })).toBe(false);
  });

  test('success → Succeeded, event, pod, service, secret and scratch removed', () => {
    const p = plan({ pvc: pvc({ ...TARGET, [Annotation.PodPhase]: 'Running' }), pod: pod('Succeeded', { terminated: success }), service: service(), scratchPvc: pvc({}) });
    expect(annotated(p.actions)).toMatchObject({ [Annotation.PodPhase]: 'Succeeded', [UploadAnnotation.PodReady]: 'false', [Annotation.RunningReason]: 'Completed', [Annotation.RunningMessage]: 'Upload Complete' });
    expect(events(p.actions)).toEqual(['UploadSucceeded']);
    expect(types(p.actions)).toEqual(['annotate', 'event', 'deletePod', 'deleteTlsSecret', 'deleteService', 'deleteScratchPvc']);
  });

  test('a server that needed scratch is replaced by one with scratch', () => {
    const p = plan({ pvc: pvc({ ...TARGET, [Annotation.PodPhase]: 'Running' }), pod: pod('Succeeded', { terminated: needsScratch }), service: service() });
    expect(annotated(p.actions)[Annotation.RequiresScratch]).toBe('true');
    expect(types(p.actions)).toEqual(['annotate', 'event', 'deletePod']);
  });

  test('a deadline exit replaces the pod without counting a failure; other failures count, then give up', () => {
    const deadline = encodeTermination({ kind: 'failure', code: ErrorCode.Interrupted, message: 'deadlinePassed: no upload finished before the deadline', retryable: true });
    const d = plan({ pvc: pvc(), pod: pod('Failed', { terminated: deadline }), service: service() });
    expect(types(d.actions)).toEqual(['annotate', 'deletePod']);
    expect(annotated(d.actions)[Annotation.PodRestarts]).toBeUndefined();
    const broken = encodeTermination({ kind: 'failure', code: ErrorCode.Internal, message: 'qemu-img crashed', retryable: true });
    const f = plan({ pvc: pvc(), pod: pod('Failed', { terminated: broken }), service: service() });
    expect(annotated(f.actions)).toMatchObject({ [Annotation.PodRestarts]: '1', [Annotation.PodPhase]: 'Pending', [Annotation.ErrorCode]: 'INTERNAL' });
    expect(events(f.actions)).toEqual(['ErrUploadFailed']);
    const last = plan({ pvc: pvc({ ...TARGET, [Annotation.PodRestarts]: String(cfg.maxRetries) }), pod: pod('Failed', { terminated: broken }), service: service() });
    expect(annotated(last.actions)).toMatchObject({ [Annotation.PodPhase]: 'Failed', [Annotation.FatalError]: 'true' });
    expect(types(last.actions)).toContain('deleteService');
  });

  test('after a counted failure the next server waits for its backoff', () => {
    const p = plan({ pvc: pvc({ ...TARGET, [Annotation.PodRestarts]: '1', [Annotation.LastFailureTime]: new Date(NOW - 1000).toISOString() }), service: service() });
    expect(p.actions).toEqual([]);
    expect(p.requeueAfterMs).toBe(cfg.retryBackoffMs - 1000);
  });

  test('a pod or service of the name that is not ours is reported, not touched', () => {
    const p = plan({ pvc: pvc(), pod: pod('Running', { ownerUid: 'someone-else' }) });
    expect(types(p.actions)).toEqual(['annotate', 'event']);
    expect(annotated(p.actions)[Annotation.RunningReason]).toBe('UploadPodNameTaken');
    expect(types(plan({ pvc: pvc(), service: service('other') }).actions)).toEqual(['annotate', 'event']);
  });

  test('an unknown content type fails once with INVALID_SPEC', () => {
    const p = plan({ pvc: pvc({ ...TARGET, [Annotation.ContentType]: 'iso' }) });
    expect(annotated(p.actions)).toMatchObject({ [Annotation.PodPhase]: 'Failed', [Annotation.ErrorCode]: 'INVALID_SPEC' });
    expect(events(p.actions)).toEqual(['ErrUploadFailed']);
  });
});

describe('planUpload: resumable uploads, WaitForFirstConsumer, one source per volume', () => {
  test('a PVC that asks for a resumable upload gets scratch from its first server on', () => {
    const p = plan({ pvc: pvc({ ...TARGET, [UploadClientAnnotation.Resumable]: 'true' }) });
    expect(types(p.actions)).toEqual(['createScratchPvc', 'annotate', 'startServer']);
    const start = p.actions.find((a) => a.type === 'startServer') as Extract<UploadAction, { type: 'startServer' }>;
    expect(start.pod.spec?.containers[0]?.env?.find((e) => e.name === 'UPLOAD_SCRATCH_DIR')?.value).toBe('/scratch');
    expect(start.pod.spec?.volumes?.find((v) => v.name === 'scratch')?.persistentVolumeClaim?.claimName).toBe('disk-scratch');
    // A replacement server (after a failure) mounts the same scratch PVC: it is not made again.
    const again = plan({ pvc: pvc({ ...TARGET, [UploadClientAnnotation.Resumable]: 'true', [Annotation.PodRestarts]: '1' }), scratchPvc: pvc({}), service: service() });
    expect(types(again.actions)).toEqual(['annotate', 'startServer']);
  });

  test('WaitForFirstConsumer: no server, CDI\'s bound condition and one event; once bound (or asked to bind now) the server starts and the condition goes', () => {
    const waiting = plan({ pvc: pvc(), waitForFirstConsumer: true });
    expect(types(waiting.actions)).toEqual(['annotate', 'event']);
    expect(annotated(waiting.actions)).toMatchObject({ [Annotation.BoundCondition]: 'false', [Annotation.BoundReason]: 'WaitForFirstConsumer', [UploadAnnotation.PodReady]: 'false', [Annotation.RunningReason]: 'WaitForFirstConsumer' });
    expect(events(waiting.actions)).toEqual(['WaitForFirstConsumer']);
    const marked = { ...TARGET, ...annotated(waiting.actions) };
    expect(plan({ pvc: pvc(marked), waitForFirstConsumer: true }).actions).toEqual([]);
    const bound = plan({ pvc: pvc(marked), waitForFirstConsumer: false });
    expect(types(bound.actions)).toEqual(['annotate', 'startServer']);
    expect(annotated(bound.actions)).toMatchObject({ [Annotation.BoundCondition]: null, [Annotation.BoundReason]: null, [Annotation.BoundMessage]: null });
  });

  test('a PVC annotated for an import and an upload: refused once (INVALID_SPEC, a Warning event, the running condition), no pod from either controller', () => {
    const both = { ...TARGET, [Annotation.Endpoint]: 'http://example.test/disk.img' };
    const p = plan({ pvc: pvc(both) });
    expect(types(p.actions)).toEqual(['annotate', 'event']);
    expect(annotated(p.actions)).toMatchObject({ [Annotation.PodPhase]: 'Failed', [Annotation.ErrorCode]: 'INVALID_SPEC', [Annotation.RunningCondition]: 'false', [Annotation.RunningReason]: BOTH_IMPORT_AND_UPLOAD });
    expect(events(p.actions)).toEqual([BOTH_IMPORT_AND_UPLOAD]);
    // Stable: the refused PVC is left as it is.
    expect(plan({ pvc: pvc({ ...both, ...annotated(p.actions) }) }).actions).toEqual([]);
    // An upload server started before the import annotation came is removed.
    expect(types(plan({ pvc: pvc(both), pod: pod('Running'), service: service() }).actions)).toEqual(['annotate', 'event', 'deletePod', 'deleteTlsSecret', 'deleteService']);
    // An invalid import request counts too; the import controller leaves every upload target alone.
    expect(events(plan({ pvc: pvc({ ...TARGET, [Annotation.Source]: 'ftp' }) }).actions)).toEqual([BOTH_IMPORT_AND_UPLOAD]);
    expect(planImport({ pvc: pvc(both), now: NOW }, cfg).actions).toEqual([]);
    expect(planImport({ pvc: pvc({ ...TARGET, [Annotation.Source]: 'ftp' }), now: NOW }, cfg).actions).toEqual([]);
    expect(planImport({ pvc: pvc({ [Annotation.Endpoint]: 'http://example.test/disk.img' }), now: NOW }, cfg).actions.map((a) => a.type)).toContain('createPod');
  });
});

describe('upload pod helpers', () => {
  test('the deadline only moves earlier', () => {
    const p = buildUploadPod(pvc(), 'kubevirt', cfg, { withScratch: false, deadline: NOW + 10_000 });
    const deadlineOf = (x: V1Pod) => x.spec?.containers[0]?.env?.find((e) => e.name === 'DEADLINE')?.value;
    expect(deadlineOf(withEarlierDeadline(p, NOW + 5000))).toBe(new Date(NOW + 5000).toISOString());
    expect(deadlineOf(withEarlierDeadline(p, NOW + 50_000))).toBe(new Date(NOW + 10_000).toISOString());
    expect(uploadServerHosts('ns', 'x')[2]).toBe('cdi-upload-x.ns.svc');
  });

  test('the server runs with the data-path pods\' V8 heap cap', () => {
    const p = buildUploadPod(pvc(), 'kubevirt', cfg, { withScratch: false, deadline: NOW + 10_000 });
    expect(p.spec?.containers[0]?.env?.find((e) => e.name === 'NODE_OPTIONS')?.value).toBe(WORKER_NODE_OPTIONS);
  });
});

describe('the proxy target status', () => {
  test.each([
    ['missing', undefined, 'missing'],
    ['no target annotation', {}, 'not-upload-target'],
    ['finished', { ...TARGET, [Annotation.PodPhase]: 'Succeeded' }, 'succeeded'],
    ['ready', { ...TARGET, [UploadAnnotation.PodReady]: 'true' }, 'ready'],
    ['not ready yet', { ...TARGET, [UploadAnnotation.PodReady]: 'false' }, 'not-ready'],
  ] as const)('%s', (_n, annotations, kind) => {
    expect(targetStatusOf(annotations).kind).toBe(kind);
  });

  test('server address template: CDI default, other hosts, the certificate name is always the Service', () => {
    expect(addressResolver('{service}.{namespace}.svc:8443')('vms', 'disk')).toEqual({ host: 'cdi-upload-disk.vms.svc', port: 8443, servername: 'cdi-upload-disk.vms.svc' });
    expect(addressResolver('127.0.0.1:9000')('vms', 'disk')).toEqual({ host: '127.0.0.1', port: 9000, servername: 'cdi-upload-disk.vms.svc' });
    expect(() => addressResolver('host:99999')).toThrow(/address template/);
  });

  test('in a pod, the API server from the kubelet variables, an IPv6 host bracketed', () => {
    expect(inClusterServer('10.96.0.1', '443')).toBe('https://10.96.0.1:443');
    expect(inClusterServer('fd00::1', '6443')).toBe('https://[fd00::1]:6443');
  });
});
