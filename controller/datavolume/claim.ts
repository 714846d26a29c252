/**
 * What a DataVolume asks of the PVC-level controllers, as pure functions: the PVC to create (same
 * name, owned by the DataVolume, the DataVolume's labels and annotations, CDI's annotations for its
 * source) and, per source, how the PVC's annotations read back as a DataVolume phase. A new source
 * (upload, clone) is one more entry in ROUTES.
 */

import type { V1OwnerReference, V1PersistentVolumeClaim, V1PersistentVolumeClaimSpec } from '@kubernetes/client-node';
import { Annotation, LabelValue, PodPhase, UploadAnnotation } from '../../src/api/cdi.js';
import {
  type DataVolume,
  type DataVolumeSpec,
  DV_API_VERSION,
  DV_KIND,
  DvAnnotation,
  DvPhase,
  NOT_PASSED_TO_PVC,
  SourceKind,
  sourceKindOf,
  storageClaimSpec,
} from '../../src/api/datavolume.js';
import { ErrorCode, FerryError } from '../../src/errors.js';
import { extraHeaderAnnotations } from '../../src/api/import-request.js';

/** How one kind of source is asked for on the PVC and read back from it. */
export interface SourceRoute {
  /** CDI's annotations that hand this source to the PVC-level controller. */
  readonly annotations: (spec: DataVolumeSpec) => Record<string, string>;
  /** The DataVolume phase while the PVC-level controller works, from the PVC's annotations. */
  readonly phase: (annotations: Readonly<Record<string, string>>) => DvPhase | undefined;
}

const defined = (entries: Record<string, string | undefined>): Record<string, string> =>
  Object.fromEntries(Object.entries(entries).filter((e): e is [string, string] => e[1] !== undefined && e[1] !== ''));

/**
 * A run-once worker's pod phase on the PVC → the DataVolume's phase (CDI's mapping): import and
 * clone differ only in the names of the two phases before the end.
 */
const workerPhase =
  (scheduled: DvPhase, inProgress: DvPhase) =>
  (a: Readonly<Record<string, string>>): DvPhase | undefined => {
    switch (a[Annotation.PodPhase]) {
      case PodPhase.Pending:
        return scheduled;
      case PodPhase.Running:
        return inProgress;
      case PodPhase.Succeeded:
        return DvPhase.Succeeded;
      // Ferry's import and clone controllers write Failed only when they will not try again (ADR 0001).
      case PodPhase.Failed:
        return DvPhase.Failed;
      default:
        return undefined;
    }
  };
const importPhase = workerPhase(DvPhase.ImportScheduled, DvPhase.ImportInProgress);
const clonePhase = workerPhase(DvPhase.CloneScheduled, DvPhase.CloneInProgress);

const importRoute = (source: (spec: DataVolumeSpec) => Record<string, string | undefined>): SourceRoute => ({
  annotations: (spec) => defined(source(spec)),
  phase: importPhase,
});

export const ROUTES: Readonly<Partial<Record<SourceKind, SourceRoute>>> = Object.freeze({
  [SourceKind.Http]: importRoute(({ source }) => ({
    [Annotation.Source]: 'http',
    [Annotation.Endpoint]: source?.http?.url,
    [Annotation.SecretName]: source?.http?.secretRef,
    [Annotation.CertConfigMap]: source?.http?.certConfigMap,
    [Annotation.Checksum]: source?.http?.checksum,
    [Annotation.InsecureSkipVerify]: source?.http?.insecureSkipVerify ? 'true' : undefined,
    ...extraHeaderAnnotations(source?.http?.extraHeaders, source?.http?.secretExtraHeaders),
  })),
  [SourceKind.S3]: importRoute(({ source }) => ({
    [Annotation.Source]: 's3',
    [Annotation.Endpoint]: source?.s3?.url,
    [Annotation.SecretName]: source?.s3?.secretRef,
    [Annotation.CertConfigMap]: source?.s3?.certConfigMap,
  })),
  [SourceKind.Registry]: importRoute(({ source }) => ({
    [Annotation.Source]: 'registry',
    [Annotation.Endpoint]: source?.registry?.url,
    [Annotation.SecretName]: source?.registry?.secretRef,
    [Annotation.CertConfigMap]: source?.registry?.certConfigMap,
    [DvAnnotation.RegistryImportMethod]: source?.registry?.pullMethod,
  })),
  // CDI writes `none` for a blank disk; the import controller creates it.
  [SourceKind.Blank]: importRoute(() => ({ [Annotation.Source]: 'none' })),
  // An upload target (CDI's empty value); the upload controller runs its server.
  [SourceKind.Upload]: { annotations: () => ({ [UploadAnnotation.Target]: '' }), phase: uploadPhase },
  // A clone target: k8s.io/CloneRequest (the resolved source) is added by ./clone.ts; the clone controller copies.
  [SourceKind.Pvc]: { annotations: () => ({}), phase: clonePhase },
  [SourceKind.SourceRef]: { annotations: () => ({}), phase: clonePhase },
});

/** The upload controller's pod phase and readiness on the PVC → the DataVolume's upload phase (CDI's mapping). */
function uploadPhase(a: Readonly<Record<string, string>>): DvPhase | undefined {
  switch (a[Annotation.PodPhase]) {
    case PodPhase.Pending:
      return DvPhase.UploadScheduled;
    case PodPhase.Running:
      return a[UploadAnnotation.PodReady] === 'true' ? DvPhase.UploadReady : DvPhase.UploadScheduled;
    case PodPhase.Succeeded:
      return DvPhase.Succeeded;
    case PodPhase.Failed:
      return DvPhase.Failed;
    default:
      return undefined;
  }
}

/** The route for a DataVolume's source; throws INVALID_SPEC for one Ferry does not run. */
export function routeOf(spec: DataVolumeSpec): SourceRoute {
  const kind = sourceKindOf(spec);
  const route = kind === undefined ? undefined : ROUTES[kind as SourceKind];
  if (!route) {
    const field = kind === undefined ? 'spec.source' : kind === SourceKind.SourceRef ? 'spec.sourceRef' : `spec.source.${kind}`;
    throw new FerryError(ErrorCode.InvalidSpec, kind === undefined ? `${field} must name exactly one source` : `${field} is not supported by Ferry`);
  }
  return route;
}

/** The owner reference a DataVolume's PVC carries (deleting the DataVolume deletes the PVC). */
export function ownerReference(dv: DataVolume): V1OwnerReference {
  return { apiVersion: DV_API_VERSION, kind: DV_KIND, name: dv.metadata.name ?? '', uid: dv.metadata.uid ?? '', controller: true, blockOwnerDeletion: true };
}

export function isOwnedBy(pvc: V1PersistentVolumeClaim, dv: DataVolume): boolean {
  return pvc.metadata?.ownerReferences?.some((o) => o.controller === true && o.uid === dv.metadata.uid) === true;
}

/** A filesystem overhead: one fraction, or the fraction for a storage class (CDIConfig's, runtime/cdi-settings.ts). */
export type OverheadOf = number | ((storageClassName: string | undefined) => number);

/** The claim spec: spec.pvc as given, or spec.storage with Ferry's defaults and the size grown. */
export function claimSpec(spec: DataVolumeSpec, filesystemOverhead: OverheadOf): V1PersistentVolumeClaimSpec {
  if (spec.pvc) return { ...spec.pvc };
  if (spec.storage) return storageClaimSpec(spec.storage, typeof filesystemOverhead === 'number' ? filesystemOverhead : filesystemOverhead(spec.storage.storageClassName));
  throw new FerryError(ErrorCode.InvalidSpec, 'exactly one of spec.pvc or spec.storage is required');
}

/** The PVC a DataVolume creates. Throws INVALID_SPEC when the spec cannot be rendered. */
export function buildClaim(dv: DataVolume, filesystemOverhead: OverheadOf): V1PersistentVolumeClaim {
  const { spec, metadata } = dv;
  const passed = Object.fromEntries(Object.entries(metadata.annotations ?? {}).filter(([k]) => !NOT_PASSED_TO_PVC.includes(k)));
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: {
      name: metadata.name ?? '',
      namespace: metadata.namespace ?? '',
      labels: { ...(metadata.labels ?? {}), app: LabelValue.App },
      annotations: {
        ...passed,
        ...routeOf(spec).annotations(spec),
        [Annotation.ContentType]: spec.contentType ?? 'kubevirt',
        [Annotation.PreallocationRequested]: String(spec.preallocation === true),
        [Annotation.PodRestarts]: '0',
        [DvAnnotation.CreatedForDataVolume]: metadata.uid ?? '',
        ...(spec.priorityClassName ? { [DvAnnotation.PodPriorityClassName]: spec.priorityClassName } : {}),
      },
      ownerReferences: [ownerReference(dv)],
    },
    spec: claimSpec(spec, filesystemOverhead),
  };
}
