/** disk.img sizing (KubeVirt's reserve and toleration), format sniffing, reachability for QEMU's user. */

import { describe, expect, test } from '@jest/globals';
import { ErrorCode } from '../../src/errors.js';
import { DISK_IMAGE_RESERVE_BYTES, firstUntraversable, planDiskImage, sniffDiskFormat } from '../../launcher/volumes.js';
import { codeOf } from './helpers.js';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const R = DISK_IMAGE_RESERVE_BYTES;

describe('planDiskImage', () => {
  test('creates the requested size when it fits beside the reserve', () => {
    expect(planDiskImage({ requested: 10 * GiB, available: 20 * GiB })).toEqual({ action: 'create', size: 10 * GiB });
  });

  test('a volume exactly the requested size is tolerated: the image gives up the reserve', () => {
    expect(planDiskImage({ requested: 10 * GiB, available: 10 * GiB })).toEqual({
      action: 'create',
      size: 10 * GiB - R,
      tolerated: expect.stringContaining('10%'),
    });
  });

  test('up to 10% less space is tolerated; more is an error with code NO_SPACE', () => {
    const plan = planDiskImage({ requested: 10 * GiB, available: 9.2 * GiB });
    expect(plan.action).toBe('create');
    expect(plan.size).toBe(Math.floor((9.2 * GiB - R) / 512) * 512);
    expect(codeOf(() => planDiskImage({ requested: 10 * GiB, available: 8.9 * GiB }))).toBe(ErrorCode.NoSpace);
  });

  test('the toleration and reserve can be changed', () => {
    expect(codeOf(() => planDiskImage({ requested: 100 * MiB, available: 99 * MiB, tolerationPercent: 0 }))).toBe(ErrorCode.NoSpace);
    expect(planDiskImage({ requested: 100 * MiB, available: 100 * MiB, reserve: 0 })).toEqual({ action: 'create', size: 100 * MiB });
  });

  test('without a requested size a new image takes the free space minus the reserve, in whole sectors', () => {
    expect(planDiskImage({ available: 64 * MiB + 1000 })).toEqual({ action: 'create', size: Math.floor((64 * MiB + 1000 - R) / 512) * 512 });
  });

  test('an existing image is kept when no size is given or it is big enough', () => {
    const existing = { size: 32 * MiB, allocated: 10 * MiB, format: 'raw' as const };
    expect(planDiskImage({ available: GiB, existing })).toEqual({ action: 'keep', size: 32 * MiB });
    expect(planDiskImage({ requested: 16 * MiB, available: GiB, existing })).toEqual({ action: 'keep', size: 32 * MiB });
  });

  test('a smaller raw image is grown; its own allocated blocks count as available', () => {
    const existing = { size: 32 * MiB, allocated: 30 * MiB, format: 'raw' as const };
    expect(planDiskImage({ requested: 64 * MiB, available: 40 * MiB, existing })).toEqual({ action: 'grow', size: 64 * MiB });
  });

  test('qcow2 images and read-only volumes are never resized', () => {
    expect(planDiskImage({ requested: GiB, available: 10 * GiB, existing: { size: MiB, allocated: MiB, format: 'qcow2' } })).toEqual({ action: 'keep', size: MiB });
    expect(planDiskImage({ requested: GiB, available: 10 * GiB, existing: { size: MiB, allocated: MiB, format: 'raw' }, readOnly: true })).toEqual({ action: 'keep', size: MiB });
    expect(codeOf(() => planDiskImage({ requested: GiB, available: 10 * GiB, readOnly: true }))).toBe(ErrorCode.InvalidSpec);
  });

  test('no space at all is an error', () => {
    expect(codeOf(() => planDiskImage({ available: R }))).toBe(ErrorCode.NoSpace);
  });
});

function qcow2Header(version: number, backingOffset: bigint, incompatible: bigint): Buffer {
  const h = Buffer.alloc(104);
  Buffer.from([0x51, 0x46, 0x49, 0xfb]).copy(h, 0);
  h.writeUInt32BE(version, 4);
  h.writeBigUInt64BE(backingOffset, 8);
  h.writeBigUInt64BE(incompatible, 72);
  return h;
}

describe('sniffDiskFormat', () => {
  test.each([
    ['zeros', Buffer.alloc(512), 'raw', false],
    ['an MBR', Buffer.concat([Buffer.alloc(510), Buffer.from([0x55, 0xaa])]), 'raw', false],
    ['a short file', Buffer.from('QF'), 'raw', false],
    ['qcow2 v3', qcow2Header(3, 0n, 0n), 'qcow2', false],
    ['qcow2 v2', qcow2Header(2, 0n, 4n), 'qcow2', false],
    ['qcow2 with a backing file', qcow2Header(3, 0x200n, 0n), 'qcow2', true],
    ['qcow2 with an external data file', qcow2Header(3, 0n, 4n), 'qcow2', true],
  ])('%s', (_name, header, format, refers) => {
    expect(sniffDiskFormat(header)).toEqual({ format, refersToOtherFiles: refers });
  });
});

describe('firstUntraversable', () => {
  const qemu = { uid: 999, gid: 995 };
  const dir = (path: string, mode: number, uid = 0, gid = 0) => ({ path, mode: 0o40000 | mode, uid, gid });

  test('world-traversable directories are fine', () => {
    expect(firstUntraversable([dir('/', 0o755), dir('/tmp', 0o1777), dir('/tmp/x', 0o711)], qemu)).toBeUndefined();
  });

  test('a 0700 directory of another user is reported, the first one from the root', () => {
    expect(firstUntraversable([dir('/', 0o755), dir('/root', 0o700), dir('/root/x', 0o700)], qemu)?.path).toBe('/root');
  });

  test('owner and group bits apply to the owner and group', () => {
    expect(firstUntraversable([dir('/d', 0o700, 999)], qemu)).toBeUndefined();
    expect(firstUntraversable([dir('/d', 0o750, 0, 995)], qemu)).toBeUndefined();
    expect(firstUntraversable([dir('/d', 0o607, 999)], qemu)?.path).toBe('/d');
  });
});
