/**
 * CDI's DataVolume (`cdi.kubevirt.io/v1beta1`), the subset Ferry reads, with its vocabulary as
 * constants (sources, phases, conditions, the annotation keys a DataVolume adds) and the two rules
 * Ferry applies to `spec.storage`: the defaults (Ferry has no StorageProfiles) and the size grown
 * by the filesystem overhead, as CDI computes it.
 */

import type { KubernetesObject, V1ObjectMeta, V1PersistentVolumeClaimSpec } from '@kubernetes/client-node';
import { MiB, parseQuantity } from '../quantity.js';
import { Annotation } from './cdi.js';

export const DV_GROUP = 'cdi.kubevirt.io';
export const DV_VERSION = 'v1beta1';
export const DV_KIND = 'DataVolume';
export const DV_PLURAL = 'datavolumes';
export const DV_API_VERSION = `${DV_GROUP}/${DV_VERSION}`;

export interface SecretRefSource {
  readonly url: string;
  readonly secretRef?: string;
  readonly certConfigMap?: string;
}
export interface HttpSource extends SecretRefSource {
  readonly extraHeaders?: readonly string[];
  readonly secretExtraHeaders?: readonly string[];
  readonly checksum?: string;
  readonly insecureSkipVerify?: boolean;
}
export interface RegistrySource extends Partial<SecretRefSource> {
  readonly pullMethod?: 'pod' | 'node';
  readonly imageStream?: string;
}
export interface ObjectRef {
  readonly namespace?: string;
  readonly name: string;
}

/** `spec.source`: exactly one key is set (the CRD's CEL rules enforce it). */
export interface DataVolumeSource {
  readonly http?: HttpSource;
  readonly s3?: SecretRefSource;
  readonly registry?: RegistrySource;
  readonly blank?: Record<string, never>;
  readonly upload?: Record<string, never>;
  readonly pvc?: ObjectRef;
  readonly [unsupported: string]: unknown;
}

/** The source kinds, as the keys of `spec.source` (plus `sourceRef`). */
export const SourceKind = {
  Http: 'http',
  S3: 's3',
  Registry: 'registry',
  Blank: 'blank',
  Upload: 'upload',
  Pvc: 'pvc',
  SourceRef: 'sourceRef',
} as const;
export type SourceKind = (typeof SourceKind)[keyof typeof SourceKind];

/** CDI sources Ferry never implements (refused at admission, named in the message). */
export const REFUSED_SOURCES = ['gcs', 'imageio', 'vddk', 'snapshot'] as const;

export interface StorageSpec {
  readonly accessModes?: readonly string[];
  readonly volumeMode?: 'Filesystem' | 'Block';
  readonly storageClassName?: string;
  readonly resources?: { readonly requests?: { readonly storage?: string | number } };
  readonly selector?: V1PersistentVolumeClaimSpec['selector'];
  readonly volumeName?: string;
}

export interface DataVolumeSpec {
  readonly source?: DataVolumeSource;
  readonly sourceRef?: { readonly kind: string; readonly namespace?: string; readonly name: string };
  readonly pvc?: V1PersistentVolumeClaimSpec;
  readonly storage?: StorageSpec;
  readonly contentType?: 'kubevirt' | 'archive';
  readonly preallocation?: boolean;
  readonly priorityClassName?: string;
}

export const DvPhase = {
  Unset: '',
  Pending: 'Pending',
  PVCBound: 'PVCBound',
  WaitForFirstConsumer: 'WaitForFirstConsumer',
  ImportScheduled: 'ImportScheduled',
  ImportInProgress: 'ImportInProgress',
  CloneScheduled: 'CloneScheduled',
  CloneInProgress: 'CloneInProgress',
  UploadScheduled: 'UploadScheduled',
  UploadReady: 'UploadReady',
  Succeeded: 'Succeeded',
  Failed: 'Failed',
  Unknown: 'Unknown',
} as const;
export type DvPhase = (typeof DvPhase)[keyof typeof DvPhase];

export const DvConditionType = { Ready: 'Ready', Bound: 'Bound', Running: 'Running' } as const;
export type DvConditionType = (typeof DvConditionType)[keyof typeof DvConditionType];

export type ConditionStatus = 'True' | 'False' | 'Unknown';

/** The condition reasons the DataVolume controller writes (CDI's, plus Ferry's ClaimExists and InvalidSpec). */
export const DvReason = {
  Bound: 'Bound',
  Pending: 'Pending',
  ClaimLost: 'ClaimLost',
  NotFound: 'NotFound',
  TransferRunning: 'TransferRunning',
  Completed: 'Completed',
  /** A PVC of the DataVolume's name that it may not adopt. */
  ClaimExists: 'ClaimExists',
  /** A spec the controller cannot render (the CRD's rules let it through). */
  InvalidSpec: 'InvalidSpec',
  /** The PVC's storage class binds on first consumer and nothing consumes it yet. */
  WaitForFirstConsumer: 'WaitForFirstConsumer',
} as const;
export type DvReason = (typeof DvReason)[keyof typeof DvReason];

export interface DataVolumeCondition {
  readonly type: DvConditionType;
  readonly status: ConditionStatus;
  readonly reason?: string;
  readonly message?: string;
  readonly lastTransitionTime?: string;
  readonly lastHeartbeatTime?: string;
}

export interface DataVolumeStatus {
  readonly phase?: DvPhase;
  readonly progress?: string;
  readonly restartCount?: number;
  readonly claimName?: string;
  readonly conditions?: readonly DataVolumeCondition[];
}

export interface DataVolume extends KubernetesObject {
  readonly metadata: V1ObjectMeta;
  readonly spec: DataVolumeSpec;
  readonly status?: DataVolumeStatus;
}

/** Annotation keys a DataVolume (or its controller) puts on the PVC, beyond the import request (./cdi.ts). */
export const DvAnnotation = {
  CreatedForDataVolume: `${DV_GROUP}/createdForDataVolume`,
  PodPriorityClassName: `${DV_GROUP}/storage.pod.priorityclassname`,
  RegistryImportMethod: `${DV_GROUP}/storage.import.registryImportMethod`,
  /** On a DataVolume: adopt an existing PVC of the same name (CDI's DataVolumeClaimAdoption). */
  AllowClaimAdoption: `${DV_GROUP}/allowClaimAdoption`,
  /** On a PVC: already populated for the DataVolume of this name. */
  PopulatedFor: `${DV_GROUP}/storage.populatedFor`,
  /** Passed to the PVC: import now, even where the storage class binds on first consumer. */
  BindImmediate: Annotation.ImmediateBinding,
} as const;

/** DataVolume annotations that do not pass to the PVC (the rest do, as in CDI). */
export const NOT_PASSED_TO_PVC: readonly string[] = ['kubectl.kubernetes.io/last-applied-configuration'];

/**
 * Ferry's rule for what `spec.storage` leaves out (CDI takes it from a StorageProfile; Ferry has
 * none): accessModes [ReadWriteOnce], volumeMode Filesystem, the cluster's default storage class
 * (storageClassName left unset).
 */
export const STORAGE_DEFAULTS = Object.freeze({ accessModes: Object.freeze(['ReadWriteOnce']), volumeMode: 'Filesystem' as const });

/**
 * The PVC size that leaves `size` usable once the filesystem has taken its share: CDI's
 * GetRequiredSpace, ceil(RoundUp(size, 1 MiB) / (1 − overhead)). Block volumes pass overhead 0.
 */
export function requiredSpace(size: number, filesystemOverhead: number): number {
  const rounded = Math.ceil(size / MiB) * MiB;
  return filesystemOverhead === 0 ? rounded : Math.ceil(rounded / (1 - filesystemOverhead));
}

/** The claim spec for `spec.storage`: defaults filled, the size grown for Filesystem volumes. */
export function storageClaimSpec(storage: StorageSpec, filesystemOverhead: number): V1PersistentVolumeClaimSpec {
  const volumeMode = storage.volumeMode ?? STORAGE_DEFAULTS.volumeMode;
  const requested = storage.resources?.requests?.storage;
  const size = requested === undefined ? undefined : parseQuantity(String(requested));
  return {
    accessModes: [...(storage.accessModes?.length ? storage.accessModes : STORAGE_DEFAULTS.accessModes)],
    volumeMode,
    ...(storage.storageClassName !== undefined ? { storageClassName: storage.storageClassName } : {}),
    ...(storage.selector ? { selector: storage.selector } : {}),
    ...(storage.volumeName ? { volumeName: storage.volumeName } : {}),
    ...(size !== undefined ? { resources: { requests: { storage: String(requiredSpace(size, volumeMode === 'Block' ? 0 : filesystemOverhead)) } } } : {}),
  };
}

/** The source kind a DataVolume asks for: the one key of `spec.source`, or `sourceRef`. */
export function sourceKindOf(spec: DataVolumeSpec): string | undefined {
  if (spec.sourceRef) return SourceKind.SourceRef;
  const keys = Object.keys(spec.source ?? {});
  return keys.length === 1 ? keys[0] : undefined;
}

/**
 * What a cloning DataVolume names as its source: a PVC (`spec.source.pvc`, namespace defaulting to
 * the DataVolume's) or a DataSource to resolve (`spec.sourceRef`); undefined for any other source.
 */
export function cloneSourceOfDv(spec: DataVolumeSpec, namespace: string): { readonly kind: 'pvc' | 'dataSource'; readonly namespace: string; readonly name: string } | undefined {
  if (spec.sourceRef) return { kind: 'dataSource', namespace: spec.sourceRef.namespace || namespace, name: spec.sourceRef.name };
  const pvc = spec.source?.pvc;
  return pvc && sourceKindOf(spec) === SourceKind.Pvc ? { kind: 'pvc', namespace: pvc.namespace || namespace, name: pvc.name } : undefined;
}
