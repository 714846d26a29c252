/**
 * The proxy's view of an upload target through the Kubernetes API (the `targetStatus` seam of
 * proxy.ts): one GET of the PVC per question. Missing, not annotated
 * `cdi.kubevirt.io/storage.upload.target`, or already `storage.pod.phase: Succeeded` → the 503 rows
 * of cdi.md §3.1b; `storage.pod.ready: "true"` → ready; anything else → not ready (the proxy asks
 * again, for at most 10 s). Also where the server of a PVC is dialled: CDI's Service address, or
 * a template (another cluster domain, or a local test).
 */

import { Annotation, PodPhase, UploadAnnotation } from '../src/api/cdi.js';
import { ErrorCode, FerryError } from '../src/errors.js';
import { UPLOAD_SERVER_PORT, uploadServiceHost, uploadServiceName } from '../src/contract/upload-api.js';
import type { KubeGet } from './kube-get.js';
import type { ServerAddress, TargetStatus } from './proxy.js';

/** Pure: a PVC's annotations (or its absence) → what the proxy does with an upload to it. */
export function targetStatusOf(annotations: Readonly<Record<string, string>> | undefined): TargetStatus {
  if (annotations === undefined) return { kind: 'missing' };
  if (annotations[UploadAnnotation.Target] === undefined) return { kind: 'not-upload-target' };
  if (annotations[Annotation.PodPhase] === PodPhase.Succeeded) return { kind: 'succeeded' };
  return annotations[UploadAnnotation.PodReady] === 'true' ? { kind: 'ready' } : { kind: 'not-ready' };
}

export function kubeTargetStatus(get: KubeGet): (namespace: string, name: string) => Promise<TargetStatus> {
  return async (namespace, name) => {
    const answer = await get(`/api/v1/namespaces/${encodeURIComponent(namespace)}/persistentvolumeclaims/${encodeURIComponent(name)}`);
    if (answer.status === 404) return targetStatusOf(undefined);
    if (answer.status !== 200) throw new FerryError(answer.status === 401 || answer.status === 403 ? ErrorCode.Unauthorized : ErrorCode.SourceUnavailable, `cannot read PVC ${namespace}/${name} (HTTP ${answer.status}): ${answer.body.slice(0, 300)}`, { retryable: answer.status >= 500 || answer.status === 429 });
    const pvc = JSON.parse(answer.body) as { metadata?: { annotations?: Record<string, string> } };
    return targetStatusOf(pvc.metadata?.annotations ?? {});
  };
}

/** CDI's address, `{service}.{namespace}.svc:8443`: the default template. */
export const DEFAULT_SERVER_ADDRESS = `{service}.{namespace}.svc:${UPLOAD_SERVER_PORT}`;

/**
 * Pure: a resolver from a template with `{service}` and `{namespace}` (port optional, default
 * 8443). The certificate is always checked for CDI's `cdi-upload-<pvc>.<ns>.svc`, whatever is dialled.
 */
export function addressResolver(template: string): (namespace: string, name: string) => ServerAddress {
  const match = /^(\[[^\]]+\]|[^:]+)(?::(\d{1,5}))?$/.exec(template);
  const port = match?.[2] === undefined ? UPLOAD_SERVER_PORT : Number(match[2]);
  if (!match || !match[1] || port < 1 || port > 65535) throw new FerryError(ErrorCode.InvalidSpec, `the upload server address template must be host[:port] with {service} and {namespace}, got "${template}"`);
  const hostTemplate = match[1].replace(/^\[|\]$/g, '');
  return (namespace, name) => ({
    host: hostTemplate.replaceAll('{service}', uploadServiceName(name)).replaceAll('{namespace}', namespace),
    port,
    servername: uploadServiceHost(namespace, name),
  });
}
