/**
 * `ferry import` stopped by SIGTERM or SIGINT (Ctrl-C) mid-transfer (#12): one
 * "error INTERRUPTED: ..." line, exit 33, and nothing of the import left behind — no
 * `<dest>.ferry-partial`, no child process, no nbd socket folder, no scratch file.
 *
 * The CLI's own part (the line, the status, removing the partial file) holds whatever the engine
 * does. Stopping children and removing the nbd folder and scratch files is the engine's answer to
 * `EngineDeps.signal`; the tests that need it are in the last describe block.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { convertImage, makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { FERRY_BIN } from '../helpers/ferry-process.js';

let dir: string;
let server: TestServer;
const f = (name: string): string => join(dir, name);

beforeAll(async () => {
  dir = tempDir();
  makeRawDisk(f('disk.raw'), 8 * MiB);
  convertImage(f('disk.raw'), 'qcow2', f('disk.qcow2'));
  server = await startServer();
  // Slow enough that no import can finish within the CLI's grace period after the signal: the raw
  // image (8 MiB) at about 640 KB/s, the qcow2 (about 2 MiB of data) at about 160 KB/s.
  server.route('/slow.raw', { file: f('disk.raw'), slow: { chunk: 32 * 1024, delayMs: 50 } });
  server.route('/slow.qcow2', { file: f('disk.qcow2'), slow: { chunk: 8 * 1024, delayMs: 50 } });
});

afterAll(async () => {
  await server?.close();
  removeDir(dir);
});

interface Cli {
  readonly pid: number;
  readonly tmp: string;
  readonly done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; at: number }>;
  kill(signal: NodeJS.Signals): void;
}

/** The real CLI with a private TMPDIR, so the nbd socket folder it makes can be looked for. */
function startCli(name: string, args: readonly string[]): Cli {
  const tmp = f(`${name}-tmp`);
  mkdirSync(tmp, { recursive: true });
  const child = spawn(process.execPath, [FERRY_BIN, 'import', ...args, '--quiet'], {
    env: { PATH: process.env.PATH, HOME: process.env.HOME, TMPDIR: tmp },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 45_000);
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string; at: number }>((resolve) => {
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stderr, at: Date.now() });
    });
  });
  return { pid: child.pid as number, tmp, done, kill: (signal) => child.kill(signal) };
}

interface Proc {
  readonly pid: number;
  readonly comm: string;
  readonly state: string;
}

function procStat(pid: number): Proc | undefined {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const close = text.lastIndexOf(')');
    const [state = '?'] = text.slice(close + 2).split(' ');
    return { pid, comm: text.slice(text.indexOf('(') + 1, close), state };
  } catch {
    return undefined;
  }
}

/** The processes whose parent is `pid`, from /proc. */
function childrenOf(pid: number): Proc[] {
  const out: Proc[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const text = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
      if (Number(fields[1]) === pid) out.push(procStat(Number(entry)) as Proc);
    } catch {
      // gone between readdir and read
    }
  }
  return out.filter(Boolean);
}

/** Still running: present in /proc and not a zombie waiting for a reaper that never comes. */
function alive(p: Proc): boolean {
  const now = procStat(p.pid);
  return now !== undefined && now.comm === p.comm && now.state !== 'Z';
}

async function until(what: string, ready: () => boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!ready()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

const nbdFolders = (tmp: string): string[] => readdirSync(tmp).filter((n) => n.startsWith('ferry-nbd-'));
const lastLine = (text: string): string => text.trim().split('\n').at(-1) ?? '';

describe('ferry import, interrupted (the CLI\'s part)', () => {
  test.each(['SIGTERM', 'SIGINT'] as const)('%s while streaming a raw image: error INTERRUPTED, exit 33, no partial file', async (signal) => {
    const dest = f(`raw-${signal}.img`);
    const cli = startCli(`raw-${signal}`, ['--url', `${server.url}/slow.raw`, '--dest', dest, '--connections', '1']);
    await until('the partial file', () => existsSync(`${dest}.ferry-partial`));
    cli.kill(signal);
    const r = await cli.done;
    expect({ code: r.code, signal: r.signal }).toEqual({ code: 33, signal: null });
    expect(lastLine(r.stderr)).toMatch(/^error INTERRUPTED: \S/);
    expect(existsSync(`${dest}.ferry-partial`)).toBe(false);
    expect(existsSync(dest)).toBe(false);
  });

  test('a second signal ends it at once, still with INTERRUPTED and no partial file', async () => {
    const dest = f('twice.img');
    const cli = startCli('twice', ['--url', `${server.url}/slow.raw`, '--dest', dest, '--connections', '1']);
    await until('the partial file', () => existsSync(`${dest}.ferry-partial`));
    cli.kill('SIGTERM');
    await new Promise((r) => setTimeout(r, 100));
    const second = Date.now();
    cli.kill('SIGINT');
    const r = await cli.done;
    expect(r.code).toBe(33);
    // Well inside the grace period the first signal would wait for the engine.
    expect(r.at - second).toBeLessThan(2000);
    expect(lastLine(r.stderr)).toMatch(/^error INTERRUPTED: \S/);
    expect(existsSync(`${dest}.ferry-partial`)).toBe(false);
  });
});

// The engine's half: children stopped and the files it made removed when EngineDeps.signal aborts
// (before the engine honoured it, nbdkit kept running and the scratch file stayed).
describe('ferry import, interrupted (the engine stops its children and removes its files)', () => {
  test.each(['SIGTERM', 'SIGINT'] as const)('%s while qemu-img reads a qcow2 in place through nbdkit: children stopped, nbd folder removed', async (signal) => {
    const dest = f(`nbd-${signal}.img`);
    const cli = startCli(`nbd-${signal}`, ['--url', `${server.url}/slow.qcow2`, '--dest', dest, '--connections', '1']);
    await until('nbdkit and qemu-img', () => {
      const names = childrenOf(cli.pid).map((p) => p.comm);
      return names.includes('nbdkit') && names.includes('qemu-img');
    });
    const children = childrenOf(cli.pid);
    expect(nbdFolders(cli.tmp)).toHaveLength(1);
    cli.kill(signal);
    const r = await cli.done;
    expect(r.code).toBe(33);
    expect(lastLine(r.stderr)).toMatch(/^error INTERRUPTED: \S/);
    expect(existsSync(`${dest}.ferry-partial`)).toBe(false);
    expect(children.filter(alive).map((p) => `${p.comm}[${p.pid}]`)).toEqual([]);
    expect(nbdFolders(cli.tmp)).toEqual([]);
  });

  test('SIGTERM while a qcow2 is staged in the scratch directory: the scratch file is removed', async () => {
    const dest = f('scratch.img');
    const scratch = f('scratch-dir');
    const cli = startCli('scratch', ['--url', `${server.url}/slow.qcow2`, '--dest', dest, '--via-scratch', '--scratch-dir', scratch, '--connections', '1']);
    await until('the scratch file', () => existsSync(scratch) && readdirSync(scratch).some((n) => n.startsWith('tmpimage-')));
    cli.kill('SIGTERM');
    const r = await cli.done;
    expect(r.code).toBe(33);
    expect(lastLine(r.stderr)).toMatch(/^error INTERRUPTED: \S/);
    expect(readdirSync(scratch)).toEqual([]);
  });
});
