/** Whether the apiserver serves a custom resource yet (its CRD installed): a one-item list, NotFound is no. */

import type { CustomObjectsApi } from '@kubernetes/client-node';
import { kubeGet } from './errors.js';

export async function crdServed(custom: CustomObjectsApi, group: string, version: string, plural: string): Promise<boolean> {
  const list = await kubeGet({ verb: 'list', resource: `${plural}.${group}` }, () => custom.listClusterCustomObject({ group, version, plural, limit: 1 }));
  return list !== undefined;
}
