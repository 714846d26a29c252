/**
 * `ferry uploadserver` and `ferry uploadproxy` as processes: the server's exits and termination
 * messages when no upload succeeds, and the proxy's start, refusals and SIGTERM.
 */

import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { readFileSync, writeFileSync } from 'node:fs';
import { request } from 'node:https';
import { join } from 'node:path';
import { decodeTermination } from '../../src/contract/termination.js';
import { UPLOAD_PROXY_CLIENT_NAME } from '../../src/contract/upload-api.js';
import { encodeUploadServerEnv, type UploadServerConfig } from '../../src/contract/upload-server.js';
import { generateKeyPairSync } from 'node:crypto';
import { signUploadToken, uploadClaims } from '../../src/contract/upload-token.js';
import { removeDir, tempDir } from '../helpers/fixtures.js';
import { freePort, startFerry } from '../helpers/ferry-process.js';
import { issueCert, makeCa, type TestCa } from '../helpers/tls.js';

let dir: string;
let serverCa: TestCa;
let config: UploadServerConfig;

beforeAll(async () => {
  dir = tempDir('ferry-upload-proc-');
  serverCa = makeCa(dir, 'server-ca');
  const clientCa = makeCa(dir, 'client-ca');
  const server = issueCert(serverCa, 'server', 'cdi-upload-disk.ns1.svc', 'server');
  writeFileSync(join(dir, 'tls.key'), server.key);
  writeFileSync(join(dir, 'tls.crt'), server.cert);
  config = {
    target: { kind: 'file', path: join(dir, 'disk.img') },
    contentType: 'kubevirt',
    filesystemOverhead: 0,
    preallocation: false,
    tls: { keyFile: join(dir, 'tls.key'), certFile: join(dir, 'tls.crt'), clientCaFile: clientCa.caFile },
    clientName: UPLOAD_PROXY_CLIENT_NAME,
    port: await freePort(),
    host: '127.0.0.1',
    terminationLog: join(dir, 'termination-log'),
  };
});

afterAll(() => removeDir(dir));

function statusOf(port: number, path: string, method = 'GET', headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve) => {
    const req = request({ host: '127.0.0.1', port, path, method, headers, ca: serverCa.cert, servername: 'localhost', agent: false }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', () => resolve(0));
    req.end();
  });
}

const healthy = async (port: number): Promise<boolean> => (await statusOf(port, '/healthz')) === 200;

async function waitHealthy(port: number): Promise<boolean> {
  for (let i = 0; i < 100; i += 1) {
    if (await healthy(port)) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
}

test('SIGTERM before any upload: INTERRUPTED (exit 33), in the termination message', async () => {
  const running = startFerry(['uploadserver'], encodeUploadServerEnv(config), 30_000);
  expect(await waitHealthy(config.port)).toBe(true);
  running.kill('SIGTERM');
  const result = await running.done;
  expect(result.code).toBe(33);
  expect(decodeTermination(readFileSync(config.terminationLog, 'utf8'))).toMatchObject({ kind: 'failure', code: 'INTERRUPTED', retryable: true });
});

test('a DEADLINE that passes with no upload: exits INTERRUPTED with deadlinePassed', async () => {
  const running = startFerry(['uploadserver'], encodeUploadServerEnv({ ...config, deadline: Date.now() + 1500 }), 30_000);
  const result = await running.done;
  expect(result.code).toBe(33);
  expect(decodeTermination(readFileSync(config.terminationLog, 'utf8'))).toMatchObject({ kind: 'failure', code: 'INTERRUPTED', message: expect.stringContaining('deadlinePassed') });
});

test('a configuration error: INVALID_SPEC naming the variable (exit 2), in the termination message', async () => {
  const env = { ...encodeUploadServerEnv(config), CLIENT_CERT_FILE: join(dir, 'missing.crt') };
  const result = await startFerry(['uploadserver'], env, 30_000).done;
  expect(result.code).toBe(2);
  const message = decodeTermination(readFileSync(config.terminationLog, 'utf8'));
  expect(message).toMatchObject({ kind: 'failure', code: 'INVALID_SPEC', message: expect.stringContaining('CLIENT_CERT_FILE') });
});

test('ferry uploadproxy: serves /healthz, refuses a missing (400) or forged (401) token, stops on SIGTERM', async () => {
  const signer = generateKeyPairSync('rsa', { modulusLength: 2048 });
  writeFileSync(join(dir, 'signer.pub'), signer.publicKey.export({ type: 'spki', format: 'pem' }));
  const port = await freePort();
  const running = startFerry(
    ['uploadproxy'],
    {
      APISERVER_PUBLIC_KEY_FILE: join(dir, 'signer.pub'),
      TLS_KEY_FILE: join(dir, 'tls.key'),
      TLS_CERT_FILE: join(dir, 'tls.crt'),
      UPLOAD_SERVER_CLIENT_KEY_FILE: join(dir, 'tls.key'),
      UPLOAD_SERVER_CLIENT_CERT_FILE: join(dir, 'tls.crt'),
      UPLOAD_SERVER_CA_CERT_FILE: serverCa.caFile,
      UPLOADPROXY_PORT: String(port),
      UPLOADPROXY_HOST: '127.0.0.1',
    },
    30_000,
  );
  try {
    expect(await waitHealthy(port)).toBe(true);
    expect(await statusOf(port, '/v1beta1/upload-async', 'HEAD')).toBe(400);
    const forged = signUploadToken(uploadClaims('ns1', 'disk', Date.now()), generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey);
    expect(await statusOf(port, '/v1beta1/upload-async', 'HEAD', { authorization: `Bearer ${forged}` })).toBe(401);
  } finally {
    running.kill('SIGTERM');
  }
  expect((await running.done).code).toBe(0);
});
