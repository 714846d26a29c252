/**
 * One VM or VMI reconcile: read the caches, call the pure plan (planVm / planVmi), apply its
 * actions through the writer. Level-triggered: whatever woke it, it looks at the whole current
 * state of one object. Keys are `vm:<ns>/<name>` and `vmi:<ns>/<name>`.
 */

import type { KubernetesObject, V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';
import type { DataVolume } from '../../src/api/datavolume.js';
import { claimOf, dataVolumeNames, type VirtualMachine, type VirtualMachineInstance, VmiPhase } from '../../src/api/kubevirt.js';
import type { Logger } from '../../src/logging.js';
import { splitKindKey } from '../runtime/keys.js';
import type { HandlerResult } from '../runtime/work-queue.js';
import type { VmWriter } from './apply.js';
import { type LauncherConfig, launcherPodName } from './launcher-pod.js';
import { launcherReport } from './launcher-scrape.js';
import { planVm, type VmConfig } from './vm-plan.js';
import { type LauncherReport, planVmi, provisioningPodName } from './vmi-plan.js';

export type VmObject = VirtualMachine & KubernetesObject;
export type VmiObject = VirtualMachineInstance & KubernetesObject;

export const VmKey = { Vm: 'vm', Vmi: 'vmi' } as const;
export type VmKey = (typeof VmKey)[keyof typeof VmKey];

export interface VmCaches {
  getVm(namespace: string, name: string): VmObject | undefined;
  getVmi(namespace: string, name: string): VmiObject | undefined;
  getPod(namespace: string, name: string): V1Pod | undefined;
  getPvc(namespace: string, name: string): V1PersistentVolumeClaim | undefined;
  /** Undefined when there is no DataVolume cache at all (the cdi.kubevirt.io CRD is not installed). */
  getDataVolume?(namespace: string, name: string): DataVolume | undefined;
}

export interface VmReconcileDeps {
  readonly caches: VmCaches;
  readonly writer: Pick<VmWriter, 'applyVm' | 'applyVmi'>;
  readonly config: LauncherConfig & VmConfig;
  readonly logger: Logger;
  readonly now: () => number;
  /** Reads a pod from the apiserver (undefined when it does not exist). */
  readonly readPod: (namespace: string, name: string) => Promise<V1Pod | undefined>;
  /** Reads a DataVolume from the apiserver (undefined when it does not exist). */
  readonly readDataVolume: (namespace: string, name: string) => Promise<DataVolume | undefined>;
  /** Asks a running launcher for its live status; undefined when it does not answer. */
  readonly scrape: (podIP: string, port: number) => Promise<LauncherReport | undefined>;
  /** What each launcher pod reported live, by pod UID (asked once per pod). */
  readonly reports: Map<string, LauncherReport>;
}

const StartedPhases: readonly string[] = [VmiPhase.Scheduling, VmiPhase.Scheduled, VmiPhase.Running];

export function reconcileVmKey(key: string, deps: VmReconcileDeps): Promise<HandlerResult> {
  const { kind, namespace, name } = splitKindKey(key);
  return kind === VmKey.Vm ? reconcileVm(namespace, name, deps) : reconcileVmi(namespace, name, deps);
}

export async function reconcileVm(namespace: string, name: string, deps: VmReconcileDeps): Promise<HandlerResult> {
  const vm = deps.caches.getVm(namespace, name);
  if (!vm) return {};
  const vmi = deps.caches.getVmi(namespace, name);
  const ownVmi = vmi?.metadata.ownerReferences?.some((o) => o.uid === vm.metadata.uid) ? vmi : undefined;
  const dataVolumes = await vmDataVolumes(vm, namespace, deps);
  const plan = planVm({ vm, ...(ownVmi ? { vmi: ownVmi } : {}), dataVolumes, now: deps.now() }, deps.config);
  const log = deps.logger.child({ vm: `${namespace}/${name}` });
  for (const action of plan.actions) {
    if (action.type !== 'patchVmStatus') log.info({ action: action.type, ...(action.type === 'event' ? { reason: action.reason } : {}) }, 'applying');
    await deps.writer.applyVm({ kind: 'VirtualMachine', metadata: vm.metadata }, action);
  }
  return plan.requeueAfterMs !== undefined ? { requeueAfterMs: plan.requeueAfterMs } : {};
}

export async function reconcileVmi(namespace: string, name: string, deps: VmReconcileDeps): Promise<HandlerResult> {
  const vmi = deps.caches.getVmi(namespace, name);
  if (!vmi) return {};
  const pod = await launcherPod(vmi, namespace, deps);
  const claims = new Map<string, V1PersistentVolumeClaim | undefined>();
  for (const volume of vmi.spec.volumes ?? []) {
    const claim = claimOf(volume);
    if (claim) claims.set(claim.claimName, deps.caches.getPvc(namespace, claim.claimName));
  }
  const dataVolumes = new Map<string, DataVolume | undefined>();
  const getDv = deps.caches.getDataVolume?.bind(deps.caches);
  if (getDv) for (const dv of dataVolumeNames(vmi.spec)) dataVolumes.set(dv, getDv(namespace, dv));
  const uid = pod?.metadata?.uid;
  const report = launcherReport(pod, uid ? deps.reports.get(uid) : undefined);
  const provisioningPod = deps.caches.getPod(namespace, provisioningPodName(vmi));
  const plan = planVmi(
    { vmi, ...(pod ? { pod } : {}), ...(provisioningPod ? { provisioningPod } : {}), claims, dataVolumes, ...(report ? { report } : {}), now: deps.now() },
    deps.config,
  );
  const log = deps.logger.child({ vmi: `${namespace}/${name}` });
  for (const action of plan.actions) {
    if (action.type !== 'patchStatus') log.info({ action: action.type, ...(action.type === 'event' ? { reason: action.reason } : {}) }, 'applying');
    await deps.writer.applyVmi({ kind: 'VirtualMachineInstance', metadata: vmi.metadata }, action);
  }
  if (plan.scrape && uid) {
    const live = await deps.scrape(plan.scrape.podIP, deps.config.launcherStatusPort);
    if (live) {
      deps.reports.set(uid, live);
      return { requeueAfterMs: 0 };
    }
  }
  return {};
}

/**
 * The DataVolumes a VM names: its templates' and its template volumes'. A template's DataVolume the
 * cache does not hold is asked of the apiserver, so a cache that lags behind a create never makes
 * the plan create it again (or announce it twice).
 */
async function vmDataVolumes(vm: VmObject, namespace: string, deps: VmReconcileDeps): Promise<Map<string, DataVolume | undefined>> {
  const found = new Map<string, DataVolume | undefined>();
  const getDv = deps.caches.getDataVolume?.bind(deps.caches);
  if (!getDv) return found;
  for (const template of vm.spec.dataVolumeTemplates ?? []) {
    const name = template.metadata?.name;
    if (!name || found.has(name)) continue;
    found.set(name, getDv(namespace, name) ?? (vm.metadata.deletionTimestamp ? undefined : await deps.readDataVolume(namespace, name)));
  }
  for (const name of dataVolumeNames(vm.spec.template.spec)) if (!found.has(name)) found.set(name, getDv(namespace, name));
  return found;
}

/**
 * The VMI's launcher pod. The cache may not have seen a pod this controller just created; "no pod"
 * under a started VMI is terminal, so it is confirmed with the apiserver before it counts.
 */
async function launcherPod(vmi: VmiObject, namespace: string, deps: VmReconcileDeps): Promise<V1Pod | undefined> {
  const name = launcherPodName(vmi);
  const cached = deps.caches.getPod(namespace, name);
  if (cached || !StartedPhases.includes(vmi.status?.phase ?? '')) return cached;
  return deps.readPod(namespace, name);
}
