/**
 * No secret on nbdkit's command line or in its environment, which anything that lists processes
 * in the pod (or on the node) can read: /proc/<pid>/cmdline and /proc/<pid>/environ are read while
 * a real import runs through nbdkit, against a loopback server (and proxy) that require basic auth
 * (or an extra header).
 */

import { afterAll, afterEach, beforeAll, describe, expect, test } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ImportEnv } from '../../src/contract/import-spec.js';
import { convertImage, expectSameDisk, makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { runEngine, spec } from '../helpers/engine.js';

let dir: string;
let raw: string;
let qcow2: string;
let server: TestServer;
const started: TestProxy[] = [];

beforeAll(async () => {
  dir = tempDir();
  raw = join(dir, 'disk.raw');
  qcow2 = join(dir, 'disk.qcow2');
  makeRawDisk(raw, 4 * MiB);
  convertImage(raw, 'qcow2', qcow2);
  server = await startServer();
});

afterEach(() => {
  delete process.env[ImportEnv.SecretKey];
});

afterAll(async () => {
  for (const p of started) await p.close();
  await server?.close();
  removeDir(dir);
});

interface Seen {
  readonly cmdline: string;
  readonly environ: string;
}

/** Our nbdkit children (at most one at a time here): their argv and environment, NUL-joined. */
function nbdkitChildren(): Seen[] {
  const seen: Seen[] = [];
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
      // pid (comm) state ppid ...
      const m = /^\d+ \((.*)\) \S+ (\d+)/.exec(stat);
      if (!m || m[1] !== 'nbdkit' || Number(m[2]) !== process.pid) continue;
      seen.push({ cmdline: readFileSync(`/proc/${pid}/cmdline`, 'utf8'), environ: readFileSync(`/proc/${pid}/environ`, 'utf8') });
    } catch {
      // the process ended between listing and reading
    }
  }
  return seen;
}

/** Runs `work` while sampling nbdkit's /proc entries every 10 ms; every sample taken. */
async function watching<T>(work: () => Promise<T>): Promise<{ value: T; samples: Seen[] }> {
  const samples: Seen[] = [];
  let running = true;
  const sampler = (async () => {
    while (running) {
      samples.push(...nbdkitChildren());
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  try {
    return { value: await work(), samples };
  } finally {
    running = false;
    await sampler;
  }
}

const secret = (): string => `pw-${randomBytes(12).toString('hex')}`;
const basic = (user: string, pass: string): string => `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
/**
 * Slow enough (64 KiB per 20 ms on ranged reads) for the sampler to see nbdkit at work, quick
 * enough for curl's per-request timeout (the idle timeout: 1 s in the test tuning).
 */
const PACED = { bytes: 64 * 1024, everyMs: 20, ranged: true } as const;

describe('nbdkit and secrets', () => {
  test('basic auth: the password is in neither argv nor environ of nbdkit, and the server saw it', async () => {
    const password = secret();
    server.route('/private.qcow2', { file: qcow2, auth: { user: 'ferry', pass: password }, trickle: PACED });
    // As in the importer pod, where the secret arrives in the environment.
    process.env[ImportEnv.SecretKey] = password;
    const out = join(dir, 'private.img');
    const { value, samples } = await watching(() =>
      runEngine(spec({ endpoint: `${server.url}/private.qcow2`, target: { kind: 'file', path: out }, credentials: { username: 'ferry', password } })),
    );
    expect(value.error).toBeUndefined();
    expect(value.result?.via).toBe('nbd');
    expect(expectSameDisk(out, raw, 4 * MiB)).toBe(true);
    expect(samples.length).toBeGreaterThan(0);
    for (const s of samples) {
      expect(s.cmdline).toContain('curl');
      expect(s.cmdline).not.toContain(password);
      expect(s.environ).not.toContain(password);
      expect(s.cmdline).not.toContain(basic('ferry', password).slice(6));
    }
    const ranged = server.requests.filter((r) => r.path === '/private.qcow2' && r.range !== undefined);
    expect(ranged.length).toBeGreaterThan(0);
    expect(ranged.every((r) => r.authorization === basic('ferry', password))).toBe(true);
  });

  test('extra headers: in neither argv nor environ of nbdkit (a 0600 file its header-script prints), and the server saw them', async () => {
    const token = secret();
    server.route('/headers.qcow2', { file: qcow2, require: { 'x-api-key': token }, trickle: PACED });
    const out = join(dir, 'headers.img');
    const { value, samples } = await watching(() =>
      runEngine(spec({ endpoint: `${server.url}/headers.qcow2`, target: { kind: 'file', path: out }, extraHeaders: [{ name: 'X-Api-Key', value: token }] })),
    );
    expect(value.error).toBeUndefined();
    expect(value.result?.via).toBe('nbd');
    expect(expectSameDisk(out, raw, 4 * MiB)).toBe(true);
    expect(samples.length).toBeGreaterThan(0);
    for (const s of samples) {
      expect(s.cmdline).toContain('header-script=');
      expect(s.cmdline).not.toContain(token);
      expect(s.environ).not.toContain(token);
    }
    const ranged = server.requests.filter((r) => r.path === '/headers.qcow2' && r.range !== undefined);
    expect(ranged.length).toBeGreaterThan(0);
    expect(ranged.every((r) => r.headers['x-api-key'] === token)).toBe(true);
  });

  test('a proxy with user:password: nbdkit gets the password over a pipe, and the proxy saw it', async () => {
    const proxyPassword = secret();
    const proxy = await startProxy({ auth: { user: 'puser', pass: proxyPassword } });
    started.push(proxy);
    server.route('/proxied.qcow2', { file: qcow2, trickle: PACED });
    const proxyUrl = `http://puser:${proxyPassword}@${new URL(proxy.url).host}`;
    const out = join(dir, 'proxied.img');
    const { value, samples } = await watching(() =>
      runEngine(spec({ endpoint: `${server.url}/proxied.qcow2`, target: { kind: 'file', path: out }, proxy: { httpProxy: proxyUrl } })),
    );
    expect(value.error).toBeUndefined();
    expect(value.result?.via).toBe('nbd');
    expect(expectSameDisk(out, raw, 4 * MiB)).toBe(true);
    expect(samples.length).toBeGreaterThan(0);
    for (const s of samples) {
      expect(s.cmdline).not.toContain(proxyPassword);
      expect(s.environ).not.toContain(proxyPassword);
    }
    // nbdkit's ranged reads went through the proxy, with its credentials.
    expect(proxy.seen.filter((r) => r.includes('/proxied.qcow2')).length).toBeGreaterThan(1);
    expect(proxy.authorizations.length).toBeGreaterThan(1);
    expect(proxy.authorizations.every((a) => a === basic('puser', proxyPassword))).toBe(true);
  });
});
