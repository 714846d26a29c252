/**
 * Installing Ferry's CRDs with client-node: through its YAML loader, whose typed models keep the
 * schema extensions (a plain object's `x-kubernetes-…` keys would be dropped by the typed client).
 */

import { ApiextensionsV1Api, type KubeConfig, loadYaml, type V1CustomResourceDefinition } from '@kubernetes/client-node';
import { crdFiles } from '../../src/api/crd-files.js';
import { waitFor } from './kubelet.js';

/** A CRD manifest as client-node's typed model (its loader names the schema extensions x_kubernetes_…). */
export function typedCrd(text: string): V1CustomResourceDefinition {
  return loadYaml<V1CustomResourceDefinition>(text);
}

/** Creates every CRD in manifests/crds (kubevirt.io/v1 and cdi.kubevirt.io/v1beta1) and waits until all are Established. */
export async function installCrds(kc: KubeConfig): Promise<void> {
  const ext = kc.makeApiClient(ApiextensionsV1Api);
  const crds = Object.values(crdFiles()).map(typedCrd);
  for (const body of crds) await ext.createCustomResourceDefinition({ body });
  await waitFor('CRDs established', async () => {
    const all = await Promise.all(crds.map((c) => ext.readCustomResourceDefinition({ name: c.metadata?.name ?? '' })));
    return all.every((c) => c.status?.conditions?.some((x) => x.type === 'Established' && x.status === 'True')) ? true : undefined;
  });
}

/** The VM tests' name for installCrds. */
export const installVmCrds = installCrds;
