/** Reads an importer's progress from its Prometheus endpoint, as CDI's controller does. */

import { decodeProgress, IMPORTER_METRICS_PATH } from '../../src/contract/import-progress.js';

export function formatProgress(percent: number): string {
  return `${percent.toFixed(2)}%`;
}

/** GET http://<podIP>:<port>/metrics with a short timeout; undefined on any failure. */
export async function scrapeProgress(podIP: string, port: number, ownerUid: string, timeoutMs = 2000): Promise<number | undefined> {
  const host = podIP.includes(':') ? `[${podIP}]` : podIP;
  try {
    const response = await fetch(`http://${host}:${port}${IMPORTER_METRICS_PATH}`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!response.ok) return undefined;
    return decodeProgress(await response.text(), ownerUid);
  } catch {
    return undefined;
  }
}
