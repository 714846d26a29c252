/**
 * The upload controller's writes: the server's certificate Secret (issued here, replaced if
 * present), Service and pod by deterministic name (AlreadyExists and NotFound count as done), the
 * rest (pod and scratch PVC deletes, annotations, events) through the import controller's writer.
 */

import type { CoreV1Api, V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { validityOf } from '../../src/pki/x509.js';
import type { ServerCertificate } from '../certs/upload-certs.js';
import { isKube, KubeError, kubeCall } from '../runtime/errors.js';
import { tolerate } from '../runtime/writer.js';
import { ImportWriter } from '../import/apply.js';
import type { UploadAction } from './plan.js';
import { buildUploadTlsSecret, withEarlierDeadline } from './upload-pod.js';

export interface ServerCertificates {
  serverCertificate(hosts: readonly string[], commonName: string): Promise<ServerCertificate>;
}

/** A server stops this long before its certificate ends. */
const CERT_MARGIN_MS = 60_000;

export class UploadWriter {
  constructor(
    private readonly core: CoreV1Api,
    private readonly certs: ServerCertificates,
    now: () => Date = () => new Date(),
  ) {
    this.shared = new ImportWriter(core, now);
  }

  private readonly shared: ImportWriter;

  async apply(pvc: V1PersistentVolumeClaim, action: UploadAction): Promise<void> {
    const namespace = pvc.metadata?.namespace ?? '';
    const name = pvc.metadata?.name ?? '';
    switch (action.type) {
      case 'startServer': {
        const material = await this.certs.serverCertificate(action.hosts, action.hosts[2] ?? action.hosts[0] ?? name);
        const secret = buildUploadTlsSecret(pvc, material);
        const secretName = secret.metadata?.name ?? '';
        const op = { verb: 'create', resource: 'secrets', namespace, name: secretName };
        try {
          await kubeCall(op, () => this.core.createNamespacedSecret({ namespace, body: secret }));
        } catch (err) {
          if (!isKube(err, KubeError.AlreadyExists)) throw err;
          await kubeCall({ ...op, verb: 'replace' }, () => this.core.replaceNamespacedSecret({ namespace, name: secretName, body: secret }));
        }
        if (action.service) {
          const service = action.service;
          const sop = { verb: 'create', resource: 'services', namespace, name: service.metadata?.name ?? '' };
          await tolerate(kubeCall(sop, () => this.core.createNamespacedService({ namespace, body: service })), KubeError.AlreadyExists);
        }
        const pod = withEarlierDeadline(action.pod, validityOf(material.cert).notAfter.getTime() - CERT_MARGIN_MS);
        const pop = { verb: 'create', resource: 'pods', namespace, name: pod.metadata?.name ?? '' };
        return tolerate(kubeCall(pop, () => this.core.createNamespacedPod({ namespace, body: pod })), KubeError.AlreadyExists);
      }
      case 'deleteService': {
        const op = { verb: 'delete', resource: 'services', namespace, name: action.name };
        return tolerate(kubeCall(op, () => this.core.deleteNamespacedService({ namespace, name: action.name })), KubeError.NotFound);
      }
      case 'deleteTlsSecret': {
        const op = { verb: 'delete', resource: 'secrets', namespace, name: action.name };
        return tolerate(kubeCall(op, () => this.core.deleteNamespacedSecret({ namespace, name: action.name })), KubeError.NotFound);
      }
      default:
        // Pod and scratch deletes, scratch creates, annotations and events: as the import controller's.
        return this.shared.apply(pvc, action);
    }
  }
}
