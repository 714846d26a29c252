/**
 * Wires informers on PVCs and importer pods to the work queue and the reconciler. Informers
 * restart themselves on error and the whole cache is re-queued on a timer, so a missed event only
 * delays work.
 */

import {
  CoreV1Api,
  type KubeConfig,
  type KubernetesObject,
  makeInformer,
  type V1PersistentVolumeClaim,
  type V1Pod,
} from '@kubernetes/client-node';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { IMPORTER_POD_SELECTOR } from '../../src/api/cdi.js';
import { type Cached, watchRestarting } from '../runtime/informers.js';
import type { Logger } from '../../src/logging.js';
import type { ControllerConfig } from '../config.js';
import { ClusterWriter } from '../runtime/kube.js';
import { reconcile } from './reconcile.js';
import { scrapeProgress } from './progress-scrape.js';
import { WorkQueue } from '../runtime/work-queue.js';


export interface ControllerDeps {
  readonly kubeConfig: KubeConfig;
  readonly config: ControllerConfig;
  readonly logger: Logger;
  readonly registry: Registry;
  readonly now?: () => number;
  /** How often every cached PVC is queued again. */
  readonly resyncMs?: number;
}

export class ImportController {
  private readonly pvcInformers = new Map<string, Cached<V1PersistentVolumeClaim>>();
  private readonly podInformers = new Map<string, Cached<V1Pod>>();
  private readonly queue: WorkQueue;
  private resync: NodeJS.Timeout | undefined;
  private synced = false;
  private stopped = false;

  constructor(private readonly deps: ControllerDeps) {
    const core = deps.kubeConfig.makeApiClient(CoreV1Api);
    const writer = new ClusterWriter(core);
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
            caches: { getPvc: (ns, name) => this.pvcCache(ns)?.get(name, ns), getPod: (ns, name) => this.podCache(ns)?.get(name, ns) },
            writer,
            config: deps.config,
            logger: deps.logger,
            now,
            scrape: scrapeProgress,
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
        onError: (key, err, retryInMs) => deps.logger.warn({ pvc: key, retryInMs, err: (err as Error).message }, 'reconcile failed'),
      },
      now,
    );
  }

  get ready(): boolean {
    return this.synced;
  }

  /** Starts the informers; resolves once every cache has its first list. */
  async start(): Promise<void> {
    const core = this.deps.kubeConfig.makeApiClient(CoreV1Api);
    const scopes = this.deps.config.namespaces.length > 0 ? this.deps.config.namespaces : [''];
    for (const ns of scopes) {
      const pvcPath = ns ? `/api/v1/namespaces/${ns}/persistentvolumeclaims` : '/api/v1/persistentvolumeclaims';
      const podPath = ns ? `/api/v1/namespaces/${ns}/pods` : '/api/v1/pods';
      const pvcs = makeInformer<V1PersistentVolumeClaim>(this.deps.kubeConfig, pvcPath, () =>
        ns ? core.listNamespacedPersistentVolumeClaim({ namespace: ns }) : core.listPersistentVolumeClaimForAllNamespaces(),
      );
      const pods = makeInformer<V1Pod>(
        this.deps.kubeConfig,
        podPath,
        () => (ns ? core.listNamespacedPod({ namespace: ns, labelSelector: IMPORTER_POD_SELECTOR }) : core.listPodForAllNamespaces({ labelSelector: IMPORTER_POD_SELECTOR })),
        IMPORTER_POD_SELECTOR,
      );
      this.watch(pvcs, 'pvcs', (pvc) => this.enqueuePvc(pvc));
      this.watch(pods, 'pods', (pod) => this.enqueueOwner(pod));
      this.pvcInformers.set(ns, pvcs);
      this.podInformers.set(ns, pods);
    }
    await Promise.all([...this.pvcInformers.values(), ...this.podInformers.values()].map((i) => i.start()));
    this.synced = true;
    for (const informer of this.pvcInformers.values()) for (const pvc of informer.list()) this.enqueuePvc(pvc);
    this.resync = setInterval(() => {
      for (const informer of this.pvcInformers.values()) for (const pvc of informer.list()) this.enqueuePvc(pvc);
    }, this.deps.resyncMs ?? 300_000);
    this.resync.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.resync) clearInterval(this.resync);
    await Promise.all([...this.pvcInformers.values(), ...this.podInformers.values()].map((i) => i.stop()));
    await this.queue.shutdown();
  }

  /** Waits until nothing is queued or running (for tests and benchmarks). */
  idle(): Promise<void> {
    return this.queue.idle();
  }

  private pvcCache(ns: string): Cached<V1PersistentVolumeClaim> | undefined {
    return this.pvcInformers.get(ns) ?? this.pvcInformers.get('');
  }

  private podCache(ns: string): Cached<V1Pod> | undefined {
    return this.podInformers.get(ns) ?? this.podInformers.get('');
  }

  private watch<T extends KubernetesObject>(informer: Cached<T>, what: string, handler: (obj: T) => void): void {
    watchRestarting(informer, what, handler, this.deps.logger, () => this.stopped);
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
