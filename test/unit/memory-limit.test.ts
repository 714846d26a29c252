import { describe, expect, test } from '@jest/globals';
import { cgroupMemoryLimit, ownCgroups, parseMemoryLimit, selfAndAncestors } from '../../src/io/memory-limit.js';
import { memorySyncEveryBytesFor } from '../../importer/engine/tuning.js';

const MiB = 1024 * 1024;

describe('parseMemoryLimit', () => {
  test.each<[string, number | undefined]>([
    ['536870912\n', 512 * MiB],
    ['max\n', undefined], // v2: no limit
    ['9223372036854771712\n', undefined], // v1: no limit
    ['0\n', undefined],
    ['', undefined],
    ['-1', undefined],
    ['12ab', undefined],
  ])('%j', (text, expected) => {
    expect(parseMemoryLimit(text)).toBe(expected);
  });
});

describe('ownCgroups', () => {
  test('cgroup v1 (this project machine): the memory controller\'s line', () => {
    expect(ownCgroups('9:name=systemd:/\n4:memory:/kubepods/pod1/c1\n3:cpu,cpuacct:/x\n')).toEqual({ v1: '/kubepods/pod1/c1' });
  });
  test('cgroup v2: the 0:: line', () => {
    expect(ownCgroups('0::/kubepods.slice/pod1.slice/cri-c1.scope\n')).toEqual({ v2: '/kubepods.slice/pod1.slice/cri-c1.scope' });
  });
  test('hybrid: both', () => {
    expect(ownCgroups('5:memory,other:/a\n0::/b\n')).toEqual({ v1: '/a', v2: '/b' });
  });
  test('nothing readable: neither', () => {
    expect(ownCgroups('')).toEqual({});
  });
});

test('selfAndAncestors: the deepest first, the root last', () => {
  expect(selfAndAncestors('/a/b/c')).toEqual(['/a/b/c', '/a/b', '/a', '/']);
  expect(selfAndAncestors('/')).toEqual(['/']);
});

describe('cgroupMemoryLimit over given files', () => {
  const over = (files: Record<string, string>) => (path: string): string | undefined => files[path];
  test('v2: the lowest of the own cgroup and its ancestors', () => {
    const read = over({
      '/proc/self/cgroup': '0::/pods/p1/c1\n',
      '/cg/pods/p1/c1/memory.max': '1073741824\n',
      '/cg/pods/p1/memory.max': '268435456\n',
      '/cg/pods/memory.max': 'max\n',
    });
    expect(cgroupMemoryLimit('/cg', read)).toBe(256 * MiB);
  });
  test('v2 in a cgroup namespace (path /): the mount\'s own file', () => {
    expect(cgroupMemoryLimit('/cg', over({ '/proc/self/cgroup': '0::/\n', '/cg/memory.max': '536870912\n' }))).toBe(512 * MiB);
  });
  test('v1 without a cgroup namespace: its own folder mounted at the root', () => {
    const read = over({ '/proc/self/cgroup': '4:memory:/kubepods/pod1/c1\n', '/cg/memory/memory.limit_in_bytes': '536870912\n' });
    expect(cgroupMemoryLimit('/cg', read)).toBe(512 * MiB);
  });
  test('no limit anywhere (a host, v1): none', () => {
    const read = over({ '/proc/self/cgroup': '4:memory:/\n', '/cg/memory/memory.limit_in_bytes': '9223372036854771712\n' });
    expect(cgroupMemoryLimit('/cg', read)).toBeUndefined();
  });
  test('no cgroup files at all: none', () => {
    expect(cgroupMemoryLimit('/cg', over({}))).toBeUndefined();
  });
});

describe('memorySyncEveryBytesFor: flushes that only bound memory, sized to the limit', () => {
  test.each<[string, number | undefined, number]>([
    ['no limit: never (the kernel\'s dirty limits apply)', undefined, 0],
    ['the default importer pod (512Mi): a quarter', 512 * MiB, 128 * MiB],
    ['a tiny limit: at least 16 MiB', 32 * MiB, 16 * MiB],
    ['a huge limit: at most 1 GiB', 64 * 1024 * MiB, 1024 * MiB],
  ])('%s', (_name, limit, expected) => {
    expect(memorySyncEveryBytesFor(limit)).toBe(expected);
  });
});
