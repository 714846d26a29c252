/** Byte quantities as Kubernetes writes them ("10Gi", "500M", "1048576") and CDI's sizing rules. */

import { ErrorCode, FerryError } from './errors.js';

export const MiB = 1024 * 1024;

const BINARY: Readonly<Record<string, number>> = { Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60 };
const DECIMAL: Readonly<Record<string, number>> = { k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18 };

/**
 * Parses a Kubernetes resource quantity (binary or decimal suffix, or plain bytes) into a whole
 * number of bytes, rounding fractions up as the apiserver does for storage requests.
 */
export function parseQuantity(text: string): number {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([KMGTPE]i|[kKMGTPE])?\s*$/.exec(text);
  if (!match) {
    throw new FerryError(ErrorCode.InvalidSpec, `not a byte quantity: "${text}" (use e.g. 1048576, 512Mi, 10Gi, 20G)`);
  }
  const unit = match[2];
  const factor = BigInt(unit === undefined ? 1 : (BINARY[unit] ?? DECIMAL[unit] ?? 1));
  // Exact decimal arithmetic: 8.3 * 1e9 in floating point is 8300000000.000001.
  const [whole = '0', fraction = ''] = (match[1] ?? '0').split('.');
  const scale = 10n ** BigInt(fraction.length);
  const scaled = BigInt(whole + fraction) * factor;
  const exact = (scaled + scale - 1n) / scale;
  const bytes = Number(exact);
  if (!Number.isSafeInteger(bytes)) {
    throw new FerryError(ErrorCode.InvalidSpec, `byte quantity out of range: "${text}"`);
  }
  return bytes;
}

/** Formats bytes for people: 1.5 GiB, 320 MiB, 12 B. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(value < 10 ? 2 : 1)} ${units[unit]}`;
}

/**
 * The part of a volume of `capacity` bytes a disk image may use once the filesystem has taken its
 * share: CDI's GetUsableSpace, ceil((1 - overhead) * capacity) rounded down to a MiB. Block volumes
 * pass overhead 0 and get their whole size.
 */
export function usableSpace(capacity: number, filesystemOverhead: number): number {
  if (filesystemOverhead === 0) return capacity;
  const raw = Math.ceil((1 - filesystemOverhead) * capacity);
  return Math.floor(raw / MiB) * MiB;
}
