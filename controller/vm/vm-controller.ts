/**
 * The VM controller on the shared runtime (runtime/controller.ts): the VirtualMachine,
 * VirtualMachineInstance and launcher-pod caches, and the shared PVC and DataVolume caches (the
 * DataVolume controller reads the same ones), wake keys `vm:<ns>/<name>` and `vmi:<ns>/<name>` of
 * one queue, and each key runs ./reconcile.ts. Without the kubevirt.io CRDs installed the
 * controller waits and looks again, so the import controller beside it is not held up; without the
 * cdi.kubevirt.io DataVolume CRD it runs without a DataVolume cache (a VM with dataVolumeTemplates
 * then fails to create them, with the apiserver's error).
 */

import { CoreV1Api, CustomObjectsApi, type KubernetesObject, type V1PersistentVolumeClaim, type V1Pod } from '@kubernetes/client-node';
import { type DataVolume, DV_GROUP, DV_PLURAL, DV_VERSION } from '../../src/api/datavolume.js';
import { claimOf, dataVolumeNames, GROUP, Plural, VERSION, VmLabel } from '../../src/api/kubevirt.js';
import { Controller, type RuntimeDeps, type Watch } from '../runtime/controller.js';
import { kubeGet } from '../runtime/errors.js';
import type { SharedInformer } from '../runtime/informers.js';
import { kindKey } from '../runtime/keys.js';
import type { HandlerResult } from '../runtime/work-queue.js';
import { VmWriter } from './apply.js';
import type { LauncherConfig } from './launcher-pod.js';
import { scrapeLauncher } from './launcher-scrape.js';
import { reconcileVmKey, type VmiObject, VmKey, type VmObject, type VmReconcileDeps } from './reconcile.js';
import type { VmConfig } from './vm-plan.js';
import type { LauncherReport } from './vmi-plan.js';
import { crdServed } from '../runtime/crds.js';

export const LAUNCHER_POD_SELECTOR = `${VmLabel.App}=${VmLabel.AppLauncher}`;

export interface VmControllerDeps extends RuntimeDeps {
  readonly config: LauncherConfig & VmConfig & RuntimeDeps['config'];
  /** Asks a running launcher for its live status; undefined when it does not answer. */
  readonly scrape?: (podIP: string, port: number) => Promise<LauncherReport | undefined>;
  readonly retryCrdMs?: number;
}

interface Caches {
  readonly vms: SharedInformer<VmObject>;
  readonly vmis: SharedInformer<VmiObject>;
  readonly pods: SharedInformer<V1Pod>;
  readonly pvcs: SharedInformer<V1PersistentVolumeClaim>;
  /** Absent while the DataVolume CRD is not installed. */
  readonly dvs?: SharedInformer<DataVolume>;
}

export class VmController extends Controller {
  private caches: Caches | undefined;
  private readonly custom: CustomObjectsApi;
  private readonly reconcileDeps: VmReconcileDeps;

  constructor(deps: VmControllerDeps) {
    super(deps, { name: 'VM controller', keyField: 'key', resyncMs: 300_000, retryMs: deps.retryCrdMs });
    const core = deps.kubeConfig.makeApiClient(CoreV1Api);
    const custom = (this.custom = deps.kubeConfig.makeApiClient(CustomObjectsApi));
    this.reconcileDeps = {
      caches: {
        getVm: (ns, name) => this.caches?.vms.get(name, ns),
        getVmi: (ns, name) => this.caches?.vmis.get(name, ns),
        getPod: (ns, name) => this.caches?.pods.get(name, ns),
        getPvc: (ns, name) => this.caches?.pvcs.get(name, ns),
        getDataVolume: (ns, name) => this.caches?.dvs?.get(name, ns),
      },
      writer: new VmWriter(core, custom),
      config: deps.config,
      logger: deps.logger,
      now: deps.now ?? Date.now,
      readPod: async (namespace, name) => {
        return kubeGet({ verb: 'get', resource: 'pods', namespace, name }, () => core.readNamespacedPod({ namespace, name }));
      },
      readDataVolume: async (namespace, name) => {
        if (!this.caches?.dvs) return undefined;
        return (await kubeGet({ verb: 'get', resource: DV_PLURAL, namespace, name }, () =>
          custom.getNamespacedCustomObject({ group: DV_GROUP, version: DV_VERSION, namespace, plural: DV_PLURAL, name }),
        )) as DataVolume | undefined;
      },
      scrape: deps.scrape ?? scrapeLauncher,
      reports: new Map(),
    };
  }

  protected reconcile(key: string): Promise<HandlerResult> {
    return reconcileVmKey(key, this.reconcileDeps);
  }

  protected override async missing(): Promise<string | undefined> {
    if (await crdServed(this.custom, GROUP, VERSION, Plural.VMI)) return undefined;
    return 'the kubevirt.io/v1 CRDs are not installed (manifests/crds); the VM controller waits for them';
  }

  /** The caches and their handlers; the DataVolume cache only where the apiserver serves DataVolumes. */
  protected async watch(): Promise<Watch> {
    const withDataVolumes = await crdServed(this.custom, DV_GROUP, DV_VERSION, DV_PLURAL);
    if (!withDataVolumes) this.logger.warn('the cdi.kubevirt.io DataVolume CRD is not installed (manifests/crds); VMs with dataVolumeTemplates cannot start');
    const caches: Caches = {
      vms: this.informers.custom<VmObject>(GROUP, VERSION, Plural.VM),
      vmis: this.informers.custom<VmiObject>(GROUP, VERSION, Plural.VMI),
      pods: this.informers.pods(LAUNCHER_POD_SELECTOR),
      pvcs: this.informers.pvcs(),
      ...(withDataVolumes ? { dvs: this.informers.custom<DataVolume>(DV_GROUP, DV_VERSION, DV_PLURAL) } : {}),
    };
    caches.vms.onChange((vm) => this.enqueue(keyOf(VmKey.Vm, vm)));
    caches.vmis.onChange((vmi) => {
      this.enqueue(keyOf(VmKey.Vmi, vmi));
      // A VMI's owner VM shares its name.
      if (vmi.metadata?.ownerReferences?.some((o) => o.kind === 'VirtualMachine')) this.enqueue(keyOf(VmKey.Vm, vmi));
    });
    caches.pods.onChange((pod) => {
      const owner = pod.metadata?.ownerReferences?.find((o) => o.kind === 'VirtualMachineInstance');
      if (owner && pod.metadata?.namespace) this.enqueue(kindKey(VmKey.Vmi, pod.metadata.namespace, owner.name));
    });
    caches.pods.onDelete((pod) => {
      if (pod.metadata?.uid) this.reconcileDeps.reports.delete(pod.metadata.uid);
    });
    caches.pvcs.onChange((pvc) => this.wakeVmisUsing(pvc));
    caches.dvs?.onChange((dv) => {
      this.wakeVmisUsing(dv);
      this.wakeVmsNaming(dv);
    });
    this.caches = caches;
    return {
      sources: [caches.vms, caches.vmis, caches.pods, caches.pvcs, caches.dvs],
      keys: () => [...caches.vms.list().map((vm) => keyOf(VmKey.Vm, vm)), ...caches.vmis.list().map((vmi) => keyOf(VmKey.Vmi, vmi))],
    };
  }

  /** A PVC or DataVolume (same name as its PVC) wakes the VMIs whose volumes name it. */
  private wakeVmisUsing(obj: KubernetesObject): void {
    const namespace = obj.metadata?.namespace;
    if (!namespace) return;
    for (const vmi of this.caches?.vmis.list(namespace) ?? []) {
      if ((vmi.spec.volumes ?? []).some((v) => claimOf(v)?.claimName === obj.metadata?.name)) this.enqueue(keyOf(VmKey.Vmi, vmi));
    }
  }

  /** A DataVolume wakes the VMs that name it: in a template (owner or not) or in a volume. */
  private wakeVmsNaming(dv: DataVolume): void {
    const namespace = dv.metadata?.namespace;
    const name = dv.metadata?.name;
    if (!namespace || !name) return;
    for (const vm of this.caches?.vms.list(namespace) ?? []) {
      const named = (vm.spec.dataVolumeTemplates ?? []).some((t) => t.metadata?.name === name) || dataVolumeNames(vm.spec.template.spec).includes(name);
      if (named) this.enqueue(keyOf(VmKey.Vm, vm));
    }
  }
}

/** `vm:<ns>/<name>` or `vmi:<ns>/<name>` of an object; undefined without both. */
function keyOf(kind: VmKey, obj: KubernetesObject): string | undefined {
  return obj.metadata?.namespace && obj.metadata.name ? kindKey(kind, obj.metadata.namespace, obj.metadata.name) : undefined;
}
