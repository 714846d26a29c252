/**
 * The host-assisted clone's wire format: what `ferry clone-source` sends and `ferry clone-target`
 * reads, one codec for both sides (docs/adr/0012-clone-data-plane.md). Big-endian throughout.
 *
 *   header  "FERRYCLN" | version u8 (1) | kind u8 | flags u16 (0) | block size u32 | size u64   (24 bytes)
 *   data    'D' | offset u64 | length u32 (1..MAX_DATA_RECORD) | bytes                          (13 + length)
 *   hole    'H' | offset u64 | length u64 (> 0)                                                (17)
 *   end     'E' | data bytes u64 | sha256 u8[32]                                               (41)
 *
 * Extents are contiguous and in order: each starts where the previous one ended, the first at 0,
 * so an overlap, a gap or a reordering is refused as it arrives rather than reconciled. For disk
 * kinds (`fs`, `block`) `size` is the virtual size, no extent may end past it and the extents must
 * cover it exactly; only allocated data travels, holes as lengths. For `archive` the extents are
 * the bytes of a tar stream, data only, and `size` is the bytes of file content in it (what the
 * target's capacity must hold). The end record's digest is the sha256 of every byte before it
 * (header, records, the end tag and its count), so a stream cut short anywhere, or changed, never
 * reads as complete: with contiguous extents covering the disk, the stream fixes every byte of it.
 *
 * Also here: the HTTP side of the contract (path, media type, answers), which both programs use.
 */

import { createHash, type Hash } from 'node:crypto';
import { ErrorCode, FerryError } from '../errors.js';

export const CLONE_MAGIC = Buffer.from('FERRYCLN', 'latin1');
export const CLONE_STREAM_VERSION = 1;
export const HEADER_BYTES = 24;
export const DATA_RECORD_HEADER = 13;
export const HOLE_RECORD_BYTES = 17;
export const END_RECORD_BYTES = 41;
/** The largest data record: bounds what a reader holds for one record's header. */
export const MAX_DATA_RECORD = 4 * 1024 * 1024;
/** The largest size a stream may announce: 2^53 - 1 bytes (JavaScript's exact integers). */
export const MAX_STREAM_SIZE = Number.MAX_SAFE_INTEGER;

export const SourceKind = { Filesystem: 'fs', Block: 'block', Archive: 'archive' } as const;
export type SourceKind = (typeof SourceKind)[keyof typeof SourceKind];
const KIND_BYTE: Readonly<Record<SourceKind, number>> = { fs: 1, block: 2, archive: 3 };

const Tag = { Data: 0x44, Hole: 0x48, End: 0x45 } as const;

/** Why a stream was refused: stable names, in the error's `details.fault`. */
export const CloneStreamFault = {
  BadMagic: 'BAD_MAGIC',
  BadVersion: 'BAD_VERSION',
  BadHeader: 'BAD_HEADER',
  UnknownRecord: 'UNKNOWN_RECORD',
  BadLength: 'BAD_LENGTH',
  Overlap: 'OVERLAP',
  Gap: 'GAP',
  BeyondSize: 'BEYOND_SIZE',
  Incomplete: 'INCOMPLETE',
  HoleInArchive: 'HOLE_IN_ARCHIVE',
  CountMismatch: 'COUNT_MISMATCH',
  Truncated: 'TRUNCATED',
  ChecksumMismatch: 'CHECKSUM_MISMATCH',
  TrailingBytes: 'TRAILING_BYTES',
} as const;
export type CloneStreamFault = (typeof CloneStreamFault)[keyof typeof CloneStreamFault];

/** The FerryError code of each fault: a cut stream can be retried, a corrupt one is a source's bug. */
export function faultCode(fault: CloneStreamFault): ErrorCode {
  if (fault === CloneStreamFault.Truncated) return ErrorCode.Truncated;
  if (fault === CloneStreamFault.ChecksumMismatch) return ErrorCode.ChecksumMismatch;
  return ErrorCode.InvalidImage;
}

export class CloneStreamError extends FerryError {
  readonly fault: CloneStreamFault;
  constructor(fault: CloneStreamFault, message: string) {
    super(faultCode(fault), `clone stream: ${message}`, { details: { fault } });
    this.fault = fault;
  }
}

const refuse = (fault: CloneStreamFault, message: string): never => {
  throw new CloneStreamError(fault, message);
};

export interface CloneHeader {
  readonly kind: SourceKind;
  /** Disk kinds: the virtual size. Archive: the bytes of file content in the tar. */
  readonly size: number;
  /** The source's allocation granularity (4096 for a file, 512 for a device, 1 for a tar). */
  readonly blockSize: number;
}

function checkHeader(header: CloneHeader): CloneHeader {
  if (!Object.values(SourceKind).includes(header.kind)) refuse(CloneStreamFault.BadHeader, `unknown source kind ${String(header.kind)}`);
  if (!Number.isSafeInteger(header.size) || header.size < 0) refuse(CloneStreamFault.BadHeader, `size ${header.size} is not a byte count`);
  const b = header.blockSize;
  if (!Number.isInteger(b) || b < 1 || b > MAX_DATA_RECORD || (b & (b - 1)) !== 0) refuse(CloneStreamFault.BadHeader, `block size ${b} is not a power of two up to ${MAX_DATA_RECORD}`);
  return Object.freeze({ ...header });
}

export function encodeHeader(header: CloneHeader): Buffer {
  checkHeader(header);
  const buf = Buffer.alloc(HEADER_BYTES);
  CLONE_MAGIC.copy(buf, 0);
  buf.writeUInt8(CLONE_STREAM_VERSION, 8);
  buf.writeUInt8(KIND_BYTE[header.kind], 9);
  buf.writeUInt16BE(0, 10);
  buf.writeUInt32BE(header.blockSize, 12);
  buf.writeBigUInt64BE(BigInt(header.size), 16);
  return buf;
}

export function decodeHeader(buf: Buffer): CloneHeader {
  if (buf.length < HEADER_BYTES) refuse(CloneStreamFault.Truncated, `the stream ended inside the header (${buf.length} of ${HEADER_BYTES} bytes)`);
  if (!buf.subarray(0, 8).equals(CLONE_MAGIC)) refuse(CloneStreamFault.BadMagic, 'not a Ferry clone stream (bad magic)');
  const version = buf.readUInt8(8);
  if (version !== CLONE_STREAM_VERSION) refuse(CloneStreamFault.BadVersion, `version ${version}; this reader speaks ${CLONE_STREAM_VERSION}`);
  const kindByte = buf.readUInt8(9);
  const kind = (Object.keys(KIND_BYTE) as SourceKind[]).find((k) => KIND_BYTE[k] === kindByte) ?? refuse(CloneStreamFault.BadHeader, `unknown source kind byte ${kindByte}`);
  if (buf.readUInt16BE(10) !== 0) refuse(CloneStreamFault.BadHeader, 'reserved flags are set');
  const size = buf.readBigUInt64BE(16);
  if (size > BigInt(MAX_STREAM_SIZE)) refuse(CloneStreamFault.BadHeader, `size ${size} is beyond ${MAX_STREAM_SIZE}`);
  return checkHeader({ kind, size: Number(size), blockSize: buf.readUInt32BE(12) });
}

/**
 * Pure: the one rule for where the next extent may start and end, kept by the encoder (a source
 * cannot send what a target would refuse) and by the decoder.
 */
export class ExtentCursor {
  /** Where the next extent must start. */
  next = 0;
  dataBytes = 0;

  constructor(readonly header: CloneHeader) {}

  private get disk(): boolean {
    return this.header.kind !== SourceKind.Archive;
  }

  take(kind: 'data' | 'hole', offset: number, length: number): void {
    if (!Number.isSafeInteger(length) || length <= 0) refuse(CloneStreamFault.BadLength, `${kind} extent at ${offset} has length ${length}`);
    if (kind === 'data' && length > MAX_DATA_RECORD) refuse(CloneStreamFault.BadLength, `data record of ${length} bytes is over ${MAX_DATA_RECORD}`);
    if (kind === 'hole' && !this.disk) refuse(CloneStreamFault.HoleInArchive, `a hole at ${offset} in an archive stream`);
    if (offset < this.next) refuse(CloneStreamFault.Overlap, `${kind} extent at ${offset} overlaps what was sent up to ${this.next}`);
    if (offset > this.next) refuse(CloneStreamFault.Gap, `${kind} extent at ${offset} leaves a gap after ${this.next}`);
    if (this.disk && offset + length > this.header.size) refuse(CloneStreamFault.BeyondSize, `${kind} extent ${offset}+${length} ends past the virtual size ${this.header.size}`);
    this.next = offset + length;
    if (kind === 'data') this.dataBytes += length;
  }

  finish(): void {
    if (this.disk && this.next !== this.header.size) refuse(CloneStreamFault.Incomplete, `the extents end at ${this.next}, short of the virtual size ${this.header.size}`);
  }
}

/**
 * Writes a stream: each method returns the buffers to send, in order. Consecutive holes are sent
 * as one record; data larger than a record is split. The caller's data buffers are passed through
 * without a copy.
 */
export class CloneStreamEncoder {
  private readonly hash: Hash = createHash('sha256');
  private readonly cursor: ExtentCursor;
  private pending: { offset: number; length: number } | undefined;
  private ended = false;

  constructor(header: CloneHeader) {
    this.cursor = new ExtentCursor(checkHeader(header));
  }

  /** The header: send first. */
  start(): Buffer[] {
    return [this.hashed(encodeHeader(this.cursor.header))];
  }

  data(offset: number, bytes: Buffer): Buffer[] {
    const out = this.flushHole();
    if (bytes.length === 0) this.cursor.take('data', offset, 0);
    for (let at = 0; at < bytes.length; at += MAX_DATA_RECORD) {
      const piece = bytes.subarray(at, Math.min(bytes.length, at + MAX_DATA_RECORD));
      this.cursor.take('data', offset + at, piece.length);
      const head = Buffer.alloc(DATA_RECORD_HEADER);
      head.writeUInt8(Tag.Data, 0);
      head.writeBigUInt64BE(BigInt(offset + at), 1);
      head.writeUInt32BE(piece.length, 9);
      out.push(this.hashed(head), this.hashed(piece));
    }
    return out;
  }

  /** A hole: held back and merged with the holes that follow it. */
  hole(offset: number, length: number): Buffer[] {
    if (this.pending !== undefined && this.pending.offset + this.pending.length === offset) {
      this.pending.length += length;
      return [];
    }
    const out = this.flushHole();
    this.pending = { offset, length };
    return out;
  }

  end(): Buffer[] {
    const out = this.flushHole();
    this.cursor.finish();
    this.ended = true;
    const tail = Buffer.alloc(9);
    tail.writeUInt8(Tag.End, 0);
    tail.writeBigUInt64BE(BigInt(this.cursor.dataBytes), 1);
    this.hash.update(tail);
    out.push(tail, this.hash.digest());
    return out;
  }

  get dataBytes(): number {
    return this.cursor.dataBytes;
  }

  get finished(): boolean {
    return this.ended;
  }

  private flushHole(): Buffer[] {
    const hole = this.pending;
    if (hole === undefined) return [];
    this.pending = undefined;
    this.cursor.take('hole', hole.offset, hole.length);
    const rec = Buffer.alloc(HOLE_RECORD_BYTES);
    rec.writeUInt8(Tag.Hole, 0);
    rec.writeBigUInt64BE(BigInt(hole.offset), 1);
    rec.writeBigUInt64BE(BigInt(hole.length), 9);
    return [this.hashed(rec)];
  }

  private hashed(buf: Buffer): Buffer {
    this.hash.update(buf);
    return buf;
  }
}

export type CloneEvent =
  | { readonly type: 'header'; readonly header: CloneHeader }
  /** A piece of a data record (a record may arrive in several pieces). */
  | { readonly type: 'data'; readonly offset: number; readonly bytes: Buffer }
  | { readonly type: 'hole'; readonly offset: number; readonly length: number }
  /** Only after the digest matched. */
  | { readonly type: 'end'; readonly dataBytes: number };

/** Pulls exact byte counts out of a chunked input, hashing what it hands out. */
class Reader {
  private chunk: Buffer = Buffer.alloc(0);
  private readonly it: AsyncIterator<Buffer>;
  readonly hash: Hash = createHash('sha256');
  /** Bytes consumed so far (for messages). */
  consumed = 0;

  constructor(input: AsyncIterable<Buffer>) {
    this.it = input[Symbol.asyncIterator]();
  }

  /** Up to `max` bytes (at least one), or undefined at the end of the input. */
  async some(max: number, hashed = true): Promise<Buffer | undefined> {
    while (this.chunk.length === 0) {
      const { value, done } = await this.it.next();
      if (done) return undefined;
      this.chunk = Buffer.isBuffer(value) ? value : Buffer.from(value as Uint8Array);
    }
    const out = this.chunk.subarray(0, max);
    this.chunk = this.chunk.subarray(out.length);
    this.consumed += out.length;
    if (hashed) this.hash.update(out);
    return out;
  }

  /** Exactly `n` bytes, or fewer if the input ends first. */
  async exact(n: number, hashed = true): Promise<Buffer> {
    const parts: Buffer[] = [];
    let have = 0;
    while (have < n) {
      const part = await this.some(n - have, hashed);
      if (part === undefined) break;
      parts.push(part);
      have += part.length;
    }
    return parts.length === 1 ? (parts[0] as Buffer) : Buffer.concat(parts, have);
  }

  async atEnd(): Promise<boolean> {
    return (await this.some(1, false)) === undefined;
  }

  async return(): Promise<void> {
    await this.it.return?.();
  }
}

/**
 * Reads a stream, yielding the header, data pieces and holes as they arrive, and `end` only once
 * the digest matched and nothing follows. Anything else is a CloneStreamError with its fault. A
 * consumer must not treat what it wrote as complete before `end`.
 */
export async function* decodeCloneStream(input: AsyncIterable<Buffer>): AsyncGenerator<CloneEvent> {
  const reader = new Reader(input);
  try {
    const header = decodeHeader(await reader.exact(HEADER_BYTES));
    yield { type: 'header', header };
    const cursor = new ExtentCursor(header);
    for (;;) {
      const tag = await reader.exact(1);
      if (tag.length === 0) refuse(CloneStreamFault.Truncated, `the stream ended after ${reader.consumed} bytes, before its end record`);
      const t = tag.readUInt8(0);
      if (t === Tag.Data) {
        const head = await reader.exact(DATA_RECORD_HEADER - 1);
        if (head.length < DATA_RECORD_HEADER - 1) refuse(CloneStreamFault.Truncated, 'the stream ended inside a data record header');
        const offset = safeOffset(head.readBigUInt64BE(0));
        const length = head.readUInt32BE(8);
        cursor.take('data', offset, length);
        for (let at = 0; at < length; ) {
          const piece = await reader.some(length - at);
          if (piece === undefined) refuse(CloneStreamFault.Truncated, `the stream ended inside the data extent at ${offset} (${at} of ${length} bytes)`);
          yield { type: 'data', offset: offset + at, bytes: piece as Buffer };
          at += (piece as Buffer).length;
        }
      } else if (t === Tag.Hole) {
        const rec = await reader.exact(HOLE_RECORD_BYTES - 1);
        if (rec.length < HOLE_RECORD_BYTES - 1) refuse(CloneStreamFault.Truncated, 'the stream ended inside a hole record');
        const offset = safeOffset(rec.readBigUInt64BE(0));
        const length = safeOffset(rec.readBigUInt64BE(8));
        cursor.take('hole', offset, length);
        yield { type: 'hole', offset, length };
      } else if (t === Tag.End) {
        const count = await reader.exact(8);
        if (count.length < 8) refuse(CloneStreamFault.Truncated, 'the stream ended inside its end record');
        const expected = reader.hash.digest();
        const digest = await reader.exact(32, false);
        if (digest.length < 32) refuse(CloneStreamFault.Truncated, 'the stream ended inside its digest');
        if (!digest.equals(expected)) refuse(CloneStreamFault.ChecksumMismatch, `sha256 of the stream is ${expected.toString('hex')}, the source sent ${digest.toString('hex')}`);
        const dataBytes = safeOffset(count.readBigUInt64BE(0));
        if (dataBytes !== cursor.dataBytes) refuse(CloneStreamFault.CountMismatch, `the end record counts ${dataBytes} data bytes, ${cursor.dataBytes} arrived`);
        cursor.finish();
        if (!(await reader.atEnd())) refuse(CloneStreamFault.TrailingBytes, 'bytes follow the end record');
        yield { type: 'end', dataBytes };
        return;
      } else {
        refuse(CloneStreamFault.UnknownRecord, `unknown record tag 0x${t.toString(16)} at byte ${reader.consumed - 1}`);
      }
    }
  } finally {
    await reader.return();
  }
}

function safeOffset(value: bigint): number {
  if (value > BigInt(MAX_STREAM_SIZE)) refuse(CloneStreamFault.BeyondSize, `offset or length ${value} is beyond ${MAX_STREAM_SIZE}`);
  return Number(value);
}

/** The HTTP side: the target serves one POST of a stream on this path. */
export const CLONE_PATH = '/v1beta1/clone';
export const CLONE_HEALTHZ_PATH = '/healthz';
export const CLONE_MEDIA_TYPE = 'application/x-ferry-clone-stream';
/** Ferry's error code beside the answer's text (the upload server's header too). */
export const CLONE_ERROR_CODE_HEADER = 'x-ferry-error-code';

/** The answers a clone target gives; both programs read this table, neither writes a status literal. */
export const CloneAnswer = {
  Ok: 200,
  /** The stream was refused: malformed, cut short, corrupt, or too big for the target. */
  Rejected: 400,
  /** No client certificate, or not the pinned client name. */
  ClientRefused: 401,
  NotFound: 404,
  /** A clone already finished (or failed) on this target. */
  AlreadyDone: 409,
  /** A clone is in progress. */
  Busy: 503,
  Failed: 500,
} as const;
export type CloneAnswer = keyof typeof CloneAnswer;
