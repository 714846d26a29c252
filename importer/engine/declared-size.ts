/**
 * The virtual size an image's header declares, read from the first bytes before qemu-img (or a
 * scratch copy) is involved, so a disk that cannot fit is refused before anything is written.
 * Pure. Formats whose size is not in the first 512 bytes (vhdx: in a metadata region) give undefined.
 */

import { Format } from '../sniff.js';

const SECTOR = 512n;

export function declaredSize(format: Format, head: Buffer): bigint | undefined {
  const u64be = (offset: number): bigint | undefined => (head.length >= offset + 8 ? head.readBigUInt64BE(offset) : undefined);
  const u64le = (offset: number): bigint | undefined => (head.length >= offset + 8 ? head.readBigUInt64LE(offset) : undefined);
  switch (format) {
    case Format.Qcow2:
      return u64be(24);
    case Format.Vmdk: {
      // Sparse extent header: capacity in sectors.
      const sectors = u64le(12);
      return sectors === undefined ? undefined : sectors * SECTOR;
    }
    case Format.Vdi:
      return u64le(0x170);
    case Format.Vhd:
      // A dynamic VHD starts with a copy of its footer: current size at 48.
      return u64be(48);
    default:
      return undefined;
  }
}
