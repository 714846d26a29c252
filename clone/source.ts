/**
 * The clone source: the source volume as a clone stream (src/contract/clone-stream.ts), POSTed to
 * the target over HTTPS with a client certificate. Only allocated data travels: a disk file's
 * extents come from SEEK_DATA/SEEK_HOLE (disk-extents.ts), a device's from zero detection; holes
 * travel as lengths. Memory is one read (4 MiB) plus what the socket buffers: the body is pulled.
 */

import { request } from 'node:https';
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ErrorCode, FerryError, isErrorCode, toFerryError } from '../src/errors.js';
import { CLONE_ERROR_CODE_HEADER, CLONE_MEDIA_TYPE, CloneAnswer, CloneStreamEncoder, SourceKind } from '../src/contract/clone-stream.js';
import type { CloneSourceConfig } from '../src/contract/clone-env.js';
import { openSourceDisk, READ_CHUNK, type SourceDisk, sourceExtents, splitZeros } from './disk-extents.js';
import { packArchive, planArchive } from './archive-pack.js';

export interface SendCounters {
  /** Bytes of the stream sent (what crossed the wire, before TLS). */
  wireBytes: number;
  /** Bytes of disk data in it. */
  dataBytes: number;
}

/** The stream of a disk (file or device), from its extents. */
export async function* diskStream(disk: SourceDisk, counters: SendCounters, signal?: AbortSignal): AsyncGenerator<Buffer> {
  const extents = await sourceExtents(disk, signal);
  const encoder = new CloneStreamEncoder({ kind: disk.kind, size: disk.size, blockSize: disk.blockSize });
  yield* encoder.start();
  for (const extent of extents) {
    if (!extent.data) {
      yield* encoder.hole(extent.offset, extent.length);
      continue;
    }
    for (let at = extent.offset; at < extent.offset + extent.length; ) {
      const want = Math.min(READ_CHUNK, extent.offset + extent.length - at);
      const buf = Buffer.allocUnsafe(want);
      const { bytesRead } = await disk.handle.read(buf, 0, want, at);
      if (bytesRead !== want) throw new FerryError(ErrorCode.SourceUnavailable, `the source ended at ${at + bytesRead}, inside its size ${disk.size}: it changed during the clone`);
      for (const piece of splitZeros(buf, at)) {
        yield* piece.zero ? encoder.hole(piece.offset, piece.bytes.length) : encoder.data(piece.offset, piece.bytes);
      }
      at += want;
    }
  }
  yield* encoder.end();
  counters.dataBytes = encoder.dataBytes;
}

/** The stream of a directory tree: its tar as sequential data extents. */
export async function* archiveStream(root: string, counters: SendCounters): AsyncGenerator<Buffer> {
  const plan = await planArchive(root);
  const encoder = new CloneStreamEncoder({ kind: SourceKind.Archive, size: plan.contentBytes, blockSize: 1 });
  yield* encoder.start();
  let offset = 0;
  for await (const chunk of packArchive(root, plan)) {
    yield* encoder.data(offset, chunk as Buffer);
    offset += (chunk as Buffer).length;
  }
  yield* encoder.end();
  counters.dataBytes = encoder.dataBytes;
}

/** Counts what passes. */
async function* counted(stream: AsyncIterable<Buffer>, counters: SendCounters): AsyncGenerator<Buffer> {
  for await (const chunk of stream) {
    counters.wireBytes += chunk.length;
    yield chunk;
  }
}

export interface CloneSourceDeps {
  readonly config: CloneSourceConfig;
  /** PEM: the client key and certificate, and the CA of the target's server certificate. */
  readonly tls: { readonly key: string | Buffer; readonly cert: string | Buffer; readonly serverCa: string | Buffer };
  readonly signal?: AbortSignal;
}

export interface CloneSent extends SendCounters {
  readonly size: number;
}

function answerError(res: IncomingMessage, body: string): FerryError {
  const header = res.headers[CLONE_ERROR_CODE_HEADER];
  const code = typeof header === 'string' && isErrorCode(header) ? header : res.statusCode === CloneAnswer.ClientRefused ? ErrorCode.Unauthorized : ErrorCode.Internal;
  const retryable = res.statusCode === CloneAnswer.Busy || code === ErrorCode.Truncated || code === ErrorCode.Interrupted;
  return new FerryError(code, `the clone target answered ${res.statusCode}: ${body.trim().slice(0, 500)}`, { retryable });
}

function transportError(err: unknown): FerryError {
  if (err instanceof FerryError) return err;
  const code = (err as NodeJS.ErrnoException).code ?? '';
  if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|HOSTNAME/.test(code)) return new FerryError(ErrorCode.TlsError, `TLS with the clone target failed: ${(err as Error).message}`, { cause: err });
  if (code === 'ABORT_ERR') return new FerryError(ErrorCode.Interrupted, 'the clone source was stopped', { cause: err });
  return new FerryError(ErrorCode.SourceUnavailable, `the clone target could not be reached: ${(err as Error).message}`, { cause: err, retryable: true });
}

/** Sends the source to the target; resolves once the target answered that the clone is complete. */
export async function sendClone(deps: CloneSourceDeps): Promise<CloneSent> {
  const { config } = deps;
  const counters: SendCounters = { wireBytes: 0, dataBytes: 0 };
  const disk = config.kind === SourceKind.Archive ? undefined : await openSourceDisk(config.path, config.kind);
  try {
    const stream = disk === undefined ? archiveStream(config.path, counters) : diskStream(disk, counters, deps.signal);
    const url = new URL(config.url);
    const req = request(url, {
      method: 'POST',
      key: deps.tls.key,
      cert: deps.tls.cert,
      ca: deps.tls.serverCa,
      minVersion: 'TLSv1.2',
      agent: false,
      headers: { 'content-type': CLONE_MEDIA_TYPE, 'transfer-encoding': 'chunked' },
      ...(deps.signal ? { signal: deps.signal } : {}),
    });
    const answered = new Promise<{ res: IncomingMessage; body: string }>((resolve, reject) => {
      req.once('response', (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body = (body + d).slice(0, 4096)));
        res.once('end', () => resolve({ res, body }));
        res.once('error', reject);
      });
      req.once('error', reject);
    });
    answered.catch(() => undefined);
    // Read ahead of the socket, so a disk read overlaps the sending of the one before it.
    const body = Readable.from(counted(stream, counters), { objectMode: false, highWaterMark: 2 * READ_CHUNK });
    // An early answer (a refusal) ends the sending: the body is not worth finishing.
    req.once('response', (res) => {
      if (res.statusCode !== CloneAnswer.Ok) body.destroy();
    });
    const sent = pipeline(body, req).then(
      () => undefined,
      (err: unknown) => err,
    );
    const [sendError, answer] = await Promise.all([sent, answered.then((a) => a, (err: unknown) => ({ error: err }))]);
    if ('error' in answer) throw transportError(sendError ?? answer.error);
    if (answer.res.statusCode !== CloneAnswer.Ok) throw answerError(answer.res, answer.body);
    if (sendError !== undefined) throw transportError(sendError);
    return { ...counters, size: disk?.size ?? 0 };
  } catch (err) {
    throw toFerryError(err);
  } finally {
    await disk?.handle.close();
  }
}
