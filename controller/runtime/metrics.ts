/** Prometheus metrics of a controller's reconciles: how many by result, how long each took, how many keys wait. */

import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { HandlerResult } from './work-queue.js';

export interface ReconcileMetrics {
  /** Runs one reconcile, counting and timing it; `depth` is read as it ends. */
  observe(reconcile: () => Promise<HandlerResult>, depth: () => number): Promise<HandlerResult>;
}

/** The metrics `ferry_controller_reconcile_total`, `…_reconcile_duration_seconds` and `…_queue_depth` in `registry` (once per registry). */
export function reconcileMetrics(registry: Registry): ReconcileMetrics {
  const reconciles = new Counter({ name: 'ferry_controller_reconcile_total', help: 'Reconciles by result', labelNames: ['result'], registers: [registry] });
  const duration = new Histogram({
    name: 'ferry_controller_reconcile_duration_seconds',
    help: 'Time spent in one reconcile',
    buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
    registers: [registry],
  });
  const queueDepth = new Gauge({ name: 'ferry_controller_queue_depth', help: 'Keys waiting in the work queue', registers: [registry] });
  return {
    async observe(reconcile, depth) {
      const end = duration.startTimer();
      try {
        const result = await reconcile();
        reconciles.inc({ result: 'ok' });
        return result;
      } catch (err) {
        reconciles.inc({ result: 'error' });
        throw err;
      } finally {
        end();
        queueDepth.set(depth());
      }
    },
  };
}
