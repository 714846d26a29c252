/**
 * The importer's Prometheus metrics. `kubevirt_cdi_import_progress_total{ownerUID}` keeps CDI's name
 * and meaning (a counter of percent) so existing dashboards and scrapers work unchanged.
 */

import { createServer, type Server } from 'node:http';
import { Counter, Gauge, Registry } from 'prom-client';
import type { ProgressListener } from './progress.js';

export interface ImporterMetrics {
  readonly registry: Registry;
  readonly listener: ProgressListener;
}

export function createImporterMetrics(ownerUid: string): ImporterMetrics {
  const registry = new Registry();
  const progress = new Counter({
    name: 'kubevirt_cdi_import_progress_total',
    help: 'The import progress in percentage',
    labelNames: ['ownerUID'],
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
      progress.inc({ ownerUID: ownerUid }, s.percent - reported);
      reported = s.percent;
    }
    bytes.set({ ownerUID: ownerUid, phase: s.phase }, s.bytes);
  };
  return { registry, listener };
}

/** Serves GET /metrics; resolves once listening. */
export async function serveMetrics(registry: Registry, port: number, host = '0.0.0.0'): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method === 'GET' && req.url === '/metrics') {
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
