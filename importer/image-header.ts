/**
 * Checks on the raw bytes of an untrusted image, before qemu-img opens it with a format driver:
 * every format's "this disk depends on another file" marker is refused with BACKING_FILE, from
 * bytes alone. Opening such an image would either make qemu open the file it names (a qcow2 data
 * file, a VMDK extent: a local path read into the disk) or import the child without its parent's
 * data (a differencing VHD or VDI), so neither may reach qemu-img.
 *
 * Two stages, because the engine peeks only SNIFF_BYTES (512) of the stream:
 * - `checkHeader(format, head)`: the fields inside the first 512 bytes (qcow/qcow2, QED, VHD's
 *   footer copy, VDI, the VMDK sparse header), run on every import before anything is staged;
 * - `checkLayout(format, read)`: the head once more, from the staged image, and the structures
 *   that lie further in, read at random (the VMDK embedded descriptor at sector 1, the VHDX
 *   metadata region, usually at 2-3 MiB); qemuInfo runs it before `qemu-img info`.
 */

import { ErrorCode, FerryError } from '../src/errors.js';
import { detectFormat, Format, SNIFF_BYTES } from './sniff.js';
import { VhdDiskType, vhdDiskType } from './vhd-footer.js';

/** Reads up to `length` bytes at `offset` of the staged image (short only at its end). */
export type ReadAt = (offset: number, length: number) => Promise<Buffer>;

/** qcow2 header v3, incompatible feature bit 2: the guest data lives in an external file. */
const QCOW2_INCOMPAT_DATA_FILE = 4n;


/** VDI 1.1 header `image type` (at 0x4c): 1 normal (dynamic), 2 fixed, 3 undo, 4 differencing. */
const VdiImageType = { Normal: 1, Fixed: 2, Undo: 3, Diff: 4 } as const;
const VDI_TYPE = 0x4c;
/** uuidLinkage: the parent image's UUID, set on child images only. */
const VDI_UUID_LINK = 0x1a8;

/** QED header feature bit 0: the image has a backing file. */
const QED_F_BACKING_FILE = 1n;

/**
 * qemu's vmdk driver reads the parent fields of a sparse VMDK from the 20 sectors at byte 512,
 * whatever the header's descriptor offset says; qemu reads at most 1 MiB of a descriptor.
 */
const VMDK_PARENT_DESC_OFFSET = 512;
const VMDK_PARENT_DESC_SIZE = 20 * 512;
const VMDK_MAX_DESC = 1 << 20;

const backing = (message: string): FerryError => new FerryError(ErrorCode.BackingFile, message);
const invalid = (message: string): FerryError => new FerryError(ErrorCode.InvalidImage, message);

export function checkHeader(format: Format, head: Buffer): void {
  switch (format) {
    case Format.VmdkDescriptor:
      throw backing('the image is a VMDK descriptor: its extents are other files; upload a monolithic VMDK instead');
    case Format.Qcow2:
      return checkQcow2(head);
    case Format.Qcow:
      return checkQcowBacking(head, 'qcow');
    case Format.Qed:
      return checkQed(head);
    case Format.Vhd:
      return checkVhdFooter(head);
    case Format.Vdi:
      return checkVdi(head);
    case Format.Vmdk:
      return checkVmdkHeader(head);
    default:
      return;
  }
}

/** qcow (v1) and qcow2 keep backing_file_offset (u64) at 8 and backing_file_size (u32) at 16. */
function checkQcowBacking(head: Buffer, name: string): void {
  if (head.length < 20) throw invalid(`${name} header is truncated`);
  if (head.readBigUInt64BE(8) !== 0n || head.readUInt32BE(16) !== 0) {
    throw backing(`the ${name} image has a backing file; only self-contained images are imported`);
  }
}

function checkQcow2(head: Buffer): void {
  if (head.length < 72) throw invalid('qcow2 header is truncated');
  checkQcowBacking(head, 'qcow2');
  if (head.readUInt32BE(4) >= 3) {
    if (head.length < 80) throw invalid('qcow2 v3 header is truncated');
    if ((head.readBigUInt64BE(72) & QCOW2_INCOMPAT_DATA_FILE) !== 0n) {
      throw backing('the qcow2 image keeps its data in an external data file');
    }
  }
}

/** QED (little endian): features u64 at 16, backing_filename_offset u32 at 56, size u32 at 60. */
function checkQed(head: Buffer): void {
  if (head.length < 64) throw invalid('QED header is truncated');
  if ((head.readBigUInt64LE(16) & QED_F_BACKING_FILE) !== 0n || head.readUInt32LE(56) !== 0 || head.readUInt32LE(60) !== 0) {
    throw backing('the QED image has a backing file; only self-contained images are imported');
  }
}

/**
 * A VHD footer (512 bytes, big endian): a differencing disk is refused, an unknown disk type is
 * invalid. A dynamic or differencing VHD starts with a copy of its footer, which qemu reads first
 * and which is the head here; a fixed VHD has its footer only at the end (qemu then takes any
 * type as fixed), so a check of the end footer can use this too.
 */
export function checkVhdFooter(head: Buffer): void {
  if (head.length < 64) throw invalid('VHD footer is truncated');
  const type = vhdDiskType(head);
  if (type === VhdDiskType.Differencing) {
    throw backing("the VHD is a differencing disk: its parent's data is not in this file");
  }
  if (type !== VhdDiskType.Dynamic && type !== VhdDiskType.Fixed) throw invalid(`the VHD footer has an unknown disk type ${type}`);
}

function checkVdi(head: Buffer): void {
  if (head.length < VDI_UUID_LINK + 16) throw invalid('VDI header is truncated');
  const type = head.readUInt32LE(VDI_TYPE);
  if (type === VdiImageType.Diff || type === VdiImageType.Undo) {
    throw backing(`the VDI is a ${type === VdiImageType.Diff ? 'differencing' : 'undo'} image: its parent's data is not in this file`);
  }
  if (type !== VdiImageType.Normal && type !== VdiImageType.Fixed) throw invalid(`the VDI header has an unknown image type ${type}`);
  if (!head.subarray(VDI_UUID_LINK, VDI_UUID_LINK + 16).equals(Buffer.alloc(16))) {
    throw backing('the VDI names a parent image (uuidLinkage is set)');
  }
}

/**
 * VMDK sparse header (little endian): capacity u64 at 12, descriptorOffset u64 at 28 (sectors).
 * A capacity of 0 makes qemu open the embedded descriptor as if it were a descriptor file, with
 * its extents: files of any name, local paths included.
 */
function checkVmdkHeader(head: Buffer): void {
  if (head.length < 44) throw invalid('VMDK header is truncated');
  if (head.readBigUInt64LE(12) === 0n) {
    if (head.readBigUInt64LE(28) !== 0n) throw backing('the VMDK has no capacity of its own: its embedded descriptor names the extent files');
    throw invalid('the VMDK reports a capacity of 0');
  }
}

/**
 * The checks on the staged image, through `read`: the head again (a server can answer nbdkit's
 * ranged reads with other bytes than the stream it sent first), then what lies beyond it.
 */
export async function checkLayout(format: Format, read: ReadAt): Promise<void> {
  const head = await read(0, SNIFF_BYTES);
  const now = detectFormat(head);
  if (now !== format) throw invalid(`the image read as ${format} from its stream but as ${now} in place`);
  checkHeader(format, head);
  if (format === Format.Vmdk) return checkVmdkDescriptors(read);
  if (format === Format.Vhdx) return checkVhdxMetadata(read);
}

async function checkVmdkDescriptors(read: ReadAt): Promise<void> {
  const header = await read(0, 44);
  if (header.length < 44) throw invalid('VMDK header is truncated');
  checkVmdkHeader(header);
  // What qemu reads the parent from ...
  checkVmdkParent(descriptorText(await read(VMDK_PARENT_DESC_OFFSET, VMDK_PARENT_DESC_SIZE)));
  // ... and the descriptor the header points at (the same place, for every image qemu-img writes).
  const offset = header.readBigUInt64LE(28) * 512n;
  const size = header.readBigUInt64LE(36) * 512n;
  if (offset === 0n || size === 0n) return;
  if (offset > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid('the VMDK descriptor offset is out of range');
  const text = descriptorText(await read(Number(offset), Number(size < BigInt(VMDK_MAX_DESC) ? size : BigInt(VMDK_MAX_DESC))));
  checkVmdkParent(text);
  checkVmdkExtents(text);
}

/** A descriptor is text up to its first NUL, as qemu reads it. */
function descriptorText(bytes: Buffer): string {
  const end = bytes.indexOf(0);
  return bytes.subarray(0, end === -1 ? bytes.length : end).toString('latin1');
}

/**
 * Pure: refuses a VMDK descriptor that names a parent. Matched as qemu's vmdk driver matches them
 * (strstr anywhere in the text, not per line): "parentFileNameHint" makes it the backing file, and
 * "parentCID" is read as hex after its "=" (ffffffff: no parent). qemu reads the first parentCID;
 * here every one must say ffffffff, and a comment mentioning the hint is refused too: stricter
 * than qemu, never looser.
 */
export function checkVmdkParent(text: string): void {
  if (text.includes('parentFileNameHint')) throw backing('the VMDK names a parent disk (parentFileNameHint)');
  for (let at = text.indexOf('parentCID'); at !== -1; at = text.indexOf('parentCID', at + 1)) {
    const value = /^\s*=\s*"?\s*([^\s"]*)/.exec(text.slice(at + 'parentCID'.length, at + 64))?.[1] ?? '';
    if (value.toLowerCase() !== 'ffffffff') {
      throw backing(`the VMDK is a child disk (parentCID=${value.slice(0, 16)}): its parent's data is not in this file`);
    }
  }
}

/**
 * Pure: an embedded descriptor describes the file it is in, so it has exactly one SPARSE extent
 * (whose name is the file's original one and cannot be compared with anything here); more extents,
 * or FLAT/VMFS/… ones, are other files.
 */
export function checkVmdkExtents(text: string): void {
  const extents = [...text.matchAll(/^\s*(?:RW|RDONLY|NOACCESS)\s+\d+\s+(\S+)/gm)].map((m) => m[1] ?? '');
  if (extents.length > 1) throw backing(`the VMDK descriptor names ${extents.length} extents; only one, in the file itself, is imported`);
  const type = extents[0];
  if (type !== undefined && type.toUpperCase() !== 'SPARSE') throw backing(`the VMDK descriptor names a ${type.slice(0, 16)} extent: another file`);
}

/** A GUID as VHDX stores it: the first three fields little endian. */
function guid(text: string): Buffer {
  const hex = Buffer.from(text.replace(/-/g, ''), 'hex');
  return Buffer.concat([hex.subarray(0, 4).reverse(), hex.subarray(4, 6).reverse(), hex.subarray(6, 8).reverse(), hex.subarray(8)]);
}

const VHDX_REGION_TABLE = 192 * 1024;
const VHDX_TABLE_BYTES = 64 * 1024;
const VHDX_METADATA_REGION = guid('8b7ca206-4790-4b9a-b8fe-575f050f886e');
const VHDX_FILE_PARAMETERS = guid('caa16737-fa36-4d43-b3b6-33f0aa44e76b');
const VHDX_PARENT_LOCATOR = guid('a8d35f2d-b30b-454d-abf7-d3d84834ab0c');
/** File parameters flags (u32 at +4): bit 1 HasParent. */
const VHDX_HAS_PARENT = 2;

/**
 * The region table at 192 KiB (the one qemu reads) → the metadata region → its table: a Parent
 * Locator item, or HasParent in the file parameters, marks a differencing VHDX. qemu 7.2 refuses
 * to open those itself (EINVAL/ENOTSUP), so this gives the right code rather than closing a hole.
 */
async function checkVhdxMetadata(read: ReadAt): Promise<void> {
  const regions = await read(VHDX_REGION_TABLE, VHDX_TABLE_BYTES);
  if (regions.length < 16 || regions.toString('latin1', 0, 4) !== 'regi') throw invalid('the VHDX region table is missing');
  const regionCount = regions.readUInt32LE(8);
  let metadata: { offset: number; length: number } | undefined;
  for (let i = 0; i < regionCount; i += 1) {
    const at = 16 + 32 * i;
    if (at + 32 > regions.length) throw invalid('the VHDX region table is truncated');
    if (regions.subarray(at, at + 16).equals(VHDX_METADATA_REGION)) {
      metadata = { offset: safeNumber(regions.readBigUInt64LE(at + 16)), length: regions.readUInt32LE(at + 24) };
    }
  }
  if (metadata === undefined) throw invalid('the VHDX has no metadata region');
  const table = await read(metadata.offset, Math.min(VHDX_TABLE_BYTES, metadata.length));
  if (table.length < 32 || table.toString('latin1', 0, 8) !== 'metadata') throw invalid('the VHDX metadata table is missing');
  const itemCount = table.readUInt16LE(10);
  for (let i = 0; i < itemCount; i += 1) {
    const at = 32 + 32 * i;
    if (at + 32 > table.length) throw invalid('the VHDX metadata table is truncated');
    const id = table.subarray(at, at + 16);
    if (id.equals(VHDX_PARENT_LOCATOR)) throw backing('the VHDX is a differencing disk (it has a parent locator)');
    if (id.equals(VHDX_FILE_PARAMETERS)) {
      const params = await read(metadata.offset + table.readUInt32LE(at + 16), 8);
      if (params.length < 8) throw invalid('the VHDX file parameters are truncated');
      if ((params.readUInt32LE(4) & VHDX_HAS_PARENT) !== 0) throw backing('the VHDX is a differencing disk (HasParent is set)');
    }
  }
}

function safeNumber(value: bigint): number {
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw invalid('a VHDX offset is out of range');
  return Number(value);
}
