/**
 * Wires the shared PVC cache, the clone pods' cache (label `ferry.dev/clone`, both namespaces) and
 * the upload Services' cache to a work queue of target PVC keys `<ns>/<pvc>` and the thin
 * reconcile in ./reconcile.ts. Certificates come from the upload CAs (controller/certs/): the
 * target's server certificate from the server CA, the source's client certificate from the client
 * CA. Handlers only enqueue keys.
 */

import { CoreV1Api, type V1PersistentVolumeClaim, type V1Pod, type V1Service } from '@kubernetes/client-node';
import { UPLOAD_POD_SELECTOR } from '../../src/api/cdi.js';
import { checkCertSettings } from '../certs/rotation.js';
import { UploadCertificates } from '../certs/upload-certs.js';
import { errorLine, kubeCall, kubeGet } from '../runtime/errors.js';
import { InformerFactory, type SharedInformer } from '../runtime/informers.js';
import { WorkQueue } from '../runtime/work-queue.js';
import type { UploadControllerDeps } from '../upload/upload-controller.js';
import { CloneWriter } from './apply.js';
import { CLONE_POD_SELECTOR, CLONE_TARGET_ANNOTATION } from './clone-pods.js';
import { CloneKeys } from './keys.js';
import { cloneRequestOf } from './plan.js';
import { reconcileClone } from './reconcile.js';

/** The upload controller's: a kubeconfig, the config, a logger, optionally the shared informers, a clock, the resync period. */
export type CloneControllerDeps = UploadControllerDeps;

export class CloneController {
  private readonly informers: InformerFactory;
  private readonly ownsInformers: boolean;
  private readonly pvcs: SharedInformer<V1PersistentVolumeClaim>;
  private readonly pods: SharedInformer<V1Pod>;
  private readonly services: SharedInformer<V1Service>;
  private readonly queue: WorkQueue;
  private timer: NodeJS.Timeout | undefined;
  private synced = false;

  constructor(private readonly deps: CloneControllerDeps) {
    const { config, logger } = deps;
    this.ownsInformers = deps.informers === undefined;
    this.informers = deps.informers ?? new InformerFactory(deps.kubeConfig, config.namespaces, logger);
    this.pvcs = this.informers.pvcs();
    this.pods = this.informers.pods(CLONE_POD_SELECTOR);
    const services = (this.services = this.informers.services(UPLOAD_POD_SELECTOR));
    const core = deps.kubeConfig.makeApiClient(CoreV1Api);
    const now = deps.now ?? Date.now;
    const certs = new UploadCertificates(core, config.ferryNamespace, checkCertSettings({ caLifetimeMs: config.uploadCaLifetimeMs, leafLifetimeMs: config.uploadCertLifetimeMs }), logger, () => new Date(now()));
    // The upload controller keeps the CAs rotated; this one loads them (creating them if it runs alone).
    const loaded = async (): Promise<UploadCertificates> => {
      if (!certs.ready) await certs.ensure();
      return certs;
    };
    const writer = new CloneWriter(
      core,
      {
        serverCertificate: async (hosts, commonName) => (await loaded()).serverCertificate(hosts, commonName),
        clientCertificate: async (commonName) => (await loaded()).clientCertificate(commonName),
      },
      () => new Date(now()),
    );
    this.queue = new WorkQueue(
      (key) =>
        reconcileClone(key, {
          caches: {
            getPvc: (ns, name) => this.pvcs.get(name, ns),
            getPod: (ns, name) => this.pods.get(name, ns),
            getService: (ns, name) => services.get(name, ns),
          },
          writer,
          keys: new CloneKeys(core, config.ferryNamespace, now),
          config,
          logger,
          now,
          readPvc: (namespace, name) => kubeGet({ verb: 'get', resource: 'persistentvolumeclaims', namespace, name }, () => core.readNamespacedPersistentVolumeClaim({ namespace, name })),
          listPods: async (namespace) => (await kubeCall({ verb: 'list', resource: 'pods', namespace }, () => core.listNamespacedPod({ namespace }))).items,
        }),
      {
        concurrency: config.concurrency,
        baseBackoffMs: 500,
        maxBackoffMs: 60_000,
        onError: (key, err, retryInMs) => logger.warn({ pvc: key, retryInMs, err: errorLine(err) }, 'clone reconcile failed'),
      },
      now,
    );
  }

  get ready(): boolean {
    return this.synced;
  }

  async start(): Promise<void> {
    this.pvcs.onChange((pvc) => this.enqueuePvc(pvc));
    this.pods.onChange((pod) => this.enqueuePod(pod));
    await Promise.all([this.pvcs.start(), this.pods.start(), this.services.start()]);
    this.synced = true;
    const all = (): void => {
      for (const pvc of this.pvcs.list()) this.enqueuePvc(pvc);
    };
    all();
    this.timer = setInterval(all, this.deps.resyncMs ?? 300_000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    if (this.ownsInformers) await this.informers.stop();
    await this.queue.shutdown();
  }

  idle(): Promise<void> {
    return this.queue.idle();
  }

  private enqueuePvc(pvc: V1PersistentVolumeClaim): void {
    if (cloneRequestOf(pvc) !== undefined && pvc.metadata?.namespace && pvc.metadata.name) this.queue.add(`${pvc.metadata.namespace}/${pvc.metadata.name}`);
  }

  /** A target pod names its PVC as owner; a source pod (no owner across namespaces) in an annotation. */
  private enqueuePod(pod: V1Pod): void {
    const owner = pod.metadata?.ownerReferences?.find((o) => o.kind === 'PersistentVolumeClaim');
    if (owner && pod.metadata?.namespace) return this.queue.add(`${pod.metadata.namespace}/${owner.name}`);
    const target = pod.metadata?.annotations?.[CLONE_TARGET_ANNOTATION];
    if (target?.includes('/')) this.queue.add(target);
  }
}
