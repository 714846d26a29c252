/**
 * `ferry uploadproxy`: composition root of the upload proxy. Reads its files from the environment
 * (names as CDI's proxy Deployment: the token signer's public key, the serving certificate, the
 * client certificate for the upload servers and their CA), asks the Kubernetes API about each
 * target PVC (target-status.ts through kube-get.ts: $KUBECONFIG when set, else in-cluster, else
 * ~/.kube/config), listens, and stops on SIGTERM.
 *
 * The certificate files are Secret volumes the controller rotates (controller/certs/): they are
 * read again every UPLOADPROXY_CERT_RELOAD_MS (default 60 s), the serving certificate swapped
 * into the TLS server and the client certificate used from the next upload on.
 */

import { readFileSync } from 'node:fs';
import { ErrorCode, FerryError, toFerryError } from '../src/errors.js';
import { createLogger } from '../src/logging.js';
import { publicKeyFromPem } from '../src/contract/upload-token.js';
import { inClusterAccess, kubeconfigAccess, kubeGet, SERVICE_ACCOUNT_DIR } from './kube-get.js';
import { createUploadProxy } from './proxy.js';
import { addressResolver, DEFAULT_SERVER_ADDRESS, kubeTargetStatus } from './target-status.js';

export const UploadProxyEnv = {
  PublicKeyFile: 'APISERVER_PUBLIC_KEY_FILE',
  TlsKeyFile: 'TLS_KEY_FILE',
  TlsCertFile: 'TLS_CERT_FILE',
  ClientKeyFile: 'UPLOAD_SERVER_CLIENT_KEY_FILE',
  ClientCertFile: 'UPLOAD_SERVER_CLIENT_CERT_FILE',
  ServerCaFile: 'UPLOAD_SERVER_CA_CERT_FILE',
  Port: 'UPLOADPROXY_PORT',
  Host: 'UPLOADPROXY_HOST',
  /** Where an upload server is dialled: `{service}` and `{namespace}` replaced (default CDI's `{service}.{namespace}.svc:8443`). */
  ServerAddress: 'UPLOADPROXY_SERVER_ADDRESS',
  CertReloadMs: 'UPLOADPROXY_CERT_RELOAD_MS',
  /** A kubeconfig file: when set, it is used (through client-node); else in-cluster, else ~/.kube/config. */
  Kubeconfig: 'KUBECONFIG',
  /** Set by the kubelet in every pod: the API server's address (in-cluster access). */
  ServiceHost: 'KUBERNETES_SERVICE_HOST',
  ServicePort: 'KUBERNETES_SERVICE_PORT',
  /** Where the service account's `token` and `ca.crt` are (default the kubelet's mount; tests point it elsewhere). */
  ServiceAccountDir: 'UPLOADPROXY_SERVICE_ACCOUNT_DIR',
} as const;

function file(env: NodeJS.ProcessEnv, name: string): Buffer {
  const path = env[name];
  if (!path) throw new FerryError(ErrorCode.InvalidSpec, `${name} is not set`);
  try {
    return readFileSync(path);
  } catch (err) {
    throw new FerryError(ErrorCode.InvalidSpec, `${name}: cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

function number(env: NodeJS.ProcessEnv, name: string, fallback: number, max: number): number {
  const text = env[name] ?? String(fallback);
  const n = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!(n >= 1 && n <= max)) throw new FerryError(ErrorCode.InvalidSpec, `${name} must be a number from 1 to ${max}, got "${text}"`);
  return n;
}

export async function uploadProxyMain(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const logger = createLogger({ name: 'ferry-uploadproxy', level: env.FERRY_LOG_LEVEL ?? 'info' });
  try {
    const port = number(env, UploadProxyEnv.Port, 8443, 65535);
    const reloadMs = number(env, UploadProxyEnv.CertReloadMs, 60_000, 86_400_000);
    const host = env[UploadProxyEnv.ServiceHost];
    const access =
      env[UploadProxyEnv.Kubeconfig] || !host
        ? await kubeconfigAccess()
        : inClusterAccess(host, env[UploadProxyEnv.ServicePort] || '443', env[UploadProxyEnv.ServiceAccountDir] || SERVICE_ACCOUNT_DIR);
    const resolveServer = addressResolver(env[UploadProxyEnv.ServerAddress] || DEFAULT_SERVER_ADDRESS);
    const loadClient = () => ({ key: file(env, UploadProxyEnv.ClientKeyFile), cert: file(env, UploadProxyEnv.ClientCertFile), serverCa: file(env, UploadProxyEnv.ServerCaFile) });
    const loadServing = () => ({ key: file(env, UploadProxyEnv.TlsKeyFile), cert: file(env, UploadProxyEnv.TlsCertFile) });
    let client = loadClient();
    let serving = loadServing();
    const server = createUploadProxy({
      publicKey: publicKeyFromPem(file(env, UploadProxyEnv.PublicKeyFile).toString('utf8')),
      serving,
      // Read per upload: a reloaded client certificate is used from the next upload on.
      client: {
        get key() {
          return client.key;
        },
        get cert() {
          return client.cert;
        },
        get serverCa() {
          return client.serverCa;
        },
      },
      targetStatus: kubeTargetStatus(kubeGet(access)),
      resolveServer,
      logger,
    });
    const reload = setInterval(() => {
      try {
        const nextClient = loadClient();
        const nextServing = loadServing();
        if (!nextServing.cert.equals(serving.cert) || !nextServing.key.equals(serving.key)) {
          server.setSecureContext({ key: nextServing.key, cert: nextServing.cert, minVersion: 'TLSv1.2' });
          logger.info('serving certificate reloaded');
        }
        if (!nextClient.cert.equals(client.cert) || !nextClient.serverCa.equals(client.serverCa)) logger.info('client certificate reloaded');
        client = nextClient;
        serving = nextServing;
      } catch (err) {
        logger.warn({ err: (err as Error).message }, 'cannot reload the certificates; keeping the loaded ones');
      }
    }, reloadMs);
    reload.unref();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, env[UploadProxyEnv.Host] || undefined, () => resolve());
    });
    logger.info({ port }, 'upload proxy listening');
    await new Promise<void>((resolve) => process.once('SIGTERM', () => resolve()));
    clearInterval(reload);
    server.close();
    server.closeAllConnections();
    return 0;
  } catch (err) {
    const error = toFerryError(err);
    logger.error({ code: error.code }, error.message);
    return error.exitCode;
  }
}
