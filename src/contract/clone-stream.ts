/**
 * The host-assisted clone's wire format: what `ferry clone-source` sends and `ferry clone-target`
 * reads, one codec for both sides (docs/adr/0012-clone-data-plane.md). Big-endian throughout.
 *
 *   header  "FERRYCLN" | version u8 (2) | kind u8 | flags u16 (0) | block size u32 | size u64   (24 bytes)
 *   data    'D' | offset u64 | length u32 (1..MAX_DATA_RECORD) | bytes                          (13 + length)
 *   hole    'H' | offset u64 | length u64 (> 0)                                                (17)
 *   end     'E' | data bytes u64 | crc32 u32                                                   (13)
 *
 * Extents are contiguous and in order: each starts where the previous one ended, the first at 0,
 * so an overlap, a gap or a reordering is refused as it arrives rather than reconciled. For disk
 * kinds (`fs`, `block`) `size` is the virtual size, no extent may end past it and the extents must
 * cover it exactly; only allocated data travels, holes as lengths. For `archive` the extents are
 * the bytes of a tar stream, data only, and `size` is the bytes of file content in it (what the
 * target's capacity must hold). The end record's check is the CRC-32 of every byte before it
 * (header, records, the end tag and its count), so a stream cut short anywhere, or changed by a
 * defect of either program, never reads as complete: with contiguous extents covering the disk, the
 * stream fixes every byte of it. It is a check against Ferry's own faults (a buffer reused before it
 * was sent, a record split wrong), not against an attacker: the stream travels over mutual TLS
 * between pinned endpoints, whose AEAD already authenticates every record (version 1 carried a
 * sha256 here, a quarter of the clone's CPU; ADR 0012).
 *
 * Also here: the HTTP side of the contract (path, media type, answers), which both programs use.
 */

import { crc32 } from 'node:zlib';
import { ErrorCode, FerryError } from '../errors.js';

export const CLONE_MAGIC = Buffer.from('FERRYCLN', 'latin1');
export const CLONE_STREAM_VERSION = 2;
export const HEADER_BYTES = 24;
export const DATA_RECORD_HEADER = 13;
export const HOLE_RECORD_BYTES = 17;
export const END_RECORD_BYTES = 13;
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
  private crc = 0;
  private readonly cursor: ExtentCursor;
  private pending: { offset: number; length: number } | undefined;
  private ended = false;

  constructor(header: CloneHeader) {
    this.cursor = new ExtentCursor(checkHeader(header));
  }

  /** The header: send first. */
  start(): Buffer[] {
    return [this.checked(encodeHeader(this.cursor.header))];
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
      out.push(this.checked(head), this.checked(piece));
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
    const check = Buffer.alloc(4);
    check.writeUInt32BE(crc32(tail, this.crc), 0);
    out.push(tail, check);
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
    return [this.checked(rec)];
  }

  private checked(buf: Buffer): Buffer {
    this.crc = crc32(buf, this.crc);
    return buf;
  }
}

export type CloneEvent =
  | { readonly type: 'header'; readonly header: CloneHeader }
  /** A piece of a data record (a record may arrive in several pieces). */
  | { readonly type: 'data'; readonly offset: number; readonly bytes: Buffer }
  | { readonly type: 'hole'; readonly offset: number; readonly length: number }
  /** Only after the check matched. */
  | { readonly type: 'end'; readonly dataBytes: number };

const Part = { Header: 0, Tag: 1, DataHead: 2, Data: 3, Hole: 4, End: 5, Done: 6 } as const;
type Part = (typeof Part)[keyof typeof Part];
/** The bytes of each fixed-size part (a record's after its one-byte tag); data and done have none. */
const PART_BYTES: Readonly<Record<Part, number>> = {
  [Part.Header]: HEADER_BYTES,
  [Part.Tag]: 1,
  [Part.DataHead]: DATA_RECORD_HEADER - 1,
  [Part.Data]: 0,
  [Part.Hole]: HOLE_RECORD_BYTES - 1,
  [Part.End]: END_RECORD_BYTES - 1,
  [Part.Done]: 0,
};
const TRUNCATED_INSIDE: Readonly<Record<Part, string>> = {
  [Part.Header]: 'the header',
  [Part.Tag]: '',
  [Part.DataHead]: 'a data record header',
  [Part.Data]: 'a data extent',
  [Part.Hole]: 'a hole record',
  [Part.End]: 'its end record',
  [Part.Done]: '',
};

/**
 * Reads a stream as it arrives, a push parser: `push` each chunk of input, `end` when the input
 * ends. Events go to `emit` synchronously, data as pieces of the pushed chunks (no copy), `end`
 * only from `end()`, once the check matched and nothing followed. Anything else throws a
 * CloneStreamError with its fault, when the offending byte arrives. A consumer must not treat what
 * it wrote as complete before `end`.
 */
export class CloneStreamDecoder {
  private part: Part = Part.Header;
  /** The fixed-size part being gathered (a part may span chunks). */
  private readonly fixed = Buffer.alloc(HEADER_BYTES);
  private filled = 0;
  private crc = 0;
  private consumed = 0;
  private cursor: ExtentCursor | undefined;
  /** In a data record: where it starts, where its next byte goes and how many are left. */
  private recordStart = 0;
  private dataAt = 0;
  private dataLeft = 0;
  private dataBytes = 0;

  constructor(private readonly emit: (event: CloneEvent) => void) {}

  push(chunk: Buffer): void {
    for (let at = 0; at < chunk.length; ) {
      if (this.part === Part.Done) refuse(CloneStreamFault.TrailingBytes, 'bytes follow the end record');
      if (this.part === Part.Data) {
        const piece = chunk.subarray(at, at + Math.min(this.dataLeft, chunk.length - at));
        this.crc = crc32(piece, this.crc);
        this.consumed += piece.length;
        at += piece.length;
        const offset = this.dataAt;
        this.dataAt += piece.length;
        this.dataLeft -= piece.length;
        if (this.dataLeft === 0) this.part = Part.Tag;
        this.emit({ type: 'data', offset, bytes: piece });
        continue;
      }
      const need = PART_BYTES[this.part];
      const n = Math.min(need - this.filled, chunk.length - at);
      chunk.copy(this.fixed, this.filled, at, at + n);
      this.filled += n;
      this.consumed += n;
      at += n;
      if (this.filled < need) return;
      this.filled = 0;
      this.complete(this.fixed.subarray(0, need));
    }
  }

  /** The input ended: emits `end` if the stream was whole, else throws TRUNCATED. */
  end(): void {
    if (this.part === Part.Done) return this.emit({ type: 'end', dataBytes: this.dataBytes });
    if (this.part === Part.Tag && this.filled === 0) refuse(CloneStreamFault.Truncated, `the stream ended after ${this.consumed} bytes, before its end record`);
    if (this.part === Part.Data) {
      const got = this.dataAt - this.recordStart;
      refuse(CloneStreamFault.Truncated, `the stream ended inside the data extent at ${this.recordStart} (${got} of ${got + this.dataLeft} bytes)`);
    }
    refuse(CloneStreamFault.Truncated, `the stream ended inside ${TRUNCATED_INSIDE[this.part]} (${this.filled} of ${PART_BYTES[this.part]} bytes)`);
  }

  private complete(buf: Buffer): void {
    switch (this.part) {
      case Part.Header: {
        const header = decodeHeader(buf);
        this.crc = crc32(buf, this.crc);
        this.cursor = new ExtentCursor(header);
        this.part = Part.Tag;
        return this.emit({ type: 'header', header });
      }
      case Part.Tag: {
        this.crc = crc32(buf, this.crc);
        const t = buf.readUInt8(0);
        if (t === Tag.Data) this.part = Part.DataHead;
        else if (t === Tag.Hole) this.part = Part.Hole;
        else if (t === Tag.End) this.part = Part.End;
        else refuse(CloneStreamFault.UnknownRecord, `unknown record tag 0x${t.toString(16)} at byte ${this.consumed - 1}`);
        return;
      }
      case Part.DataHead: {
        this.crc = crc32(buf, this.crc);
        const offset = safeOffset(buf.readBigUInt64BE(0));
        const length = buf.readUInt32BE(8);
        (this.cursor as ExtentCursor).take('data', offset, length);
        this.recordStart = offset;
        this.dataAt = offset;
        this.dataLeft = length;
        this.part = Part.Data;
        return;
      }
      case Part.Hole: {
        this.crc = crc32(buf, this.crc);
        const offset = safeOffset(buf.readBigUInt64BE(0));
        const length = safeOffset(buf.readBigUInt64BE(8));
        (this.cursor as ExtentCursor).take('hole', offset, length);
        this.part = Part.Tag;
        return this.emit({ type: 'hole', offset, length });
      }
      case Part.End: {
        const expected = crc32(buf.subarray(0, 8), this.crc);
        const sent = buf.readUInt32BE(8);
        if (sent !== expected) refuse(CloneStreamFault.ChecksumMismatch, `the CRC-32 of the stream is ${hex32(expected)}, the source sent ${hex32(sent)}`);
        const cursor = this.cursor as ExtentCursor;
        const dataBytes = safeOffset(buf.readBigUInt64BE(0));
        if (dataBytes !== cursor.dataBytes) refuse(CloneStreamFault.CountMismatch, `the end record counts ${dataBytes} data bytes, ${cursor.dataBytes} arrived`);
        cursor.finish();
        this.dataBytes = dataBytes;
        this.part = Part.Done;
        return;
      }
      default:
        return;
    }
  }
}

/**
 * The decoder over an iterable input: the events of each chunk, in order, as an async iterator
 * (one await per chunk, none per event). `observe` sees each event as it is decoded. Events decoded
 * before a fault are handed out first; then the fault is thrown. Returning early stops reading the
 * input (its `return`), without reading it to the end.
 */
export function decodeCloneStream(input: AsyncIterable<Buffer>, observe?: (event: CloneEvent) => void): AsyncIterableIterator<CloneEvent> & { return(value?: unknown): Promise<IteratorResult<CloneEvent>> } {
  const queue: CloneEvent[] = [];
  const decoder = new CloneStreamDecoder((event) => {
    observe?.(event);
    queue.push(event);
  });
  const it = input[Symbol.asyncIterator]();
  let fault: unknown;
  let finished = false;
  const done = (): IteratorResult<CloneEvent> => ({ done: true, value: undefined });
  const stop = async (): Promise<void> => {
    if (finished) return;
    finished = true;
    await it.return?.();
  };
  const iterator = {
    async next(): Promise<IteratorResult<CloneEvent>> {
      for (;;) {
        const event = queue.shift();
        if (event !== undefined) return { done: false, value: event };
        if (fault !== undefined) {
          const err = fault;
          fault = undefined;
          await stop();
          throw err;
        }
        if (finished) return done();
        let next: IteratorResult<Buffer>;
        try {
          next = await it.next();
        } catch (err) {
          finished = true;
          throw err;
        }
        try {
          if (next.done) {
            finished = true;
            decoder.end();
          } else decoder.push(Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value as Uint8Array));
        } catch (err) {
          fault = err; // handed out after the events decoded before it
        }
      }
    },
    async return(): Promise<IteratorResult<CloneEvent>> {
      queue.length = 0;
      await stop();
      return done();
    },
    [Symbol.asyncIterator]() {
      return iterator;
    },
  };
  return iterator;
}

const hex32 = (n: number): string => n.toString(16).padStart(8, '0');

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
