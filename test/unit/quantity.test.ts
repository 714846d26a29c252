import { describe, expect, test } from '@jest/globals';
import { formatBytes, MiB, parseQuantity, usableSpace } from '../../src/quantity.js';
import { codeOf } from './helpers.js';

const KiB = 1024;
const GiB = 1024 * MiB;

describe('parseQuantity', () => {
  test.each<[string, number]>([
    ['0', 0],
    ['1048576', 1048576],
    ['512Mi', 512 * MiB],
    ['10Gi', 10 * GiB],
    ['1Ki', KiB],
    ['2Ti', 2 * 1024 * GiB],
    ['1G', 1e9],
    ['500M', 500e6],
    ['1k', 1000],
    ['1K', 1000],
    ['1.5Gi', 1.5 * GiB],
    ['0.5', 1], // fractions round up
    ['0.1Ki', 103], // 102.4 -> 103
    ['1.001k', 1001],
    [' 20G ', 20e9], // surrounding blanks are tolerated
    ['9007199254740991', Number.MAX_SAFE_INTEGER],
  ])('%j -> %d bytes', (text, bytes) => {
    expect(parseQuantity(text)).toBe(bytes);
  });

  test.each([
    'abc',
    '',
    '-1',
    '10GB',
    '10gi',
    '1ki',
    '10 Gi Gi',
    '8Ei', // 2^63 is beyond a safe integer
    '9007199254740993',
  ])('%j -> INVALID_SPEC', (text) => {
    expect(() => parseQuantity(text)).toThrow(expect.objectContaining({ code: 'INVALID_SPEC' }));
  });

  // Decimal suffixes are computed exactly: in floating point 8.3 * 1e9 is 8300000000.000001.
  test.each<[string, number]>([
    ['8.3G', 8_300_000_000],
    ['16.1k', 16_100],
    ['0.27T', 270_000_000_000],
  ])('%j is exactly %d bytes', (text, bytes) => {
    expect(parseQuantity(text)).toBe(bytes);
  });
});

describe('formatBytes', () => {
  test.each<[number, string]>([
    [0, '0 B'],
    [12, '12 B'],
    [1023, '1023 B'],
    [1024, '1.00 KiB'],
    [1536, '1.50 KiB'],
    [320 * MiB, '320.0 MiB'],
    [1.5 * GiB, '1.50 GiB'],
    [10 * GiB, '10.0 GiB'],
    [2 * 1024 * GiB, '2.00 TiB'],
    [5000 * 1024 * GiB, '5000.0 TiB'], // TiB is the largest unit
  ])('%d -> %j', (bytes, text) => {
    expect(formatBytes(bytes)).toBe(text);
  });
});

describe('usableSpace', () => {
  test.each<[number]>([[GiB], [10 * GiB], [GiB + 12345], [5 * MiB]])('overhead 0 returns the capacity unchanged (%d)', (capacity) => {
    expect(usableSpace(capacity, 0)).toBe(capacity);
  });

  test.each<[number, number]>([
    [GiB, 0.06],
    [10 * GiB, 0.06],
    [10 * GiB + 7, 0.055],
    [100 * MiB, 0.1],
    [64 * GiB, 0.5],
  ])('usableSpace(%d, %d) is MiB-aligned and leaves the overhead free', (capacity, overhead) => {
    const usable = usableSpace(capacity, overhead);
    expect(usable % MiB).toBe(0);
    expect(usable).toBeGreaterThan(0);
    expect(usable).toBeLessThan(capacity);
    expect(usable).toBeGreaterThan(capacity * (1 - overhead) - 2 * MiB);
  });

  // CDI (pkg/util/util.go GetUsableSpace): RoundDown(ceil((1 - overhead) * available), 1MiB).
  // For 1Gi and 0.06: ceil(0.94 * 1073741824) = 1009317315 -> 962 MiB.
  test('matches CDI GetUsableSpace: usableSpace(1Gi, 0.06) === 962 MiB', () => {
    expect(usableSpace(GiB, 0.06)).toBe(962 * MiB);
    expect(usableSpace(10 * GiB, 0.06)).toBe(Math.floor(Math.ceil(0.94 * 10 * GiB) / MiB) * MiB);
  });
});
