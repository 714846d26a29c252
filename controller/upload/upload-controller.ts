/**
 * Wires the shared PVC cache and the upload pod and Service caches to a work queue and the thin
 * reconcile in ./reconcile.ts, and keeps the upload certificates (controller/certs/) fresh: checked
 * at start and every `certCheckIntervalMs`. Handlers only enqueue keys `<ns>/<pvc>`.
 */

import { CoreV1Api, type KubeConfig, type V1PersistentVolumeClaim, type V1Pod, type V1Service, type V1StorageClass } from '@kubernetes/client-node';
import { UPLOAD_POD_SELECTOR } from '../../src/api/cdi.js';
import type { Logger } from '../../src/logging.js';
import type { ControllerConfig } from '../config.js';
import { UploadCertificates } from '../certs/upload-certs.js';
import { checkCertSettings } from '../certs/rotation.js';
import { errorLine } from '../runtime/errors.js';
import { InformerFactory, type SharedInformer } from '../runtime/informers.js';
import { WorkQueue } from '../runtime/work-queue.js';
import { UploadWriter } from './apply.js';
import { reconcileUpload } from './reconcile.js';
import type { SettingsSource } from '../runtime/cdi-settings.js';

export interface UploadControllerDeps {
  readonly kubeConfig: KubeConfig;
  readonly config: ControllerConfig;
  readonly logger: Logger;
  readonly informers?: InformerFactory;
  readonly now?: () => number;
  readonly resyncMs?: number;
  /** CDIConfig's settings (runtime/cdi-settings.ts); absent: the flags alone. */
  readonly settings?: SettingsSource;
}

export class UploadController {
  private readonly informers: InformerFactory;
  private readonly ownsInformers: boolean;
  private readonly pvcs: SharedInformer<V1PersistentVolumeClaim>;
  private readonly pods: SharedInformer<V1Pod>;
  private readonly services: SharedInformer<V1Service>;
  private readonly storageClasses: SharedInformer<V1StorageClass>;
  private readonly certs: UploadCertificates;
  private readonly queue: WorkQueue;
  private timers: NodeJS.Timeout[] = [];
  private synced = false;

  constructor(private readonly deps: UploadControllerDeps) {
    const { config, logger } = deps;
    if (!(config.uploadDeadlineMs > 0 && config.uploadDeadlineMs <= (config.uploadCertLifetimeMs * 2) / 3)) {
      throw new Error('the upload deadline must be positive and at most two thirds of the certificate lifetime');
    }
    const settings = checkCertSettings({ caLifetimeMs: config.uploadCaLifetimeMs, leafLifetimeMs: config.uploadCertLifetimeMs });
    this.ownsInformers = deps.informers === undefined;
    this.informers = deps.informers ?? new InformerFactory(deps.kubeConfig, config.namespaces, logger);
    this.pvcs = this.informers.pvcs();
    this.pods = this.informers.pods(UPLOAD_POD_SELECTOR);
    this.services = this.informers.services(UPLOAD_POD_SELECTOR);
    this.storageClasses = this.informers.storageClasses();
    const core = deps.kubeConfig.makeApiClient(CoreV1Api);
    const now = deps.now ?? Date.now;
    this.certs = new UploadCertificates(core, config.ferryNamespace, settings, logger, () => new Date(now()));
    const certs = this.certs;
    const issuer = {
      async serverCertificate(hosts: readonly string[], commonName: string) {
        if (!certs.ready) await certs.ensure();
        return certs.serverCertificate(hosts, commonName);
      },
    };
    const writer = new UploadWriter(core, issuer, () => new Date(now()));
    this.queue = new WorkQueue(
      (key) =>
        reconcileUpload(key, {
          caches: {
            getPvc: (ns, name) => this.pvcs.get(name, ns),
            getPod: (ns, name) => this.pods.get(name, ns),
            getService: (ns, name) => this.services.get(name, ns),
            getStorageClass: (name) => this.storageClasses.get(name, ''),
          },
          writer,
          config,
          logger,
          now,
          ...(deps.settings ? { settings: deps.settings } : {}),
        }),
      {
        concurrency: config.concurrency,
        baseBackoffMs: 500,
        maxBackoffMs: 60_000,
        onError: (key, err, retryInMs) => logger.warn({ pvc: key, retryInMs, err: errorLine(err) }, 'upload reconcile failed'),
      },
      now,
    );
  }

  get ready(): boolean {
    return this.synced;
  }

  async start(): Promise<void> {
    this.pvcs.onChange((pvc) => this.enqueuePvc(pvc));
    this.pods.onChange((pod) => this.enqueueOwner(pod));
    this.services.onChange((service) => this.enqueueOwner(service));
    await this.ensureCerts();
    await Promise.all([this.pvcs.start(), this.pods.start(), this.services.start(), this.storageClasses.start()]);
    this.synced = true;
    const all = (): void => {
      for (const pvc of this.pvcs.list()) this.enqueuePvc(pvc);
    };
    all();
    this.timers = [setInterval(all, this.deps.resyncMs ?? 300_000), setInterval(() => void this.ensureCerts(), this.deps.config.certCheckIntervalMs)];
    for (const t of this.timers) t.unref();
  }

  async stop(): Promise<void> {
    for (const t of this.timers) clearInterval(t);
    if (this.ownsInformers) await this.informers.stop();
    await this.queue.shutdown();
  }

  idle(): Promise<void> {
    return this.queue.idle();
  }

  /** A failed round is logged and tried again on the next tick; pods wait (their reconciles fail) until a CA is there. */
  private async ensureCerts(): Promise<void> {
    try {
      await this.certs.ensure();
    } catch (err) {
      this.deps.logger.error({ err: errorLine(err), namespace: this.deps.config.ferryNamespace }, 'cannot keep the upload certificates; upload servers cannot start until this works');
    }
  }

  private enqueuePvc(pvc: V1PersistentVolumeClaim): void {
    const owner = pvc.metadata?.ownerReferences?.find((o) => o.kind === 'PersistentVolumeClaim' && o.controller);
    const name = owner?.name ?? pvc.metadata?.name;
    if (name && pvc.metadata?.namespace) this.queue.add(`${pvc.metadata.namespace}/${name}`);
  }

  private enqueueOwner(obj: V1Pod | V1Service): void {
    const owner = obj.metadata?.ownerReferences?.find((o) => o.kind === 'PersistentVolumeClaim');
    if (owner && obj.metadata?.namespace) this.queue.add(`${obj.metadata.namespace}/${owner.name}`);
  }
}
