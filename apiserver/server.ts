/**
 * The HTTPS server of `ferry apiserver`. TLS asks every caller for a client certificate and checks
 * it against the request-header CA only (never the default roots): a certificate that does not
 * chain there leaves the caller anonymous, it does not fail the handshake (the kubelet's probes and
 * the aggregator's availability check carry none). The serving certificate and the CA can be
 * replaced while running (`update`), for rotation.
 */

import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import type { Logger } from '../src/logging.js';
import { identify, type PeerCertificate, type RequestHeaderConfig } from './requestheader.js';
import { failure, StatusReason } from './status.js';
import { handle, MAX_BODY_BYTES, type TokenApiDeps } from './token-api.js';

export interface ServingMaterial {
  readonly key: string;
  readonly cert: string;
  /** The CA of the serving certificate. */
  readonly servingCa: string;
  readonly requestHeader: RequestHeaderConfig | undefined;
}

export interface ApiServer {
  readonly server: Server;
  /** Replaces the serving certificate and the request-header configuration for new connections. */
  update(material: ServingMaterial): void;
}

function tlsOptions(material: ServingMaterial): { key: string; cert: string; ca: string; requestCert: true; rejectUnauthorized: false } {
  // Never the public roots: without a request-header CA, client certificates are checked against
  // Ferry's own serving CA, which signs no client certificate, and identify() trusts nobody anyway.
  return { key: material.key, cert: material.cert, ca: material.requestHeader?.clientCa ?? material.servingCa, requestCert: true, rejectUnauthorized: false };
}

function peerOf(socket: TLSSocket): PeerCertificate | undefined {
  const cert = socket.getPeerX509Certificate?.();
  if (cert === undefined) return undefined;
  const cn = /(?:^|\n)CN=([^\n]*)/.exec(cert.subject)?.[1];
  return { verified: socket.authorized === true, ...(cn !== undefined ? { commonName: cn } : {}), ...(cert.keyUsage !== undefined ? { extKeyUsage: cert.keyUsage } : {}) };
}

/** Reads at most MAX_BODY_BYTES; past that the rest is drained and the body is `tooLarge`. */
function readBody(req: IncomingMessage): Promise<Buffer | 'tooLarge'> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY_BYTES) chunks.push(c);
    });
    req.on('end', () => resolve(size > MAX_BODY_BYTES ? 'tooLarge' : Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

function send(res: ServerResponse, status: number, body: object | string, head: boolean): void {
  const text = typeof body === 'string' ? body : JSON.stringify(body);
  res.writeHead(status, { 'content-type': typeof body === 'string' ? 'text/plain; charset=utf-8' : 'application/json', 'content-length': Buffer.byteLength(text), 'cache-control': 'no-cache, private' });
  res.end(head ? undefined : text);
}

export function createApiServer(initial: ServingMaterial, deps: TokenApiDeps, logger: Logger): ApiServer {
  let material = initial;
  const server = createServer({ ...tlsOptions(initial), minVersion: 'TLSv1.2' }, (req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'https://apiserver.invalid');
      const identity = identify(material.requestHeader, peerOf(req.socket as TLSSocket), req.headersDistinct as Record<string, string[]>);
      const body = await readBody(req);
      const ct = req.headers['content-type'];
      const out = await handle({ method: req.method ?? 'GET', path: url.pathname, query: url.searchParams, ...(ct !== undefined ? { contentType: ct } : {}), body, identity }, deps);
      if (out.status >= 400 || out.status === 201) {
        logger.info({ method: req.method, path: url.pathname, status: out.status, user: identity.kind === 'user' ? identity.user.name : `anonymous (${identity.why})` }, 'request');
      }
      send(res, out.status, out.body, req.method === 'HEAD');
    })().catch((err: unknown) => {
      logger.error({ err: (err as Error).message }, 'request failed');
      if (!res.headersSent) send(res, 500, failure(StatusReason.InternalError, 'internal error'), false);
      else res.destroy();
    });
  });
  return {
    server,
    update(next: ServingMaterial): void {
      material = next;
      server.setSecureContext(tlsOptions(next));
    },
  };
}
