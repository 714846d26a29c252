/**
 * The one place every controller gets its CDIConfig settings from: a watch on CDIConfig `config`
 * (shared informer) and the pure resolution in src/api/cdiconfig.ts, spec over the flags. Read on
 * every reconcile, so an admin's change applies to the next pod or PVC created, with no restart.
 * Without the CRD (or before `config` exists) the flags are the settings; the CRD is looked for
 * again every `retryCrdMs`.
 */

import type { CustomObjectsApi } from '@kubernetes/client-node';
import { type CdiConfig, type CdiConfigDefaults, CDICONFIG_GROUP, CDICONFIG_NAME, CDICONFIG_PLURAL, CDICONFIG_VERSION, type CdiSettings, overheadOfClass, resolveSettings } from '../../src/api/cdiconfig.js';
import type { Logger } from '../../src/logging.js';
import type { ControllerConfig } from '../config.js';
import { crdServed } from './crds.js';
import { errorLine } from './errors.js';
import type { InformerFactory, SharedInformer } from './informers.js';

/** What reconcilers read: the settings in effect now. */
export interface SettingsSource {
  current(): CdiSettings;
}

/** Pure: CDIConfig's fallbacks, the controller's own flags. */
export function flagDefaults(config: Pick<ControllerConfig, 'filesystemOverhead' | 'importerResources'>, uploadProxyURL?: string): CdiConfigDefaults {
  return { ...(uploadProxyURL ? { uploadProxyURL } : {}), filesystemOverhead: config.filesystemOverhead, podResourceRequirements: config.importerResources };
}

/** Settings from the flags alone (a controller started without the cache, and the unit tests). */
export function fixedSettings(defaults: CdiConfigDefaults): SettingsSource {
  const settings = resolveSettings(undefined, defaults);
  return { current: () => settings };
}

export class CdiSettingsCache implements SettingsSource {
  private readonly informer: SharedInformer<CdiConfig & { metadata?: { name?: string } }>;
  private seen: { object: CdiConfig | undefined; settings: CdiSettings } | undefined;
  private retry: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    informers: InformerFactory,
    private readonly custom: CustomObjectsApi,
    private readonly defaults: CdiConfigDefaults,
    private readonly logger: Logger,
    private readonly retryCrdMs = 30_000,
  ) {
    this.informer = informers.custom(CDICONFIG_GROUP, CDICONFIG_VERSION, CDICONFIG_PLURAL, true);
  }

  /** Never holds readiness: until the watch has listed, the flags apply. */
  get ready(): boolean {
    return true;
  }

  current(): CdiSettings {
    const object = this.informer.synced ? this.informer.get(CDICONFIG_NAME, '') : undefined;
    if (this.seen === undefined || this.seen.object !== object) this.seen = { object, settings: resolveSettings(object?.spec, this.defaults) };
    return this.seen.settings;
  }

  /** Starts the watch when the CRD is served (resolving after its first list), else looks again later. */
  async start(): Promise<void> {
    let served = false;
    try {
      served = await crdServed(this.custom, CDICONFIG_GROUP, CDICONFIG_VERSION, CDICONFIG_PLURAL);
    } catch (err) {
      this.logger.warn({ err: errorLine(err) }, 'CDIConfig: cannot tell whether the CRD is installed; using the flags meanwhile');
    }
    if (served) return this.informer.start();
    if (this.stopped) return;
    this.logger.warn('the CDIConfig CRD is not installed (manifests/crds); the controllers use their flags until it is');
    this.retry = setTimeout(() => void this.start(), this.retryCrdMs);
    this.retry.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.retry);
  }
}

/**
 * Pure: `config` as a controller that takes its pod settings from the flags sees them under
 * `settings`: worker pod resources, and the filesystem overhead of volumes of `storageClass`.
 */
export function configWithSettings<C extends Pick<ControllerConfig, 'filesystemOverhead' | 'importerResources'>>(config: C, settings: CdiSettings | undefined, storageClass: string | undefined): C {
  if (settings === undefined) return config;
  return Object.freeze({ ...config, importerResources: settings.podResourceRequirements, filesystemOverhead: overheadOfClass(settings, storageClass) });
}
