/** CDIConfig: effective values (spec over the controller's defaults) and the controller's plan. */

import { describe, expect, test } from '@jest/globals';
import { effectiveStatus, overheadFor, percent } from '../../src/api/cdiconfig.js';
import { CdiConfigAction, planCdiConfig } from '../../controller/cdiconfig/plan.js';

const defaults = { uploadProxyURL: 'https://proxy:31001', filesystemOverhead: 0.06, podResourceRequirements: { limits: { memory: '512Mi' } } };

describe('CDIConfig', () => {
  test('status: the spec where set, else the defaults', () => {
    expect(effectiveStatus(undefined, defaults)).toEqual({ uploadProxyURL: 'https://proxy:31001', defaultPodResourceRequirements: { limits: { memory: '512Mi' } }, filesystemOverhead: { global: '0.06' } });
    const spec = { uploadProxyURLOverride: 'https://x', filesystemOverhead: { storageClass: { a: '0.1' } }, podResourceRequirements: { requests: { cpu: '1' } }, scratchSpaceStorageClass: 'sc' };
    expect(effectiveStatus(spec, defaults)).toEqual({ uploadProxyURL: 'https://x', scratchSpaceStorageClass: 'sc', defaultPodResourceRequirements: { requests: { cpu: '1' } }, filesystemOverhead: { global: '0.06', storageClass: { a: '0.1' } } });
    expect(effectiveStatus({}, { ...defaults, uploadProxyURL: undefined } as never).uploadProxyURL).toBeUndefined();
  });

  test('percent and per-class overhead', () => {
    expect([percent(0.06), percent(0.0555), percent(1), percent(0)]).toEqual(['0.06', '0.056', '1', '0']);
    const status = { filesystemOverhead: { global: '0.06', storageClass: { local: '0.1', bad: '2' } } };
    expect([overheadFor(status, 'local'), overheadFor(status, 'other'), overheadFor(status, undefined), overheadFor(status, 'bad'), overheadFor(undefined, 'x')]).toEqual([0.1, 0.06, 0.06, undefined, undefined]);
  });

  test('plan: create when absent, write status when it differs, nothing when it matches (whatever the key order)', () => {
    expect(planCdiConfig(undefined, defaults)).toEqual({ action: CdiConfigAction.Create, object: { apiVersion: 'cdi.kubevirt.io/v1beta1', kind: 'CDIConfig', metadata: { name: 'config' }, spec: {} } });
    const stale = planCdiConfig({ spec: {}, status: {} }, defaults);
    expect(stale).toMatchObject({ action: CdiConfigAction.WriteStatus, status: { uploadProxyURL: 'https://proxy:31001' } });
    const written = { filesystemOverhead: { global: '0.06' }, defaultPodResourceRequirements: { limits: { memory: '512Mi' } }, uploadProxyURL: 'https://proxy:31001' };
    expect(planCdiConfig({ spec: {}, status: written }, defaults)).toBeUndefined();
    expect(planCdiConfig({ spec: { uploadProxyURLOverride: 'https://y' }, status: written }, defaults)).toMatchObject({ status: { uploadProxyURL: 'https://y' } });
  });
});
