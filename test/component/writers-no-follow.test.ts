/**
 * The writers the routes use besides the streamed one (the zstd/xz decoder writing the target, the
 * ranged download, the fixed-VHD footer cut) never write through a link planted at the name they
 * create: a sentinel file behind the link keeps its bytes, and the write fails instead.
 */
import { afterAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeToFile } from '../../importer/decode-to-file.js';
import { fetchParallelToFile } from '../../importer/parallel-fetch.js';
import { Format } from '../../importer/sniff.js';
import { removeDir, tempDir } from '../helpers/fixtures.js';

const dir = tempDir('ferry-nofollow-');
afterAll(() => removeDir(dir));
const f = (name: string): string => join(dir, name);
const SENTINEL = Buffer.from('the file a planted link points at\n');

function plant(name: string): { path: string; sentinel: string } {
  const sentinel = f(`${name}.sentinel`);
  writeFileSync(sentinel, SENTINEL);
  const path = f(`${name}.ferry-partial`);
  symlinkSync(sentinel, path);
  return { path, sentinel };
}

async function* once(data: Buffer): AsyncIterable<Buffer> {
  yield data;
}

describe('no writer follows a link planted at its name', () => {
  test('the zstd decoder writing the target', async () => {
    const { path, sentinel } = plant('decoder');
    const compressed = execFileSync('zstd', ['-q', '-c'], { input: Buffer.alloc(1 << 20, 7) });
    await expect(decodeToFile(Format.Zstd, once(compressed), path)).rejects.toBeDefined();
    expect(readFileSync(sentinel)).toEqual(SENTINEL);
  });

  test('the ranged download into a file', async () => {
    const { path, sentinel } = plant('ranged');
    const data = Buffer.alloc(256 * 1024, 9);
    const openRange = async (start: number, end: number) => once(data.subarray(start, end + 1));
    await expect(
      fetchParallelToFile(path, true, undefined, { size: data.length, connections: 2, chunkBytes: 64 * 1024, openRange, attempts: 1, backoffMs: 1, sleep: async () => undefined }),
    ).rejects.toBeDefined();
    expect(readFileSync(sentinel)).toEqual(SENTINEL);
  });
});
