/**
 * The import controller's writes: the importer pod and scratch PVC by deterministic name
 * (AlreadyExists and NotFound count as done), merge-patches of the PVC's annotations, and events.
 */

import type { CoreV1Api, V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { ErrorCode, FerryError } from '../../src/errors.js';
import { isKube, KubeError, kubeCall, kubeGet } from '../runtime/errors.js';
import { mergePatch, recordEvent, tolerate } from '../runtime/writer.js';
import { buildProxyCaConfigMap, PROXY_CA_KEY } from './importer-pod.js';
import type { Action } from './plan.js';

export class ImportWriter {
  constructor(
    private readonly core: CoreV1Api,
    private readonly now: () => Date = () => new Date(),
  ) {}

  async apply(pvc: V1PersistentVolumeClaim, action: Action): Promise<void> {
    const namespace = pvc.metadata?.namespace ?? '';
    const name = pvc.metadata?.name ?? '';
    switch (action.type) {
      case 'createPod': {
        const op = { verb: 'create', resource: 'pods', namespace, name: action.pod.metadata?.name ?? '' };
        return tolerate(kubeCall(op, () => this.core.createNamespacedPod({ namespace, body: action.pod })), KubeError.AlreadyExists);
      }
      case 'deletePod': {
        const op = { verb: 'delete', resource: 'pods', namespace, name: action.name };
        return tolerate(kubeCall(op, () => this.core.deleteNamespacedPod({ namespace, name: action.name, gracePeriodSeconds: 0 })), KubeError.NotFound);
      }
      case 'createScratchPvc': {
        const op = { verb: 'create', resource: 'persistentvolumeclaims', namespace, name: action.pvc.metadata?.name ?? '' };
        return tolerate(kubeCall(op, () => this.core.createNamespacedPersistentVolumeClaim({ namespace, body: action.pvc })), KubeError.AlreadyExists);
      }
      case 'deleteScratchPvc': {
        const op = { verb: 'delete', resource: 'persistentvolumeclaims', namespace, name: action.name };
        return tolerate(kubeCall(op, () => this.core.deleteNamespacedPersistentVolumeClaim({ namespace, name: action.name })), KubeError.NotFound);
      }
      case 'copyProxyCa':
        return this.copyProxyCa(pvc, action.from, action.name);
      case 'annotate':
        return this.annotate(namespace, name, action.annotations);
      case 'event':
        return this.event(pvc, action.eventType, action.reason, action.message);
    }
  }

  /** CDI copies the proxy CA on every pass; a copy already there gets the current CA. */
  private async copyProxyCa(pvc: V1PersistentVolumeClaim, from: { namespace: string; name: string }, name: string): Promise<void> {
    const source = await kubeGet({ verb: 'get', resource: 'configmaps', ...from }, () => this.core.readNamespacedConfigMap(from));
    const ca = source?.data?.[PROXY_CA_KEY];
    if (ca === undefined) {
      throw new FerryError(ErrorCode.InvalidSpec, `CDIConfig importProxy.trustedCAProxy: ConfigMap ${from.namespace}/${from.name} ${source ? `has no key ${PROXY_CA_KEY}` : 'does not exist'}`);
    }
    const namespace = pvc.metadata?.namespace ?? '';
    const body = buildProxyCaConfigMap(pvc, { [PROXY_CA_KEY]: ca });
    try {
      await kubeCall({ verb: 'create', resource: 'configmaps', namespace, name }, () => this.core.createNamespacedConfigMap({ namespace, body }));
    } catch (err) {
      if (!isKube(err, KubeError.AlreadyExists)) throw err;
      await kubeCall({ verb: 'patch', resource: 'configmaps', namespace, name }, () => this.core.patchNamespacedConfigMap({ namespace, name, body: { data: body.data } }, mergePatch));
    }
  }

  async annotate(namespace: string, name: string, annotations: Readonly<Record<string, string | null>>): Promise<void> {
    await kubeCall({ verb: 'patch', resource: 'persistentvolumeclaims', namespace, name }, () =>
      this.core.patchNamespacedPersistentVolumeClaim({ namespace, name, body: { metadata: { annotations } } }, mergePatch),
    );
  }

  async event(pvc: V1PersistentVolumeClaim, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    await recordEvent(this.core, { apiVersion: 'v1', kind: 'PersistentVolumeClaim', metadata: pvc.metadata ?? {} }, type, reason, message, this.now());
  }
}
