/**
 * `ferry uploadproxy`: composition root of the upload proxy. Reads its files from the environment
 * (names as CDI's proxy Deployment: the token signer's public key, the serving certificate, the
 * client certificate for the upload servers and their CA), listens, and stops on SIGTERM.
 *
 * Until the upload controller lands, nothing here asks the Kubernetes API about the PVC: every
 * target counts as ready and the upload server's own rules (one upload, 409 after success) hold.
 * That is the `targetStatus` seam of proxy.ts.
 */

import { readFileSync } from 'node:fs';
import { ErrorCode, FerryError, toFerryError } from '../src/errors.js';
import { createLogger } from '../src/logging.js';
import { publicKeyFromPem } from '../src/contract/upload-token.js';
import { createUploadProxy } from './proxy.js';

export const UploadProxyEnv = {
  PublicKeyFile: 'APISERVER_PUBLIC_KEY_FILE',
  TlsKeyFile: 'TLS_KEY_FILE',
  TlsCertFile: 'TLS_CERT_FILE',
  ClientKeyFile: 'UPLOAD_SERVER_CLIENT_KEY_FILE',
  ClientCertFile: 'UPLOAD_SERVER_CLIENT_CERT_FILE',
  ServerCaFile: 'UPLOAD_SERVER_CA_CERT_FILE',
  Port: 'UPLOADPROXY_PORT',
  Host: 'UPLOADPROXY_HOST',
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

export async function uploadProxyMain(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const logger = createLogger({ name: 'ferry-uploadproxy', level: env.FERRY_LOG_LEVEL ?? 'info' });
  try {
    const portText = env[UploadProxyEnv.Port] ?? '8443';
    const port = /^\d+$/.test(portText) && Number(portText) <= 65535 ? Number(portText) : undefined;
    if (port === undefined) throw new FerryError(ErrorCode.InvalidSpec, `${UploadProxyEnv.Port} must be a port number, got "${portText}"`);
    const server = createUploadProxy({
      publicKey: publicKeyFromPem(file(env, UploadProxyEnv.PublicKeyFile).toString('utf8')),
      serving: { key: file(env, UploadProxyEnv.TlsKeyFile), cert: file(env, UploadProxyEnv.TlsCertFile) },
      client: { key: file(env, UploadProxyEnv.ClientKeyFile), cert: file(env, UploadProxyEnv.ClientCertFile), serverCa: file(env, UploadProxyEnv.ServerCaFile) },
      targetStatus: async () => ({ kind: 'ready' }),
      logger,
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, env[UploadProxyEnv.Host] || undefined, () => resolve());
    });
    logger.warn('PVC checks through the Kubernetes API are not wired yet: every target counts as ready');
    logger.info({ port }, 'upload proxy listening');
    await new Promise<void>((resolve) => process.once('SIGTERM', () => resolve()));
    server.close();
    server.closeAllConnections();
    return 0;
  } catch (err) {
    const error = toFerryError(err);
    logger.error({ code: error.code }, error.message);
    return error.exitCode;
  }
}
