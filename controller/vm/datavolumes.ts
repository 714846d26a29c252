/**
 * What a VM and a VMI make of their DataVolumes, as pure functions: the DataVolume a template
 * becomes (named, labelled, annotated and owned as KubeVirt's CreateDataVolumeManifest does), the
 * state of each DataVolume a VM or VMI needs, and the one-line summary both report (the
 * DataVolumesReady condition). No clients, no clock.
 *
 * Ownership rule (KubeVirt's ClaimMatchedDataVolumes): a DataVolume of a template's name that the
 * VM does not own is adopted when it has no controller owner; one controlled by anything else is
 * reported (DataVolumeNotOwned) and neither used nor adopted. KubeVirt would boot from it; Ferry
 * does not, so that two VMs with the same template name never share a disk.
 */

import type { V1OwnerReference } from '@kubernetes/client-node';
import { type DataVolume, DV_API_VERSION, DV_KIND, DvAnnotation, DvConditionType, DvPhase } from '../../src/api/datavolume.js';
import { API_VERSION, ConditionReason, type DataVolumeTemplateSpec, Kind, type VirtualMachine, VmLabel } from '../../src/api/kubevirt.js';

/** The DataVolumes a VM or VMI needs, by name; undefined when the cache has none of that name. */
export type ObservedDataVolumes = ReadonlyMap<string, DataVolume | undefined>;

/** Where one needed DataVolume stands. */
export type DvState =
  | { readonly kind: 'missing'; readonly name: string }
  | { readonly kind: 'foreign'; readonly name: string; readonly owner: string }
  | { readonly kind: 'orphan'; readonly name: string; readonly dv: DataVolume }
  | { readonly kind: 'deleting'; readonly name: string }
  | { readonly kind: 'importing'; readonly name: string; readonly phase: string; readonly progress?: string }
  | { readonly kind: 'waitingForConsumer'; readonly name: string }
  | { readonly kind: 'failed'; readonly name: string; readonly message: string }
  | { readonly kind: 'succeeded'; readonly name: string };

export function vmOwnerReference(vm: VirtualMachine): V1OwnerReference {
  return { apiVersion: API_VERSION, kind: Kind.VM, name: vm.metadata.name ?? '', uid: vm.metadata.uid ?? '', controller: true, blockOwnerDeletion: true };
}

/**
 * The DataVolume a template becomes: the template's name, labels and annotations, in the VM's
 * namespace, owned by the VM, labelled `kubevirt.io/created-by: <VM UID>`, annotated
 * `cdi.kubevirt.io/allowClaimAdoption: "true"` (so a PVC left by an earlier DataVolume of the name
 * is taken over, not conflicted), and the VMI's priorityClassName when the template names none.
 */
export function dataVolumeFromTemplate(vm: VirtualMachine, template: DataVolumeTemplateSpec): DataVolume {
  const priorityClassName = template.spec.priorityClassName ?? vm.spec.template.spec.priorityClassName;
  return {
    apiVersion: DV_API_VERSION,
    kind: DV_KIND,
    metadata: {
      name: template.metadata?.name ?? '',
      namespace: vm.metadata.namespace ?? 'default',
      labels: { ...(template.metadata?.labels ?? {}), [VmLabel.CreatedBy]: vm.metadata.uid ?? '' },
      annotations: { ...(template.metadata?.annotations ?? {}), [DvAnnotation.AllowClaimAdoption]: 'true' },
      ownerReferences: [vmOwnerReference(vm)],
    },
    spec: { ...template.spec, ...(priorityClassName !== undefined ? { priorityClassName } : {}) },
  };
}

/** The controller owner of an object, if any. */
function controllerOf(dv: DataVolume): V1OwnerReference | undefined {
  return dv.metadata.ownerReferences?.find((o) => o.controller === true);
}

/** The failure a Failed DataVolume reports: its Running condition (the error code leads), else Ready, else Bound. */
function failureMessage(dv: DataVolume): string {
  const conditions = dv.status?.conditions ?? [];
  const text = (type: string) => {
    const c = conditions.find((x) => x.type === type);
    return c?.message || c?.reason || undefined;
  };
  return text(DvConditionType.Running) ?? text(DvConditionType.Ready) ?? text(DvConditionType.Bound) ?? 'the DataVolume failed';
}

/** Where a DataVolume stands by its phase, whoever owns it. */
export function phaseState(name: string, dv: DataVolume | undefined): DvState {
  if (!dv) return { kind: 'missing', name };
  if (dv.metadata.deletionTimestamp) return { kind: 'deleting', name };
  const phase = dv.status?.phase ?? DvPhase.Unset;
  switch (phase) {
    case DvPhase.Succeeded:
      return { kind: 'succeeded', name };
    case DvPhase.Failed:
      return { kind: 'failed', name, message: failureMessage(dv) };
    case DvPhase.WaitForFirstConsumer:
      return { kind: 'waitingForConsumer', name };
    default:
      return { kind: 'importing', name, phase: phase || DvPhase.Pending, ...(dv.status?.progress ? { progress: dv.status.progress } : {}) };
  }
}

/** A template's DataVolume as the VM sees it: its phase when the VM owns it, else who does. */
export function templateState(vm: VirtualMachine, name: string, dv: DataVolume | undefined): DvState {
  if (!dv) return { kind: 'missing', name };
  const owner = controllerOf(dv);
  if (!owner) return dv.metadata.deletionTimestamp ? { kind: 'deleting', name } : { kind: 'orphan', name, dv };
  if (owner.uid !== vm.metadata.uid) return { kind: 'foreign', name, owner: `${owner.kind} ${owner.name}` };
  return phaseState(name, dv);
}

/** Whether a DataVolume has its data. */
export const isReady = (s: DvState): boolean => s.kind === 'succeeded';
/**
 * Whether a state lets the VM create its VMI: KubeVirt lets WaitForFirstConsumer through, since the
 * VMI's pod is the consumer (the VMI controller then binds the volume with a temporary pod and
 * holds its launcher back until the import is done: vmi-plan.ts, provisioning-pod.ts).
 */
export const letsVmiStart = (s: DvState): boolean => s.kind === 'succeeded' || s.kind === 'waitingForConsumer';
export const isBroken = (s: DvState): boolean => s.kind === 'failed' || s.kind === 'foreign';

function describe(s: DvState): string {
  switch (s.kind) {
    case 'missing':
      return `DataVolume ${s.name} does not exist yet`;
    case 'foreign':
      return `DataVolume ${s.name} is controlled by ${s.owner}, not by this VM; delete it or rename the template`;
    case 'orphan':
      return `DataVolume ${s.name} is being adopted`;
    case 'deleting':
      return `DataVolume ${s.name} is being deleted`;
    case 'importing':
      return `DataVolume ${s.name} is ${s.phase}${s.progress && s.progress !== 'N/A' ? ` (${s.progress})` : ''}`;
    case 'waitingForConsumer':
      return `DataVolume ${s.name} waits for a first consumer`;
    case 'failed':
      return `DataVolume ${s.name} failed: ${s.message}`;
    case 'succeeded':
      return `DataVolume ${s.name} Succeeded`;
  }
}

/** The DataVolumesReady condition for a set of states; undefined when there are none. */
export function dataVolumesReady(states: readonly DvState[]): { status: 'True' | 'False'; reason: string; message: string } | undefined {
  if (states.length === 0) return undefined;
  const failed = states.find((s) => s.kind === 'failed');
  if (failed) return { status: 'False', reason: ConditionReason.FailedDataVolumeImport, message: describe(failed) };
  const foreign = states.find((s) => s.kind === 'foreign');
  if (foreign) return { status: 'False', reason: ConditionReason.DataVolumeNotOwned, message: describe(foreign) };
  const waiting = states.filter((s) => !isReady(s));
  if (waiting.length === 0) return { status: 'True', reason: ConditionReason.AllDVsReady, message: 'All of the VMI\'s DVs are bound and ready' };
  return { status: 'False', reason: ConditionReason.NotAllDVsReady, message: `Not all of the VMI's DVs are ready: ${waiting.map(describe).join('; ')}` };
}

export { describe as describeDvState };
