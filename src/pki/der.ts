/**
 * The few DER (ITU-T X.690) encodings an X.509 certificate needs, and a reader for one
 * tag-length-value at a time. Nothing general: what src/pki/x509.ts writes and reads, and no more.
 */

export const Tag = {
  Boolean: 0x01,
  Integer: 0x02,
  BitString: 0x03,
  OctetString: 0x04,
  Oid: 0x06,
  Utf8String: 0x0c,
  Sequence: 0x30,
  Set: 0x31,
  PrintableString: 0x13,
  Ia5String: 0x16,
  UtcTime: 0x17,
  GeneralizedTime: 0x18,
} as const;

function lengthBytes(length: number): Buffer {
  if (length < 0x80) return Buffer.from([length]);
  const bytes: number[] = [];
  for (let n = length; n > 0; n = Math.floor(n / 256)) bytes.unshift(n & 0xff);
  return Buffer.from([0x80 | bytes.length, ...bytes]);
}

/** One TLV with tag `tag` (a full identifier octet, e.g. 0xa0 for `[0] EXPLICIT`). */
export function tlv(tag: number, ...content: Buffer[]): Buffer {
  const body = Buffer.concat(content);
  return Buffer.concat([Buffer.from([tag]), lengthBytes(body.length), body]);
}

export const sequence = (...items: Buffer[]): Buffer => tlv(Tag.Sequence, ...items);
export const set = (...items: Buffer[]): Buffer => tlv(Tag.Set, ...items);
export const octetString = (bytes: Buffer): Buffer => tlv(Tag.OctetString, bytes);
export const utf8String = (text: string): Buffer => tlv(Tag.Utf8String, Buffer.from(text, 'utf8'));
export const ia5String = (text: string): Buffer => tlv(Tag.Ia5String, Buffer.from(text, 'ascii'));
export const boolean = (value: boolean): Buffer => tlv(Tag.Boolean, Buffer.from([value ? 0xff : 0x00]));

/** A non-negative INTEGER from its big-endian magnitude (minimal, with a 0x00 when the top bit is set). */
export function unsignedInteger(magnitude: Buffer): Buffer {
  let start = 0;
  while (start < magnitude.length - 1 && magnitude[start] === 0) start++;
  const bytes = magnitude.subarray(start);
  return tlv(Tag.Integer, (bytes[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.from([0]), bytes]) : bytes.length ? bytes : Buffer.from([0]));
}

export function smallInteger(value: number): Buffer {
  const hex = value.toString(16);
  return unsignedInteger(Buffer.from(hex.length % 2 ? `0${hex}` : hex, 'hex'));
}

/** A BIT STRING of whole bytes (unused bits 0): signatures and keys. */
export const bitStringBytes = (bytes: Buffer): Buffer => tlv(Tag.BitString, Buffer.from([0]), bytes);

/**
 * A named-bit BIT STRING (KeyUsage): `bits` are bit numbers, 0 the most significant bit of the
 * first byte. DER drops trailing zero bits, so the unused-bit count follows the highest bit set.
 */
export function namedBits(bits: readonly number[]): Buffer {
  const highest = Math.max(...bits);
  const bytes = Buffer.alloc(Math.floor(highest / 8) + 1);
  for (const bit of bits) bytes[Math.floor(bit / 8)]! |= 0x80 >> bit % 8;
  return tlv(Tag.BitString, Buffer.from([7 - (highest % 8)]), bytes);
}

export function oid(dotted: string): Buffer {
  const parts = dotted.split('.').map(Number);
  const [first = 0, second = 0, ...rest] = parts;
  const bytes: number[] = [first * 40 + second];
  for (const part of rest) {
    const base128: number[] = [];
    for (let n = part; ; n = Math.floor(n / 128)) {
      base128.unshift((n & 0x7f) | (base128.length ? 0x80 : 0));
      if (n < 128) break;
    }
    bytes.push(...base128);
  }
  return tlv(Tag.Oid, Buffer.from(bytes));
}

/** UTCTime through 2049, GeneralizedTime from 2050, as RFC 5280 §4.1.2.5 requires; whole seconds, UTC. */
export function time(date: Date): Buffer {
  const iso = date.toISOString(); // 2026-12-01T12:00:00.000Z
  const digits = iso.slice(0, 19).replace(/[-T:]/g, '');
  const year = date.getUTCFullYear();
  return year < 2050 ? tlv(Tag.UtcTime, Buffer.from(`${digits.slice(2)}Z`, 'ascii')) : tlv(Tag.GeneralizedTime, Buffer.from(`${digits}Z`, 'ascii'));
}

export interface Element {
  readonly tag: number;
  /** The content octets. */
  readonly content: Buffer;
  /** The whole TLV, tag and length included. */
  readonly raw: Buffer;
}

/** Reads the TLV at `offset`; throws on a truncated or indefinite-length encoding. */
export function readElement(der: Buffer, offset = 0): Element {
  const tag = der[offset];
  let lengthByte = der[offset + 1];
  if (tag === undefined || lengthByte === undefined) throw new Error('DER: truncated');
  let length = lengthByte;
  let headerLength = 2;
  if (lengthByte & 0x80) {
    const count = lengthByte & 0x7f;
    if (count === 0 || count > 4) throw new Error('DER: unsupported length');
    length = 0;
    for (let i = 0; i < count; i++) {
      lengthByte = der[offset + 2 + i];
      if (lengthByte === undefined) throw new Error('DER: truncated');
      length = length * 256 + lengthByte;
    }
    headerLength += count;
  }
  const end = offset + headerLength + length;
  if (end > der.length) throw new Error('DER: truncated');
  return { tag, content: der.subarray(offset + headerLength, end), raw: der.subarray(offset, end) };
}

/** The elements of a constructed value's content, in order. */
export function children(content: Buffer): Element[] {
  const out: Element[] = [];
  for (let offset = 0; offset < content.length; ) {
    const element = readElement(content, offset);
    out.push(element);
    offset += element.raw.length;
  }
  return out;
}
