/** Parallel ranged downloads: integrity, resumption of a broken chunk, checksum, fallbacks. */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { createHash } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { compress, convertImage, expectSameDisk, makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { runEngine, spec } from '../helpers/engine.js';

let dir: string;
let server: TestServer;
let raw: string;
const f = (n: string): string => join(dir, n);
const PARALLEL = { connections: 4, parallelMinBytes: MiB, chunkBytes: 512 * 1024 };

beforeAll(async () => {
  dir = tempDir();
  raw = f('disk.raw');
  makeRawDisk(raw, 8 * MiB);
  convertImage(raw, 'qcow2', f('disk.qcow2'));
  compress('gzip', raw, f('disk.raw.gz'));
  compress('zstd', raw, f('disk.raw.zst'));
  server = await startServer();
  server.route('/disk.raw', { file: raw });
  server.route('/disk.qcow2', { file: f('disk.qcow2') });
  server.route('/disk.raw.gz', { file: f('disk.raw.gz') });
  server.route('/disk.raw.zst', { file: f('disk.raw.zst') });
  server.route('/norange.raw', { file: raw, ranges: false });
  // The Python server's stall, where nbdkit meets it every time: its second request, the opening
  // 4 KiB read (nbdkit 1.32's curl plugin asks for one byte more than it reads: bytes=0-4096).
  server.route('/stall-open.raw', { file: raw, delay: { range: /^bytes=0-409[56]$/, ms: 60 } });
  // The same stall as node meets it: a small request on a reused connection. For a raw image the
  // tail's read (its last 512 bytes) is that request; for a qcow2 the one-byte reuse probe.
  server.route('/stall-reuse.raw', { file: raw, delay: { range: new RegExp(`^bytes=(1-1|${8 * MiB - 512}-${8 * MiB - 1})$`), ms: 60, reused: true } });
  server.route('/stall-reuse.qcow2', { file: f('disk.qcow2'), delay: { range: /^bytes=1-1$/, ms: 60, reused: true } });
  server.route('/cutting.raw', { file: raw, closeAfter: 200 * 1024 });
});

afterAll(async () => {
  await server?.close();
  removeDir(dir);
});

function rangesOf(path: string, since: number): string[] {
  return server.requests.slice(since).filter((r) => r.path === path && r.range !== undefined).map((r) => r.range as string);
}

describe('parallel ranged download', () => {
  test('a raw image arrives in 512 KiB ranges over several connections, byte for byte', async () => {
    const since = server.requests.length;
    const out = f('par.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/disk.raw`, target: { kind: 'file', path: out } }), PARALLEL);
    expect(error).toBeUndefined();
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
    const ranges = rangesOf('/disk.raw', since);
    expect(ranges).toHaveLength(16);
    expect(new Set(ranges)).toEqual(new Set(Array.from({ length: 16 }, (_, i) => `bytes=${i * 512 * 1024}-${(i + 1) * 512 * 1024 - 1}`)));
  });

  test('a checksum is verified over the whole image; a mismatch leaves no disk', async () => {
    const good = createHash('sha512').update(readFileSync(raw)).digest('hex');
    const ok = await runEngine(spec({ endpoint: `${server.url}/disk.raw`, target: { kind: 'file', path: f('sum.img') }, checksum: { algorithm: 'sha512', hex: good } }), PARALLEL);
    expect(ok.error).toBeUndefined();
    const bad = await runEngine(spec({ endpoint: `${server.url}/disk.raw`, target: { kind: 'file', path: f('badsum.img') }, checksum: { algorithm: 'sha512', hex: '0'.repeat(128) } }), PARALLEL);
    expect(bad.error?.code).toBe('CHECKSUM_MISMATCH');
    expect(() => readFileSync(f('badsum.img'))).toThrow();
  });

  test('chunks whose connection breaks continue where they stopped', async () => {
    const out = f('cut.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/cutting.raw`, target: { kind: 'file', path: out } }), PARALLEL);
    expect(error).toBeUndefined();
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
    expect(server.sent.get('/cutting.raw')).toBeLessThanOrEqual(1.5 * 8 * MiB);
  });

  test('a qcow2 with a checksum is downloaded in parallel to scratch, verified, then converted', async () => {
    const sum = createHash('sha256').update(readFileSync(f('disk.qcow2'))).digest('hex');
    const since = server.requests.length;
    const out = f('q.img');
    const { result, error } = await runEngine(
      spec({ endpoint: `${server.url}/disk.qcow2`, target: { kind: 'file', path: out }, scratchDir: f('scratch'), checksum: { algorithm: 'sha256', hex: sum } }),
      PARALLEL,
    );
    expect(error).toBeUndefined();
    expect(result?.via).toBe('scratch');
    expect(rangesOf('/disk.qcow2', since).length).toBeGreaterThan(1);
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
  });

  test('servers without Range use one stream', async () => {
    const since = server.requests.length;
    const b = await runEngine(spec({ endpoint: `${server.url}/norange.raw`, target: { kind: 'file', path: f('nr.img') } }), PARALLEL);
    expect(b.error).toBeUndefined();
    expect(expectSameDisk(f('nr.img'), raw, 8 * MiB)).toBe(true);
    expect(rangesOf('/norange.raw', since)).toEqual([]);
  });
});

describe('connections auto: chosen from the measured request latency', () => {
  // The measured costs are pinned by the thresholds (a loaded test machine measures anything):
  // near tests allow any chunk read for nbd, far tests count any chunk read as far.
  const AUTO = {
    connections: 'auto' as const,
    parallelMinBytes: MiB,
    chunkBytes: 512 * 1024,
    rawViaNbdMinBytes: MiB,
    autoConnections: 4,
    nbdMaxChunkMs: 60_000,
    nbdReadMaxMs: 60_000,
    // Any request on a reused connection counts as no stall (the stall tests set their own limit).
    reuseStallMs: 60_000,
    farChunkMs: -1,
    serverBoundRatio: Infinity,
    probeChunkBytes: 64 * 1024,
  };
  const CHUNK_PROBE = 'bytes=0-65535';
  const probes = (path: string, since: number): number => rangesOf(path, since).filter((r) => r === 'bytes=0-0').length;
  const chunkProbes = (path: string, since: number): number => rangesOf(path, since).filter((r) => r === CHUNK_PROBE).length;
  const notProbe = (r: string | undefined): boolean => r !== 'bytes=0-0' && r !== CHUNK_PROBE;

  test('a nearby server (latency within nearLatencyMs): qemu-img reads in place through nbdkit, after one one-byte probe (within the bound: no more sent)', async () => {
    const since = server.requests.length;
    const out = f('auto-near.img');
    const { result, error } = await runEngine(spec({ endpoint: `${server.url}/disk.raw`, target: { kind: 'file', path: out } }), { ...AUTO, nearLatencyMs: 60_000 });
    expect(error).toBeUndefined();
    expect(result?.via).toBe('nbd');
    expect(probes('/disk.raw', since)).toBe(1);
    // farChunkMs -1: no chunk read is within both chunk thresholds, so all three are sent.
    expect(chunkProbes('/disk.raw', since)).toBe(3);
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
  });

  test('a chunk read within both chunk thresholds ends the chunk probe too: one of each', async () => {
    const since = server.requests.length;
    const out = f('auto-near-one.img');
    const { result, error } = await runEngine(spec({ endpoint: `${server.url}/disk.raw`, target: { kind: 'file', path: out } }), { ...AUTO, nearLatencyMs: 60_000, farChunkMs: 60_000 });
    expect(error).toBeUndefined();
    expect(result?.via).toBe('nbd');
    expect(probes('/disk.raw', since)).toBe(1);
    expect(chunkProbes('/disk.raw', since)).toBe(1);
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
  });

  test('a nearby server whose chunk reads are slow (a Python server): one stream, not nbd', async () => {
    const out = f('auto-near-dear.img');
    const { result, error } = await runEngine(spec({ endpoint: `${server.url}/disk.raw`, target: { kind: 'file', path: out } }), { ...AUTO, nearLatencyMs: 60_000, nbdMaxChunkMs: -1 });
    expect(error).toBeUndefined();
    expect(result?.via).toBeUndefined();
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
  });

  const logged = (logs: ReadonlyArray<Record<string, unknown>>, msg: string): Array<Record<string, unknown>> => logs.filter((l) => l.msg === msg);
  const MEASURED = 'reads through nbdkit measured';
  const READING = 'reading the remote image in place, no scratch copy';

  test.each([['disk.raw'], ['disk.qcow2']])('%s: reads through the export are timed, and cheap ones keep it for qemu-img', async (name) => {
    const since = server.requests.length;
    const out = f(`auto-kept-${name}.img`);
    const { result, error, logs } = await runEngine(spec({ endpoint: `${server.url}/${name}`, target: { kind: 'file', path: out }, scratchDir: f('scratch') }), { ...AUTO, nearLatencyMs: 60_000 });
    expect(error).toBeUndefined();
    expect(result?.via).toBe('nbd');
    const [measured] = logged(logs, MEASURED);
    expect(measured).toMatchObject({ kept: true, chunkBytes: 64 * 1024, openMs: expect.any(Number) });
    expect(measured?.readsMs).toHaveLength(4);
    expect(logged(logs, READING)).toEqual([expect.objectContaining({ timedExport: true })]);
    // The timed reads went to the server through nbdkit: 64 KiB ranges after node's three.
    const probeRanges = rangesOf(`/${name}`, since).filter((r) => /^bytes=\d+-\d+$/.test(r)).filter((r) => {
      const [a, b] = r.slice(6).split('-').map(Number);
      return (b ?? 0) - (a ?? 0) + 1 >= 64 * 1024;
    });
    expect(probeRanges.length).toBeGreaterThanOrEqual(3 + 4);
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
  });

  test.each([
    ['disk.raw', undefined],
    ['disk.qcow2', 'scratch'],
  ])('%s: cheap for node, dear through nbdkit (over nbdReadMaxMs): the export is stopped, the one stream taken', async (name, via) => {
    const out = f(`auto-dropped-${name}.img`);
    const { result, error, logs } = await runEngine(spec({ endpoint: `${server.url}/${name}`, target: { kind: 'file', path: out }, scratchDir: f('scratch') }), { ...AUTO, nearLatencyMs: 60_000, nbdReadMaxMs: -1 });
    expect(error).toBeUndefined();
    expect(result?.via).toBe(via);
    // The opening read already puts the cost past the limit: no 2 MiB read is sent.
    expect(logged(logs, MEASURED)).toEqual([expect.objectContaining({ kept: false, openMs: expect.any(Number), readsMs: [] })]);
    expect(logged(logs, READING)).toEqual([]);
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
  });

  test('fast reads after a stalled opening read (the Python server): the opening read counts, the export is dropped', async () => {
    const since = server.requests.length;
    const out = f('auto-stall-open.img');
    // 60 ms over four reads is 15 ms a read, past the default 6 ms.
    const { result, error, logs } = await runEngine(spec({ endpoint: `${server.url}/stall-open.raw`, target: { kind: 'file', path: out } }), { ...AUTO, nearLatencyMs: 60_000, nbdReadMaxMs: 6 });
    expect(error).toBeUndefined();
    expect(result?.via).toBeUndefined();
    // nbdkit did send the opening read the server stalls, and nothing after it.
    expect(rangesOf('/stall-open.raw', since).filter((r) => /^bytes=0-409[56]$/.test(r))).toHaveLength(1);
    const [measured] = logged(logs, MEASURED);
    expect(measured).toMatchObject({ kept: false, readsMs: [] });
    expect(measured?.openMs as number).toBeGreaterThanOrEqual(55);
    expect(logged(logs, READING)).toEqual([]);
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
  });

  test('a raw image whose tail read stalls on its reused connection (the Python server): that read is the reuse probe, nbdkit never started', async () => {
    const since = server.requests.length;
    const out = f('auto-stall-reuse.img');
    const { result, error, logs } = await runEngine(spec({ endpoint: `${server.url}/stall-reuse.raw`, target: { kind: 'file', path: out } }), { ...AUTO, nearLatencyMs: 60_000, reuseStallMs: 30 });
    expect(error).toBeUndefined();
    expect(result?.via).toBeUndefined();
    const reuse = logs.filter((l) => l.msg === 'request on a reused connection measured');
    expect(reuse).toEqual([expect.objectContaining({ by: 'tail', nbd: false })]);
    expect(reuse[0]?.reuseMs as number).toBeGreaterThanOrEqual(55);
    // The tail read once, no one-byte probe after it, and nothing from nbdkit (its size request, its opening read).
    expect(rangesOf('/stall-reuse.raw', since).filter((r) => r === `bytes=${8 * MiB - 512}-${8 * MiB - 1}`)).toHaveLength(1);
    expect(rangesOf('/stall-reuse.raw', since).filter((r) => r === 'bytes=1-1')).toEqual([]);
    expect(server.requests.slice(since).filter((r) => r.path === '/stall-reuse.raw' && r.method === 'HEAD')).toEqual([]);
    expect(rangesOf('/stall-reuse.raw', since).filter((r) => /^bytes=0-409[56]$/.test(r))).toEqual([]);
    expect(logged(logs, MEASURED)).toEqual([]);
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
  });

  test('a qcow2 whose one-byte request on a reused connection stalls: timed by the reuse probe, nbdkit never started', async () => {
    const since = server.requests.length;
    const out = f('auto-stall-reuse-q.img');
    const { result, error, logs } = await runEngine(spec({ endpoint: `${server.url}/stall-reuse.qcow2`, target: { kind: 'file', path: out }, scratchDir: f('scratch') }), { ...AUTO, nearLatencyMs: 60_000, reuseStallMs: 30 });
    expect(error).toBeUndefined();
    expect(result?.via).not.toBe('nbd');
    const reuse = logs.filter((l) => l.msg === 'request on a reused connection measured');
    expect(reuse).toEqual([expect.objectContaining({ by: 'probe', nbd: false })]);
    expect(reuse[0]?.reuseMs as number).toBeGreaterThanOrEqual(55);
    expect(rangesOf('/stall-reuse.qcow2', since).filter((r) => r === 'bytes=1-1')).toHaveLength(1);
    expect(server.requests.slice(since).filter((r) => r.path === '/stall-reuse.qcow2' && r.method === 'HEAD')).toEqual([]);
    expect(logged(logs, MEASURED)).toEqual([]);
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
  });

  test('a request on a reused connection that does not stall: timed, then the export is timed and kept', async () => {
    const since = server.requests.length;
    const out = f('auto-reuse-fine.img');
    const { result, error, logs } = await runEngine(spec({ endpoint: `${server.url}/disk.raw`, target: { kind: 'file', path: out } }), { ...AUTO, nearLatencyMs: 60_000 });
    expect(error).toBeUndefined();
    expect(result?.via).toBe('nbd');
    // A raw image: the tail read stood for the probe.
    expect(logs.filter((l) => l.msg === 'request on a reused connection measured')).toEqual([expect.objectContaining({ by: 'tail', nbd: true })]);
    expect(rangesOf('/disk.raw', since).filter((r) => r === 'bytes=1-1')).toEqual([]);
    expect(logged(logs, MEASURED)).toEqual([expect.objectContaining({ kept: true })]);
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
  });

  test('--connections 1 (the user chose nbd): nothing timed through the export', async () => {
    const out = f('one-nbd.img');
    const { result, error, logs } = await runEngine(spec({ endpoint: `${server.url}/disk.raw`, target: { kind: 'file', path: out } }), { ...AUTO, connections: 1, nbdReadMaxMs: -1 });
    expect(error).toBeUndefined();
    expect(result?.via).toBe('nbd');
    expect(logged(logs, MEASURED)).toEqual([]);
    expect(logged(logs, READING)).toEqual([expect.objectContaining({ timedExport: false })]);
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
  });

  test('a server that answers late but delivers chunks fast is busy, not far: one stream, no ranged connections', async () => {
    const since = server.requests.length;
    const out = f('auto-busy.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/disk.raw`, target: { kind: 'file', path: out } }), { ...AUTO, nearLatencyMs: -1, farChunkMs: 60_000, nbdMaxChunkMs: -1 });
    expect(error).toBeUndefined();
    expect(rangesOf('/disk.raw', since).filter(notProbe)).toEqual([]);
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
  });

  test('a server farther away: a raw image arrives over several ranged connections', async () => {
    const since = server.requests.length;
    const out = f('auto-far.img');
    const { result, error } = await runEngine(spec({ endpoint: `${server.url}/disk.raw`, target: { kind: 'file', path: out } }), { ...AUTO, nearLatencyMs: -1 });
    expect(error).toBeUndefined();
    expect(result?.via).toBeUndefined();
    expect(probes('/disk.raw', since)).toBe(3);
    expect(rangesOf('/disk.raw', since).filter(notProbe)).toHaveLength(16);
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
  });

  test('a qcow2 farther away is fetched over ranged connections into scratch, not read in place', async () => {
    const since = server.requests.length;
    const out = f('auto-far-q.img');
    const { result, error } = await runEngine(spec({ endpoint: `${server.url}/disk.qcow2`, target: { kind: 'file', path: out }, scratchDir: f('scratch') }), { ...AUTO, nearLatencyMs: -1 });
    expect(error).toBeUndefined();
    expect(result?.via).toBe('scratch');
    expect(rangesOf('/disk.qcow2', since).filter(notProbe).length).toBeGreaterThan(1);
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
  });

  test('after a redirect, probes and ranges go straight to where it led, not through the redirector again', async () => {
    server.route('/moved.raw', { redirect: '/disk.raw' });
    const since = server.requests.length;
    const out = f('auto-moved.img');
    const { error } = await runEngine(spec({ endpoint: `${server.url}/moved.raw`, target: { kind: 'file', path: out } }), { ...AUTO, nearLatencyMs: -1 });
    expect(error).toBeUndefined();
    expect(server.requests.slice(since).filter((r) => r.path === '/moved.raw')).toHaveLength(1);
    expect(probes('/disk.raw', since)).toBe(3);
    expect(rangesOf('/disk.raw', since).filter(notProbe)).toHaveLength(16);
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
  });

  describe('a compressed image farther away: ranged connections, read in order by the decompressor', () => {
    const COMPRESSED = { ...AUTO, nearLatencyMs: -1, parallelMinBytes: 256 * 1024, streamChunkBytes: 256 * 1024 };
    const ranged = (path: string, since: number): string[] => rangesOf(path, since).filter(notProbe) as string[];

    test.each([['disk.raw.gz'], ['disk.raw.zst']])('%s arrives in 256 KiB ranges after the first bytes, byte for byte', async (name) => {
      const since = server.requests.length;
      const out = f(`auto-${name}.img`);
      const { result, error } = await runEngine(spec({ endpoint: `${server.url}/${name}`, target: { kind: 'file', path: out } }), COMPRESSED);
      expect(error).toBeUndefined();
      expect(result?.sourceFormat).toMatch(/^raw\+(gzip|zstd)$/);
      expect(probes(`/${name}`, since)).toBe(3);
      const ranges = ranged(`/${name}`, since);
      expect(ranges.length).toBeGreaterThanOrEqual(3);
      for (const r of ranges) {
        const [a, b] = r.replace('bytes=', '').split('-').map(Number);
        expect((b ?? 0) - (a ?? 0) + 1).toBeLessThanOrEqual(256 * 1024);
      }
      expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
    });

    test('the checksum is still verified over the whole compressed source', async () => {
      const good = createHash('sha256').update(readFileSync(f('disk.raw.gz'))).digest('hex');
      const ok = await runEngine(spec({ endpoint: `${server.url}/disk.raw.gz`, target: { kind: 'file', path: f('gz-sum.img') }, checksum: { algorithm: 'sha256', hex: good } }), COMPRESSED);
      expect(ok.error).toBeUndefined();
      const bad = await runEngine(spec({ endpoint: `${server.url}/disk.raw.gz`, target: { kind: 'file', path: f('gz-badsum.img') }, checksum: { algorithm: 'sha256', hex: '0'.repeat(64) } }), COMPRESSED);
      expect(bad.error?.code).toBe('CHECKSUM_MISMATCH');
      expect(() => readFileSync(f('gz-badsum.img'))).toThrow();
    });

    test('ranges whose connection breaks continue where they stopped', async () => {
      server.route('/cutting.raw.gz', { file: f('disk.raw.gz'), closeAfter: 100 * 1024 });
      const out = f('gz-cut.img');
      const { error } = await runEngine(spec({ endpoint: `${server.url}/cutting.raw.gz`, target: { kind: 'file', path: out } }), COMPRESSED);
      expect(error).toBeUndefined();
      expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
      expect(server.sent.get('/cutting.raw.gz')).toBeLessThanOrEqual(1.5 * statSync(f('disk.raw.gz')).size);
    });

    test('a nearby server keeps the one stream', async () => {
      const since = server.requests.length;
      const { error } = await runEngine(spec({ endpoint: `${server.url}/disk.raw.gz`, target: { kind: 'file', path: f('gz-near.img') } }), { ...COMPRESSED, nearLatencyMs: 60_000 });
      expect(error).toBeUndefined();
      expect(ranged('/disk.raw.gz', since)).toEqual([]);
    });
  });
});
