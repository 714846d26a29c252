/**
 * `ferry uploadserver` as the pod runs it (a child process of bin/ferry.js, configured by its
 * environment) receives a 1 GiB upload through the proxy with its memory flat: the body is
 * streamed, never buffered. Peak RSS is the child's VmHWM from /proc/<pid>/status.
 */

import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { createReadStream, readFileSync, writeFileSync } from 'node:fs';
import { request, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { silentLogger } from '../../src/logging.js';
import { decodeTermination } from '../../src/contract/termination.js';
import { UPLOAD_PROXY_CLIENT_NAME, UploadPath } from '../../src/contract/upload-api.js';
import { encodeUploadServerEnv } from '../../src/contract/upload-server.js';
import { signUploadToken, uploadClaims } from '../../src/contract/upload-token.js';
import { createUploadProxy } from '../../uploadproxy/proxy.js';
import { MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { FERRY_BIN, freePort } from '../helpers/ferry-process.js';
import { issueCert, makeCa } from '../helpers/tls.js';

const GiB = 1024 * MiB;
const RSS_LIMIT_KIB = 200 * 1024;

let dir: string;
let child: ChildProcess | undefined;
let proxy: Server | undefined;

beforeAll(() => {
  dir = tempDir('ferry-upload-mem-');
});

afterAll(async () => {
  if (child?.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGKILL');
  if (proxy) {
    proxy.closeAllConnections();
    await new Promise<void>((resolve) => proxy?.close(() => resolve()));
  }
  removeDir(dir);
});

function kib(status: string, field: string): number {
  const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
  return match ? Number(match[1]) : 0;
}

function get(port: number, path: string, ca: string): Promise<number> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, ca, servername: 'localhost', agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', () => resolve(0));
    req.end();
  });
}

test('a 1 GiB upload through the proxy: byte-identical, server peak RSS under 200 MiB, exit 0', async () => {
  const serverCa = makeCa(dir, 'server-ca');
  const clientCa = makeCa(dir, 'client-ca');
  const server = issueCert(serverCa, 'server', 'cdi-upload-disk.ns1.svc', 'server');
  const proxyClient = issueCert(clientCa, 'proxy-client', UPLOAD_PROXY_CLIENT_NAME, 'client');
  writeFileSync(join(dir, 'tls.key'), server.key);
  writeFileSync(join(dir, 'tls.crt'), server.cert);
  const port = await freePort();
  const target = join(dir, 'disk.img');
  const termination = join(dir, 'termination-log');
  const env = encodeUploadServerEnv({
    target: { kind: 'file', path: target },
    contentType: 'kubevirt',
    capacity: GiB,
    filesystemOverhead: 0,
    preallocation: false,
    tls: { keyFile: join(dir, 'tls.key'), certFile: join(dir, 'tls.crt'), clientCaFile: clientCa.caFile },
    clientName: UPLOAD_PROXY_CLIENT_NAME,
    port,
    host: '127.0.0.1',
    terminationLog: termination,
  });
  const spawned = spawn(process.execPath, [FERRY_BIN, 'uploadserver'], { env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  child = spawned;
  let logs = '';
  spawned.stdout?.on('data', (d: Buffer) => (logs = (logs + d.toString()).slice(-20_000)));
  spawned.stderr?.on('data', (d: Buffer) => (logs = (logs + d.toString()).slice(-20_000)));
  const exited = new Promise<number | null>((resolve) => spawned.on('exit', (code) => resolve(code)));
  const pid = spawned.pid as number;

  // Ready when /healthz answers (bounded: 100 × 100 ms).
  let ready = false;
  for (let i = 0; i < 100 && !ready; i += 1) {
    ready = (await get(port, '/healthz', serverCa.cert)) === 200;
    if (!ready) await new Promise((r) => setTimeout(r, 100));
  }
  expect(ready ? 'ready' : logs).toBe('ready');

  const signing = generateKeyPairSync('rsa', { modulusLength: 2048 });
  proxy = createUploadProxy({
    publicKey: signing.publicKey,
    serving: { key: server.key, cert: server.cert },
    client: { key: proxyClient.key, cert: proxyClient.cert, serverCa: serverCa.cert },
    targetStatus: async () => ({ kind: 'ready' }),
    resolveServer: () => ({ host: '127.0.0.1', port, servername: 'localhost' }),
    logger: silentLogger(),
  });
  await new Promise<void>((resolve) => proxy?.listen(0, '127.0.0.1', resolve));
  const proxyPort = (proxy.address() as AddressInfo).port;

  // 1 GiB of non-zero data (nothing sparse to skip), generated as it is sent.
  const block = randomBytes(MiB);
  const sent = createHash('sha256');
  async function* body(): AsyncGenerator<Buffer> {
    for (let i = 0; i < 1024; i += 1) {
      const chunk = Buffer.from(block);
      chunk.writeUInt32BE(i, 0);
      sent.update(chunk);
      yield chunk;
    }
  }
  let peakKib = 0;
  const sampler = setInterval(() => {
    try {
      peakKib = Math.max(peakKib, kib(readFileSync(`/proc/${pid}/status`, 'utf8'), 'VmHWM'));
    } catch {
      // exited
    }
  }, 100);
  const token = signUploadToken(uploadClaims('ns1', 'disk', Date.now()), signing.privateKey);
  const status = await new Promise<number>((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port: proxyPort, path: UploadPath.Sync, method: 'POST', ca: serverCa.cert, servername: 'localhost', agent: false, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/octet-stream', 'content-length': String(GiB) } },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    Readable.from(body()).pipe(req);
  });
  // The last sample before the process is gone holds the peak (VmHWM only grows).
  try {
    peakKib = Math.max(peakKib, kib(readFileSync(`/proc/${pid}/status`, 'utf8'), 'VmHWM'));
  } catch {
    // already exited
  }
  clearInterval(sampler);
  expect(status).toBe(200);
  expect(await exited).toBe(0);
  expect(decodeTermination(readFileSync(termination, 'utf8'))).toMatchObject({ kind: 'success', diskSize: GiB });
  const received = createHash('sha256');
  for await (const chunk of createReadStream(target)) received.update(chunk as Buffer);
  expect(received.digest('hex')).toBe(sent.digest('hex'));
  process.stdout.write(`upload server peak RSS (VmHWM): ${(peakKib / 1024).toFixed(1)} MiB for a 1 GiB upload\n`);
  expect(peakKib).toBeGreaterThan(0);
  expect(peakKib).toBeLessThan(RSS_LIMIT_KIB);
}, 180_000);
