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
