/** The S3 source against a real S3 server (Ceph radosgw on loopback), through the real engine. */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { PutObjectCommand } from '@aws-sdk/client-s3';
import type { Credentials } from '../../src/contract/import-spec.js';
import { compress, convertImage, expectSameDisk, makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { runEngine, spec } from '../helpers/engine.js';
import { runFerry } from '../helpers/ferry-process.js';
import { startRgw, type Rgw } from '../helpers/rgw.js';
import { makePki } from '../helpers/tls.js';

const SIZE = 4 * MiB;
const BUCKET = 'images';

let dir: string;
let rgw: Rgw;
let caFile: string;
let keys: Credentials;
const f = (name: string): string => join(dir, name);

beforeAll(async () => {
  dir = tempDir();
  makeRawDisk(f('disk.raw'), SIZE);
  makeRawDisk(f('other.raw'), SIZE);
  convertImage(f('disk.raw'), 'qcow2', f('disk.qcow2'));
  compress('gzip', f('disk.raw'), f('disk.raw.gz'));
  const pki = makePki(dir);
  caFile = pki.caFile;
  rgw = await startRgw({ tls: { cert: pki.cert, key: pki.key } });
  process.stdout.write(`radosgw cold start: ${rgw.startMs} ms\n`);
  keys = { username: rgw.accessKeyId, password: rgw.secretKey };
  await rgw.createBucket(BUCKET);
  for (const name of ['disk.raw', 'disk.qcow2', 'disk.raw.gz']) await rgw.putFile(BUCKET, name, f(name));
}, 180_000);

afterAll(async () => {
  await rgw?.stop();
  if (dir) removeDir(dir);
});

/** CDI's annotation form of an object URL: http(s)://host:port/bucket/key. */
const cdiUrl = (key: string, base = rgw.url): string => `${base}/${BUCKET}/${key}`;
const target = (name: string) => ({ kind: 'file' as const, path: f(name) });

function nothingWritten(name: string): boolean {
  return !existsSync(f(name)) && !readdirSync(dir).some((n) => n.startsWith(`${name}.`));
}

describe('s3 source on radosgw', () => {
  test('a raw object at a CDI-style endpoint URL is imported byte for byte', async () => {
    const { result, error } = await runEngine(spec({ source: 's3', endpoint: cdiUrl('disk.raw'), credentials: keys, target: target('raw.img') }));
    expect(error).toBeUndefined();
    expect(result?.sourceFormat).toBe('raw');
    expect(expectSameDisk(f('raw.img'), f('disk.raw'), SIZE)).toBe(true);
  });

  test('a qcow2 object at s3://bucket/key with an endpoint override goes through the scratch dir', async () => {
    const scratch = f('scratch-qcow2');
    const { result, error } = await runEngine(
      spec({ source: 's3', endpoint: `s3://${BUCKET}/disk.qcow2`, s3Endpoint: rgw.url, credentials: keys, scratchDir: scratch, target: target('qcow2.img') }),
    );
    expect(error).toBeUndefined();
    expect(result).toMatchObject({ sourceFormat: 'qcow2', via: 'scratch' });
    expect(expectSameDisk(f('qcow2.img'), f('disk.raw'), SIZE)).toBe(true);
    expect(readdirSync(scratch)).toEqual([]);
  });

  test('a gzip-compressed raw object is decompressed on the fly', async () => {
    const { result, error } = await runEngine(spec({ source: 's3', endpoint: cdiUrl('disk.raw.gz'), credentials: keys, target: target('gz.img') }));
    expect(error).toBeUndefined();
    expect(result?.sourceFormat).toMatch(/^raw\+gz/);
    expect(expectSameDisk(f('gz.img'), f('disk.raw'), SIZE)).toBe(true);
  });

  test('several ranged connections (openRange) assemble the same disk', async () => {
    const { error } = await runEngine(spec({ source: 's3', endpoint: cdiUrl('disk.raw'), credentials: keys, target: target('parallel.img') }), { connections: 3 });
    expect(error).toBeUndefined();
    expect(expectSameDisk(f('parallel.img'), f('disk.raw'), SIZE)).toBe(true);
  });

  test.each<[string, () => Credentials, string]>([
    ['a wrong secret', () => ({ ...keys, password: 'not-the-secret' }), 'SignatureDoesNotMatch'],
    ['an unknown access key', () => ({ username: 'NOSUCHACCESSKEY', password: keys.password }), 'InvalidAccessKeyId'],
  ])('%s is UNAUTHORIZED, not retried', async (_name, credentials, s3Code) => {
    const { error } = await runEngine(spec({ source: 's3', endpoint: cdiUrl('disk.raw'), credentials: credentials(), target: target('denied.img') }));
    expect(error).toMatchObject({ code: 'UNAUTHORIZED', retryable: false, details: { status: 403, s3Code } });
    expect(error?.message).not.toContain(keys.password);
    expect(nothingWritten('denied.img')).toBe(true);
  });

  test.each([
    ['a missing bucket', 'no-such-bucket', 'disk.raw', 'NoSuchBucket'],
    ['a missing key', BUCKET, 'no/such/key.img', 'NoSuchKey'],
  ])('%s is SOURCE_NOT_FOUND', async (_name, bucket, key, s3Code) => {
    const { error } = await runEngine(spec({ source: 's3', endpoint: `${rgw.url}/${bucket}/${key}`, credentials: keys, target: target('missing.img') }));
    expect(error).toMatchObject({ code: 'SOURCE_NOT_FOUND', retryable: false, details: { status: 404, s3Code } });
    expect(nothingWritten('missing.img')).toBe(true);
  });

  test('without credentials requests are anonymous: a private object is refused, a public-read one is imported', async () => {
    const denied = await runEngine(spec({ source: 's3', endpoint: cdiUrl('disk.raw'), target: target('anon.img') }));
    expect(denied.error).toMatchObject({ code: 'UNAUTHORIZED', details: { s3Code: 'AccessDenied' } });
    await rgw.client.send(new PutObjectCommand({ Bucket: BUCKET, Key: 'public.raw', Body: readFileSync(f('disk.raw')), ACL: 'public-read' }));
    const { error } = await runEngine(spec({ source: 's3', endpoint: cdiUrl('public.raw'), target: target('anon.img') }));
    expect(error).toBeUndefined();
    expect(expectSameDisk(f('anon.img'), f('disk.raw'), SIZE)).toBe(true);
  });
});

describe('s3 over https (beast ssl_endpoint)', () => {
  test('a custom CA file is trusted', async () => {
    const { error } = await runEngine(spec({ source: 's3', endpoint: cdiUrl('disk.raw', rgw.httpsUrl), credentials: keys, caPath: caFile, target: target('tls.img') }));
    expect(error).toBeUndefined();
    expect(expectSameDisk(f('tls.img'), f('disk.raw'), SIZE)).toBe(true);
  });

  test('without the CA it is TLS_ERROR, not retried', async () => {
    const { error } = await runEngine(spec({ source: 's3', endpoint: cdiUrl('disk.raw', rgw.httpsUrl), credentials: keys, target: target('tls-bad.img') }));
    expect(error).toMatchObject({ code: 'TLS_ERROR', retryable: false });
  });
});

/**
 * A TCP proxy in front of radosgw that can cut the next connection after some bytes from the
 * server, optionally doing something (replacing the object) before the client sees the break.
 */
interface CuttingProxy {
  readonly url: string;
  /** Request heads (what the client sent first), one per connection. */
  readonly heads: string[];
  /** Bytes from the server to the client, all connections together. */
  readonly downstream: () => number;
  cutNext(afterBytes: number, beforeBreak?: () => Promise<void>): void;
  reset(): void;
  close(): Promise<void>;
}

async function startCuttingProxy(upstreamUrl: string): Promise<CuttingProxy> {
  const { hostname, port } = new URL(upstreamUrl);
  const heads: string[] = [];
  const sockets = new Set<Socket>();
  let downstream = 0;
  let cut: { afterBytes: number; beforeBreak?: () => Promise<void> } | undefined;
  const server: Server = createServer((client) => {
    const mine = cut;
    cut = undefined;
    const index = heads.push('') - 1;
    const upstream = connect(Number(port), hostname);
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => undefined);
    }
    let sent = 0;
    client.on('data', (d: Buffer) => {
      if ((heads[index] ?? '').length < 8192) heads[index] += d.toString('latin1');
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      const room = mine ? mine.afterBytes - sent : d.length;
      const piece = d.subarray(0, Math.max(0, room));
      sent += piece.length;
      downstream += piece.length;
      if (piece.length > 0 && !client.write(piece)) {
        upstream.pause();
        client.once('drain', () => upstream.resume());
      }
      if (mine && sent >= mine.afterBytes) {
        upstream.destroy();
        void (mine.beforeBreak?.() ?? Promise.resolve()).finally(() => client.destroy());
      }
    });
    upstream.on('end', () => client.end());
    client.on('end', () => upstream.end());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    heads,
    downstream: () => downstream,
    cutNext: (afterBytes, beforeBreak) => {
      cut = { afterBytes, ...(beforeBreak ? { beforeBreak } : {}) };
    },
    reset: () => {
      heads.length = 0;
      downstream = 0;
    },
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

describe('a body broken mid-object', () => {
  let proxy: CuttingProxy;
  beforeAll(async () => {
    proxy = await startCuttingProxy(rgw.url);
  });
  afterAll(async () => {
    await proxy?.close();
  });

  test('a far store under connections auto: latency probed, a compressed object read in order over ranged connections', async () => {
    proxy.reset();
    const { result, error } = await runEngine(spec({ source: 's3', endpoint: cdiUrl('disk.raw.gz', proxy.url), credentials: keys, target: target('gz-auto.img') }), {
      connections: 'auto',
      nearLatencyMs: -1,
      parallelMinBytes: 256 * 1024,
      streamChunkBytes: 256 * 1024,
    });
    expect(error).toBeUndefined();
    expect(result?.sourceFormat).toMatch(/^raw\+gz/);
    expect(expectSameDisk(f('gz-auto.img'), f('disk.raw'), SIZE)).toBe(true);
    const ranges = proxy.heads.join('').match(/^range: bytes=\d+-\d+\r$/gim) ?? [];
    expect(ranges.filter((r) => /bytes=0-0\r$/.test(r))).toHaveLength(3);
    expect(ranges.filter((r) => !/bytes=0-0\r$/.test(r)).length).toBeGreaterThanOrEqual(3);
    expect(proxy.heads.length).toBeGreaterThan(2);
  });

  test('resumes with a ranged GET pinned to the ETag and completes byte for byte', async () => {
    proxy.reset();
    proxy.cutNext(MiB);
    const { error } = await runEngine(spec({ source: 's3', endpoint: cdiUrl('disk.raw', proxy.url), credentials: keys, target: target('resumed.img') }), { attempts: 1 });
    expect(error).toBeUndefined();
    expect(expectSameDisk(f('resumed.img'), f('disk.raw'), SIZE)).toBe(true);
    expect(proxy.heads).toHaveLength(2);
    expect(proxy.heads[0]).not.toMatch(/^range:/im);
    expect(proxy.heads[1]).toMatch(/^range: bytes=\d+-\r$/im);
    expect(proxy.heads[1]).toMatch(/^if-match: "[0-9a-f]+"\r$/im);
    // Only the missing part came again, not the whole object.
    expect(proxy.downstream()).toBeLessThanOrEqual(1.1 * SIZE);
  });

  test('an object replaced before the resumption fails rather than mixing two versions', async () => {
    await rgw.putFile(BUCKET, 'replaced.raw', f('disk.raw'));
    proxy.reset();
    proxy.cutNext(MiB, async () => {
      await rgw.putFile(BUCKET, 'replaced.raw', f('other.raw'));
    });
    const slowIdle = { http: { connectMs: 2000, firstByteMs: 5000, idleMs: 10_000 } };
    const once = await runEngine(spec({ source: 's3', endpoint: cdiUrl('replaced.raw', proxy.url), credentials: keys, target: target('replaced.img') }), { ...slowIdle, attempts: 1 });
    expect(once.error?.code).toBe('TRUNCATED');
    expect(once.error?.message).toContain('changed');
    expect(nothingWritten('replaced.img')).toBe(true);
    expect(proxy.heads[1]).toMatch(/^if-match: /im);
  });

  test('with attempts left, the import starts over and gets the new object whole', async () => {
    await rgw.putFile(BUCKET, 'replaced2.raw', f('disk.raw'));
    proxy.reset();
    proxy.cutNext(MiB, async () => {
      await rgw.putFile(BUCKET, 'replaced2.raw', f('other.raw'));
    });
    const { error } = await runEngine(spec({ source: 's3', endpoint: cdiUrl('replaced2.raw', proxy.url), credentials: keys, target: target('replaced2.img') }), {
      http: { connectMs: 2000, firstByteMs: 5000, idleMs: 10_000 },
      attempts: 2,
    });
    expect(error).toBeUndefined();
    expect(expectSameDisk(f('replaced2.img'), f('other.raw'), SIZE)).toBe(true);
    // First GET, the refused ranged GET, and the fresh GET of the new version.
    expect(proxy.heads).toHaveLength(3);
  });
});

describe('ferry import with s3 as a process', () => {
  test('s3://bucket/key with --s3-endpoint and keys imports, and nothing but progress reaches stderr', async () => {
    const out = f('cli.img');
    const r = await runFerry([
      'import', '--url', `s3://${BUCKET}/disk.qcow2`, '--dest', out, '--s3-endpoint', rgw.url,
      '--access-key-id', rgw.accessKeyId, '--secret-access-key', rgw.secretKey, '--scratch-dir', f('cli-scratch'), '--quiet',
    ]);
    expect(r.code).toBe(0);
    expect(r.stderr).not.toContain('NodeVersionSupportWarning');
    expect(r.stderr.trim()).toBe(`Import Complete: ${out} (${SIZE} bytes, from qcow2)`);
    expect(expectSameDisk(out, f('disk.raw'), SIZE)).toBe(true);
  });

  test('a wrong secret prints exactly one "error UNAUTHORIZED" line and exits 11', async () => {
    const r = await runFerry([
      'import', '--url', `s3://${BUCKET}/disk.raw`, '--dest', f('cli-denied.img'), '--s3-endpoint', rgw.url,
      '--access-key-id', rgw.accessKeyId, '--secret-access-key', 'wrong', '--quiet',
    ]);
    expect(r.code).toBe(11);
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/^error UNAUTHORIZED: s3:\/\/images\/disk\.raw at http:\/\/127\.0\.0\.1:\d+: SignatureDoesNotMatch/);
  });
});
