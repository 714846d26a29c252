/**
 * The upload server's resumable path (ADR 0010): tus 1.0 core on `/v1beta1/upload-resumable`. The
 * body is staged whole on scratch, appended request by request, and imported as a local file once
 * the last byte is in. The offset a client may resume from is the durable one: the staged length
 * at the last fsync, taken at least every 64 MiB and whenever a request ends or breaks. Decoding
 * and converting cannot be resumed; appending to a file can.
 *
 * One PVC, one upload: the PVC is the tus resource, so there is no creation step, and the length
 * comes with the first PATCH (`Upload-Length`, as tus's creation-defer-length).
 */

import { open, readFile, rename, rm, stat, truncate, type FileHandle } from 'node:fs/promises';
import type { IncomingMessage, OutgoingHttpHeaders, ServerResponse } from 'node:http';
import type { Logger } from '../src/logging.js';
import { byteCountOf, TUS_CONTENT_TYPE, TUS_VERSION, TusHeader, UploadAnswer } from '../src/contract/upload-api.js';
import { endAfterBody } from '../src/io/http-answer.js';
import { pulled } from './sources/upload-source.js';

/** fsync at least this often while a PATCH streams (and always when it ends). */
export const STAGE_SYNC_BYTES = 64 * 1024 * 1024;

/** Beside the staged file: `{"offset":N,"length":L}`, the durable offset, replaced (write, fsync, rename) after each fsync of the staged file. */
export const STAGE_RECORD_SUFFIX = '.offset';

/** How long a HEAD or PATCH waits for a running PATCH to end before answering (423 for a PATCH). */
export const WRITER_SETTLE_MS = 3000;

export type ResumableState =
  /** Nothing staged and no request running. */
  | { readonly kind: 'empty' }
  /** Bytes staged up to `offset` (durable); `writing` while a PATCH streams. */
  | { readonly kind: 'staging'; readonly offset: number; readonly length: number; readonly writing: boolean }
  /** Every byte is in; the import runs or ran. */
  | { readonly kind: 'staged'; readonly length: number };

/** What the rest of the upload server decides: whether an upload may start, and what to do once staged. */
export interface ResumableHost {
  /** The one-shot paths' state: a resumable upload may start only when no other upload is running or done. */
  readonly otherUpload: () => 'none' | 'busy' | 'done';
  /** Called once, when the whole body is durable in `stagedPath`; imports it in the background. */
  readonly staged: (stagedPath: string, length: number) => void;
  readonly logger: Logger;
}

export interface ResumableUploads {
  handle(req: IncomingMessage, res: ServerResponse): void;
  /** Whether a resumable upload holds the target (so the one-shot paths answer Busy). */
  readonly active: () => boolean;
  readonly state: () => ResumableState;
  /** Settles once an upload staged by an earlier pod (on the same scratch volume) has been taken up or discarded. */
  readonly ready: Promise<void>;
  /**
   * The server is being stopped: ends a running PATCH where it is (its request destroyed, so the
   * client sees the break at once rather than sending into a server that will not keep it) and
   * settles once what it wrote is durable and recorded.
   */
  flush(): Promise<void>;
}

/** Pure: the durable-offset record, or undefined when it is not one (a torn or foreign file). */
export function decodeStageRecord(text: string): { readonly offset: number; readonly length: number } | undefined {
  try {
    const v = JSON.parse(text) as { offset?: unknown; length?: unknown };
    const ok = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
    if (!ok(v.offset) || !ok(v.length) || v.length === 0 || v.offset > v.length) return undefined;
    return { offset: v.offset, length: v.length };
  } catch {
    return undefined;
  }
}

/** Removes a staged upload and its record (after it was imported, or when it cannot be trusted). */
export async function removeStaged(stagedPath: string): Promise<void> {
  await Promise.all([rm(stagedPath, { force: true }), rm(stagedPath + STAGE_RECORD_SUFFIX, { force: true }), rm(`${stagedPath}${STAGE_RECORD_SUFFIX}.tmp`, { force: true })]);
}

async function writeRecord(stagedPath: string, offset: number, length: number): Promise<void> {
  const tmp = `${stagedPath}${STAGE_RECORD_SUFFIX}.tmp`;
  const handle = await open(tmp, 'w');
  try {
    await handle.writeFile(JSON.stringify({ offset, length }));
    await handle.datasync();
  } finally {
    await handle.close();
  }
  // A rename lost in a crash leaves the previous record: a smaller offset, still true.
  await rename(tmp, stagedPath + STAGE_RECORD_SUFFIX);
}

/**
 * What an earlier pod staged on this scratch volume: its record says how much of the staged file
 * was durable (a crash may leave more bytes, or garbage, past it: cut off). Without a valid record,
 * or with a staged file shorter than it, nothing is trusted.
 */
async function recoverStaged(stagedPath: string): Promise<ResumableState> {
  const record = decodeStageRecord(await readFile(stagedPath + STAGE_RECORD_SUFFIX, 'utf8').catch(() => ''));
  const size = await stat(stagedPath).then((s) => s.size, () => -1);
  if (!record || size < record.offset) {
    await removeStaged(stagedPath);
    return { kind: 'empty' };
  }
  await truncate(stagedPath, record.offset);
  return record.offset >= record.length ? { kind: 'staged', length: record.length } : { kind: 'staging', offset: record.offset, length: record.length, writing: false };
}

type Answer = { readonly answer: UploadAnswer; readonly headers?: OutgoingHttpHeaders; readonly body?: string };

/** Pure: refusals common to every method but OPTIONS (tus: 412 without a supported Tus-Resumable). */
export function tusVersionRefusal(method: string | undefined, header: string | string[] | undefined): Answer | undefined {
  if (method === 'OPTIONS' || header === TUS_VERSION) return undefined;
  return { answer: 'TusVersion', headers: { [TusHeader.Version]: TUS_VERSION }, body: `Tus-Resumable ${TUS_VERSION} is required` };
}

/** Pure: what a HEAD answers in each state: the durable offset, and the length once known. */
export function headAnswer(state: ResumableState, other: 'none' | 'busy' | 'done'): Answer {
  if (other === 'done') return { answer: 'AlreadyDone', body: 'the upload is already complete' };
  if (other === 'busy') return { answer: 'Busy', body: 'an upload is already in progress' };
  switch (state.kind) {
    case 'empty':
      return { answer: 'Ok', headers: { [TusHeader.Offset]: '0', [TusHeader.DeferLength]: '1' } };
    case 'staging':
      return { answer: 'Ok', headers: { [TusHeader.Offset]: String(state.offset), [TusHeader.Length]: String(state.length) } };
    case 'staged':
      return { answer: 'Ok', headers: { [TusHeader.Offset]: String(state.length), [TusHeader.Length]: String(state.length) } };
  }
}

/** Pure: whether a PATCH may append, and from where; else the refusal. */
export function patchVerdict(
  state: ResumableState,
  other: 'none' | 'busy' | 'done',
  headers: { readonly contentType?: string | undefined; readonly offset?: string | string[] | undefined; readonly length?: string | string[] | undefined; readonly contentLength?: string | string[] | undefined },
): { readonly ok: true; readonly offset: number; readonly length: number } | { readonly ok: false; readonly refusal: Answer } {
  const refuse = (answer: UploadAnswer, body: string, extra?: OutgoingHttpHeaders) => ({ ok: false as const, refusal: { answer, body, ...(extra ? { headers: extra } : {}) } });
  if (other === 'done') return refuse('AlreadyDone', 'the upload is already complete');
  if (other === 'busy') return refuse('Busy', 'an upload is already in progress');
  if ((headers.contentType ?? '').split(';')[0]?.trim().toLowerCase() !== TUS_CONTENT_TYPE) return refuse('TusContentType', `a PATCH body must be Content-Type ${TUS_CONTENT_TYPE}`);
  const offset = byteCountOf(headers.offset);
  if (offset === undefined) return refuse('TusBadHeaders', 'Upload-Offset (a byte count) is required');
  const length = byteCountOf(headers.length);
  if (headers.length !== undefined && length === undefined) return refuse('TusBadHeaders', 'Upload-Length must be a byte count');
  if (state.kind === 'staging' && state.writing) return refuse('TusLocked', 'another request is still writing this upload; ask for the offset again');
  const durable = state.kind === 'empty' ? 0 : state.kind === 'staging' ? state.offset : state.length;
  if (offset !== durable) return refuse('TusOffsetConflict', `the upload is at byte ${durable}, not ${offset}`, { [TusHeader.Offset]: String(durable) });
  const known = state.kind === 'empty' ? undefined : state.length;
  if (known === undefined && length === undefined) return refuse('TusBadHeaders', 'the first PATCH must carry Upload-Length');
  if (known !== undefined && length !== undefined && length !== known) return refuse('TusBadHeaders', `Upload-Length ${length} differs from the ${known} given before`);
  const total = (known ?? length) as number;
  if (total === 0) return refuse('TusBadHeaders', 'an empty upload is not an image');
  const contentLength = byteCountOf(headers.contentLength);
  if (contentLength !== undefined && offset + contentLength > total) return refuse('TusBadHeaders', `the body (${contentLength} bytes from ${offset}) goes past Upload-Length ${total}`);
  return { ok: true, offset, length: total };
}

function answer(req: IncomingMessage, res: ServerResponse, { answer: name, headers, body }: Answer): void {
  if (res.headersSent) return;
  const bytes = Buffer.from(body ?? '');
  res.writeHead(UploadAnswer[name].status, {
    [TusHeader.Resumable]: TUS_VERSION,
    'cache-control': 'no-store',
    ...(bytes.length > 0 ? { 'content-type': 'text/plain; charset=utf-8' } : {}),
    ...(UploadAnswer[name].status === 204 ? {} : { 'content-length': bytes.length }),
    ...headers,
  });
  if (req.method === 'HEAD' || UploadAnswer[name].status === 204) return void endAfterBody(req, res);
  res.write(bytes);
  endAfterBody(req, res);
}

/** The resumable path of one upload server, staging at `stagedPath` (on scratch); none without scratch. */
export function createResumableUploads(stagedPath: string | undefined, host: ResumableHost): ResumableUploads {
  let state: ResumableState = { kind: 'empty' };
  /** The request of the PATCH writing now (for flush). */
  let writing: IncomingMessage | undefined;
  // An upload staged by an earlier pod resumes from its recorded durable offset (the scratch
  // volume outlives the pod); one staged whole is imported now.
  const cleared: Promise<void> =
    stagedPath === undefined
      ? Promise.resolve()
      : recoverStaged(stagedPath).then(
          (recovered) => {
            state = recovered;
            if (recovered.kind !== 'empty') host.logger.info({ ...recovered }, 'an upload staged by an earlier server resumes');
            if (recovered.kind === 'staged') host.staged(stagedPath, recovered.length);
          },
          (err: unknown) => {
            host.logger.warn({ err: (err as Error).message }, 'cannot read what an earlier server staged; starting over');
            return removeStaged(stagedPath).catch(() => undefined);
          },
        );

  async function append(req: IncomingMessage, res: ServerResponse, path: string, offset: number, length: number): Promise<void> {
    await cleared;
    state = { kind: 'staging', offset, length, writing: true };
    const log = host.logger.child({ path: 'resumable', offset, length });
    let position = offset;
    let handle: FileHandle | undefined;
    let broke: Error | undefined;
    let overrun = false;
    try {
      handle = await open(path, offset === 0 ? 'w' : 'r+');
      if (offset === 0) await handle.truncate(0);
      writing = req;
      let unsynced = 0;
      for await (const chunk of pulled(req)) {
        const room = length - position;
        const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
        if (part.length > 0) {
          await handle.write(part, 0, part.length, position);
          position += part.length;
          unsynced += part.length;
        }
        if (chunk.length > room) {
          overrun = true;
          break;
        }
        if (unsynced >= STAGE_SYNC_BYTES) {
          await handle.datasync();
          await writeRecord(path, position, length);
          unsynced = 0;
          state = { kind: 'staging', offset: position, length, writing: true };
        }
      }
    } catch (err) {
      broke = err as Error;
    } finally {
      writing = undefined;
      if (handle) {
        // What was written before a break is kept: it becomes the durable offset once synced.
        await handle
          .datasync()
          .then(() => writeRecord(path, position, length))
          .catch(() => (position = state.kind === 'staging' ? state.offset : offset));
        await handle.close().catch(() => undefined);
      }
    }
    if (!handle) {
      state = offset === 0 ? { kind: 'empty' } : { kind: 'staging', offset, length, writing: false };
      log.error({ err: broke?.message }, 'cannot open the staging file');
      return answer(req, res, { answer: 'Failed', body: `cannot stage the upload: ${broke?.message ?? 'unknown error'}` });
    }
    if (position >= length) {
      state = { kind: 'staged', length };
      log.info({ bytes: position - offset }, 'upload staged whole; importing it');
      host.staged(path, length);
    } else {
      state = { kind: 'staging', offset: position, length, writing: false };
    }
    if (overrun) return answer(req, res, { answer: 'TusBadHeaders', headers: { [TusHeader.Offset]: String(position) }, body: `the body goes past Upload-Length ${length}` });
    if (broke) {
      log.warn({ durable: position, err: broke.message }, 'the request broke; the upload resumes from the durable offset');
      return answer(req, res, { answer: 'Failed', body: `the upload broke at byte ${position}: ${broke.message}` });
    }
    log.info({ durable: position }, 'request appended');
    answer(req, res, { answer: 'TusPatched', headers: { [TusHeader.Offset]: String(position) } });
  }

  /** Settles when the running PATCH has ended (its durable offset then final). */
  let writerDone: Promise<void> = Promise.resolve();

  /**
   * A client that asks after a break usually asks before this side has seen that break: the
   * running PATCH is still draining what reached it. Wait for it (bounded) so the offset answered
   * is the final one, not a stale one the client would resend from.
   */
  async function settled(): Promise<void> {
    if (!(state.kind === 'staging' && state.writing)) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([writerDone, new Promise<void>((resolve) => (timer = setTimeout(resolve, WRITER_SETTLE_MS)))]);
    clearTimeout(timer);
  }

  function handle(req: IncomingMessage, res: ServerResponse): void {
    if (req.method === 'HEAD' || req.method === 'PATCH') {
      void cleared.then(settled).then(() => respond(req, res));
      return;
    }
    void cleared.then(() => respond(req, res));
  }

  async function flush(): Promise<void> {
    if (!writing) return;
    // The PATCH's own end (its finally) syncs and records what it wrote.
    writing.destroy();
    await writerDone;
    host.logger.info({ durable: state.kind === 'staging' ? state.offset : undefined }, 'stopping: what was written is durable');
  }

  function respond(req: IncomingMessage, res: ServerResponse): void {
    const version = tusVersionRefusal(req.method, req.headers[TusHeader.Resumable]);
    if (version) return answer(req, res, version);
    if (stagedPath === undefined) return answer(req, res, { answer: 'TusUnavailable', body: 'this upload server has no scratch space to stage a resumable upload on; use /v1beta1/upload' });
    const other = host.otherUpload();
    switch (req.method) {
      case 'OPTIONS':
        return answer(req, res, { answer: 'TusPatched', headers: { [TusHeader.Version]: TUS_VERSION } });
      case 'HEAD':
        return answer(req, res, headAnswer(state, other));
      case 'PATCH': {
        const verdict = patchVerdict(state, other, {
          contentType: req.headers['content-type'],
          offset: req.headers[TusHeader.Offset],
          length: req.headers[TusHeader.Length],
          contentLength: req.headers['content-length'],
        });
        if (!verdict.ok) return answer(req, res, verdict.refusal);
        state = { kind: 'staging', offset: verdict.offset, length: verdict.length, writing: true };
        writerDone = append(req, res, stagedPath, verdict.offset, verdict.length).catch((err: unknown) => {
          host.logger.error({ err: (err as Error).message }, 'resumable upload error');
          answer(req, res, { answer: 'Failed', body: (err as Error).message });
        });
        return;
      }
      default:
        return answer(req, res, { answer: 'NotFound', body: 'the resumable path takes OPTIONS, HEAD and PATCH' });
    }
  }

  return {
    handle,
    active: () => state.kind !== 'empty',
    state: () => state,
    ready: cleared,
    flush: () => flush().catch((err: unknown) => host.logger.warn({ err: (err as Error).message }, 'cannot make the staged upload durable')),
  };
}
