import { describe, expect, test } from '@jest/globals';
import { checkInfo, type ImageInfo, parseConvertProgress, parseInfo } from '../../importer/qemu-img.js';
import { codeOf } from './helpers.js';

const GiB = 2 ** 30;

// Shaped like `qemu-img info --output=json` from qemu 8.x.
const QCOW2_CLEAN = JSON.stringify({
  children: [{ name: 'file', info: { children: [], 'virtual-size': 197120, filename: '/scratch/disk.qcow2', format: 'file', 'actual-size': 200704, 'format-specific': { type: 'file', data: {} }, 'dirty-flag': false } }],
  'virtual-size': 10 * GiB,
  filename: '/scratch/disk.qcow2',
  'cluster-size': 65536,
  format: 'qcow2',
  'actual-size': 200704,
  'format-specific': {
    type: 'qcow2',
    data: { compat: '1.1', 'compression-type': 'zlib', 'lazy-refcounts': false, 'refcount-bits': 16, corrupt: false, 'extended-l2': false },
  },
  'dirty-flag': false,
});

const QCOW2_BACKING = JSON.stringify({
  'virtual-size': GiB,
  filename: '/scratch/overlay.qcow2',
  'cluster-size': 65536,
  format: 'qcow2',
  'backing-filename': 'base.qcow2',
  'full-backing-filename': '/scratch/base.qcow2',
  'backing-filename-format': 'qcow2',
  'format-specific': { type: 'qcow2', data: { compat: '1.1' } },
  'dirty-flag': false,
});

const QCOW2_FULL_BACKING_ONLY = JSON.stringify({
  'virtual-size': GiB,
  filename: '/scratch/overlay.qcow2',
  format: 'qcow2',
  'full-backing-filename': '/etc/shadow',
});

const QCOW2_DATA_FILE = JSON.stringify({
  'virtual-size': GiB,
  filename: '/scratch/disk.qcow2',
  format: 'qcow2',
  'format-specific': { type: 'qcow2', data: { compat: '1.1', 'data-file': 'x', 'data-file-raw': false } },
});

const vmdk = (extentFile: string): string =>
  JSON.stringify({
    'virtual-size': 2 * GiB,
    filename: '/scratch/disk.vmdk',
    'cluster-size': 65536,
    format: 'vmdk',
    'format-specific': {
      type: 'vmdk',
      data: {
        cid: 1869479512,
        'parent-cid': 4294967295,
        'create-type': 'monolithicSparse',
        extents: [{ 'virtual-size': 2 * GiB, filename: extentFile, 'cluster-size': 65536, format: '' }],
      },
    },
  });

describe('parseInfo', () => {
  test.each<[string, string, ImageInfo]>([
    ['clean qcow2', QCOW2_CLEAN, { format: 'qcow2', virtualSize: 10 * GiB, filename: '/scratch/disk.qcow2', extentFiles: [] }],
    ['qcow2 with a backing file', QCOW2_BACKING, { format: 'qcow2', virtualSize: GiB, filename: '/scratch/overlay.qcow2', extentFiles: [], backingFilename: 'base.qcow2' }],
    [
      'qcow2 with only full-backing-filename',
      QCOW2_FULL_BACKING_ONLY,
      { format: 'qcow2', virtualSize: GiB, filename: '/scratch/overlay.qcow2', extentFiles: [], backingFilename: '/etc/shadow' },
    ],
    ['qcow2 with a data file', QCOW2_DATA_FILE, { format: 'qcow2', virtualSize: GiB, filename: '/scratch/disk.qcow2', extentFiles: [], dataFile: 'x' }],
    ['monolithic vmdk', vmdk('/scratch/disk.vmdk'), { format: 'vmdk', virtualSize: 2 * GiB, filename: '/scratch/disk.vmdk', extentFiles: ['/scratch/disk.vmdk'] }],
    ['empty object', '{}', { format: '', virtualSize: 0, filename: '', extentFiles: [] }],
  ])('%s', (_name, json, expected) => {
    expect(parseInfo(json)).toEqual(expected);
  });

  test('rejects text that is not JSON', () => {
    expect(() => parseInfo('qemu-img: Could not open')).toThrow(SyntaxError);
  });
});

describe('checkInfo', () => {
  const clean = parseInfo(QCOW2_CLEAN);

  test.each<[string, ImageInfo, string, number | undefined]>([
    ['clean qcow2 without a capacity', clean, 'qcow2', undefined],
    ['clean qcow2 that fits exactly', clean, 'qcow2', 10 * GiB],
    ['clean qcow2 with room to spare', clean, 'qcow2', 20 * GiB],
    ['monolithic vmdk', parseInfo(vmdk('/scratch/disk.vmdk')), 'vmdk', undefined],
  ])('%s passes', (_name, info, format, usable) => {
    expect(() => checkInfo(info, format, usable)).not.toThrow();
  });

  test.each<[string, ImageInfo, string, number | undefined, string]>([
    ['format mismatch', clean, 'vmdk', undefined, 'INVALID_IMAGE'],
    ['qemu-img reads no format', { ...clean, format: '' }, 'qcow2', undefined, 'INVALID_IMAGE'],
    ['backing file', parseInfo(QCOW2_BACKING), 'qcow2', undefined, 'BACKING_FILE'],
    ['backing file from full-backing-filename', parseInfo(QCOW2_FULL_BACKING_ONLY), 'qcow2', undefined, 'BACKING_FILE'],
    ['external data file', parseInfo(QCOW2_DATA_FILE), 'qcow2', undefined, 'BACKING_FILE'],
    ['vmdk with a foreign extent', parseInfo(vmdk('/etc/shadow')), 'vmdk', undefined, 'BACKING_FILE'],
    ['virtual size one byte over usable', clean, 'qcow2', 10 * GiB - 1, 'TARGET_TOO_SMALL'],
    ['virtual size zero', { ...clean, virtualSize: 0 }, 'qcow2', undefined, 'INVALID_IMAGE'],
    ['virtual size negative', { ...clean, virtualSize: -1 }, 'qcow2', undefined, 'INVALID_IMAGE'],
    ['virtual size not a number', { ...clean, virtualSize: Number.NaN }, 'qcow2', undefined, 'INVALID_IMAGE'],
  ])('%s -> %s', (_name, info, format, usable, code) => {
    expect(codeOf(() => checkInfo(info, format, usable))).toBe(code);
  });

  test('TARGET_TOO_SMALL carries both sizes in details', () => {
    expect(() => checkInfo(clean, 'qcow2', GiB)).toThrow(
      expect.objectContaining({ code: 'TARGET_TOO_SMALL', details: { virtualSize: 10 * GiB, usable: GiB } }),
    );
  });
});

describe('parseConvertProgress', () => {
  test.each<[string, number | undefined]>([
    ['    (0.00/100%)\r    (45.50/100%)\r', 45.5],
    ['    (100.00/100%)\r', 100],
    ['(1.01/100%)', 1.01],
    ['(7/100%)', 7],
    ['ial (12.00/100%)\r    (13', 12], // a chunk cut in the middle of the next update
    ['', undefined],
    ['no progress here', undefined],
    ['    (45.50/100', undefined],
    ['(45.50/99%)', undefined],
  ])('%j -> %p', (text, percent) => {
    expect(parseConvertProgress(text)).toBe(percent);
  });
});
