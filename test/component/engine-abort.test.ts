/**
 * Interruption: an abort mid-transfer stops the import's children (decoders, nbdkit, qemu-img) and
 * its HTTP requests, removes every file it made, and the engine rejects with INTERRUPTED. Children
 * are found by PID in /proc (this process's children), files by listing the directories used.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { compress, convertImage, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { runEngine, spec } from '../helpers/engine.js';

let dir: string;
let server: TestServer;
const f = (name: string): string => join(dir, name);
const SLOW = { chunk: 64 * 1024, delayMs: 10 } as const; // about 6 MB/s: a 16 MiB image takes seconds

beforeAll(async () => {
  dir = tempDir('ferry-abort-');
  writeFileSync(f('disk.raw'), randomBytes(16 * MiB));
  convertImage(f('disk.raw'), 'qcow2', f('disk.qcow2'));
  compress('zstd', f('disk.raw'), f('disk.raw.zst'));
  compress('bzip2', f('disk.raw'), f('disk.raw.bz2'));
  compress('gzip', f('disk.qcow2'), f('disk.qcow2.gz'));
  server = await startServer();
  for (const name of ['disk.raw', 'disk.qcow2', 'disk.raw.zst', 'disk.raw.bz2', 'disk.qcow2.gz']) server.route(`/slow/${name}`, { file: f(name), slow: SLOW });
});

afterAll(async () => {
  await server?.close();
  removeDir(dir);
});

/** This process's live children: PID → command line. */
function children(): Map<number, string> {
  const found = new Map<number, string>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8');
      const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(ppid) === process.pid && state !== 'Z') found.set(Number(name), readFileSync(`/proc/${name}/cmdline`, 'utf8').split('\0').join(' ').trim());
    } catch {
      // gone between the listing and the read
    }
  }
  return found;
}

const alive = (pid: number): boolean => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0] !== 'Z';
  } catch {
    return false;
  }
};

async function eventually(check: () => boolean, ms = 3000): Promise<boolean> {
  for (const until = Date.now() + ms; Date.now() < until; await new Promise((r) => setTimeout(r, 20))) if (check()) return true;
  return check();
}

const sentTo = (path: string): number => server.sent.get(path) ?? 0;

interface Case {
  readonly name: string;
  readonly file: string;
  /** Commands that must have run before the abort (substrings of their command lines). */
  readonly expect: readonly string[];
  readonly scratch?: boolean;
}

describe('abort mid-transfer', () => {
  test.each<Case>([
    { name: 'streamed raw', file: 'disk.raw', expect: [] },
    { name: 'streamed through a decompressor child (bzip2)', file: 'disk.raw.bz2', expect: ['bzip2'] },
    { name: 'decoder writing the target (zstd)', file: 'disk.raw.zst', expect: ['zstd -dc'] },
    { name: 'nbd: qemu-img converting through nbdkit', file: 'disk.qcow2', expect: ['nbdkit', 'qemu-img convert'] },
    { name: 'scratch staging of a compressed qcow2', file: 'disk.qcow2.gz', expect: [], scratch: true },
  ])('$name: INTERRUPTED, no child left, no file left, no more bytes requested', async ({ name, file, expect: commands, scratch }) => {
    const work = f(`run-${name.replace(/\W+/g, '-')}`);
    const outDir = join(work, 'target');
    const scratchDir = join(work, 'scratch');
    mkdirSync(outDir, { recursive: true });
    mkdirSync(scratchDir, { recursive: true });
    const path = `/slow/${file}`;
    const before = sentTo(path);
    const controller = new AbortController();
    const seen = new Map<number, string>();
    const poll = setInterval(() => {
      for (const [pid, cmd] of children()) seen.set(pid, cmd);
      const started = commands.every((c) => [...seen.values()].some((cmd) => cmd.includes(c)));
      const staged = !scratch || readdirSync(scratchDir).length > 0;
      // nbdkit reads ranges for qemu-img, so the count of bytes sent is not this path's alone there.
      if (started && staged && sentTo(path) - before > 2 * MiB) controller.abort();
    }, 10);
    const outcome = await runEngine(
      spec({ endpoint: `${server.url}${path}`, target: { kind: 'file', path: join(outDir, 'disk.img') }, ...(scratch ? { scratchDir } : {}) }),
      {},
      { signal: controller.signal },
    );
    clearInterval(poll);
    expect(controller.signal.aborted).toBe(true);
    expect(outcome.error?.code).toBe('INTERRUPTED');
    for (const c of commands) expect([...seen.values()].some((cmd) => cmd.includes(c))).toBe(true);

    // Every child the import started is gone (decoders, nbdkit, qemu-img, probes).
    expect(await eventually(() => [...seen.keys()].every((pid) => !alive(pid)))).toBe(true);
    // Every file it made is gone: the partial disk, the scratch copy, nbdkit's socket folder.
    expect(readdirSync(outDir)).toEqual([]);
    expect(readdirSync(scratchDir)).toEqual([]);
    for (const cmd of seen.values()) {
      const socket = /--unix (\S+)/.exec(cmd)?.[1];
      if (socket) expect(existsSync(dirname(socket))).toBe(false);
    }
    // The request is closed: the server stops sending.
    await new Promise((r) => setTimeout(r, 200));
    const stopped = sentTo(path);
    await new Promise((r) => setTimeout(r, 300));
    expect(sentTo(path)).toBe(stopped);
  });

  test('an abort before the start rejects at once and makes nothing', async () => {
    const controller = new AbortController();
    controller.abort();
    const outDir = f('before');
    const outcome = await runEngine(spec({ endpoint: `${server.url}/slow/disk.raw`, target: { kind: 'file', path: join(outDir, 'disk.img') } }), {}, { signal: controller.signal });
    expect(outcome.error?.code).toBe('INTERRUPTED');
    expect(existsSync(outDir)).toBe(false);
  });

  test('an abort during the backoff between attempts: INTERRUPTED, not the retried failure', async () => {
    server.route('/always-503', { status: 503 });
    const controller = new AbortController();
    const started = Date.now();
    setTimeout(() => controller.abort(), 300);
    const outcome = await runEngine(spec({ endpoint: `${server.url}/always-503`, target: { kind: 'file', path: f('backoff.img') } }), { attempts: 10, backoffMs: 60_000, maxBackoffMs: 60_000 }, { signal: controller.signal });
    expect(outcome.error?.code).toBe('INTERRUPTED');
    expect(Date.now() - started).toBeLessThan(5000);
  });
});
