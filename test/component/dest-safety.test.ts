/**
 * The files `ferry import` writes never reach through a planted link, and a special file given as
 * `--dest` is refused rather than replaced (#12). Runs the real CLI as root would; the sentinel
 * stands for a file the attacker wants overwritten (/etc/shadow, another user's disk).
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { existsSync, linkSync, lstatSync, mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { FerryError } from '../../src/errors.js';
import { writeRaw } from '../../importer/raw-writer.js';
import { compress, convertImage, expectSameDisk, makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { runFerry } from '../helpers/ferry-process.js';

let dir: string;
const f = (name: string): string => join(dir, name);
const SENTINEL_TEXT = 'SENTINEL: must never change\n';
const sentinel = (): string => f('outside/sentinel');

beforeAll(() => {
  dir = tempDir();
  mkdirSync(f('outside'));
  mkdirSync(f('out'));
  makeRawDisk(f('disk.raw'), 4 * MiB);
  compress('gzip', f('disk.raw'), f('disk.raw.gz'));
  compress('xz', f('disk.raw'), f('disk.raw.xz'));
  convertImage(f('disk.raw'), 'qcow2', f('disk.qcow2'));
});

afterAll(() => removeDir(dir));

/** The sentinel as a short, printable fact: its digest and size (a diff of a clobbered disk is unreadable). */
function sentinelNow(): string {
  const bytes = readFileSync(sentinel());
  return `${createHash('sha256').update(bytes).digest('hex').slice(0, 16)} (${bytes.length} bytes)`;
}
const SENTINEL_INTACT = `${createHash('sha256').update(SENTINEL_TEXT).digest('hex').slice(0, 16)} (${Buffer.byteLength(SENTINEL_TEXT)} bytes)`;

function resetSentinel(): void {
  writeFileSync(sentinel(), SENTINEL_TEXT);
}

function lastLine(text: string): string {
  return text.trim().split('\n').at(-1) ?? '';
}

function plant(kind: 'symlink' | 'hardlink', at: string): void {
  rmSync(at, { force: true });
  if (kind === 'symlink') symlinkSync(sentinel(), at);
  else linkSync(sentinel(), at);
}

describe('a planted link at <dest>.ferry-partial', () => {
  // Each source takes a different writer: the streamed raw writer (gzip), xz's own output file
  // (decoder), qemu-img convert (qcow2 read in place), the blank-disk creator.
  test.each([
    ['symlink', 'fails: gzip raw larger than --size', ['--url', 'disk.raw.gz', '--size', '1Mi'], 23],
    ['symlink', 'fails: xz raw larger than --size', ['--url', 'disk.raw.xz', '--size', '1Mi'], 23],
    ['symlink', 'succeeds: gzip raw', ['--url', 'disk.raw.gz'], 0],
    ['symlink', 'succeeds: xz raw', ['--url', 'disk.raw.xz'], 0],
    ['symlink', 'succeeds: qcow2', ['--url', 'disk.qcow2'], 0],
    ['symlink', 'succeeds: blank', ['--blank', '--size', '4Mi'], 0],
    ['hardlink', 'fails: gzip raw larger than --size', ['--url', 'disk.raw.gz', '--size', '1Mi'], 23],
    ['hardlink', 'succeeds: gzip raw', ['--url', 'disk.raw.gz'], 0],
    ['hardlink', 'succeeds: xz raw', ['--url', 'disk.raw.xz'], 0],
    ['hardlink', 'succeeds: qcow2', ['--url', 'disk.qcow2'], 0],
  ] as const)('%s, import %s: the link target is untouched', async (kind, _what, args, status) => {
    resetSentinel();
    const dest = f(`out/${kind}-${args.join('_').replace(/\W/g, '')}.img`);
    plant(kind, `${dest}.ferry-partial`);
    const argv = args.map((a) => (a.startsWith('disk.') ? f(a) : a));
    const r = await runFerry(['import', ...argv, '--dest', dest, '--quiet']);
    expect({ status: r.code, stderr: r.stderr }).toEqual({ status, stderr: expect.any(String) });
    expect(sentinelNow()).toBe(SENTINEL_INTACT);
    expect(existsSync(`${dest}.ferry-partial`)).toBe(false);
    if (status === 0) {
      expect(lstatSync(dest).isFile()).toBe(true);
      if (!(args as readonly string[]).includes('--blank')) expect(expectSameDisk(dest, f('disk.raw'), 4 * MiB)).toBe(true);
    }
  });
});

describe('the final name', () => {
  // rename(2) replaces a link at the final name with the new file; the link's target stays as it was.
  test.each(['symlink', 'hardlink'] as const)('a %s at --dest is replaced by the disk, its target untouched', async (kind) => {
    resetSentinel();
    const dest = f(`out/final-${kind}.img`);
    plant(kind, dest);
    const r = await runFerry(['import', '--url', f('disk.raw.gz'), '--dest', dest, '--quiet']);
    expect(r.code).toBe(0);
    expect(sentinelNow()).toBe(SENTINEL_INTACT);
    expect(lstatSync(dest).isSymbolicLink()).toBe(false);
    expect(expectSameDisk(dest, f('disk.raw'), 4 * MiB)).toBe(true);
  });
});

describe('scratch and partial files are created exclusively', () => {
  // Scratch names are random (tmpimage-<8 hex>), so a test cannot plant one where the engine will
  // write; the writer they go through refuses any existing name instead (O_CREAT|O_EXCL).
  test.each(['symlink', 'hardlink'] as const)('the raw writer refuses a planted %s and leaves its target alone', async (kind) => {
    resetSentinel();
    mkdirSync(f('scratch'), { recursive: true });
    const at = f(`scratch/tmpimage-${kind}`);
    plant(kind, at);
    const error = await writeRaw(Readable.from([Buffer.alloc(64 * 1024, 0x41)]), { path: at, sparse: true }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(FerryError);
    expect((error as FerryError).code).toBe('TARGET_ERROR');
    expect(sentinelNow()).toBe(SENTINEL_INTACT);
  });
});

describe('a special file as --dest is refused and left as it is', () => {
  let socketServer: Server | undefined;
  afterAll(async () => {
    await new Promise<void>((resolve) => (socketServer ? socketServer.close(() => resolve()) : resolve()));
  });

  const makers: Record<string, (path: string) => Promise<void>> = {
    fifo: async (path) => void execFileSync('mkfifo', [path]),
    // A private node with /dev/null's numbers: the test never goes near the real one.
    'character device': async (path) => void execFileSync('mknod', [path, 'c', '1', '3']),
    socket: async (path) => {
      socketServer = createServer();
      await new Promise<void>((resolve) => socketServer?.listen(path, resolve));
    },
    'symlink to a character device': async (path) => {
      execFileSync('mknod', [`${path}.node`, 'c', '1', '3']);
      symlinkSync(`${path}.node`, path);
    },
  };

  test.each(Object.keys(makers))('%s: INVALID_SPEC, exit 2, the node unchanged', async (kind) => {
    if (process.getuid?.() !== 0 && kind.includes('character')) {
      console.warn(`dest-safety: "${kind}" skipped: mknod needs root`);
      return;
    }
    const dest = f(`out/special-${kind.replace(/\W/g, '-')}`);
    await (makers[kind] as (p: string) => Promise<void>)(dest);
    const before = lstatSync(dest);
    const r = await runFerry(['import', '--url', f('disk.raw.gz'), '--dest', dest, '--quiet']);
    expect(r.code).toBe(2);
    expect(lastLine(r.stderr)).toMatch(/^error INVALID_SPEC: .*--dest/);
    const after = lstatSync(dest);
    expect({ mode: after.mode, rdev: after.rdev, ino: after.ino }).toEqual({ mode: before.mode, rdev: before.rdev, ino: before.ino });
    expect(existsSync(`${dest}.ferry-partial`)).toBe(false);
  });
});
