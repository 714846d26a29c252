/**
 * The VM controller's writes: VMIs and launcher pods by deterministic name (AlreadyExists and
 * NotFound count as done), whole-status replacement through the status subresource, finalizers and
 * events. A VM's status is replaced only at the resourceVersion it was read at, so a start/stop
 * request a user adds meanwhile is never overwritten.
 */

import {
  type CoreV1Api,
  type CustomObjectsApi,
  PatchStrategy,
  setHeaderOptions,
} from '@kubernetes/client-node';
import { GROUP, Plural, VERSION } from '../../src/api/kubevirt.js';
import { type Involved as KubeInvolved, recordEvent, tolerate } from '../runtime/kube.js';
import type { VmAction } from './vm-plan.js';
import type { VmiAction } from './vmi-plan.js';

const jsonPatch = setHeaderOptions('Content-Type', PatchStrategy.JsonPatch);
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

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
    switch (action.type) {
      case 'createPod':
        return tolerate(this.core.createNamespacedPod({ namespace, body: action.pod }), 409);
      case 'deletePod':
        return tolerate(this.core.deleteNamespacedPod({ namespace, name: action.name }), 404);
      case 'setFinalizers':
        return tolerate(
          this.custom.patchNamespacedCustomObject(
            { group: GROUP, version: VERSION, namespace, plural: Plural.VMI, name, body: { metadata: { finalizers: action.finalizers, resourceVersion: vmi.metadata.resourceVersion } } },
            mergePatch,
          ),
          404,
        );
      case 'patchStatus':
        return tolerate(
          this.custom.patchNamespacedCustomObjectStatus(
            { group: GROUP, version: VERSION, namespace, plural: Plural.VMI, name, body: [{ op: 'add', path: '/status', value: action.status }] },
            jsonPatch,
          ),
          404,
        );
      case 'event':
        return this.event(vmi, action.eventType, action.reason, action.message);
    }
  }

  async applyVm(vm: Involved, action: VmAction): Promise<void> {
    const namespace = vm.metadata.namespace ?? '';
    const name = vm.metadata.name ?? '';
    switch (action.type) {
      case 'createVmi':
        return tolerate(this.custom.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: Plural.VMI, body: action.vmi }), 409);
      case 'deleteVmi':
        return tolerate(
          this.custom.deleteNamespacedCustomObject({
            group: GROUP,
            version: VERSION,
            namespace,
            plural: Plural.VMI,
            name: action.name,
            body: { preconditions: { uid: action.uid } },
          }),
          404,
        );
      case 'patchVmStatus':
        return tolerate(
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
          404,
        );
      case 'event':
        return this.event(vm, action.eventType, action.reason, action.message);
    }
  }

  async event(obj: Involved, type: 'Normal' | 'Warning', reason: string, message: string): Promise<void> {
    await recordEvent(this.core, { ...obj, apiVersion: `${GROUP}/${VERSION}` }, type, reason, message, this.now());
  }
}
