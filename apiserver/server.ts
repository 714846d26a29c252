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
import { X509Certificate } from 'node:crypto';
import { identify, webhookCallerProblem, type PeerCertificate, type RequestHeaderConfig, type WebhookClientConfig } from './requestheader.js';
import { failure, StatusReason } from './status.js';
import { handle, MAX_BODY_BYTES, type ApiAnswer, type TokenApiDeps } from './token-api.js';
import { admitClone, CLONE_ADMISSION_PATH, type CloneAdmissionDeps } from './clone-admission.js';

export interface ServingMaterial {
  readonly key: string;
  readonly cert: string;
  /** The CA of the serving certificate. */
  readonly servingCa: string;
  readonly requestHeader: RequestHeaderConfig | undefined;
  /** Who may call the webhook path; undefined: anyone (ADR 0014). */
  readonly webhookClient?: WebhookClientConfig;
}

export interface ApiServer {
  readonly server: Server;
  /** Replaces the serving certificate and the request-header configuration for new connections. */
  update(material: ServingMaterial): void;
}

function tlsOptions(material: ServingMaterial): { key: string; cert: string; ca: string; requestCert: true; rejectUnauthorized: false } {
  // Never the public roots: without a request-header CA, client certificates are checked against
  // Ferry's own serving CA, which signs no client certificate, and identify() trusts nobody anyway.
  // With a webhook client CA both are trusted by TLS, and peerOf() tells which one issued the peer.
  const ca = [material.requestHeader?.clientCa ?? material.servingCa, ...(material.webhookClient ? [material.webhookClient.ca] : [])].join('\n');
  return { key: material.key, cert: material.cert, ca, requestCert: true, rejectUnauthorized: false };
}

/** The certificates of a PEM bundle (unparsable ones left out). */
function bundle(pem: string | undefined): X509Certificate[] {
  return (pem ?? '').match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)?.flatMap((c) => {
    try {
      return [new X509Certificate(c)];
    } catch {
      return [];
    }
  }) ?? [];
}

const issuedBy = (cert: X509Certificate, cas: readonly X509Certificate[]): boolean => cas.some((ca) => cert.checkIssued(ca) && cert.verify(ca.publicKey));

/**
 * What TLS established, per CA: a certificate that chains (socket.authorized) is a front proxy only
 * if the request-header CA issued it, and a webhook client only if the webhook client CA did, so
 * neither can stand in for the other.
 */
function peerOf(socket: TLSSocket, material: ServingMaterial): PeerCertificate | undefined {
  const cert = socket.getPeerX509Certificate?.();
  if (cert === undefined) return undefined;
  const cn = /(?:^|\n)CN=([^\n]*)/.exec(cert.subject)?.[1];
  const authorized = socket.authorized === true;
  return {
    verified: authorized && issuedBy(cert, bundle(material.requestHeader?.clientCa ?? material.servingCa)),
    ...(material.webhookClient ? { webhookClient: authorized && issuedBy(cert, bundle(material.webhookClient.ca)) } : {}),
    ...(cn !== undefined ? { commonName: cn } : {}),
    ...(cert.keyUsage !== undefined ? { extKeyUsage: cert.keyUsage } : {}),
  };
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

/**
 * The webhook path: the kube-apiserver POSTs an AdmissionReview (no user identity on the
 * connection: the review's userInfo says who asked). Anything else there is a 4xx.
 */
async function admission(method: string, body: Buffer | 'tooLarge', callerProblem: string | undefined, deps: CloneAdmissionDeps): Promise<ApiAnswer> {
  if (callerProblem !== undefined) return { status: 401, body: failure(StatusReason.Unauthorized, `Unauthorized: ${callerProblem}`) };
  if (method !== 'POST') return { status: 405, body: failure(StatusReason.MethodNotAllowed, `only POST of an AdmissionReview is supported on ${CLONE_ADMISSION_PATH}`) };
  if (body === 'tooLarge') return { status: 413, body: failure(StatusReason.RequestEntityTooLarge, `the request body is larger than ${MAX_BODY_BYTES} bytes`) };
  let review: unknown;
  try {
    review = JSON.parse(body.toString('utf8'));
  } catch (err) {
    return { status: 400, body: failure(StatusReason.BadRequest, `the body is not JSON: ${(err as Error).message}`) };
  }
  const out = await admitClone(review, deps);
  return { status: out.response.uid === '' ? 400 : 200, body: out };
}

/** Longer than the kube-apiserver's idle connections live (90 s). */
export const KEEP_ALIVE_MS = 120_000;

export function createApiServer(initial: ServingMaterial, deps: TokenApiDeps & CloneAdmissionDeps, logger: Logger): ApiServer {
  let material = initial;
  const server = createServer({ ...tlsOptions(initial), minVersion: 'TLSv1.2' }, (req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'https://apiserver.invalid');
      const peer = peerOf(req.socket as TLSSocket, material);
      const identity = identify(material.requestHeader, peer, req.headersDistinct as Record<string, string[]>);
      const body = await readBody(req);
      const ct = req.headers['content-type'];
      const out =
        url.pathname === CLONE_ADMISSION_PATH
          ? await admission(req.method ?? 'GET', body, webhookCallerProblem(material.webhookClient, peer), deps)
          : await handle({ method: req.method ?? 'GET', path: url.pathname, query: url.searchParams, ...(ct !== undefined ? { contentType: ct } : {}), body, identity }, deps);
      if (url.pathname === CLONE_ADMISSION_PATH && 'response' in (out.body as object)) {
        const r = (out.body as { response: { allowed: boolean; status?: { message: string } } }).response;
        logger.info({ path: url.pathname, allowed: r.allowed, ...(r.status ? { message: r.status.message } : {}) }, 'admission');
      }
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
  // The kube-apiserver keeps connections to an aggregated server and a webhook idle for up to 90 s
  // (Go's IdleConnTimeout) and does not retry a POST whose reused connection turns out closed: with
  // Node's 5 s default the two raced, and an UploadTokenRequest or an admission review failed 503
  // ("write: broken pipe"). The idle connection is the client's to close.
  server.keepAliveTimeout = KEEP_ALIVE_MS;
  server.headersTimeout = KEEP_ALIVE_MS + 1000;
  return {
    server,
    update(next: ServingMaterial): void {
      material = next;
      server.setSecureContext(tlsOptions(next));
    },
  };
}
