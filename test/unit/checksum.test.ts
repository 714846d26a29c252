import { describe, expect, test } from '@jest/globals';
import { type ChecksumAlgorithm, formatChecksum, parseChecksum } from '../../src/checksum.js';

const hex = (length: number): string => '0123456789abcdef'.repeat(8).slice(0, length);

describe('parseChecksum', () => {
  test.each<[ChecksumAlgorithm, number]>([
    ['md5', 32],
    ['sha1', 40],
    ['sha256', 64],
    ['sha512', 128],
  ])('accepts %s with %d hex digits', (algorithm, length) => {
    expect(parseChecksum(`${algorithm}:${hex(length)}`)).toEqual({ algorithm, hex: hex(length) });
  });

  test('lower-cases upper-case hex digits', () => {
    expect(parseChecksum(`sha256:${hex(64).toUpperCase()}`)).toEqual({ algorithm: 'sha256', hex: hex(64) });
  });

  test('trims surrounding blanks', () => {
    expect(parseChecksum(`  md5:${hex(32)}\n`)).toEqual({ algorithm: 'md5', hex: hex(32) });
  });

  test.each([
    ['too short', `sha256:${hex(63)}`],
    ['too long', `sha256:${hex(65)}`],
    ['md5 length under sha1', `sha1:${hex(32)}`],
    ['unknown algorithm', `sha384:${hex(96)}`],
    ['upper-case algorithm', `SHA256:${hex(64)}`],
    ['no algorithm', hex(64)],
    ['empty digest', 'sha256:'],
    ['non-hex digit', `md5:${hex(31)}g`],
    ['empty text', ''],
    ['inherited property name as algorithm', `constructor:${hex(32)}`],
  ])('%s -> INVALID_SPEC', (_why, text) => {
    expect(() => parseChecksum(text)).toThrow(expect.objectContaining({ code: 'INVALID_SPEC' }));
  });
});

describe('formatChecksum', () => {
  test.each([`md5:${hex(32)}`, `sha1:${hex(40)}`, `sha256:${hex(64)}`, `sha512:${hex(128)}`])('round trips %s', (text) => {
    expect(formatChecksum(parseChecksum(text))).toBe(text);
  });

  test('formats the normalised (lower-case) digest', () => {
    expect(formatChecksum(parseChecksum(`md5:${hex(32).toUpperCase()}`))).toBe(`md5:${hex(32)}`);
  });
});
