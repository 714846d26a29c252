import { describe, expect, test } from '@jest/globals';
import { checkLinkTarget, entryKind, safeEntryPath } from '../../src/io/archive.js';
import { EntryKind, LeafAction, leafAction, MAX_STEPS, Missing, type Node, type NodeKind, resolveBeneath, type TreeView } from '../../src/io/archive-resolve.js';
import { FerryError } from '../../src/errors.js';
import { codeOf } from './helpers.js';

describe('safeEntryPath', () => {
  test.each<[string, string]>([
    ['a/b', 'a/b'],
    ['./a/b', 'a/b'],
    ['a/b/', 'a/b'],
    ['a//b', 'a/b'],
    ['a/./b', 'a/b'],
    ['disk.img', 'disk.img'],
    ['..hidden/x', '..hidden/x'], // a name that merely starts with dots
    ['a/b..', 'a/b..'],
    ['.', ''],
    ['./', ''],
    ['', ''],
  ])('%j -> %j', (name, expected) => {
    expect(safeEntryPath(name)).toBe(expected);
  });

  test.each(['/etc/passwd', '/', '../x', '..', 'a/../../x', 'a/..', 'a/../b', './..', 'a\0b'])('%j -> UNSAFE_ARCHIVE', (name) => {
    expect(codeOf(() => safeEntryPath(name))).toBe('UNSAFE_ARCHIVE');
  });
});

describe('checkLinkTarget', () => {
  test.each<[string, string]>([
    ['link', 'target'],
    ['link', './target'],
    ['a/link', 'b/c'],
    ['a/b', '../c'], // resolves to c
    ['a/b/link', '../../top'],
    ['a/link', '..'], // the root itself
    ['link', '.'],
  ])('%j -> %j stays inside', (entry, target) => {
    expect(() => checkLinkTarget(entry, target)).not.toThrow();
  });

  test.each<[string, string]>([
    ['link', '../outside'],
    ['link', '..'],
    ['a/b', '../../c'],
    ['a/link', 'x/../../../y'],
    ['link', '/etc/passwd'],
    ['a/link', '/'],
    ['link', ''],
  ])('%j -> %j is UNSAFE_ARCHIVE', (entry, target) => {
    expect(codeOf(() => checkLinkTarget(entry, target))).toBe('UNSAFE_ARCHIVE');
  });
});

/** An in-memory tree for the resolver: names from the root joined with "/", a string being a symlink. */
function memoryTree(entries: Readonly<Record<string, 'dir' | 'file' | 'fifo' | string>>): TreeView & { readonly made: string[] } {
  const nodes = new Map<string, Node>(
    Object.entries(entries).map(([name, v]): [string, Node] => [
      name,
      v === 'dir' ? { kind: 'directory' } : v === 'file' ? { kind: 'file' } : v === 'fifo' ? { kind: 'other' } : { kind: 'symlink', target: v },
    ]),
  );
  const made: string[] = [];
  return {
    made,
    look: async (dir, name) => nodes.get([...dir, name].join('/')) ?? { kind: 'missing' },
    mkdir: async (dir, name) => {
      const key = [...dir, name].join('/');
      if (nodes.has(key)) throw new Error(`mkdir over ${key}`);
      nodes.set(key, { kind: 'directory' });
      made.push(key);
    },
  };
}

async function codeOfAsync(promise: Promise<unknown>): Promise<string> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof FerryError) return err.code;
    throw err;
  }
  throw new Error('expected a FerryError, but nothing was thrown');
}

/** A chain of `n` links, each to the next, the last to the directory "end". */
function chain(n: number): Record<string, string> {
  const tree: Record<string, string> = { end: 'dir' };
  for (let i = 0; i < n; i += 1) tree[`l${i}`] = i === n - 1 ? 'end' : `l${i + 1}`;
  return tree;
}

describe('resolveBeneath', () => {
  test.each<[string, Record<string, string>, string[], string, Missing, string[], string]>([
    ['plain directories', { a: 'dir', 'a/b': 'dir' }, [], 'a/b', Missing.Refuse, ['a', 'b'], 'directory'],
    ['a link to ".." from a subdirectory is the root', { sub: 'dir', 'sub/up': '..' }, [], 'sub/up', Missing.Refuse, [], 'directory'],
    ['a link followed from its own directory', { a: 'dir', 'a/b': 'dir', 'a/l': 'b' }, ['a'], 'l', Missing.Refuse, ['a', 'b'], 'directory'],
    ['a chain of links that stays inside', { d: 'dir', 'd/e': 'dir', 'd/b': 'e', s: 'd/b/..' }, [], 's', Missing.Check, ['d'], 'directory'],
    ['a link to a file', { f: 'file', l: 'f' }, [], 'l', Missing.Check, ['f'], 'file'],
    ['a dangling target is taken as written', { l: 'x/y' }, [], 'l/z', Missing.Check, ['x', 'y', 'z'], 'missing'],
    ['a file in the middle makes the path dangle', { f: 'file' }, [], 'f/x', Missing.Check, ['f', 'x'], 'missing'],
    ['40 links are followed', chain(40), [], 'l0', Missing.Refuse, ['end'], 'directory'],
    ['"." names are dropped', { a: 'dir' }, [], './a/.', Missing.Refuse, ['a'], 'directory'],
    ['MAX_STEPS names are walked', { a: 'dir' }, [], Array.from({ length: MAX_STEPS / 2 }, () => 'a/..').join('/'), Missing.Refuse, [], 'directory'],
  ])('%s', async (_, entries, start, path, mode, at, kind) => {
    const resolved = await resolveBeneath(memoryTree(entries), start, path, mode);
    expect(resolved).toEqual({ at, kind });
  });

  test.each<[string, Record<string, string>, string[], string, Missing]>([
    ['".." above the root', {}, [], '..', Missing.Check],
    ['a link to ".." at the root', { up: '..' }, [], 'up', Missing.Check],
    ['a link to a link to outside', { a: 'b', b: '..' }, [], 'a/x', Missing.Create],
    ['a laundered chain: each link looks inside on its own', { d: 'dir', 'd/b': '..', c: 'd/b/..' }, [], 'c', Missing.Check],
    ['two laundered levels', { d: 'dir', 'd/b': '..', c: 'd/b/..', g: 'c/..' }, [], 'g/made', Missing.Create],
    ['a re-pointed link under a checked one', { d: 'dir', 'd/e': 'dir', 'd/b': '..', 'd/s': 'b/..' }, [], 'd/s', Missing.Check],
    ['an absolute link in the tree', { a: '/etc' }, [], 'a/passwd', Missing.Check],
    ['an empty link in the tree', { a: '' }, [], 'a', Missing.Check],
    ['a loop', { a: 'b', b: 'a' }, [], 'a', Missing.Check],
    ['41 links', chain(41), [], 'l0', Missing.Check],
    ['".." after a missing name', { d: 'dir' }, ['d'], 'x/../..', Missing.Check],
    ['".." after a file in the middle', { f: 'file' }, [], 'f/..', Missing.Check],
    ['a missing name when it must exist', {}, [], 'a/b', Missing.Refuse],
    ['a file as a directory', { f: 'file' }, [], 'f/x', Missing.Create],
    ['a fifo as a directory', { p: 'fifo' }, [], 'p', Missing.Refuse],
    ['an absolute path', {}, [], '/etc', Missing.Check],
    ['more steps than MAX_STEPS', { a: 'dir' }, [], Array.from({ length: MAX_STEPS + 1 }, () => 'a/..').join('/'), Missing.Check],
  ])('%s is UNSAFE_ARCHIVE', async (_, entries, start, path, mode) => {
    expect(await codeOfAsync(resolveBeneath(memoryTree(entries), start, path, mode))).toBe('UNSAFE_ARCHIVE');
  });

  test('Create makes the missing directories one by one, through links, and only beneath the root', async () => {
    const tree = memoryTree({ l: 'x', a: 'dir' });
    expect(await resolveBeneath(tree, [], 'a/b/l2', Missing.Create)).toEqual({ at: ['a', 'b', 'l2'], kind: 'directory' });
    expect(await resolveBeneath(tree, [], 'l/y', Missing.Create)).toEqual({ at: ['x', 'y'], kind: 'directory' });
    expect(tree.made).toEqual(['a/b', 'a/b/l2', 'x', 'x/y']);
  });

  test('a walk refused part-way has created nothing on the far side of the link', async () => {
    const tree = memoryTree({ d: 'dir', 'd/b': '..', c: 'd/b/..', g: 'c/..' });
    expect(await codeOfAsync(resolveBeneath(tree, [], 'g/x/y/z', Missing.Create))).toBe('UNSAFE_ARCHIVE');
    expect(tree.made).toEqual([]);
  });
});

describe('leafAction', () => {
  test.each<[EntryKind, NodeKind, LeafAction]>([
    [EntryKind.File, 'missing', LeafAction.Create],
    [EntryKind.Directory, 'missing', LeafAction.Create],
    [EntryKind.Directory, 'directory', LeafAction.Keep],
    [EntryKind.File, 'file', LeafAction.Replace],
    [EntryKind.File, 'symlink', LeafAction.Replace], // unlinked, never written through
    [EntryKind.Symlink, 'symlink', LeafAction.Replace],
    [EntryKind.HardLink, 'file', LeafAction.Replace],
    [EntryKind.Directory, 'symlink', LeafAction.Replace],
    [EntryKind.Directory, 'file', LeafAction.Replace],
  ])('%s over %s -> %s', (entry, existing, action) => {
    expect(leafAction(entry, existing, 'x')).toBe(action);
  });

  test.each([EntryKind.File, EntryKind.Symlink, EntryKind.HardLink])('%s over a directory is UNSAFE_ARCHIVE', (entry) => {
    expect(codeOf(() => leafAction(entry, 'directory', 'x'))).toBe('UNSAFE_ARCHIVE');
  });
});

describe('entryKind', () => {
  test.each<[string, EntryKind]>([
    ['file', EntryKind.File],
    ['contiguous-file', EntryKind.File],
    ['directory', EntryKind.Directory],
    ['symlink', EntryKind.Symlink],
    ['link', EntryKind.HardLink],
  ])('%s -> %s', (type, kind) => {
    expect(entryKind(type, 'x')).toBe(kind);
  });

  test.each(['character-device', 'block-device', 'fifo', 'unknown'])('%s is UNSAFE_ARCHIVE', (type) => {
    expect(codeOf(() => entryKind(type, 'x'))).toBe('UNSAFE_ARCHIVE');
  });
});
