/**
 * What a running launcher says about its guest: `GET /status` on the launcher pod, reduced to the
 * one fact the VMI plan uses (the accelerator), and the launcher's termination message once the
 * pod ended (decoded by the contract's codec).
 */

import type { V1Pod } from '@kubernetes/client-node';
import { LauncherHttpPath } from '../../src/contract/launcher-pod.js';
import { decodeLauncherStatus, decodeLauncherStatusBody } from '../../src/contract/launcher-status.js';
import type { LauncherReport } from './vmi-plan.js';

/**
 * Pure: the live report in a `/status` body (the contract's codec, the one the launcher's status
 * server encodes with). Only the accelerator is used while the pod runs; a body that is not the
 * launcher's (no phase, a proxy's error page) is no report.
 */
export function liveReportFromStatus(text: string): LauncherReport | undefined {
  const body = decodeLauncherStatusBody(text);
  return body?.accel ? { accel: body.accel } : undefined;
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
    const response = await fetch(`http://${host}:${port}${LauncherHttpPath.Status}`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!response.ok) return undefined;
    return liveReportFromStatus(await response.text());
  } catch {
    return undefined;
  }
}
