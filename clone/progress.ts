/**
 * The clone target's progress: how much of the source the stream has covered so far (extents are
 * contiguous from 0, so the end of the last data or hole record is the share of the disk that is
 * done; a hole is done the moment it arrives), as CDI's counter of percent
 * `kubevirt_cdi_clone_progress_total{ownerUID}` on `GET /metrics` — the import progress contract
 * (src/contract/import-progress.ts), which the import controller's scraper already reads.
 */

import { createServer, type Server } from 'node:http';
import { Counter, Registry } from 'prom-client';
import type { CloneEvent } from '../src/contract/clone-stream.js';
import { CLONE_PROGRESS_METRIC, IMPORTER_METRICS_PATH, ProgressMetric } from '../src/contract/import-progress.js';

/** Pure: percent of `size` covered by `covered` bytes, 0..100 (an empty source is done when it ends). */
export function progressPercent(covered: number, size: number): number {
  if (size <= 0) return 0;
  return Math.min(100, Math.max(0, (covered / size) * 100));
}

/** Pure: how far an event reaches into the source (undefined for events that carry no position). */
export function coveredBy(event: CloneEvent): number | undefined {
  if (event.type === 'data') return event.offset + event.bytes.length;
  if (event.type === 'hole') return event.offset + event.length;
  return undefined;
}

export interface CloneProgressMetrics {
  readonly registry: Registry;
  /** Reports the percent done; the counter only ever goes up. */
  report(percent: number): void;
}

export function createCloneProgressMetrics(ownerUid: string): CloneProgressMetrics {
  const registry = new Registry();
  const counter = new Counter({ name: CLONE_PROGRESS_METRIC, help: 'The clone progress in percentage', labelNames: [ProgressMetric.ownerLabel], registers: [registry] });
  let reported = 0;
  return {
    registry,
    report(percent) {
      if (percent > reported) {
        counter.inc({ [ProgressMetric.ownerLabel]: ownerUid }, percent - reported);
        reported = percent;
      }
    },
  };
}

/** Serves `GET /metrics` in plain HTTP (progress is not a secret; CDI serves it to any scraper). */
export async function serveProgress(registry: Registry, port: number, host: string | undefined): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || req.url !== IMPORTER_METRICS_PATH) {
      res.writeHead(404).end();
      return;
    }
    registry.metrics().then(
      (text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text),
      () => res.writeHead(500).end(),
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host ?? '0.0.0.0', () => resolve());
  });
  server.unref();
  return server;
}
