/** `ferry image-upload`'s pure part: its flags, the objects it creates and the wait's verdicts. */

import { describe, expect, test } from '@jest/globals';
import { ErrorCode } from '../../src/errors.js';
import {
  dvReadiness,
  existingPvcVerdict,
  fatalEvent,
  type ImageUploadOptions,
  parseImageUploadArgs,
  pollUntil,
  portForwardHint,
  processingStep,
  proxyUrlFromConfig,
  pvcReadiness,
  tokenRequest,
  uploadDataVolume,
  uploadPvc,
  type WaitStep,
} from '../../cli/upload/plan.js';
import { codeOf, ferryErrorOf } from './helpers.js';

const parse = (line: string): ImageUploadOptions => {
  const o = parseImageUploadArgs(line.split(' ').filter((x) => x !== ''));
  if (o === 'help') throw new Error('help');
  return o;
};

describe('flags (virtctl image-upload\'s)', () => {
  test('defaults: --wait-secs 300, --retry 5, not insecure, kubevirt content', () => {
    expect(parse('pvc disk --image-path d.qcow2 --size 1Gi')).toEqual({ kind: 'pvc', name: 'disk', imagePath: 'd.qcow2', archive: false, size: '1Gi', insecure: false, noCreate: false, forceBind: false, waitSecs: 300, retry: 5 });
  });

  test('every flag', () => {
    expect(
      parse('dv d1 --archive-path a.tar --size 2Gi --uploadproxy-url https://p:8443 --insecure --storage-class fast --access-mode ReadWriteMany --volume-mode block --force-bind --wait-secs 10 --retry 2 -n ns --kubeconfig kc'),
    ).toEqual({ kind: 'dv', name: 'd1', imagePath: 'a.tar', archive: true, size: '2Gi', proxyUrl: 'https://p:8443', insecure: true, noCreate: false, forceBind: true, storageClass: 'fast', accessMode: 'ReadWriteMany', volumeMode: 'Block', waitSecs: 10, retry: 2, namespace: 'ns', kubeconfig: 'kc' });
    expect(parse('pvc x --image-path f --no-create').noCreate).toBe(true);
    expect(parse('pvc x --image-path f --no-create --volume-mode Filesystem').volumeMode).toBe('Filesystem');
    expect(parseImageUploadArgs(['--help'])).toBe('help');
  });

  test.each<[string, RegExp]>([
    ['vm x --image-path f --size 1Gi', /pvc or dv/],
    ['pvc --image-path f --size 1Gi', /name is required/],
    ['pvc Bad_Name --image-path f --size 1Gi', /not a valid pvc name/],
    ['pvc x --size 1Gi', /--image-path/],
    ['pvc x --image-path f', /the size must be specified/],
    ['pvc x --image-path f --archive-path t --size 1Gi', /exclude each other/],
    ['pvc x --image-path f --size lots', /not a byte quantity/],
    ['pvc x --image-path f --size 1Gi --access-mode ReadOnlyMany', /readonly volume/],
    ['pvc x --image-path f --size 1Gi --access-mode Sometimes', /--access-mode must be/],
    ['pvc x --image-path f --size 1Gi --volume-mode tape', /--volume-mode must be/],
    ['pvc x --image-path f --size 1Gi --retry 0', /--retry must be/],
    ['pvc x --image-path f --size 1Gi --wait-secs soon', /--wait-secs must be/],
    ['pvc x --image-path f --size 1Gi --frobnicate', /Unknown option/],
    ['pvc x y --image-path f --size 1Gi', /unexpected arguments/],
  ])('%s → INVALID_SPEC', (line, message) => {
    const error = ferryErrorOf(() => parse(line));
    expect(error.code).toBe(ErrorCode.InvalidSpec);
    expect(error.message).toMatch(message);
  });
});

describe('the objects, as virtctl renders them', () => {
  test('PVC: upload target, content type, applyStorageProfile label, RWO by default', () => {
    expect(uploadPvc(parse('pvc up1 --image-path f --size 1Gi'), 'default')).toEqual({
      apiVersion: 'v1',
      kind: 'PersistentVolumeClaim',
      metadata: {
        name: 'up1',
        namespace: 'default',
        labels: { 'cdi.kubevirt.io/applyStorageProfile': 'true' },
        // Ferry's one addition: a resumable upload, so the server gets scratch from the start (ADR 0010).
        annotations: { 'cdi.kubevirt.io/storage.upload.target': '', 'cdi.kubevirt.io/storage.contentType': 'kubevirt', 'ferry.dev/upload.resumable': 'true' },
      },
      spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } },
    });
    const full = uploadPvc(parse('pvc a --archive-path t --size 1Gi --storage-class sc --volume-mode block --force-bind --access-mode ReadWriteMany'), 'ns') as { metadata: { annotations: object }; spec: object };
    expect(full.metadata.annotations).toEqual({ 'cdi.kubevirt.io/storage.upload.target': '', 'cdi.kubevirt.io/storage.contentType': 'archive', 'ferry.dev/upload.resumable': 'true', 'cdi.kubevirt.io/storage.bind.immediate.requested': '' });
    expect(full.spec).toEqual({ accessModes: ['ReadWriteMany'], resources: { requests: { storage: '1Gi' } }, storageClassName: 'sc', volumeMode: 'Block' });
  });

  test('DataVolume: source.upload {}, spec.storage, no access mode unless given', () => {
    expect(uploadDataVolume(parse('dv dv2 --image-path f --size 1Gi'), 'default')).toEqual({
      apiVersion: 'cdi.kubevirt.io/v1beta1',
      kind: 'DataVolume',
      metadata: { name: 'dv2', namespace: 'default', annotations: { 'ferry.dev/upload.resumable': 'true' } },
      spec: { contentType: 'kubevirt', source: { upload: {} }, storage: { resources: { requests: { storage: '1Gi' } } } },
    });
  });

  test('the token request: generateName with Ferry\'s prefix, spec.pvcName', () => {
    expect(tokenRequest('disk')).toEqual({ apiVersion: 'upload.cdi.kubevirt.io/v1beta1', kind: 'UploadTokenRequest', metadata: { generateName: 'token-for-ferry-' }, spec: { pvcName: 'disk' } });
  });
});

describe('an existing PVC', () => {
  const pvc = (annotations: Record<string, string>) => ({ metadata: { name: 'x', annotations } });
  test('an upload target is used; a plain one is annotated with --no-create, else refused', () => {
    expect(existingPvcVerdict(pvc({ 'cdi.kubevirt.io/storage.upload.target': '' }), parse('pvc x --image-path f --size 1Gi'))).toBe('use');
    expect(existingPvcVerdict(pvc({}), parse('pvc x --image-path f --no-create'))).toBe('annotate');
    expect(codeOf(() => existingPvcVerdict(pvc({}), parse('pvc x --image-path f --size 1Gi')))).toBe(ErrorCode.InvalidSpec);
  });
  test('already Succeeded, or not archive for --archive-path: refused', () => {
    expect(ferryErrorOf(() => existingPvcVerdict(pvc({ 'cdi.kubevirt.io/storage.upload.target': '', 'cdi.kubevirt.io/storage.pod.phase': 'Succeeded' }), parse('pvc x --image-path f --no-create'))).message).toMatch(/already successfully imported/);
    expect(ferryErrorOf(() => existingPvcVerdict(pvc({ 'cdi.kubevirt.io/storage.upload.target': '' }), parse('pvc x --archive-path t --no-create'))).message).toMatch(/archive contentType/);
  });
});

describe('the waits', () => {
  test('PVC ready when pod.ready parses as true (strconv.ParseBool)', () => {
    const ready = (v: string | undefined): boolean => pvcReadiness({ metadata: { annotations: v === undefined ? {} : { 'cdi.kubevirt.io/storage.pod.ready': v } } }).done;
    expect([ready('true'), ready('True'), ready('1'), ready('t'), ready('false'), ready('yes'), ready(undefined)]).toEqual([true, true, true, true, false, false, false]);
    expect(pvcReadiness(undefined)).toEqual({ done: false, note: 'PVC not found yet' });
  });

  test('DV ready in UploadReady; WaitForFirstConsumer / PendingPopulation are errors without --force-bind', () => {
    expect(dvReadiness({ status: { phase: 'UploadReady' } }, false)).toEqual({ done: true });
    expect(dvReadiness({ status: { phase: 'UploadScheduled' } }, false)).toEqual({ done: false, note: 'phase UploadScheduled' });
    expect(ferryErrorOf(() => dvReadiness({ status: { phase: 'WaitForFirstConsumer' } }, false)).message).toMatch(/force-bind/);
    expect(codeOf(() => dvReadiness({ status: { phase: 'PendingPopulation' } }, false))).toBe(ErrorCode.InvalidSpec);
    expect(dvReadiness({ status: { phase: 'WaitForFirstConsumer' } }, true)).toEqual({ done: false, note: 'phase WaitForFirstConsumer' });
  });

  test('fatal events: ProvisioningFailed on this PVC (not the optimistic-lock one), ErrClaimNotValid on this DV', () => {
    const pvcEvent = (uid: string, reason: string, message = 'no volume plugin') => ({ involvedObject: { kind: 'PersistentVolumeClaim', uid }, reason, message });
    expect(fatalEvent([pvcEvent('other', 'ProvisioningFailed'), pvcEvent('u1', 'Provisioning')], 'u1', undefined)).toBeUndefined();
    expect(fatalEvent([pvcEvent('u1', 'ProvisioningFailed', 'Operation cannot be fulfilled: the object has been modified')], 'u1', undefined)).toBeUndefined();
    expect(fatalEvent([pvcEvent('u1', 'ProvisioningFailed')], 'u1', undefined)).toBe('provisioning failed: no volume plugin');
    expect(fatalEvent([{ involvedObject: { kind: 'DataVolume', uid: 'd1' }, reason: 'ErrClaimNotValid', message: 'no accessMode' }], undefined, 'd1')).toMatch(/not valid: no accessMode/);
  });

  test('processing: Succeeded done; Failed is an error with the reason', () => {
    expect(processingStep({ metadata: { annotations: { 'cdi.kubevirt.io/storage.pod.phase': 'Succeeded' } } })).toEqual({ done: true });
    expect(processingStep({ metadata: { annotations: { 'cdi.kubevirt.io/storage.pod.phase': 'Running' } } })).toEqual({ done: false });
    const failed = ferryErrorOf(() => processingStep({ metadata: { annotations: { 'cdi.kubevirt.io/storage.pod.phase': 'Failed', 'cdi.kubevirt.io/storage.condition.running.reason': 'Error', 'cdi.kubevirt.io/storage.condition.running.message': 'qemu-img said no' } } }));
    expect(failed).toMatchObject({ code: ErrorCode.TargetError, message: 'processing the upload failed: Error: qemu-img said no' });
  });

  test('pollUntil: immediate first look, every interval, a timeout naming what it waited for', async () => {
    let t = 0;
    const looks: number[] = [];
    const clock = { now: () => t, sleep: async (ms: number) => void (t += ms) };
    const after = (n: number) => async (): Promise<WaitStep> => {
      looks.push(t);
      return looks.length >= n ? { done: true } : { done: false };
    };
    await pollUntil(after(3), { what: 'x', intervalMs: 2000, timeoutMs: 10_000, ...clock });
    expect(looks).toEqual([0, 2000, 4000]);
    looks.length = 0;
    t = 0;
    const timedOut = await pollUntil(after(100), { what: 'the upload server of pvc ns/x', intervalMs: 2000, timeoutMs: 5000, ...clock }).catch((e: unknown) => e as Error);
    expect(looks).toEqual([0, 2000, 4000, 5000]);
    expect(timedOut).toMatchObject({ code: ErrorCode.SourceUnavailable, message: 'timed out after 5 s waiting for the upload server of pvc ns/x' });
  });

  test('pollUntil with firstIntervalMs: looks soon, then half again as long each time, up to the interval', async () => {
    let t = 0;
    const looks: number[] = [];
    const clock = { now: () => t, sleep: async (ms: number) => void (t += ms) };
    await pollUntil(async () => {
      looks.push(t);
      return { done: looks.length >= 9 };
    }, { what: 'x', intervalMs: 2000, firstIntervalMs: 200, timeoutMs: 60_000, ...clock });
    // Gaps 200, 300, 450, 675, 1013, 1520, 2000, 2000.
    expect(looks.slice(1).map((l, i) => l - (looks[i] ?? 0))).toEqual([200, 300, 450, 675, 1013, 1520, 2000, 2000]);
  });

  test('proxy URL from CDIConfig: the override first, then status; https:// added; none → undefined (a port-forward then)', () => {
    expect(proxyUrlFromConfig({ spec: { uploadProxyURLOverride: 'https://o:1' }, status: { uploadProxyURL: 'https://s:2' } })).toBe('https://o:1');
    expect(proxyUrlFromConfig({ spec: {}, status: { uploadProxyURL: '127.0.0.1:42211' } })).toBe('https://127.0.0.1:42211');
    expect(proxyUrlFromConfig({ spec: {}, status: {} })).toBeUndefined();
    expect(proxyUrlFromConfig(undefined)).toBeUndefined();
  });

  test('the hint (when no port-forward is possible) says how to port-forward to Ferry\'s proxy Service and how to run again through it', () => {
    expect(portForwardHint().split('\n')).toEqual([
      'to reach the upload proxy through the Kubernetes API, forward a local port to it in another terminal:',
      '  kubectl port-forward -n ferry-system service/ferry-uploadproxy 18443:443',
      'and run this command again with --uploadproxy-url https://127.0.0.1:18443 --insecure',
    ]);
  });
});
