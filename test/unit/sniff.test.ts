import { describe, expect, test } from '@jest/globals';
import { detectFormat, Format, formatOfQemuName, isCompression, needsConversion, QEMU_INPUT_FORMATS, qemuFormatName, SNIFF_BYTES } from '../../importer/sniff.js';

/** A SNIFF_BYTES-long buffer of `fill` with `magic` written at `offset`. */
function head(magic: Buffer | string, offset = 0, fill = 0x00): Buffer {
  const buf = Buffer.alloc(SNIFF_BYTES, fill);
  (typeof magic === 'string' ? Buffer.from(magic, 'latin1') : magic).copy(buf, offset);
  return buf;
}

function qcow(version: number): Buffer {
  const buf = head('QFI\xfb');
  buf.writeUInt32BE(version, 4);
  return buf;
}

describe('detectFormat', () => {
  test.each<[string, Buffer, Format]>([
    ['gzip', head(Buffer.from([0x1f, 0x8b, 0x08])), 'gzip'],
    ['xz', head(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])), 'xz'],
    ['zstd', head(Buffer.from([0x28, 0xb5, 0x2f, 0xfd])), 'zstd'],
    ['bzip2 (level 9)', head('BZh91AY&SY'), 'bzip2'],
    ['bzip2 (level 1)', head('BZh11AY&SY'), 'bzip2'],
    ['qcow2 v2', qcow(2), 'qcow2'],
    ['qcow2 v3', qcow(3), 'qcow2'],
    ['qcow v1 (checked for a backing file, then refused)', qcow(1), 'qcow'],
    ['qcow with an unknown version', qcow(4), 'unsupported'],
    ['qcow magic without a version', Buffer.from('QFI\xfb', 'latin1'), 'unsupported'],
    ['vmdk (sparse extent)', head('KDMV'), 'vmdk'],
    ['vmdk text descriptor', head('# Disk DescriptorFile\nversion=1\n', 0, 0x20), 'vmdk-descriptor'],
    ['vdi', head(Buffer.from([0x7f, 0x10, 0xda, 0xbe]), 0x40, 0x20), 'vdi'],
    ['vhd (dynamic, header copy of footer)', head('conectix'), 'vhd'],
    ['vhdx', head('vhdxfile'), 'vhdx'],
    ['QED (checked for a backing file, then refused)', head('QED\0'), 'qed'],
    ['LUKS', head('LUKS\xba\xbe'), 'unsupported'],
    ['Parallels', head('WithoutFreeSpace'), 'unsupported'],
    ['Parallels with format extensions', head('WithouFreSpacExt'), 'unsupported'],
    ['Bochs', head('Bochs Virtual HD Image'), 'unsupported'],
    ['cloop', head('#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n'), 'unsupported'],
    ['VMDK3 / ESX sparse (COWD)', head('COWD'), 'unsupported'],
    ['a shell script that is not cloop', head('#!/bin/sh\necho hi\n'), 'raw'],
    ['tar (POSIX ustar)', head('ustar\x0000', 257, 0x00), 'tar'],
    ['tar (GNU)', head('ustar  \0', 257, 0x00), 'tar'],
    ['all zeros', Buffer.alloc(SNIFF_BYTES), 'raw'],
    ['random text', head('hello world, this is not an image', 0, 0x41), 'raw'],
    ["'BZh' alone", head('BZh'), 'raw'],
    ["'BZh9' without the block magic", head('BZh9xxxxxx'), 'raw'],
    ["'BZh0' (block size 0 is invalid)", head('BZh01AY&SY'), 'raw'],
    ['gzip magic with a method other than deflate', head(Buffer.from([0x1f, 0x8b, 0x07])), 'raw'],
    ['empty buffer', Buffer.alloc(0), 'raw'],
    ['a single gzip byte', Buffer.from([0x1f]), 'raw'],
    ['short buffer holding the gzip magic', Buffer.from([0x1f, 0x8b, 0x08]), 'gzip'],
    ['vdi magic cut off by a short buffer', Buffer.alloc(0x42, 0x7f), 'raw'],
    ['tar magic cut off by a short buffer', head('ustar', 257).subarray(0, 260), 'raw'],
    ['vmdk magic at the wrong offset', head('KDMV', 1), 'raw'],
  ])('%s -> %s', (_name, buf, format) => {
    expect(detectFormat(buf)).toBe(format);
  });
});

describe('format properties', () => {
  const all = Object.values(Format);

  test.each(all)('%s', (format) => {
    expect(isCompression(format)).toBe(['gzip', 'xz', 'zstd', 'bzip2'].includes(format));
    expect(needsConversion(format)).toBe(['qcow2', 'vmdk', 'vdi', 'vhd', 'vhdx'].includes(format));
  });

  test.each<[Format, string]>([
    ['vhd', 'vpc'],
    ['qcow2', 'qcow2'],
    ['vmdk', 'vmdk'],
    ['vdi', 'vdi'],
    ['vhdx', 'vhdx'],
    ['raw', 'raw'],
  ])('qemuFormatName(%s) === %s', (format, name) => {
    expect(qemuFormatName(format)).toBe(name);
    expect(formatOfQemuName(name)).toBe(format);
  });

  test('qemu-img is only ever given the formats Ferry converts, and raw', () => {
    expect([...QEMU_INPUT_FORMATS].sort()).toEqual(['qcow2', 'raw', 'vdi', 'vhdx', 'vmdk', 'vpc']);
    for (const name of ['qed', 'qcow', 'vhd', 'parallels', 'luks', 'vvfat', '']) expect(formatOfQemuName(name)).toBeUndefined();
  });
});
