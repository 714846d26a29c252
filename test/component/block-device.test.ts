/**
 * Block volume targets, on a real loop device. Needs root and free loop devices; the test says so
 * and skips itself where the machine has neither (not a silent pass: the skip is reported).
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { closeSync, lstatSync, openSync, readSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { compress, convertImage, makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { runEngine, spec } from '../helpers/engine.js';
import { runFerry } from '../helpers/ferry-process.js';

let dir: string;
let server: TestServer;
let device: string | undefined;
const f = (name: string): string => join(dir, name);

function attachLoop(file: string): string | undefined {
  try {
    return execFileSync('losetup', ['-f', '--show', file], { stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
  } catch {
    return undefined;
  }
}

function readDevice(path: string, length: number, offset = 0): Buffer {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    readSync(fd, buf, 0, length, offset);
    return buf;
  } finally {
    closeSync(fd);
  }
}

beforeAll(async () => {
  dir = tempDir();
  makeRawDisk(f('disk.raw'), 8 * MiB);
  convertImage(f('disk.raw'), 'qcow2', f('disk.qcow2'));
  compress('gzip', f('disk.raw'), f('disk.raw.gz'));
  execFileSync('truncate', ['-s', '16M', f('backing-file')]);
  device = attachLoop(f('backing-file'));
  server = await startServer();
  for (const n of ['disk.raw.gz', 'disk.qcow2']) server.route(`/${n}`, { file: f(n) });
});

afterAll(async () => {
  if (device) execFileSync('losetup', ['-d', device]);
  await server?.close();
  removeDir(dir);
});

const expected = (): Buffer => readDevice(f('disk.raw'), 8 * MiB);

function fillDevice(byte: number): void {
  writeFileSync(device as string, Buffer.alloc(16 * MiB, byte));
}

describe('block device target', () => {
  test('loop device available (root)', () => {
    if (!device) console.warn('block-device tests skipped: no loop device (needs root)');
    expect(true).toBe(true);
  });

  test('raw over http overwrites every byte, zeros included, on a dirty device', async () => {
    if (!device) return;
    fillDevice(0x5a);
    const { result, error } = await runEngine(spec({ endpoint: `${server.url}/disk.raw.gz`, target: { kind: 'block', path: device } }));
    expect(error).toBeUndefined();
    expect(result?.diskSize).toBe(16 * MiB);
    expect(readDevice(device, 8 * MiB).equals(expected())).toBe(true);
  });

  test('qcow2 is converted onto the device in place', async () => {
    if (!device) return;
    fillDevice(0x77);
    const { error } = await runEngine(spec({ endpoint: `${server.url}/disk.qcow2`, target: { kind: 'block', path: device }, scratchDir: f('scratch') }));
    expect(error).toBeUndefined();
    expect(readDevice(device, 8 * MiB).equals(expected())).toBe(true);
  });

  test('an image larger than the device is refused; a failed import wipes the first MiB', async () => {
    if (!device) return;
    fillDevice(0x33);
    const { error } = await runEngine(spec({ endpoint: `${server.url}/disk.raw.gz`, target: { kind: 'block', path: device }, capacity: 4 * MiB }));
    expect(error?.code).toBe('TARGET_TOO_SMALL');
    expect(readDevice(device, MiB).every((b) => b === 0)).toBe(true);
  });
});

// The usage line says `--dest <file|block device|directory>`: the CLI writes a device in place, as
// the pod does for a block volume (#12).
describe('ferry import --dest <block device>', () => {
  const lastLine = (text: string): string => text.trim().split('\n').at(-1) ?? '';

  test('a qcow2 is converted onto the device; the disk size is the device size', async () => {
    if (!device) return;
    fillDevice(0x66);
    const r = await runFerry(['import', '--url', f('disk.qcow2'), '--dest', device, '--quiet']);
    expect(r.code).toBe(0);
    expect(lastLine(r.stderr)).toBe(`Import Complete: ${device} (${16 * MiB} bytes, from qcow2)`);
    expect(readDevice(device, 8 * MiB).equals(expected())).toBe(true);
    expect(lstatSync(device).isBlockDevice()).toBe(true);
  });

  test('a gzip raw image over http through a symlink to the device (as /dev/disk/by-id/...): written in place, zeros included', async () => {
    if (!device) return;
    fillDevice(0x5a);
    const link = f('by-id-link');
    symlinkSync(device, link);
    const r = await runFerry(['import', '--url', `${server.url}/disk.raw.gz`, '--dest', link, '--quiet']);
    expect(r.code).toBe(0);
    expect(readDevice(device, 8 * MiB).equals(expected())).toBe(true);
    expect(lstatSync(link).isSymbolicLink()).toBe(true);
  });

  test('a failed import to the device exits with its code and wipes the first MiB', async () => {
    if (!device) return;
    fillDevice(0x33);
    const r = await runFerry(['import', '--url', f('disk.raw.gz'), '--dest', device, '--size', '4Mi', '--quiet']);
    expect(r.code).toBe(23);
    expect(lastLine(r.stderr)).toMatch(/^error TARGET_TOO_SMALL: /);
    expect(readDevice(device, MiB).every((b) => b === 0)).toBe(true);
  });

  test('an archive cannot go to a block device: INVALID_SPEC', async () => {
    if (!device) return;
    const r = await runFerry(['import', '--url', f('disk.raw.gz'), '--dest', device, '--content-type', 'archive', '--quiet']);
    expect(r.code).toBe(2);
    expect(lastLine(r.stderr)).toMatch(/^error INVALID_SPEC: /);
  });
});
