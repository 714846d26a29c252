/**
 * The import controller on the shared runtime (runtime/controller.ts): the shared PVC cache and the
 * importer-pod cache wake keys `<ns>/<pvc>` (a scratch PVC or an importer pod wakes the PVC it
 * serves), every cached PVC is queued again on a timer, and each key runs ./reconcile.ts.
 */

import { CoreV1Api } from '@kubernetes/client-node';
import type { Registry } from 'prom-client';
import { IMPORTER_POD_SELECTOR } from '../../src/api/cdi.js';
import { Controller, type PvcControllerDeps, type Watch } from '../runtime/controller.js';
import { ownerPvcKey, servedPvcKey } from '../runtime/keys.js';
import { reconcileMetrics } from '../runtime/metrics.js';
import type { HandlerResult } from '../runtime/work-queue.js';
import { type WorkerCaches, watchWorkers, workerCaches, workerReads } from '../runtime/worker-caches.js';
import { ImportWriter } from './apply.js';
import { scrapeProgress } from './progress-scrape.js';
import { reconcile, type ReconcilerDeps } from './reconcile.js';

export interface ControllerDeps extends PvcControllerDeps {
  readonly registry: Registry;
}

export class ImportController extends Controller {
  private readonly caches: WorkerCaches;
  private readonly reconcileDeps: ReconcilerDeps;

  constructor(deps: ControllerDeps) {
    const { config, logger } = deps;
    super(deps, { name: 'import controller', keyField: 'pvc', resyncMs: deps.resyncMs ?? 300_000, metrics: reconcileMetrics(deps.registry) });
    this.caches = workerCaches(this.informers, IMPORTER_POD_SELECTOR);
    this.reconcileDeps = {
      caches: workerReads(this.caches),
      writer: new ImportWriter(deps.kubeConfig.makeApiClient(CoreV1Api)),
      config,
      logger,
      now: deps.now ?? Date.now,
      scrape: scrapeProgress,
      ...(deps.settings ? { settings: deps.settings } : {}),
    };
  }

  protected reconcile(key: string): Promise<HandlerResult> {
    return reconcile(key, this.reconcileDeps);
  }

  protected watch(): Watch {
    // A scratch PVC wakes the PVC it serves; an importer pod, its owner PVC.
    return watchWorkers(this.caches, { pvc: servedPvcKey, pod: ownerPvcKey }, (key) => this.enqueue(key));
  }
}
