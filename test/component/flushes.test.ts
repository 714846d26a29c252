/**
 * What the writers leave dirty in the page cache, read from the kernel's own page flags
 * (test/helpers/dirty-pages.ts, root): a scratch copy outside a memory limit is never flushed, not
 * even at the end (it is deleted after the convert), and a set interval keeps what is dirty within
 * about two intervals. The last flush of a disk is `finishDisk`'s, tested with the targets.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fetchParallelToFile } from '../../importer/parallel-fetch.js';
import { writeRaw } from '../../importer/raw-writer.js';
import type { ByteStream } from '../../importer/streams.js';
import { dirtyPages } from '../helpers/dirty-pages.js';
import { MiB, removeDir, tempDir } from '../helpers/fixtures.js';

const SIZE = 8 * MiB;
const PAGES = SIZE / 4096;
let dir: string;
let data: Buffer;
const f = (n: string): string => join(dir, n);

beforeAll(() => {
  dir = tempDir();
  // Random: no zero block is left as a hole, every page is written.
  data = randomBytes(SIZE);
});

afterAll(() => removeDir(dir));

/** Bytes [start, end] of `data`, in 64 KiB pieces as a socket would hand them on. */
async function* range(start: number, end: number): ByteStream {
  for (let at = start; at <= end; at += 64 * 1024) yield data.subarray(at, Math.min(end + 1, at + 64 * 1024));
}

async function* whole(): ByteStream {
  yield* range(0, SIZE - 1);
}

const ranged = { size: SIZE, connections: 4, chunkBytes: 512 * 1024, openRange: async (s: number, e: number) => range(s, e), attempts: 1, backoffMs: 1, sleep: async () => undefined };

test('the measure sees a file just written as dirty (the control for the rows below)', () => {
  writeFileSync(f('control'), data);
  expect(dirtyPages(f('control'))).toBeGreaterThan(PAGES * 0.9);
});

describe('ranged connections into a file', () => {
  test('never flushed (0: a scratch copy outside a memory limit): every page is left to the kernel, no sync at the end', async () => {
    await fetchParallelToFile(f('ranged-never'), true, undefined, { ...ranged, syncEveryBytes: 0 });
    expect(dirtyPages(f('ranged-never'))).toBeGreaterThan(PAGES * 0.9);
  });

  test('flushed every MiB: while the last chunk is held back, what is dirty is within two intervals and the writes in flight, not all written so far', async () => {
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    let reached!: () => void;
    const allButLast = new Promise<void>((resolve) => (reached = resolve));
    const last = SIZE - 512 * 1024;
    const fetching = fetchParallelToFile(f('ranged-1m'), true, undefined, {
      ...ranged,
      syncEveryBytes: MiB,
      openRange: async (s: number, e: number) => {
        if (s === last) await held;
        return range(s, e);
      },
      onBytes: (total: number) => {
        if (total === last) reached();
      },
    });
    await allButLast;
    // 7.5 MiB written: 1920 pages dirty without flushes.
    const during = dirtyPages(f('ranged-1m'));
    release();
    await fetching;
    expect(during).toBeLessThanOrEqual((2 * MiB + 4 * 512 * 1024) / 4096);
    expect(dirtyPages(f('ranged-1m'))).toBeLessThanOrEqual((2 * MiB + 4 * 512 * 1024) / 4096);
  });
});

describe('the one stream into a file (writeRaw)', () => {
  test('never flushed: no sync at the end either', async () => {
    await writeRaw(whole(), { path: f('stream-never'), sparse: true, syncEveryBytes: 0 });
    expect(dirtyPages(f('stream-never'))).toBeGreaterThan(PAGES * 0.9);
  });
});
