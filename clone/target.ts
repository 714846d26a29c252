/**
 * The clone target: an HTTPS endpoint for one target volume, in the upload server's shape (one
 * transfer, a pinned client, the termination message), receiving a clone stream instead of an
 * image. Only a client whose certificate chains to the client CA and carries the configured
 * common name is served; `/healthz` is open for the kubelet. The first authenticated transfer
 * decides the outcome, success or failure: `finished` settles with it and the program exits, as a
 * run-once importer does, so the controller reads the code from the termination message and makes
 * a new pair of pods for a retry. A refused client does not count.
 */

import { createServer, type Server } from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { ErrorCode, FerryError, toFerryError } from '../src/errors.js';
import { CLONE_ERROR_CODE_HEADER, CLONE_HEALTHZ_PATH, CLONE_PATH, CloneAnswer, CloneStreamError, CloneStreamFault } from '../src/contract/clone-stream.js';
import type { TerminationMessage } from '../src/contract/termination.js';
import type { UploadServerConfig } from '../src/contract/upload-server.js';
import type { Logger } from '../src/logging.js';
import { endAfterBody } from '../src/io/http-answer.js';
import { peerCommonName } from '../src/io/tls-peer.js';
import { BodyEvents } from './body-events.js';
import { coveredBy, progressPercent } from './progress.js';
import { writeClone } from './target-writer.js';

export interface CloneTargetDeps {
  readonly config: UploadServerConfig;
  readonly tls: { readonly key: string | Buffer; readonly cert: string | Buffer; readonly clientCa: string | Buffer };
  readonly logger: Logger;
  /** Told the percent of the source the stream has covered, as records arrive. */
  readonly onProgress?: (percent: number) => void;
}

export interface CloneTarget {
  readonly server: Server;
  readonly finished: Promise<TerminationMessage>;
  /** Stops a transfer in progress (SIGTERM): it fails INTERRUPTED and leaves no disk. */
  abort(): void;
  /** Whether a transfer is running (then `finished` settles once it has cleaned up). */
  busy(): boolean;
}

/** Pure: the answer for a failed clone. A stream or size refusal is the source's (400), the rest 500. */
export function failureAnswer(error: FerryError): CloneAnswer {
  const rejected: readonly string[] = [ErrorCode.InvalidImage, ErrorCode.Truncated, ErrorCode.ChecksumMismatch, ErrorCode.TargetTooSmall, ErrorCode.InvalidSpec, ErrorCode.UnsafeArchive];
  return rejected.includes(error.code) ? 'Rejected' : 'Failed';
}

function answer(req: IncomingMessage, res: ServerResponse, kind: CloneAnswer, body: string, code?: string): void {
  if (res.headersSent) return;
  const bytes = Buffer.from(`${body}\n`);
  res.writeHead(CloneAnswer[kind], { 'content-type': 'text/plain; charset=utf-8', 'content-length': bytes.length, ...(code !== undefined ? { [CLONE_ERROR_CODE_HEADER]: code } : {}) });
  res.write(bytes);
  endAfterBody(req, res);
}

export function createCloneTarget(deps: CloneTargetDeps): CloneTarget {
  const { config, logger } = deps;
  let state: 'idle' | 'busy' | 'done' = 'idle';
  const controller = new AbortController();
  let settle!: (outcome: TerminationMessage) => void;
  const finished = new Promise<TerminationMessage>((resolve) => (settle = resolve));

  async function receive(req: IncomingMessage): Promise<TerminationMessage> {
    let size = 0;
    const events = new BodyEvents(req, controller.signal, (event) => {
      if (event.type === 'header') size = event.header.size;
      const covered = coveredBy(event);
      if (covered !== undefined) deps.onProgress?.(progressPercent(covered, size));
    });
    const first = await events.next();
    if (first.done || first.value.type !== 'header') throw new CloneStreamError(CloneStreamFault.Truncated, 'the clone stream has no header');
    const header = first.value.header;
    logger.info({ kind: header.kind, size: header.size, target: config.target }, 'clone started');
    // On a refusal the reader lets go of the body (without destroying it), so the rest can be
    // drained while the answer goes out.
    const written = await writeClone(config, header, events).catch(async (err: unknown) => {
      await events.return().catch(() => undefined);
      throw err;
    });
    deps.onProgress?.(100);
    return {
      kind: 'success',
      message: `Clone Complete: ${written.dataBytes} bytes of data of ${header.size}`,
      scratchSpaceRequired: false,
      preallocationApplied: written.preallocationApplied,
      sourceFormat: written.sourceFormat,
      ...(written.sourceFormat === 'raw' ? { diskSize: written.size } : {}),
    };
  }

  function handle(req: IncomingMessage, res: ServerResponse): void {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (path === CLONE_HEALTHZ_PATH && (req.method === 'GET' || req.method === 'HEAD')) return answer(req, res, 'Ok', 'OK');
    if (path !== CLONE_PATH || req.method !== 'POST') return answer(req, res, 'NotFound', 'not found');
    if (peerCommonName(req.socket) !== config.clientName) return answer(req, res, 'ClientRefused', 'a client certificate of the clone source is required', ErrorCode.Unauthorized);
    if (state === 'done') return answer(req, res, 'AlreadyDone', 'this target already took its clone');
    if (state === 'busy') return answer(req, res, 'Busy', 'a clone is in progress');
    state = 'busy';
    receive(req).then(
      (outcome) => {
        state = 'done';
        logger.info({ ...outcome }, 'clone complete');
        res.once('close', () => settle(outcome));
        answer(req, res, 'Ok', outcome.message);
      },
      (err: unknown) => {
        state = 'done';
        const error = toFerryError(err);
        logger.error({ code: error.code }, `clone failed: ${error.message}`);
        const outcome: TerminationMessage = { kind: 'failure', code: error.code, message: error.message, retryable: error.retryable };
        if (res.writableEnded || req.socket.destroyed) settle(outcome);
        else {
          res.once('close', () => settle(outcome));
          answer(req, res, failureAnswer(error), error.message, error.code);
        }
      },
    );
  }

  const server = createServer({ key: deps.tls.key, cert: deps.tls.cert, ca: deps.tls.clientCa, requestCert: true, rejectUnauthorized: false, minVersion: 'TLSv1.2' }, handle);
  server.requestTimeout = 0;
  server.headersTimeout = 60_000;
  return { server, finished, abort: () => controller.abort(), busy: () => state === 'busy' };
}
