/**
 * The 512-byte VHD footer. A fixed VHD (what Azure stores) is a raw disk followed by this footer
 * and nothing else: no magic at offset 0, so it sniffs as raw. Pure: bytes in, facts out.
 */

export const VHD_FOOTER_BYTES = 512;

const COOKIE = Buffer.from('conectix', 'latin1');
const CHECKSUM_OFFSET = 64;

/** The footer's `disk type` (u32 big endian at byte 60). */
export const VhdDiskType = { Fixed: 2, Dynamic: 3, Differencing: 4 } as const;
const DISK_TYPE_OFFSET = 60;

/** The disk type of a footer (or of the footer copy a dynamic VHD starts with); 64 bytes suffice. */
export function vhdDiskType(footer: Buffer): number {
  return footer.readUInt32BE(DISK_TYPE_OFFSET);
}

export interface VhdFooter {
  /** 2 fixed, 3 dynamic, 4 differencing. */
  readonly diskType: number;
  /** The disk's size in bytes as the footer declares it. */
  readonly currentSize: bigint;
  /** Whether the stored checksum (one's complement of the byte sum, checksum field excluded) holds. */
  readonly checksumValid: boolean;
}

/** The footer's fields, or undefined when `bytes` is not 512 bytes starting with "conectix". */
export function parseVhdFooter(bytes: Buffer): VhdFooter | undefined {
  if (bytes.length !== VHD_FOOTER_BYTES || !bytes.subarray(0, COOKIE.length).equals(COOKIE)) return undefined;
  let sum = 0;
  for (let i = 0; i < VHD_FOOTER_BYTES; i += 1) {
    if (i < CHECKSUM_OFFSET || i >= CHECKSUM_OFFSET + 4) sum += bytes[i] as number;
  }
  return {
    diskType: vhdDiskType(bytes),
    currentSize: bytes.readBigUInt64BE(48),
    checksumValid: (~sum >>> 0) === bytes.readUInt32BE(CHECKSUM_OFFSET),
  };
}

/**
 * Whether `tail` is the footer of a fixed VHD whose disk is exactly the `bytesBefore` bytes that
 * precede it: only then is it dropped. Anything else (a dynamic VHD's copy, a bad checksum, a
 * size that does not add up) is disk data and stays.
 */
export function isFixedVhdFooter(tail: Buffer, bytesBefore: number): boolean {
  const footer = parseVhdFooter(tail);
  return footer !== undefined && footer.checksumValid && footer.diskType === VhdDiskType.Fixed && footer.currentSize === BigInt(bytesBefore);
}
