/**
 * One GET on the Kubernetes API, and nothing more: the proxy's whole use of the API
 * (target-status.ts). In a pod (as manifests/uploadproxy.yaml runs it) it is node:https with
 * the service account's token and CA, both read again for each request (the kubelet rotates the
 * token).
 * Elsewhere (`$KUBECONFIG` or ~/.kube/config: a developer's run, some tests) client-node's
 * KubeConfig supplies server and credentials, loaded only then: importing client-node at all
 * loads the whole package (its bundle chunk is 14 MiB) and made the idle proxy ~50 MiB bigger
 * (bench/README.md, "The proxy's memory").
 */

import { readFileSync } from 'node:fs';
import { request, type RequestOptions } from 'node:https';
import { join } from 'node:path';
import { ErrorCode, FerryError } from '../src/errors.js';

export interface KubeAnswer {
  readonly status: number;
  readonly body: string;
}

/** GET `path` (e.g. `/api/v1/namespaces/ns/persistentvolumeclaims/x`): its status and body. */
export type KubeGet = (path: string) => Promise<KubeAnswer>;

/** Where the API is and how to authenticate to it, asked again for each request. */
export interface KubeAccess {
  readonly server: string;
  readonly options: () => Promise<RequestOptions>;
}

/** Where the kubelet mounts a pod's service account token and the cluster's CA. */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** Pure: the API server's URL in a pod, from the variables the kubelet sets (an IPv6 host bracketed). */
export function inClusterServer(host: string, port: string): string {
  return `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
}

/** In a pod: the service account's token and CA from `dir`, read per request. */
export function inClusterAccess(host: string, port: string, dir = SERVICE_ACCOUNT_DIR): KubeAccess {
  return {
    server: inClusterServer(host, port),
    options: async () => ({ ca: readFileSync(join(dir, 'ca.crt')), headers: { authorization: `Bearer ${readFileSync(join(dir, 'token'), 'utf8').trim()}` } }),
  };
}

/** Out of a pod: a kubeconfig through client-node (loadFromDefault: $KUBECONFIG, ~/.kube/config). */
export async function kubeconfigAccess(): Promise<KubeAccess> {
  const { KubeConfig } = await import('@kubernetes/client-node');
  const kc = new KubeConfig();
  kc.loadFromDefault();
  const server = kc.getCurrentCluster()?.server;
  if (!server) throw new FerryError(ErrorCode.InvalidSpec, 'the kubeconfig names no cluster server');
  return {
    server,
    options: async () => {
      const options: RequestOptions = {};
      await kc.applyToHTTPSOptions(options);
      return options;
    },
  };
}

/** An object's JSON is small; more than this is no answer to a GET of one object. */
const MAX_BODY_BYTES = 4 * 1024 * 1024;

export function kubeGet(access: KubeAccess, timeoutMs = 10_000): KubeGet {
  const base = access.server.replace(/\/+$/, '');
  return async (path) => {
    const url = new URL(base + path);
    const options = await access.options();
    return new Promise<KubeAnswer>((resolve, reject) => {
      const fail = (err: Error): void => reject(new FerryError(ErrorCode.SourceUnavailable, `GET ${url.pathname}: ${err.message}`, { retryable: true, cause: err }));
      const req = request(url, { ...options, method: 'GET', timeout: timeoutMs, headers: { ...options.headers, accept: 'application/json' } }, (res) => {
        const chunks: Buffer[] = [];
        let bytes = 0;
        res.on('data', (chunk: Buffer) => {
          bytes += chunk.length;
          if (bytes > MAX_BODY_BYTES) req.destroy(new Error(`answer larger than ${MAX_BODY_BYTES} bytes`));
          else chunks.push(chunk);
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8') }));
        res.on('error', fail);
      });
      req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      req.on('error', fail);
      req.end();
    });
  };
}
