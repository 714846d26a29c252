import { describe, expect, test } from '@jest/globals';
import { isFixedVhdFooter, parseVhdFooter, VHD_FOOTER_BYTES } from '../../importer/vhd-footer.js';

/** A footer as the VHD specification lays it out, its checksum computed unless `checksum` is given. */
function footer(o: { diskType?: number; currentSize?: bigint; checksum?: number; cookie?: string } = {}): Buffer {
  const b = Buffer.alloc(VHD_FOOTER_BYTES);
  b.write(o.cookie ?? 'conectix', 0, 'latin1');
  b.writeUInt32BE(2, 8); // features
  b.writeUInt32BE(0x00010000, 12); // version
  b.writeBigUInt64BE(0xffffffffffffffffn, 16); // data offset: none for a fixed disk
  b.write('qemu', 28, 'latin1');
  b.writeBigUInt64BE(o.currentSize ?? 8n * 1024n * 1024n, 40);
  b.writeBigUInt64BE(o.currentSize ?? 8n * 1024n * 1024n, 48);
  b.writeUInt32BE(o.diskType ?? 2, 60);
  let sum = 0;
  for (const byte of b) sum += byte;
  b.writeUInt32BE(o.checksum ?? ~sum >>> 0, 64);
  return b;
}

const MiB8 = 8 * 1024 * 1024;

describe('VHD footer', () => {
  test('parses the disk type, the current size and the checksum', () => {
    expect(parseVhdFooter(footer())).toEqual({ diskType: 2, currentSize: BigInt(MiB8), checksumValid: true });
    expect(parseVhdFooter(footer({ diskType: 3 }))?.diskType).toBe(3);
    expect(parseVhdFooter(footer({ checksum: 1234 }))?.checksumValid).toBe(false);
  });

  test.each<[string, Buffer]>([
    ['no cookie', footer({ cookie: 'notavhd!' })],
    ['511 bytes', footer().subarray(1)],
    ['513 bytes', Buffer.concat([footer(), Buffer.alloc(1)])],
    ['zeros', Buffer.alloc(512)],
  ])('%s: not a footer', (_name, bytes) => {
    expect(parseVhdFooter(bytes)).toBeUndefined();
  });

  test.each<[string, Buffer, number, boolean]>([
    ['a fixed disk declaring the bytes before it', footer(), MiB8, true],
    ['a fixed disk of another size', footer(), MiB8 + 512, false],
    ['a dynamic disk (its copy of the footer is data)', footer({ diskType: 3 }), MiB8, false],
    ['a differencing disk', footer({ diskType: 4 }), MiB8, false],
    ['a bad checksum', footer({ checksum: 7 }), MiB8, false],
    ['random bytes', Buffer.alloc(512, 0xa5), MiB8, false],
  ])('%s: dropped %s', (_name, tail, before, dropped) => {
    expect(isFixedVhdFooter(tail, before)).toBe(dropped);
  });
});
