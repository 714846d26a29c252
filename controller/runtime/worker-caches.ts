/**
 * The caches of a controller that runs worker pods for PVCs (import, upload, clone): the shared PVC
 * and StorageClass caches, and the pods (and Services) of one label; the reads its reconcile makes
 * of them, and which keys their objects wake.
 */

import type { V1PersistentVolumeClaim, V1Pod, V1Service, V1StorageClass } from '@kubernetes/client-node';
import type { Watch } from './controller.js';
import type { InformerFactory, SharedInformer } from './informers.js';

export interface WorkerCaches {
  readonly pvcs: SharedInformer<V1PersistentVolumeClaim>;
  readonly pods: SharedInformer<V1Pod>;
  /** Absent for a controller whose workers have no Service (import). */
  readonly services?: SharedInformer<V1Service>;
  readonly storageClasses: SharedInformer<V1StorageClass>;
}

export interface WorkerReads {
  getPvc(namespace: string, name: string): V1PersistentVolumeClaim | undefined;
  getPod(namespace: string, name: string): V1Pod | undefined;
  getService(namespace: string, name: string): V1Service | undefined;
  getStorageClass(name: string): V1StorageClass | undefined;
}

/** Pods of `podSelector`, and Services of `serviceSelector` when given. */
export function workerCaches(informers: InformerFactory, podSelector: string, serviceSelector?: string): WorkerCaches {
  return {
    pvcs: informers.pvcs(),
    pods: informers.pods(podSelector),
    ...(serviceSelector !== undefined ? { services: informers.services(serviceSelector) } : {}),
    storageClasses: informers.storageClasses(),
  };
}

export function workerReads({ pvcs, pods, services, storageClasses }: WorkerCaches): WorkerReads {
  return {
    getPvc: (ns, name) => pvcs.get(name, ns),
    getPod: (ns, name) => pods.get(name, ns),
    getService: (ns, name) => services?.get(name, ns),
    getStorageClass: (name) => storageClasses.get(name, ''),
  };
}

/** Which key each object wakes (undefined: none); Services wake nothing without `service`. */
export interface WorkerKeys {
  pvc(pvc: V1PersistentVolumeClaim): string | undefined;
  pod(pod: V1Pod): string | undefined;
  service?(service: V1Service): string | undefined;
}

/** Wires the caches' handlers to `enqueue` through `keys`; a resync queues every cached PVC's key. */
export function watchWorkers(caches: WorkerCaches, keys: WorkerKeys, enqueue: (key: string | undefined) => void): Watch {
  const { pvcs, pods, services, storageClasses } = caches;
  pvcs.onChange((pvc) => enqueue(keys.pvc(pvc)));
  pods.onChange((pod) => enqueue(keys.pod(pod)));
  const serviceKey = keys.service;
  if (serviceKey) services?.onChange((service) => enqueue(serviceKey(service)));
  return { sources: [pvcs, pods, services, storageClasses], keys: () => pvcs.list().map((pvc) => keys.pvc(pvc)) };
}
