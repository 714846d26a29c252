/**
 * The `kubevirt.io/v1` subset Ferry serves: VirtualMachine and VirtualMachineInstance types, the
 * names KubeVirt uses for phases, conditions, labels and annotations, and the defaults applied to a
 * VMI before anything is derived from it. Field names follow KubeVirt exactly, so VMI/VM YAML written
 * for KubeVirt parses here unchanged; fields outside the subset are kept but ignored.
 */

import { createHash } from 'node:crypto';
import type { DataVolumeSpec } from './datavolume.js';

export const GROUP = 'kubevirt.io';
export const VERSION = 'v1';
export const API_VERSION = `${GROUP}/${VERSION}`;

export const Kind = { VM: 'VirtualMachine', VMI: 'VirtualMachineInstance' } as const;
export const Plural = { VM: 'virtualmachines', VMI: 'virtualmachineinstances' } as const;

export const VmiPhase = {
  Pending: 'Pending',
  Scheduling: 'Scheduling',
  Scheduled: 'Scheduled',
  Running: 'Running',
  Succeeded: 'Succeeded',
  Failed: 'Failed',
  Unknown: 'Unknown',
} as const;
export type VmiPhase = (typeof VmiPhase)[keyof typeof VmiPhase];

export const FINAL_PHASES: readonly VmiPhase[] = [VmiPhase.Succeeded, VmiPhase.Failed];

export function isFinal(phase: string | undefined): boolean {
  return phase === VmiPhase.Succeeded || phase === VmiPhase.Failed;
}

export const ConditionType = {
  Ready: 'Ready',
  /** Ferry always reports it when the guest runs under TCG (KubeVirt only does for cross-arch). */
  SoftwareEmulation: 'SoftwareEmulation',
  PodScheduled: 'PodScheduled',
  Failure: 'Failure',
  /** Whether every DataVolume the VMI (or the VM's template) names has its data (KubeVirt's). */
  DataVolumesReady: 'DataVolumesReady',
  /** True while a temporary pod binds volumes whose storage class waits for a first consumer (KubeVirt's). */
  Provisioning: 'Provisioning',
} as const;

export const ConditionReason = {
  PodNotExists: 'PodNotExists',
  PodTerminating: 'PodTerminating',
  GuestNotRunning: 'GuestNotRunning',
  PodConditionMissing: 'PodConditionMissing',
  NoKvm: 'NoKVM',
  /** DataVolumesReady True / False (KubeVirt's VirtualMachineInstanceReasonAllDVsReady / NotAllDVsReady). */
  AllDVsReady: 'AllDVsReady',
  NotAllDVsReady: 'NotAllDVsReady',
  /** A DataVolume failed permanently (KubeVirt's FailedDataVolumeImport event reason). */
  FailedDataVolumeImport: 'FailedDataVolumeImport',
  /** Ferry: a DataVolume of a template's name that another controller owns; it is not used or adopted. */
  DataVolumeNotOwned: 'DataVolumeNotOwned',
  /** Ferry: the launcher pod waits while a volume's data is still being imported. */
  DataVolumeNotReady: 'DataVolumeNotReady',
  PvcNotFound: 'PVCNotFound',
  /** Ferry: a temporary pod consumes WaitForFirstConsumer volumes so they bind (then the import runs). */
  WaitForFirstConsumer: 'WaitForFirstConsumer',
} as const;

export const RunStrategy = {
  Always: 'Always',
  Halted: 'Halted',
  Manual: 'Manual',
  RerunOnFailure: 'RerunOnFailure',
  Once: 'Once',
} as const;
export type RunStrategy = (typeof RunStrategy)[keyof typeof RunStrategy];

export const PrintableStatus = {
  Stopped: 'Stopped',
  Provisioning: 'Provisioning',
  Starting: 'Starting',
  Running: 'Running',
  Stopping: 'Stopping',
  Terminating: 'Terminating',
  CrashLoopBackOff: 'CrashLoopBackOff',
  Unknown: 'Unknown',
  ErrorPvcNotFound: 'ErrorPvcNotFound',
  DataVolumeError: 'DataVolumeError',
  WaitingForVolumeBinding: 'WaitingForVolumeBinding',
} as const;
export type PrintableStatus = (typeof PrintableStatus)[keyof typeof PrintableStatus];

export const StateChangeAction = { Start: 'Start', Stop: 'Stop' } as const;
export type StateChangeAction = (typeof StateChangeAction)[keyof typeof StateChangeAction];

/** Labels and annotations KubeVirt puts on launcher pods and VMIs. */
export const VmLabel = {
  App: 'kubevirt.io',
  AppLauncher: 'virt-launcher',
  CreatedBy: 'kubevirt.io/created-by',
  VmiId: 'vmi.kubevirt.io/id',
  VmName: 'vm.kubevirt.io/name',
  NodeName: 'kubevirt.io/nodeName',
} as const;

/** On the temporary pod that binds a VMI's WaitForFirstConsumer volumes (KubeVirt's annotation). */
export const EPHEMERAL_PROVISIONING_ANNOTATION = 'kubevirt.io/ephemeral-provisioning';

/** Event reasons the VM controller gives for its DataVolumes (KubeVirt's). */
export const DataVolumeEventReason = {
  Created: 'SuccessfulDataVolumeCreate',
  CreateFailed: 'FailedDataVolumeCreate',
  ImportFailed: 'FailedDataVolumeImport',
} as const;

export const VmAnnotation = {
  Domain: 'kubevirt.io/domain',
  DefaultContainer: 'kubectl.kubernetes.io/default-container',
  /** Ferry: the memory overhead added to the guest's, so the sizing is visible. */
  MemoryOverhead: 'kubevirt.io/memory-overhead-bytes',
} as const;

export const FOREGROUND_FINALIZER = 'kubevirt.io/foregroundDeleteVirtualMachine';

export const DiskBus = { Virtio: 'virtio', Sata: 'sata', Scsi: 'scsi' } as const;
export type DiskBus = (typeof DiskBus)[keyof typeof DiskBus];

// ---------------------------------------------------------------------------------------------
// Types (the subset). Quantities stay strings as in YAML ("128Mi", "1"); parse with src/quantity.

export interface ObjectMeta {
  name?: string;
  generateName?: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string | Date;
  deletionTimestamp?: string | Date;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  finalizers?: string[];
  ownerReferences?: Array<{
    apiVersion: string;
    kind: string;
    name: string;
    uid: string;
    controller?: boolean;
    blockOwnerDeletion?: boolean;
  }>;
}

export interface ResourceRequirements {
  requests?: Record<string, string>;
  limits?: Record<string, string>;
  overcommitGuestOverhead?: boolean;
}

export interface DiskTarget {
  bus?: DiskBus;
  readonly?: boolean;
}

export interface CdromTarget extends DiskTarget {
  tray?: 'open' | 'closed';
}

export interface Disk {
  name: string;
  disk?: DiskTarget;
  cdrom?: CdromTarget;
  bootOrder?: number;
  serial?: string;
  cache?: 'none' | 'writethrough' | 'writeback';
  io?: 'native' | 'threads' | 'default';
}

export interface InterfacePort {
  name?: string;
  port: number;
  protocol?: 'TCP' | 'UDP';
}

export interface Interface {
  name: string;
  model?: string;
  masquerade?: Record<string, never>;
  bridge?: Record<string, never>;
  macAddress?: string;
  ports?: InterfacePort[];
  bootOrder?: number;
}

export interface Network {
  name: string;
  pod?: { vmNetworkCIDR?: string };
}

export interface SecretRef {
  name: string;
}

export interface CloudInitNoCloud {
  userData?: string;
  userDataBase64?: string;
  secretRef?: SecretRef;
  networkData?: string;
  networkDataBase64?: string;
  networkDataSecretRef?: SecretRef;
}

export interface Volume {
  name: string;
  persistentVolumeClaim?: { claimName: string; readOnly?: boolean };
  dataVolume?: { name: string };
  cloudInitNoCloud?: CloudInitNoCloud;
  emptyDisk?: { capacity: string };
  containerDisk?: { image: string; path?: string };
}

export interface DomainSpec {
  cpu?: { cores?: number; sockets?: number; threads?: number; model?: string };
  memory?: { guest?: string };
  resources?: ResourceRequirements;
  machine?: { type?: string };
  firmware?: {
    uuid?: string;
    serial?: string;
    bootloader?: { bios?: { useSerial?: boolean }; efi?: { secureBoot?: boolean } };
  };
  features?: { acpi?: { enabled?: boolean } };
  devices?: {
    disks?: Disk[];
    interfaces?: Interface[];
    autoattachPodInterface?: boolean;
    autoattachSerialConsole?: boolean;
    autoattachGraphicsDevice?: boolean;
    rng?: Record<string, never>;
  };
}

export interface Toleration {
  key?: string;
  operator?: string;
  value?: string;
  effect?: string;
  tolerationSeconds?: number;
}

export interface VmiSpec {
  domain: DomainSpec;
  volumes?: Volume[];
  networks?: Network[];
  nodeSelector?: Record<string, string>;
  affinity?: Record<string, unknown>;
  tolerations?: Toleration[];
  terminationGracePeriodSeconds?: number;
  hostname?: string;
  subdomain?: string;
  priorityClassName?: string;
  schedulerName?: string;
}

export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason?: string;
  message?: string;
  lastProbeTime?: string | null;
  lastTransitionTime?: string | null;
}

export interface VmiInterfaceStatus {
  name?: string;
  ipAddress?: string;
  ipAddresses?: string[];
  mac?: string;
  infoSource?: string;
}

export interface VmiStatus {
  phase?: VmiPhase;
  reason?: string;
  conditions?: Condition[];
  nodeName?: string;
  interfaces?: VmiInterfaceStatus[];
  phaseTransitionTimestamps?: Array<{ phase: VmiPhase; phaseTransitionTimestamp: string }>;
  activePods?: Record<string, string>;
  launcherContainerImageVersion?: string;
  machine?: { type: string };
  memory?: { guestAtBoot?: string; guestCurrent?: string; memoryOverhead?: string };
}

export interface VirtualMachineInstance {
  apiVersion: typeof API_VERSION;
  kind: typeof Kind.VMI;
  metadata: ObjectMeta;
  spec: VmiSpec;
  status?: VmiStatus;
}

export interface StateChangeRequest {
  action: StateChangeAction;
  uid?: string;
}

export interface VmStatus {
  created?: boolean;
  ready?: boolean;
  printableStatus?: PrintableStatus;
  conditions?: Condition[];
  stateChangeRequests?: StateChangeRequest[];
  startFailure?: { consecutiveFailCount: number; lastFailedVMIUID?: string; retryAfterTimestamp?: string };
  runStrategy?: RunStrategy;
  observedGeneration?: number;
}

/**
 * One entry of `spec.dataVolumeTemplates`: the DataVolume the VM controller creates, named
 * `metadata.name` in the VM's namespace and owned by the VM (KubeVirt's DataVolumeTemplateSpec).
 */
export interface DataVolumeTemplateSpec {
  metadata?: { name?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec: DataVolumeSpec;
}

export interface VirtualMachine {
  apiVersion: typeof API_VERSION;
  kind: typeof Kind.VM;
  metadata: ObjectMeta;
  spec: {
    running?: boolean;
    runStrategy?: RunStrategy;
    template: { metadata?: ObjectMeta; spec: VmiSpec };
    dataVolumeTemplates?: DataVolumeTemplateSpec[];
  };
  status?: VmStatus;
}

// ---------------------------------------------------------------------------------------------
// Helpers every program shares.

/**
 * The `vmi.kubevirt.io/id` label value: the VMI name when it fits a label (≤ 63), else a 54-char
 * prefix, '-' and the first 8 hex digits of its SHA-1, as KubeVirt computes it.
 */
export function vmiId(name: string): string {
  if (name.length <= 63) return name;
  return `${name.slice(0, 54)}-${createHash('sha1').update(name).digest('hex').slice(0, 8)}`;
}

/** A VM's effective run strategy: `running: true` means Always, false or absent Halted. */
export function runStrategyOf(vm: VirtualMachine): RunStrategy {
  if (vm.spec.runStrategy !== undefined) return vm.spec.runStrategy;
  return vm.spec.running === true ? RunStrategy.Always : RunStrategy.Halted;
}

/** The libvirt domain name KubeVirt uses: `<namespace>_<name>`. */
export function domainName(vmi: Pick<VirtualMachineInstance, 'metadata'>): string {
  return `${vmi.metadata.namespace ?? 'default'}_${vmi.metadata.name ?? ''}`;
}

/** The PVC behind a volume, for persistentVolumeClaim and dataVolume (a PVC of the same name). */
export function claimOf(volume: Volume): { claimName: string; readOnly: boolean } | undefined {
  if (volume.persistentVolumeClaim) {
    return { claimName: volume.persistentVolumeClaim.claimName, readOnly: volume.persistentVolumeClaim.readOnly === true };
  }
  if (volume.dataVolume) return { claimName: volume.dataVolume.name, readOnly: false };
  return undefined;
}

/** The DataVolume names a VMI spec's volumes refer to (`dataVolume: {name}`), in order, once each. */
export function dataVolumeNames(spec: Pick<VmiSpec, 'volumes'>): string[] {
  return [...new Set((spec.volumes ?? []).flatMap((v) => (v.dataVolume?.name ? [v.dataVolume.name] : [])))];
}
