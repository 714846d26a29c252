/**
 * Wires informers on VirtualMachines, VirtualMachineInstances, launcher pods and PVCs to one work
 * queue (keys `vm:<ns>/<name>` and `vmi:<ns>/<name>`) and the two pure plans. Event handlers only
 * enqueue keys. Without the kubevirt.io CRDs installed the controller waits and looks again, so the
 * import controller beside it is not held up.
 */

import {
  CoreV1Api,
  CustomObjectsApi,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
  makeInformer,
  type V1PersistentVolumeClaim,
  type V1Pod,
} from '@kubernetes/client-node';
import { type Cached, watchRestarting } from '../runtime/informers.js';
import type { Logger } from '../../src/logging.js';
import { claimOf, GROUP, Plural, VERSION, type VirtualMachine, type VirtualMachineInstance, VmLabel } from '../../src/api/kubevirt.js';
import { decodeLauncherStatus } from '../../src/contract/launcher-status.js';
import { splitKey } from '../import/reconcile.js';
import { type HandlerResult, WorkQueue } from '../runtime/work-queue.js';
import { type LauncherConfig, launcherPodName } from './launcher-pod.js';
import { planVm, type VmConfig } from './vm-plan.js';
import { VmWriter } from './vm-writer.js';
import { type LauncherReport, planVmi } from './vmi-plan.js';

type VmObject = VirtualMachine & KubernetesObject;
type VmiObject = VirtualMachineInstance & KubernetesObject;

export const LAUNCHER_POD_SELECTOR = `${VmLabel.App}=${VmLabel.AppLauncher}`;

export interface VmControllerDeps {
  readonly kubeConfig: KubeConfig;
  readonly config: LauncherConfig & VmConfig & { readonly namespaces: readonly string[]; readonly concurrency: number };
  readonly logger: Logger;
  readonly now?: () => number;
  /** Asks a running launcher for its live status; undefined when it does not answer. */
  readonly scrape?: (podIP: string, port: number) => Promise<LauncherReport | undefined>;
  readonly retryCrdMs?: number;
}

/** GET http://<podIP>:<port>/status with a short timeout; undefined on any failure. */
export async function scrapeLauncher(podIP: string, port: number, timeoutMs = 2000): Promise<LauncherReport | undefined> {
  const host = podIP.includes(':') ? `[${podIP}]` : podIP;
  try {
    const response = await fetch(`http://${host}:${port}/status`, { signal: AbortSignal.timeout(timeoutMs) });
    if (!response.ok) return undefined;
    const body = (await response.json()) as { accel?: unknown };
    return body.accel === 'kvm' || body.accel === 'tcg' ? { accel: body.accel } : undefined;
  } catch {
    return undefined;
  }
}

export class VmController {
  private vms: Cached<VmObject> | undefined;
  private vmis: Cached<VmiObject> | undefined;
  private pods: Cached<V1Pod> | undefined;
  private pvcs: Cached<V1PersistentVolumeClaim> | undefined;
  private readonly queue: WorkQueue;
  private readonly writer: VmWriter;
  private readonly core: CoreV1Api;
  /** Accelerator each launcher pod reported, by pod UID (asked once per pod). */
  private readonly reports = new Map<string, LauncherReport>();
  private synced = false;
  private stopped = false;
  private retry: NodeJS.Timeout | undefined;
  private resync: NodeJS.Timeout | undefined;

  constructor(private readonly deps: VmControllerDeps) {
    const core = deps.kubeConfig.makeApiClient(CoreV1Api);
    this.core = core;
    this.writer = new VmWriter(core, deps.kubeConfig.makeApiClient(CustomObjectsApi));
    this.queue = new WorkQueue((key) => this.reconcile(key), {
      concurrency: deps.config.concurrency,
      baseBackoffMs: 500,
      maxBackoffMs: 60_000,
      onError: (key, err, retryInMs) => deps.logger.warn({ key, retryInMs, err: (err as Error).message }, 'reconcile failed'),
    });
  }

  get ready(): boolean {
    return this.synced;
  }

  /** Starts the informers; resolves once the caches are filled, or once the CRDs were found missing. */
  async start(): Promise<void> {
    const kc = this.deps.kubeConfig;
    const custom = kc.makeApiClient(CustomObjectsApi);
    const core = kc.makeApiClient(CoreV1Api);
    const ns = this.deps.config.namespaces.length === 1 ? this.deps.config.namespaces[0]! : '';
    try {
      await custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: Plural.VMI, limit: 1 });
    } catch (err) {
      if ((err as { code?: unknown }).code !== 404) throw err;
      this.deps.logger.warn('the kubevirt.io/v1 CRDs are not installed (manifests/crds); the VM controller waits for them');
      this.synced = true;
      this.retry = setTimeout(() => {
        this.synced = false;
        if (!this.stopped) this.start().catch((e: unknown) => this.deps.logger.error({ err: (e as Error).message }, 'VM controller start failed'));
      }, this.deps.retryCrdMs ?? 30_000);
      this.retry.unref();
      return;
    }
    const base = (plural: string): string => (ns ? `/apis/${GROUP}/${VERSION}/namespaces/${ns}/${plural}` : `/apis/${GROUP}/${VERSION}/${plural}`);
    const listCustom = (plural: string) => async (): Promise<KubernetesListObject<KubernetesObject>> =>
      (ns
        ? custom.listNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural })
        : custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural })) as Promise<KubernetesListObject<KubernetesObject>>;
    this.vms = makeInformer<VmObject>(kc, base(Plural.VM), listCustom(Plural.VM) as () => Promise<KubernetesListObject<VmObject>>);
    this.vmis = makeInformer<VmiObject>(kc, base(Plural.VMI), listCustom(Plural.VMI) as () => Promise<KubernetesListObject<VmiObject>>);
    this.pods = makeInformer<V1Pod>(
      kc,
      ns ? `/api/v1/namespaces/${ns}/pods` : '/api/v1/pods',
      () => (ns ? core.listNamespacedPod({ namespace: ns, labelSelector: LAUNCHER_POD_SELECTOR }) : core.listPodForAllNamespaces({ labelSelector: LAUNCHER_POD_SELECTOR })),
      LAUNCHER_POD_SELECTOR,
    );
    this.pvcs = makeInformer<V1PersistentVolumeClaim>(kc, ns ? `/api/v1/namespaces/${ns}/persistentvolumeclaims` : '/api/v1/persistentvolumeclaims', () =>
      ns ? core.listNamespacedPersistentVolumeClaim({ namespace: ns }) : core.listPersistentVolumeClaimForAllNamespaces(),
    );
    this.watch(this.vms, 'vms', (vm) => this.enqueue('vm', vm));
    this.watch(this.vmis, 'vmis', (vmi) => {
      this.enqueue('vmi', vmi);
      // A VMI's owner VM shares its name.
      if (vmi.metadata?.ownerReferences?.some((o) => o.kind === 'VirtualMachine')) this.enqueue('vm', vmi);
    });
    this.watch(this.pods, 'pods', (pod) => {
      const owner = pod.metadata?.ownerReferences?.find((o) => o.kind === 'VirtualMachineInstance');
      if (owner && pod.metadata?.namespace) this.queue.add(`vmi:${pod.metadata.namespace}/${owner.name}`);
    });
    this.pods.on('delete', (pod) => {
      if (pod.metadata?.uid) this.reports.delete(pod.metadata.uid);
    });
    this.watch(this.pvcs, 'pvcs', (pvc) => this.wakeVmisUsing(pvc));
    await Promise.all([this.vms, this.vmis, this.pods, this.pvcs].map((i) => i.start()));
    this.synced = true;
    const all = (): void => {
      for (const vm of this.vms?.list() ?? []) this.enqueue('vm', vm);
      for (const vmi of this.vmis?.list() ?? []) this.enqueue('vmi', vmi);
    };
    all();
    this.resync = setInterval(all, 300_000);
    this.resync.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.retry) clearTimeout(this.retry);
    if (this.resync) clearInterval(this.resync);
    await Promise.all([this.vms, this.vmis, this.pods, this.pvcs].map((i) => i?.stop()));
    await this.queue.shutdown();
  }

  idle(): Promise<void> {
    return this.queue.idle();
  }

  private enqueue(kind: 'vm' | 'vmi', obj: KubernetesObject): void {
    if (obj.metadata?.namespace && obj.metadata.name) this.queue.add(`${kind}:${obj.metadata.namespace}/${obj.metadata.name}`);
  }

  private wakeVmisUsing(pvc: V1PersistentVolumeClaim): void {
    const namespace = pvc.metadata?.namespace;
    for (const vmi of this.vmis?.list(namespace) ?? []) {
      if ((vmi.spec.volumes ?? []).some((v) => claimOf(v)?.claimName === pvc.metadata?.name)) this.enqueue('vmi', vmi);
    }
  }

  private watch<T extends KubernetesObject>(informer: Cached<T>, what: string, handler: (obj: T) => void): void {
    watchRestarting(informer, what, handler, this.deps.logger, () => this.stopped);
  }

  private async reconcile(key: string): Promise<HandlerResult> {
    const colon = key.indexOf(':');
    const [namespace, name] = splitKey(key.slice(colon + 1));
    return key.startsWith('vm:') ? this.reconcileVm(namespace, name) : this.reconcileVmi(namespace, name);
  }

  private async reconcileVm(namespace: string, name: string): Promise<HandlerResult> {
    const vm = this.vms?.get(name, namespace);
    if (!vm) return {};
    const vmi = this.vmis?.get(name, namespace);
    const ownVmi = vmi?.metadata.ownerReferences?.some((o) => o.uid === vm.metadata.uid) ? vmi : undefined;
    const now = (this.deps.now ?? Date.now)();
    const plan = planVm({ vm, ...(ownVmi ? { vmi: ownVmi } : {}), now }, this.deps.config);
    const log = this.deps.logger.child({ vm: `${namespace}/${name}` });
    for (const action of plan.actions) {
      if (action.type !== 'patchVmStatus') log.info({ action: action.type, ...(action.type === 'event' ? { reason: action.reason } : {}) }, 'applying');
      await this.writer.applyVm({ kind: 'VirtualMachine', metadata: vm.metadata }, action);
    }
    return plan.requeueAfterMs !== undefined ? { requeueAfterMs: plan.requeueAfterMs } : {};
  }

  private async reconcileVmi(namespace: string, name: string): Promise<HandlerResult> {
    const vmi = this.vmis?.get(name, namespace);
    if (!vmi) return {};
    const pod = await this.launcherPod(vmi, namespace);
    const claims = new Map<string, V1PersistentVolumeClaim | undefined>();
    for (const volume of vmi.spec.volumes ?? []) {
      const claim = claimOf(volume);
      if (claim) claims.set(claim.claimName, this.pvcs?.get(claim.claimName, namespace));
    }
    const report = this.reportFor(pod);
    const now = (this.deps.now ?? Date.now)();
    const plan = planVmi({ vmi, ...(pod ? { pod } : {}), claims, ...(report ? { report } : {}), now }, this.deps.config);
    const log = this.deps.logger.child({ vmi: `${namespace}/${name}` });
    for (const action of plan.actions) {
      if (action.type !== 'patchStatus') log.info({ action: action.type, ...(action.type === 'event' ? { reason: action.reason } : {}) }, 'applying');
      await this.writer.applyVmi({ kind: 'VirtualMachineInstance', metadata: vmi.metadata }, action);
    }
    if (plan.scrape && pod?.metadata?.uid) {
      const live = await (this.deps.scrape ?? scrapeLauncher)(plan.scrape.podIP, this.deps.config.launcherStatusPort);
      if (live) {
        this.reports.set(pod.metadata.uid, live);
        return { requeueAfterMs: 0 };
      }
    }
    return {};
  }

  /**
   * The VMI's launcher pod. The cache may not have seen a pod this controller just created; "no pod"
   * under a started VMI is terminal, so it is confirmed with the apiserver before it counts.
   */
  private async launcherPod(vmi: VmiObject, namespace: string): Promise<V1Pod | undefined> {
    const name = launcherPodName(vmi);
    const cached = this.pods?.get(name, namespace);
    if (cached || !['Scheduling', 'Scheduled', 'Running'].includes(vmi.status?.phase ?? '')) return cached;
    try {
      return await this.core.readNamespacedPod({ namespace, name });
    } catch (err) {
      if ((err as { code?: unknown }).code === 404) return undefined;
      throw err;
    }
  }

  /** The launcher's termination message once the pod ended, else what it reported live. */
  private reportFor(pod: V1Pod | undefined): LauncherReport | undefined {
    const uid = pod?.metadata?.uid;
    if (!pod || !uid) return undefined;
    const live = this.reports.get(uid);
    const message = pod.status?.containerStatuses?.[0]?.state?.terminated?.message;
    if (message) {
      const decoded = decodeLauncherStatus(message);
      if (decoded) return { ...live, ...decoded };
    }
    return live;
  }
}
