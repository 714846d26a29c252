import { describe, expect, test } from '@jest/globals';
import { checkInfo, dataImageArg, type ImageInfo, parseConvertProgress, parseHexDump, parseInfo, parseReadTimes, qemuCheck, qemuConvert, qemuInfo } from '../../importer/qemu-img.js';
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

const vmdk = (extentFile: string, parentCid = 4294967295): string =>
  JSON.stringify({
    'virtual-size': 2 * GiB,
    filename: '/scratch/disk.vmdk',
    'cluster-size': 65536,
    format: 'vmdk',
    'format-specific': {
      type: 'vmdk',
      data: {
        cid: 1869479512,
        'parent-cid': parentCid,
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
    ['monolithic vmdk', vmdk('/scratch/disk.vmdk'), { format: 'vmdk', virtualSize: 2 * GiB, filename: '/scratch/disk.vmdk', extentFiles: ['/scratch/disk.vmdk'], parentCid: 0xffffffff }],
    [
      'vmdk child without a file name hint',
      vmdk('/scratch/disk.vmdk', 0x1846_2f46),
      { format: 'vmdk', virtualSize: 2 * GiB, filename: '/scratch/disk.vmdk', extentFiles: ['/scratch/disk.vmdk'], parentCid: 0x1846_2f46 },
    ],
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
    ['vmdk child (parent CID set, no backing file name)', parseInfo(vmdk('/scratch/disk.vmdk', 0x1846_2f46)), 'vmdk', undefined, 'BACKING_FILE'],
    ['vmdk child with parent CID 0', parseInfo(vmdk('/scratch/disk.vmdk', 0)), 'vmdk', undefined, 'BACKING_FILE'],
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

describe('parseReadTimes (qemu-io read reports)', () => {
  test('each read\'s milliseconds from its ops/sec, in order, the 10 ms seconds column ignored', () => {
    const text = [
      'read 4096/4096 bytes at offset 0',
      '4 KiB, 1 ops; 00.01 sec (298.980 KiB/sec and 74.7450 ops/sec)',
      'read 2097152/2097152 bytes at offset 0',
      '2 MiB, 1 ops; 00.00 sec (435.222 MiB/sec and 217.6109 ops/sec)',
      'read 2097152/2097152 bytes at offset 2097152',
      '2 MiB, 1 ops; 00.04 sec (45.800 MiB/sec and 22.9000 ops/sec)',
    ].join('\n');
    const times = parseReadTimes(text);
    expect(times).toHaveLength(3);
    expect(times[0]).toBeCloseTo(13.379, 2);
    expect(times[1]).toBeCloseTo(4.595, 2);
    expect(times[2]).toBeCloseTo(43.668, 2);
  });

  test('nothing reported: no times (the caller fails on the count)', () => {
    expect(parseReadTimes('read failed: Input/output error')).toEqual([]);
  });
});

describe('parseHexDump (qemu-io read -v)', () => {
  const dump = [
    '00030000:  72 65 67 69 83 ce 6f 2c 02 00 00 00 00 00 00 00  regi..o.........',
    '00030010:  66 77 c2 2d 23 f6 00 42  ',
    'read 24/24 bytes at offset 196608',
    '24 bytes, 1 ops; 00.00 sec (99.910 KiB/sec and 2131.4236 ops/sec)',
  ].join('\n');

  test('a full and a partial line', () => {
    expect(parseHexDump(dump, 0x30000, 24).toString('hex')).toBe('7265676983ce6f2c02000000000000006677c22d23f60042');
  });

  test('an ascii column that looks like hex is not read as bytes', () => {
    const line = `00000000:  ${'61 62 '.repeat(8)} ab ab ab ab ab ab ab ab`;
    expect(parseHexDump(line, 0, 16)).toEqual(Buffer.from('ab'.repeat(8), 'latin1'));
  });

  test('offsets past 4 GiB', () => {
    expect(parseHexDump('100000000:  ff 00  ..', 2 ** 32, 2)).toEqual(Buffer.from([0xff, 0]));
  });

  test.each([
    ['another offset', dump, 0, 24],
    ['fewer bytes than asked for', dump, 0x30000, 32],
    ['a gap between lines', dump.replace('00030010', '00030020'), 0x30000, 24],
    ['no dump at all', 'read failed: Input/output error', 0, 16],
  ])('%s -> INTERNAL', (_name, text, offset, length) => {
    expect(codeOf(() => parseHexDump(text, offset, length))).toBe('INTERNAL');
  });
});

describe('qemu-img is given only the formats Ferry converts (no process is started for others)', () => {
  test.each([['qed'], ['qcow'], ['parallels'], ['vvfat'], ['luks'], ['']])('-f %j -> INTERNAL', async (format) => {
    await expect(qemuInfo('/nonexistent/disk', format)).rejects.toMatchObject({ code: 'INTERNAL' });
    await expect(qemuCheck('/nonexistent/disk', format)).rejects.toMatchObject({ code: 'INTERNAL' });
    await expect(qemuConvert({ source: '/nonexistent/disk', sourceFormat: format, target: '/nonexistent/out', targetExists: false })).rejects.toMatchObject({ code: 'INTERNAL' });
  });
});

describe('dataImageArg: how check and convert name the image', () => {
  test.each<[string, string, readonly string[]]>([
    ['/scratch/tmpimage-1', 'qcow2', ['json:{"driver":"qcow2","backing":null,"file":{"driver":"file","filename":"/scratch/tmpimage-1"}}']],
    ['nbd+unix:///?socket=/tmp/ferry-nbd-x/nbd.sock', 'qcow2', ['json:{"driver":"qcow2","backing":null,"file":{"driver":"nbd","server":{"type":"unix","path":"/tmp/ferry-nbd-x/nbd.sock"}}}']],
    ['/scratch/tmpimage-2', 'vmdk', ['-f', 'vmdk', '/scratch/tmpimage-2']],
    ['/scratch/tmpimage-3', 'raw', ['-f', 'raw', '/scratch/tmpimage-3']],
  ])('%s as %s', (path, format, args) => {
    expect(dataImageArg(path, format).args).toEqual(args);
  });

  test('a relative path or an unknown format is refused before any process starts', () => {
    expect(codeOf(() => dataImageArg('disk.qcow2', 'qcow2'))).toBe('INTERNAL');
    expect(codeOf(() => dataImageArg('/d', 'qed'))).toBe('INTERNAL');
  });
});
