/**
 * Extra HTTP headers (a DataVolume's extraHeaders / secretExtraHeaders) on every path the importer
 * reads an http source by: the one stream through node (got), the one stream written by a child
 * curl, qemu-img through nbdkit, and ranged connections. The real test server answers 401 to any
 * request without the headers, so a path that forgot them fails the import. A redirect to another
 * origin gets none of them, on any path; one back to the same origin gets them.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { mkdirSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { HttpHeader, ImportSpec } from '../../src/contract/import-spec.js';
import { withSecretHeaders } from '../../importer/sources/header-files.js';
import type { ImportTuning } from '../../importer/engine.js';
import { convertImage, expectSameDisk, makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { type RecordedRequest, startServer, type TestServer } from '../helpers/http-server.js';
import { runEngine, spec } from '../helpers/engine.js';

let dir: string;
let raw: string;
let qcow2: string;
let server: TestServer;
let other: TestServer;
const SIZE = 8 * MiB;
const token = `Bearer t-${randomBytes(12).toString('hex')}`;
const apiKey = `k-${randomBytes(12).toString('hex')}`;
const HEADERS: readonly HttpHeader[] = [
  { name: 'Authorization', value: token },
  { name: 'X-Api-Key', value: apiKey },
];
const REQUIRED = { authorization: token, 'x-api-key': apiKey };

beforeAll(async () => {
  dir = tempDir();
  raw = join(dir, 'disk.raw');
  qcow2 = join(dir, 'disk.qcow2');
  makeRawDisk(raw, SIZE);
  convertImage(raw, 'qcow2', qcow2);
  server = await startServer();
  other = await startServer();
  server.route('/disk.raw', { file: raw, require: REQUIRED });
  server.route('/disk.qcow2', { file: qcow2, require: REQUIRED });
  // Same origin (a path on the same server): the headers follow.
  server.route('/same/disk.raw', { redirect: '/disk.raw' });
  server.route('/same/disk.qcow2', { redirect: '/disk.qcow2' });
  // Another origin (another port): nothing required there, and nothing may arrive.
  other.route('/disk.raw', { file: raw });
  other.route('/disk.qcow2', { file: qcow2 });
  server.route('/away/disk.raw', { redirect: `${other.url}/disk.raw` });
  server.route('/away/disk.qcow2', { redirect: `${other.url}/disk.qcow2` });
});

afterAll(async () => {
  await server?.close();
  await other?.close();
  removeDir(dir);
});

interface Path {
  readonly name: string;
  readonly image: 'disk.raw' | 'disk.qcow2';
  readonly tuning: Partial<ImportTuning>;
  /** What shows the path was taken: the engine's result and the requests the server saw. */
  readonly taken: (via: string | undefined, requests: readonly RecordedRequest[]) => boolean;
}

const ranged = (r: RecordedRequest): boolean => r.range !== undefined && r.range !== 'bytes=0-0';
const PATHS: readonly Path[] = [
  // The one stream through node: a single GET, no child.
  { name: 'one stream (got)', image: 'disk.raw', tuning: { curlMinBytes: 0 }, taken: (via, rs) => via === undefined && rs.length === 1 },
  // curl's own request says `Accept: */*`; got sends no Accept.
  { name: 'child curl', image: 'disk.raw', tuning: { curlMinBytes: 1 }, taken: (_via, rs) => rs.some((r) => r.headers.accept === '*/*') },
  { name: 'nbdkit', image: 'disk.qcow2', tuning: { curlMinBytes: 0 }, taken: (via) => via === 'nbd' },
  {
    name: 'ranged connections',
    image: 'disk.raw',
    tuning: { curlMinBytes: 0, connections: 4, parallelMinBytes: MiB, chunkBytes: 512 * 1024 },
    taken: (_via, rs) => rs.filter(ranged).length > 1,
  },
];

const run = (endpoint: string, out: string, tuning: Partial<ImportTuning>, fields: Partial<ImportSpec> = {}) =>
  runEngine(spec({ endpoint, target: { kind: 'file', path: join(dir, out) }, ...fields }), tuning);

describe.each(PATHS)('$name', ({ name, image, tuning, taken }) => {
  const slug = name.replace(/\W+/g, '-');

  test('with the headers: imported byte for byte, every request carried them', async () => {
    const since = server.requests.length;
    const { result, error } = await run(`${server.url}/${image}`, `${slug}.img`, tuning, { extraHeaders: HEADERS });
    expect(error).toBeUndefined();
    const seen = server.requests.slice(since);
    expect(taken(result?.via, seen)).toBe(true);
    expect(expectSameDisk(join(dir, `${slug}.img`), raw, SIZE)).toBe(true);
    expect(seen.length).toBeGreaterThan(0);
    for (const r of seen) expect({ authorization: r.headers.authorization, 'x-api-key': r.headers['x-api-key'] }).toEqual(REQUIRED);
  });

  test('without them: UNAUTHORIZED, nothing written', async () => {
    const { error } = await run(`${server.url}/${image}`, `${slug}-none.img`, tuning);
    expect(error?.code).toBe('UNAUTHORIZED');
  });

  test('a redirect within the origin keeps them; one to another origin gets none, on this path too', async () => {
    const same = await run(`${server.url}/same/${image}`, `${slug}-same.img`, tuning, { extraHeaders: HEADERS });
    expect(same.error).toBeUndefined();
    expect(expectSameDisk(join(dir, `${slug}-same.img`), raw, SIZE)).toBe(true);

    const since = other.requests.length;
    const away = await run(`${server.url}/away/${image}`, `${slug}-away.img`, tuning, { extraHeaders: HEADERS });
    expect(away.error).toBeUndefined();
    expect(expectSameDisk(join(dir, `${slug}-away.img`), raw, SIZE)).toBe(true);
    const there = other.requests.slice(since);
    expect(taken(away.result?.via, there)).toBe(true);
    for (const r of there) {
      expect(r.headers.authorization).toBeUndefined();
      expect(r.headers['x-api-key']).toBeUndefined();
    }
  });
});

describe('header lines are checked before any request', () => {
  test.each([
    ['a name with a space', { name: 'X Api', value: 'secret-1f2e' }],
    ['a line break in the value', { name: 'X-Api', value: 'secret-3d4c\r\nInjected: yes' }],
    ['an empty value', { name: 'X-Api', value: '' }],
  ])('%s: INVALID_SPEC, the server never asked, the value not in the message', async (_what, header) => {
    const since = server.requests.length;
    const attempt = async () => run(`${server.url}/disk.raw`, 'bad.img', {}, { extraHeaders: [header] });
    const { error } = await attempt().catch((err: Error) => ({ error: err as { code?: string; message: string } }));
    expect(error?.code).toBe('INVALID_SPEC');
    expect(error?.message).not.toContain(header.value || '\u0000');
    expect(server.requests.length).toBe(since);
  });
});

describe('secretExtraHeaders: the mounted Secrets as the kubelet lays them out', () => {
  test('every key of every Secret is a header, read before the import; the import succeeds with them', async () => {
    const mount = join(dir, 'extraheaders');
    // A Secret volume: keys are symlinks into ..data, itself a symlink to a timestamped directory.
    for (const [n, keys] of [['0', { auth: `Authorization: ${token}\n` }], ['1', { key: `X-Api-Key: ${apiKey}` }]] as const) {
      const stamp = join(mount, n, '..2026_12_01_18_00_00.1');
      mkdirSync(stamp, { recursive: true });
      symlinkSync('..2026_12_01_18_00_00.1', join(mount, n, '..data'));
      for (const [key, text] of Object.entries(keys)) {
        writeFileSync(join(stamp, key), text);
        symlinkSync(join('..data', key), join(mount, n, key));
      }
    }
    const decoded = await withSecretHeaders(spec({ endpoint: `${server.url}/disk.raw`, target: { kind: 'file', path: join(dir, 'secret.img') }, secretHeadersDir: mount }));
    expect(decoded.extraHeaders).toEqual(HEADERS);
    expect(decoded.secretHeadersDir).toBeUndefined();
    const { error } = await runEngine(decoded, { curlMinBytes: 1 });
    expect(error).toBeUndefined();
  });

  test('a key that is not one header line: INVALID_SPEC naming the Secret and key, not the line', async () => {
    const mount = join(dir, 'bad-extraheaders');
    mkdirSync(join(mount, '0'), { recursive: true });
    writeFileSync(join(mount, '0', 'token'), `${token}\n`);
    const failed = await withSecretHeaders(spec({ endpoint: `${server.url}/disk.raw`, target: { kind: 'file', path: join(dir, 'x.img') }, secretHeadersDir: mount })).then(
      () => undefined,
      (err: { code: string; message: string }) => err,
    );
    expect(failed?.code).toBe('INVALID_SPEC');
    expect(failed?.message).toContain('secret extra header 0 key token');
    expect(failed?.message).not.toContain(token.slice(7));
  });
});
