/**
 * `ferry image-upload`'s way to the upload proxy, the calls: the URL given or configured (probed
 * with one TCP connect), else a port-forward through the Kubernetes API to a ready pod of the
 * proxy's Service. The decisions are proxy-route.ts's; the forwarding is port-forward.ts's.
 *
 * Through the forward the proxy is 127.0.0.1, but its certificate names its Service: it is checked
 * for UPLOAD_PROXY_TLS_NAME against the CA controller/certs keeps for it (read with the user's
 * kubeconfig), or the bundle the user gave (SSL_CERT_FILE). With neither, and no --insecure, the
 * command stops and says so: it never skips the check on its own (docs/adr/0016).
 */

import { CoreV1Api, CustomObjectsApi, DiscoveryV1Api, type KubeConfig } from '@kubernetes/client-node';
import { ErrorCode, FerryError } from '../../src/errors.js';
import { CdiConfigApi, UPLOAD_PROXY_TLS_NAME, UploadProxyCaBundle, UploadProxyService } from '../../src/contract/upload-api.js';
import { apiError, orUndefined } from './api-errors.js';
import { PROBE_TIMEOUT_MS, proxyUnreachable } from './client.js';
import { portForwardHint, proxyUrlFromConfig } from './plan.js';
import { openPortForward } from './port-forward.js';
import { type EndpointSliceLike, forwardTarget, type PodLike, portForwardNotice, proxyRoute, type ServiceLike } from './proxy-route.js';

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

export async function reachProxy(flagUrl: string | undefined, insecure: boolean, deps: ReachDeps): Promise<ProxyAccess> {
  const none = async (): Promise<void> => undefined;
  if (flagUrl !== undefined) {
    const route = proxyRoute({ flagUrl, unreachable: await proxyUnreachable(flagUrl, PROBE_TIMEOUT_MS) });
    return { url: route.via === 'url' ? route.url : flagUrl, close: none };
  }
  const custom = deps.kc.makeApiClient(CustomObjectsApi);
  const config = await orUndefined(custom.getClusterCustomObject({ group: CdiConfigApi.group, version: CdiConfigApi.version, plural: CdiConfigApi.plural, name: CdiConfigApi.name })).catch((e: unknown) => Promise.reject(apiError('get CDIConfig config', e)));
  const configUrl = proxyUrlFromConfig(config as Parameters<typeof proxyUrlFromConfig>[0]);
  const unreachable = configUrl !== undefined ? await proxyUnreachable(configUrl, CONFIGURED_PROBE_TIMEOUT_MS) : undefined;
  const route = proxyRoute({ configUrl, unreachable });
  if (route.via === 'url') return { url: route.url, close: none };

  const { namespace, name } = UploadProxyService;
  const core = deps.kc.makeApiClient(CoreV1Api);
  const target = await (async () => {
    const service = (await orUndefined(core.readNamespacedService({ name, namespace }))) as ServiceLike | undefined;
    const selector = Object.entries(service?.spec?.selector ?? {}).map(([k, v]) => `${k}=${v}`).join(',');
    const slices = service === undefined ? [] : await ifAllowed(deps.kc.makeApiClient(DiscoveryV1Api).listNamespacedEndpointSlice({ namespace, labelSelector: `kubernetes.io/service-name=${name}` }).then((l) => l.items as EndpointSliceLike[]));
    const pods = service === undefined || selector === '' ? [] : await ifAllowed(core.listNamespacedPod({ namespace, labelSelector: selector }).then((l) => l.items as PodLike[]));
    return forwardTarget(service, slices, pods);
  })().catch((e: unknown) => Promise.reject(forbidden(e) ? withHint(apiError(`read Service ${namespace}/${name}`, e)) : e));

  let ca: (string | Buffer)[] | undefined;
  if (!insecure) {
    const secret = await ifAllowed(orUndefined(core.readNamespacedSecret({ name: UploadProxyCaBundle.secret, namespace: UploadProxyCaBundle.namespace }))).catch(() => undefined);
    const bundle = secret?.data?.[UploadProxyCaBundle.key];
    ca = [...(bundle ? [Buffer.from(bundle, 'base64')] : []), ...(deps.ca !== undefined ? [deps.ca] : [])];
    if (ca.length === 0) {
      throw new FerryError(
        ErrorCode.TlsError,
        `the upload proxy's certificate is signed by Ferry's own CA (Secret ${UploadProxyCaBundle.namespace}/${UploadProxyCaBundle.secret}, key ${UploadProxyCaBundle.key}), which this kubeconfig may not read, and no SSL_CERT_FILE was given; ` +
          `pass that bundle with SSL_CERT_FILE to verify the proxy as ${UPLOAD_PROXY_TLS_NAME}, or --insecure (the bytes still travel inside the apiserver's authenticated TLS connection; only the proxy's identity is not checked)`,
        { retryable: false, details: { route: 'port-forward' } },
      );
    }
  }
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

