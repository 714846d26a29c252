/**
 * DataSource (`cdi.kubevirt.io/v1beta1`, namespaced), as CDI's: a name in a golden namespace for
 * the volume users clone from, so the golden PVC can be replaced without every DataVolume being
 * rewritten. Ferry reads `spec.source.pvc {namespace, name}`; `spec.source.snapshot` is refused
 * by the CRD (no snapshot clones). The `Ready` condition in status is set by the DataSource
 * controller (controller/datasource/); Ferry's clone webhook resolves a DataSource from its spec.
 */

import type { KubernetesObject } from '@kubernetes/client-node';

export const DATASOURCE_GROUP = 'cdi.kubevirt.io';
export const DATASOURCE_VERSION = 'v1beta1';
export const DATASOURCE_KIND = 'DataSource';
export const DATASOURCE_PLURAL = 'datasources';

export interface DataSourceSpec {
  readonly source: { readonly pvc?: { readonly namespace?: string; readonly name: string } };
}

export interface DataSource extends KubernetesObject {
  readonly spec: DataSourceSpec;
  readonly status?: {
    readonly conditions?: ReadonlyArray<{ readonly type: string; readonly status: string; readonly reason?: string; readonly message?: string }>;
    /** CDI's mirror of spec.source (written by the DataSource controller). */
    readonly source?: DataSourceSpec['source'];
  };
}

/** `spec.source.pvc` of a DataSource: the PVC it names, its namespace defaulting to the DataSource's. */
export function dataSourcePvc(ds: DataSource): { namespace: string; name: string } | undefined {
  const pvc = ds.spec?.source?.pvc;
  const namespace = pvc?.namespace || ds.metadata?.namespace;
  if (pvc === undefined || typeof pvc.name !== 'string' || pvc.name === '' || !namespace) return undefined;
  return { namespace, name: pvc.name };
}
