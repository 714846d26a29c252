/**
 * Pure: a DataSource's `Ready` condition from what its `spec.source.pvc` names, by CDI's rule
 * (datasource-controller.go `handlePvcSource`) tightened where CDI is loose:
 *  - a DataVolume of the PVC's name exists (CDI's check): Ready only once it has `Succeeded`, else
 *    False with the DataVolume's phase as reason ("Import DataVolume phase ImportInProgress");
 *  - no DataVolume and no PVC: False, reason `NotFound`, "PVC not found";
 *  - a bare PVC: CDI calls it Ready as soon as it exists; Ferry asks that it be `Bound` (reason: the
 *    PVC's phase otherwise), and that a PVC annotated as an import, upload or clone target has its
 *    worker pod `Succeeded` (reason: the pod phase otherwise), so a half-written disk is never
 *    offered for cloning; a PVC being deleted (held by its pvc-protection finalizer) is `Terminating`.
 * Ready True has CDI's reason `Ready` and message. Times move as CDI's updateConditionState moves
 * them; an unchanged condition plans no write.
 *
 * Also as CDI's: `status.source` mirrors `spec.source` (what the Ready condition was judged for),
 * and the PVC's default instancetype and preference labels (`instancetype.kubevirt.io/default-*`)
 * are copied onto the DataSource, so a VM that names the DataSource can infer its instancetype
 * and preference from it. A label the PVC carries wins over the DataSource's; one it does not carry
 * is left as the DataSource has it.
 */

import type { V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { Annotation, PodPhase, UploadAnnotation } from '../../src/api/cdi.js';
import { type DataSource, dataSourcePvc, type DataSourceSpec } from '../../src/api/datasource.js';
import { type DataVolume, type DataVolumeCondition, DvConditionType, DvPhase, DvReason } from '../../src/api/datavolume.js';
import { CLONE_REQUEST_ANNOTATION } from '../../src/contract/clone-token.js';
import { cond, type ConditionWanted, withTimes } from '../datavolume/status.js';

/** The reasons of the Ready condition (CDI's words); otherwise the reason is a DataVolume, PVC or pod phase. */
export const DataSourceReason = { Ready: 'Ready', NotFound: DvReason.NotFound, Terminating: 'Terminating' } as const;

export const READY_MESSAGE = 'DataSource is ready to be consumed';

export interface DataSourceObserved {
  readonly dataSource: DataSource;
  /** The PVC `spec.source.pvc` names, if it exists. */
  readonly pvc?: V1PersistentVolumeClaim;
  /** The DataVolume of that PVC's name in its namespace, if one exists. */
  readonly dataVolume?: DataVolume;
  readonly now: number;
}

export interface DataSourceStatus {
  readonly conditions: readonly DataVolumeCondition[];
  readonly source: DataSourceSpec['source'];
}

/** KubeVirt's labels naming a volume's default instancetype and preference (and their kinds), which CDI copies from the PVC. */
export const DEFAULT_INSTANCETYPE_LABELS = [
  'instancetype.kubevirt.io/default-instancetype',
  'instancetype.kubevirt.io/default-instancetype-kind',
  'instancetype.kubevirt.io/default-preference',
  'instancetype.kubevirt.io/default-preference-kind',
] as const;

/** The annotations that make a PVC the target of a worker pod (import, upload, clone). */
const POPULATION_TARGET = [Annotation.Endpoint, Annotation.LegacyEndpoint, Annotation.Source, UploadAnnotation.Target, CLONE_REQUEST_ANNOTATION] as const;

/** Pure: the Ready condition wanted, before its times are set. */
export function readyCondition(o: Omit<DataSourceObserved, 'now'>): ConditionWanted {
  const ref = dataSourcePvc(o.dataSource);
  const notReady = (reason: string, message: string): ConditionWanted => cond(DvConditionType.Ready, 'False', reason, message);
  if (ref === undefined) return notReady(DataSourceReason.NotFound, 'spec.source.pvc names no PVC');
  if (o.dataVolume !== undefined) {
    const phase = o.dataVolume.status?.phase || DvPhase.Pending;
    if (phase !== DvPhase.Succeeded) return notReady(phase, `Import DataVolume phase ${phase}`);
  } else if (o.pvc === undefined) {
    return notReady(DataSourceReason.NotFound, 'PVC not found');
  }
  if (o.pvc === undefined) return notReady(DataSourceReason.NotFound, 'PVC not found');
  if (o.pvc.metadata?.deletionTimestamp) return notReady(DataSourceReason.Terminating, `PVC ${ref.name} is being deleted`);
  const pvcPhase = o.pvc.status?.phase ?? 'Pending';
  if (pvcPhase !== 'Bound') return notReady(pvcPhase, `PVC ${ref.name} phase ${pvcPhase}`);
  const annotations = o.pvc.metadata?.annotations ?? {};
  if (o.dataVolume === undefined && POPULATION_TARGET.some((key) => key in annotations)) {
    const podPhase = annotations[Annotation.PodPhase] || PodPhase.Pending;
    if (podPhase !== PodPhase.Succeeded) return notReady(podPhase, `PVC ${ref.name} is being populated (pod phase ${podPhase})`);
  }
  return cond(DvConditionType.Ready, 'True', DataSourceReason.Ready, READY_MESSAGE);
}

/** Pure: JSON with object keys sorted (the apiserver hands a custom object's keys back in its own order). */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') return `{${Object.keys(value).sort().map((k) => `${JSON.stringify(k)}:${canonical((value as Record<string, unknown>)[k])}`).join(',')}}`;
  return JSON.stringify(value) ?? 'null';
}

/** Pure: the status to write (merge-patch of `status`), or undefined when it is already so. */
export function planDataSource(o: DataSourceObserved): DataSourceStatus | undefined {
  const current = o.dataSource.status?.conditions as readonly DataVolumeCondition[] | undefined;
  const conditions = withTimes(current, [readyCondition(o)], new Date(o.now).toISOString());
  const source = o.dataSource.spec?.source ?? {};
  // Field by field: the apiserver hands a custom object's keys back in its own order.
  const fields = ['type', 'status', 'reason', 'message', 'lastTransitionTime', 'lastHeartbeatTime'] as const;
  const unchanged = current?.length === 1 && fields.every((f) => current[0]![f] === conditions[0]![f]) && canonical(o.dataSource.status?.source) === canonical(source);
  return unchanged ? undefined : { conditions, source };
}

/** Pure: the default instancetype/preference labels to set on the DataSource from its PVC (merge-patch of labels), or undefined. */
export function planDataSourceLabels(o: Pick<DataSourceObserved, 'dataSource' | 'pvc'>): Record<string, string> | undefined {
  const have = o.dataSource.metadata?.labels ?? {};
  const from = o.pvc?.metadata?.labels ?? {};
  const want = Object.fromEntries(DEFAULT_INSTANCETYPE_LABELS.filter((k) => from[k] !== undefined && from[k] !== have[k]).map((k) => [k, from[k]!]));
  return Object.keys(want).length > 0 ? want : undefined;
}
