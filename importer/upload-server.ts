/**
 * The upload server: the import engine behind an HTTPS endpoint for one target, as CDI's
 * cdi-uploadserver. It accepts one upload (raw body or the `file` field of a form), streams it into
 * the engine as an `upload` source, answers from the table in src/contract/upload-api.ts and
 * settles `finished` once an upload has succeeded (or an async one failed after its 200), which
 * the composition root turns into the termination message and the exit.
 *
 * Only clients whose certificate chains to the client CA and carries the configured common name
 * are served (401 otherwise); `/healthz` is open, for the kubelet's readiness probe.
 */

import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { TLSSocket } from 'node:tls';
import { ErrorCode, type FerryError, toFerryError } from '../src/errors.js';
import { ImportSource, validateSpec } from '../src/contract/import-spec.js';
import type { Logger } from '../src/logging.js';
import type { ImportSuccess, TerminationMessage } from '../src/contract/termination.js';
import { ERROR_CODE_HEADER, TOO_BIG_REASON, UPLOAD_FORM_FIELD, UploadAnswer, UploadPath, uploadModeOf, savingFailedMessage, type UploadMode } from '../src/contract/upload-api.js';
import type { UploadServerConfig } from '../src/contract/upload-server.js';
import { type ImportTuning, runImport } from './engine.js';
import { Progress } from './progress.js';
import { contentLengthOf, pulled, uploadBody } from './sources/upload-source.js';
import { boundaryOf, formField } from './upload-server-multipart.js';
import { endAfterBody } from '../src/io/http-answer.js';
import { join } from 'node:path';
import type { ImportSpec } from '../src/contract/import-spec.js';
import { openFile } from './sources/file-source.js';
import { createResumableUploads, removeStaged } from './upload-server-resumable.js';
import { inPlaceWrites } from './upload-server-in-place.js';

/** The staged body of a resumable upload, on scratch. */
export const STAGED_UPLOAD_FILE = 'resumable-upload.staged';

export { ERROR_CODE_HEADER };

export interface UploadServerDeps {
  readonly config: UploadServerConfig;
  /** PEM: the server's key and certificate, and the CA client certificates must chain to. */
  readonly tls: { readonly key: string | Buffer; readonly cert: string | Buffer; readonly clientCa: string | Buffer };
  readonly logger: Logger;
  readonly tuning: ImportTuning;
  readonly progress?: Progress;
  readonly sleep?: (ms: number) => Promise<void>;
}

export interface UploadServer {
  readonly server: Server;
  /** Settles once: the outcome to write as the termination message. */
  readonly finished: Promise<TerminationMessage>;
  /** Stops a running import (SIGTERM); its partial disk is removed. */
  abort(): void;
  /** Settles once the server may listen: an upload an earlier pod staged has been taken up. */
  readonly ready: Promise<void>;
  /** Makes a running resumable upload's bytes durable (before a stop), so the next server resumes there. */
  flush(): Promise<void>;
}

type State = 'idle' | 'busy' | 'done';

/** Pure: the answer for an import that failed, CDI's wording for an image too big. */
export function failureAnswer(error: FerryError): { readonly answer: UploadAnswer; readonly body: string } {
  if (error.code === ErrorCode.TargetTooSmall || error.code === ErrorCode.NoSpace) return { answer: 'TooBig', body: savingFailedMessage(`${TOO_BIG_REASON}: ${error.message}`) };
  if (error.code === ErrorCode.InvalidSpec) return { answer: 'BadRequest', body: savingFailedMessage(error.message) };
  return { answer: 'Failed', body: savingFailedMessage(error.message) };
}

function send(res: ServerResponse, answer: UploadAnswer, body: string, code?: string): void {
  if (res.headersSent) return;
  res.writeHead(UploadAnswer[answer].status, { 'content-type': 'text/plain; charset=utf-8', ...(code !== undefined ? { [ERROR_CODE_HEADER]: code } : {}) });
  res.end(body);
}

/**
 * Answers before the body was read to its end: the answer goes out at once (with its length, so a
 * client can read it while still sending), the rest of the body is read and dropped.
 */
function sendEarly(req: IncomingMessage, res: ServerResponse, answer: UploadAnswer, body: string, code?: string): void {
  if (res.headersSent) return;
  const bytes = Buffer.from(body);
  res.writeHead(UploadAnswer[answer].status, { 'content-type': 'text/plain; charset=utf-8', 'content-length': bytes.length, ...(code !== undefined ? { [ERROR_CODE_HEADER]: code } : {}) });
  res.write(bytes);
  endAfterBody(req, res);
}


function clientAllowed(req: IncomingMessage, clientName: string): boolean {
  const socket = req.socket as TLSSocket;
  if (!socket.authorized) return false;
  const subject = socket.getPeerCertificate()?.subject as Record<string, string | string[]> | undefined;
  const cn = subject?.CN;
  return (Array.isArray(cn) ? cn[0] : cn) === clientName;
}

export function createUploadServer(deps: UploadServerDeps): UploadServer {
  const { config, logger } = deps;
  let state: State = 'idle';
  const controller = new AbortController();
  let settle!: (outcome: TerminationMessage) => void;
  const finished = new Promise<TerminationMessage>((resolve) => (settle = resolve));
  const sleep = deps.sleep ?? ((ms: number) => new Promise<void>((r) => setTimeout(r, ms)));

  const specFor = (path: string): ImportSpec =>
    validateSpec({
      source: ImportSource.Upload,
      endpoint: path,
      contentType: config.contentType,
      target: config.target,
      insecureTls: false,
      ...(config.capacity !== undefined ? { capacity: config.capacity } : {}),
      filesystemOverhead: config.filesystemOverhead,
      preallocation: config.preallocation,
      ...(config.scratchDir !== undefined ? { scratchDir: config.scratchDir } : {}),
      proxy: {},
    });

  /** A resumable upload staged whole: imported as a local file (qemu-img reads it in place), then removed. */
  async function importStaged(stagedPath: string, length: number): Promise<void> {
    const log = logger.child({ path: UploadPath.Resumable, length });
    let outcome: TerminationMessage;
    try {
      const result = await runImport(specFor(UploadPath.Resumable), { logger: log, progress: deps.progress ?? new Progress(), tuning: { ...deps.tuning, attempts: 1 }, sleep, upload: () => openFile(stagedPath), signal: controller.signal });
      log.info({ ...result }, 'upload complete');
      outcome = result;
    } catch (err) {
      const error = toFerryError(err);
      log.error({ code: error.code }, `processing a staged upload failed: ${error.message}`);
      outcome = { kind: 'failure', code: error.code, message: error.message, retryable: error.retryable };
    }
    await removeStaged(stagedPath).catch(() => undefined);
    state = 'done';
    settle(outcome);
  }

  const resumable = createResumableUploads(config.scratchDir === undefined ? undefined : join(config.scratchDir, STAGED_UPLOAD_FILE), {
    otherUpload: () => (state === 'done' ? 'done' : state === 'busy' ? 'busy' : 'none'),
    staged: (stagedPath, length) => void importStaged(stagedPath, length),
    logger,
    inPlace: inPlaceWrites(specFor(UploadPath.Resumable)),
    completed: (outcome) => {
      // A failure here leaves nothing behind (the upload file is gone): another upload may try.
      if (outcome instanceof Error) return;
      state = 'done';
      settle(outcome);
    },
    failure: failureAnswer,
  });

  async function upload(req: IncomingMessage, res: ServerResponse, path: string, mode: UploadMode): Promise<void> {
    let body;
    if (mode.form) {
      const boundary = boundaryOf(req.headers['content-type']);
      if (boundary === undefined) {
        state = 'idle';
        return sendEarly(req, res, 'BadRequest', savingFailedMessage('a form upload needs Content-Type multipart/form-data with a boundary'), ErrorCode.InvalidSpec);
      }
      body = uploadBody(formField(pulled(req), boundary, UPLOAD_FORM_FIELD), undefined, `form upload ${path}`);
    } else {
      body = uploadBody(pulled(req), contentLengthOf(req.headers['content-length']), `upload ${path}`);
    }
    const spec = specFor(path);
    const log = logger.child({ path, async: mode.async, form: mode.form });
    log.info({ contentLength: req.headers['content-length'] }, 'upload started');
    // One attempt: the body cannot be read twice.
    const importing = runImport(spec, { logger: log, progress: deps.progress ?? new Progress(), tuning: { ...deps.tuning, attempts: 1 }, sleep, upload: body.opener, signal: controller.signal });
    const first = await Promise.race([importing.then((r) => ({ done: r }), (e: unknown) => ({ failed: toFerryError(e) })), body.received.then(() => ({ received: true as const }))]);
    if ('failed' in first) return failed(req, res, first.failed, log);
    if ('done' in first || !mode.async) {
      let result: ImportSuccess;
      try {
        result = 'done' in first ? first.done : await importing;
      } catch (err) {
        return failed(req, res, toFerryError(err), log);
      }
      state = 'done';
      res.once('finish', () => settle(result));
      res.once('close', () => settle(result));
      if (result.scratchSpaceRequired) {
        // Nothing was written: the format needs scratch and this pod has none. The termination
        // message says so (as an importer's does), for a pod with scratch to take the retry.
        log.warn({ format: result.sourceFormat }, 'the upload needs scratch space to convert and none is mounted');
        return sendEarly(req, res, 'Failed', savingFailedMessage(`the ${result.sourceFormat ?? 'image'} needs scratch space to convert and this upload server has none; retry once the server is recreated with scratch`));
      }
      log.info({ ...result }, 'upload complete');
      return send(res, 'Ok', '');
    }
    // Async: the bytes are in (on scratch, or written); answer now, finish in the background.
    log.info('upload received; processing continues');
    send(res, 'Ok', '');
    try {
      const result = await importing;
      state = 'done';
      log.info({ ...result }, 'upload complete');
      settle(result);
    } catch (err) {
      const error = toFerryError(err);
      log.error({ code: error.code }, `processing after an async upload failed: ${error.message}`);
      state = 'done';
      settle({ kind: 'failure', code: error.code, message: error.message, retryable: error.retryable });
    }
  }

  function failed(req: IncomingMessage, res: ServerResponse, error: FerryError, log: Logger): void {
    // The partial disk is gone (the engine removed it): another upload may try again.
    state = 'idle';
    log.warn({ code: error.code }, `upload failed: ${error.message}`);
    const { answer, body } = failureAnswer(error);
    sendEarly(req, res, answer, body, error.code);
  }

  function handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (path === UploadPath.Healthz && (req.method === 'GET' || req.method === 'HEAD')) return send(res, 'Ok', 'OK');
    const mode = uploadModeOf(path);
    if (mode === undefined && path !== UploadPath.Resumable) return sendEarly(req, res, 'NotFound', 'not found');
    if (!clientAllowed(req, config.clientName)) return sendEarly(req, res, 'ClientRefused', 'a client certificate from the upload proxy is required');
    if (mode === undefined) return resumable.handle(req, res);
    if (req.method === 'HEAD' && mode.async) return send(res, 'Ok', '');
    if (req.method !== 'POST') return sendEarly(req, res, 'NotFound', 'not found');
    if (state === 'done') return sendEarly(req, res, 'AlreadyDone', 'the upload is already complete');
    if (state === 'busy' || resumable.active()) return sendEarly(req, res, 'Busy', 'an upload is already in progress');
    state = 'busy';
    upload(req, res, path, mode).catch((err: unknown) => {
      const error = toFerryError(err);
      state = state === 'done' ? 'done' : 'idle';
      logger.error({ code: error.code }, error.message);
      send(res, 'Failed', savingFailedMessage(error.message), error.code);
    });
  }

  const server = createServer(
    { key: deps.tls.key, cert: deps.tls.cert, ca: deps.tls.clientCa, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2' },
    handle,
  );
  // A multi-gigabyte body may take hours: no request timeout (CDI's proxy allows 24 h).
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  return { server, finished, abort: () => controller.abort(), ready: resumable.ready, flush: () => resumable.flush() };
}
