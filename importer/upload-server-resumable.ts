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
import { type FerryError, toFerryError } from '../src/errors.js';
import type { ImportSuccess } from '../src/contract/termination.js';
import { byteCountOf, ERROR_CODE_HEADER, fingerprintOf, TUS_CONTENT_TYPE, TUS_VERSION, TusHeader, UploadAnswer } from '../src/contract/upload-api.js';
import { endAfterBody } from '../src/io/http-answer.js';
import { GatheredWriter } from './raw-writer.js';
import { pulled } from './sources/upload-source.js';
import { IN_PLACE_HEAD_BYTES, type InPlaceWrites } from './upload-server-in-place.js';

/** fsync at least this often while a PATCH streams (and always when it ends). */
export const STAGE_SYNC_BYTES = 64 * 1024 * 1024;

/** Beside the staged file: `{"offset":N,"length":L}`, the durable offset, replaced (write, fsync, rename) after each fsync of the staged file. */
export const STAGE_RECORD_SUFFIX = '.offset';

/** How long a HEAD or PATCH waits for a running PATCH to end before answering (423 for a PATCH). */
export const WRITER_SETTLE_MS = 3000;

/**
 * Where a resumable upload's bytes go: absent, staged on scratch (then imported by the engine);
 * 'in-place', a raw image written straight into the target (importer/upload-server-in-place.ts).
 */
export type StageMode = 'in-place';

/** What every non-empty state carries: the mode, and the fingerprint the first PATCH sent (if any). */
export interface StagedFacts {
  readonly mode?: StageMode;
  readonly fingerprint?: string;
}

export type ResumableState =
  /** Nothing staged and no request running. */
  | { readonly kind: 'empty' }
  /** Bytes staged up to `offset` (durable); `writing` while a PATCH streams. */
  | ({ readonly kind: 'staging'; readonly offset: number; readonly length: number; readonly writing: boolean } & StagedFacts)
  /** Every byte is in; the import (or the in-place finish) runs or ran. */
  | ({ readonly kind: 'staged'; readonly length: number } & StagedFacts);

/** The durable-offset record, as written beside the staged file. */
export type StageRecord = { readonly offset: number; readonly length: number } & StagedFacts;

/** What the rest of the upload server decides: whether an upload may start, and what to do once staged. */
export interface ResumableHost {
  /** The one-shot paths' state: a resumable upload may start only when no other upload is running or done. */
  readonly otherUpload: () => 'none' | 'busy' | 'done';
  /** Called once, when the whole body is durable in `stagedPath`; imports it in the background. */
  readonly staged: (stagedPath: string, length: number) => void;
  readonly logger: Logger;
  /** Raw images written into the target as they stream; without it every upload is staged. */
  readonly inPlace?: InPlaceWrites;
  /** Called once, when an upload written in place is complete (its last PATCH answered) or failed after an earlier pod had all its bytes. */
  readonly completed?: (outcome: ImportSuccess | FerryError) => void;
  /** The answer for a refused or failed upload (CDI's wording for an image too big). */
  readonly failure?: (error: FerryError) => { readonly answer: UploadAnswer; readonly body: string };
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
export function decodeStageRecord(text: string): StageRecord | undefined {
  try {
    const v = JSON.parse(text) as { offset?: unknown; length?: unknown; mode?: unknown; fingerprint?: unknown };
    const ok = (n: unknown): n is number => typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
    if (!ok(v.offset) || !ok(v.length) || v.length === 0 || v.offset > v.length) return undefined;
    if (v.mode !== undefined && v.mode !== 'in-place') return undefined;
    if (v.fingerprint !== undefined && typeof v.fingerprint !== 'string') return undefined;
    return { offset: v.offset, length: v.length, ...(v.mode !== undefined ? { mode: v.mode } : {}), ...(v.fingerprint !== undefined ? { fingerprint: v.fingerprint } : {}) };
  } catch {
    return undefined;
  }
}

/** Pure: the record's text (what decodeStageRecord reads back). */
export function encodeStageRecord(record: StageRecord): string {
  return JSON.stringify({ offset: record.offset, length: record.length, ...(record.mode ? { mode: record.mode } : {}), ...(record.fingerprint !== undefined ? { fingerprint: record.fingerprint } : {}) });
}

/**
 * Pure: whether a request may go on with what is staged: only with the fingerprint the upload was
 * started with (none, for a client that sends none). A different file of the same length must
 * start over, never be appended to another's bytes.
 */
export function sameUpload(state: ResumableState, fingerprint: string | undefined): boolean {
  return state.kind === 'empty' || state.fingerprint === fingerprint;
}

/** Removes a staged upload and its record (after it was imported, or when it cannot be trusted). */
export async function removeStaged(stagedPath: string): Promise<void> {
  await Promise.all([rm(stagedPath, { force: true }), rm(stagedPath + STAGE_RECORD_SUFFIX, { force: true }), rm(`${stagedPath}${STAGE_RECORD_SUFFIX}.tmp`, { force: true })]);
}

async function writeRecord(stagedPath: string, record: StageRecord): Promise<void> {
  const tmp = `${stagedPath}${STAGE_RECORD_SUFFIX}.tmp`;
  const handle = await open(tmp, 'w');
  try {
    await handle.writeFile(encodeStageRecord(record));
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
async function recoverStaged(stagedPath: string, inPlace: InPlaceWrites | undefined): Promise<ResumableState> {
  const record = decodeStageRecord(await readFile(stagedPath + STAGE_RECORD_SUFFIX, 'utf8').catch(() => ''));
  if (record?.mode === 'in-place') {
    // The bytes are in the target; a file target's upload file is cut to the offset when the next PATCH opens it.
    if (!inPlace || !(await inPlace.present())) {
      await removeStaged(stagedPath);
      return { kind: 'empty' };
    }
  } else {
    const size = await stat(stagedPath).then((s) => s.size, () => -1);
    if (!record || size < record.offset) {
      await removeStaged(stagedPath);
      return { kind: 'empty' };
    }
    await truncate(stagedPath, record.offset);
  }
  const facts: StagedFacts = { ...(record.mode ? { mode: record.mode } : {}), ...(record.fingerprint !== undefined ? { fingerprint: record.fingerprint } : {}) };
  return record.offset >= record.length ? { kind: 'staged', length: record.length, ...facts } : { kind: 'staging', offset: record.offset, length: record.length, writing: false, ...facts };
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
  const failure = host.failure ?? ((error: FerryError) => ({ answer: 'Failed' as const, body: error.message }));
  // An upload staged by an earlier pod resumes from its recorded durable offset (the scratch
  // volume outlives the pod); one staged whole is imported now (written in place: finished now).
  const cleared: Promise<void> =
    stagedPath === undefined
      ? Promise.resolve()
      : recoverStaged(stagedPath, host.inPlace).then(
          (recovered) => {
            state = recovered;
            if (recovered.kind !== 'empty') host.logger.info({ ...recovered }, 'an upload staged by an earlier server resumes');
            if (recovered.kind === 'staged') {
              if (recovered.mode === 'in-place') void finishInPlace(stagedPath, recovered.length).then((outcome) => host.completed?.(outcome));
              else host.staged(stagedPath, recovered.length);
            }
          },
          (err: unknown) => {
            host.logger.warn({ err: (err as Error).message }, 'cannot read what an earlier server staged; starting over');
            return removeStaged(stagedPath).catch(() => undefined);
          },
        );

  /** All bytes of an in-place upload are durable: the disk is completed, or given up (and the server may take another upload). */
  async function finishInPlace(path: string, length: number): Promise<ImportSuccess | FerryError> {
    const inPlace = host.inPlace as InPlaceWrites;
    try {
      const result = await inPlace.finish(length);
      await removeStaged(path).catch(() => undefined);
      host.logger.info({ ...result }, 'upload written in place');
      return result;
    } catch (err) {
      const error = toFerryError(err);
      host.logger.error({ code: error.code }, `finishing an upload written in place failed: ${error.message}`);
      await inPlace.discard().catch(() => undefined);
      await removeStaged(path).catch(() => undefined);
      state = { kind: 'empty' };
      return error;
    }
  }

  /** Throws away what is staged or written (another file is being uploaded now). */
  async function restart(path: string): Promise<void> {
    if (state.kind !== 'empty' && state.mode === 'in-place') await host.inPlace?.discard();
    await removeStaged(path);
    state = { kind: 'empty' };
  }

  /** The first bytes of the first PATCH, enough to tell a raw image (IN_PLACE_HEAD_BYTES, or the whole body when shorter). */
  async function firstBytes(chunks: AsyncIterator<Buffer>, want: number): Promise<{ readonly head: Buffer[]; readonly complete: boolean; readonly broke?: Error }> {
    const head: Buffer[] = [];
    let bytes = 0;
    try {
      while (bytes < want) {
        const next = await chunks.next();
        if (next.done) break;
        head.push(next.value);
        bytes += next.value.length;
      }
    } catch (err) {
      return { head, complete: false, broke: err as Error };
    }
    return { head, complete: bytes >= want };
  }

  async function append(req: IncomingMessage, res: ServerResponse, path: string, offset: number, length: number, facts: StagedFacts): Promise<void> {
    await cleared;
    let { mode } = facts;
    const { fingerprint } = facts;
    const log = host.logger.child({ path: 'resumable', offset, length });
    const chunks = pulled(req)[Symbol.asyncIterator]();
    writing = req;
    let pending: Buffer[] = [];
    let broke: Error | undefined;
    if (offset === 0) {
      // Where the bytes go is decided once, from the first ones: a raw image into the target, the rest staged.
      const first = await firstBytes(chunks, Math.min(IN_PLACE_HEAD_BYTES, length));
      pending = first.head;
      broke = first.broke;
      const verdict = first.complete && host.inPlace ? await host.inPlace.verdict(Buffer.concat(first.head), length).catch((err: unknown) => ({ kind: 'refused' as const, error: toFerryError(err) })) : { kind: 'staged' as const };
      if (verdict.kind === 'refused') {
        writing = undefined;
        state = { kind: 'empty' };
        log.warn({ code: verdict.error.code }, `upload refused: ${verdict.error.message}`);
        const { answer: name, body } = failure(verdict.error);
        return answer(req, res, { answer: name, body, headers: { [ERROR_CODE_HEADER]: verdict.error.code } });
      }
      mode = verdict.kind === 'in-place' ? 'in-place' : undefined;
      if (mode) log.info('a raw image: written straight into the target');
    }
    const kept: StagedFacts = { ...(mode ? { mode } : {}), ...(fingerprint !== undefined ? { fingerprint } : {}) };
    state = { kind: 'staging', offset, length, writing: true, ...kept };
    let position = offset;
    let handle: FileHandle | undefined;
    let overrun = false;
    /** The periodic fdatasync and record in flight (one at a time): the stream goes on meanwhile. */
    let syncing: Promise<void> = Promise.resolve();
    try {
      let sparse = false;
      if (mode === 'in-place') ({ handle, sparse } = await (host.inPlace as InPlaceWrites).open(offset));
      else {
        handle = await open(path, offset === 0 ? 'w' : 'r+');
        if (offset === 0) await handle.truncate(0);
      }
      const writer = new GatheredWriter(handle, offset, sparse);
      let synced = offset;
      const take = async (chunk: Buffer): Promise<boolean> => {
        const room = length - writer.position;
        await writer.push(chunk.length > room ? chunk.subarray(0, room) : chunk);
        if (chunk.length > room) return (overrun = true);
        if (writer.position - synced >= STAGE_SYNC_BYTES) {
          synced = writer.position;
          const upTo = await writer.drain();
          await syncing;
          // Bytes written after this point may be synced too; the record names only what was written before it.
          const file = handle as FileHandle;
          syncing = file
            .datasync()
            .then(() => writeRecord(path, { offset: upTo, length, ...kept }))
            .then(() => void (state = { kind: 'staging', offset: upTo, length, writing: true, ...kept }));
          syncing.catch(() => undefined); // awaited before the next one and at the end
        }
        return false;
      };
      try {
        for (const chunk of pending) if (await take(chunk)) break;
        pending = [];
        if (broke) throw broke;
        while (!overrun) {
          const next = await chunks.next();
          if (next.done || (await take(next.value))) break;
        }
      } finally {
        // What was received before a break is kept: it becomes the durable offset once synced.
        position = await writer.drain().catch(() => (state.kind === 'staging' ? state.offset : offset));
        await syncing.catch(() => undefined);
      }
    } catch (err) {
      broke = err as Error;
    } finally {
      writing = undefined;
      if (handle) {
        const written = position;
        await handle
          .datasync()
          .then(() => writeRecord(path, { offset: written, length, ...kept }))
          .catch(() => (position = state.kind === 'staging' ? state.offset : offset));
        await handle.close().catch(() => undefined);
      }
    }
    if (!handle) {
      state = offset === 0 ? { kind: 'empty' } : { kind: 'staging', offset, length, writing: false, ...kept };
      log.error({ err: broke?.message }, 'cannot open the staging file');
      return answer(req, res, { answer: 'Failed', body: `cannot stage the upload: ${broke?.message ?? 'unknown error'}` });
    }
    if (position >= length) {
      state = { kind: 'staged', length, ...kept };
      if (mode !== 'in-place') {
        log.info({ bytes: position - offset }, 'upload staged whole; importing it');
        host.staged(path, length);
      } else {
        // Finished before the last PATCH is answered: its answer says whether the disk is complete.
        const outcome = await finishInPlace(path, length);
        if (outcome instanceof Error) {
          const { answer: name, body } = failure(outcome);
          return answer(req, res, { answer: name, body, headers: { [ERROR_CODE_HEADER]: outcome.code } });
        }
        // Settled once the answer is out: the server exits after that.
        const done = (): void => host.completed?.(outcome);
        res.once('finish', done);
        res.once('close', done);
      }
    } else {
      state = { kind: 'staging', offset: position, length, writing: false, ...kept };
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
    const ready = req.method === 'HEAD' || req.method === 'PATCH' ? cleared.then(settled) : cleared;
    void ready
      .then(() => respond(req, res))
      .catch((err: unknown) => {
        host.logger.error({ err: (err as Error).message }, 'resumable upload error');
        answer(req, res, { answer: 'Failed', body: (err as Error).message });
      });
  }

  async function flush(): Promise<void> {
    if (!writing) return;
    // The PATCH's own end (its finally) syncs and records what it wrote.
    writing.destroy();
    await writerDone;
    host.logger.info({ durable: state.kind === 'staging' ? state.offset : undefined }, 'stopping: what was written is durable');
  }

  async function respond(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const version = tusVersionRefusal(req.method, req.headers[TusHeader.Resumable]);
    if (version) return answer(req, res, version);
    if (stagedPath === undefined) return answer(req, res, { answer: 'TusUnavailable', body: 'this upload server has no scratch space to stage a resumable upload on; use /v1beta1/upload' });
    const fingerprint = fingerprintOf(req.headers[TusHeader.Metadata]);
    if ((req.method === 'HEAD' || req.method === 'PATCH') && !sameUpload(state, fingerprint)) {
      if (state.kind === 'staging' && !state.writing) {
        host.logger.warn({ offset: state.offset, length: state.length, staged: state.fingerprint ?? null, sent: fingerprint ?? null }, 'another file than the one staged: the staged bytes are dropped and the upload starts over from byte 0');
        await restart(stagedPath);
      } else if (state.kind === 'staged') {
        return answer(req, res, { answer: 'Busy', body: 'another file, uploaded whole, is being processed' });
      } else {
        // Still writing the other file's bytes (its break not seen yet): never answer its offset to this one.
        return answer(req, res, { answer: 'TusLocked', body: 'another file is still being written; ask again shortly' });
      }
    }
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
        const facts: StagedFacts = {
          ...(state.kind === 'staging' && state.mode ? { mode: state.mode } : {}),
          ...(fingerprint !== undefined ? { fingerprint } : {}),
        };
        state = { kind: 'staging', offset: verdict.offset, length: verdict.length, writing: true, ...facts };
        writerDone = append(req, res, stagedPath, verdict.offset, verdict.length, facts).catch((err: unknown) => {
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
