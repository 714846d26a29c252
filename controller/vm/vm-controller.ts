/**
 * Wires the VirtualMachine, VirtualMachineInstance and launcher-pod caches, and the shared PVC and
 * DataVolume caches (the DataVolume controller reads the same ones), to one work queue (keys `vm:<ns>/<name>` and `vmi:<ns>/<name>`) and the thin reconcile in
 * ./reconcile.ts. Event handlers only enqueue keys. Without the kubevirt.io CRDs installed the
 * controller waits and looks again, so the import controller beside it is not held up; without the
 * cdi.kubevirt.io DataVolume CRD it runs without a DataVolume cache (a VM with dataVolumeTemplates
 * then fails to create them, with the apiserver's error).
 */

import { CoreV1Api, CustomObjectsApi, type KubeConfig, type KubernetesObject, type V1PersistentVolumeClaim, type V1Pod } from '@kubernetes/client-node';
import { type DataVolume, DV_GROUP, DV_PLURAL, DV_VERSION } from '../../src/api/datavolume.js';
import { claimOf, dataVolumeNames, GROUP, Plural, VERSION, VmLabel } from '../../src/api/kubevirt.js';
import type { Logger } from '../../src/logging.js';
import { errorLine, kubeGet } from '../runtime/errors.js';
import { InformerFactory, type SharedInformer } from '../runtime/informers.js';
import { kindKey } from '../runtime/keys.js';
import { WorkQueue } from '../runtime/work-queue.js';
import { VmWriter } from './apply.js';
import type { LauncherConfig } from './launcher-pod.js';
import { scrapeLauncher } from './launcher-scrape.js';
import { reconcileVmKey, type VmiObject, VmKey, type VmObject, type VmReconcileDeps } from './reconcile.js';
import type { VmConfig } from './vm-plan.js';
import type { LauncherReport } from './vmi-plan.js';
import { crdServed } from '../runtime/crds.js';

export const LAUNCHER_POD_SELECTOR = `${VmLabel.App}=${VmLabel.AppLauncher}`;

export interface VmControllerDeps {
  readonly kubeConfig: KubeConfig;
  readonly config: LauncherConfig & VmConfig & { readonly namespaces: readonly string[]; readonly concurrency: number };
  readonly logger: Logger;
  /** The process's shared informers; without it the controller makes (and stops) its own. */
  readonly informers?: InformerFactory;
  readonly now?: () => number;
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

export class VmController {
  private readonly informers: InformerFactory;
  private readonly ownsInformers: boolean;
  private caches: Caches | undefined;
  private readonly queue: WorkQueue;
  private readonly custom: CustomObjectsApi;
  private readonly reconcileDeps: VmReconcileDeps;
  private synced = false;
  private stopped = false;
  private retry: NodeJS.Timeout | undefined;
  private resync: NodeJS.Timeout | undefined;

  constructor(private readonly deps: VmControllerDeps) {
    this.ownsInformers = deps.informers === undefined;
    this.informers = deps.informers ?? new InformerFactory(deps.kubeConfig, deps.config.namespaces, deps.logger);
    const core = deps.kubeConfig.makeApiClient(CoreV1Api);
    this.custom = deps.kubeConfig.makeApiClient(CustomObjectsApi);
    this.reconcileDeps = {
      caches: {
        getVm: (ns, name) => this.caches?.vms.get(name, ns),
        getVmi: (ns, name) => this.caches?.vmis.get(name, ns),
        getPod: (ns, name) => this.caches?.pods.get(name, ns),
        getPvc: (ns, name) => this.caches?.pvcs.get(name, ns),
        getDataVolume: (ns, name) => this.caches?.dvs?.get(name, ns),
      },
      writer: new VmWriter(core, this.custom),
      config: deps.config,
      logger: deps.logger,
      now: deps.now ?? Date.now,
      readPod: async (namespace, name) => {
        return kubeGet({ verb: 'get', resource: 'pods', namespace, name }, () => core.readNamespacedPod({ namespace, name }));
      },
      readDataVolume: async (namespace, name) => {
        if (!this.caches?.dvs) return undefined;
        return (await kubeGet({ verb: 'get', resource: DV_PLURAL, namespace, name }, () =>
          this.custom.getNamespacedCustomObject({ group: DV_GROUP, version: DV_VERSION, namespace, plural: DV_PLURAL, name }),
        )) as DataVolume | undefined;
      },
      scrape: deps.scrape ?? scrapeLauncher,
      reports: new Map(),
    };
    this.queue = new WorkQueue((key) => reconcileVmKey(key, this.reconcileDeps), {
      concurrency: deps.config.concurrency,
      baseBackoffMs: 500,
      maxBackoffMs: 60_000,
      onError: (key, err, retryInMs) => deps.logger.warn({ key, retryInMs, err: errorLine(err) }, 'reconcile failed'),
    });
  }

  get ready(): boolean {
    return this.synced;
  }

  /** Starts the informers; resolves once the caches are filled, or once the CRDs were found missing. */
  async start(): Promise<void> {
    if (!(await crdServed(this.custom, GROUP, VERSION, Plural.VMI))) {
      this.deps.logger.warn('the kubevirt.io/v1 CRDs are not installed (manifests/crds); the VM controller waits for them');
      this.synced = true;
      this.retry = setTimeout(() => {
        this.synced = false;
        if (!this.stopped) this.start().catch((e: unknown) => this.deps.logger.error({ err: errorLine(e) }, 'VM controller start failed'));
      }, this.deps.retryCrdMs ?? 30_000);
      this.retry.unref();
      return;
    }
    const caches = this.watch(await this.dataVolumesServed());
    await Promise.all([caches.vms.start(), caches.vmis.start(), caches.pods.start(), caches.pvcs.start(), caches.dvs?.start()]);
    this.synced = true;
    const all = (): void => {
      for (const vm of caches.vms.list()) this.enqueue(VmKey.Vm, vm);
      for (const vmi of caches.vmis.list()) this.enqueue(VmKey.Vmi, vmi);
    };
    all();
    this.resync = setInterval(all, 300_000);
    this.resync.unref();
  }

  /** Stops taking work and waits for reconciles in flight (the caller bounds the wait). */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retry) clearTimeout(this.retry);
    if (this.resync) clearInterval(this.resync);
    if (this.ownsInformers) await this.informers.stop();
    await this.queue.shutdown();
  }

  idle(): Promise<void> {
    return this.queue.idle();
  }

  /** Whether the apiserver serves DataVolumes (CRD installed). */
  private async dataVolumesServed(): Promise<boolean> {
    if (await crdServed(this.custom, DV_GROUP, DV_VERSION, DV_PLURAL)) return true;
    this.deps.logger.warn('the cdi.kubevirt.io DataVolume CRD is not installed (manifests/crds); VMs with dataVolumeTemplates cannot start');
    return false;
  }

  /** The caches and their handlers, made once. */
  private watch(withDataVolumes: boolean): Caches {
    if (this.caches) return this.caches;
    const caches: Caches = {
      vms: this.informers.custom<VmObject>(GROUP, VERSION, Plural.VM),
      vmis: this.informers.custom<VmiObject>(GROUP, VERSION, Plural.VMI),
      pods: this.informers.pods(LAUNCHER_POD_SELECTOR),
      pvcs: this.informers.pvcs(),
      ...(withDataVolumes ? { dvs: this.informers.custom<DataVolume>(DV_GROUP, DV_VERSION, DV_PLURAL) } : {}),
    };
    caches.vms.onChange((vm) => this.enqueue(VmKey.Vm, vm));
    caches.vmis.onChange((vmi) => {
      this.enqueue(VmKey.Vmi, vmi);
      // A VMI's owner VM shares its name.
      if (vmi.metadata?.ownerReferences?.some((o) => o.kind === 'VirtualMachine')) this.enqueue(VmKey.Vm, vmi);
    });
    caches.pods.onChange((pod) => {
      const owner = pod.metadata?.ownerReferences?.find((o) => o.kind === 'VirtualMachineInstance');
      if (owner && pod.metadata?.namespace) this.queue.add(kindKey(VmKey.Vmi, pod.metadata.namespace, owner.name));
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
    return caches;
  }

  private enqueue(kind: VmKey, obj: KubernetesObject): void {
    if (obj.metadata?.namespace && obj.metadata.name) this.queue.add(kindKey(kind, obj.metadata.namespace, obj.metadata.name));
  }

  /** A PVC or DataVolume (same name as its PVC) wakes the VMIs whose volumes name it. */
  private wakeVmisUsing(obj: KubernetesObject): void {
    const namespace = obj.metadata?.namespace;
    if (!namespace) return;
    for (const vmi of this.caches?.vmis.list(namespace) ?? []) {
      if ((vmi.spec.volumes ?? []).some((v) => claimOf(v)?.claimName === obj.metadata?.name)) this.enqueue(VmKey.Vmi, vmi);
    }
  }

  /** A DataVolume wakes the VMs that name it: in a template (owner or not) or in a volume. */
  private wakeVmsNaming(dv: DataVolume): void {
    const namespace = dv.metadata?.namespace;
    const name = dv.metadata?.name;
    if (!namespace || !name) return;
    for (const vm of this.caches?.vms.list(namespace) ?? []) {
      const named = (vm.spec.dataVolumeTemplates ?? []).some((t) => t.metadata?.name === name) || dataVolumeNames(vm.spec.template.spec).includes(name);
      if (named) this.enqueue(VmKey.Vm, vm);
    }
  }
}
