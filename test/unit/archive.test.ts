import { describe, expect, test } from '@jest/globals';
import { checkLinkTarget, safeEntryPath } from '../../importer/archive.js';
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
