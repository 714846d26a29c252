/** The CRD manifests as files: path (relative to the repository) → YAML text. */

import { dumpYaml } from '@kubernetes/client-node';
import { VM_CRD, VMI_CRD } from './crds.js';

const HEADER = '# Generated from src/api/crds.ts by scripts/gen-crds.ts; do not edit.\n';

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
  return {
    'manifests/crds/kubevirt.io_virtualmachineinstances.yaml': HEADER + dumpYaml(modelNames(VMI_CRD)),
    'manifests/crds/kubevirt.io_virtualmachines.yaml': HEADER + dumpYaml(modelNames(VM_CRD)),
  };
}
