/** The `ferry import` command and the importer pod program, run as real processes. */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { decodeTermination } from '../../src/contract/termination.js';
import { convertImage, expectSameDisk, makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { freePort, runFerry, startFerry } from '../helpers/ferry-process.js';

let dir: string;
let server: TestServer;
let raw: string;
const f = (name: string): string => join(dir, name);

beforeAll(async () => {
  dir = tempDir();
  raw = f('disk.raw');
  makeRawDisk(raw, 8 * MiB);
  convertImage(raw, 'qcow2', f('disk.qcow2'));
  server = await startServer();
  server.route('/disk.qcow2', { file: f('disk.qcow2') });
  server.route('/norange.qcow2', { file: f('disk.qcow2'), ranges: false });
  server.route('/slow.qcow2', { file: f('disk.qcow2'), slow: { chunk: 256 * 1024, delayMs: 40 } });
});

afterAll(async () => {
  await server?.close();
  removeDir(dir);
});

function lastLine(text: string): string {
  return text.trim().split('\n').at(-1) ?? '';
}

describe('ferry import', () => {
  test('imports a qcow2 over http to the given size and exits 0', async () => {
    const out = f('cli.img');
    const r = await runFerry(['import', '--url', `${server.url}/disk.qcow2`, '--dest', out, '--size', '16Mi', '--scratch-dir', f('scratch')]);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('Import Complete');
    expect(statSync(out).size).toBe(16 * MiB);
    expect(expectSameDisk(out, raw, 16 * MiB)).toBe(true);
  });

  test('a local path works and the checksum is verified', async () => {
    const out = f('cli-local.img');
    const sum = createHash('sha256').update(readFileSync(f('disk.qcow2'))).digest('hex');
    const r = await runFerry(['import', '--url', f('disk.qcow2'), '--dest', out, '--checksum', `sha256:${sum}`]);
    expect(r.code).toBe(0);
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
  });

  test.each([
    [['--url', 'http://127.0.0.1:1/none', '--dest', 'x', '--retries', '1'], 13, 'SOURCE_UNAVAILABLE'],
    [['--url', '/nonexistent/disk.qcow2', '--dest', 'x'], 10, 'SOURCE_NOT_FOUND'],
    [['--url', 'DISK', '--dest', 'x', '--checksum', `md5:${'0'.repeat(32)}`], 24, 'CHECKSUM_MISMATCH'],
    [['--url', 'DISK', '--dest', 'x', '--size', '1Mi'], 23, 'TARGET_TOO_SMALL'],
    [['--url', 'DISK', '--dest', 'x', '--size', 'lots'], 2, 'INVALID_SPEC'],
    [['--url', 'DISK'], 2, 'INVALID_SPEC'],
    [['--bogus'], 2, 'INVALID_SPEC'],
  ])('%j exits %i with "error %s: ..."', async (args, status, code) => {
    const argv = args.map((a) => (a === 'DISK' ? f('disk.qcow2') : a === 'x' ? f('never.img') : a));
    const r = await runFerry(['import', ...argv]);
    expect(r.code).toBe(status);
    expect(lastLine(r.stderr)).toMatch(new RegExp(`^error ${code}: \\S`));
    expect(existsSync(f('never.img'))).toBe(false);
  });

  // Usage errors (#12): each is INVALID_SPEC, exit 2, and the message says what is accepted.
  test.each([
    [['--url', 'ftp://host/disk.img'], /--url .*http\(s\):\/\/.*s3:\/\/.*docker:\/\/.*file:\/\//],
    [['--url', 'gopher://host/disk.img'], /scheme "gopher:"/],
    [['--url', 'http://[bad/x'], /not a valid URL/],
    [['--url', 'http://'], /not a valid URL/],
    [['--url', 'https://exa mple.com/x'], /not a valid URL/],
    [['--url', 'http://127.0.0.1:0/x'], /port/],
    [['--url', 'https:/host/disk.img'], /\/\//],
    [['--url', 'file://host/disk.img'], /file:/],
    [['--url', 'DISK', '--connections', '10000'], /--connections .*auto.*1\.\.64/],
    [['--url', 'DISK', '--connections', '0'], /1\.\.64/],
    [['--url', 'DISK', '--retries', '0'], /--retries .*1\.\.100/],
    [['--url', 'DISK', '--retries', '1000'], /1\.\.100/],
    [['--url', 'DISK', '--idle-timeout', '0'], /--idle-timeout .*1\.\.3600/],
    [['--url', 'DISK', '--idle-timeout', '99999999999'], /1\.\.3600/],
    [['--url', 'DISK', '--metrics-port', '70000'], /--metrics-port .*1\.\.65535/],
    [['--url', 'DISK', '--log-level', 'loud'], /--log-level .*warn/],
    [['--url', 'DISK', '--size', '0'], /size/],
    [['--url', 'DISK', '--size', '100Ei'], /byte quantity/],
  ])('%j is INVALID_SPEC (exit 2) saying what is accepted', async (args, message) => {
    const argv = args.map((a) => (a === 'DISK' ? f('disk.qcow2') : a));
    const r = await runFerry(['import', ...argv, '--dest', f('never.img')]);
    expect(r.code).toBe(2);
    expect(lastLine(r.stderr)).toMatch(/^error INVALID_SPEC: \S/);
    expect(lastLine(r.stderr)).toMatch(message);
    expect(existsSync(f('never.img'))).toBe(false);
  });

  test('the accepted forms still work: file:// URL, upper-case scheme, 64 connections', async () => {
    const local = await runFerry(['import', '--url', `file://${f('disk.qcow2')}`, '--dest', f('file-url.img'), '--connections', '64', '--quiet']);
    expect(local.code).toBe(0);
    expect(expectSameDisk(f('file-url.img'), raw, 8 * MiB)).toBe(true);
    const upper = await runFerry(['import', '--url', `${server.url.replace('http:', 'HTTP:')}/disk.qcow2`, '--dest', f('upper.img'), '--quiet']);
    expect(upper.code).toBe(0);
  });

  test('--help prints usage and exits 0', async () => {
    const r = await runFerry(['import', '--help']);
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('Usage: ferry import');
  });
});

describe('importer pod program', () => {
  function podEnv(extra: Record<string, string>): Record<string, string> {
    return {
      IMPORTER_SOURCE: 'http',
      IMPORTER_CONTENTTYPE: 'kubevirt',
      IMPORTER_TARGET_KIND: 'file',
      FILESYSTEM_OVERHEAD: '0.06',
      FERRY_LOG_LEVEL: 'warn',
      FERRY_IMPORT_BACKOFF_MS: '10',
      ...extra,
    };
  }

  test('imports, serves the CDI progress metric while running, and writes a success termination message', async () => {
    const port = await freePort();
    const term = f('term-ok');
    const disk = f('pod-data/disk.img');
    const proc = startFerry(['importer'], podEnv({
      IMPORTER_ENDPOINT: `${server.url}/slow.qcow2`,
      IMPORTER_TARGET_PATH: disk,
      IMPORTER_IMAGE_SIZE: '64Mi',
      IMPORTER_SCRATCH_DIR: f('pod-scratch'),
      OWNER_UID: 'uid-123',
      FERRY_METRICS_PORT: String(port),
      FERRY_TERMINATION_LOG: term,
    }));
    let seen: number | undefined;
    for (let i = 0; i < 100 && seen === undefined; i += 1) {
      await new Promise((r) => setTimeout(r, 50));
      const text = await fetch(`http://127.0.0.1:${port}/metrics`).then((r) => r.text()).catch(() => '');
      const m = /kubevirt_cdi_import_progress_total\{ownerUID="uid-123"\} ([\d.]+)/.exec(text);
      if (m && Number(m[1]) > 0) seen = Number(m[1]);
    }
    const r = await proc.done;
    expect(r.code).toBe(0);
    expect(seen).toBeGreaterThan(0);
    expect(seen).toBeLessThanOrEqual(100);
    const msg = decodeTermination(readFileSync(term, 'utf8'));
    expect(msg).toMatchObject({ kind: 'success', scratchSpaceRequired: false, sourceFormat: 'qcow2' });
    const usable = Math.floor(Math.ceil(0.94 * 64 * MiB) / MiB) * MiB;
    expect(statSync(disk).size).toBe(usable);
    expect(statSync(disk).mode & 0o777).toBe(0o660);
    expect(expectSameDisk(disk, raw, usable)).toBe(true);
  });

  test('without scratch space, a source that cannot be read in place exits 0 and asks for scratch', async () => {
    const term = f('term-scratch');
    const r = await runFerry(['importer'], podEnv({
      IMPORTER_ENDPOINT: `${server.url}/norange.qcow2`,
      IMPORTER_TARGET_PATH: f('pod2/disk.img'),
      IMPORTER_IMAGE_SIZE: '64Mi',
      FERRY_METRICS_PORT: '0',
      FERRY_TERMINATION_LOG: term,
    }));
    expect(r.code).toBe(0);
    expect(decodeTermination(readFileSync(term, 'utf8'))).toMatchObject({ kind: 'success', scratchSpaceRequired: true });
    expect(existsSync(f('pod2/disk.img'))).toBe(false);
  });

  test('a failure exits with the code\'s status and a JSON termination message', async () => {
    const term = f('term-404');
    const r = await runFerry(['importer'], podEnv({
      IMPORTER_ENDPOINT: `${server.url}/nope.qcow2`,
      IMPORTER_TARGET_PATH: f('pod3/disk.img'),
      FERRY_METRICS_PORT: '0',
      FERRY_TERMINATION_LOG: term,
    }));
    expect(r.code).toBe(10);
    expect(decodeTermination(readFileSync(term, 'utf8'))).toEqual({ kind: 'failure', code: 'SOURCE_NOT_FOUND', message: expect.any(String), retryable: false });
  });

  test('SIGTERM mid-import ends with a retryable INTERRUPTED message and no completed disk', async () => {
    const port = await freePort();
    const term = f('term-sigterm');
    const disk = f('pod4/disk.img');
    const proc = startFerry(['importer'], podEnv({
      IMPORTER_ENDPOINT: `${server.url}/slow.qcow2`,
      IMPORTER_TARGET_PATH: disk,
      IMPORTER_SCRATCH_DIR: f('pod4-scratch'),
      FERRY_DIRECT_HTTP: 'false',
      FERRY_METRICS_PORT: String(port),
      FERRY_TERMINATION_LOG: term,
    }));
    // Wait until the transfer is under way (the metrics endpoint answers), then stop it.
    for (let i = 0; i < 100; i += 1) {
      if (await fetch(`http://127.0.0.1:${port}/metrics`).then(() => true, () => false)) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    proc.kill('SIGTERM');
    const r = await proc.done;
    expect(r.code).toBe(33);
    expect(decodeTermination(readFileSync(term, 'utf8'))).toMatchObject({ kind: 'failure', code: 'INTERRUPTED', retryable: true });
    expect(existsSync(disk)).toBe(false);
  });

  test('an invalid environment is INVALID_SPEC', async () => {
    const term = f('term-bad');
    const r = await runFerry(['importer'], podEnv({ IMPORTER_ENDPOINT: `${server.url}/disk.qcow2`, FERRY_METRICS_PORT: '0', FERRY_TERMINATION_LOG: term }));
    expect(r.code).toBe(2);
    expect(decodeTermination(readFileSync(term, 'utf8'))).toMatchObject({ kind: 'failure', code: 'INVALID_SPEC' });
  });
});
