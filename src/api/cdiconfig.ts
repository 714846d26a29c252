/**
 * CDI's cluster configuration object, `CDIConfig` (`cdi.kubevirt.io/v1beta1`, cluster-scoped, one
 * object named `config`): what an admin sets in `spec`, and in `status` the values in effect (spec
 * where given, else the controller's flags). virtctl reads `spec.uploadProxyURLOverride`, else
 * `status.uploadProxyURL` (virtctl-upload.md §2.1 step 6). Field names are CDI's.
 */

import type { V1ResourceRequirements } from '@kubernetes/client-node';
import { DV_GROUP, DV_VERSION } from './datavolume.js';

export const CDICONFIG_GROUP = DV_GROUP;
export const CDICONFIG_VERSION = DV_VERSION;
export const CDICONFIG_API_VERSION = `${DV_GROUP}/${DV_VERSION}`;
export const CDICONFIG_KIND = 'CDIConfig';
export const CDICONFIG_PLURAL = 'cdiconfigs';
/** The one object there is (CDI's name). */
export const CDICONFIG_NAME = 'config';

/** A fraction as CDI writes it ("0.055"): 0 to 1, at most three decimals. */
export const PERCENT_PATTERN = '^(0(?:\\.\\d{1,3})?|1)$';

export interface FilesystemOverhead {
  /** The fraction for every storage class without its own. */
  readonly global?: string;
  readonly storageClass?: Readonly<Record<string, string>>;
}

export interface ImportProxy {
  readonly HTTPProxy?: string;
  readonly HTTPSProxy?: string;
  readonly noProxy?: string;
  readonly trustedCAProxy?: string;
}

export interface CdiConfigSpec {
  readonly uploadProxyURLOverride?: string;
  readonly scratchSpaceStorageClass?: string;
  readonly podResourceRequirements?: V1ResourceRequirements;
  readonly filesystemOverhead?: FilesystemOverhead;
  readonly importProxy?: ImportProxy;
}

export interface CdiConfigStatus {
  readonly uploadProxyURL?: string;
  readonly scratchSpaceStorageClass?: string;
  readonly defaultPodResourceRequirements?: V1ResourceRequirements;
  readonly filesystemOverhead?: FilesystemOverhead;
  readonly importProxy?: ImportProxy;
}

export interface CdiConfig {
  readonly apiVersion?: string;
  readonly kind?: string;
  readonly metadata?: { readonly name?: string; readonly resourceVersion?: string };
  readonly spec?: CdiConfigSpec;
  readonly status?: CdiConfigStatus;
}

/** What the controller falls back to where the spec says nothing (its flags). */
export interface CdiConfigDefaults {
  /** The upload proxy's URL, with its scheme (virtctl cannot parse `host:port`); undefined: none known. */
  readonly uploadProxyURL?: string;
  readonly filesystemOverhead: number;
  readonly podResourceRequirements: V1ResourceRequirements;
}

/** A fraction as CDI's Percent string: "0.06", "0.055", "0", "1". */
export function percent(fraction: number): string {
  return String(Math.round(fraction * 1000) / 1000);
}

/** Pure: the status an object with `spec` should have. */
export function effectiveStatus(spec: CdiConfigSpec | undefined, defaults: CdiConfigDefaults): CdiConfigStatus {
  const uploadProxyURL = spec?.uploadProxyURLOverride || defaults.uploadProxyURL;
  return {
    ...(uploadProxyURL ? { uploadProxyURL } : {}),
    ...(spec?.scratchSpaceStorageClass ? { scratchSpaceStorageClass: spec.scratchSpaceStorageClass } : {}),
    defaultPodResourceRequirements: spec?.podResourceRequirements ?? defaults.podResourceRequirements,
    filesystemOverhead: {
      global: spec?.filesystemOverhead?.global ?? percent(defaults.filesystemOverhead),
      ...(spec?.filesystemOverhead?.storageClass ? { storageClass: spec.filesystemOverhead.storageClass } : {}),
    },
    ...(spec?.importProxy ? { importProxy: spec.importProxy } : {}),
  };
}

/** The fraction for a storage class (per-class, else global), from a status; undefined when unset or malformed. */
export function overheadFor(status: CdiConfigStatus | undefined, storageClass: string | undefined): number | undefined {
  const text = (storageClass !== undefined ? status?.filesystemOverhead?.storageClass?.[storageClass] : undefined) ?? status?.filesystemOverhead?.global;
  return text !== undefined && new RegExp(PERCENT_PATTERN).test(text) ? Number(text) : undefined;
}

/**
 * The settings every controller uses, resolved once from CDIConfig (spec over the controller's
 * flags). It is read back from the very status `effectiveStatus` computes, so what the status
 * shows and what the controllers do cannot drift apart.
 */
export interface CdiSettings {
  readonly uploadProxyURL?: string;
  /** Fractions: `global`, and per storage class name. */
  readonly filesystemOverhead: { readonly global: number; readonly storageClass: Readonly<Record<string, number>> };
  /** Storage class of scratch PVCs; undefined: the target PVC's class. */
  readonly scratchSpaceStorageClass?: string;
  /** Requests and limits of importer, upload and clone worker pods. */
  readonly podResourceRequirements: V1ResourceRequirements;
  /** Proxy of importer pods (CDI's lower-case http_proxy/https_proxy/no_proxy), and the proxy CA ConfigMap's name. */
  readonly importProxy: { readonly httpProxy?: string; readonly httpsProxy?: string; readonly noProxy?: string; readonly trustedCAProxy?: string };
}

/** Pure: the settings in effect for a CDIConfig `spec` (undefined: no object) over `defaults`. */
export function resolveSettings(spec: CdiConfigSpec | undefined, defaults: CdiConfigDefaults): CdiSettings {
  const status = effectiveStatus(spec, defaults);
  const perClass: Record<string, number> = {};
  for (const name of Object.keys(status.filesystemOverhead?.storageClass ?? {})) {
    const value = overheadFor(status, name);
    if (value !== undefined) perClass[name] = value;
  }
  const proxy = status.importProxy ?? {};
  // As written (the status shows the same text); an empty string is no setting.
  const given = (text: string | undefined): string | undefined => (text !== undefined && text.trim() !== '' ? text : undefined);
  const importProxy = {
    ...(given(proxy.HTTPProxy) ? { httpProxy: given(proxy.HTTPProxy) } : {}),
    ...(given(proxy.HTTPSProxy) ? { httpsProxy: given(proxy.HTTPSProxy) } : {}),
    ...(given(proxy.noProxy) ? { noProxy: given(proxy.noProxy) } : {}),
    ...(given(proxy.trustedCAProxy) ? { trustedCAProxy: given(proxy.trustedCAProxy) } : {}),
  };
  return Object.freeze({
    ...(status.uploadProxyURL ? { uploadProxyURL: status.uploadProxyURL } : {}),
    // A malformed global (the schema forbids one) falls back to the flag rather than failing every import.
    filesystemOverhead: Object.freeze({ global: overheadFor(status, undefined) ?? defaults.filesystemOverhead, storageClass: Object.freeze(perClass) }),
    ...(status.scratchSpaceStorageClass ? { scratchSpaceStorageClass: status.scratchSpaceStorageClass } : {}),
    podResourceRequirements: status.defaultPodResourceRequirements ?? defaults.podResourceRequirements,
    importProxy: Object.freeze(importProxy),
  });
}

/** Pure: the filesystem overhead for volumes of `storageClass` (its own value, else the global one). */
export function overheadOfClass(settings: CdiSettings, storageClass: string | undefined): number {
  return (storageClass !== undefined ? settings.filesystemOverhead.storageClass[storageClass] : undefined) ?? settings.filesystemOverhead.global;
}
