/**
 * What a running launcher says about its guest: `GET /status` on the launcher pod, reduced to the
 * one fact the VMI plan uses (the accelerator), and the launcher's termination message once the
 * pod ended (decoded by the contract's codec).
 */

import type { V1Pod } from '@kubernetes/client-node';
import { decodeLauncherStatus } from '../../src/contract/launcher-status.js';
import type { LauncherReport } from './vmi-plan.js';

/**
 * Pure: the live report in a `/status` body. The body is the launcher's running status (phase
 * Starting/Running/…), not the termination message `decodeLauncherStatus` reads, so only `accel`
 * is taken from it; anything else is no report.
 */
export function liveReportFromStatus(body: unknown): LauncherReport | undefined {
  if (body === null || typeof body !== 'object') return undefined;
  const accel = (body as { accel?: unknown }).accel;
  return accel === 'kvm' || accel === 'tcg' ? { accel } : undefined;
}

/** Pure: the launcher's termination message once the pod ended, over what it reported live. */
export function launcherReport(pod: V1Pod | undefined, live: LauncherReport | undefined): LauncherReport | undefined {
  if (!pod) return undefined;
  const message = pod.status?.containerStatuses?.[0]?.state?.terminated?.message;
  const decoded = message ? decodeLauncherStatus(message) : undefined;
  return decoded ? { ...live, ...decoded } : live;
}

/** GET http://<podIP>:<port>/status with a short timeout; undefined on any failure. */
export async function scrapeLauncher(podIP: string, port: number, timeoutMs = 2000): Promise<LauncherReport | undefined> {
  const host = podIP.includes(':') ? `[${podIP}]` : podIP;
  try {
    const response = await fetch(`http://${host}:${port}/status`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!response.ok) return undefined;
    return liveReportFromStatus(await response.json());
  } catch {
    return undefined;
  }
}
