/** Untrusted images that must be refused, each with its own code, leaving no completed disk. */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { compress, convertImage, makeRawDisk, MiB, removeDir, sh, tempDir } from '../helpers/fixtures.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { runEngine, spec } from '../helpers/engine.js';

let dir: string;
let server: TestServer;
const f = (name: string): string => join(dir, name);

beforeAll(async () => {
  dir = tempDir();
  makeRawDisk(f('disk.raw'), 4 * MiB);
  convertImage(f('disk.raw'), 'qcow2', f('disk.qcow2'));
  // A classic attack: an overlay whose backing file is a host file or a json: pseudo-protocol.
  sh('qemu-img', ['create', '-f', 'qcow2', '-F', 'raw', '-b', '/etc/hostname', '-u', f('backing.qcow2'), '4M']);
  sh('qemu-img', ['create', '-f', 'qcow2', '-F', 'raw', '-u', '-b', 'json:{"driver":"raw","file":{"driver":"file","filename":"/etc/hostname"}}', f('json-backing.qcow2'), '4M']);
  sh('qemu-img', ['create', '-f', 'qcow2', '-o', `data_file=${f('external.data')}`, f('datafile.qcow2'), '4M']);
  sh('qemu-img', ['create', '-f', 'qcow2', f('huge.qcow2'), '64G']);
  // Garbage behind valid magic numbers.
  writeFileSync(f('short.qcow2'), readFileSync(f('disk.qcow2')).subarray(0, 300));
  const corrupt = Buffer.from(readFileSync(f('disk.qcow2')).subarray(0, 64 * 1024));
  corrupt.writeUInt32BE(0x7fffffff, 20); // absurd cluster_bits
  writeFileSync(f('corrupt.qcow2'), corrupt);
  writeFileSync(f('garbage.gz'), Buffer.concat([Buffer.from([0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0]), randomBytes(64 * 1024)]));
  writeFileSync(f('garbage.xz'), Buffer.concat([Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), randomBytes(64 * 1024)]));
  writeFileSync(f('empty.img'), '');
  writeFileSync(f('disk.qed'), Buffer.concat([Buffer.from('QED\0'), Buffer.alloc(4096)]));
  compress('gzip', f('disk.raw'), f('disk.raw.gz'));
  const gz = readFileSync(f('disk.raw.gz'));
  writeFileSync(f('truncated.raw.gz'), gz.subarray(0, Math.floor(gz.length / 2)));
  server = await startServer();
  for (const name of readdirSync(dir)) server.route(`/${name}`, { file: f(name) });
});

afterAll(async () => {
  await server?.close();
  removeDir(dir);
});

function leftovers(out: string): string[] {
  const base = out.split('/').at(-1) ?? '';
  return readdirSync(dir).filter((n) => n === base || n.startsWith(`${base}.`));
}

describe('refused images', () => {
  test.each([
    ['backing.qcow2', 'BACKING_FILE'],
    ['json-backing.qcow2', 'BACKING_FILE'],
    ['datafile.qcow2', 'BACKING_FILE'],
    ['huge.qcow2', 'TARGET_TOO_SMALL'],
    ['short.qcow2', 'INVALID_IMAGE'],
    ['corrupt.qcow2', 'INVALID_IMAGE'],
    ['garbage.gz', 'INVALID_IMAGE'],
    ['garbage.xz', 'INVALID_IMAGE'],
    ['truncated.raw.gz', 'INVALID_IMAGE'],
    ['empty.img', 'INVALID_IMAGE'],
    ['disk.qed', 'UNSUPPORTED_FORMAT'],
  ])('%s fails with %s and leaves nothing', async (name, code) => {
    const out = f(`out-${name}.img`);
    const { error } = await runEngine(spec({ endpoint: `${server.url}/${name}`, target: { kind: 'file', path: out }, scratchDir: f(`scratch-${name}`), capacity: 16 * MiB }));
    expect(error?.code).toBe(code);
    expect(error?.retryable).toBe(false);
    expect(leftovers(out)).toEqual([]);
    expect(existsSync(f(`scratch-${name}`)) ? readdirSync(f(`scratch-${name}`)) : []).toEqual([]);
  });

  test('a raw image larger than the target fails before writing (known length)', async () => {
    const out = f('too-big.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/disk.raw`, target: { kind: 'file', path: out }, capacity: 2 * MiB }));
    expect(error?.code).toBe('TARGET_TOO_SMALL');
    expect(leftovers(out)).toEqual([]);
  });

  test('a compressed raw image larger than the target fails while streaming', async () => {
    const out = f('too-big-gz.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/disk.raw.gz`, target: { kind: 'file', path: out }, capacity: 2 * MiB }));
    expect(error?.code).toBe('TARGET_TOO_SMALL');
    expect(leftovers(out)).toEqual([]);
  });

  test('filesystem overhead counts: a disk that fits the volume but not its usable part is refused', async () => {
    const out = f('overhead.img');
    // 4 MiB image, 4 MiB volume, 6 % overhead: usable 3 MiB.
    const { error } = await runEngine(spec({ endpoint: `${server.url}/disk.qcow2`, target: { kind: 'file', path: out }, scratchDir: f('s-o'), capacity: 4 * MiB, filesystemOverhead: 0.06 }));
    expect(error?.code).toBe('TARGET_TOO_SMALL');
  });
});

describe('checksums', () => {
  const digest = (algo: string, name: string): string => createHash(algo).update(readFileSync(f(name))).digest('hex');

  test.each(['sha256', 'sha512', 'md5'] as const)('a matching %s passes (over the compressed bytes on the wire)', async (algorithm) => {
    const out = f(`sum-${algorithm}.img`);
    const { error } = await runEngine(spec({ endpoint: `${server.url}/disk.raw.gz`, target: { kind: 'file', path: out }, checksum: { algorithm, hex: digest(algorithm, 'disk.raw.gz') } }));
    expect(error).toBeUndefined();
    expect(existsSync(out)).toBe(true);
  });

  test('a mismatch is fatal, not retried, and leaves no disk (raw path)', async () => {
    const out = f('bad-sum.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/disk.raw`, target: { kind: 'file', path: out }, checksum: { algorithm: 'sha256', hex: '0'.repeat(64) } }));
    expect(error?.code).toBe('CHECKSUM_MISMATCH');
    expect(error?.retryable).toBe(false);
    expect(server.requests.filter((r) => r.path === '/disk.raw' && r.method === 'GET').length).toBeGreaterThan(0);
    expect(leftovers(out)).toEqual([]);
  });

  test('a mismatch on a converted image stops before qemu-img writes anything', async () => {
    const out = f('bad-sum-qcow2.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/disk.qcow2`, target: { kind: 'file', path: out }, scratchDir: f('s-c'), checksum: { algorithm: 'sha256', hex: 'f'.repeat(64) } }));
    expect(error?.code).toBe('CHECKSUM_MISMATCH');
    expect(leftovers(out)).toEqual([]);
    expect(readdirSync(f('s-c'))).toEqual([]);
  });

  test('an earlier good disk is not replaced by a failed import', async () => {
    const out = f('keep.img');
    const first = await runEngine(spec({ endpoint: `${server.url}/disk.raw`, target: { kind: 'file', path: out } }));
    expect(first.error).toBeUndefined();
    const before = readFileSync(out);
    const second = await runEngine(spec({ endpoint: `${server.url}/disk.raw.gz`, target: { kind: 'file', path: out }, checksum: { algorithm: 'md5', hex: '0'.repeat(32) } }));
    expect(second.error?.code).toBe('CHECKSUM_MISMATCH');
    expect(readFileSync(out).equals(before)).toBe(true);
  });
});
