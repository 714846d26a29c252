/**
 * Bounded time against servers that trickle (one byte every 200 ms never trips an idle timeout)
 * or stop mid-body: on the single stream, when resuming, over ranged connections (written at
 * offsets, or read in order by a decompressor), and through nbdkit for qemu-img. The minimum speed
 * is set small here (a 1 s window) so each case ends in seconds.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { FerryError } from '../../src/errors.js';
import { serveHttpOverNbd } from '../../importer/nbdkit.js';
import { qemuConvert, qemuInfo } from '../../importer/qemu-img.js';
import { compress, convertImage, expectSameDisk, makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { startProxy } from '../helpers/proxy.js';
import { pushImage, startRegistry, writeOciLayout } from '../helpers/registry.js';
import { runEngine, spec } from '../helpers/engine.js';

let dir: string;
let server: TestServer;
let raw: string;
let qcow2: string;
const f = (n: string): string => join(dir, n);

/** 1 KiB/s over a 1 s window; the idle timeout (5 s) is longer, so only the speed check can fire. */
const SLOW_HTTP = { connectMs: 2000, firstByteMs: 2000, idleMs: 5000, minSpeedBytes: 1024, minSpeedWindowMs: 1000 };
const ONE_SHOT = { attempts: 1, resumeAttempts: 0, http: SLOW_HTTP };

beforeAll(async () => {
  dir = tempDir();
  raw = f('disk.raw');
  qcow2 = f('disk.qcow2');
  makeRawDisk(raw, 4 * MiB);
  convertImage(raw, 'qcow2', qcow2);
  compress('gzip', raw, f('disk.raw.gz'));
  server = await startServer();
});

afterAll(async () => {
  await server?.close();
  removeDir(dir);
});

async function timed<T>(run: () => Promise<T>): Promise<{ value: T; seconds: number }> {
  const started = performance.now();
  const value = await run();
  return { value, seconds: (performance.now() - started) / 1000 };
}

function requestsTo(path: string): number {
  return server.requests.filter((r) => r.path === path).length;
}

describe('the single stream', () => {
  test('a body trickling one byte per 200 ms fails SOURCE_UNAVAILABLE (retryable) within the window, not never', async () => {
    server.route('/trickle.raw', { file: raw, trickle: { after: 64 * 1024, bytes: 1, everyMs: 200 } });
    const out = f('trickle.img');
    const { value, seconds } = await timed(() => runEngine(spec({ endpoint: `${server.url}/trickle.raw`, target: { kind: 'file', path: out } }), ONE_SHOT));
    expect(value.error?.code).toBe('SOURCE_UNAVAILABLE');
    expect(value.error?.retryable).toBe(true);
    expect(value.error?.details.reason).toBe('too-slow');
    expect(seconds).toBeLessThan(4);
    expect(existsSync(out)).toBe(false);
  });

  test('a body that trickles after each MiB is resumed where it stopped and completes', async () => {
    server.route('/trickle-resume.raw', { file: raw, trickle: { after: MiB, bytes: 1, everyMs: 200 } });
    const out = f('trickle-resume.img');
    const { value, seconds } = await timed(() =>
      runEngine(spec({ endpoint: `${server.url}/trickle-resume.raw`, target: { kind: 'file', path: out } }), { attempts: 1, resumeAttempts: 2, http: SLOW_HTTP }),
    );
    expect(value.error).toBeUndefined();
    expect(expectSameDisk(out, raw, 4 * MiB)).toBe(true);
    const ranges = server.requests.filter((r) => r.path === '/trickle-resume.raw').map((r) => r.range);
    expect(ranges[0]).toBeUndefined();
    expect(ranges.slice(1).every((r) => /^bytes=\d+-$/.test(r ?? ''))).toBe(true);
    expect(ranges.length).toBeGreaterThanOrEqual(4);
    expect(seconds).toBeLessThan(15);
  });

  test('a trickle from the first byte is not progress: resumption gives up after the allowed attempts', async () => {
    server.route('/trickle-always.raw', { file: raw, trickle: { after: 0, bytes: 1, everyMs: 200 } });
    const { value, seconds } = await timed(() =>
      runEngine(spec({ endpoint: `${server.url}/trickle-always.raw`, target: { kind: 'file', path: f('trickle-always.img') } }), { attempts: 1, resumeAttempts: 2, http: SLOW_HTTP }),
    );
    expect(value.error?.code).toBe('SOURCE_UNAVAILABLE');
    expect(value.error?.retryable).toBe(true);
    // The first request and two resumptions, each cut after one window.
    expect(requestsTo('/trickle-always.raw')).toBe(3);
    expect(seconds).toBeLessThan(8);
  });

  test('a server that stalls mid-body with no idle timeout to speak of is still cut by the window', async () => {
    server.route('/stall.raw', { file: raw, trickle: { after: 256 * 1024, stall: true } });
    const { value, seconds } = await timed(() =>
      runEngine(spec({ endpoint: `${server.url}/stall.raw`, target: { kind: 'file', path: f('stall.img') } }), { ...ONE_SHOT, http: { ...SLOW_HTTP, idleMs: 60_000 } }),
    );
    expect(value.error?.code).toBe('SOURCE_UNAVAILABLE');
    expect(seconds).toBeLessThan(4);
  });

  test('a fast body is not disturbed by the check', async () => {
    server.route('/fast.raw', { file: raw });
    const { error } = await runEngine(spec({ endpoint: `${server.url}/fast.raw`, target: { kind: 'file', path: f('fast.img') } }), { ...ONE_SHOT, http: { ...SLOW_HTTP, minSpeedBytes: 64 * 1024 } });
    expect(error).toBeUndefined();
    expect(expectSameDisk(f('fast.img'), raw, 4 * MiB)).toBe(true);
  });
});

describe('ranged connections', () => {
  const RANGED = { connections: 2, parallelMinBytes: MiB, chunkBytes: 512 * 1024, streamChunkBytes: 256 * 1024, attempts: 1, resumeAttempts: 1, http: SLOW_HTTP };

  test('ranges written at offsets: trickling ranges are retried, then fail SOURCE_UNAVAILABLE in bounded time', async () => {
    server.route('/ranged-trickle.raw', { file: raw, trickle: { after: 16 * 1024, bytes: 1, everyMs: 200, ranged: true } });
    const out = f('ranged-trickle.img');
    const { value, seconds } = await timed(() => runEngine(spec({ endpoint: `${server.url}/ranged-trickle.raw`, target: { kind: 'file', path: out } }), RANGED));
    expect(value.error?.code).toBe('SOURCE_UNAVAILABLE');
    expect(value.error?.retryable).toBe(true);
    expect(server.requests.some((r) => r.path === '/ranged-trickle.raw' && r.range !== undefined)).toBe(true);
    expect(seconds).toBeLessThan(8);
    expect(existsSync(out)).toBe(false);
  });

  test('ranges read in order by a decompressor: a trickling range fails SOURCE_UNAVAILABLE in bounded time', async () => {
    server.route('/ranged-trickle.raw.gz', { file: f('disk.raw.gz'), trickle: { after: 16 * 1024, bytes: 1, everyMs: 200, ranged: true } });
    const { value, seconds } = await timed(() =>
      runEngine(spec({ endpoint: `${server.url}/ranged-trickle.raw.gz`, target: { kind: 'file', path: f('ranged-trickle-gz.img') } }), { ...RANGED, parallelMinBytes: 256 * 1024 }),
    );
    expect(value.error?.code).toBe('SOURCE_UNAVAILABLE');
    expect(server.requests.some((r) => r.path === '/ranged-trickle.raw.gz' && r.range !== undefined)).toBe(true);
    expect(seconds).toBeLessThan(8);
  });
});

describe('object store and registry', () => {
  test('S3: a GetObject body that trickles fails SOURCE_UNAVAILABLE (retryable) in bounded time', async () => {
    // A plain HTTP server answers a path-style, unsigned GetObject as S3 would.
    server.route('/bucket/trickle.raw', { file: raw, trickle: { after: 0, bytes: 1, everyMs: 200 } });
    const { value, seconds } = await timed(() =>
      runEngine(spec({ source: 's3', endpoint: 's3://bucket/trickle.raw', s3Endpoint: server.url, target: { kind: 'file', path: f('s3-trickle.img') } }), { attempts: 1, resumeAttempts: 1, http: SLOW_HTTP }),
    );
    expect(value.error?.code).toBe('SOURCE_UNAVAILABLE');
    expect(value.error?.retryable).toBe(true);
    // The first GetObject and one ranged resumption, both cut.
    const gets = server.requests.filter((r) => r.path === '/bucket/trickle.raw');
    expect(gets.length).toBe(2);
    expect(gets[1]?.range).toMatch(/^bytes=\d+-$/);
    expect(seconds).toBeLessThan(6);
  });

  test('registry: a blob that trickles through a slow link fails SOURCE_UNAVAILABLE (retryable) in bounded time', async () => {
    const registry = await startRegistry(f('registry'));
    const proxy = await startProxy({ trickle: { match: /\/blobs\/sha256:/, after: 0, bytes: 1, everyMs: 200 } });
    try {
      const layout = f('layout');
      await writeOciLayout(layout, 'v1', { layers: [{ compression: 'none', entries: [{ name: 'disk/', type: 'directory' }, { name: 'disk/disk.img', file: raw }] }] });
      await pushImage(layout, 'v1', registry, 'slow/disk', {});
      const { value, seconds } = await timed(() =>
        runEngine(
          spec({ source: 'registry', endpoint: `docker://${registry.host}/slow/disk:v1`, insecureTls: true, proxy: { httpProxy: proxy.url }, scratchDir: f('scratch'), target: { kind: 'file', path: f('registry-trickle.img') } }),
          { attempts: 1, resumeAttempts: 1, http: SLOW_HTTP },
        ),
      );
      expect(value.error?.code).toBe('SOURCE_UNAVAILABLE');
      expect(value.error?.retryable).toBe(true);
      expect(proxy.seen.some((r) => r.includes('/blobs/sha256:'))).toBe(true);
      expect(seconds).toBeLessThan(8);
    } finally {
      await proxy.close();
      await registry.stop();
    }
  });
});

describe('nbdkit, read in place by qemu-img', () => {
  /**
   * What the engine does with an export: qemu-img info, then convert, and the export stopped in
   * `finally`, where its own verdict on the source stands over qemu-img's.
   */
  async function importThroughNbd(path: string, out: string): Promise<{ error?: FerryError; seconds: number }> {
    const started = performance.now();
    try {
      const nbd = await serveHttpOverNbd({
        url: `${server.url}${path}`,
        insecureTls: false,
        // The curl timeout alone (10 s per request, retried five times) is what used to apply.
        timeoutSeconds: 10,
        timeouts: { ...SLOW_HTTP, idleMs: 10_000, minSpeedBytes: 64 * 1024 },
      });
      try {
        await qemuInfo(nbd.uri, 'qcow2');
        await qemuConvert({ source: nbd.uri, sourceFormat: 'qcow2', target: out, targetExists: false });
      } finally {
        await nbd.stop();
      }
      return { seconds: (performance.now() - started) / 1000 };
    } catch (err) {
      return { error: err as FerryError, seconds: (performance.now() - started) / 1000 };
    }
  }

  test('a healthy server converts as before', async () => {
    server.route('/nbd-ok.qcow2', { file: qcow2 });
    const { error } = await importThroughNbd('/nbd-ok.qcow2', f('nbd-ok.img'));
    expect(error).toBeUndefined();
    expect(expectSameDisk(f('nbd-ok.img'), raw, 4 * MiB)).toBe(true);
  });

  test('ranged reads that trickle fail SOURCE_UNAVAILABLE (retryable) within the window', async () => {
    server.route('/nbd-trickle.qcow2', { file: qcow2, trickle: { after: 0, bytes: 1, everyMs: 200, ranged: true } });
    const { error, seconds } = await importThroughNbd('/nbd-trickle.qcow2', f('nbd-trickle.img'));
    expect(error?.code).toBe('SOURCE_UNAVAILABLE');
    expect(error?.retryable).toBe(true);
    expect(server.requests.some((r) => r.path === '/nbd-trickle.qcow2' && r.range !== undefined)).toBe(true);
    expect(seconds).toBeLessThan(6);
  });

  test('a server that stops mid-body fails SOURCE_UNAVAILABLE within the bound, no hang', async () => {
    server.route('/nbd-stall.qcow2', { file: qcow2, trickle: { after: 200 * 1024, stall: true, ranged: true } });
    const { error, seconds } = await importThroughNbd('/nbd-stall.qcow2', f('nbd-stall.img'));
    expect(error?.code).toBe('SOURCE_UNAVAILABLE');
    expect(error?.retryable).toBe(true);
    expect(seconds).toBeLessThan(6);
  });
});
