/**
 * Output bounded by the target on every path: a decompression bomb, an image whose header says it
 * cannot fit, a scratch copy that grows past what the disk needs. Real decoders and qemu-img,
 * images served over loopback HTTP, sizes watched on disk while the import runs.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { appendFileSync, closeSync, existsSync, openSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { compress, convertImage, MiB, removeDir, sh, tempDir } from '../helpers/fixtures.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { runEngine, spec } from '../helpers/engine.js';

let dir: string;
let server: TestServer;
const f = (name: string): string => join(dir, name);
const HUGE = 2 ** 54; // 16 PiB: valid for qcow2 with 2 MiB clusters, past Number.MAX_SAFE_INTEGER

beforeAll(async () => {
  dir = tempDir('ferry-bounds-');
  // The bomb: 256 MiB of a repeated random 4 KiB block (not zeros, so a file written from it
  // really grows), a few dozen KiB compressed.
  const block = randomBytes(4096);
  const MiBOfBlock = Buffer.concat(Array.from({ length: 256 }, () => block));
  const fd = openSync(f('bomb'), 'w');
  for (let i = 0; i < 256; i += 1) writeSync(fd, MiBOfBlock);
  closeSync(fd);
  writeFileSync(f('bomb.xz'), sh('xz', ['-1', '-T1', '-c', f('bomb')]));
  compress('zstd', f('bomb'), f('bomb.zst'));
  rmSync(f('bomb'));

  // 24 MiB of random data as qcow2, gzip-compressed: staged in scratch before conversion.
  writeFileSync(f('big.raw'), randomBytes(24 * MiB));
  convertImage(f('big.raw'), 'qcow2', f('big.qcow2'));
  compress('gzip', f('big.qcow2'), f('big.qcow2.gz'));

  // A 1 MiB qcow2 with 40 MiB of trailing zeros: the header is honest, the file is not.
  writeFileSync(f('small.raw'), randomBytes(MiB));
  convertImage(f('small.raw'), 'qcow2', f('padded.qcow2'));
  appendFileSync(f('padded.qcow2'), Buffer.alloc(40 * MiB));
  compress('gzip', f('padded.qcow2'), f('padded.qcow2.gz'));

  sh('qemu-img', ['create', '-q', '-f', 'qcow2', '-o', 'cluster_size=2M', f('huge.qcow2'), String(HUGE)]);
  compress('gzip', f('huge.qcow2'), f('huge.qcow2.gz'));

  // Exactly 16 MiB of data: fits a 16 MiB target to the byte.
  writeFileSync(f('exact.raw'), randomBytes(16 * MiB));
  compress('zstd', f('exact.raw'), f('exact.raw.zst'));
  compress('xz', f('exact.raw'), f('exact.raw.xz'));

  server = await startServer();
  for (const name of ['exact.raw.zst', 'exact.raw.xz', 'bomb.xz', 'bomb.zst', 'big.qcow2.gz', 'padded.qcow2.gz', 'huge.qcow2', 'huge.qcow2.gz']) server.route(`/${name}`, { file: f(name) });
});

afterAll(async () => {
  await server?.close();
  removeDir(dir);
});

/** The largest value `measure` took while the import ran, polled every couple of milliseconds. */
function watch(measure: () => number): () => number {
  let max = 0;
  const sample = (): void => {
    try {
      max = Math.max(max, measure());
    } catch {
      // not there (yet, or any more)
    }
  };
  const timer = setInterval(sample, 2);
  return () => {
    clearInterval(timer);
    sample();
    return max;
  };
}

const fileSize = (path: string) => (): number => statSync(path).size;
const dirBytes = (path: string) => (): number => readdirSync(path).reduce((sum, name) => sum + statSync(join(path, name)).size, 0);

describe('decoder into the target (zstd, xz)', () => {
  test.each(['bomb.xz', 'bomb.zst'])('%s, 256 MiB decoded into a 16 MiB target: TARGET_TOO_SMALL, the file never larger than the target', async (name) => {
    const out = f(`out-${name}.img`);
    const stop = watch(fileSize(`${out}.ferry-partial`));
    const { error } = await runEngine(spec({ endpoint: `${server.url}/${name}`, target: { kind: 'file', path: out }, capacity: 16 * MiB }));
    const largest = stop();
    expect(error?.code).toBe('TARGET_TOO_SMALL');
    // The decoder may write a fixed VHD's 512-byte footer past the disk; nothing more.
    expect(largest).toBeLessThanOrEqual(16 * MiB + 512);
    expect(existsSync(out)).toBe(false);
    expect(existsSync(`${out}.ferry-partial`)).toBe(false);
  });

  test.each(['exact.raw.zst', 'exact.raw.xz'])('%s, exactly the target size: imported by the decoder, the bound does not get in the way', async (name) => {
    const out = f(`out-${name}.img`);
    const { result, error } = await runEngine(spec({ endpoint: `${server.url}/${name}`, target: { kind: 'file', path: out }, capacity: 16 * MiB }));
    expect(error).toBeUndefined();
    expect(result?.via).toBe('decoder');
    expect(readFileSync(out).equals(readFileSync(f('exact.raw')))).toBe(true);
  });
});

describe('scratch staging', () => {
  test('a compressed qcow2 whose header is larger than the target fails before anything is written to scratch', async () => {
    const scratch = f('scratch-big');
    const stop = watch(dirBytes(scratch));
    const { error } = await runEngine(spec({ endpoint: `${server.url}/big.qcow2.gz`, target: { kind: 'file', path: f('out-big.img') }, capacity: 16 * MiB, scratchDir: scratch }));
    const largest = stop();
    expect(error?.code).toBe('TARGET_TOO_SMALL');
    expect(error?.details).toMatchObject({ virtualSize: 24 * MiB, usable: 16 * MiB });
    expect(largest).toBeLessThan(MiB);
    expect(existsSync(f('out-big.img.ferry-partial'))).toBe(false);
  });

  test('a scratch copy stops at what the disk can need: an honest 1 MiB header on a 41 MiB file', async () => {
    const scratch = f('scratch-padded');
    const stop = watch(dirBytes(scratch));
    const { error } = await runEngine(spec({ endpoint: `${server.url}/padded.qcow2.gz`, target: { kind: 'file', path: f('out-padded.img') }, capacity: 64 * MiB, scratchDir: scratch }));
    const largest = stop();
    expect(error?.code).toBe('TARGET_TOO_SMALL');
    // scratchBound(1 MiB): the disk plus 16 MiB of metadata allowance.
    expect(largest).toBeLessThanOrEqual(17 * MiB);
    expect(readdirSync(scratch)).toEqual([]);
  });
});

describe('a valid qcow2 of 16 PiB into a 1 GiB target', () => {
  test.each<[string, () => { endpoint: string; source?: 'file' | 'http' }]>([
    ['over http, read in place through nbdkit', () => ({ endpoint: `${server.url}/huge.qcow2` })],
    ['as a local file, in place', () => ({ endpoint: f('huge.qcow2'), source: 'file' })],
    ['gzip-compressed, staged in scratch', () => ({ endpoint: `${server.url}/huge.qcow2.gz` })],
  ])('%s: TARGET_TOO_SMALL with its size, not INVALID_IMAGE', async (name, where) => {
    const scratch = f(`scratch-huge-${name.length}`);
    const stop = watch(dirBytes(scratch));
    const { error } = await runEngine(spec({ ...where(), target: { kind: 'file', path: f('out-huge.img') }, capacity: 1024 * MiB, scratchDir: scratch }));
    expect(stop()).toBe(0);
    expect(error?.code).toBe('TARGET_TOO_SMALL');
    expect(error?.details).toMatchObject({ virtualSize: String(HUGE), usable: 1024 * MiB });
  });
});
