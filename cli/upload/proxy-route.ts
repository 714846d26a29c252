/**
 * How `ferry image-upload` reaches the upload proxy, the pure part (issue #14, "Beyond CDI"): a
 * URL (the flag's, or CDIConfig's when it answers), or a port-forward through the Kubernetes API
 * to a ready pod behind the proxy's Service, chosen from the Service, its EndpointSlices and the
 * pods as the apiserver reports them. No clients, no sockets: cli/upload/reach-proxy.ts does the
 * calls and cli/upload/port-forward.ts the forwarding.
 */

import { rootCertificates } from 'node:tls';
import { ErrorCode, FerryError } from '../../src/errors.js';
import { UPLOAD_PROXY_TLS_NAME, UploadProxyCaBundle, UploadProxyService } from '../../src/contract/upload-api.js';
import { portForwardHint } from './plan.js';

export type ProxyRoute =
  | { readonly via: 'url'; readonly url: string }
  /** `why`: the reason a URL was not used, for the line that says a port-forward is used instead. */
  | { readonly via: 'port-forward'; readonly why: string };

export interface RouteFacts {
  /** --uploadproxy-url, when given: used as it is (an unreachable one fails with the hint). */
  readonly flagUrl?: string | undefined;
  /** CDIConfig's URL (override first), when it names one. */
  readonly configUrl?: string | undefined;
  /** Why the URL to use took no TCP connection (undefined: it did, or it was not probed). */
  readonly unreachable?: string | undefined;
}

/**
 * Pure: the route from what is known. The flag is the user's word: used, and an unreachable one is
 * an error with the hint (virtctl's behaviour, kept). Without it, CDIConfig's URL is used if it
 * answers; no URL, or one that does not answer, means a port-forward.
 */
export function proxyRoute(facts: RouteFacts): ProxyRoute {
  const { flagUrl, configUrl, unreachable } = facts;
  if (flagUrl !== undefined) {
    if (unreachable !== undefined) throw new FerryError(ErrorCode.SourceUnavailable, `cannot reach the upload proxy at ${flagUrl} (${unreachable});\n${portForwardHint()}`, { retryable: false });
    return { via: 'url', url: flagUrl };
  }
  if (configUrl === undefined) return { via: 'port-forward', why: 'no upload proxy URL is configured (CDIConfig config)' };
  if (unreachable !== undefined) return { via: 'port-forward', why: `the configured upload proxy ${configUrl} does not answer (${unreachable})` };
  return { via: 'url', url: configUrl };
}

interface ServicePortLike {
  readonly name?: string;
  readonly port: number;
  readonly targetPort?: number | string;
  readonly protocol?: string;
}
export interface ServiceLike {
  readonly spec?: { readonly selector?: Readonly<Record<string, string>>; readonly ports?: readonly ServicePortLike[] };
}
export interface EndpointSliceLike {
  readonly addressType?: string;
  readonly ports?: readonly { readonly name?: string; readonly port?: number; readonly protocol?: string }[] | null;
  readonly endpoints?: readonly {
    readonly conditions?: { readonly ready?: boolean; readonly terminating?: boolean };
    readonly targetRef?: { readonly kind?: string; readonly name?: string; readonly namespace?: string };
  }[];
}
export interface PodLike {
  readonly metadata?: { readonly name?: string; readonly labels?: Readonly<Record<string, string>>; readonly deletionTimestamp?: unknown };
  readonly spec?: { readonly containers?: readonly { readonly ports?: readonly { readonly name?: string; readonly containerPort: number; readonly protocol?: string }[] }[] };
  readonly status?: { readonly phase?: string; readonly conditions?: readonly { readonly type: string; readonly status: string }[] };
}

/** What the port-forward connects to: a pod of the proxy's namespace and the pod's port. */
export interface ForwardTarget {
  readonly namespace: string;
  readonly pod: string;
  readonly port: number;
}

const where = `Service ${UploadProxyService.namespace}/${UploadProxyService.name}`;
const impossible = (why: string, code: ErrorCode = ErrorCode.SourceUnavailable): never => {
  throw new FerryError(code, `cannot port-forward to the upload proxy: ${why};\n${portForwardHint()}`, { retryable: false, details: { route: 'port-forward' } });
};

const podReady = (p: PodLike): boolean =>
  p.metadata?.deletionTimestamp == null && p.status?.phase === 'Running' && (p.status.conditions ?? []).some((c) => c.type === 'Ready' && c.status === 'True');

const selects = (selector: Readonly<Record<string, string>>, p: PodLike): boolean =>
  Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => p.metadata?.labels?.[k] === v);

/** The container port a Service's targetPort means on one pod (a name is looked up in its containers). */
function podPort(servicePort: ServicePortLike, pod: PodLike | undefined): number | undefined {
  const target = servicePort.targetPort ?? servicePort.port;
  if (typeof target === 'number') return target;
  if (/^\d+$/.test(target)) return Number(target);
  const protocol = servicePort.protocol ?? 'TCP';
  for (const c of pod?.spec?.containers ?? []) {
    const found = c.ports?.find((p) => p.name === target && (p.protocol ?? 'TCP') === protocol);
    if (found) return found.containerPort;
  }
  return undefined;
}

/**
 * Pure: the pod and port to forward to. The Service's port (the one numbered
 * UploadProxyService.port, else its first TCP port) says which port; the EndpointSlices say which
 * pods serve it ready and on which pod port (kube-proxy's view: what the ClusterIP would reach).
 * Where the slices name none (not readable, or not written yet), the Service's selector and
 * targetPort are applied to the pods. A pod the pod list shows not ready is skipped either way.
 * Among those left, the first by name: the same answer for the same cluster. `pods`/`slices`
 * undefined: not readable with this kubeconfig.
 */
export function forwardTarget(service: ServiceLike | undefined, slices: readonly EndpointSliceLike[] | undefined, pods: readonly PodLike[] | undefined): ForwardTarget {
  if (service === undefined) return impossible(`${where} not found (is Ferry installed?)`, ErrorCode.SourceNotFound);
  const ports = (service.spec?.ports ?? []).filter((p) => (p.protocol ?? 'TCP') === 'TCP');
  const servicePort = ports.find((p) => p.port === UploadProxyService.port) ?? ports[0];
  if (servicePort === undefined) return impossible(`${where} has no TCP port`);
  if (slices === undefined && pods === undefined) return impossible(`this kubeconfig may read neither the EndpointSlices nor the pods of ${where}`, ErrorCode.Unauthorized);
  const byName = new Map((pods ?? []).map((p) => [p.metadata?.name ?? '', p]));
  const notReadyInList = (name: string): boolean => pods !== undefined && (byName.get(name) === undefined || !podReady(byName.get(name)!));
  const candidates: { pod: string; port: number }[] = [];
  for (const slice of slices ?? []) {
    if (slice.addressType !== undefined && slice.addressType !== 'IPv4' && slice.addressType !== 'IPv6') continue;
    const port = (slice.ports ?? []).find((p) => (p.name ?? '') === (servicePort.name ?? '') && (p.protocol ?? 'TCP') === 'TCP')?.port;
    if (port === undefined) continue;
    for (const e of slice.endpoints ?? []) {
      const ref = e.targetRef;
      // ready unset means ready (discovery.k8s.io/v1); a terminating endpoint is not.
      if (ref?.kind !== 'Pod' || !ref.name || e.conditions?.ready === false || e.conditions?.terminating === true) continue;
      if (ref.namespace !== undefined && ref.namespace !== UploadProxyService.namespace) continue;
      if (notReadyInList(ref.name)) continue;
      candidates.push({ pod: ref.name, port });
    }
  }
  if (candidates.length === 0) {
    const selector = service.spec?.selector ?? {};
    for (const p of pods ?? []) {
      const port = podPort(servicePort, p);
      if (selects(selector, p) && podReady(p) && port !== undefined) candidates.push({ pod: p.metadata?.name ?? '', port });
    }
  }
  const chosen = candidates.filter((c) => c.pod !== '').sort((a, b) => (a.pod < b.pod ? -1 : a.pod > b.pod ? 1 : a.port - b.port))[0];
  if (chosen === undefined) return impossible(`no ready pod behind ${where}`);
  return { namespace: UploadProxyService.namespace, ...chosen };
}

/** Pure: the line (stderr) that says the upload goes through a port-forward, and why. */
export function portForwardNotice(why: string, target: ForwardTarget, localUrl: string): string {
  return `${why}: uploading through a port-forward over the Kubernetes API to pod ${target.namespace}/${target.pod} port ${target.port} (local ${localUrl})`;
}

/**
 * Pure: what the proxy's certificate is checked against. Ferry's bundle joins the user's trust:
 * SSL_CERT_FILE's bundle when given (it replaces the system's roots, as for Go's virtctl), else
 * the system's roots (a configured URL may be an Ingress with a public certificate). Undefined:
 * nothing to add, the caller's default. Through a forward nothing but Ferry's CA or the user's
 * bundle can sign the proxy's certificate, so neither is an error there.
 */
export function proxyTrust(route: 'url' | 'port-forward', bundle: Buffer | undefined, userCa: string | Buffer | undefined, roots: readonly string[] = rootCertificates): (string | Buffer)[] | undefined {
  const user = userCa !== undefined ? [userCa] : [];
  if (route === 'port-forward') {
    const ca = [...(bundle ? [bundle] : []), ...user];
    if (ca.length > 0) return ca;
    throw new FerryError(
      ErrorCode.TlsError,
      `the upload proxy's certificate is signed by Ferry's own CA (ConfigMap ${UploadProxyCaBundle.namespace}/${UploadProxyCaBundle.configMap}, key ${UploadProxyCaBundle.configMapKey}), which this kubeconfig could not read, and no SSL_CERT_FILE was given; ` +
        `pass that bundle with SSL_CERT_FILE to verify the proxy as ${UPLOAD_PROXY_TLS_NAME}, or --insecure (the bytes still travel inside the apiserver's authenticated TLS connection; only the proxy's identity is not checked)`,
      { retryable: false, details: { route: 'port-forward' } },
    );
  }
  if (bundle === undefined) return undefined;
  return [bundle, ...(userCa !== undefined ? user : roots)];
}
