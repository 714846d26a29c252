/** `ferry import`'s pure decisions: which source a --url names, flag bounds, what --dest stands for (#12). */

import { describe, expect, test } from '@jest/globals';
import { boundedInt, buildSpec, connectionsFlag, LIMITS, sourceOf } from '../../importer/cli-main.js';
import { localPathOf } from '../../importer/sources/file-source.js';
import { destTargetKind, type NodeKind, type PathFacts } from '../../importer/target.js';
import { codeOf, ferryErrorOf } from './helpers.js';

describe('sourceOf', () => {
  test.each([
    ['https://images.example/disk.qcow2', 'http', 'https://images.example/disk.qcow2'],
    ['HTTP://images.example/disk.qcow2', 'http', 'HTTP://images.example/disk.qcow2'],
    ['http://[::1]:8080/disk.img', 'http', 'http://[::1]:8080/disk.img'],
    ['s3://bucket/key.img', 's3', 's3://bucket/key.img'],
    ['docker://quay.io/containerdisks/fedora:40', 'registry', 'docker://quay.io/containerdisks/fedora:40'],
    ['file:///srv/images/a%20b.qcow2', 'file', '/srv/images/a b.qcow2'],
    ['file://localhost/srv/disk.img', 'file', '/srv/disk.img'],
    ['./disk.qcow2', 'file', './disk.qcow2'],
    ['/abs/disk.qcow2', 'file', '/abs/disk.qcow2'],
    // A colon in a file name is not a URL: only `scheme://` and the known schemes are.
    ['backup:2026-12-01.img', 'file', 'backup:2026-12-01.img'],
  ])('%s → %s', (url, source, endpoint) => {
    expect(sourceOf(url)).toEqual({ source, endpoint });
  });

  test.each([
    ['ftp://host/disk.img', /scheme "ftp:" is not supported; --url takes http\(s\):\/\//],
    ['sftp://host/disk.img', /scheme "sftp:"/],
    ['nbd://host/export', /scheme "nbd:"/],
    ['http://[bad/x', /not a valid URL/],
    ['http://', /not a valid URL/],
    ['https://exa mple.com/x', /not a valid URL/],
    ['http://host:65536/x', /not a valid URL/],
    ['http://host:0/x', /port 0/],
    ['https:/host/disk.img', /lacks the "\/\/"/],
    ['s3:bucket/key', /lacks the "\/\/"/],
    ['file://otherhost/disk.img', /not a local file URL/],
  ])('%s is INVALID_SPEC: %s', (url, message) => {
    const error = ferryErrorOf(() => sourceOf(url));
    expect(error.code).toBe('INVALID_SPEC');
    expect(error.message).toMatch(message);
  });
});

describe('flag bounds', () => {
  test.each([
    ['1', 1],
    ['64', 64],
    ['auto', 'auto'],
    [undefined, 'auto'],
  ] as const)('--connections %s → %s', (text, value) => {
    expect(connectionsFlag(text)).toBe(value);
  });

  test.each(['0', '65', '10000', '-1', '1.5', '', ' ', '0x10', 'many'])('--connections "%s" is INVALID_SPEC naming 1..64', (text) => {
    const error = ferryErrorOf(() => connectionsFlag(text));
    expect(error.code).toBe('INVALID_SPEC');
    expect(error.message).toContain('"auto" or an integer in 1..64');
  });

  test.each([
    ['--retries', LIMITS.retries, ['1', '100'], ['0', '101', '2.5', '1e1']],
    ['--idle-timeout', LIMITS.idleSeconds, ['1', '3600'], ['0', '3601', '99999999999']],
    ['--metrics-port', LIMITS.port, ['1', '65535'], ['0', '65536', '-80']],
  ] as const)('%s: %j in range', (name, limits, good, bad) => {
    for (const text of good) expect(boundedInt(name, text, limits, 7)).toBe(Number(text));
    for (const text of bad) expect(codeOf(() => boundedInt(name, text, limits, 7))).toBe('INVALID_SPEC');
    expect(boundedInt(name, undefined, limits, 7)).toBe(7);
  });
});

describe('what --dest stands for', () => {
  const facts = (self: NodeKind, resolved: NodeKind = self): PathFacts => ({ self, resolved });

  test.each([
    [facts('missing'), 'kubevirt', 'file'],
    [facts('file'), 'kubevirt', 'file'],
    [facts('symlink', 'file'), 'kubevirt', 'file'],
    [facts('symlink', 'missing'), 'kubevirt', 'file'],
    [facts('block device'), 'kubevirt', 'block'],
    [facts('symlink', 'block device'), 'kubevirt', 'block'],
    [facts('directory'), 'kubevirt', 'file'],
    [facts('missing'), 'archive', 'directory'],
    [facts('directory'), 'archive', 'directory'],
  ] as const)('%j with %s → %s', (at, contentType, kind) => {
    expect(destTargetKind(contentType, at, '/x')).toBe(kind);
  });

  test.each([
    [facts('character device'), 'kubevirt'],
    [facts('fifo'), 'kubevirt'],
    [facts('socket'), 'kubevirt'],
    [facts('symlink', 'character device'), 'kubevirt'],
    [facts('fifo'), 'archive'],
    [facts('block device'), 'archive'],
  ] as const)('%j with %s is INVALID_SPEC', (at, contentType) => {
    expect(codeOf(() => destTargetKind(contentType, at, '/x'))).toBe('INVALID_SPEC');
  });

  test('buildSpec makes a block target of a block device and keeps the path as given', () => {
    const spec = buildSpec({ url: 'disk.qcow2', dest: '/dev/disk/by-id/virtio-data' }, {}, facts('symlink', 'block device'));
    expect(spec.target).toEqual({ kind: 'block', path: '/dev/disk/by-id/virtio-data' });
  });

  test('--size 0 is INVALID_SPEC naming the flag', () => {
    expect(ferryErrorOf(() => buildSpec({ url: 'disk.qcow2', dest: '/tmp/x.img', size: '0' })).message).toMatch(/^--size/);
  });
});

describe('localPathOf', () => {
  test.each([
    ['file:///a%20b/c.img', '/a b/c.img'],
    ['file://localhost/c.img', '/c.img'],
    ['/abs/c.img', '/abs/c.img'],
  ])('%s → %s', (endpoint, path) => {
    expect(localPathOf(endpoint)).toBe(path);
  });

  test('a file URL naming another host is INVALID_SPEC', () => {
    expect(codeOf(() => localPathOf('file://nas/c.img'))).toBe('INVALID_SPEC');
  });
});
