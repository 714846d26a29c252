/**
 * `ferry image-upload`'s way to the upload proxy, the calls: the URL given or configured (probed
 * with one TCP connect), else a port-forward through the Kubernetes API to a ready pod of the
 * proxy's Service. The decisions are proxy-route.ts's; the forwarding is port-forward.ts's.
 *
 * The proxy's certificate chains to a CA of Ferry's own, whose bundle controller/certs publishes in
 * a ConfigMap every authenticated user may read (UploadProxyCaBundle). Without --insecure it is
 * read (the ConfigMap, else the CA's Secret for an admin) and trusted beside the user's own trust
 * (SSL_CERT_FILE, else the system's roots) on either route. Through the forward the proxy is
 * 127.0.0.1, but its certificate names its Service: it is checked for UPLOAD_PROXY_TLS_NAME. With
 * no bundle readable, no SSL_CERT_FILE and no --insecure, a forward stops and says so: it never
 * skips the check on its own (docs/adr/0016).
 */

import { CoreV1Api, CustomObjectsApi, DiscoveryV1Api, type KubeConfig } from '@kubernetes/client-node';
import { FerryError } from '../../src/errors.js';
import { CdiConfigApi, UPLOAD_PROXY_TLS_NAME, UploadProxyCaBundle, UploadProxyService } from '../../src/contract/upload-api.js';
import { apiError, orUndefined } from './api-errors.js';
import { PROBE_TIMEOUT_MS, proxyUnreachable } from './client.js';
import { portForwardHint, proxyUrlFromConfig } from './plan.js';
import { openPortForward } from './port-forward.js';
import { type EndpointSliceLike, forwardTarget, type PodLike, portForwardNotice, proxyRoute, proxyTrust, type ServiceLike } from './proxy-route.js';

/** How long a configured (not given) URL may take to accept a connection before the port-forward is used. */
export const CONFIGURED_PROBE_TIMEOUT_MS = 3000;

export interface ProxyAccess {
  readonly url: string;
  /** The name to check the proxy's certificate for, when it is not the URL's host. */
  readonly servername?: string;
  /** The CA bundle to check it with (else the caller's). */
  readonly ca?: readonly (string | Buffer)[];
  /** Set when the route is a port-forward: its pod. */
  readonly forwardedTo?: string;
  /** Closes what the route opened (the forward's listener and streams). */
  close(): Promise<void>;
}

export interface ReachDeps {
  readonly kc: KubeConfig;
  /** The stderr line that says a port-forward is used, and a stream's errors. */
  readonly warn: (line: string) => void;
  /** The user's extra trust (SSL_CERT_FILE). */
  readonly ca?: string | Buffer;
}

const forbidden = (err: unknown): boolean => [401, 403].includes((err as { code?: number }).code ?? 0);

/** A read that may be refused: undefined when this kubeconfig may not do it. */
async function ifAllowed<T>(read: Promise<T>): Promise<T | undefined> {
  try {
    return await read;
  } catch (err) {
    if (forbidden(err)) return undefined;
    throw err;
  }
}

const withHint = (err: unknown): FerryError => {
  const e = err instanceof FerryError ? err : apiError('port-forward', err);
  if (e.message.includes(portForwardHint())) return e;
  return new FerryError(e.code, `cannot port-forward to the upload proxy: ${e.message};\n${portForwardHint()}`, { cause: e, retryable: false, details: { route: 'port-forward' } });
};

/** The proxy CA's bundle as this kubeconfig may read it: the ConfigMap (any user), else the Secret (an admin; an install from before the ConfigMap). */
async function proxyCaBundle(core: CoreV1Api): Promise<Buffer | undefined> {
  const { namespace } = UploadProxyCaBundle;
  const read = <T>(call: Promise<T>): Promise<T | undefined> => ifAllowed(orUndefined(call)).catch(() => undefined);
  const configMap = await read(core.readNamespacedConfigMap({ name: UploadProxyCaBundle.configMap, namespace }));
  const published = configMap?.data?.[UploadProxyCaBundle.configMapKey];
  if (published) return Buffer.from(published);
  const secret = await read(core.readNamespacedSecret({ name: UploadProxyCaBundle.secret, namespace }));
  const bundle = secret?.data?.[UploadProxyCaBundle.key];
  return bundle ? Buffer.from(bundle, 'base64') : undefined;
}

export async function reachProxy(flagUrl: string | undefined, insecure: boolean, deps: ReachDeps): Promise<ProxyAccess> {
  const none = async (): Promise<void> => undefined;
  const core = deps.kc.makeApiClient(CoreV1Api);
  const urlAccess = async (url: string): Promise<ProxyAccess> => {
    const ca = insecure ? undefined : proxyTrust('url', await proxyCaBundle(core), deps.ca);
    return { url, ...(ca !== undefined ? { ca } : {}), close: none };
  };
  if (flagUrl !== undefined) {
    const route = proxyRoute({ flagUrl, unreachable: await proxyUnreachable(flagUrl, PROBE_TIMEOUT_MS) });
    return urlAccess(route.via === 'url' ? route.url : flagUrl);
  }
  const custom = deps.kc.makeApiClient(CustomObjectsApi);
  const config = await orUndefined(custom.getClusterCustomObject({ group: CdiConfigApi.group, version: CdiConfigApi.version, plural: CdiConfigApi.plural, name: CdiConfigApi.name })).catch((e: unknown) => Promise.reject(apiError('get CDIConfig config', e)));
  const configUrl = proxyUrlFromConfig(config as Parameters<typeof proxyUrlFromConfig>[0]);
  const unreachable = configUrl !== undefined ? await proxyUnreachable(configUrl, CONFIGURED_PROBE_TIMEOUT_MS) : undefined;
  const route = proxyRoute({ configUrl, unreachable });
  if (route.via === 'url') return urlAccess(route.url);

  const { namespace, name } = UploadProxyService;
  const target = await (async () => {
    const service = (await orUndefined(core.readNamespacedService({ name, namespace }))) as ServiceLike | undefined;
    const selector = Object.entries(service?.spec?.selector ?? {}).map(([k, v]) => `${k}=${v}`).join(',');
    const slices = service === undefined ? [] : await ifAllowed(deps.kc.makeApiClient(DiscoveryV1Api).listNamespacedEndpointSlice({ namespace, labelSelector: `kubernetes.io/service-name=${name}` }).then((l) => l.items as EndpointSliceLike[]));
    const listed = service === undefined || selector === '' ? [] : await ifAllowed(core.listNamespacedPod({ namespace, labelSelector: selector }).then((l) => l.items as PodLike[]));
    // A user who may list neither (every user, with rbac-upload-users.yaml) may read the StatefulSet's one pod by name.
    const pods = listed ?? (slices === undefined ? await ifAllowed(orUndefined(core.readNamespacedPod({ name: UploadProxyService.pod, namespace })).then((p) => (p ? [p as PodLike] : []))) : undefined);
    return forwardTarget(service, slices, pods);
  })().catch((e: unknown) => Promise.reject(forbidden(e) ? withHint(apiError(`read Service ${namespace}/${name}`, e)) : e));

  const ca = insecure ? undefined : proxyTrust('port-forward', await proxyCaBundle(core), deps.ca);
  const forward = await openPortForward(deps.kc, target, (message) => deps.warn(`port-forward: ${message}`)).catch((e: unknown) => Promise.reject(withHint(e)));
  deps.warn(portForwardNotice(route.why, target, forward.url));
  return {
    url: forward.url,
    servername: UPLOAD_PROXY_TLS_NAME,
    ...(ca !== undefined ? { ca } : {}),
    forwardedTo: `${target.namespace}/${target.pod}`,
    close: () => forward.close(),
  };
}
