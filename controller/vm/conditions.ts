/** Condition lists as KubeVirt keeps them: one entry per type, transition time kept while unchanged. */

import type { Condition } from '../../src/api/kubevirt.js';

export type ConditionInput = Omit<Condition, 'lastTransitionTime' | 'lastProbeTime'>;

/**
 * The next condition list: each desired condition keeps its old lastTransitionTime when its status
 * did not change; types not mentioned are dropped.
 */
export function nextConditions(current: readonly Condition[] | undefined, desired: readonly ConditionInput[], now: string): Condition[] {
  return desired.map((d) => {
    const old = current?.find((c) => c.type === d.type);
    const since = old && old.status === d.status ? (old.lastTransitionTime ?? now) : now;
    return {
      type: d.type,
      status: d.status,
      ...(d.reason !== undefined ? { reason: d.reason } : {}),
      ...(d.message !== undefined ? { message: d.message } : {}),
      lastProbeTime: null,
      lastTransitionTime: since,
    };
  });
}

export function conditionStatus(conditions: readonly Condition[] | undefined, type: string): Condition['status'] | undefined {
  return conditions?.find((c) => c.type === type)?.status;
}

/** Deep equality for the JSON-shaped status objects the plans compare before patching. */
export function sameJson(a: unknown, b: unknown): boolean {
  return JSON.stringify(normalize(a)) === JSON.stringify(normalize(b));
}

function normalize(v: unknown): unknown {
  if (v instanceof Date) return v.toISOString();
  if (Array.isArray(v)) return v.map(normalize);
  if (v !== null && typeof v === 'object') {
    return Object.fromEntries(
      Object.entries(v as Record<string, unknown>)
        .filter(([, x]) => x !== undefined)
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([k, x]) => [k, normalize(x)]),
    );
  }
  return v;
}
