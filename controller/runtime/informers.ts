/**
 * One informer factory per process: every controller that needs PVCs reads the same PVC cache, and
 * each (resource, label selector) pair is watched once. The factory honours the watched namespaces:
 * with none it watches the whole cluster, else one list+watch per namespace behind one cache.
 * Informers restart themselves after an error (client-node's stops on most errors), and `start()`
 * resolves only after the first successful list, so readiness means the caches are filled.
 */

import {
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  makeInformer,
  StorageV1Api,
  type V1PersistentVolumeClaim,
  type V1Pod,
  type V1Service,
  type V1StorageClass,
} from '@kubernetes/client-node';
import type { Logger } from '../../src/logging.js';
import { errorLine, kubeCall } from './errors.js';

/** Read-only view of a cache: what reconcilers use. */
export interface Cache<T> {
  get(name: string, namespace: string): T | undefined;
  /** Every cached object, or those in `namespace`. */
  list(namespace?: string): readonly T[];
}

export interface SharedInformer<T extends KubernetesObject> extends Cache<T> {
  /** Calls `handler` on every add, update and delete (handlers only enqueue keys). */
  onChange(handler: (obj: T) => void): void;
  onDelete(handler: (obj: T) => void): void;
  /** Starts watching (once, however often it is called); resolves after the first list. */
  start(): Promise<void>;
  readonly synced: boolean;
}

type ListFn<T extends KubernetesObject> = (namespace: string) => Promise<KubernetesListObject<T>>;

interface Watched<T extends KubernetesObject> {
  readonly informer: ReturnType<typeof makeInformer<T>>;
  listed: boolean;
  firstList: Promise<void>;
}

const RESTART_DELAY_MS = 2000;

class Shared<T extends KubernetesObject> implements SharedInformer<T> {
  private readonly scopes = new Map<string, Watched<T>>();
  private started: Promise<void> | undefined;

  constructor(
    kubeConfig: KubeConfig,
    readonly what: string,
    namespaces: readonly string[],
    path: (namespace: string) => string,
    list: ListFn<T>,
    labelSelector: string | undefined,
    private readonly logger: Logger,
    private readonly stopped: () => boolean,
  ) {
    for (const ns of namespaces.length > 0 ? namespaces : ['']) {
      let listed!: () => void;
      const firstList = new Promise<void>((resolve) => (listed = resolve));
      const watched: Watched<T> = {
        informer: makeInformer<T>(
          kubeConfig,
          path(ns),
          async () => {
            const result = await kubeCall({ verb: 'list', resource: what, ...(ns ? { namespace: ns } : {}) }, () => list(ns));
            watched.listed = true;
            listed();
            return result;
          },
          labelSelector,
        ),
        listed: false,
        firstList,
      };
      watched.informer.on('error', (err: unknown) => {
        if (this.stopped()) return;
        this.logger.warn({ informer: what, namespace: ns || 'all', err: errorLine(err) }, 'watch failed; restarting');
        setTimeout(() => {
          if (!this.stopped()) watched.informer.start().catch(() => undefined);
        }, RESTART_DELAY_MS).unref();
      });
      this.scopes.set(ns, watched);
    }
  }

  get synced(): boolean {
    return [...this.scopes.values()].every((s) => s.listed);
  }

  get(name: string, namespace: string): T | undefined {
    return (this.scopes.get(namespace) ?? this.scopes.get(''))?.informer.get(name, namespace);
  }

  list(namespace?: string): readonly T[] {
    if (namespace !== undefined) return (this.scopes.get(namespace) ?? this.scopes.get(''))?.informer.list(namespace) ?? [];
    return [...this.scopes.values()].flatMap((s) => s.informer.list());
  }

  onChange(handler: (obj: T) => void): void {
    for (const { informer } of this.scopes.values()) for (const verb of ['add', 'update', 'delete'] as const) informer.on(verb, handler);
  }

  onDelete(handler: (obj: T) => void): void {
    for (const { informer } of this.scopes.values()) informer.on('delete', handler);
  }

  start(): Promise<void> {
    this.started ??= Promise.all(
      [...this.scopes.values()].map(async (s) => {
        // A failed first list is reported through 'error' (and restarted there); wait for a good one.
        await s.informer.start();
        await s.firstList;
      }),
    ).then(() => undefined);
    return this.started;
  }

  async stop(): Promise<void> {
    await Promise.all([...this.scopes.values()].map((s) => s.informer.stop()));
  }
}

/** The process's informers, created on first use and shared by every controller. */
export class InformerFactory {
  private readonly informers = new Map<string, Shared<KubernetesObject>>();
  private readonly core: CoreV1Api;
  private readonly customApi: CustomObjectsApi;
  private readonly storage: StorageV1Api;
  private stopped = false;

  constructor(
    private readonly kubeConfig: KubeConfig,
    /** Namespaces to watch; empty means all. */
    readonly namespaces: readonly string[],
    private readonly logger: Logger,
  ) {
    this.core = kubeConfig.makeApiClient(CoreV1Api);
    this.customApi = kubeConfig.makeApiClient(CustomObjectsApi);
    this.storage = kubeConfig.makeApiClient(StorageV1Api);
  }

  /** Every StorageClass (cluster-scoped: one watch whatever the namespaces). */
  storageClasses(): SharedInformer<V1StorageClass> {
    return this.shared('storageclasses.storage.k8s.io', undefined, () => '/apis/storage.k8s.io/v1/storageclasses', () => this.storage.listStorageClass(), true);
  }

  /** Every PVC in the watched namespaces. */
  pvcs(): SharedInformer<V1PersistentVolumeClaim> {
    return this.shared('persistentvolumeclaims', undefined, (ns) => (ns ? `/api/v1/namespaces/${ns}/persistentvolumeclaims` : '/api/v1/persistentvolumeclaims'), (ns) =>
      ns ? this.core.listNamespacedPersistentVolumeClaim({ namespace: ns }) : this.core.listPersistentVolumeClaimForAllNamespaces(),
    );
  }

  /** Pods matching `labelSelector` in the watched namespaces. */
  pods(labelSelector: string): SharedInformer<V1Pod> {
    return this.shared('pods', labelSelector, (ns) => (ns ? `/api/v1/namespaces/${ns}/pods` : '/api/v1/pods'), (ns) =>
      ns ? this.core.listNamespacedPod({ namespace: ns, labelSelector }) : this.core.listPodForAllNamespaces({ labelSelector }),
    );
  }

  /** Services matching `labelSelector` in the watched namespaces. */
  services(labelSelector: string): SharedInformer<V1Service> {
    return this.shared('services', labelSelector, (ns) => (ns ? `/api/v1/namespaces/${ns}/services` : '/api/v1/services'), (ns) =>
      ns ? this.core.listNamespacedService({ namespace: ns, labelSelector }) : this.core.listServiceForAllNamespaces({ labelSelector }),
    );
  }

  /** Custom objects of `group/version` `plural` in the watched namespaces (or, `clusterScoped`, all of them: one watch). */
  custom<T extends KubernetesObject>(group: string, version: string, plural: string, clusterScoped = false): SharedInformer<T> {
    return this.shared<T>(
      `${plural}.${group}`,
      undefined,
      (ns) => (ns ? `/apis/${group}/${version}/namespaces/${ns}/${plural}` : `/apis/${group}/${version}/${plural}`),
      (ns) =>
        (ns
          ? this.customApi.listNamespacedCustomObject({ group, version, namespace: ns, plural })
          : this.customApi.listClusterCustomObject({ group, version, plural })) as Promise<KubernetesListObject<T>>,
      clusterScoped,
    );
  }

  /** Stops every informer; none restarts afterwards. */
  async stop(): Promise<void> {
    this.stopped = true;
    await Promise.all([...this.informers.values()].map((i) => i.stop()));
  }

  private shared<T extends KubernetesObject>(what: string, labelSelector: string | undefined, path: (ns: string) => string, list: ListFn<T>, clusterScoped = false): SharedInformer<T> {
    const id = `${what}?${labelSelector ?? ''}`;
    let informer = this.informers.get(id) as Shared<T> | undefined;
    if (!informer) {
      informer = new Shared<T>(this.kubeConfig, what, clusterScoped ? [] : this.namespaces, path, list, labelSelector, this.logger, () => this.stopped);
      this.informers.set(id, informer as unknown as Shared<KubernetesObject>);
    }
    return informer;
  }
}
