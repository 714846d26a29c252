/**
 * The WaitForFirstConsumer step the import and upload plans share (controller/runtime/binding.ts
 * planWaiting/stopWaiting), as a table; and both plans taking exactly that step while their PVC waits.
 */

import { describe, expect, test } from '@jest/globals';
import type { V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { DEFAULT_CONFIG } from '../../controller/config.js';
import { planImport } from '../../controller/import/plan.js';
import { NOT_WAITING, planWaiting, stopWaiting, WAIT_FOR_FIRST_CONSUMER, waitingAnnotations, waitingMessage } from '../../controller/runtime/binding.js';
import { running } from '../../controller/runtime/pvc-status.js';
import { planUpload } from '../../controller/upload/plan.js';
import { Annotation, EventReason, UploadAnnotation } from '../../src/api/cdi.js';

const NOW = Date.parse('2026-12-01T12:00:00.000Z');
const MESSAGE = `PVC disk waits for a first consumer: storage class local binds on first use (annotate ${Annotation.ImmediateBinding} to import now)`;

function pvc(annotations: Record<string, string>): V1PersistentVolumeClaim {
  return {
    metadata: { name: 'disk', namespace: 'vms', uid: 'pvc-uid', annotations },
    spec: { accessModes: ['ReadWriteOnce'], storageClassName: 'local', resources: { requests: { storage: '1Gi' } } },
    status: { phase: 'Pending' },
  };
}

const WAITING = {
  [Annotation.BoundCondition]: 'false',
  [Annotation.BoundReason]: WAIT_FOR_FIRST_CONSUMER,
  [Annotation.BoundMessage]: MESSAGE,
};
const UPLOAD_ALSO = { [UploadAnnotation.PodReady]: 'false', ...running('false', WAIT_FOR_FIRST_CONSUMER, MESSAGE) };
const EVENT = { type: 'event', eventType: 'Normal', reason: EventReason.WaitForFirstConsumer, message: MESSAGE };

describe('planWaiting', () => {
  test('the message names the PVC and its class', () => {
    expect(waitingMessage(pvc({}))).toBe(MESSAGE);
    expect(waitingAnnotations(pvc({}))).toEqual(WAITING);
  });

  test.each([
    ['not marked yet (import)', {}, {}, [{ type: 'annotate', annotations: WAITING }, EVENT]],
    ['already marked (import): nothing, no second event', WAITING, {}, []],
    ['not marked yet (upload: pod not ready, not running)', {}, UPLOAD_ALSO, [{ type: 'annotate', annotations: { ...WAITING, ...UPLOAD_ALSO } }, EVENT]],
    ['already marked (upload)', { ...WAITING, ...UPLOAD_ALSO }, UPLOAD_ALSO, []],
    [
      'marked, but the upload pod was ready: only that changes, and the event goes with the change',
      { ...WAITING, ...UPLOAD_ALSO, [UploadAnnotation.PodReady]: 'true' },
      UPLOAD_ALSO,
      [{ type: 'annotate', annotations: { [UploadAnnotation.PodReady]: 'false' } }, EVENT],
    ],
    ['an old message is replaced', { ...WAITING, [Annotation.BoundMessage]: 'old' }, {}, [{ type: 'annotate', annotations: { [Annotation.BoundMessage]: MESSAGE } }, EVENT]],
  ])('%s', (_what, current, also, actions) => {
    expect(planWaiting(pvc(current), current, also)).toEqual(actions);
  });
});

describe('stopWaiting', () => {
  test.each([
    ['marked waiting', WAITING, NOT_WAITING],
    ['never marked', {}, {}],
    ['bound for another reason', { [Annotation.BoundReason]: 'Other' }, {}],
  ])('%s', (_what, current, expected) => {
    expect(stopWaiting(current)).toEqual(expected);
  });
});

describe('the plans take the step', () => {
  test('import: a waiting PVC without a pod gets exactly planWaiting', () => {
    const claim = pvc({ [Annotation.Endpoint]: 'http://x/disk.img' });
    expect(planImport({ pvc: claim, waitForFirstConsumer: true, now: NOW }, DEFAULT_CONFIG).actions).toEqual(planWaiting(claim, claim.metadata!.annotations!));
  });

  test('upload: a waiting PVC without a pod gets planWaiting with the pod not ready and not running', () => {
    const claim = pvc({ [UploadAnnotation.Target]: '' });
    const { actions } = planUpload({ pvc: claim, waitForFirstConsumer: true, now: NOW }, DEFAULT_CONFIG);
    expect(actions).toEqual(planWaiting(claim, claim.metadata!.annotations!, UPLOAD_ALSO));
    expect(actions).toContainEqual(EVENT);
  });

  test('import: starting the pod clears the waiting mark', () => {
    const claim = pvc({ [Annotation.Endpoint]: 'http://x/disk.img', ...WAITING });
    const annotate = planImport({ pvc: claim, waitForFirstConsumer: false, now: NOW }, DEFAULT_CONFIG).actions.find((a) => a.type === 'annotate');
    expect(annotate).toMatchObject({ annotations: NOT_WAITING });
  });
});
