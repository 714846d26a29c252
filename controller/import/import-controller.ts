/**
 * Wires the shared PVC cache and the importer-pod cache to the work queue and the reconciler.
 * Handlers only enqueue keys; informers restart themselves on error and the whole cache is
 * re-queued on a timer, so a missed event only delays work.
 */

import { CoreV1Api, type KubeConfig, type V1PersistentVolumeClaim, type V1Pod, type V1StorageClass } from '@kubernetes/client-node';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { IMPORTER_POD_SELECTOR } from '../../src/api/cdi.js';
import type { Logger } from '../../src/logging.js';
import type { ControllerConfig } from '../config.js';
import type { SettingsSource } from '../runtime/cdi-settings.js';
import { errorLine } from '../runtime/errors.js';
import { InformerFactory, type SharedInformer } from '../runtime/informers.js';
import { WorkQueue } from '../runtime/work-queue.js';
import { ImportWriter } from './apply.js';
import { scrapeProgress } from './progress-scrape.js';
import { reconcile } from './reconcile.js';

export interface ControllerDeps {
  readonly kubeConfig: KubeConfig;
  readonly config: ControllerConfig;
  readonly logger: Logger;
  readonly registry: Registry;
  /** The process's shared informers; without it the controller makes (and stops) its own. */
  readonly informers?: InformerFactory;
  readonly now?: () => number;
  /** How often every cached PVC is queued again. */
  readonly resyncMs?: number;
  /** CDIConfig's settings (runtime/cdi-settings.ts); absent: the flags alone. */
  readonly settings?: SettingsSource;
}

export class ImportController {
  private readonly informers: InformerFactory;
  private readonly ownsInformers: boolean;
  private readonly pvcs: SharedInformer<V1PersistentVolumeClaim>;
  private readonly pods: SharedInformer<V1Pod>;
  private readonly storageClasses: SharedInformer<V1StorageClass>;
  private readonly queue: WorkQueue;
  private resync: NodeJS.Timeout | undefined;
  private synced = false;

  constructor(private readonly deps: ControllerDeps) {
    this.ownsInformers = deps.informers === undefined;
    this.informers = deps.informers ?? new InformerFactory(deps.kubeConfig, deps.config.namespaces, deps.logger);
    this.pvcs = this.informers.pvcs();
    this.pods = this.informers.pods(IMPORTER_POD_SELECTOR);
    this.storageClasses = this.informers.storageClasses();
    const writer = new ImportWriter(deps.kubeConfig.makeApiClient(CoreV1Api));
    const now = deps.now ?? Date.now;
    const reconciles = new Counter({ name: 'ferry_controller_reconcile_total', help: 'Reconciles by result', labelNames: ['result'], registers: [deps.registry] });
    const duration = new Histogram({
      name: 'ferry_controller_reconcile_duration_seconds',
      help: 'Time spent in one reconcile',
      buckets: [0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      registers: [deps.registry],
    });
    const depth = new Gauge({ name: 'ferry_controller_queue_depth', help: 'Keys waiting in the work queue', registers: [deps.registry] });
    this.queue = new WorkQueue(
      async (key) => {
        const end = duration.startTimer();
        try {
          const result = await reconcile(key, {
            caches: {
              getPvc: (ns, name) => this.pvcs.get(name, ns),
              getPod: (ns, name) => this.pods.get(name, ns),
              getStorageClass: (name) => this.storageClasses.get(name, ''),
            },
            writer,
            config: deps.config,
            logger: deps.logger,
            now,
            scrape: scrapeProgress,
            ...(deps.settings ? { settings: deps.settings } : {}),
          });
          reconciles.inc({ result: 'ok' });
          return result;
        } catch (err) {
          reconciles.inc({ result: 'error' });
          throw err;
        } finally {
          end();
          depth.set(this.queue.length);
        }
      },
      {
        concurrency: deps.config.concurrency,
        baseBackoffMs: 500,
        maxBackoffMs: 60_000,
        onError: (key, err, retryInMs) => deps.logger.warn({ pvc: key, retryInMs, err: errorLine(err) }, 'reconcile failed'),
      },
      now,
    );
  }

  get ready(): boolean {
    return this.synced;
  }

  /** Starts the informers; resolves once every cache has its first list. */
  async start(): Promise<void> {
    this.pvcs.onChange((pvc) => this.enqueuePvc(pvc));
    this.pods.onChange((pod) => this.enqueueOwner(pod));
    await Promise.all([this.pvcs.start(), this.pods.start(), this.storageClasses.start()]);
    this.synced = true;
    const all = (): void => {
      for (const pvc of this.pvcs.list()) this.enqueuePvc(pvc);
    };
    all();
    this.resync = setInterval(all, this.deps.resyncMs ?? 300_000);
    this.resync.unref();
  }

  /** Stops taking work and waits for reconciles in flight (the caller bounds the wait). */
  async stop(): Promise<void> {
    if (this.resync) clearInterval(this.resync);
    if (this.ownsInformers) await this.informers.stop();
    await this.queue.shutdown();
  }

  /** Waits until nothing is queued or running (for tests and benchmarks). */
  idle(): Promise<void> {
    return this.queue.idle();
  }

  private enqueuePvc(pvc: V1PersistentVolumeClaim): void {
    const owner = pvc.metadata?.ownerReferences?.find((o) => o.kind === 'PersistentVolumeClaim' && o.controller);
    // A scratch PVC wakes the PVC it serves.
    const name = owner?.name ?? pvc.metadata?.name;
    if (name && pvc.metadata?.namespace) this.queue.add(`${pvc.metadata.namespace}/${name}`);
  }

  private enqueueOwner(pod: V1Pod): void {
    const owner = pod.metadata?.ownerReferences?.find((o) => o.kind === 'PersistentVolumeClaim');
    if (owner && pod.metadata?.namespace) this.queue.add(`${pod.metadata.namespace}/${owner.name}`);
  }
}
