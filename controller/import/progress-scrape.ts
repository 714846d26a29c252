/** Reads an importer's progress from its Prometheus endpoint, as CDI's controller does. */

/** Pure: the progress percentage for `ownerUid` in a metrics page, if present. */
export function parseProgress(text: string, ownerUid: string): number | undefined {
  const escaped = ownerUid.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const m = new RegExp(`^kubevirt_cdi_import_progress_total\\{ownerUID="${escaped}"\\} ([0-9.eE+-]+)$`, 'm').exec(text);
  if (!m) return undefined;
  const value = Number(m[1]);
  return Number.isFinite(value) ? Math.min(100, Math.max(0, value)) : undefined;
}

export function formatProgress(percent: number): string {
  return `${percent.toFixed(2)}%`;
}

/** GET http://<podIP>:<port>/metrics with a short timeout; undefined on any failure. */
export async function scrapeProgress(podIP: string, port: number, ownerUid: string, timeoutMs = 2000): Promise<number | undefined> {
  const host = podIP.includes(':') ? `[${podIP}]` : podIP;
  try {
    const response = await fetch(`http://${host}:${port}/metrics`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!response.ok) return undefined;
    return parseProgress(await response.text(), ownerUid);
  } catch {
    return undefined;
  }
}
