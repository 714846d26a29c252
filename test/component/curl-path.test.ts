/**
 * The one stream written by a child curl (importer/engine/curl-path.ts), against the real test
 * server: raw into the target and qcow2 into scratch, byte for byte; credentials
 * and a custom CA reach curl (never its argv); a short body, a trickle, a 404; a break continued
 * over ranges; a second answer that differs from the first; an abort. The threshold is lowered
 * (`curlMinBytes`) so the small test images take this path.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { convertImage, expectSameDisk, makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { makePki } from '../helpers/tls.js';
import { runEngine, spec } from '../helpers/engine.js';

let dir: string;
let server: TestServer;
let tlsServer: TestServer;
let caFile: string;
let raw: string;
const f = (n: string): string => join(dir, n);
const CURL = { curlMinBytes: 1 };
const SIZE = 8 * MiB;

beforeAll(async () => {
  dir = tempDir();
  raw = f('disk.raw');
  makeRawDisk(raw, SIZE);
  convertImage(raw, 'qcow2', f('disk.qcow2'));
  server = await startServer();
  server.route('/disk.raw', { file: raw, ranges: false });
  server.route('/disk.qcow2', { file: f('disk.qcow2'), ranges: false });
  const pki = makePki(dir);
  caFile = pki.caFile;
  tlsServer = await startServer({ tls: { key: pki.key, cert: pki.cert } });
});

afterAll(async () => {
  await server?.close();
  await tlsServer?.close();
  removeDir(dir);
});

const requestsTo = (s: TestServer, path: string, since = 0) => s.requests.slice(since).filter((r) => r.path === path);

describe('curl writes the one stream', () => {
  test('raw without Range: the same bytes, the announced size, one GET to sniff and one by curl', async () => {
    const since = server.requests.length;
    const out = f('raw.img');
    const { result, error, snapshots } = await runEngine(spec({ endpoint: `${server.url}/disk.raw`, target: { kind: 'file', path: out } }), CURL);
    expect(error).toBeUndefined();
    expect(result?.diskSize).toBe(SIZE);
    expect(expectSameDisk(out, raw, SIZE)).toBe(true);
    expect(statSync(out).size).toBe(SIZE);
    expect(requestsTo(server, '/disk.raw', since)).toHaveLength(2);
    expect(snapshots.at(-1)?.percent).toBe(100);
  });

  test('below the threshold node reads it, as before (one GET)', async () => {
    const since = server.requests.length;
    const { error } = await runEngine(spec({ endpoint: `${server.url}/disk.raw`, target: { kind: 'file', path: f('node.img') } }), { curlMinBytes: SIZE + 1 });
    expect(error).toBeUndefined();
    expect(requestsTo(server, '/disk.raw', since)).toHaveLength(1);
  });

  test('qcow2 without Range: curl fills scratch, qemu-img converts', async () => {
    const out = f('q.img');
    const { result, error } = await runEngine(spec({ endpoint: `${server.url}/disk.qcow2`, target: { kind: 'file', path: out }, scratchDir: f('scratch') }), CURL);
    expect(error).toBeUndefined();
    expect(result?.via).toBe('scratch');
    expect(expectSameDisk(out, raw, SIZE)).toBe(true);
  });

  test('a capacity smaller than the image: TARGET_TOO_SMALL, nothing left behind', async () => {
    const out = f('small.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/disk.raw`, target: { kind: 'file', path: out }, capacity: 4 * MiB }), CURL);
    expect(error?.code).toBe('TARGET_TOO_SMALL');
    expect(existsSync(out)).toBe(false);
    expect(existsSync(`${out}.ferry-partial`)).toBe(false);
  });

  test('https with a custom CA and basic auth: curl trusts the bundle and sends the credentials', async () => {
    tlsServer.route('/private.raw', { file: raw, ranges: false, auth: { user: 'ferry', pass: 'pw "with" spaces\\' } });
    const out = f('tls.img');
    const { error } = await runEngine(
      spec({ endpoint: `${tlsServer.url}/private.raw`, target: { kind: 'file', path: out }, caPath: caFile, credentials: { username: 'ferry', password: 'pw "with" spaces\\' } }),
      CURL,
    );
    expect(error).toBeUndefined();
    expect(expectSameDisk(out, raw, SIZE)).toBe(true);
    const requests = requestsTo(tlsServer, '/private.raw');
    expect(requests.length).toBeGreaterThanOrEqual(2);
    expect(requests.every((r) => r.authorization === `Basic ${Buffer.from('ferry:pw "with" spaces\\').toString('base64')}`)).toBe(true);
  });

  test('https without the CA: TLS_ERROR (curl trusts what node trusts, not more)', async () => {
    tlsServer.route('/open.raw', { file: raw, ranges: false });
    const { error } = await runEngine(spec({ endpoint: `${tlsServer.url}/open.raw`, target: { kind: 'file', path: f('tls-no-ca.img') } }), CURL);
    expect(error?.code).toBe('TLS_ERROR');
  });
});

describe('curl: when the transfer goes wrong', () => {
  test('a body shorter than announced: TRUNCATED (retryable), nothing left behind', async () => {
    server.route('/short.raw', { file: raw, lieExtra: 4096 });
    const out = f('short.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/short.raw`, target: { kind: 'file', path: out } }), { ...CURL, attempts: 1, resumeAttempts: 0 });
    expect(error?.code).toBe('TRUNCATED');
    expect(error?.retryable).toBe(true);
    expect(existsSync(out)).toBe(false);
  });

  test('a trickle after the first bytes: the minimum speed (curl\'s own) fails it in bounded time', async () => {
    server.route('/trickle.raw', { file: raw, ranges: false, trickle: { after: 256 * 1024, bytes: 1, everyMs: 200 } });
    const started = performance.now();
    const { error } = await runEngine(spec({ endpoint: `${server.url}/trickle.raw`, target: { kind: 'file', path: f('trickle.img') } }), {
      ...CURL,
      attempts: 1,
      resumeAttempts: 0,
      http: { connectMs: 2000, firstByteMs: 2000, idleMs: 30_000, minSpeedBytes: 64 * 1024, minSpeedWindowMs: 1000 },
    });
    expect(error?.code).toBe('SOURCE_UNAVAILABLE');
    expect(error?.details.reason).toBe('too-slow');
    expect(error?.retryable).toBe(true);
    expect((performance.now() - started) / 1000).toBeLessThan(10);
  });

  test('a connection cut mid-body with Range: continued from the bytes in the file over ranges, byte for byte', async () => {
    server.route('/cut.raw', { file: raw, closeAfter: 3 * MiB, times: 2 });
    const since = server.requests.length;
    const out = f('cut.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/cut.raw`, target: { kind: 'file', path: out } }), { ...CURL, attempts: 1 });
    expect(error).toBeUndefined();
    expect(expectSameDisk(out, raw, SIZE)).toBe(true);
    const ranges = requestsTo(server, '/cut.raw', since).map((r) => r.range);
    expect(ranges.slice(2).length).toBeGreaterThanOrEqual(1);
    expect(ranges.slice(2).every((r) => /^bytes=\d+-\d+$/.test(r ?? ''))).toBe(true);
  });
});

describe('curl: a second answer unlike the first (a server of our own)', () => {
  let other: Server;
  let base: string;
  const hits = new Map<string, number>();
  beforeAll(async () => {
    // The first request gets the raw image; every later one the qcow2 (another image, same size).
    const first = readFileSync(raw);
    const later = Buffer.concat([readFileSync(f('disk.qcow2'))]).subarray(0, SIZE);
    const body = Buffer.concat([later, Buffer.alloc(SIZE - later.length)]);
    other = createServer((req, res) => {
      const hit = (hits.get(req.url ?? '') ?? 0) + 1;
      hits.set(req.url ?? '', hit);
      if (hit > 1 && req.url === '/gone.raw') {
        res.writeHead(404, { 'content-length': 0 });
        res.end();
        return;
      }
      res.writeHead(200, { 'content-length': SIZE, 'content-type': 'application/octet-stream' });
      res.end(hit === 1 ? first : body);
    });
    await new Promise<void>((resolve) => other.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(other.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    await new Promise<void>((resolve) => other.close(() => resolve()));
  });

  test('the first bytes must match the ones the format was detected from: SOURCE_UNAVAILABLE, nothing left behind', async () => {
    const out = f('swapped.img');
    const { error } = await runEngine(spec({ endpoint: `${base}/disk.raw`, target: { kind: 'file', path: out } }), { ...CURL, attempts: 1 });
    expect(error?.code).toBe('SOURCE_UNAVAILABLE');
    expect(error?.message).toMatch(/other bytes on a second request/);
    expect(hits.get('/disk.raw')).toBe(2);
    expect(existsSync(out)).toBe(false);
  });

  test('gone by curl\'s request (404): SOURCE_NOT_FOUND, not retried', async () => {
    const { error } = await runEngine(spec({ endpoint: `${base}/gone.raw`, target: { kind: 'file', path: f('gone.img') } }), CURL);
    expect(error?.code).toBe('SOURCE_NOT_FOUND');
    expect(hits.get('/gone.raw')).toBe(2);
  });
});

describe('curl: an abort', () => {
  test('stops curl and removes the partial file: INTERRUPTED', async () => {
    server.route('/slow.raw', { file: raw, ranges: false, trickle: { after: MiB, bytes: 64 * 1024, everyMs: 200 } });
    const out = f('aborted.img');
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), 500);
    const { error } = await runEngine(spec({ endpoint: `${server.url}/slow.raw`, target: { kind: 'file', path: out } }), CURL, { signal: controller.signal });
    clearTimeout(timer);
    expect(error?.code).toBe('INTERRUPTED');
    expect(existsSync(out)).toBe(false);
    expect(existsSync(`${out}.ferry-partial`)).toBe(false);
    expect(statSync(dir).isDirectory()).toBe(true);
  });
});

describe('curl into the decoder: a raw image in one xz or zstd layer', () => {
  let corrupt: string;
  beforeAll(() => {
    execFileSync('sh', ['-c', `xz -3 -c ${raw} > ${f('disk.raw.xz')} && zstd -q -3 -c ${raw} > ${f('disk.raw.zst')}`]);
    // One byte flipped well past the first 256 KiB the format is detected from: the block's
    // check fails only once the decoder gets there.
    const bytes = readFileSync(f('disk.raw.xz'));
    const at = Math.floor(bytes.length * 0.75);
    bytes[at] = (bytes[at] ?? 0) ^ 0xff;
    corrupt = f('corrupt.raw.xz');
    writeFileSync(corrupt, bytes);
    for (const name of ['disk.raw.xz', 'disk.raw.zst']) server.route(`/${name}`, { file: f(name), ranges: false });
    server.route('/corrupt.raw.xz', { file: corrupt, ranges: false });
  });

  test.each([['disk.raw.xz', 'xz'], ['disk.raw.zst', 'zstd']])('%s: one GET to sniff, one by curl, the decoded disk byte for byte', async (name, decoder) => {
    const since = server.requests.length;
    const out = f(`dec-${name}.img`);
    const { result, error, logs, snapshots } = await runEngine(spec({ endpoint: `${server.url}/${name}`, target: { kind: 'file', path: out } }), CURL);
    expect(error).toBeUndefined();
    expect(result).toMatchObject({ via: 'decoder', diskSize: SIZE });
    expect(expectSameDisk(out, raw, SIZE)).toBe(true);
    expect(requestsTo(server, `/${name}`, since)).toHaveLength(2);
    expect(logs.filter((l) => l.msg === 'one stream, fetched by curl into the decoder')).toEqual([expect.objectContaining({ decoder })]);
    expect(snapshots.at(-1)?.percent).toBe(100);
  });

  test('with a checksum node reads every byte: the decoder is fed by node (one GET)', async () => {
    const since = server.requests.length;
    const sha = execFileSync('sha256sum', [f('disk.raw.xz')], { encoding: 'utf8' }).split(' ')[0];
    const out = f('dec-sum.img');
    const { result, error } = await runEngine(spec({ endpoint: `${server.url}/disk.raw.xz`, target: { kind: 'file', path: out }, checksum: { algorithm: 'sha256', hex: sha ?? '' } }), CURL);
    expect(error).toBeUndefined();
    expect(result?.via).toBe('decoder');
    expect(requestsTo(server, '/disk.raw.xz', since)).toHaveLength(1);
    expect(expectSameDisk(out, raw, SIZE)).toBe(true);
  });

  test('corrupt data past the first bytes: INVALID_IMAGE from the decoder, nothing left behind', async () => {
    const out = f('dec-corrupt.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/corrupt.raw.xz`, target: { kind: 'file', path: out } }), { ...CURL, attempts: 1 });
    expect(error?.code).toBe('INVALID_IMAGE');
    expect(error?.message).toMatch(/xz could not decompress/);
    expect(existsSync(out)).toBe(false);
    expect(existsSync(`${out}.ferry-partial`)).toBe(false);
  });

  test('more decoded bytes than the capacity: TARGET_TOO_SMALL (the kernel stops the decoder), nothing left behind', async () => {
    const out = f('dec-small.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/disk.raw.xz`, target: { kind: 'file', path: out }, capacity: 4 * MiB }), { ...CURL, attempts: 1 });
    expect(error?.code).toBe('TARGET_TOO_SMALL');
    expect(existsSync(out)).toBe(false);
    expect(existsSync(`${out}.ferry-partial`)).toBe(false);
  });

  test('a body shorter than announced: TRUNCATED (retryable) even though the xz stream it held was whole', async () => {
    server.route('/short.raw.xz', { file: f('disk.raw.xz'), lieExtra: 4096 });
    const out = f('dec-short.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/short.raw.xz`, target: { kind: 'file', path: out } }), { ...CURL, attempts: 1, resumeAttempts: 0 });
    expect(error?.code).toBe('TRUNCATED');
    expect(error?.retryable).toBe(true);
    expect(existsSync(out)).toBe(false);
  });

  test('an abort stops curl and the decoder: INTERRUPTED, nothing left behind, no child left running', async () => {
    server.route('/slow.raw.xz', { file: f('disk.raw.xz'), ranges: false, trickle: { after: 300 * 1024, bytes: 16 * 1024, everyMs: 200 } });
    const out = f('dec-aborted.img');
    const controller = new AbortController();
    const timer = setTimeout(() => controller.abort(), 700);
    const { error } = await runEngine(spec({ endpoint: `${server.url}/slow.raw.xz`, target: { kind: 'file', path: out } }), CURL, { signal: controller.signal });
    clearTimeout(timer);
    expect(error?.code).toBe('INTERRUPTED');
    expect(existsSync(out)).toBe(false);
    expect(existsSync(`${out}.ferry-partial`)).toBe(false);
    const children = execFileSync('ps', ['-o', 'comm=', '--ppid', String(process.pid)], { encoding: 'utf8' }).split('\n').filter((c) => c === 'curl' || c === 'xz');
    expect(children).toEqual([]);
  });
});
