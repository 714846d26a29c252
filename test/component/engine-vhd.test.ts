/**
 * A fixed VHD (Azure's format) is a raw disk with a 512-byte footer at its end and nothing at its
 * start: it sniffs as raw. Every raw path must import the disk without the footer.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { compress, convertImage, makeRawDisk, MiB, removeDir, sh, tempDir } from '../helpers/fixtures.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { runEngine, spec } from '../helpers/engine.js';
import type { ImportTuning } from '../../importer/engine.js';

let dir: string;
let server: TestServer;
let raw: string;
let vhd: string;
/** The disk the footer declares (qemu rounds 8 MiB up to its CHS geometry). */
let disk: number;
let diskSha: string;
const f = (name: string): string => join(dir, name);
const sha256 = (data: Buffer): string => createHash('sha256').update(data).digest('hex');

beforeAll(async () => {
  dir = tempDir('ferry-vhd-');
  raw = f('disk.raw');
  vhd = f('fixed.vhd');
  makeRawDisk(raw, 8 * MiB);
  convertImage(raw, 'vpc', vhd, ['-o', 'subformat=fixed']);
  compress('zstd', vhd, f('fixed.vhd.zst'));
  compress('gzip', vhd, f('fixed.vhd.gz'));
  const bytes = readFileSync(vhd);
  disk = bytes.length - 512;
  diskSha = sha256(bytes.subarray(0, disk));
  server = await startServer();
  server.route('/fixed.vhd', { file: vhd });
  server.route('/norange/fixed.vhd', { file: vhd, ranges: false });
  server.route('/fixed.vhd.zst', { file: f('fixed.vhd.zst') });
  server.route('/fixed.vhd.gz', { file: f('fixed.vhd.gz') });
});

afterAll(async () => {
  await server?.close();
  removeDir(dir);
});

test('the fixture: qemu-img reads it as a fixed vpc image, its footer the last 512 bytes', () => {
  const info = JSON.parse(sh('qemu-img', ['info', '--output=json', '-f', 'vpc', vhd]).toString()) as { 'virtual-size': number };
  expect(info['virtual-size']).toBe(disk);
  expect(statSync(vhd).size).toBe(disk + 512);
  const footer = readFileSync(vhd).subarray(disk);
  expect(footer.subarray(0, 8).toString('latin1')).toBe('conectix');
  expect(footer.readUInt32BE(60)).toBe(2);
  expect(Number(footer.readBigUInt64BE(48))).toBe(disk);
  // Nothing at the start says VHD: it sniffs as raw.
  expect(readFileSync(vhd).subarray(0, 8).toString('latin1')).not.toBe('conectix');
});

describe('a fixed VHD imports as its disk, without the footer', () => {
  test.each<[string, () => { endpoint: string; source?: 'file' }, Partial<ImportTuning>, string]>([
    ['over http with Range (streamed)', () => ({ endpoint: `${server.url}/fixed.vhd` }), {}, 'raw'],
    ['over http without Range (streamed)', () => ({ endpoint: `${server.url}/norange/fixed.vhd` }), {}, 'raw'],
    ['over http, ranged connections', () => ({ endpoint: `${server.url}/fixed.vhd` }), { connections: 4 }, 'raw'],
    ['over http, big enough for nbd (threshold lowered): streamed instead', () => ({ endpoint: `${server.url}/fixed.vhd` }), { rawViaNbdMinBytes: MiB }, 'raw'],
    ['as a local file', () => ({ endpoint: vhd, source: 'file' }), {}, 'raw'],
    ['zstd-compressed (the decoder writes the target)', () => ({ endpoint: `${server.url}/fixed.vhd.zst` }), {}, 'raw+zstd'],
    ['gzip-compressed (streamed)', () => ({ endpoint: `${server.url}/fixed.vhd.gz` }), {}, 'raw+gzip'],
  ])('%s', async (name, where, tuning, format) => {
    const out = f(`out-${name.replace(/\W+/g, '-')}.img`);
    const { result, error } = await runEngine(spec({ ...where(), target: { kind: 'file', path: out } }), tuning);
    expect(error).toBeUndefined();
    expect(result?.sourceFormat).toBe(format);
    expect(result?.diskSize).toBe(disk);
    expect(statSync(out).size).toBe(disk);
    expect(sha256(readFileSync(out))).toBe(diskSha);
    // And the same disk as the raw image it was made from (qemu pads it to its geometry with zeros).
    sh('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', raw, out]);
    expect(existsSync(`${out}.ferry-partial`)).toBe(false);
  });

  test.each<[string, () => { endpoint: string; source?: 'file' }]>([
    ['over http with Range', () => ({ endpoint: `${server.url}/fixed.vhd` })],
    ['over http without Range', () => ({ endpoint: `${server.url}/norange/fixed.vhd` })],
    ['as a local file', () => ({ endpoint: vhd, source: 'file' })],
  ])('%s, into a target exactly the size of its disk: fits (the footer is not disk)', async (_name, where) => {
    const out = f('out-exact.img');
    const { result, error } = await runEngine(spec({ ...where(), target: { kind: 'file', path: out }, capacity: disk }));
    expect(error).toBeUndefined();
    expect(result?.diskSize).toBe(disk);
    expect(sha256(readFileSync(out))).toBe(diskSha);
  });

  test('a raw image that only ends like a footer of another size keeps all its bytes', async () => {
    // The footer declares `disk` bytes; in front of 512 extra bytes it is data.
    const padded = f('padded.raw');
    const bytes = readFileSync(vhd);
    writeFileSync(padded, Buffer.concat([Buffer.alloc(512, 1), bytes]));
    const out = f('out-padded.img');
    const { error } = await runEngine(spec({ endpoint: padded, source: 'file', target: { kind: 'file', path: out } }));
    expect(error).toBeUndefined();
    expect(statSync(out).size).toBe(bytes.length + 512);
  });
});
