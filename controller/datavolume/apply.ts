/**
 * The DataVolume controller's writes: the PVC by deterministic name (AlreadyExists counts as done),
 * the owner reference of an adopted PVC (at the resourceVersion it was judged at), the status
 * through the status subresource, and events on the DataVolume.
 */

import type { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { type DataVolume, DV_API_VERSION, DV_GROUP, DV_KIND, DV_PLURAL, DV_VERSION } from '../../src/api/datavolume.js';
import { KubeError, kubeCall } from '../runtime/errors.js';
import { mergePatch, recordEvent, tolerate } from '../runtime/writer.js';
import type { DvAction } from './plan.js';

export class DataVolumeWriter {
  constructor(
    private readonly core: CoreV1Api,
    private readonly custom: CustomObjectsApi,
    private readonly now: () => Date = () => new Date(),
  ) {}

  async apply(dv: DataVolume, action: DvAction): Promise<void> {
    const namespace = dv.metadata.namespace ?? '';
    const name = dv.metadata.name ?? '';
    switch (action.type) {
      case 'createPvc':
        return tolerate(
          kubeCall({ verb: 'create', resource: 'persistentvolumeclaims', namespace, name }, () => this.core.createNamespacedPersistentVolumeClaim({ namespace, body: action.pvc })),
          KubeError.AlreadyExists,
        );
      case 'adoptPvc':
        // resourceVersion makes it a compare-and-swap: a PVC changed meanwhile is judged again.
        await kubeCall({ verb: 'patch', resource: 'persistentvolumeclaims', namespace, name: action.name }, () =>
          this.core.patchNamespacedPersistentVolumeClaim(
            { namespace, name: action.name, body: { metadata: { resourceVersion: action.resourceVersion, ownerReferences: action.ownerReferences } } },
            mergePatch,
          ),
        );
        return;
      case 'patchStatus':
        return tolerate(
          kubeCall({ verb: 'patch', resource: `${DV_PLURAL}/status`, namespace, name }, () =>
            this.custom.patchNamespacedCustomObjectStatus({ group: DV_GROUP, version: DV_VERSION, namespace, plural: DV_PLURAL, name, body: { status: action.status } }, mergePatch),
          ),
          KubeError.NotFound,
        );
      case 'annotateDv':
        await kubeCall({ verb: 'patch', resource: DV_PLURAL, namespace, name }, () =>
          this.custom.patchNamespacedCustomObject({ group: DV_GROUP, version: DV_VERSION, namespace, plural: DV_PLURAL, name, body: { metadata: { annotations: action.annotations } } }, mergePatch),
        );
        return;
      case 'annotatePvc':
        await kubeCall({ verb: 'patch', resource: 'persistentvolumeclaims', namespace, name }, () =>
          this.core.patchNamespacedPersistentVolumeClaim({ namespace, name, body: { metadata: { annotations: action.annotations } } }, mergePatch),
        );
        return;
      case 'event':
        await recordEvent(this.core, { apiVersion: DV_API_VERSION, kind: DV_KIND, metadata: dv.metadata }, action.eventType, action.reason, action.message, this.now());
        return;
    }
  }
}
