/**
 * Keeps each DataSource's `Ready` condition (./plan.ts), on the shared runtime
 * (runtime/controller.ts): DataSource, PVC and DataVolume caches from the shared informers, keys
 * `<ns>/<name>` of DataSources. A PVC or DataVolume change wakes every DataSource that names it.
 * Without the DataSource CRD installed the controller waits and looks again, so the controllers
 * beside it are not held up.
 */

import { CustomObjectsApi, type KubernetesObject, type V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { type DataSource, DATASOURCE_GROUP, DATASOURCE_PLURAL, DATASOURCE_VERSION, dataSourcePvc } from '../../src/api/datasource.js';
import { type DataVolume, DV_GROUP, DV_PLURAL, DV_VERSION } from '../../src/api/datavolume.js';
import { Controller, type RuntimeDeps, type Watch } from '../runtime/controller.js';
import { crdServed } from '../runtime/crds.js';
import { KubeError, kubeCall } from '../runtime/errors.js';
import type { SharedInformer } from '../runtime/informers.js';
import { objectKey, splitKey } from '../runtime/keys.js';
import type { HandlerResult } from '../runtime/work-queue.js';
import { mergePatch, tolerate } from '../runtime/writer.js';
import { planDataSource, planDataSourceLabels } from './plan.js';

export interface DataSourceControllerDeps extends RuntimeDeps {
  readonly retryCrdMs?: number;
}

interface Caches {
  readonly dataSources: SharedInformer<DataSource>;
  readonly pvcs: SharedInformer<V1PersistentVolumeClaim>;
  readonly dataVolumes: SharedInformer<DataVolume>;
}

const where = { group: DATASOURCE_GROUP, version: DATASOURCE_VERSION, plural: DATASOURCE_PLURAL } as const;

export class DataSourceController extends Controller {
  private readonly custom: CustomObjectsApi;
  private caches: Caches | undefined;

  /** No periodic resync: every DataSource is queued once on start, then on changes. */
  constructor(private readonly dsDeps: DataSourceControllerDeps) {
    super(dsDeps, { name: 'DataSource controller', keyField: 'dataSource', retryMs: dsDeps.retryCrdMs });
    this.custom = dsDeps.kubeConfig.makeApiClient(CustomObjectsApi);
  }

  protected override async missing(): Promise<string | undefined> {
    if ((await crdServed(this.custom, DATASOURCE_GROUP, DATASOURCE_VERSION, DATASOURCE_PLURAL)) && (await crdServed(this.custom, DV_GROUP, DV_VERSION, DV_PLURAL))) return undefined;
    return 'the cdi.kubevirt.io DataSource or DataVolume CRD is not installed (manifests/crds); the DataSource controller waits for it';
  }

  /** One pass: the caches, the plan, a merge-patch of status when it changed. A deleted DataSource is done. */
  protected async reconcile(key: string): Promise<HandlerResult> {
    const [namespace, name] = splitKey(key);
    const dataSource = this.caches?.dataSources.get(name, namespace);
    if (!dataSource) return {};
    const ref = dataSourcePvc(dataSource);
    const pvc = ref && this.caches?.pvcs.get(ref.name, ref.namespace);
    const dataVolume = ref && this.caches?.dataVolumes.get(ref.name, ref.namespace);
    const labels = planDataSourceLabels({ dataSource, ...(pvc ? { pvc } : {}) });
    if (labels) await tolerate(kubeCall({ verb: 'patch', resource: DATASOURCE_PLURAL, namespace, name }, () => this.custom.patchNamespacedCustomObject({ ...where, namespace, name, body: { metadata: { labels } } }, mergePatch)), KubeError.NotFound);
    const status = planDataSource({ dataSource, ...(pvc ? { pvc } : {}), ...(dataVolume ? { dataVolume } : {}), now: (this.dsDeps.now ?? Date.now)() });
    if (status === undefined) return {};
    const ready = status.conditions[0];
    this.dsDeps.logger.info({ dataSource: key, ready: ready?.status, reason: ready?.reason }, 'Ready condition');
    await tolerate(
      kubeCall({ verb: 'patch', resource: `${DATASOURCE_PLURAL}/status`, namespace, name }, () =>
        this.custom.patchNamespacedCustomObjectStatus({ ...where, namespace, name, body: { status } }, mergePatch),
      ),
      KubeError.NotFound,
    );
    return {};
  }

  protected watch(): Watch {
    const caches: Caches = {
      dataSources: this.informers.custom<DataSource>(DATASOURCE_GROUP, DATASOURCE_VERSION, DATASOURCE_PLURAL),
      pvcs: this.informers.pvcs(),
      dataVolumes: this.informers.custom<DataVolume>(DV_GROUP, DV_VERSION, DV_PLURAL),
    };
    caches.dataSources.onChange((ds) => this.enqueue(objectKey(ds)));
    caches.pvcs.onChange((pvc) => this.wakeNaming(pvc));
    caches.dataVolumes.onChange((dv) => this.wakeNaming(dv));
    this.caches = caches;
    return { sources: [caches.dataSources, caches.pvcs, caches.dataVolumes], keys: () => caches.dataSources.list().map(objectKey) };
  }

  /** Enqueues every DataSource whose spec.source.pvc names `obj` (a PVC, or the DataVolume of its name). */
  private wakeNaming(obj: KubernetesObject): void {
    const { namespace, name } = obj.metadata ?? {};
    for (const ds of this.caches?.dataSources.list() ?? []) {
      const ref = dataSourcePvc(ds);
      if (ref?.namespace === namespace && ref?.name === name) this.enqueue(objectKey(ds));
    }
  }
}
