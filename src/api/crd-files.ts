/** The CRD manifests as files: path (relative to the repository) → YAML text. */

import { dumpYaml } from '@kubernetes/client-node';
import { VM_CRD, VMI_CRD } from './crds.js';
import { DATAVOLUME_CRD } from './datavolume-crd.js';
import { CDICONFIG_CRD } from './cdiconfig-crd.js';
import { DATASOURCE_CRD } from './datasource-crd.js';

const header = (source: string): string => `# Generated from ${source} by scripts/gen-crds.ts; do not edit.\n`;

/** Every CRD Ferry installs, with the file that describes it. */
export const CRDS: ReadonlyArray<{ readonly crd: Record<string, unknown>; readonly source: string }> = [
  { crd: VMI_CRD, source: 'src/api/crds.ts' },
  { crd: VM_CRD, source: 'src/api/crds.ts' },
  { crd: DATAVOLUME_CRD, source: 'src/api/datavolume-crd.ts' },
  { crd: CDICONFIG_CRD, source: 'src/api/cdiconfig-crd.ts' },
  { crd: DATASOURCE_CRD, source: 'src/api/datasource-crd.ts' },
];

/** manifests/crds/<group>_<plural>.yaml, as controller-gen names them. */
export function crdPath(crd: Record<string, unknown>): string {
  const spec = crd.spec as { group: string; names: { plural: string } };
  return `manifests/crds/${spec.group}_${spec.names.plural}.yaml`;
}

/**
 * client-node's YAML writer goes through its typed models, which name the schema extensions
 * `x_kubernetes_…` and drop keys they do not know: hand it the model's names, it writes
 * `x-kubernetes-…`. Below `items` and `additionalProperties` (untyped in its models) the JSON
 * names stay as they are.
 */
function modelNames(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(modelNames);
  if (value === null || typeof value !== 'object') return value;
  return Object.fromEntries(
    Object.entries(value as Record<string, unknown>).map(([k, v]) => [
      k.startsWith('x-kubernetes-') ? k.replace(/-/g, '_') : k,
      k === 'items' || k === 'additionalProperties' ? v : modelNames(v),
    ]),
  );
}

export function crdFiles(): Record<string, string> {
  return Object.fromEntries(CRDS.map(({ crd, source }) => [crdPath(crd), header(source) + dumpYaml(modelNames(crd))]));
}
