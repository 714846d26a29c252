/**
 * The upload proxy: the cluster's one HTTPS entry for uploads, as CDI's cdi-uploadproxy. For each
 * request it checks the bearer token (src/contract/upload-token.ts), asks whether the PVC the token
 * names can take an upload (waiting up to 10 s for its server to be ready), and streams the body
 * to that PVC's upload server over mutual TLS, with backpressure both ways. Every answer comes
 * from the table in src/contract/upload-api.ts.
 *
 * As in CDI, the PVC comes from the token only: virtctl's URL names none.
 */

import { request as httpsRequest } from 'node:https';
import { createServer, type Server } from 'node:https';
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { KeyObject } from 'node:crypto';
import { connect } from 'node:net';
import type { Logger } from '../src/logging.js';
import { bearerTokenOf, FORWARDED_REQUEST_HEADERS, isProxyUploadPath, proxyTransportMessage, UploadAnswer, UploadPath, UPLOAD_SERVER_PORT, uploadServiceHost } from '../src/contract/upload-api.js';
import { TokenError, type UploadTokenClaims, verifyUploadToken } from '../src/contract/upload-token.js';

/** What the Kubernetes API says about an upload target (the controller part fills this in). */
export type TargetStatus =
  | { readonly kind: 'ready' }
  /** An upload target whose server pod is not ready yet: worth waiting for. */
  | { readonly kind: 'not-ready' }
  | { readonly kind: 'missing' }
  | { readonly kind: 'not-upload-target' }
  | { readonly kind: 'succeeded' };

/** Where the upload server of a PVC listens. */
export interface ServerAddress {
  readonly host: string;
  readonly port: number;
  /** The name its certificate must carry (SNI and verification); default `host`. */
  readonly servername?: string;
}

/** In a cluster: CDI's per-PVC Service, `cdi-upload-<pvc>.<ns>.svc:8443`. */
export function serviceAddress(namespace: string, name: string): ServerAddress {
  const host = uploadServiceHost(namespace, name);
  return { host, port: UPLOAD_SERVER_PORT, servername: host };
}

export interface UploadProxyDeps {
  /** The token signer's public key. */
  readonly publicKey: KeyObject;
  /** PEM: the proxy's serving key and certificate. */
  readonly serving: { readonly key: string | Buffer; readonly cert: string | Buffer };
  /** PEM: the client certificate shown to upload servers, and the CA their certificates chain to. */
  readonly client: { readonly key: string | Buffer; readonly cert: string | Buffer; readonly serverCa: string | Buffer };
  readonly targetStatus: (namespace: string, name: string) => Promise<TargetStatus>;
  readonly resolveServer?: (namespace: string, name: string) => ServerAddress;
  readonly logger: Logger;
  readonly now?: () => number;
  readonly sleep?: (ms: number) => Promise<void>;
  /** How long to wait for a not-ready server (CDI: 10 s), and how often to ask. */
  readonly readyWaitMs?: number;
  readonly readyPollMs?: number;
}

/** Pure: the answer for a refused token: 400 for a token that is not for an upload, else 401. */
export function tokenAnswer(code: TokenError): UploadAnswer {
  return code === TokenError.WrongOperation || code === TokenError.WrongResource || code === TokenError.MissingTarget ? 'BadClaims' : 'BadToken';
}

/** Pure: the answer and CDI-style reason for a target that cannot take the upload now. */
export function targetAnswer(status: Exclude<TargetStatus, { kind: 'ready' }>, namespace: string, name: string): { readonly answer: UploadAnswer; readonly reason: string } {
  const pvc = `${namespace}/${name}`;
  switch (status.kind) {
    case 'missing':
      return { answer: 'TargetUnavailable', reason: `rejecting Upload Request for PVC ${pvc} that does not exist` };
    case 'not-upload-target':
      return { answer: 'TargetUnavailable', reason: `rejecting Upload Request for PVC ${pvc} that is not an upload target` };
    case 'succeeded':
      return { answer: 'TargetUnavailable', reason: `rejecting Upload Request for PVC ${pvc} that already finished uploading` };
    case 'not-ready':
      return { answer: 'TargetUnavailable', reason: `the upload server for PVC ${pvc} is not ready` };
  }
}

const escapeHtml = (text: string): string => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function send(res: ServerResponse, answer: UploadAnswer, body: string): void {
  if (res.headersSent) return;
  res.writeHead(UploadAnswer[answer].status, { 'content-type': 'text/plain; charset=utf-8' });
  res.end(body);
}

/** How long a client that was answered before its body ended may keep the connection (then it is cut). */
export const EARLY_ANSWER_HOLD_MS = 10_000;

/**
 * After an answer that came before the body ended: the body is no longer read at all, so TCP stops
 * the client after what the socket buffers hold (reading and dropping it, as before, took the whole
 * image from a client that writes on whatever the answer says, as Go's transport does). The answer
 * is complete (its Content-Length) but the response is not ended: ending it with a body unread would
 * make Node drain it, or reset the connection before the client has read the answer. The
 * connection closes when the client closes it, or after EARLY_ANSWER_HOLD_MS.
 */
export function stopReading(req: IncomingMessage, res: ServerResponse, holdMs = EARLY_ANSWER_HOLD_MS): void {
  if (!bodyPending(req)) {
    res.end();
    return;
  }
  req.pause();
  const socket = req.socket;
  const timer = setTimeout(() => socket.destroy(), holdMs);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
}

/** Whether part of a request's body has not arrived yet (a request without one has none to wait for). */
function bodyPending(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  const hasBody = req.headers['transfer-encoding'] !== undefined || (length !== undefined && length !== '0');
  return hasBody && !req.complete;
}

/** Answers before the body is read: the body is left unread (stopReading). */
function sendEarly(req: IncomingMessage, res: ServerResponse, answer: UploadAnswer, body: string): void {
  if (res.headersSent) return;
  const bytes = Buffer.from(body);
  res.writeHead(UploadAnswer[answer].status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': bytes.length, ...(bodyPending(req) ? { connection: 'close' } : {}) });
  res.write(bytes);
  stopReading(req, res);
}


/** Headers passed on to the server: what describes the body (or, for tus, its place), nothing that authenticates. */
function forwardedHeaders(req: IncomingMessage): OutgoingHttpHeaders {
  const headers: Record<string, string | string[]> = {};
  for (const name of FORWARDED_REQUEST_HEADERS) {
    const value = req.headers[name];
    if (value !== undefined) headers[name] = value;
  }
  return headers;
}

/** Whether a TCP connection to the server opens (at most 2 s). */
function reachable(address: { readonly host: string; readonly port: number }): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect({ host: address.host, port: address.port, timeout: 2000 });
    const done = (ok: boolean): void => {
      socket.destroy();
      resolve(ok);
    };
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
    socket.once('timeout', () => done(false));
  });
}

export function createUploadProxy(deps: UploadProxyDeps): Server {
  const now = deps.now ?? Date.now;
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));
  const resolveServer = deps.resolveServer ?? serviceAddress;
  const waitMs = deps.readyWaitMs ?? 10_000;
  const pollMs = Math.max(1, deps.readyPollMs ?? 500);

  async function statusOf(claims: UploadTokenClaims): Promise<TargetStatus> {
    // Bounded: at most waitMs / pollMs + 1 questions. A target marked ready whose server does not
    // take a connection is waited for too: the mark is stale (the pod just died, its replacement
    // is starting), and an early 502 would cost a client that retries fast (virtctl) its retries.
    for (let waited = 0; ; waited += pollMs) {
      const status = await deps.targetStatus(claims.namespace, claims.name);
      if (status.kind !== 'not-ready' && status.kind !== 'ready') return status;
      if (waited >= waitMs) return status;
      if (status.kind === 'ready' && (await reachable(resolveServer(claims.namespace, claims.name)))) return status;
      await sleep(pollMs);
    }
  }

  function forward(req: IncomingMessage, res: ServerResponse, claims: UploadTokenClaims, log: Logger): void {
    const address = resolveServer(claims.namespace, claims.name);
    const upstream = httpsRequest({
      host: address.host,
      port: address.port,
      servername: address.servername ?? address.host,
      method: req.method,
      path: req.url,
      headers: forwardedHeaders(req),
      key: deps.client.key,
      cert: deps.client.cert,
      ca: deps.client.serverCa,
      agent: false,
    });
    upstream.on('response', (answer) => {
      const early = bodyPending(req);
      if (early) {
        // The server answered before the body ended (refused it): not one more byte goes on to it.
        req.unpipe(upstream);
        req.pause();
      }
      const headers: OutgoingHttpHeaders = {};
      for (const [name, value] of Object.entries(answer.headers)) if (value !== undefined && name !== 'connection' && name !== 'keep-alive' && name !== 'transfer-encoding') headers[name] = value;
      res.writeHead(answer.statusCode ?? 502, early ? { ...headers, connection: 'close' } : headers);
      answer.pipe(res, { end: false });
      answer.once('end', () => {
        log.info({ status: answer.statusCode, early }, 'upload answered');
        if (early) upstream.destroy();
        // A body the server no longer wants is not read from the client either.
        stopReading(req, res);
      });
    });
    upstream.on('error', (err) => {
      log.warn({ err: err.message }, 'cannot reach the upload server');
      req.unpipe(upstream);
      if (!res.headersSent) sendEarly(req, res, 'ProxyTransport', escapeHtml(proxyTransportMessage(err.message)));
      else res.destroy(err);
    });
    // The client went away mid-body: the server sees the upload break.
    req.once('close', () => {
      if (!req.readableEnded) upstream.destroy();
    });
    req.pipe(upstream);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (path === UploadPath.Healthz) return send(res, 'Ok', 'OK');
    if (!isProxyUploadPath(path)) return sendEarly(req, res, 'NotFound', 'not found');
    const token = bearerTokenOf(req.headers.authorization);
    if (token === undefined) return sendEarly(req, res, 'NoBearer', 'missing or malformed Authorization header (want "Bearer <token>")');
    const verdict = verifyUploadToken(token, deps.publicKey, now());
    if (!verdict.ok) {
      deps.logger.info({ code: verdict.code }, `token refused: ${verdict.message}`);
      return sendEarly(req, res, tokenAnswer(verdict.code), escapeHtml(verdict.message));
    }
    const { claims } = verdict;
    const log = deps.logger.child({ namespace: claims.namespace, pvc: claims.name, path, method: req.method });
    const status = await statusOf(claims);
    if (status.kind !== 'ready') {
      const { answer, reason } = targetAnswer(status, claims.namespace, claims.name);
      log.info(reason);
      return sendEarly(req, res, answer, escapeHtml(reason));
    }
    forward(req, res, claims, log);
  }

  const server = createServer({ key: deps.serving.key, cert: deps.serving.cert, minVersion: 'TLSv1.2' }, (req, res) => {
    handle(req, res).catch((err: unknown) => {
      deps.logger.error({ err: (err as Error).message }, 'upload proxy error');
      sendEarly(req, res, 'ProxyTransport', escapeHtml(proxyTransportMessage((err as Error).message)));
    });
  });
  // Uploads of many gigabytes: no request timeout (CDI allows 24 h).
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  return server;
}
