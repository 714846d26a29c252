/**
 * The memory limit as the kernel's cgroup files give it to a real process placed in a real cgroup
 * (made here, as root), and `ferry import` sizing the flushes that only bound memory by it (a
 * scratch copy, curl's target stream): a quarter of the limit inside one, none outside (bench/README.md, "Seventh pass").
 */

import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cgroupMemoryLimit } from '../../src/io/memory-limit.js';
import { memorySyncEveryBytesFor } from '../../importer/engine/tuning.js';
import { makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { FERRY_BIN, REPO_ROOT } from '../helpers/ferry-process.js';

const V2 = existsSync('/sys/fs/cgroup/cgroup.controllers');
const MOUNT = V2 ? '/sys/fs/cgroup' : '/sys/fs/cgroup/memory';
const LIMIT_FILE = V2 ? 'memory.max' : 'memory.limit_in_bytes';
const made: string[] = [];
let dir: string;

beforeAll(() => {
  dir = tempDir();
});

afterAll(async () => {
  // Deepest first; a cgroup whose last process just exited can be busy for a moment.
  for (const cgroup of made.reverse()) {
    for (let i = 0; i < 50 && existsSync(cgroup); i += 1) {
      try {
        rmdirSync(cgroup);
      } catch {
        await new Promise((r) => setTimeout(r, 20));
      }
    }
  }
  removeDir(dir);
});

function cgroup(parent: string, limit: number): string {
  const path = join(parent, `ferry-test-${process.pid}-${made.length}`);
  mkdirSync(path);
  made.push(path);
  writeFileSync(join(path, LIMIT_FILE), String(limit));
  return path;
}

/** Runs node with `args` inside `group` (the shell moves itself in, then becomes node). */
function nodeIn(group: string | undefined, args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const script = group === undefined ? 'exec "$@"' : 'echo $$ > "$GROUP/cgroup.procs" && exec "$@"';
  const child = spawn('sh', ['-c', script, 'sh', process.execPath, ...args], { env: { PATH: process.env.PATH, HOME: process.env.HOME, GROUP: group ?? '' }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  return new Promise((resolve) => {
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const limitIn = async (group: string | undefined): Promise<number | null> => {
  const module = join(REPO_ROOT, 'dist', 'src', 'io', 'memory-limit.js');
  const r = await nodeIn(group, ['--input-type=module', '-e', `const m = await import(${JSON.stringify(module)}); console.log(JSON.stringify(m.cgroupMemoryLimit() ?? null));`]);
  expect(r.stderr).toBe('');
  return JSON.parse(r.stdout) as number | null;
};

// What this test process itself runs under (CI may run in a cgroup with a limit of its own).
const outer = cgroupMemoryLimit();
const under = (limit: number): number => Math.min(limit, outer ?? Infinity);

test('a process in a cgroup with a limit reads that limit', async () => {
  const group = cgroup(MOUNT, 300 * MiB);
  expect(await limitIn(group)).toBe(under(300 * MiB));
  expect(await limitIn(undefined)).toBe(outer ?? null);
});

test('a parent cgroup\'s lower limit is the one that holds', async () => {
  const parent = cgroup(MOUNT, 200 * MiB);
  if (V2) writeFileSync(join(parent, 'cgroup.subtree_control'), '+memory');
  const child = cgroup(parent, 1024 * MiB);
  expect(await limitIn(child)).toBe(under(200 * MiB));
});

test('ferry import flushes for memory every quarter of the limit inside a cgroup, and never outside one', async () => {
  const image = join(dir, 'disk.raw');
  makeRawDisk(image, 4 * MiB);
  const group = cgroup(MOUNT, 256 * MiB);
  const flushes = async (inside: string | undefined, out: string): Promise<unknown> => {
    const r = await nodeIn(inside, [FERRY_BIN, 'import', '--quiet', '--log-level', 'info', '--url', image, '--dest', join(dir, out)]);
    expect(r.code).toBe(0);
    const routed = r.stderr.split('\n').filter((l) => l.includes('"route chosen"')).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(routed).toHaveLength(1);
    return routed[0]?.memorySyncEveryBytes;
  };
  expect(await flushes(group, 'inside.img')).toBe(memorySyncEveryBytesFor(under(256 * MiB)));
  expect(await flushes(undefined, 'outside.img')).toBe(memorySyncEveryBytesFor(outer));
});
