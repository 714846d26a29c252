/** Every supported format and compression, served over real HTTP, through real qemu-img. */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { allocatedBytes, compress, convertImage, expectSameDisk, makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { runEngine, spec } from '../helpers/engine.js';

let dir: string;
let server: TestServer;
let raw: string;
const SIZE = 8 * MiB;

beforeAll(async () => {
  dir = tempDir();
  raw = join(dir, 'disk.raw');
  makeRawDisk(raw, SIZE);
  const f = (n: string): string => join(dir, n);
  convertImage(raw, 'qcow2', f('disk.qcow2'));
  convertImage(raw, 'vmdk', f('disk.vmdk'));
  convertImage(raw, 'vmdk', f('disk-stream.vmdk'), ['-o', 'subformat=streamOptimized']);
  convertImage(raw, 'vdi', f('disk.vdi'));
  convertImage(raw, 'vpc', f('disk.vhd'));
  convertImage(raw, 'vhdx', f('disk.vhdx'));
  compress('gzip', raw, f('disk.raw.gz'));
  compress('xz', raw, f('disk.raw.xz'));
  compress('zstd', raw, f('disk.raw.zst'));
  compress('bzip2', raw, f('disk.raw.bz2'));
  compress('gzip', f('disk.qcow2'), f('disk.qcow2.gz'));
  compress('xz', f('disk.qcow2'), f('disk.qcow2.xz'));
  compress('zstd', f('disk.qcow2'), f('disk.qcow2.zst'));
  compress('gzip', f('disk.raw.xz'), f('disk.raw.xz.gz'));
  server = await startServer();
  for (const name of ['disk.raw', 'disk.qcow2', 'disk.vmdk', 'disk-stream.vmdk', 'disk.vdi', 'disk.vhd', 'disk.vhdx', 'disk.raw.gz', 'disk.raw.xz', 'disk.raw.zst', 'disk.raw.bz2', 'disk.qcow2.gz', 'disk.qcow2.xz', 'disk.qcow2.zst', 'disk.raw.xz.gz']) {
    server.route(`/${name}`, { file: f(name) });
  }
});

const truncateTo = (path: string, size: number): void => truncateSync(path, size);
const sha256Of = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

afterAll(async () => {
  await server?.close();
  removeDir(dir);
});

describe('formats over http', () => {
  test.each([
    ['disk.raw', 'raw'],
    ['disk.raw.gz', 'raw+gzip'],
    ['disk.raw.xz', 'raw+xz'],
    ['disk.raw.zst', 'raw+zstd'],
    ['disk.raw.bz2', 'raw+bzip2'],
    ['disk.raw.xz.gz', 'raw+xz+gzip'],
    ['disk.qcow2', 'qcow2'],
    ['disk.qcow2.gz', 'qcow2+gzip'],
    ['disk.qcow2.xz', 'qcow2+xz'],
    ['disk.qcow2.zst', 'qcow2+zstd'],
    ['disk.vmdk', 'vmdk'],
    ['disk-stream.vmdk', 'vmdk'],
    ['disk.vdi', 'vdi'],
    ['disk.vhd', 'vhd'],
    ['disk.vhdx', 'vhdx'],
  ])('%s imports to the same raw disk (%s)', async (name, detected) => {
    const out = join(dir, `out-${name}.img`);
    const scratch = join(dir, `scratch-${name}`);
    const { result, error } = await runEngine(spec({ endpoint: `${server.url}/${name}`, target: { kind: 'file', path: out }, scratchDir: scratch }));
    expect(error).toBeUndefined();
    expect(result?.sourceFormat).toBe(detected);
    // VHD (vpc) rounds the virtual size up to its CHS geometry; the data must still match.
    expect(expectSameDisk(out, raw)).toBe(true);
    expect(existsSync(`${out}.ferry-partial`)).toBe(false);
  });

  test('raw streams sparsely: zero blocks stay holes', async () => {
    const out = join(dir, 'sparse.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/disk.raw.gz`, target: { kind: 'file', path: out } }));
    expect(error).toBeUndefined();
    expect(statSync(out).size).toBe(SIZE);
    // 2 MiB of data plus the marker block; the other ~6 MiB are holes.
    expect(allocatedBytes(out)).toBeLessThan(3 * MiB);
  });

  test('the disk grows to the usable capacity, minus filesystem overhead', async () => {
    const out = join(dir, 'grown.img');
    const capacity = 64 * MiB;
    const { result, error } = await runEngine(
      spec({ endpoint: `${server.url}/disk.qcow2`, target: { kind: 'file', path: out }, scratchDir: join(dir, 's'), capacity, filesystemOverhead: 0.06 }),
    );
    expect(error).toBeUndefined();
    const usable = Math.floor(Math.ceil(0.94 * capacity) / MiB) * MiB;
    expect(result?.diskSize).toBe(usable);
    expect(expectSameDisk(out, raw, usable)).toBe(true);
  });

  test('progress reaches 100 and never goes back', async () => {
    const out = join(dir, 'progress.img');
    const { snapshots, error } = await runEngine(spec({ endpoint: `${server.url}/disk.qcow2.gz`, target: { kind: 'file', path: out }, scratchDir: join(dir, 's2') }));
    expect(error).toBeUndefined();
    const percents = snapshots.map((s) => s.percent);
    expect(percents.at(-1)).toBe(100);
    for (let i = 1; i < percents.length; i += 1) expect(percents[i]).toBeGreaterThanOrEqual(percents[i - 1] ?? 0);
    expect(new Set(snapshots.map((s) => s.phase))).toEqual(new Set(['transfer', 'convert', 'resize', 'complete']));
  });

  test('a remote qcow2 with Range support is read in place through nbdkit: no scratch, written once', async () => {
    const out = join(dir, 'direct.img');
    const before = server.requests.length;
    const { result, error } = await runEngine(spec({ endpoint: `${server.url}/disk.qcow2`, target: { kind: 'file', path: out }, capacity: 16 * MiB }));
    expect(error).toBeUndefined();
    expect(result).toMatchObject({ scratchSpaceRequired: false, via: 'nbd', diskSize: 16 * MiB });
    expect(expectSameDisk(out, raw, 16 * MiB)).toBe(true);
    // qemu-img's reads arrive as ranged GETs from nbdkit.
    const ranged = server.requests.slice(before).filter((r) => r.path === '/disk.qcow2' && r.range !== undefined);
    expect(ranged.length).toBeGreaterThan(0);
  });

  describe('a big remote raw image is copied by qemu-img through nbdkit (threshold lowered to 1 MiB here)', () => {
    const NBD = { rawViaNbdMinBytes: MiB };
    const rangedGets = (before: number, path: string): number => server.requests.slice(before).filter((r) => r.path === path && r.range !== undefined).length;

    test('same bytes, zero blocks left as holes, grown to the usable size, read with ranged GETs', async () => {
      const out = join(dir, 'raw-nbd.img');
      const before = server.requests.length;
      const { result, error } = await runEngine(spec({ endpoint: `${server.url}/disk.raw`, target: { kind: 'file', path: out }, capacity: 16 * MiB }), NBD);
      expect(error).toBeUndefined();
      expect(result).toMatchObject({ scratchSpaceRequired: false, via: 'nbd', diskSize: 16 * MiB });
      expect(expectSameDisk(out, raw, 16 * MiB)).toBe(true);
      expect(allocatedBytes(out)).toBeLessThan(3 * MiB);
      expect(rangedGets(before, '/disk.raw')).toBeGreaterThan(0);
    });

    test('larger than the target: TARGET_TOO_SMALL, nothing written', async () => {
      const out = join(dir, 'raw-nbd-small.img');
      const { error } = await runEngine(spec({ endpoint: `${server.url}/disk.raw`, target: { kind: 'file', path: out }, capacity: 4 * MiB, filesystemOverhead: 0 }), NBD);
      expect(error?.code).toBe('TARGET_TOO_SMALL');
      expect(existsSync(out)).toBe(false);
    });

    test('a checksum to verify, or a size that is not whole sectors, keeps the streamed path', async () => {
      const odd = join(dir, 'odd.raw');
      makeRawDisk(odd, SIZE);
      truncateTo(odd, SIZE + 100);
      server.route('/odd.raw', { file: odd });
      const unaligned = await runEngine(spec({ endpoint: `${server.url}/odd.raw`, target: { kind: 'file', path: join(dir, 'odd.img') } }), NBD);
      expect(unaligned.error).toBeUndefined();
      expect(unaligned.result?.via).toBeUndefined();
      expect(statSync(join(dir, 'odd.img')).size).toBe(SIZE + 100);
      const sha = sha256Of(raw);
      const verified = await runEngine(spec({ endpoint: `${server.url}/disk.raw`, target: { kind: 'file', path: join(dir, 'sum.img') }, checksum: { algorithm: 'sha256', hex: sha } }), NBD);
      expect(verified.error).toBeUndefined();
      expect(verified.result?.via).toBeUndefined();
      expect(expectSameDisk(join(dir, 'sum.img'), raw, SIZE)).toBe(true);
    });
  });

  describe('a raw image in one zstd or xz layer is decoded by zstd/xz straight into the target file', () => {
    test.each([['disk.raw.zst'], ['disk.raw.xz']])('%s: same bytes, holes kept, via decoder', async (name) => {
      const out = join(dir, `${name}.decoded.img`);
      const { result, error } = await runEngine(spec({ endpoint: `${server.url}/${name}`, target: { kind: 'file', path: out } }));
      expect(error).toBeUndefined();
      expect(result?.via).toBe('decoder');
      expect(expectSameDisk(out, raw, SIZE)).toBe(true);
      expect(allocatedBytes(out)).toBeLessThan(3 * MiB);
    });

    test('larger than the target: TARGET_TOO_SMALL, no disk left', async () => {
      const out = join(dir, 'decoded-small.img');
      const { error } = await runEngine(spec({ endpoint: `${server.url}/disk.raw.zst`, target: { kind: 'file', path: out }, capacity: 4 * MiB, filesystemOverhead: 0 }));
      expect(error?.code).toBe('TARGET_TOO_SMALL');
      expect(existsSync(out)).toBe(false);
      expect(existsSync(`${out}.ferry-partial`)).toBe(false);
    });

    test('a checksum is still verified over the compressed bytes', async () => {
      const out = join(dir, 'decoded-sum.img');
      const good = await runEngine(spec({ endpoint: `${server.url}/disk.raw.zst`, target: { kind: 'file', path: out }, checksum: { algorithm: 'sha256', hex: sha256Of(join(dir, 'disk.raw.zst')) } }));
      expect(good.error).toBeUndefined();
      expect(good.result?.via).toBe('decoder');
      const bad = await runEngine(spec({ endpoint: `${server.url}/disk.raw.zst`, target: { kind: 'file', path: join(dir, 'decoded-bad.img') }, checksum: { algorithm: 'sha256', hex: '0'.repeat(64) } }));
      expect(bad.error?.code).toBe('CHECKSUM_MISMATCH');
      expect(existsSync(join(dir, 'decoded-bad.img'))).toBe(false);
    });

    test('truncated zstd data fails as an invalid image, no disk left', async () => {
      const whole = readFileSync(join(dir, 'disk.raw.zst'));
      const cut = join(dir, 'cut.raw.zst');
      writeFileSync(cut, whole.subarray(0, Math.floor(whole.length / 2)));
      server.route('/cut.raw.zst', { file: cut });
      const out = join(dir, 'decoded-cut.img');
      const { error } = await runEngine(spec({ endpoint: `${server.url}/cut.raw.zst`, target: { kind: 'file', path: out } }));
      expect(error?.code).toBe('INVALID_IMAGE');
      expect(existsSync(out)).toBe(false);
    });

    test('zstd around another compression layer keeps the streamed path (raw.gz.zst)', async () => {
      compress('zstd', join(dir, 'disk.raw.gz'), join(dir, 'disk.raw.gz.zst'));
      server.route('/disk.raw.gz.zst', { file: join(dir, 'disk.raw.gz.zst') });
      const out = join(dir, 'decoded-nested.img');
      const { result, error } = await runEngine(spec({ endpoint: `${server.url}/disk.raw.gz.zst`, target: { kind: 'file', path: out } }));
      expect(error).toBeUndefined();
      expect(result?.via).toBeUndefined();
      expect(result?.sourceFormat).toBe('raw+gzip+zstd');
      expect(expectSameDisk(out, raw, SIZE)).toBe(true);
    });
  });

  test('without Range support a non-raw image needs scratch; without scratch space it says so and writes nothing', async () => {
    server.route('/norange.qcow2', { file: join(dir, 'disk.qcow2'), ranges: false });
    const staged = await runEngine(spec({ endpoint: `${server.url}/norange.qcow2`, target: { kind: 'file', path: join(dir, 'staged.img') }, scratchDir: join(dir, 's3') }));
    expect(staged.result).toMatchObject({ scratchSpaceRequired: false, via: 'scratch' });
    expect(expectSameDisk(join(dir, 'staged.img'), raw, SIZE)).toBe(true);
    const out = join(dir, 'noscratch.img');
    const { result, error } = await runEngine(spec({ endpoint: `${server.url}/norange.qcow2`, target: { kind: 'file', path: out } }));
    expect(error).toBeUndefined();
    expect(result?.scratchSpaceRequired).toBe(true);
    expect(existsSync(out)).toBe(false);
  });

  test('a local qcow2 is converted in place, without a scratch copy', async () => {
    const out = join(dir, 'local.img');
    const { result, error } = await runEngine(spec({ source: 'file', endpoint: join(dir, 'disk.qcow2'), target: { kind: 'file', path: out } }));
    expect(error).toBeUndefined();
    expect(result?.scratchSpaceRequired).toBe(false);
    expect(expectSameDisk(out, raw, SIZE)).toBe(true);
  });

  test('blank creates an empty sparse disk of the usable size', async () => {
    const out = join(dir, 'blank.img');
    const { result, error } = await runEngine(spec({ source: 'blank', endpoint: '', target: { kind: 'file', path: out }, capacity: 32 * MiB }));
    expect(error).toBeUndefined();
    expect(result?.diskSize).toBe(32 * MiB);
    expect(statSync(out).size).toBe(32 * MiB);
    expect(allocatedBytes(out)).toBe(0);
  });

  test('preallocation allocates the whole disk and says so', async () => {
    const out = join(dir, 'prealloc.img');
    const { result, error } = await runEngine(spec({ endpoint: `${server.url}/disk.raw`, target: { kind: 'file', path: out }, capacity: 16 * MiB, preallocation: true }));
    expect(error).toBeUndefined();
    expect(result?.preallocationApplied).toBe(true);
    expect(allocatedBytes(out)).toBeGreaterThanOrEqual(16 * MiB);
    expect(expectSameDisk(out, raw, 16 * MiB)).toBe(true);
  });
});
