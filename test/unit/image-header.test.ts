import { describe, expect, test } from '@jest/globals';
import { checkHeader } from '../../importer/image-header.js';
import type { Format } from '../../importer/sniff.js';
import { codeOf } from './helpers.js';

interface Qcow2Fields {
  version?: number;
  backingOffset?: bigint;
  backingSize?: number;
  incompatible?: bigint;
  length?: number;
}

/** A qcow2 header laid out as in qemu's docs/interop/qcow2.txt. */
function qcow2({ version = 3, backingOffset = 0n, backingSize = 0, incompatible = 0n, length = 512 }: Qcow2Fields = {}): Buffer {
  const buf = Buffer.alloc(Math.max(length, 104));
  buf.write('QFI\xfb', 0, 'latin1');
  buf.writeUInt32BE(version, 4);
  buf.writeBigUInt64BE(backingOffset, 8);
  buf.writeUInt32BE(backingSize, 16);
  buf.writeUInt32BE(16, 20); // cluster_bits
  buf.writeBigUInt64BE(1n << 30n, 24); // size
  if (version >= 3) {
    buf.writeBigUInt64BE(incompatible, 72);
    buf.writeUInt32BE(104, 100); // header_length
  }
  return buf.subarray(0, length);
}

describe('checkHeader', () => {
  test.each<[string, Format, Buffer]>([
    ['clean qcow2 v3', 'qcow2', qcow2()],
    ['clean qcow2 v2 (72-byte header)', 'qcow2', qcow2({ version: 2, length: 72 })],
    ['qcow2 v3 with the dirty and corrupt bits (not a data file)', 'qcow2', qcow2({ incompatible: 0b11n })],
    ['qcow2 v3 with compression type zstd (bit 3)', 'qcow2', qcow2({ incompatible: 8n })],
    ['raw', 'raw', Buffer.alloc(512)],
    ['raw, even if tiny', 'raw', Buffer.alloc(4)],
    ['vmdk', 'vmdk', Buffer.from('KDMV')],
    ['vhd', 'vhd', Buffer.from('conectix')],
  ])('%s passes', (_name, format, head) => {
    expect(() => checkHeader(format, head)).not.toThrow();
  });

  test.each<[string, Format, Buffer, string]>([
    ['qcow2 with a backing file offset', 'qcow2', qcow2({ backingOffset: 0x200n, backingSize: 9 }), 'BACKING_FILE'],
    ['qcow2 with only a backing offset', 'qcow2', qcow2({ backingOffset: 0x200n }), 'BACKING_FILE'],
    ['qcow2 with only a backing size', 'qcow2', qcow2({ backingSize: 9 }), 'BACKING_FILE'],
    ['qcow2 v2 with a backing file', 'qcow2', qcow2({ version: 2, backingOffset: 0x200n, backingSize: 9 }), 'BACKING_FILE'],
    ['qcow2 v3 with an external data file (incompatible bit 2, value 4)', 'qcow2', qcow2({ incompatible: 4n }), 'BACKING_FILE'],
    ['qcow2 v3 with the data file bit among others', 'qcow2', qcow2({ incompatible: 0b1111n }), 'BACKING_FILE'],
    ['truncated qcow2 (40 bytes)', 'qcow2', qcow2({ length: 40 }), 'INVALID_IMAGE'],
    ['qcow2 v3 cut before incompatible_features', 'qcow2', qcow2({ length: 76 }), 'INVALID_IMAGE'],
    ['vmdk descriptor', 'vmdk-descriptor', Buffer.from('# Disk DescriptorFile\n'), 'BACKING_FILE'],
  ])('%s -> %s', (_name, format, head, code) => {
    expect(codeOf(() => checkHeader(format, head))).toBe(code);
  });
});
