/** The `algo:hex` checksum form CDI uses (`cdi.kubevirt.io/storage.import.checksum`). */

import { ErrorCode, FerryError } from './errors.js';

export const ChecksumAlgorithm = { md5: 32, sha1: 40, sha256: 64, sha512: 128 } as const;
export type ChecksumAlgorithm = keyof typeof ChecksumAlgorithm;

export interface Checksum {
  readonly algorithm: ChecksumAlgorithm;
  readonly hex: string;
}

export function parseChecksum(text: string): Checksum {
  const match = /^([a-z0-9]+):([0-9a-fA-F]+)$/.exec(text.trim());
  const algorithm = match?.[1];
  if (!match || algorithm === undefined || !(algorithm in ChecksumAlgorithm)) {
    throw new FerryError(ErrorCode.InvalidSpec, `checksum must be <md5|sha1|sha256|sha512>:<hex>, got "${text}"`);
  }
  const algo = algorithm as ChecksumAlgorithm;
  const hex = (match[2] ?? '').toLowerCase();
  if (hex.length !== ChecksumAlgorithm[algo]) {
    throw new FerryError(ErrorCode.InvalidSpec, `a ${algo} checksum has ${ChecksumAlgorithm[algo]} hex digits, got ${hex.length}`);
  }
  return { algorithm: algo, hex };
}

export function formatChecksum(checksum: Checksum): string {
  return `${checksum.algorithm}:${checksum.hex}`;
}
