/** The HTTP source against servers that fail the ways real ones do. */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { convertImage, expectSameDisk, makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { makePki } from '../helpers/tls.js';
import { runEngine, spec } from '../helpers/engine.js';

let dir: string;
let raw: string;
let qcow2: string;
let server: TestServer;
let tlsServer: TestServer;
let caFile: string;
let proxy: TestProxy;

beforeAll(async () => {
  dir = tempDir();
  raw = join(dir, 'disk.raw');
  qcow2 = join(dir, 'disk.qcow2');
  makeRawDisk(raw, 4 * MiB);
  convertImage(raw, 'qcow2', qcow2);
  server = await startServer();
  const pki = makePki(dir);
  caFile = pki.caFile;
  tlsServer = await startServer({ tls: { key: pki.key, cert: pki.cert } });
  tlsServer.route('/disk.raw', { file: raw });
  proxy = await startProxy();
});

afterAll(async () => {
  await server?.close();
  await tlsServer?.close();
  await proxy?.close();
  removeDir(dir);
});

/** No completed disk and no leftovers next to where it would have been. */
function nothingWritten(out: string): boolean {
  return !existsSync(out) && !readdirSync(dir).some((n) => n.startsWith(`${out.split('/').at(-1)}.`));
}

function hits(path: string): number {
  return server.requests.filter((r) => r.path === path).length;
}

describe('http source failures', () => {
  test('404 fails at once with SOURCE_NOT_FOUND', async () => {
    const out = join(dir, 'a.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/missing.img`, target: { kind: 'file', path: out } }));
    expect(error?.code).toBe('SOURCE_NOT_FOUND');
    expect(error?.retryable).toBe(false);
    expect(hits('/missing.img')).toBe(1);
    expect(nothingWritten(out)).toBe(true);
  });

  test('401 without credentials is UNAUTHORIZED; basic auth gets through', async () => {
    server.route('/auth.raw', { file: raw, auth: { user: 'ferry', pass: 's3cret' } });
    const out = join(dir, 'auth.img');
    const denied = await runEngine(spec({ endpoint: `${server.url}/auth.raw`, target: { kind: 'file', path: out } }));
    expect(denied.error?.code).toBe('UNAUTHORIZED');
    expect(hits('/auth.raw')).toBe(1);
    const wrong = await runEngine(spec({ endpoint: `${server.url}/auth.raw`, target: { kind: 'file', path: out }, credentials: { username: 'ferry', password: 'nope' } }));
    expect(wrong.error?.code).toBe('UNAUTHORIZED');
    const ok = await runEngine(spec({ endpoint: `${server.url}/auth.raw`, target: { kind: 'file', path: out }, credentials: { username: 'ferry', password: 's3cret' } }));
    expect(ok.error).toBeUndefined();
    expect(expectSameDisk(out, raw, 4 * MiB)).toBe(true);
  });

  test('503 twice, then 200: retried with backoff and completes', async () => {
    server.route('/flaky.raw', { file: raw, failFirst: 2 });
    const out = join(dir, 'flaky.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/flaky.raw`, target: { kind: 'file', path: out } }));
    expect(error).toBeUndefined();
    expect(hits('/flaky.raw')).toBe(3);
    expect(expectSameDisk(out, raw, 4 * MiB)).toBe(true);
  });

  test('503 forever gives up after the configured attempts with SOURCE_UNAVAILABLE', async () => {
    server.route('/down.raw', { status: 503 });
    const out = join(dir, 'down.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/down.raw`, target: { kind: 'file', path: out } }), { attempts: 4 });
    expect(error?.code).toBe('SOURCE_UNAVAILABLE');
    expect(error?.retryable).toBe(true);
    expect(hits('/down.raw')).toBe(4);
    expect(nothingWritten(out)).toBe(true);
  });

  test('without Range support, a connection closed early is TRUNCATED, and a retry after one early close completes', async () => {
    server.route('/cut.raw', { file: raw, closeAfter: MiB, ranges: false });
    const out = join(dir, 'cut.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/cut.raw`, target: { kind: 'file', path: out } }));
    expect(error?.code).toBe('TRUNCATED');
    expect(nothingWritten(out)).toBe(true);

    server.route('/cut-once.raw', { file: raw, closeAfter: MiB, times: 1, ranges: false });
    const out2 = join(dir, 'cut-once.img');
    const second = await runEngine(spec({ endpoint: `${server.url}/cut-once.raw`, target: { kind: 'file', path: out2 } }));
    expect(second.error).toBeUndefined();
    expect(expectSameDisk(out2, raw, 4 * MiB)).toBe(true);
  });

  test('with Range support, a transfer cut every MiB resumes where it stopped and completes', async () => {
    server.route('/resume.raw', { file: raw, closeAfter: MiB });
    const out = join(dir, 'resume.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/resume.raw`, target: { kind: 'file', path: out } }), { attempts: 1 });
    expect(error).toBeUndefined();
    expect(expectSameDisk(out, raw, 4 * MiB)).toBe(true);
    const ranges = server.requests.filter((r) => r.path === '/resume.raw').map((r) => r.range);
    expect(ranges[0]).toBeUndefined();
    // Each resumption starts where the bytes that arrived end (bytes the server wrote just before
    // cutting the connection may be lost in flight), always further on.
    const offsets = ranges.slice(1).map((r) => Number(/^bytes=(\d+)-$/.exec(r ?? '')?.[1]));
    expect(offsets.length).toBeGreaterThanOrEqual(3);
    for (let i = 0; i < offsets.length; i += 1) expect(offsets[i]).toBeGreaterThan(i === 0 ? 0 : (offsets[i - 1] ?? 0));
    // Nothing is fetched twice beyond what was lost in flight.
    expect(server.sent.get('/resume.raw')).toBeLessThanOrEqual(1.1 * 4 * MiB);
  });

  test('a resumed transfer still verifies the checksum over the whole image', async () => {
    const { createHash } = await import('node:crypto');
    const { readFileSync } = await import('node:fs');
    server.route('/resume-sum.raw', { file: raw, closeAfter: 1536 * 1024 });
    const good = createHash('sha256').update(readFileSync(raw)).digest('hex');
    const ok = await runEngine(spec({ endpoint: `${server.url}/resume-sum.raw`, target: { kind: 'file', path: join(dir, 'rs1.img') }, checksum: { algorithm: 'sha256', hex: good } }));
    expect(ok.error).toBeUndefined();
    const bad = await runEngine(spec({ endpoint: `${server.url}/resume-sum.raw`, target: { kind: 'file', path: join(dir, 'rs2.img') }, checksum: { algorithm: 'sha256', hex: '0'.repeat(64) } }));
    expect(bad.error?.code).toBe('CHECKSUM_MISMATCH');
  });

  test('a stalled transfer resumes after the idle timeout', async () => {
    server.route('/stall-resume.raw', { file: raw, stallAfter: 2 * MiB });
    const out = join(dir, 'stall-resume.img');
    // The stalling route stalls on every request; with resume the second request starts at 2 MiB
    // and stalls again at 4 MiB, which is the end: so it completes.
    const { error } = await runEngine(spec({ endpoint: `${server.url}/stall-resume.raw`, target: { kind: 'file', path: out } }), {
      attempts: 1,
      http: { connectMs: 2000, firstByteMs: 2000, idleMs: 300 },
    });
    expect(error).toBeUndefined();
    expect(expectSameDisk(out, raw, 4 * MiB)).toBe(true);
    const ranges = server.requests.filter((r) => r.path === '/stall-resume.raw').map((r) => r.range);
    expect(ranges[0]).toBeUndefined();
    expect(ranges.length).toBeGreaterThanOrEqual(2);
  });

  test('a Content-Length larger than the body fails, never a short disk', async () => {
    server.route('/liar.raw', { file: raw, lieExtra: 4096 });
    const out = join(dir, 'liar.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/liar.raw`, target: { kind: 'file', path: out } }), { attempts: 1 });
    // The server cuts the connection (TRUNCATED) or, if the cut is slow to show, goes silent
    // (SOURCE_UNAVAILABLE after the idle timeout); resuming at the real end cannot help either way.
    expect(['TRUNCATED', 'SOURCE_UNAVAILABLE']).toContain(error?.code);
    expect(error?.retryable).toBe(true);
    expect(nothingWritten(out)).toBe(true);
  });

  test('a stalled body hits the idle timeout', async () => {
    server.route('/stall.raw', { file: raw, stallAfter: 64 * 1024 });
    const out = join(dir, 'stall.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/stall.raw`, target: { kind: 'file', path: out } }), {
      attempts: 1,
      resumeAttempts: 0,
      http: { connectMs: 2000, firstByteMs: 2000, idleMs: 500 },
    });
    expect(error?.code).toBe('SOURCE_UNAVAILABLE');
    expect(nothingWritten(out)).toBe(true);
  });

  test('a connection refused is retryable SOURCE_UNAVAILABLE', async () => {
    const closed = await startServer();
    const url = `${closed.url}/x.raw`;
    await closed.close();
    const { error } = await runEngine(spec({ endpoint: url, target: { kind: 'file', path: join(dir, 'refused.img') } }), { attempts: 2 });
    expect(error?.code).toBe('SOURCE_UNAVAILABLE');
    expect(error?.retryable).toBe(true);
  });

  test('redirects are followed', async () => {
    server.route('/real.qcow2', { file: qcow2 });
    server.route('/moved.qcow2', { redirect: '/real.qcow2' });
    const out = join(dir, 'moved.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/moved.qcow2`, target: { kind: 'file', path: out }, scratchDir: join(dir, 'scratch') }));
    expect(error).toBeUndefined();
    expect(expectSameDisk(out, raw, 4 * MiB)).toBe(true);
  });
});

describe('tls', () => {
  test('an unknown CA is TLS_ERROR, not retried', async () => {
    const { error } = await runEngine(spec({ endpoint: `${tlsServer.url}/disk.raw`, target: { kind: 'file', path: join(dir, 'tls0.img') } }));
    expect(error?.code).toBe('TLS_ERROR');
    expect(tlsServer.requests).toHaveLength(0);
  });

  test('a custom CA file is trusted', async () => {
    const out = join(dir, 'tls1.img');
    const { error } = await runEngine(spec({ endpoint: `${tlsServer.url}/disk.raw`, target: { kind: 'file', path: out }, caPath: caFile }));
    expect(error).toBeUndefined();
    expect(expectSameDisk(out, raw, 4 * MiB)).toBe(true);
  });

  test('a CA directory (a mounted ConfigMap) is trusted', async () => {
    const out = join(dir, 'tls2.img');
    const caDir = tempDir('ferry-ca-');
    const { copyFileSync } = await import('node:fs');
    copyFileSync(caFile, join(caDir, 'ca.crt'));
    const { error } = await runEngine(spec({ endpoint: `${tlsServer.url}/disk.raw`, target: { kind: 'file', path: out }, caPath: caDir }));
    removeDir(caDir);
    expect(error).toBeUndefined();
  });

  test('a qcow2 over https with a custom CA and basic auth is read in place through nbdkit', async () => {
    tlsServer.route('/private.qcow2', { file: qcow2, auth: { user: 'ferry', pass: 'pw with spaces' } });
    const out = join(dir, 'tls-nbd.img');
    const { result, error } = await runEngine(
      spec({ endpoint: `${tlsServer.url}/private.qcow2`, target: { kind: 'file', path: out }, caPath: caFile, credentials: { username: 'ferry', password: 'pw with spaces' } }),
    );
    expect(error).toBeUndefined();
    expect(result?.via).toBe('nbd');
    expect(expectSameDisk(out, raw, 4 * MiB)).toBe(true);
    const ranged = tlsServer.requests.filter((r) => r.path === '/private.qcow2' && r.range !== undefined);
    expect(ranged.length).toBeGreaterThan(0);
    expect(ranged.every((r) => r.authorization === `Basic ${Buffer.from('ferry:pw with spaces').toString('base64')}`)).toBe(true);
  });

  test('insecure is an explicit opt-in that skips verification', async () => {
    const out = join(dir, 'tls3.img');
    const { error } = await runEngine(spec({ endpoint: `${tlsServer.url}/disk.raw`, target: { kind: 'file', path: out }, insecureTls: true }));
    expect(error).toBeUndefined();
    expect(expectSameDisk(out, raw, 4 * MiB)).toBe(true);
  });
});

describe('proxy', () => {
  test('http_proxy carries plain http; https_proxy tunnels https with CONNECT', async () => {
    server.route('/via-proxy.raw', { file: raw });
    const out = join(dir, 'proxy1.img');
    const plain = await runEngine(spec({ endpoint: `${server.url}/via-proxy.raw`, target: { kind: 'file', path: out }, proxy: { httpProxy: proxy.url } }));
    expect(plain.error).toBeUndefined();
    expect(proxy.seen).toContain(`GET ${server.url}/via-proxy.raw`);

    const out2 = join(dir, 'proxy2.img');
    const tunnel = await runEngine(spec({ endpoint: `${tlsServer.url}/disk.raw`, target: { kind: 'file', path: out2 }, caPath: caFile, proxy: { httpsProxy: proxy.url } }));
    expect(tunnel.error).toBeUndefined();
    expect(proxy.seen).toContain(`CONNECT ${new URL(tlsServer.url).host}`);
    expect(expectSameDisk(out2, raw, 4 * MiB)).toBe(true);
  });

  test('no_proxy bypasses the proxy', async () => {
    server.route('/direct.raw', { file: raw });
    const before = proxy.seen.length;
    const { error } = await runEngine(
      spec({ endpoint: `${server.url}/direct.raw`, target: { kind: 'file', path: join(dir, 'direct.img') }, proxy: { httpProxy: proxy.url, noProxy: 'example.com,127.0.0.1' } }),
    );
    expect(error).toBeUndefined();
    expect(proxy.seen.length).toBe(before);
    expect(hits('/direct.raw')).toBe(1);
  });
});
