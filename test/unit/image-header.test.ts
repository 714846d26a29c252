import { describe, expect, test } from '@jest/globals';
import { checkHeader, checkLayout, checkVmdkExtents, checkVmdkParent, type ReadAt } from '../../importer/image-header.js';
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

/** A VHD footer copy (the first sector of a dynamic or differencing VHD). */
function vhd(diskType: number, length = 512): Buffer {
  const buf = Buffer.alloc(512);
  buf.write('conectix', 0, 'latin1');
  buf.writeUInt32BE(diskType, 60);
  return buf.subarray(0, length);
}

/** A VDI 1.1 pre-header and header (little endian). */
function vdi(imageType: number, { link = false, length = 512 }: { link?: boolean; length?: number } = {}): Buffer {
  const buf = Buffer.alloc(512);
  buf.write('<<< Oracle VM VirtualBox Disk Image >>>\n', 0, 'latin1');
  buf.writeUInt32LE(0xbeda107f, 0x40);
  buf.writeUInt32LE(0x00010001, 0x44);
  buf.writeUInt32LE(imageType, 0x4c);
  if (link) buf.fill(0x5a, 0x1a8, 0x1b8);
  return buf.subarray(0, length);
}

/** A QED header (little endian): features at 16, backing_filename_offset/size at 56/60. */
function qed({ features = 0n, backingOffset = 0, backingSize = 0, length = 512 } = {}): Buffer {
  const buf = Buffer.alloc(512);
  buf.write('QED\0', 0, 'latin1');
  buf.writeBigUInt64LE(features, 16);
  buf.writeUInt32LE(backingOffset, 56);
  buf.writeUInt32LE(backingSize, 60);
  return buf.subarray(0, length);
}

/** qcow v1: backing_file_offset u64 BE at 8, backing_file_size u32 at 16, as in qcow2. */
function qcow1(backingOffset = 0n, backingSize = 0): Buffer {
  const buf = Buffer.alloc(512);
  buf.write('QFI\xfb', 0, 'latin1');
  buf.writeUInt32BE(1, 4);
  buf.writeBigUInt64BE(backingOffset, 8);
  buf.writeUInt32BE(backingSize, 16);
  return buf;
}

const SELF = '# Disk DescriptorFile\nversion=1\nCID=1a2b3c4d\nparentCID=ffffffff\ncreateType="monolithicSparse"\n\n# Extent description\nRW 16384 SPARSE "disk.vmdk"\n\n# The Disk Data Base\n#DDB\nddb.adapterType = "ide"\n';

interface VmdkFields {
  capacity?: bigint;
  descOffset?: bigint;
  descSize?: bigint;
  descriptor?: string;
  /** Text at byte 512, where qemu reads the parent fields, when the descriptor is elsewhere. */
  atSector1?: string;
  length?: number;
}

/** A monolithic sparse VMDK's first sectors: the KDMV header and its embedded descriptor. */
function vmdk({ capacity = 16384n, descOffset = 1n, descSize = 20n, descriptor = SELF, atSector1, length }: VmdkFields = {}): Buffer {
  const buf = Buffer.alloc(64 * 1024);
  buf.write('KDMV', 0, 'latin1');
  buf.writeUInt32LE(1, 4);
  buf.writeBigUInt64LE(capacity, 12);
  buf.writeBigUInt64LE(128n, 20);
  buf.writeBigUInt64LE(descOffset, 28);
  buf.writeBigUInt64LE(descSize, 36);
  if (descOffset > 0n) buf.write(descriptor, Number(descOffset) * 512, 'latin1');
  if (atSector1 !== undefined) buf.write(atSector1, 512, 'latin1');
  return length === undefined ? buf : buf.subarray(0, length);
}

const guidLe = (g: string): Buffer => {
  const h = Buffer.from(g.replace(/-/g, ''), 'hex');
  return Buffer.concat([h.subarray(0, 4).reverse(), h.subarray(4, 6).reverse(), h.subarray(6, 8).reverse(), h.subarray(8)]);
};
const METADATA_REGION = '8b7ca206-4790-4b9a-b8fe-575f050f886e';
const BAT_REGION = '2dc27766-f623-4200-9d64-115e9bfd4a08';
const FILE_PARAMETERS = 'caa16737-fa36-4d43-b3b6-33f0aa44e76b';
const VIRTUAL_DISK_SIZE = '2fa54224-cd1b-4876-b211-5dbed83bf4b8';
const PARENT_LOCATOR = 'a8d35f2d-b30b-454d-abf7-d3d84834ab0c';

interface VhdxFields {
  hasParent?: boolean;
  items?: string[];
  regions?: string[];
  regionSignature?: string;
  metadataSignature?: string;
  /** Claimed item count, beyond what the table holds. */
  itemCount?: number;
  length?: number;
}

/** A VHDX laid out as qemu-img writes one: region table at 192 KiB, metadata region at 3 MiB. */
function vhdx({ hasParent = false, items = [FILE_PARAMETERS, VIRTUAL_DISK_SIZE], regions = [BAT_REGION, METADATA_REGION], regionSignature = 'regi', metadataSignature = 'metadata', itemCount, length }: VhdxFields = {}): Buffer {
  const md = 3 * 1024 * 1024;
  const buf = Buffer.alloc(md + 0x20000);
  buf.write('vhdxfile', 0, 'latin1');
  const rt = 192 * 1024;
  buf.write(regionSignature, rt, 'latin1');
  buf.writeUInt32LE(regions.length, rt + 8);
  regions.forEach((g, i) => {
    guidLe(g).copy(buf, rt + 16 + 32 * i);
    buf.writeBigUInt64LE(BigInt(g === METADATA_REGION ? md : 2 * 1024 * 1024), rt + 32 + 32 * i);
    buf.writeUInt32LE(1024 * 1024, rt + 40 + 32 * i);
  });
  buf.write(metadataSignature, md, 'latin1');
  buf.writeUInt16LE(itemCount ?? items.length, md + 10);
  items.forEach((g, i) => {
    const at = md + 32 + 32 * i;
    guidLe(g).copy(buf, at);
    buf.writeUInt32LE(0x10000 + 8 * i, at + 16);
    buf.writeUInt32LE(8, at + 20);
    buf.writeUInt32LE(0b100, at + 24);
    if (g === FILE_PARAMETERS) {
      buf.writeUInt32LE(32 * 1024 * 1024, md + 0x10000 + 8 * i);
      buf.writeUInt32LE(hasParent ? 0b10 : 0, md + 0x10000 + 8 * i + 4);
    }
  });
  return length === undefined ? buf : buf.subarray(0, length);
}

/** Random access to a buffer, as the staged image gives it: short only at the end. */
function reader(image: Buffer): ReadAt {
  return async (offset, length) => image.subarray(offset, offset + length);
}

async function layoutCode(format: Format, image: Buffer): Promise<string> {
  try {
    await checkLayout(format, reader(image));
    return 'passes';
  } catch (err) {
    return (err as { code?: string }).code ?? String(err);
  }
}

describe('checkHeader', () => {
  test.each<[string, Format, Buffer]>([
    ['clean qcow2 v3', 'qcow2', qcow2()],
    ['clean qcow2 v2 (72-byte header)', 'qcow2', qcow2({ version: 2, length: 72 })],
    ['qcow2 v3 with the dirty and corrupt bits (not a data file)', 'qcow2', qcow2({ incompatible: 0b11n })],
    ['qcow2 v3 with compression type zstd (bit 3)', 'qcow2', qcow2({ incompatible: 8n })],
    ['raw', 'raw', Buffer.alloc(512)],
    ['raw, even if tiny', 'raw', Buffer.alloc(4)],
    ['monolithic sparse vmdk', 'vmdk', vmdk({ length: 512 })],
    ['dynamic vhd (type 3)', 'vhd', vhd(3)],
    ['vhd with a fixed disk type in the footer copy (type 2)', 'vhd', vhd(2)],
    ['normal (dynamic) vdi', 'vdi', vdi(1)],
    ['fixed vdi', 'vdi', vdi(2)],
    ['QED without a backing file (refused later as unsupported)', 'qed', qed()],
    ['qcow v1 without a backing file (refused later as unsupported)', 'qcow', qcow1()],
    ['vhdx (its metadata is checked by checkLayout)', 'vhdx', Buffer.from('vhdxfile')],
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
    ['differencing vhd (type 4)', 'vhd', vhd(4), 'BACKING_FILE'],
    ['vhd with disk type 0 (none)', 'vhd', vhd(0), 'INVALID_IMAGE'],
    ['vhd with disk type 5 (reserved)', 'vhd', vhd(5), 'INVALID_IMAGE'],
    ['vhd footer cut before the disk type', 'vhd', vhd(4, 62), 'INVALID_IMAGE'],
    ['differencing vdi (type 4)', 'vdi', vdi(4), 'BACKING_FILE'],
    ['undo vdi (type 3)', 'vdi', vdi(3), 'BACKING_FILE'],
    ['vdi naming a parent (uuidLinkage set)', 'vdi', vdi(1, { link: true }), 'BACKING_FILE'],
    ['vdi with image type 0', 'vdi', vdi(0), 'INVALID_IMAGE'],
    ['vdi header cut before uuidLinkage', 'vdi', vdi(4, { length: 0x1b0 }), 'INVALID_IMAGE'],
    ['QED with the backing file feature', 'qed', qed({ features: 1n }), 'BACKING_FILE'],
    ['QED with a backing file name only', 'qed', qed({ backingOffset: 0x200, backingSize: 9 }), 'BACKING_FILE'],
    ['QED with the backing feature among others', 'qed', qed({ features: 0b111n }), 'BACKING_FILE'],
    ['truncated QED', 'qed', qed({ length: 60 }), 'INVALID_IMAGE'],
    ['qcow v1 with a backing file', 'qcow', qcow1(0x48n, 9), 'BACKING_FILE'],
    ['vmdk with capacity 0 and an embedded descriptor (its extents are other files)', 'vmdk', vmdk({ capacity: 0n, length: 512 }), 'BACKING_FILE'],
    ['vmdk with capacity 0 and no descriptor', 'vmdk', vmdk({ capacity: 0n, descOffset: 0n, descSize: 0n, length: 512 }), 'INVALID_IMAGE'],
    ['truncated vmdk header', 'vmdk', vmdk({ length: 40 }), 'INVALID_IMAGE'],
  ])('%s -> %s', (_name, format, head, code) => {
    expect(codeOf(() => checkHeader(format, head))).toBe(code);
  });
});

describe('checkLayout: what lies beyond the 512-byte head', () => {
  test.each<[string, Format, Buffer]>([
    ['monolithic sparse vmdk', 'vmdk', vmdk()],
    ['vmdk with parentCID=FFFFFFFF (upper case)', 'vmdk', vmdk({ descriptor: SELF.replace('ffffffff', 'FFFFFFFF') })],
    ['streamOptimized vmdk', 'vmdk', vmdk({ descriptor: SELF.replace('monolithicSparse', 'streamOptimized') })],
    ['vmdk with a descriptor elsewhere and grain data at sector 1', 'vmdk', vmdk({ descOffset: 64n, atSector1: '\x01\x02binary' })],
    ['vmdk whose descriptor is cut by the end of the file', 'vmdk', vmdk().subarray(0, 700)],
    ['clean vhdx', 'vhdx', vhdx()],
    ['vhdx with the region entries in the other order', 'vhdx', vhdx({ regions: [METADATA_REGION, BAT_REGION] })],
  ])('%s passes', async (_name, format, image) => {
    expect(await layoutCode(format, image)).toBe('passes');
  });

  test.each<[string, Format, Buffer, string]>([
    ['vmdk child (parentCID)', 'vmdk', vmdk({ descriptor: SELF.replace('parentCID=ffffffff', 'parentCID=8e7a2c11') }), 'BACKING_FILE'],
    ['vmdk child (parentFileNameHint)', 'vmdk', vmdk({ descriptor: `${SELF}parentFileNameHint="base.vmdk"\n` }), 'BACKING_FILE'],
    ['vmdk with a FLAT extent', 'vmdk', vmdk({ descriptor: SELF.replace('SPARSE "disk.vmdk"', 'FLAT "/etc/shadow" 0') }), 'BACKING_FILE'],
    ['vmdk with a second extent', 'vmdk', vmdk({ descriptor: SELF.replace('\n\n# The Disk', '\nRW 16384 SPARSE "disk-s002.vmdk"\n\n# The Disk') }), 'BACKING_FILE'],
    ['vmdk: descriptor elsewhere, a parent hint at sector 1 (where qemu reads it)', 'vmdk', vmdk({ descOffset: 64n, atSector1: 'parentFileNameHint="/dev/sda"\n' }), 'BACKING_FILE'],
    ['vmdk: clean at sector 1, a FLAT extent in the descriptor the header points at', 'vmdk', vmdk({ descOffset: 64n, descriptor: 'RW 8 FLAT "/etc/passwd" 0\n', atSector1: SELF }), 'BACKING_FILE'],
    ['vmdk with capacity 0', 'vmdk', vmdk({ capacity: 0n }), 'BACKING_FILE'],
    ['vmdk header cut short', 'vmdk', vmdk().subarray(0, 30), 'INVALID_IMAGE'],
    ['vhdx with HasParent', 'vhdx', vhdx({ hasParent: true }), 'BACKING_FILE'],
    ['vhdx with a parent locator item', 'vhdx', vhdx({ items: [FILE_PARAMETERS, VIRTUAL_DISK_SIZE, PARENT_LOCATOR] }), 'BACKING_FILE'],
    ['vhdx with a parent locator listed first', 'vhdx', vhdx({ items: [PARENT_LOCATOR, FILE_PARAMETERS] }), 'BACKING_FILE'],
    ['vhdx without a region table', 'vhdx', vhdx({ regionSignature: 'xxxx' }), 'INVALID_IMAGE'],
    ['vhdx without a metadata region', 'vhdx', vhdx({ regions: [BAT_REGION] }), 'INVALID_IMAGE'],
    ['vhdx without a metadata table', 'vhdx', vhdx({ metadataSignature: 'nothere!' }), 'INVALID_IMAGE'],
    ['vhdx cut before its metadata region', 'vhdx', vhdx({ length: 2 * 1024 * 1024 }), 'INVALID_IMAGE'],
    ['vhdx claiming more metadata items than its table holds', 'vhdx', vhdx({ itemCount: 4000 }), 'INVALID_IMAGE'],
  ])('%s -> %s', async (_name, format, image, code) => {
    expect(await layoutCode(format, image)).toBe(code);
  });

  test.each<[string, Format, Buffer]>([
    ['qcow2', 'qcow2', qcow2()],
    ['vhd', 'vhd', vhd(3)],
    ['vdi', 'vdi', vdi(1)],
    ['raw', 'raw', Buffer.alloc(4096)],
  ])('%s: only the head is read again', async (_name, format, head) => {
    const reads: Array<[number, number]> = [];
    await checkLayout(format, async (offset, length) => {
      reads.push([offset, length]);
      return head.subarray(offset, offset + length);
    });
    expect(reads).toEqual([[0, 512]]);
  });

  test.each<[string, Format, Buffer, string]>([
    ['a qcow2 that has a backing file when read in place', 'qcow2', qcow2({ backingOffset: 0x200n, backingSize: 9 }), 'BACKING_FILE'],
    ['a qcow2 with a data file when read in place', 'qcow2', qcow2({ incompatible: 4n }), 'BACKING_FILE'],
    ['a VHD that is differencing when read in place', 'vhd', vhd(4), 'BACKING_FILE'],
    ['raw in the stream, qcow2 in place', 'raw', qcow2({ backingOffset: 0x200n, backingSize: 9 }), 'INVALID_IMAGE'],
    ['vmdk in the stream, a descriptor in place', 'vmdk', Buffer.from(SELF), 'INVALID_IMAGE'],
  ])('the head is checked again on the staged image: %s -> %s', async (_name, format, image, code) => {
    expect(await layoutCode(format, image)).toBe(code);
  });
});

describe('VMDK descriptor text', () => {
  test.each([
    ['parentCID=ffffffff\n', 'passes'],
    ['parentCID = "ffffffff"\n', 'passes'],
    ['parentCID=0\n', 'BACKING_FILE'],
    ['  parentCID=deadbeef\r\n', 'BACKING_FILE'],
    ['parentFileNameHint="x"\n', 'BACKING_FILE'],
    ['# parentFileNameHint is only mentioned in a comment\n', 'BACKING_FILE'],
    ['ddb.note = "xparentFileNameHint=\\"/dev/sda\\""\n', 'BACKING_FILE'],
    ['parentCID=ffffffff0\n', 'BACKING_FILE'],
    ['parentCID=\n', 'BACKING_FILE'],
    ['parentCID=ffffffff\nparentCID=1234\n (qemu reads the first; both must say none)', 'BACKING_FILE'],
    ['no parent fields at all\n', 'passes'],
  ])('parent: %j -> %s', (text, expected) => {
    expect(expected === 'passes' ? (checkVmdkParent(text), 'passes') : codeOf(() => checkVmdkParent(text))).toBe(expected);
  });

  test.each([
    ['RW 16384 SPARSE "disk.vmdk"\n', 'passes'],
    ['RDONLY 16384 sparse "disk.vmdk"\n', 'passes'],
    ['', 'passes'],
    ['RW 16384 FLAT "disk-flat.vmdk" 0\n', 'BACKING_FILE'],
    ['RW 16384 VMFS "disk-flat.vmdk"\n', 'BACKING_FILE'],
    ['RW 16384 ZERO\n', 'BACKING_FILE'],
    ['RW 8 SPARSE "a.vmdk"\nRW 8 SPARSE "b.vmdk"\n', 'BACKING_FILE'],
    ['NOACCESS 8 SPARSE "a.vmdk"\n  RW 8 FLAT "/dev/sda" 0\n', 'BACKING_FILE'],
  ])('extents: %j -> %s', (text, expected) => {
    expect(expected === 'passes' ? (checkVmdkExtents(text), 'passes') : codeOf(() => checkVmdkExtents(text))).toBe(expected);
  });
});
