/**
 * The clone controller on the shared runtime (runtime/controller.ts): the shared PVC cache, the
 * clone pods' cache (label `ferry.dev/clone`, both namespaces) and the upload Services' cache wake
 * target PVC keys `<ns>/<pvc>`, and each key runs ./reconcile.ts. Certificates come from the upload
 * CAs (controller/certs/): the target's server certificate from the server CA, the source's client
 * certificate from the client CA.
 */

import { CoreV1Api, type V1PersistentVolumeClaim, type V1Pod } from '@kubernetes/client-node';
import { UPLOAD_POD_SELECTOR } from '../../src/api/cdi.js';
import { checkCertSettings } from '../certs/rotation.js';
import { UploadCertificates } from '../certs/upload-certs.js';
import { Controller, type PvcControllerDeps, type Watch } from '../runtime/controller.js';
import { kubeCall, kubeGet } from '../runtime/errors.js';
import { objectKey, ownerPvcKey } from '../runtime/keys.js';
import type { HandlerResult } from '../runtime/work-queue.js';
import { type WorkerCaches, watchWorkers, workerCaches, workerReads } from '../runtime/worker-caches.js';
import { CloneWriter } from './apply.js';
import { CLONE_POD_SELECTOR, CLONE_TARGET_ANNOTATION } from './clone-pods.js';
import { CloneKeys } from './keys.js';
import { cloneRequestOf } from './plan.js';
import { type CloneReconcileDeps, reconcileClone } from './reconcile.js';

/** The upload controller's: a kubeconfig, the config, a logger, optionally the shared informers, a clock, the resync period. */
export type CloneControllerDeps = PvcControllerDeps;

export class CloneController extends Controller {
  private readonly caches: WorkerCaches;
  private readonly reconcileDeps: CloneReconcileDeps;

  constructor(deps: CloneControllerDeps) {
    super(deps, { name: 'clone controller', keyField: 'pvc', failedMessage: 'clone reconcile failed', resyncMs: deps.resyncMs ?? 300_000 });
    const { config, logger } = deps;
    // Clone pods by their own label; the target's Service is an upload server's.
    this.caches = workerCaches(this.informers, CLONE_POD_SELECTOR, UPLOAD_POD_SELECTOR);
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
    this.reconcileDeps = {
      caches: workerReads(this.caches),
      writer,
      keys: new CloneKeys(core, config.ferryNamespace, now),
      config,
      ...(deps.settings ? { settings: deps.settings } : {}),
      logger,
      now,
      readPvc: (namespace, name) => kubeGet({ verb: 'get', resource: 'persistentvolumeclaims', namespace, name }, () => core.readNamespacedPersistentVolumeClaim({ namespace, name })),
      listPods: async (namespace) => (await kubeCall({ verb: 'list', resource: 'pods', namespace }, () => core.listNamespacedPod({ namespace }))).items,
    };
  }

  protected reconcile(key: string): Promise<HandlerResult> {
    return reconcileClone(key, this.reconcileDeps);
  }

  protected watch(): Watch {
    return watchWorkers(this.caches, { pvc: targetKey, pod: podTargetKey }, (key) => this.enqueue(key));
  }
}

/** A PVC that asks for a clone is a key of its own. */
function targetKey(pvc: V1PersistentVolumeClaim): string | undefined {
  return cloneRequestOf(pvc) !== undefined ? objectKey(pvc) : undefined;
}

/** A target pod names its PVC as owner; a source pod (no owner across namespaces) in an annotation. */
function podTargetKey(pod: V1Pod): string | undefined {
  const owner = ownerPvcKey(pod);
  if (owner) return owner;
  const target = pod.metadata?.annotations?.[CLONE_TARGET_ANNOTATION];
  return target?.includes('/') ? target : undefined;
}
