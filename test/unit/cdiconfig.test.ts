/** CDIConfig: effective values (spec over the controller's defaults) and the controller's plan. */

import { describe, expect, test } from '@jest/globals';
import { effectiveStatus, overheadFor, overheadOfClass, percent, resolveSettings } from '../../src/api/cdiconfig.js';
import { CdiConfigAction, planCdiConfig } from '../../controller/cdiconfig/plan.js';
import { configWithSettings, fixedSettings, flagDefaults } from '../../controller/runtime/cdi-settings.js';
import { DEFAULT_CONFIG } from '../../controller/config.js';

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

  test('settings: the flags alone, when there is no object or an empty spec', () => {
    for (const spec of [undefined, {}]) {
      expect(resolveSettings(spec, defaults)).toEqual({
        uploadProxyURL: 'https://proxy:31001',
        filesystemOverhead: { global: 0.06, storageClass: {} },
        podResourceRequirements: { limits: { memory: '512Mi' } },
        importProxy: {},
      });
    }
    expect(fixedSettings(flagDefaults(DEFAULT_CONFIG)).current()).toEqual({
      filesystemOverhead: { global: DEFAULT_CONFIG.filesystemOverhead, storageClass: {} },
      podResourceRequirements: DEFAULT_CONFIG.importerResources,
      importProxy: {},
    });
  });

  test('settings: every spec field over the flags, as the status the controller writes says', () => {
    const spec = {
      uploadProxyURLOverride: 'https://uploads.corp',
      filesystemOverhead: { global: '0.1', storageClass: { local: '0.055', thin: '0', broken: '7' } },
      scratchSpaceStorageClass: 'fast',
      podResourceRequirements: { requests: { cpu: '250m' }, limits: { cpu: '2', memory: '1Gi' } },
      importProxy: { HTTPProxy: 'http://squid:3128', HTTPSProxy: 'http://squid:3129', noProxy: '.svc,10.0.0.0/8', trustedCAProxy: 'corp-ca' },
    };
    const settings = resolveSettings(spec, defaults);
    expect(settings).toEqual({
      uploadProxyURL: 'https://uploads.corp',
      filesystemOverhead: { global: 0.1, storageClass: { local: 0.055, thin: 0 } },
      scratchSpaceStorageClass: 'fast',
      podResourceRequirements: spec.podResourceRequirements,
      importProxy: { httpProxy: 'http://squid:3128', httpsProxy: 'http://squid:3129', noProxy: '.svc,10.0.0.0/8', trustedCAProxy: 'corp-ca' },
    });
    // The status carries the same values (the resolution reads them back from it).
    const status = effectiveStatus(spec, defaults);
    expect(status.defaultPodResourceRequirements).toEqual(settings.podResourceRequirements);
    expect(status.scratchSpaceStorageClass).toBe(settings.scratchSpaceStorageClass);
    expect(status.uploadProxyURL).toBe(settings.uploadProxyURL);
    expect(status.importProxy).toEqual({ HTTPProxy: settings.importProxy.httpProxy, HTTPSProxy: settings.importProxy.httpsProxy, noProxy: settings.importProxy.noProxy, trustedCAProxy: settings.importProxy.trustedCAProxy });
    expect(Object.isFrozen(settings)).toBe(true);
    // Per class, else global; a malformed per-class value (the schema refuses one) falls to the global.
    expect([overheadOfClass(settings, 'local'), overheadOfClass(settings, 'thin'), overheadOfClass(settings, 'broken'), overheadOfClass(settings, 'other'), overheadOfClass(settings, undefined)]).toEqual([0.055, 0, 0.1, 0.1, 0.1]);
    // Empty proxy strings are no proxy.
    expect(resolveSettings({ importProxy: { HTTPProxy: '', noProxy: ' ' } }, defaults).importProxy).toEqual({});
  });

  test('a controller that reads the flags sees the settings under their names', () => {
    const settings = resolveSettings({ podResourceRequirements: { limits: { cpu: '3' } }, filesystemOverhead: { global: '0.2', storageClass: { local: '0.01' } } }, defaults);
    const config = { ...DEFAULT_CONFIG, filesystemOverhead: 0.06 };
    expect(configWithSettings(config, undefined, 'local')).toBe(config);
    expect(configWithSettings(config, settings, 'local')).toMatchObject({ importerResources: { limits: { cpu: '3' } }, filesystemOverhead: 0.01, importerImage: DEFAULT_CONFIG.importerImage });
    expect(configWithSettings(config, settings, undefined).filesystemOverhead).toBe(0.2);
  });
});
