/**
 * The importer's progress endpoint: the importer pod serves Prometheus text on `GET /metrics` at the
 * port the controller put in `$FERRY_METRICS_PORT` (import-spec.ts: decodeMetricsPort), and the
 * import controller scrapes it for CDI's progress metric, `kubevirt_cdi_import_progress_total
 * {ownerUID}`: a counter of percent, CDI's name and meaning, so dashboards and scrapers carry over.
 * A clone target serves the same counter under CDI's clone name, `kubevirt_cdi_clone_progress_total`,
 * at the same path, and the one decoder reads either (CDI's scraper matches both names too).
 */

/** The port the importer serves on unless told otherwise (CDI's importer uses 8443 too). */
export const DEFAULT_IMPORTER_METRICS_PORT = 8443;
export const IMPORTER_METRICS_PATH = '/metrics';

export const ProgressMetric = {
  name: 'kubevirt_cdi_import_progress_total',
  help: 'The import progress in percentage',
  /** The label that names the import: the PVC's owner UID (ImportSpec.ownerUid). */
  ownerLabel: 'ownerUID',
} as const;

/** CDI's name for a clone's progress counter: same label, same meaning (percent of the clone). */
export const CLONE_PROGRESS_METRIC = 'kubevirt_cdi_clone_progress_total';

/** Pure: the progress percentage (clamped to 0..100) for `ownerUid` in a metrics page, if present. */
export function decodeProgress(text: string, ownerUid: string): number | undefined {
  const escaped = ownerUid.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const m = new RegExp(`^(?:${ProgressMetric.name}|${CLONE_PROGRESS_METRIC})\\{${ProgressMetric.ownerLabel}="${escaped}"\\} ([0-9.eE+-]+)$`, 'm').exec(text);
  if (!m) return undefined;
  const value = Number(m[1]);
  return Number.isFinite(value) ? Math.min(100, Math.max(0, value)) : undefined;
}
