/**
 * The VM controller's writes: DataVolumes, VMIs and launcher pods by deterministic name (AlreadyExists and
 * NotFound count as done), whole-status replacement through the status subresource, finalizers and
 * events. A VM's status is replaced only at the resourceVersion it was read at, so a start/stop
 * request a user adds meanwhile is never overwritten.
 */

import type { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { DV_GROUP, DV_PLURAL, DV_VERSION } from '../../src/api/datavolume.js';
import { GROUP, Plural, VERSION } from '../../src/api/kubevirt.js';
import { KubeError, kubeCall, type KubeOp } from '../runtime/errors.js';
import { type Involved as KubeInvolved, jsonPatch, mergePatch, recordEvent, tolerate } from '../runtime/writer.js';
import type { VmAction } from './vm-plan.js';
import type { VmiAction } from './vmi-plan.js';

type Involved = Omit<KubeInvolved, 'apiVersion'>;

export class VmWriter {
  constructor(
    private readonly core: CoreV1Api,
    private readonly custom: CustomObjectsApi,
    private readonly now: () => Date = () => new Date(),
  ) {}

  async applyVmi(vmi: Involved, action: VmiAction): Promise<void> {
    const namespace = vmi.metadata.namespace ?? '';
    const name = vmi.metadata.name ?? '';
    const on = (verb: string, resource: string, object = name): KubeOp => ({ verb, resource, namespace, name: object });
    switch (action.type) {
      case 'createPod':
        return tolerate(kubeCall(on('create', 'pods', action.pod.metadata?.name), () => this.core.createNamespacedPod({ namespace, body: action.pod })), KubeError.AlreadyExists);
      case 'deletePod':
        return tolerate(kubeCall(on('delete', 'pods', action.name), () => this.core.deleteNamespacedPod({ namespace, name: action.name })), KubeError.NotFound);
      case 'setFinalizers':
        return tolerate(
          kubeCall(on('patch', Plural.VMI), () =>
            this.custom.patchNamespacedCustomObject(
              { group: GROUP, version: VERSION, namespace, plural: Plural.VMI, name, body: { metadata: { finalizers: action.finalizers, resourceVersion: vmi.metadata.resourceVersion } } },
              mergePatch,
            ),
          ),
          KubeError.NotFound,
        );
      case 'patchStatus':
        return tolerate(
          kubeCall(on('patch', `${Plural.VMI}/status`), () =>
            this.custom.patchNamespacedCustomObjectStatus(
              { group: GROUP, version: VERSION, namespace, plural: Plural.VMI, name, body: [{ op: 'add', path: '/status', value: action.status }] },
              jsonPatch,
            ),
          ),
          KubeError.NotFound,
        );
      case 'event':
        return this.event(vmi, action.eventType, action.reason, action.message);
    }
  }

  async applyVm(vm: Involved, action: VmAction): Promise<void> {
    const namespace = vm.metadata.namespace ?? '';
    const name = vm.metadata.name ?? '';
    const on = (verb: string, resource: string, object = name): KubeOp => ({ verb, resource, namespace, name: object });
    switch (action.type) {
      case 'createDataVolume':
        return tolerate(
          kubeCall(on('create', DV_PLURAL, action.dataVolume.metadata.name), () =>
            this.custom.createNamespacedCustomObject({ group: DV_GROUP, version: DV_VERSION, namespace, plural: DV_PLURAL, body: action.dataVolume }),
          ),
          KubeError.AlreadyExists,
        );
      case 'adoptDataVolume':
        // A stale resourceVersion fails with a Conflict: retried after the cache caught up.
        return kubeCall(on('patch', DV_PLURAL, action.name), () =>
          this.custom.patchNamespacedCustomObject(
            {
              group: DV_GROUP,
              version: DV_VERSION,
              namespace,
              plural: DV_PLURAL,
              name: action.name,
              body: { metadata: { ownerReferences: action.ownerReferences, resourceVersion: action.resourceVersion } },
            },
            mergePatch,
          ),
        ).then(() => undefined);
      case 'createVmi':
        return tolerate(
          kubeCall(on('create', Plural.VMI, action.vmi.metadata?.name), () =>
            this.custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: Plural.VMI, body: action.vmi }),
          ),
          KubeError.AlreadyExists,
        );
      case 'deleteVmi':
        return tolerate(
          kubeCall(on('delete', Plural.VMI, action.name), () =>
            this.custom.deleteNamespacedCustomObject({
              group: GROUP,
              version: VERSION,
              namespace,
              plural: Plural.VMI,
              name: action.name,
              body: { preconditions: { uid: action.uid } },
            }),
          ),
          KubeError.NotFound,
        );
      case 'patchVmStatus':
        return tolerate(
          kubeCall(on('patch', `${Plural.VM}/status`), () =>
            this.custom.patchNamespacedCustomObjectStatus(
              {
                group: GROUP,
                version: VERSION,
                namespace,
                plural: Plural.VM,
                name,
                body: [
                  { op: 'test', path: '/metadata/resourceVersion', value: vm.metadata.resourceVersion },
                  { op: 'add', path: '/status', value: action.status },
                ],
              },
              jsonPatch,
            ),
          ),
          KubeError.NotFound,
        );
      case 'event':
        return this.event(vm, action.eventType, action.reason, action.message);
    }
  }

  async event(obj: Involved, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    await recordEvent(this.core, { ...obj, apiVersion: `${GROUP}/${VERSION}` }, type, reason, message, this.now());
  }
}
