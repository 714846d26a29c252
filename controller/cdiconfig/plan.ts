/**
 * Pure: what to do about CDIConfig `config`, from the object as read (undefined: absent) and the
 * controller's defaults. Absent → create it (empty spec; status follows on the next pass, since a
 * create drops status on a kind with a status subresource). Present → its status must be the
 * effective values (src/api/cdiconfig.ts); nothing else of the object is the controller's.
 */

import { type CdiConfig, type CdiConfigDefaults, type CdiConfigStatus, CDICONFIG_API_VERSION, CDICONFIG_KIND, CDICONFIG_NAME, effectiveStatus } from '../../src/api/cdiconfig.js';

export const CdiConfigAction = { Create: 'create', WriteStatus: 'writeStatus' } as const;

export type CdiConfigPlan =
  | { readonly action: typeof CdiConfigAction.Create; readonly object: CdiConfig }
  | { readonly action: typeof CdiConfigAction.WriteStatus; readonly status: CdiConfigStatus }
  | undefined;

/** JSON with sorted keys: the apiserver returns a custom object's keys sorted, ours are in any order. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  const entries = Object.entries(value as Record<string, unknown>).filter(([, v]) => v !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
}

export function planCdiConfig(observed: CdiConfig | undefined, defaults: CdiConfigDefaults): CdiConfigPlan {
  if (observed === undefined) {
    return { action: CdiConfigAction.Create, object: { apiVersion: CDICONFIG_API_VERSION, kind: CDICONFIG_KIND, metadata: { name: CDICONFIG_NAME }, spec: {} } };
  }
  const status = effectiveStatus(observed.spec, defaults);
  return canonical(status) === canonical(observed.status ?? {}) ? undefined : { action: CdiConfigAction.WriteStatus, status };
}
