/**
 * The DataVolume controller on the shared runtime (runtime/controller.ts): the DataVolume cache and
 * the shared PVC cache wake keys `<ns>/<name>` (a DataVolume and its PVC share the name), and each
 * key runs ./reconcile.ts. Without the cdi.kubevirt.io CRD installed the controller waits and looks
 * again, so the controllers beside it are not held up.
 */

import { CoreV1Api, CustomObjectsApi, type V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { type DataVolume, DV_GROUP, DV_PLURAL, DV_VERSION } from '../../src/api/datavolume.js';
import { overheadOfClass } from '../../src/api/cdiconfig.js';
import { DATASOURCE_GROUP, DATASOURCE_PLURAL, DATASOURCE_VERSION, type DataSource } from '../../src/api/datasource.js';
import { CloneKeys } from '../clone/keys.js';
import type { SettingsSource } from '../runtime/cdi-settings.js';
import { Controller, type RuntimeDeps, type Watch } from '../runtime/controller.js';
import { crdServed } from '../runtime/crds.js';
import { kubeGet } from '../runtime/errors.js';
import type { SharedInformer } from '../runtime/informers.js';
import { objectKey } from '../runtime/keys.js';
import type { HandlerResult } from '../runtime/work-queue.js';
import { DataVolumeWriter } from './apply.js';
import { type DvReconcileDeps, reconcileDataVolume } from './reconcile.js';

export interface DataVolumeControllerDeps extends RuntimeDeps {
  readonly config: RuntimeDeps['config'] & { readonly filesystemOverhead: number; readonly ferryNamespace?: string };
  readonly retryCrdMs?: number;
  /** CDIConfig's settings (runtime/cdi-settings.ts): the filesystem overhead per storage class; absent: the flag. */
  readonly settings?: SettingsSource;
}

interface Caches {
  readonly dvs: SharedInformer<DataVolume>;
  readonly pvcs: SharedInformer<V1PersistentVolumeClaim>;
}

export class DataVolumeController extends Controller {
  private readonly custom: CustomObjectsApi;
  private readonly reconcileDeps: DvReconcileDeps;
  private caches: Caches | undefined;

  constructor(deps: DataVolumeControllerDeps) {
    super(deps, { name: 'DataVolume controller', keyField: 'dv', resyncMs: 300_000, retryMs: deps.retryCrdMs });
    const core = deps.kubeConfig.makeApiClient(CoreV1Api);
    const { settings } = deps;
    const custom = (this.custom = deps.kubeConfig.makeApiClient(CustomObjectsApi));
    this.reconcileDeps = {
      caches: {
        getDataVolume: (ns, name) => this.caches?.dvs.get(name, ns),
        getPvc: (ns, name) => this.caches?.pvcs.get(name, ns),
      },
      writer: new DataVolumeWriter(core, custom),
      config: { filesystemOverhead: settings ? (storageClass) => overheadOfClass(settings.current(), storageClass) : deps.config.filesystemOverhead },
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
            custom.getNamespacedCustomObject({ group: DATASOURCE_GROUP, version: DATASOURCE_VERSION, namespace, plural: DATASOURCE_PLURAL, name }) as Promise<DataSource>,
          ),
      },
    };
  }

  protected reconcile(key: string): Promise<HandlerResult> {
    return reconcileDataVolume(key, this.reconcileDeps);
  }

  protected override async missing(): Promise<string | undefined> {
    if (await crdServed(this.custom, DV_GROUP, DV_VERSION, DV_PLURAL)) return undefined;
    return 'the cdi.kubevirt.io DataVolume CRD is not installed (manifests/crds); the DataVolume controller waits for it';
  }

  protected watch(): Watch {
    const caches: Caches = { dvs: this.informers.custom<DataVolume>(DV_GROUP, DV_VERSION, DV_PLURAL), pvcs: this.informers.pvcs() };
    caches.dvs.onChange((dv) => this.enqueue(objectKey(dv)));
    // A PVC wakes the DataVolume of its name (its owner, or one that may adopt it or report it gone).
    caches.pvcs.onChange((pvc) => this.enqueue(objectKey(pvc)));
    this.caches = caches;
    return { sources: [caches.dvs, caches.pvcs], keys: () => caches.dvs.list().map(objectKey) };
  }
}
