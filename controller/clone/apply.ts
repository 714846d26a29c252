/**
 * The clone controller's writes. The target side is the upload controller's writer (the target is
 * an upload server: certificate Secret, Service, pod with its deadline, and deletes in the target
 * namespace, annotations and events on the target PVC); the source side is here: the client
 * certificate Secret (issued now, replaced if present) and the pod in the source namespace, and
 * their deletes (NotFound counts as done).
 */

import type { CoreV1Api, V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { cloneClientName } from '../../src/contract/clone-env.js';
import type { ClientCertificate } from '../certs/upload-certs.js';
import { isKube, KubeError, kubeCall } from '../runtime/errors.js';
import { tolerate } from '../runtime/writer.js';
import { type ServerCertificates, UploadWriter } from '../upload/apply.js';
import { buildSourceSecret } from './clone-pods.js';
import type { CloneAction } from './plan.js';

export interface CloneCertificates extends ServerCertificates {
  clientCertificate(commonName: string): Promise<ClientCertificate>;
}

export class CloneWriter {
  private readonly target: UploadWriter;

  constructor(
    private readonly core: CoreV1Api,
    private readonly certs: CloneCertificates,
    now: () => Date = () => new Date(),
  ) {
    this.target = new UploadWriter(core, certs, now);
  }

  async apply(pvc: V1PersistentVolumeClaim, action: CloneAction): Promise<void> {
    switch (action.type) {
      case 'startTarget':
        return this.target.apply(pvc, { ...action, type: 'startServer' });
      case 'startSource': {
        const { namespace } = action.clone.source;
        const material = await this.certs.clientCertificate(cloneClientName(action.clone.source, action.clone.target));
        const secret = buildSourceSecret(pvc, action.clone, material);
        const name = secret.metadata?.name ?? '';
        const op = { verb: 'create', resource: 'secrets', namespace, name };
        try {
          await kubeCall(op, () => this.core.createNamespacedSecret({ namespace, body: secret }));
        } catch (err) {
          if (!isKube(err, KubeError.AlreadyExists)) throw err;
          await kubeCall({ ...op, verb: 'replace' }, () => this.core.replaceNamespacedSecret({ namespace, name, body: secret }));
        }
        const pod = action.pod;
        const pop = { verb: 'create', resource: 'pods', namespace, name: pod.metadata?.name ?? '' };
        return tolerate(kubeCall(pop, () => this.core.createNamespacedPod({ namespace, body: pod })), KubeError.AlreadyExists);
      }
      case 'deleteSourcePod': {
        const { namespace, name } = action;
        return tolerate(kubeCall({ verb: 'delete', resource: 'pods', namespace, name }, () => this.core.deleteNamespacedPod({ namespace, name })), KubeError.NotFound);
      }
      case 'deleteSourceSecret': {
        const { namespace, name } = action;
        return tolerate(kubeCall({ verb: 'delete', resource: 'secrets', namespace, name }, () => this.core.deleteNamespacedSecret({ namespace, name })), KubeError.NotFound);
      }
      default:
        return this.target.apply(pvc, action);
    }
  }
}
