/** Content type archive: tar (optionally compressed) into a directory, and the archives that must be refused. */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, realpathSync, statSync, writeFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { compress, makeRawDisk, makeTar, MiB, removeDir, tempDir, treeSnapshot } from '../helpers/fixtures.js';
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

type TarEntry = Parameters<typeof makeTar>[1][number];

/**
 * From the staging root R = dest/.ferry-staging-*: `d/b` → R, `c` → `d/b/..` = dest, `g` → `c/..` =
 * the sandbox. Read as text, each target stays inside; only the tree as extracted shows otherwise.
 */
const LAUNDER: TarEntry[] = [
  { name: 'd/', type: 'directory' },
  { name: 'd/b', type: 'symlink', linkname: '..' },
  { name: 'c', type: 'symlink', linkname: 'd/b/..' },
  { name: 'g', type: 'symlink', linkname: 'c/..' },
];


/** The links under `dest` whose target, as the kernel resolves it now, is outside `dest`. */
function escapingLinks(dest: string): string[] {
  const real = realpathSync(dest);
  const bad: string[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      const st = lstatSync(p);
      if (st.isDirectory()) walk(p);
      else if (st.isSymbolicLink()) {
        let to: string | undefined;
        try {
          to = realpathSync(p);
        } catch {
          continue; // dangling: resolves nowhere
        }
        const rel = relative(real, to);
        if (rel === '..' || rel.startsWith('../') || rel.startsWith('/')) bad.push(`${relative(dest, p)} -> ${to}`);
      }
    }
  };
  walk(dest);
  return bad;
}

/** A sandbox with bait in it and an empty destination inside; the archive is served from `dir`. */
async function sandboxed(name: string, entries: readonly TarEntry[]): Promise<{ sandbox: string; dest: string; before: string[]; run: () => ReturnType<typeof runEngine> }> {
  const sandbox = f(`sb-${name}`);
  const dest = join(sandbox, 'dest');
  mkdirSync(join(sandbox, 'bait-dir'), { recursive: true });
  writeFileSync(join(sandbox, 'bait.txt'), 'bait');
  mkdirSync(dest);
  const tarFile = f(`sb-${name}.tar`);
  await makeTar(tarFile, entries);
  server.route(`/sb-${name}.tar`, { file: tarFile });
  const before = treeSnapshot(sandbox, dest);
  const run = () => runEngine(spec({ endpoint: `${server.url}/sb-${name}.tar`, contentType: 'archive', target: { kind: 'directory', path: dest } }));
  return { sandbox, dest, before, run };
}

describe('archives whose links redirect later entries (issue #12)', () => {
  test.each<[string, TarEntry[]]>([
    // symlink, then a file through it
    ['file-through-link-new-dir', [...LAUNDER, { name: 'g/planted/evil.txt', content: 'pwned' }]],
    ['file-through-link', [...LAUNDER, { name: 'g/bait.txt', content: 'pwned' }]],
    ['file-through-link-to-dest', [...LAUNDER, { name: 'c/evil.txt', content: 'pwned' }]],
    // chains of links: link to link to outside, each harmless as text
    ['chain-only', LAUNDER],
    ['chain-link-to-link', [{ name: 'a/', type: 'directory' }, { name: 'a/up', type: 'symlink', linkname: '..' }, { name: 'x', type: 'symlink', linkname: 'a/up' }, { name: 'y', type: 'symlink', linkname: 'x/..' }]],
    // symlink to a directory, then directories through it
    ['dir-through-link', [...LAUNDER, { name: 'g/made/', type: 'directory' }, { name: 'g/made/deeper/', type: 'directory' }]],
    ['dir-through-dest-link', [...LAUNDER, { name: 'c/made/', type: 'directory' }]],
    // hard links
    ['hardlink-to-symlink', [{ name: 'd/e/', type: 'directory' }, { name: 'd/e/s', type: 'symlink', linkname: '../..' }, { name: 'h', type: 'link', linkname: 'd/e/s' }, { name: 'h/evil/', type: 'directory' }]],
    ['hardlink-placed-outside', [{ name: 'f', content: 'x' }, ...LAUNDER, { name: 'g/planted/h', type: 'link', linkname: 'f' }]],
    ['hardlink-to-outside-file', [...LAUNDER, { name: 'h', type: 'link', linkname: 'g/bait.txt' }]],
    ['hardlink-to-directory', [{ name: 'd/', type: 'directory' }, { name: 'h', type: 'link', linkname: 'd' }]],
    ['hardlink-to-missing', [{ name: 'h', type: 'link', linkname: 'nothing' }]],
    // links replacing what later entries were checked against
    ['symlink-replaces-dir', [{ name: 'd/', type: 'directory' }, { name: 'd/f', content: 'x' }, { name: 'd', type: 'symlink', linkname: '.' }]],
    ['hardlink-replaces-dir', [{ name: 'f', content: 'x' }, { name: 'd/', type: 'directory' }, { name: 'd', type: 'link', linkname: 'f' }]],
    [
      'link-replaces-link-to-dir',
      [
        { name: 'd/e/f/', type: 'directory' },
        { name: 'd/b', type: 'symlink', linkname: 'e/f' },
        { name: 'd/s', type: 'symlink', linkname: 'b/../..' }, // d/e/f/../.. = d, while d/b is e/f
        { name: 'd/b', type: 'symlink', linkname: '..' }, // now d/s is R/../.. = the sandbox
        { name: 'd/s/planted/', type: 'directory' },
      ],
    ],
    // a parent directory created outside before the entry is refused
    ['parent-outside-deep', [...LAUNDER, { name: 'g/x/y/z/file', content: 'pwned' }]],
    ['parent-outside-symlink', [...LAUNDER, { name: 'g/x/l', type: 'symlink', linkname: '.' }]],
  ])('%s is UNSAFE_ARCHIVE and nothing outside the destination changes', async (name, entries) => {
    const { sandbox, dest, before, run } = await sandboxed(name, entries);
    const { error } = await run();
    expect(treeSnapshot(sandbox, dest)).toEqual(before);
    expect(escapingLinks(dest)).toEqual([]);
    expect(error?.code).toBe('UNSAFE_ARCHIVE');
    expect(readdirSync(dest)).toEqual([]);
  });

  test('honest uses of links still extract, and no link in the result leads outside', async () => {
    const { sandbox, dest, before, run } = await sandboxed('honest', [
      { name: 'lib', type: 'symlink', linkname: 'usr/lib' }, // before its target exists
      { name: 'lib/libx.so', content: 'elf' }, // written through it
      { name: 'usr/bin/', type: 'directory' },
      { name: 'usr/bin/sh', type: 'symlink', linkname: '../../bin/busybox' },
      { name: 'bin/busybox', content: 'bb' },
      { name: 'etc/ld', type: 'link', linkname: 'lib/libx.so' }, // a hard link named through a link
      { name: 'old', content: 'old' },
      { name: 'alias', type: 'symlink', linkname: 'old' },
      { name: 'alias', content: 'new' }, // replaces the link, does not write through it
      { name: 'was-link', type: 'symlink', linkname: 'usr' },
      { name: 'was-link/', type: 'directory' }, // a directory replaces a link
      { name: 'self', type: 'symlink', linkname: '.' },
    ]);
    const { error } = await run();
    expect(error).toBeUndefined();
    expect(treeSnapshot(sandbox, dest)).toEqual(before);
    expect(escapingLinks(dest)).toEqual([]);
    expect(readFileSync(join(dest, 'usr/lib/libx.so'), 'utf8')).toBe('elf');
    expect(readFileSync(join(dest, 'usr/bin/sh'), 'utf8')).toBe('bb');
    expect(statSync(join(dest, 'etc/ld')).ino).toBe(statSync(join(dest, 'usr/lib/libx.so')).ino);
    expect(readFileSync(join(dest, 'old'), 'utf8')).toBe('old');
    expect(lstatSync(join(dest, 'alias')).isFile()).toBe(true);
    expect(readFileSync(join(dest, 'alias'), 'utf8')).toBe('new');
    expect(lstatSync(join(dest, 'was-link')).isDirectory()).toBe(true);
    expect(readlinkSync(join(dest, 'self'))).toBe('.');
  });
});

describe('how a failed extraction is reported', () => {
  test('a truncated tar is INVALID_IMAGE', async () => {
    const whole = f('whole.tar');
    await makeTar(whole, [{ name: 'big', content: 'z'.repeat(20000) }, { name: 'after', content: 'x' }]);
    writeFileSync(f('truncated.tar'), readFileSync(whole).subarray(0, 8192));
    server.route('/truncated.tar', { file: f('truncated.tar') });
    const out = f('x-truncated');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/truncated.tar`, contentType: 'archive', target: { kind: 'directory', path: out } }));
    expect(error?.code).toBe('INVALID_IMAGE');
    expect(readdirSync(out)).toEqual([]);
  });

  test('a filesystem error while writing is TARGET_ERROR, not blamed on the archive', async () => {
    // A name longer than NAME_MAX: the archive is valid, the filesystem refuses it.
    const { dest, run } = await sandboxed('name-too-long', [{ name: 'ok', content: 'x' }, { name: 'n'.repeat(300), content: 'x' }]);
    const { error } = await run();
    expect(error?.code).toBe('TARGET_ERROR');
    expect(readdirSync(dest)).toEqual([]);
  });
});
