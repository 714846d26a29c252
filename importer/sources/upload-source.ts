/**
 * An upload request's body as a source: a stream read once, with no Range and no size unless the
 * client sent Content-Length. To the route it is just those facts (no local path, no URL, no
 * ranges), so it takes the paths any plain stream takes: streamed or decoded raw, scratch then
 * qemu-img for a format that needs conversion, extraction for an archive.
 *
 * The body is pulled chunk by chunk (`read()` on demand), so the socket is read only as fast as
 * the engine writes: backpressure reaches the client through TCP. When the engine stops early (an
 * image refused as too large), the body is left unread but not destroyed, so the server can still
 * answer on the same connection.
 */

import type { Readable } from 'node:stream';
import { ErrorCode, FerryError } from '../../src/errors.js';
import { byteCountOf } from '../../src/contract/upload-api.js';
import type { ByteStream } from '../streams.js';
import type { SourceOpener } from './source.js';

/** Reads `body` to its end without ever destroying it: stopping early just stops reading. */
export async function* pulled(body: Readable): ByteStream {
  for (;;) {
    const chunk = body.read() as Buffer | null;
    if (chunk !== null) {
      yield chunk;
      continue;
    }
    if (body.readableEnded) return;
    // Destroyed while the consumer was busy (its 'close' already fired): waiting would never end.
    if (body.destroyed) throw new FerryError(ErrorCode.Truncated, 'the client closed the connection before the upload was complete', { retryable: false });
    await new Promise<void>((resolve, reject) => {
      const done = (err?: Error): void => {
        body.off('readable', onReadable);
        body.off('end', onReadable);
        body.off('error', onError);
        body.off('close', onClose);
        if (err) reject(err);
        else resolve();
      };
      const onReadable = (): void => done();
      const onError = (err: Error): void => done(new FerryError(ErrorCode.Truncated, `the upload broke: ${err.message}`, { cause: err, retryable: false }));
      const onClose = (): void =>
        done(body.readableEnded ? undefined : new FerryError(ErrorCode.Truncated, 'the client closed the connection before the upload was complete', { retryable: false }));
      body.on('readable', onReadable);
      body.on('end', onReadable);
      body.on('error', onError);
      body.on('close', onClose);
    });
  }
}

export interface UploadBody {
  /** Opens the body once; a second open (a retry) fails: the bytes are gone. */
  readonly opener: SourceOpener;
  /** Settles when the whole body has been read (what an async upload answers on). */
  readonly received: Promise<void>;
}

/**
 * Wraps a body (the request's, or the file field of a form) as the engine's source. `size` is the
 * Content-Length of a raw body; undefined for chunked or form uploads.
 */
export function uploadBody(body: ByteStream, size: number | undefined, description: string): UploadBody {
  let markReceived!: () => void;
  const received = new Promise<void>((resolve) => (markReceived = resolve));
  async function* watched(): ByteStream {
    for await (const chunk of body) yield chunk;
    markReceived();
  }
  let opened = false;
  const opener: SourceOpener = async () => {
    if (opened) throw new FerryError(ErrorCode.SourceUnavailable, 'the upload body can be read only once; send it again', { retryable: false });
    opened = true;
    return { stream: watched(), ...(size !== undefined ? { size } : {}), acceptsRanges: false, description };
  };
  return { opener, received };
}

/** Pure: the body size a Content-Length header announces, or undefined (absent, chunked, garbage). */
export function contentLengthOf(header: string | undefined): number | undefined {
  return byteCountOf(header);
}
