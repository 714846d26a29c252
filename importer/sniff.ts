/**
 * Format detection from the first bytes of a stream. qemu-img reports compressed files as "raw",
 * so Ferry looks at magic numbers itself and peels compression layers one at a time.
 */

export const Format = {
  Gzip: 'gzip',
  Xz: 'xz',
  Zstd: 'zstd',
  Bzip2: 'bzip2',
  Qcow2: 'qcow2',
  Vmdk: 'vmdk',
  Vdi: 'vdi',
  Vhd: 'vhd',
  Vhdx: 'vhdx',
  Tar: 'tar',
  Raw: 'raw',
  /** qcow version 1: refused, after its backing file field is checked (same place as qcow2's). */
  Qcow: 'qcow',
  /** QED: refused, after its backing file fields are checked. */
  Qed: 'qed',
  /**
   * A recognised format Ferry refuses (LUKS, Parallels, Bochs, cloop, VMDK3/COWD, qcow of an
   * unknown version): never handed to qemu-img, and never mistaken for raw.
   */
  Unsupported: 'unsupported',
  /** A VMDK text descriptor: it names other files as extents, so it is never imported. */
  VmdkDescriptor: 'vmdk-descriptor',
} as const;
export type Format = (typeof Format)[keyof typeof Format];

/** How many leading bytes `detectFormat` needs to see (tar's magic is at 257, vdi's at 64). */
export const SNIFF_BYTES = 512;

const COMPRESSIONS: ReadonlySet<Format> = new Set([Format.Gzip, Format.Xz, Format.Zstd, Format.Bzip2]);
const CONVERTIBLE: ReadonlySet<Format> = new Set([Format.Qcow2, Format.Vmdk, Format.Vdi, Format.Vhd, Format.Vhdx]);

export function isCompression(format: Format): boolean {
  return COMPRESSIONS.has(format);
}

/** Formats qemu-img converts to raw. */
export function needsConversion(format: Format): boolean {
  return CONVERTIBLE.has(format);
}

/** The name qemu-img's `-f` takes for a format Ferry detected. */
export function qemuFormatName(format: Format): string {
  return format === Format.Vhd ? 'vpc' : format;
}

/** The only names Ferry ever passes to qemu-img's `-f`: the formats it converts, and raw. */
export const QEMU_INPUT_FORMATS: ReadonlySet<string> = new Set([...CONVERTIBLE, Format.Raw].map(qemuFormatName));

/** The Format behind a qemu-img `-f` name (the inverse of qemuFormatName), if Ferry reads it. */
export function formatOfQemuName(name: string): Format | undefined {
  return [...CONVERTIBLE, Format.Raw].find((format) => qemuFormatName(format) === name);
}

/**
 * Leading magic of the other formats qemu-img reads (`qemu-img --help`): refused by name rather
 * than copied as raw. dmg keeps its magic at the end and vvfat is a directory; those stay raw,
 * which is safe, since a raw image is only ever opened with `-f raw`.
 */
const UNSUPPORTED_MAGIC: readonly string[] = [
  'LUKS\xba\xbe',
  'WithoutFreeSpace', // Parallels
  'WithouFreSpacExt', // Parallels with format extensions
  'Bochs Virtual HD Image',
  '#!/bin/sh\n#V2.0 Format\n', // cloop
  'COWD', // VMDK3 / ESX sparse (it has a parent file name field of its own)
];

function has(head: Buffer, offset: number, magic: Buffer | string): boolean {
  const bytes = typeof magic === 'string' ? Buffer.from(magic, 'latin1') : magic;
  return head.length >= offset + bytes.length && head.subarray(offset, offset + bytes.length).equals(bytes);
}

export function detectFormat(head: Buffer): Format {
  if (has(head, 0, Buffer.from([0x1f, 0x8b, 0x08]))) return Format.Gzip;
  if (has(head, 0, Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]))) return Format.Xz;
  if (has(head, 0, Buffer.from([0x28, 0xb5, 0x2f, 0xfd]))) return Format.Zstd;
  // "BZh" + block size digit + the block magic (pi in BCD); the full run keeps raw data from matching.
  if (/^BZh[1-9]1AY&SY/.test(head.subarray(0, 10).toString('latin1'))) return Format.Bzip2;
  if (has(head, 0, 'QFI\xfb')) {
    const version = head.length >= 8 ? head.readUInt32BE(4) : 0;
    if (version === 2 || version === 3) return Format.Qcow2;
    return version === 1 ? Format.Qcow : Format.Unsupported;
  }
  if (has(head, 0, 'KDMV')) return Format.Vmdk;
  if (has(head, 0, '# Disk DescriptorFile')) return Format.VmdkDescriptor;
  if (has(head, 0x40, Buffer.from([0x7f, 0x10, 0xda, 0xbe]))) return Format.Vdi;
  if (has(head, 0, 'conectix')) return Format.Vhd;
  if (has(head, 0, 'vhdxfile')) return Format.Vhdx;
  if (has(head, 0, 'QED\0')) return Format.Qed;
  if (UNSUPPORTED_MAGIC.some((magic) => has(head, 0, magic))) return Format.Unsupported;
  if (has(head, 257, 'ustar')) return Format.Tar;
  return Format.Raw;
}
