/**
 * Wires the DataVolume cache and the shared PVC cache to a work queue (keys `<ns>/<name>`: a
 * DataVolume and its PVC share the name) and the thin reconcile in ./reconcile.ts. Handlers only
 * enqueue keys. Without the cdi.kubevirt.io CRD installed the controller waits and looks again, so
 * the controllers beside it are not held up.
 */

import { CoreV1Api, CustomObjectsApi, type KubeConfig, type KubernetesObject, type V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { type DataVolume, DV_GROUP, DV_PLURAL, DV_VERSION } from '../../src/api/datavolume.js';
import type { Logger } from '../../src/logging.js';
import { errorLine, kubeGet } from '../runtime/errors.js';
import { InformerFactory, type SharedInformer } from '../runtime/informers.js';
import { objectKey } from '../runtime/keys.js';
import { WorkQueue } from '../runtime/work-queue.js';
import { DataVolumeWriter } from './apply.js';
import { type DvReconcileDeps, reconcileDataVolume } from './reconcile.js';
import { crdServed } from '../runtime/crds.js';
import { DATASOURCE_GROUP, DATASOURCE_PLURAL, DATASOURCE_VERSION, type DataSource } from '../../src/api/datasource.js';
import { CloneKeys } from '../clone/keys.js';

export interface DataVolumeControllerDeps {
  readonly kubeConfig: KubeConfig;
  readonly config: { readonly filesystemOverhead: number; readonly namespaces: readonly string[]; readonly concurrency: number; readonly ferryNamespace?: string };
  readonly logger: Logger;
  /** The process's shared informers; without it the controller makes (and stops) its own. */
  readonly informers?: InformerFactory;
  readonly now?: () => number;
  readonly retryCrdMs?: number;
}

interface Caches {
  readonly dvs: SharedInformer<DataVolume>;
  readonly pvcs: SharedInformer<V1PersistentVolumeClaim>;
}

export class DataVolumeController {
  private readonly informers: InformerFactory;
  private readonly ownsInformers: boolean;
  private readonly custom: CustomObjectsApi;
  private readonly queue: WorkQueue;
  private caches: Caches | undefined;
  private synced = false;
  private stopped = false;
  private retry: NodeJS.Timeout | undefined;
  private resync: NodeJS.Timeout | undefined;

  constructor(private readonly deps: DataVolumeControllerDeps) {
    this.ownsInformers = deps.informers === undefined;
    this.informers = deps.informers ?? new InformerFactory(deps.kubeConfig, deps.config.namespaces, deps.logger);
    const core = deps.kubeConfig.makeApiClient(CoreV1Api);
    this.custom = deps.kubeConfig.makeApiClient(CustomObjectsApi);
    const reconcileDeps: DvReconcileDeps = {
      caches: {
        getDataVolume: (ns, name) => this.caches?.dvs.get(name, ns),
        getPvc: (ns, name) => this.caches?.pvcs.get(name, ns),
      },
      writer: new DataVolumeWriter(core, this.custom),
      config: { filesystemOverhead: deps.config.filesystemOverhead },
      logger: deps.logger,
      now: deps.now ?? Date.now,
      readPvc: async (namespace, name) => {
        return kubeGet({ verb: 'get', resource: 'persistentvolumeclaims', namespace, name }, () => core.readNamespacedPersistentVolumeClaim({ namespace, name }));
      },
      clone: {
        // The webhook's public key is in Ferry's namespace (ADR 0014).
        keys: new CloneKeys(core, deps.config.ferryNamespace ?? 'ferry-system', deps.now),
        readDataSource: (namespace, name) =>
          kubeGet({ verb: 'get', resource: DATASOURCE_PLURAL, namespace, name }, () =>
            this.custom.getNamespacedCustomObject({ group: DATASOURCE_GROUP, version: DATASOURCE_VERSION, namespace, plural: DATASOURCE_PLURAL, name }) as Promise<DataSource>,
          ),
      },
    };
    this.queue = new WorkQueue((key) => reconcileDataVolume(key, reconcileDeps), {
      concurrency: deps.config.concurrency,
      baseBackoffMs: 500,
      maxBackoffMs: 60_000,
      onError: (key, err, retryInMs) => deps.logger.warn({ dv: key, retryInMs, err: errorLine(err) }, 'reconcile failed'),
    });
  }

  get ready(): boolean {
    return this.synced;
  }

  /** Starts the informers; resolves once the caches are filled, or once the CRD was found missing. */
  async start(): Promise<void> {
    if (!(await crdServed(this.custom, DV_GROUP, DV_VERSION, DV_PLURAL))) {
      this.deps.logger.warn('the cdi.kubevirt.io DataVolume CRD is not installed (manifests/crds); the DataVolume controller waits for it');
      this.synced = true;
      this.retry = setTimeout(() => {
        this.synced = false;
        if (!this.stopped) this.start().catch((e: unknown) => this.deps.logger.error({ err: errorLine(e) }, 'DataVolume controller start failed'));
      }, this.deps.retryCrdMs ?? 30_000);
      this.retry.unref();
      return;
    }
    const caches = this.watch();
    await Promise.all([caches.dvs.start(), caches.pvcs.start()]);
    this.synced = true;
    const all = (): void => {
      for (const dv of caches.dvs.list()) this.enqueue(dv);
    };
    all();
    this.resync = setInterval(all, 300_000);
    this.resync.unref();
  }

  /** Stops taking work and waits for reconciles in flight (the caller bounds the wait). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retry) clearTimeout(this.retry);
    if (this.resync) clearInterval(this.resync);
    if (this.ownsInformers) await this.informers.stop();
    await this.queue.shutdown();
  }

  /** Waits until nothing is queued or running (for tests). */
  idle(): Promise<void> {
    return this.queue.idle();
  }

  private watch(): Caches {
    if (this.caches) return this.caches;
    const caches: Caches = { dvs: this.informers.custom<DataVolume>(DV_GROUP, DV_VERSION, DV_PLURAL), pvcs: this.informers.pvcs() };
    caches.dvs.onChange((dv) => this.enqueue(dv));
    // A PVC wakes the DataVolume of its name (its owner, or one that may adopt it or report it gone).
    caches.pvcs.onChange((pvc) => this.enqueue(pvc));
    this.caches = caches;
    return caches;
  }

  private enqueue(obj: KubernetesObject): void {
    const key = objectKey(obj);
    if (key) this.queue.add(key);
  }
}
