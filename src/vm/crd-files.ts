/** The CRD manifests as files: path (relative to the repository) → YAML text. */

import { dumpYaml } from '@kubernetes/client-node';
import { VM_CRD, VMI_CRD } from './crds.js';

const HEADER = '# Generated from src/vm/crds.ts by scripts/gen-crds.ts; do not edit.\n';

export function crdFiles(): Record<string, string> {
  return {
    'manifests/crds/kubevirt.io_virtualmachineinstances.yaml': HEADER + dumpYaml(VMI_CRD),
    'manifests/crds/kubevirt.io_virtualmachines.yaml': HEADER + dumpYaml(VM_CRD),
  };
}
