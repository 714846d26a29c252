/**
 * Keeps each DataSource's `Ready` condition (./plan.ts): DataSource, PVC and DataVolume caches from
 * the shared informers, one work queue keyed `<ns>/<name>` of DataSources. A PVC or DataVolume
 * change wakes every DataSource that names it (handlers only enqueue keys). Without the DataSource
 * CRD installed the controller waits and looks again, so the controllers beside it are not held up.
 */

import { CustomObjectsApi, type KubeConfig, type KubernetesObject, type V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { type DataSource, DATASOURCE_GROUP, DATASOURCE_PLURAL, DATASOURCE_VERSION, dataSourcePvc } from '../../src/api/datasource.js';
import { type DataVolume, DV_GROUP, DV_PLURAL, DV_VERSION } from '../../src/api/datavolume.js';
import type { Logger } from '../../src/logging.js';
import { crdServed } from '../runtime/crds.js';
import { errorLine, KubeError, kubeCall } from '../runtime/errors.js';
import { InformerFactory, type SharedInformer } from '../runtime/informers.js';
import { objectKey, splitKey } from '../runtime/keys.js';
import { type HandlerResult, WorkQueue } from '../runtime/work-queue.js';
import { mergePatch, tolerate } from '../runtime/writer.js';
import { planDataSource, planDataSourceLabels } from './plan.js';

export interface DataSourceControllerDeps {
  readonly kubeConfig: KubeConfig;
  readonly config: { readonly namespaces: readonly string[]; readonly concurrency: number };
  readonly logger: Logger;
  /** The process's shared informers; without it the controller makes (and stops) its own. */
  readonly informers?: InformerFactory;
  readonly now?: () => number;
  readonly retryCrdMs?: number;
}

interface Caches {
  readonly dataSources: SharedInformer<DataSource>;
  readonly pvcs: SharedInformer<V1PersistentVolumeClaim>;
  readonly dataVolumes: SharedInformer<DataVolume>;
}

const where = { group: DATASOURCE_GROUP, version: DATASOURCE_VERSION, plural: DATASOURCE_PLURAL } as const;

export class DataSourceController {
  private readonly informers: InformerFactory;
  private readonly ownsInformers: boolean;
  private readonly custom: CustomObjectsApi;
  private readonly queue: WorkQueue;
  private caches: Caches | undefined;
  private synced = false;
  private stopped = false;
  private retry: NodeJS.Timeout | undefined;

  constructor(private readonly deps: DataSourceControllerDeps) {
    this.ownsInformers = deps.informers === undefined;
    this.informers = deps.informers ?? new InformerFactory(deps.kubeConfig, deps.config.namespaces, deps.logger);
    this.custom = deps.kubeConfig.makeApiClient(CustomObjectsApi);
    this.queue = new WorkQueue((key) => this.reconcile(key), {
      concurrency: deps.config.concurrency,
      baseBackoffMs: 500,
      maxBackoffMs: 60_000,
      onError: (key, err, retryInMs) => deps.logger.warn({ dataSource: key, retryInMs, err: errorLine(err) }, 'reconcile failed'),
    });
  }

  get ready(): boolean {
    return this.synced;
  }

  /** Starts the informers; resolves once the caches are filled, or once the CRD was found missing. */
  async start(): Promise<void> {
    if (!(await crdServed(this.custom, DATASOURCE_GROUP, DATASOURCE_VERSION, DATASOURCE_PLURAL)) || !(await crdServed(this.custom, DV_GROUP, DV_VERSION, DV_PLURAL))) {
      this.deps.logger.warn('the cdi.kubevirt.io DataSource or DataVolume CRD is not installed (manifests/crds); the DataSource controller waits for it');
      this.synced = true;
      this.retry = setTimeout(() => {
        this.synced = false;
        if (!this.stopped) this.start().catch((e: unknown) => this.deps.logger.error({ err: errorLine(e) }, 'DataSource controller start failed'));
      }, this.deps.retryCrdMs ?? 30_000);
      this.retry.unref();
      return;
    }
    const caches = this.watch();
    await Promise.all([caches.dataSources.start(), caches.pvcs.start(), caches.dataVolumes.start()]);
    this.synced = true;
    for (const ds of caches.dataSources.list()) this.enqueue(ds);
  }

  /** Stops taking work and waits for reconciles in flight (the caller bounds the wait). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retry) clearTimeout(this.retry);
    if (this.ownsInformers) await this.informers.stop();
    await this.queue.shutdown();
  }

  /** Waits until nothing is queued or running (for tests). */
  idle(): Promise<void> {
    return this.queue.idle();
  }

  /** One pass: the caches, the plan, a merge-patch of status when it changed. A deleted DataSource is done. */
  private async reconcile(key: string): Promise<HandlerResult> {
    const [namespace, name] = splitKey(key);
    const dataSource = this.caches?.dataSources.get(name, namespace);
    if (!dataSource) return {};
    const ref = dataSourcePvc(dataSource);
    const pvc = ref && this.caches?.pvcs.get(ref.name, ref.namespace);
    const dataVolume = ref && this.caches?.dataVolumes.get(ref.name, ref.namespace);
    const labels = planDataSourceLabels({ dataSource, ...(pvc ? { pvc } : {}) });
    if (labels) await tolerate(kubeCall({ verb: 'patch', resource: DATASOURCE_PLURAL, namespace, name }, () => this.custom.patchNamespacedCustomObject({ ...where, namespace, name, body: { metadata: { labels } } }, mergePatch)), KubeError.NotFound);
    const status = planDataSource({ dataSource, ...(pvc ? { pvc } : {}), ...(dataVolume ? { dataVolume } : {}), now: (this.deps.now ?? Date.now)() });
    if (status === undefined) return {};
    const ready = status.conditions[0];
    this.deps.logger.info({ dataSource: key, ready: ready?.status, reason: ready?.reason }, 'Ready condition');
    await tolerate(
      kubeCall({ verb: 'patch', resource: `${DATASOURCE_PLURAL}/status`, namespace, name }, () =>
        this.custom.patchNamespacedCustomObjectStatus({ ...where, namespace, name, body: { status } }, mergePatch),
      ),
      KubeError.NotFound,
    );
    return {};
  }

  private watch(): Caches {
    if (this.caches) return this.caches;
    const caches: Caches = {
      dataSources: this.informers.custom<DataSource>(DATASOURCE_GROUP, DATASOURCE_VERSION, DATASOURCE_PLURAL),
      pvcs: this.informers.pvcs(),
      dataVolumes: this.informers.custom<DataVolume>(DV_GROUP, DV_VERSION, DV_PLURAL),
    };
    caches.dataSources.onChange((ds) => this.enqueue(ds));
    caches.pvcs.onChange((pvc) => this.wakeNaming(pvc));
    caches.dataVolumes.onChange((dv) => this.wakeNaming(dv));
    this.caches = caches;
    return caches;
  }

  /** Enqueues every DataSource whose spec.source.pvc names `obj` (a PVC, or the DataVolume of its name). */
  private wakeNaming(obj: KubernetesObject): void {
    const { namespace, name } = obj.metadata ?? {};
    for (const ds of this.caches?.dataSources.list() ?? []) {
      const ref = dataSourcePvc(ds);
      if (ref?.namespace === namespace && ref?.name === name) this.enqueue(ds);
    }
  }

  private enqueue(obj: KubernetesObject): void {
    const key = objectKey(obj);
    if (key) this.queue.add(key);
  }
}
