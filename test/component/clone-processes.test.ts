/**
 * `ferry clone-source` and `ferry clone-target` as real processes on loopback, with the pods'
 * environments and mutual TLS from a throw-away CA: fs→fs, fs→block, block→fs (loop devices) and
 * archive, byte-identical and sparse; a wrong client certificate, a cut or corrupt stream and a
 * target too small each fail with their code and leave no disk.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, existsSync, linkSync, lstatSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, readSync, symlinkSync, writeFileSync, writeSync } from 'node:fs';
import { request } from 'node:https';
import { join, relative } from 'node:path';
import { CloneStreamEncoder, CLONE_ERROR_CODE_HEADER, CLONE_MEDIA_TYPE, CLONE_PATH } from '../../src/contract/clone-stream.js';
import { cloneClientName, encodeCloneSourceEnv, type CloneSourceConfig } from '../../src/contract/clone-env.js';
import { decodeTermination, type TerminationMessage } from '../../src/contract/termination.js';
import { encodeUploadServerEnv, type UploadServerConfig } from '../../src/contract/upload-server.js';
import { allocatedBytes, MiB, removeDir, sh, sha256File, tempDir } from '../helpers/fixtures.js';
import { attachLoop, detachLoops } from '../helpers/loop-device.js';
import { freePort, type ProcessResult, startFerry } from '../helpers/ferry-process.js';
import { issueCert, makeCa, type TestCa } from '../helpers/tls.js';

const CLIENT = cloneClientName({ namespace: 'golden', name: 'fedora' }, { namespace: 'alice', name: 'disk' });
const SIZE = 64 * MiB;
/** The source volume's disk (a filesystem source reads disk.img in its mount). */
let SOURCE: string;

let dir: string;
let serverCa: TestCa;
let clientCa: TestCa;
const f = (name: string): string => join(dir, name);
const loops: string[] = [];

function writeAt(path: string, offset: number, bytes: Buffer): void {
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    closeSync(fd);
  }
}

/** A 64 MiB disk with 6.5 MiB of data in five places, the rest holes. */
function makeSourceDisk(path: string): void {
  writeFileSync(path, '');
  sh('truncate', ['-s', String(SIZE), path]);
  writeAt(path, 0, randomBytes(4 * MiB));
  writeAt(path, 20 * MiB, randomBytes(MiB));
  writeAt(path, 40 * MiB + 4096, randomBytes(12 * 1024));
  writeAt(path, 50 * MiB, Buffer.alloc(MiB, 0x5a));
  writeAt(path, SIZE - 512 * 1024, randomBytes(512 * 1024));
}

function readRange(path: string, length: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(length);
    let at = 0;
    while (at < length) {
      const n = readSync(fd, buf, at, length - at, at);
      if (n === 0) break;
      at += n;
    }
    return buf.subarray(0, at);
  } finally {
    closeSync(fd);
  }
}

/** openssl's -subj takes `/` as a separator: CDI's client names carry two, escaped. */
const asSubject = (cn: string): string => cn.replaceAll('/', '\\/');

const sha = (buf: Buffer): string => createHash('sha256').update(buf).digest('hex');

let clientKeyFiles: { key: string; cert: string };

function pemFiles(name: string, pem: { key: string; cert: string }): { key: string; cert: string } {
  writeFileSync(f(`${name}.key`), pem.key);
  writeFileSync(f(`${name}.crt`), pem.cert);
  return { key: f(`${name}.key`), cert: f(`${name}.crt`) };
}

beforeAll(() => {
  dir = tempDir('ferry-clone-');
  serverCa = makeCa(dir, 'server-ca');
  clientCa = makeCa(dir, 'client-ca');
  pemFiles('server', issueCert(serverCa, 'server-pem', 'cdi-upload-disk.alice.svc', 'server'));
  clientKeyFiles = pemFiles('client', issueCert(clientCa, 'client-pem', asSubject(CLIENT), 'client'));
  mkdirSync(f('source-volume'));
  SOURCE = f('source-volume/disk.img');
  makeSourceDisk(SOURCE);
});

afterAll(() => {
  detachLoops(loops);
  removeDir(dir);
});

async function targetConfig(target: UploadServerConfig['target'], extra: Partial<UploadServerConfig> = {}): Promise<UploadServerConfig> {
  return {
    target,
    contentType: target.kind === 'directory' ? 'archive' : 'kubevirt',
    filesystemOverhead: 0,
    preallocation: false,
    tls: { keyFile: f('server.key'), certFile: f('server.crt'), clientCaFile: clientCa.caFile },
    clientName: CLIENT,
    port: await freePort(),
    host: '127.0.0.1',
    terminationLog: f(`target-termination-${Math.random().toString(36).slice(2)}`),
    ...extra,
  };
}

function sourceConfig(kind: CloneSourceConfig['kind'], path: string, port: number, client = clientKeyFiles): CloneSourceConfig {
  return {
    kind,
    path,
    url: `https://127.0.0.1:${port}${CLONE_PATH}`,
    tls: { keyFile: client.key, certFile: client.cert, serverCaFile: serverCa.caFile },
    terminationLog: f(`source-termination-${Math.random().toString(36).slice(2)}`),
  };
}

async function waitHealthy(port: number): Promise<void> {
  for (let i = 0; i < 150; i += 1) {
    const ok = await new Promise<boolean>((resolve) => {
      const req = request({ host: '127.0.0.1', port, path: '/healthz', ca: serverCa.cert, servername: 'localhost', agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      });
      req.on('error', () => resolve(false));
      req.end();
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`the clone target on port ${port} never became healthy`);
}

interface Outcome {
  readonly result: ProcessResult;
  readonly termination: TerminationMessage;
}

const outcomeOf = (result: ProcessResult, path: string): Outcome => ({ result, termination: decodeTermination(readFileSync(path, 'utf8')) });

/** Starts the target, runs the source against it, and returns both outcomes. */
async function clone(target: UploadServerConfig, source: CloneSourceConfig): Promise<{ target: Outcome; source: Outcome }> {
  const running = startFerry(['clone-target'], encodeUploadServerEnv(target), 120_000);
  try {
    await waitHealthy(target.port);
    const sent = await startFerry(['clone-source'], encodeCloneSourceEnv(source), 120_000).done;
    const received = await running.done;
    return { source: outcomeOf(sent, source.terminationLog), target: outcomeOf(received, target.terminationLog) };
  } finally {
    running.kill('SIGKILL');
  }
}

function expectSuccess(outcome: { target: Outcome; source: Outcome }): void {
  expect({ source: outcome.source.result.code, target: outcome.target.result.code, stderr: outcome.source.result.stderr + outcome.target.result.stderr }).toMatchObject({ source: 0, target: 0 });
  expect(outcome.target.termination).toMatchObject({ kind: 'success', sourceFormat: expect.any(String) });
}

describe('disks', () => {
  test('fs → fs: byte-identical (qemu-img compare), as sparse as the source, one transfer', async () => {
    const target = await targetConfig({ kind: 'file', path: f('fs-fs/disk.img') });
    const outcome = await clone(target, sourceConfig('fs', SOURCE, target.port));
    expectSuccess(outcome);
    expect(outcome.target.termination).toMatchObject({ diskSize: SIZE, message: expect.stringContaining(`${6.5 * MiB + 12 * 1024} bytes of data`) });
    sh('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', SOURCE, f('fs-fs/disk.img')]);
    expect(sha256File(f('fs-fs/disk.img'))).toBe(sha256File(SOURCE));
    const source = allocatedBytes(SOURCE);
    const copy = allocatedBytes(f('fs-fs/disk.img'));
    expect(copy).toBeLessThanOrEqual(source + 64 * 1024);
    expect(copy).toBeGreaterThanOrEqual(source - MiB); // the 0x5a run is data: only true zeros become holes
    expect(existsSync(f('fs-fs/disk.img.ferry-partial'))).toBe(false);
  });

  test('fs → fs into a larger volume: the disk grows to the capacity, sparsely', async () => {
    const target = await targetConfig({ kind: 'file', path: f('grow/disk.img') }, { capacity: 2 * SIZE });
    expectSuccess(await clone(target, sourceConfig('fs', SOURCE, target.port)));
    expect(lstatSync(f('grow/disk.img')).size).toBe(2 * SIZE);
    expect(sha(readRange(f('grow/disk.img'), SIZE))).toBe(sha256File(SOURCE));
    expect(allocatedBytes(f('grow/disk.img'))).toBeLessThanOrEqual(allocatedBytes(SOURCE) + 64 * 1024);
  });

  test('fs → block (loop device): identical, holes zeroed by discard, not by writing zeros', async () => {
    writeFileSync(f('device-backing'), Buffer.alloc(SIZE + 16 * MiB, 0xff)); // old contents the holes must not keep
    const device = attachLoop(f('device-backing'), loops);
    if (device === undefined) {
      console.warn('SKIPPED fs → block: losetup could not attach a loop device here');
      return;
    }
    const target = await targetConfig({ kind: 'block', path: device });
    const outcome = await clone(target, sourceConfig('fs', SOURCE, target.port));
    expectSuccess(outcome);
    expect(sha(readRange(device, SIZE))).toBe(sha256File(SOURCE));
    expect(readRange(device, SIZE + 16 * MiB).subarray(SIZE).every((b) => b === 0xff)).toBe(true); // past the virtual size: untouched
    // The loop device passes the discard on as holes in its backing file: only data (and the 16 MiB tail) stays allocated.
    expect(allocatedBytes(f('device-backing'))).toBeLessThanOrEqual(allocatedBytes(SOURCE) + 16 * MiB + 64 * 1024);
  });

  test('block (loop device, read-only) → fs: identical, holes found by zero detection', async () => {
    sh('cp', ['--sparse=always', SOURCE, f('source-for-device.img')]);
    const device = attachLoop(f('source-for-device.img'), loops, true);
    if (device === undefined) {
      console.warn('SKIPPED block → fs: losetup could not attach a loop device here');
      return;
    }
    const target = await targetConfig({ kind: 'file', path: f('block-fs/disk.img') });
    const outcome = await clone(target, sourceConfig('block', device, target.port));
    expectSuccess(outcome);
    expect(sha256File(f('block-fs/disk.img'))).toBe(sha256File(SOURCE));
    expect(allocatedBytes(f('block-fs/disk.img'))).toBeLessThanOrEqual(allocatedBytes(SOURCE) + 64 * 1024);
  });
});

/** What a tree holds, comparable between two trees: names, kinds, modes, contents, link targets, hard-link groups. */
function treeOf(root: string): string[] {
  const out: string[] = [];
  const inodes = new Map<number, string>();
  const walk = (d: string): void => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      const st = lstatSync(p);
      const rel = relative(root, p);
      if (st.isSymbolicLink()) out.push(`${rel} -> ${readlinkSync(p)}`);
      else if (st.isDirectory()) {
        out.push(`${rel}/ ${(st.mode & 0o777).toString(8)}`);
        walk(p);
      } else {
        const first = inodes.get(st.ino);
        if (first === undefined) inodes.set(st.ino, rel);
        out.push(`${rel} ${(st.mode & 0o777).toString(8)} ${sha(readFileSync(p))}${first !== undefined ? ` = ${first}` : ''}`);
      }
    }
  };
  walk(root);
  return out;
}

describe('archive content', () => {
  test('a directory tree: files, modes, symlinks, hard links; lost+found left out', async () => {
    const src = f('tree');
    mkdirSync(join(src, 'etc/conf.d'), { recursive: true });
    mkdirSync(join(src, 'lost+found'));
    writeFileSync(join(src, 'lost+found/junk'), 'x');
    writeFileSync(join(src, 'etc/hosts'), '127.0.0.1 localhost\n', { mode: 0o644 });
    writeFileSync(join(src, 'etc/conf.d/secret'), randomBytes(300_000), { mode: 0o600 });
    writeFileSync(join(src, 'run.sh'), '#!/bin/sh\necho hi\n', { mode: 0o755 });
    writeFileSync(join(src, 'empty'), '');
    linkSync(join(src, 'etc/hosts'), join(src, 'hosts-again'));
    symlinkSync('etc/hosts', join(src, 'hosts-link'));
    symlinkSync('../hosts', join(src, 'etc/conf.d/up'));
    const target = await targetConfig({ kind: 'directory', path: f('tree-copy') });
    const outcome = await clone(target, sourceConfig('archive', src, target.port));
    expectSuccess(outcome);
    expect(outcome.target.termination).toMatchObject({ sourceFormat: 'tar' });
    const expected = treeOf(src).filter((line) => !line.startsWith('lost+found'));
    expect(treeOf(f('tree-copy'))).toEqual(expected);
    expect(expected.some((line) => line.includes('= etc/hosts'))).toBe(true); // the hard link travelled as one
  });

  test('a FIFO in the source is UNSAFE_ARCHIVE before anything is sent', async () => {
    const src = f('tree-fifo');
    mkdirSync(src);
    writeFileSync(join(src, 'a'), 'a');
    sh('mkfifo', [join(src, 'pipe')]);
    const target = await targetConfig({ kind: 'directory', path: f('tree-fifo-copy') });
    const running = startFerry(['clone-target'], encodeUploadServerEnv(target), 60_000);
    try {
      await waitHealthy(target.port);
      const source = sourceConfig('archive', src, target.port);
      const sent = await startFerry(['clone-source'], encodeCloneSourceEnv(source), 60_000).done;
      expect(sent.code).toBe(25);
      expect(decodeTermination(readFileSync(source.terminationLog, 'utf8'))).toMatchObject({ kind: 'failure', code: 'UNSAFE_ARCHIVE' });
    } finally {
      running.kill('SIGTERM');
    }
    expect((await running.done).code).toBe(33);
    expect(existsSync(f('tree-fifo-copy/a'))).toBe(false);
  });
});

describe('refusals leave no disk', () => {
  test('a client certificate with another name is refused (401), and the target still waits for the right one', async () => {
    const other = pemFiles('other-client', issueCert(clientCa, 'other-pem', asSubject(cloneClientName({ namespace: 'golden', name: 'fedora' }, { namespace: 'mallory', name: 'disk' })), 'client'));
    const foreignCa = makeCa(dir, 'foreign-ca');
    const foreign = pemFiles('foreign-client', issueCert(foreignCa, 'foreign-pem', asSubject(CLIENT), 'client'));
    const target = await targetConfig({ kind: 'file', path: f('refused/disk.img') });
    const running = startFerry(['clone-target'], encodeUploadServerEnv(target), 60_000);
    try {
      await waitHealthy(target.port);
      for (const client of [other, foreign]) {
        const source = sourceConfig('fs', SOURCE, target.port, client);
        const sent = await startFerry(['clone-source'], encodeCloneSourceEnv(source), 60_000).done;
        expect(sent.code).toBe(11);
        expect(decodeTermination(readFileSync(source.terminationLog, 'utf8'))).toMatchObject({ kind: 'failure', code: 'UNAUTHORIZED' });
      }
      expect(existsSync(f('refused/disk.img'))).toBe(false);
      // The right client still gets its clone: the refusals did not use the target up.
      const sent = await startFerry(['clone-source'], encodeCloneSourceEnv(sourceConfig('fs', SOURCE, target.port)), 60_000).done;
      expect(sent.code).toBe(0);
      expect((await running.done).code).toBe(0);
      expect(sha256File(f('refused/disk.img'))).toBe(sha256File(SOURCE));
    } finally {
      running.kill('SIGKILL');
    }
  });

  test('target too small: TARGET_TOO_SMALL on both sides, nothing written', async () => {
    const target = await targetConfig({ kind: 'file', path: f('small/disk.img') }, { capacity: SIZE - MiB });
    const outcome = await clone(target, sourceConfig('fs', SOURCE, target.port));
    expect(outcome.target.result.code).toBe(23);
    expect(outcome.source.result.code).toBe(23);
    expect(outcome.target.termination).toMatchObject({ kind: 'failure', code: 'TARGET_TOO_SMALL' });
    expect(outcome.source.termination).toMatchObject({ kind: 'failure', code: 'TARGET_TOO_SMALL' });
    expect(existsSync(f('small/disk.img'))).toBe(false);
    expect(existsSync(f('small/disk.img.ferry-partial'))).toBe(false);
  });

  /** A stream POSTed by hand with the right certificate, whole or cut after `cutAfter` bytes. */
  async function sendRaw(port: number, body: Buffer, cutAfter?: number): Promise<{ status: number; code: string | undefined }> {
    return new Promise((resolve) => {
      const req = request(
        { host: '127.0.0.1', port, path: CLONE_PATH, method: 'POST', ca: serverCa.cert, key: readFileSync(clientKeyFiles.key), cert: readFileSync(clientKeyFiles.cert), agent: false, headers: { 'content-type': CLONE_MEDIA_TYPE } },
        (res) => {
          res.resume();
          resolve({ status: res.statusCode ?? 0, code: res.headers[CLONE_ERROR_CODE_HEADER] as string | undefined });
        },
      );
      req.on('error', () => resolve({ status: 0, code: undefined }));
      if (cutAfter === undefined) req.end(body);
      else req.write(body.subarray(0, cutAfter), () => setTimeout(() => req.destroy(), 200));
    });
  }

  function encodedSource(): Buffer {
    const disk = readFileSync(SOURCE);
    const e = new CloneStreamEncoder({ kind: 'fs', size: SIZE, blockSize: 4096 });
    return Buffer.concat([...e.start(), ...e.data(0, disk.subarray(0, 4 * MiB)), ...e.hole(4 * MiB, SIZE - 4 * MiB), ...e.end()]);
  }

  test('a stream cut off mid-extent: TRUNCATED (retryable), no disk.img and no partial file', async () => {
    const target = await targetConfig({ kind: 'file', path: f('cut/disk.img') });
    const running = startFerry(['clone-target'], encodeUploadServerEnv(target), 60_000);
    try {
      await waitHealthy(target.port);
      await sendRaw(target.port, encodedSource(), 2 * MiB);
      const result = await running.done;
      expect(result.code).toBe(14);
      expect(decodeTermination(readFileSync(target.terminationLog, 'utf8'))).toMatchObject({ kind: 'failure', code: 'TRUNCATED', retryable: true });
    } finally {
      running.kill('SIGKILL');
    }
    expect(existsSync(f('cut/disk.img'))).toBe(false);
    expect(existsSync(f('cut/disk.img.ferry-partial'))).toBe(false);
  });

  test('a changed byte: CHECKSUM_MISMATCH (400), no disk.img', async () => {
    const target = await targetConfig({ kind: 'file', path: f('corrupt/disk.img') });
    const running = startFerry(['clone-target'], encodeUploadServerEnv(target), 60_000);
    try {
      await waitHealthy(target.port);
      const body = encodedSource();
      body.writeUInt8(body.readUInt8(MiB) ^ 0x01, MiB);
      expect(await sendRaw(target.port, body)).toEqual({ status: 400, code: 'CHECKSUM_MISMATCH' });
      expect((await running.done).code).toBe(24);
    } finally {
      running.kill('SIGKILL');
    }
    expect(existsSync(f('corrupt/disk.img'))).toBe(false);
    expect(existsSync(f('corrupt/disk.img.ferry-partial'))).toBe(false);
  });
});
