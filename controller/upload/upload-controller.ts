/**
 * The upload controller on the shared runtime (runtime/controller.ts): the shared PVC cache and the
 * upload pod and Service caches wake keys `<ns>/<pvc>`, each key runs ./reconcile.ts, and the upload
 * certificates (controller/certs/) are kept fresh: checked before the caches start and every
 * `certCheckIntervalMs`.
 */

import { CoreV1Api } from '@kubernetes/client-node';
import { UPLOAD_POD_SELECTOR } from '../../src/api/cdi.js';
import { UploadCertificates } from '../certs/upload-certs.js';
import { checkCertSettings } from '../certs/rotation.js';
import { Controller, type PvcControllerDeps, type Watch } from '../runtime/controller.js';
import { errorLine } from '../runtime/errors.js';
import { ownerPvcKey, servedPvcKey } from '../runtime/keys.js';
import type { HandlerResult } from '../runtime/work-queue.js';
import { type WorkerCaches, watchWorkers, workerCaches, workerReads } from '../runtime/worker-caches.js';
import { UploadWriter } from './apply.js';
import { reconcileUpload, type UploadReconcilerDeps } from './reconcile.js';

export type UploadControllerDeps = PvcControllerDeps;

export class UploadController extends Controller {
  private readonly caches: WorkerCaches;
  private readonly certs: UploadCertificates;
  private readonly reconcileDeps: UploadReconcilerDeps;

  constructor(private readonly uploadDeps: UploadControllerDeps) {
    const { config, logger } = uploadDeps;
    if (!(config.uploadDeadlineMs > 0 && config.uploadDeadlineMs <= (config.uploadCertLifetimeMs * 2) / 3)) {
      throw new Error('the upload deadline must be positive and at most two thirds of the certificate lifetime');
    }
    const settings = checkCertSettings({ caLifetimeMs: config.uploadCaLifetimeMs, leafLifetimeMs: config.uploadCertLifetimeMs });
    super(uploadDeps, { name: 'upload controller', keyField: 'pvc', failedMessage: 'upload reconcile failed', resyncMs: uploadDeps.resyncMs ?? 300_000 });
    this.caches = workerCaches(this.informers, UPLOAD_POD_SELECTOR, UPLOAD_POD_SELECTOR);
    const core = uploadDeps.kubeConfig.makeApiClient(CoreV1Api);
    const now = uploadDeps.now ?? Date.now;
    const certs = (this.certs = new UploadCertificates(core, config.ferryNamespace, settings, logger, () => new Date(now())));
    const issuer = {
      async serverCertificate(hosts: readonly string[], commonName: string) {
        if (!certs.ready) await certs.ensure();
        return certs.serverCertificate(hosts, commonName);
      },
    };
    this.reconcileDeps = {
      caches: workerReads(this.caches),
      writer: new UploadWriter(core, issuer, () => new Date(now())),
      config,
      logger,
      now,
      ...(uploadDeps.settings ? { settings: uploadDeps.settings } : {}),
    };
    this.every(config.certCheckIntervalMs, () => void this.ensureCerts());
  }

  protected reconcile(key: string): Promise<HandlerResult> {
    return reconcileUpload(key, this.reconcileDeps);
  }

  protected watch(): Watch {
    // A scratch PVC wakes the PVC it serves; the server pod and Service, their owner PVC.
    return watchWorkers(this.caches, { pvc: servedPvcKey, pod: ownerPvcKey, service: ownerPvcKey }, (key) => this.enqueue(key));
  }

  /** The CAs before the caches: a failed round is logged and tried again on the next tick; pods wait (their reconciles fail) until a CA is there. */
  protected override prepare(): Promise<void> {
    return this.ensureCerts();
  }

  private async ensureCerts(): Promise<void> {
    try {
      await this.certs.ensure();
    } catch (err) {
      this.uploadDeps.logger.error({ err: errorLine(err), namespace: this.uploadDeps.config.ferryNamespace }, 'cannot keep the upload certificates; upload servers cannot start until this works');
    }
  }
}
