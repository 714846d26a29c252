/**
 * Work-queue keys: `namespace/name`, optionally under a kind prefix (`vm:ns/name`) when one queue
 * serves several kinds of object.
 */

import type { KubernetesObject } from '@kubernetes/client-node';

/** `namespace/name` of an object; undefined without both. */
export function objectKey(obj: KubernetesObject): string | undefined {
  const { namespace, name } = obj.metadata ?? {};
  return namespace && name ? `${namespace}/${name}` : undefined;
}

/** `namespace/name` → [namespace, name]. */
export function splitKey(key: string): [string, string] {
  const slash = key.indexOf('/');
  return [key.slice(0, slash), key.slice(slash + 1)];
}

/** `kind:namespace/name`. */
export function kindKey(kind: string, namespace: string, name: string): string {
  return `${kind}:${namespace}/${name}`;
}

/** `kind:namespace/name` → { kind, namespace, name }. */
export function splitKindKey(key: string): { kind: string; namespace: string; name: string } {
  const colon = key.indexOf(':');
  const [namespace, name] = splitKey(key.slice(colon + 1));
  return { kind: key.slice(0, colon), namespace, name };
}

/** `namespace/name` of the PVC that owns `obj` (a worker pod or Service names its PVC as owner). */
export function ownerPvcKey(obj: KubernetesObject): string | undefined {
  const owner = obj.metadata?.ownerReferences?.find((o) => o.kind === 'PersistentVolumeClaim');
  return owner && obj.metadata?.namespace ? `${obj.metadata.namespace}/${owner.name}` : undefined;
}

/** `namespace/name` of the PVC a PVC serves: its controlling owner PVC (a scratch PVC), else itself. */
export function servedPvcKey(pvc: KubernetesObject): string | undefined {
  const owner = pvc.metadata?.ownerReferences?.find((o) => o.kind === 'PersistentVolumeClaim' && o.controller);
  const name = owner?.name ?? pvc.metadata?.name;
  return name && pvc.metadata?.namespace ? `${pvc.metadata.namespace}/${name}` : undefined;
}
