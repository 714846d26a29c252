/**
 * A streaming reader of one field of a multipart/form-data body (RFC 7578), for the upload
 * server's form paths: it yields the bytes of the `file` part as they arrive, holding back only
 * the delimiter's length, and then reads the rest of the body to its end. Other parts before it
 * are skipped; part headers and the preamble are bounded. Only what CDI's form path needs: no
 * nested multiparts, no transfer encodings.
 */

import { ErrorCode, FerryError } from '../src/errors.js';
import type { ByteStream } from './streams.js';

const HEADER_LIMIT = 16 * 1024;
const PREAMBLE_LIMIT = 64 * 1024;

const bad = (message: string): FerryError => new FerryError(ErrorCode.InvalidSpec, `the form upload is malformed: ${message}`);

/** Pure: the boundary of a `multipart/form-data` Content-Type, or undefined. */
export function boundaryOf(contentType: string | undefined): string | undefined {
  if (contentType === undefined || !/^multipart\/form-data\s*(;|$)/i.test(contentType)) return undefined;
  const match = /;\s*boundary=(?:"([^"]{1,70})"|([^\s;"]{1,70}))/i.exec(contentType);
  return match?.[1] ?? match?.[2];
}

/** Pure: the `name` of a part from its header block (Content-Disposition: form-data; name="..."). */
export function partNameOf(headers: string): string | undefined {
  for (const line of headers.split('\r\n')) {
    const colon = line.indexOf(':');
    if (colon < 0 || line.slice(0, colon).trim().toLowerCase() !== 'content-disposition') continue;
    const match = /;\s*name=(?:"((?:[^"\\]|\\.)*)"|([^\s;]+))/i.exec(line.slice(colon + 1));
    return match ? (match[1] ?? match[2] ?? '').replace(/\\(.)/g, '$1') : undefined;
  }
  return undefined;
}

/** Buffered pulls from a byte stream. */
class Reader {
  buf: Buffer = Buffer.alloc(0);
  private readonly it: AsyncIterator<Buffer>;
  private ended = false;
  constructor(source: ByteStream) {
    this.it = source[Symbol.asyncIterator]();
  }
  /** Appends the next chunk; false at the end of the stream. */
  async fill(): Promise<boolean> {
    if (this.ended) return false;
    const next = await this.it.next();
    if (next.done) {
      this.ended = true;
      return false;
    }
    this.buf = this.buf.length === 0 ? next.value : Buffer.concat([this.buf, next.value]);
    return true;
  }
  /** Waits until `n` bytes are buffered; false if the stream ends first. */
  async need(n: number): Promise<boolean> {
    while (this.buf.length < n) if (!(await this.fill())) return false;
    return true;
  }
  skip(n: number): void {
    this.buf = this.buf.subarray(n);
  }
  async drain(): Promise<void> {
    this.buf = Buffer.alloc(0);
    while (await this.fill()) this.buf = Buffer.alloc(0);
  }
}

/** Finds `needle` in the buffer, reading up to `limit` bytes; returns its offset. */
async function find(reader: Reader, needle: Buffer, limit: number, what: string): Promise<number> {
  for (;;) {
    const at = reader.buf.indexOf(needle);
    if (at >= 0) return at;
    if (reader.buf.length > limit) throw bad(`${what} is longer than ${limit} bytes`);
    if (!(await reader.fill())) throw bad(`the body ended inside ${what}`);
  }
}

/** The bytes of the form field `field`, streamed; fails INVALID_SPEC when the form has none. */
export async function* formField(body: ByteStream, boundary: string, field: string): ByteStream {
  const reader = new Reader(body);
  const dash = Buffer.from(`--${boundary}`);
  const delimiter = Buffer.from(`\r\n--${boundary}`);
  // The first delimiter may open the body or follow a preamble line.
  const first = await find(reader, dash, PREAMBLE_LIMIT, 'the preamble');
  reader.skip(first + dash.length);
  for (;;) {
    if (!(await reader.need(2))) throw bad('the body ended after a boundary');
    if (reader.buf[0] === 0x2d && reader.buf[1] === 0x2d) throw bad(`there is no "${field}" field`);
    const headerEnd = await find(reader, Buffer.from('\r\n\r\n'), HEADER_LIMIT, 'the part headers');
    const headers = reader.buf.subarray(0, headerEnd).toString('latin1').replace(/^[ \t]*\r\n/, '');
    reader.skip(headerEnd + 4);
    const wanted = partNameOf(headers) === field;
    // Stream the part up to the next delimiter, holding back a possible partial delimiter.
    for (;;) {
      const at = reader.buf.indexOf(delimiter);
      if (at >= 0) {
        if (wanted && at > 0) yield reader.buf.subarray(0, at);
        reader.skip(at + delimiter.length);
        break;
      }
      const safe = reader.buf.length - (delimiter.length - 1);
      if (safe > 0) {
        if (wanted) yield reader.buf.subarray(0, safe);
        reader.skip(safe);
      }
      if (!(await reader.fill())) throw bad('the body ended inside a part (no closing boundary)');
    }
    if (wanted) {
      // The epilogue (other parts, the closing boundary) is read and dropped.
      await reader.drain();
      return;
    }
  }
}
