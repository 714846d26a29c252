/**
 * Block volume targets, on a real loop device. Needs root and free loop devices; the test says so
 * and skips itself where the machine has neither (not a silent pass: the skip is reported).
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { closeSync, openSync, readSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { compress, convertImage, makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { runEngine, spec } from '../helpers/engine.js';

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
