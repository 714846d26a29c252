/** Content type archive: tar (optionally compressed) into a directory, and the archives that must be refused. */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { existsSync, lstatSync, readdirSync, readFileSync, readlinkSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { compress, makeRawDisk, makeTar, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { runEngine, spec } from '../helpers/engine.js';

let dir: string;
let server: TestServer;
const f = (name: string): string => join(dir, name);

const GOOD = [
  { name: 'etc/', type: 'directory' as const },
  { name: 'etc/hostname', content: 'golden\n' },
  { name: 'bin/tool', content: '#!/bin/sh\necho hi\n', mode: 0o4755 },
  { name: 'etc/alias', type: 'symlink' as const, linkname: 'hostname' },
  { name: 'etc/hard', type: 'link' as const, linkname: 'etc/hostname' },
  { name: './nested/deep/file.txt', content: 'deep' },
];

beforeAll(async () => {
  dir = tempDir();
  await makeTar(f('good.tar'), GOOD);
  compress('gzip', f('good.tar'), f('good.tar.gz'));
  compress('xz', f('good.tar'), f('good.tar.xz'));
  compress('zstd', f('good.tar'), f('good.tar.zst'));
  await makeTar(f('dotdot.tar'), [{ name: 'ok.txt', content: 'fine' }, { name: '../evil.txt', content: 'pwned' }]);
  await makeTar(f('absolute.tar'), [{ name: '/tmp/ferry-absolute-evil.txt', content: 'pwned' }]);
  await makeTar(f('symlink-out.tar'), [{ name: 'escape', type: 'symlink', linkname: '../../../../etc' }]);
  await makeTar(f('symlink-abs.tar'), [{ name: 'escape', type: 'symlink', linkname: '/etc' }]);
  await makeTar(f('symlink-then-write.tar'), [
    { name: 'sub/', type: 'directory' },
    { name: 'sub/up', type: 'symlink', linkname: '..' },
    { name: 'sub/up/inside.txt', content: 'allowed: stays inside' },
  ]);
  await makeTar(f('hardlink-out.tar'), [{ name: 'shadow', type: 'link', linkname: '../../../etc/shadow' }]);
  await makeTar(f('device.tar'), [{ name: 'dev/null', type: 'character-device' }]);
  await makeTar(f('fifo.tar'), [{ name: 'pipe', type: 'fifo' }]);
  makeRawDisk(f('disk.raw'), MiB);
  server = await startServer();
  for (const name of readdirSync(dir)) server.route(`/${name}`, { file: f(name) });
});

afterAll(async () => {
  await server?.close();
  removeDir(dir);
});

describe('archive content', () => {
  test.each(['good.tar', 'good.tar.gz', 'good.tar.xz', 'good.tar.zst'])('%s extracts files, dirs and links', async (name) => {
    const out = f(`x-${name}`);
    const { result, error } = await runEngine(spec({ endpoint: `${server.url}/${name}`, contentType: 'archive', target: { kind: 'directory', path: out } }));
    expect(error).toBeUndefined();
    expect(result?.sourceFormat?.startsWith('tar')).toBe(true);
    expect(readFileSync(join(out, 'etc/hostname'), 'utf8')).toBe('golden\n');
    expect(readFileSync(join(out, 'nested/deep/file.txt'), 'utf8')).toBe('deep');
    expect(readlinkSync(join(out, 'etc/alias'))).toBe('hostname');
    expect(statSync(join(out, 'etc/hard')).ino).toBe(statSync(join(out, 'etc/hostname')).ino);
    // setuid from an untrusted archive is dropped.
    expect(statSync(join(out, 'bin/tool')).mode & 0o7777).toBe(0o755);
    expect(readdirSync(out).filter((n) => n.startsWith('.ferry'))).toEqual([]);
  });

  test('a link to ".." inside the directory is allowed and writes stay inside', async () => {
    const out = f('x-inside');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/symlink-then-write.tar`, contentType: 'archive', target: { kind: 'directory', path: out } }));
    expect(error).toBeUndefined();
    expect(readFileSync(join(out, 'inside.txt'), 'utf8')).toContain('inside');
  });

  test.each([
    ['dotdot.tar', 'UNSAFE_ARCHIVE'],
    ['absolute.tar', 'UNSAFE_ARCHIVE'],
    ['symlink-out.tar', 'UNSAFE_ARCHIVE'],
    ['symlink-abs.tar', 'UNSAFE_ARCHIVE'],
    ['hardlink-out.tar', 'UNSAFE_ARCHIVE'],
    ['device.tar', 'UNSAFE_ARCHIVE'],
    ['fifo.tar', 'UNSAFE_ARCHIVE'],
    ['disk.raw', 'UNSUPPORTED_FORMAT'],
  ])('%s is refused with %s and nothing is extracted', async (name, code) => {
    const out = f(`bad-${name}`);
    const { error } = await runEngine(spec({ endpoint: `${server.url}/${name}`, contentType: 'archive', target: { kind: 'directory', path: out } }));
    expect(error?.code).toBe(code);
    expect(readdirSync(out)).toEqual([]);
    expect(existsSync(join(dir, 'evil.txt'))).toBe(false);
    expect(existsSync('/tmp/ferry-absolute-evil.txt')).toBe(false);
  });

  test('a checksum mismatch on an archive leaves the directory as it was', async () => {
    const out = f('x-sum');
    const { error } = await runEngine(
      spec({ endpoint: `${server.url}/good.tar.gz`, contentType: 'archive', target: { kind: 'directory', path: out }, checksum: { algorithm: 'sha256', hex: '1'.repeat(64) } }),
    );
    expect(error?.code).toBe('CHECKSUM_MISMATCH');
    expect(readdirSync(out)).toEqual([]);
  });

  test('an archive larger than the capacity is TARGET_TOO_SMALL', async () => {
    const out = f('x-small');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/good.tar`, contentType: 'archive', target: { kind: 'directory', path: out }, capacity: 10 }));
    expect(error?.code).toBe('TARGET_TOO_SMALL');
    expect(readdirSync(out)).toEqual([]);
  });

  test('a tar given as a disk image is refused, not written as raw', async () => {
    const out = f('tar-as-disk.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/good.tar`, target: { kind: 'file', path: out } }));
    expect(error?.code).toBe('UNSUPPORTED_FORMAT');
    expect(existsSync(out)).toBe(false);
    expect(lstatSync(dir).isDirectory()).toBe(true);
  });
});
