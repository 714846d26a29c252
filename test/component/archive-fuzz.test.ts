/**
 * Archive extraction against generated adversarial trees (issue #12): random mixes of files,
 * directories, symlinks and hard links over a few names that collide on purpose, so that links
 * point to links, entries go through links made earlier, and targets climb with `..` or name
 * absolute paths around the destination. Seeded, so a failure names the archive that caused it.
 *
 * Whatever the archive, nothing outside the destination may change (the whole jail around it is
 * snapshotted with lstat), a refusal is UNSAFE_ARCHIVE and nothing else and leaves the destination
 * empty, and a success leaves no link in the destination that resolves outside it.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { lstatSync, mkdirSync, readdirSync, readlinkSync, realpathSync, writeFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import tar from 'tar-stream';
import { extractArchive } from '../../src/io/archive.js';
import { FerryError } from '../../src/errors.js';
import { removeDir, tempDir, treeSnapshot } from '../helpers/fixtures.js';

const ARCHIVES = 200;
const SEED = 0x12c0ffee;

interface Entry {
  readonly name: string;
  readonly type: 'file' | 'directory' | 'symlink' | 'link';
  readonly linkname?: string;
  readonly content?: string;
}

/** mulberry32: small, seedable, good enough to spread cases. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// Names that collide with each other and with the bait outside the destination. Directories and
// links take names from one pool, files from another, so that most archives are not refused for a
// file in the way of a directory before their links have been tried.
const DIRS = ['a', 'b', 'bait-dir', 'dest'];
const LEAVES = ['f', 'bait.txt'];

function generate(random: () => number, jail: string): Entry[] {
  const int = (n: number): number => Math.floor(random() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)] as T;
  const dirs = (min: number, max: number): string[] => Array.from({ length: min + int(max - min + 1) }, () => pick(DIRS));
  const entries: Entry[] = [];
  const count = 1 + int(10);
  // Names with `..` and absolute names are refused before any link is looked at, so only a few
  // archives carry them.
  const badNames = random() < 0.1;
  const launderAt = random() < 0.3 ? int(count) : -1;
  for (let i = 0; i < count; i += 1) {
    if (i === launderAt) {
      // A laundering chain, as a hostile archive would build it on purpose: X/Y -> .., Z -> X/Y/..,
      // W -> Z/.. each stay inside read as text, and W is two levels above the root.
      const [x, y, z, w] = [pick(DIRS), pick(DIRS), pick(DIRS), pick(DIRS)];
      entries.push({ name: `${x}/${y}`, type: 'symlink', linkname: '..' }, { name: z, type: 'symlink', linkname: `${x}/${y}/..` }, { name: w, type: 'symlink', linkname: `${z}/..` });
      continue;
    }
    const links = entries.filter((e) => e.type === 'symlink');
    const files = entries.filter((e) => e.type === 'file' || e.type === 'link');
    // A third of the entries go through a link made earlier: that is how links redirect entries.
    const parent = links.length > 0 && random() < 0.35 ? [...pick(links).name.split('/'), ...dirs(0, 1)] : dirs(0, 2);
    const roll = random();
    const type: Entry['type'] = roll < 0.25 ? 'file' : roll < 0.45 ? 'directory' : roll < 0.8 ? 'symlink' : 'link';
    const parts = type === 'file' || type === 'link' ? [...parent, pick(LEAVES)] : [...parent, pick(DIRS)];
    if (badNames && random() < 0.3) parts.splice(int(parts.length), 0, '..');
    const name = badNames && random() < 0.2 ? `/${parts.join('/')}` : parts.join('/');
    const ups = '../'.repeat(parts.length - 1 + (random() < 0.25 ? 1 : 0));
    if (type === 'file') {
      entries.push({ name, type, content: `file ${i}` });
    } else if (type === 'directory') {
      entries.push({ name: `${name}/`, type });
    } else if (type === 'symlink') {
      const r = random();
      let linkname: string;
      if (r < 0.04) linkname = `${jail}/${['s', ...dirs(0, 2)].join('/')}`; // absolute, around the destination
      else if (r < 0.3 && entries.length > 0) linkname = `${ups}${pick(entries).name.replace(/\/$/, '')}`;
      // Through an earlier link and back up: harmless as text, not always in the tree.
      else if (r < 0.6 && links.length > 0) linkname = `${ups}${pick(links).name}/..${random() < 0.4 ? '/..' : ''}`;
      else {
        const steps = [...Array.from({ length: random() < 0.3 ? int(4) : int(2) }, () => '..'), ...dirs(0, 2)];
        for (let k = int(3); k > 0; k -= 1) steps.splice(int(steps.length + 1), 0, pick(['..', '.', pick(DIRS), pick(LEAVES)]));
        linkname = steps.length > 0 ? steps.join('/') : '.';
      }
      entries.push({ name, type, linkname });
    } else {
      const r = random();
      const linkname =
        r < 0.6 && files.length > 0 ? pick(files).name
        : r < 0.85 && entries.length > 0 ? pick(entries).name.replace(/\/$/, '') // a directory or a symlink
        : [...(random() < 0.2 ? ['..'] : []), ...dirs(0, 2), pick(LEAVES)].join('/');
      entries.push({ name, type, linkname });
    }
  }
  return entries;
}

async function pack(entries: readonly Entry[]): Promise<Buffer> {
  const p = tar.pack();
  const chunks: Buffer[] = [];
  p.on('data', (c: unknown) => chunks.push(c as Buffer));
  const done = new Promise<void>((resolve, reject) => {
    p.on('end', resolve);
    p.on('error', reject);
  });
  for (const e of entries) {
    const header = { name: e.name, type: e.type, mode: e.type === 'directory' ? 0o755 : 0o644, ...(e.linkname !== undefined ? { linkname: e.linkname } : {}) };
    await new Promise<void>((resolve, reject) => {
      const cb = (err?: Error | null): void => (err ? reject(err) : resolve());
      if (e.type === 'file') p.entry(header, e.content ?? '', cb);
      else p.entry(header, cb);
    });
  }
  p.finalize();
  await done;
  return Buffer.concat(chunks);
}


function inside(root: string, path: string): boolean {
  const rel = relative(root, path);
  return rel !== '..' && !rel.startsWith('../') && !rel.startsWith('/');
}

/**
 * Where the kernel takes a link now, or for a dangling one, where its longest existing prefix
 * is; a dangling link that would climb (`..`) from a name that does not exist yet is reported too,
 * since what it means depends on what is created there later.
 */
function linkProblem(link: string, root: string): string | undefined {
  try {
    const to = realpathSync(link);
    return inside(root, to) ? undefined : `resolves to ${to}`;
  } catch {
    const target = readlinkSync(link);
    let at = target.startsWith('/') ? '/' : realpathSync(dirname(link));
    const names = target.split('/').filter((n) => n !== '');
    for (let i = 0; i < names.length; i += 1) {
      try {
        at = realpathSync(`${at}/${names[i]}`);
      } catch {
        if (names.slice(i + 1).includes('..')) return `dangles at ${at}/${names[i]} and climbs from there`;
        break;
      }
    }
    return inside(root, at) ? undefined : `dangles outside, at ${at}`;
  }
}

function linksOutside(dest: string): string[] {
  const root = realpathSync(dest);
  const bad: string[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      const st = lstatSync(p);
      if (st.isDirectory()) walk(p);
      else if (st.isSymbolicLink()) {
        const problem = linkProblem(p, root);
        if (problem !== undefined) bad.push(`${relative(dest, p)} ${problem}`);
      } else if (!st.isFile()) bad.push(`${relative(dest, p)} is neither file, directory nor link`);
    }
  };
  walk(dest);
  return bad;
}

let work: string;

beforeAll(() => {
  work = tempDir('ferry-archive-fuzz-');
});

afterAll(() => {
  removeDir(work);
});

describe('archive extraction under generated adversarial trees', () => {
  test(`${ARCHIVES} seeded archives: nothing outside the destination changes, refusals are UNSAFE_ARCHIVE`, async () => {
    const random = prng(SEED);
    const problems: string[] = [];
    let extracted = 0;
    let refused = 0;
    for (let i = 0; i < ARCHIVES; i += 1) {
      // jail/top.txt, jail/s/{bait.txt,bait-dir/inner.txt}, jail/s/dest: three levels of `..`
      // above the staging directory (dest/.ferry-staging-*) stay in the jail.
      const jail = join(work, `case-${i}`);
      const sandbox = join(jail, 's');
      const dest = join(sandbox, 'dest');
      mkdirSync(join(sandbox, 'bait-dir'), { recursive: true });
      writeFileSync(join(jail, 'top.txt'), 'top');
      writeFileSync(join(sandbox, 'bait.txt'), 'bait');
      writeFileSync(join(sandbox, 'bait-dir', 'inner.txt'), 'inner');
      mkdirSync(dest);
      const entries = generate(random, jail);
      const archive = await pack(entries);
      const before = treeSnapshot(jail, dest);
      let error: unknown;
      try {
        await extractArchive((async function* () { yield archive; })(), dest);
      } catch (err) {
        error = err;
      }
      const report = (what: string): void => {
        problems.push(`case ${i}: ${what}\n  ${entries.map((e) => `${e.type} ${e.name}${e.linkname !== undefined ? ` -> ${e.linkname}` : ''}`).join('\n  ')}`);
      };
      if (JSON.stringify(treeSnapshot(jail, dest)) !== JSON.stringify(before)) report('something outside the destination changed');
      if (error === undefined) {
        extracted += 1;
        for (const bad of linksOutside(dest)) report(`link ${bad}`);
        if (readdirSync(dest).some((n) => n.startsWith('.ferry-staging'))) report('staging left behind');
      } else {
        refused += 1;
        if (!(error instanceof FerryError) || error.code !== 'UNSAFE_ARCHIVE') report(`refused with ${error instanceof FerryError ? error.code : String(error)}`);
        if (readdirSync(dest).length > 0) report(`refused but left ${readdirSync(dest).join(', ')}`);
      }
      removeDir(jail);
    }
    expect(problems).toEqual([]);
    // The generator must exercise both sides, or the test proves little.
    expect(extracted).toBeGreaterThan(ARCHIVES / 10);
    expect(refused).toBeGreaterThan(ARCHIVES / 10);
  });
});
