/**
 * Checks on the raw header bytes of an untrusted image, before qemu-img opens it at all: opening a
 * qcow2 with an external data file makes qemu open that file, so such images are refused here,
 * from bytes alone.
 */

import { ErrorCode, FerryError } from '../src/errors.js';
import { Format } from './sniff.js';

/** qcow2 header v3, incompatible feature bit 2: the guest data lives in an external file. */
const QCOW2_INCOMPAT_DATA_FILE = 4n;

export function checkHeader(format: Format, head: Buffer): void {
  if (format === Format.VmdkDescriptor) {
    throw new FerryError(ErrorCode.BackingFile, 'the image is a VMDK descriptor that refers to other files; upload a monolithic VMDK instead');
  }
  if (format !== Format.Qcow2) return;
  if (head.length < 72) throw new FerryError(ErrorCode.InvalidImage, 'qcow2 header is truncated');
  const version = head.readUInt32BE(4);
  const backingOffset = head.readBigUInt64BE(8);
  const backingLength = head.readUInt32BE(16);
  if (backingOffset !== 0n || backingLength !== 0) {
    throw new FerryError(ErrorCode.BackingFile, 'the qcow2 image has a backing file; only self-contained images are imported');
  }
  if (version >= 3) {
    if (head.length < 80) throw new FerryError(ErrorCode.InvalidImage, 'qcow2 v3 header is truncated');
    const incompatible = head.readBigUInt64BE(72);
    if ((incompatible & QCOW2_INCOMPAT_DATA_FILE) !== 0n) {
      throw new FerryError(ErrorCode.BackingFile, 'the qcow2 image keeps its data in an external data file');
    }
  }
}
