/**
 * The importer's Prometheus metrics. `kubevirt_cdi_import_progress_total{ownerUID}` keeps CDI's name
 * and meaning (a counter of percent) so existing dashboards and scrapers work unchanged; the name,
 * label and path are the contract the import controller scrapes (src/contract/import-progress.ts).
 */

import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Registry } from 'prom-client';
import { IMPORTER_METRICS_PATH, ProgressMetric } from '../src/contract/import-progress.js';
import type { ProgressListener } from './progress.js';

export interface ImporterMetrics {
  readonly registry: Registry;
  readonly listener: ProgressListener;
}

export function createImporterMetrics(ownerUid: string): ImporterMetrics {
  const registry = new Registry();
  const progress = new Counter({
    name: ProgressMetric.name,
    help: ProgressMetric.help,
    labelNames: [ProgressMetric.ownerLabel],
    registers: [registry],
  });
  const bytes = new Gauge({
    name: 'ferry_import_phase_bytes',
    help: 'Bytes handled so far in the current import phase',
    labelNames: ['ownerUID', 'phase'],
    registers: [registry],
  });
  let reported = 0;
  const listener: ProgressListener = (s) => {
    if (s.percent > reported) {
      progress.inc({ [ProgressMetric.ownerLabel]: ownerUid }, s.percent - reported);
      reported = s.percent;
    }
    bytes.set({ ownerUID: ownerUid, phase: s.phase }, s.bytes);
  };
  return { registry, listener };
}

/** Serves GET /metrics; resolves once listening. */
export async function serveMetrics(registry: Registry, port: number, host = '0.0.0.0'): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method === 'GET' && req.url === IMPORTER_METRICS_PATH) {
      registry.metrics().then(
        (text) => {
          res.writeHead(200, { 'content-type': registry.contentType });
          res.end(text);
        },
        () => {
          res.writeHead(500);
          res.end();
        },
      );
      return;
    }
    res.writeHead(404);
    res.end();
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  server.unref();
  return server;
}
