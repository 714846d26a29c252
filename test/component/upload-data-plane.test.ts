/**
 * The upload data plane on loopback: a client → `ferry uploadproxy` (token check) → mutual TLS →
 * the upload server (the import engine) → a disk, with real TLS certificates made here and real
 * qemu-img. Each test gets its own upload server, as each PVC gets its own pod.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { generateKeyPairSync } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { request, type Server } from 'node:https';
import { connect as tlsConnect } from 'node:tls';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { PassThrough, type Readable } from 'node:stream';
import { silentLogger } from '../../src/logging.js';
import type { TerminationMessage } from '../../src/contract/termination.js';
import { UPLOAD_PROXY_CLIENT_NAME, UploadPath } from '../../src/contract/upload-api.js';
import type { UploadServerConfig } from '../../src/contract/upload-server.js';
import { PVC_RESOURCE, signUploadToken, TokenOperation, uploadClaims } from '../../src/contract/upload-token.js';
import { Progress } from '../../importer/progress.js';
import { createUploadServer, ERROR_CODE_HEADER } from '../../importer/upload-server.js';
import { createUploadProxy, type TargetStatus } from '../../uploadproxy/proxy.js';
import { fileFingerprint, uploadImage, UploadMethod } from '../../cli/upload/client.js';
import { startCuttingRelay } from '../helpers/upload-relay.js';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { encodeUploadMetadata, TUS_CONTENT_TYPE, TUS_VERSION } from '../../src/contract/upload-api.js';
import { ErrorCode, type FerryError } from '../../src/errors.js';
import { compress, convertImage, expectSameDisk, makeRawDisk, makeTar, MiB, removeDir, sh, tempDir } from '../helpers/fixtures.js';
import { FAST_TUNING } from '../helpers/engine.js';
import { issueCert, makeCa, type TestCa } from '../helpers/tls.js';

const NS = 'ns1';
const PVC = 'disk';
const SIZE = 8 * MiB;

let dir: string;
let serverCa: TestCa;
let clientCa: TestCa;
let rogueCa: TestCa;
let serverCert: { key: string; cert: string };
let proxyClient: { key: string; cert: string };
let rogueClient: { key: string; cert: string };
let wrongCnClient: { key: string; cert: string };
const signing = generateKeyPairSync('rsa', { modulusLength: 2048 });
const f = (name: string): string => join(dir, name);

beforeAll(async () => {
  dir = tempDir('ferry-upload-');
  serverCa = makeCa(dir, 'server-ca');
  clientCa = makeCa(dir, 'client-ca');
  rogueCa = makeCa(dir, 'rogue-ca');
  serverCert = issueCert(serverCa, 'server', 'cdi-upload-disk.ns1.svc', 'server');
  proxyClient = issueCert(clientCa, 'proxy-client', UPLOAD_PROXY_CLIENT_NAME, 'client');
  rogueClient = issueCert(rogueCa, 'rogue-client', UPLOAD_PROXY_CLIENT_NAME, 'client');
  wrongCnClient = issueCert(clientCa, 'wrong-cn', 'someone-else', 'client');
  makeRawDisk(f('disk.raw'), SIZE);
  convertImage(f('disk.raw'), 'qcow2', f('disk.qcow2'));
  compress('xz', f('disk.qcow2'), f('disk.qcow2.xz'));
  compress('xz', f('disk.raw'), f('disk.raw.xz'));
  compress('gzip', f('disk.raw'), f('disk.raw.gz'));
  await makeTar(f('data.tar'), [
    { name: 'dir', type: 'directory' },
    { name: 'dir/a.txt', content: 'hello upload\n' },
    { name: 'b.bin', content: 'x'.repeat(100_000) },
  ]);
});

afterAll(() => removeDir(dir));

interface Running {
  readonly port: number;
  readonly finished: Promise<TerminationMessage>;
  readonly progress: Progress;
  close(): Promise<void>;
}

async function listen(server: Server, port = 0): Promise<number> {
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return (server.address() as AddressInfo).port;
}

async function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

let serial = 0;
async function startServer(fields: Partial<UploadServerConfig> = {}, onPort = 0): Promise<Running & { readonly target: string }> {
  serial += 1;
  const target = fields.target?.path ?? f(`target-${serial}${fields.contentType === 'archive' ? '' : '.img'}`);
  const config: UploadServerConfig = {
    target: { kind: fields.contentType === 'archive' ? 'directory' : 'file', path: target },
    contentType: 'kubevirt',
    filesystemOverhead: 0,
    preallocation: false,
    tls: { keyFile: '', certFile: '', clientCaFile: '' },
    clientName: UPLOAD_PROXY_CLIENT_NAME,
    port: 0,
    terminationLog: '',
    ...('scratchDir' in fields ? {} : { scratchDir: f(`scratch-${serial}`) }),
    ...fields,
  };
  if (config.scratchDir !== undefined) sh('mkdir', ['-p', config.scratchDir]);
  const progress = new Progress();
  const upload = createUploadServer({ config, tls: { key: serverCert.key, cert: serverCert.cert, clientCa: clientCa.cert }, logger: silentLogger(), tuning: FAST_TUNING, progress });
  const port = await listen(upload.server, onPort);
  return { port, target, finished: upload.finished, progress, close: () => closeServer(upload.server) };
}

async function startProxy(serverPort: number, targetStatus: (ns: string, name: string) => Promise<TargetStatus> = async () => ({ kind: 'ready' }), readyWaitMs = 300): Promise<{ port: number; close(): Promise<void> }> {
  const server = createUploadProxy({
    publicKey: signing.publicKey,
    serving: { key: serverCert.key, cert: serverCert.cert },
    client: { key: proxyClient.key, cert: proxyClient.cert, serverCa: serverCa.cert },
    targetStatus,
    resolveServer: () => ({ host: '127.0.0.1', port: serverPort, servername: 'localhost' }),
    logger: silentLogger(),
    readyWaitMs,
    readyPollMs: 50,
  });
  const port = await listen(server);
  return { port, close: () => closeServer(server) };
}

const token = (claims = uploadClaims(NS, PVC, Date.now())): string => signUploadToken(claims, signing.privateKey);

interface Answer {
  readonly status: number;
  readonly body: string;
  readonly headers: Record<string, string | string[] | undefined>;
}

/** One request with a streamed body (a file, a buffer or a stream); TLS verified against the server CA. */
function send(
  port: number,
  path: string,
  options: { body?: string | Buffer | Readable; file?: string; bearer?: string; authorization?: string; method?: string; headers?: Record<string, string>; client?: { key: string; cert: string } } = {},
): Promise<Answer> {
  return new Promise<Answer>((resolve, reject) => {
    const headers: Record<string, string> = { 'content-type': 'application/octet-stream', ...options.headers };
    if (options.file !== undefined) headers['content-length'] = String(statSync(options.file).size);
    else if (typeof options.body === 'string' || Buffer.isBuffer(options.body)) headers['content-length'] = String(Buffer.byteLength(options.body));
    if (options.bearer !== undefined) headers.authorization = `Bearer ${options.bearer}`;
    if (options.authorization !== undefined) headers.authorization = options.authorization;
    const req = request(
      { host: '127.0.0.1', port, path, method: options.method ?? 'POST', headers, ca: serverCa.cert, servername: 'localhost', agent: false, ...(options.client ?? {}) },
      (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString(), headers: res.headers }));
        res.on('error', reject);
      },
    );
    // A server that refuses a body answers before it is all sent; the write side may then break.
    let answered = false;
    req.on('error', (err) => {
      if (!answered) reject(err);
    });
    if (options.file !== undefined) createReadStream(options.file).pipe(req);
    else if (options.body === undefined || typeof options.body === 'string' || Buffer.isBuffer(options.body)) req.end(options.body);
    else options.body.pipe(req);
  });
}

async function withPlane<T>(fields: Partial<UploadServerConfig>, run: (s: Running & { target: string }, proxyPort: number) => Promise<T>, status?: (ns: string, name: string) => Promise<TargetStatus>): Promise<T> {
  const server = await startServer(fields);
  const proxy = await startProxy(server.port, status);
  try {
    return await run(server, proxy.port);
  } finally {
    await proxy.close();
    await server.close();
  }
}

describe('uploads through proxy and server land byte-identical', () => {
  test('raw, sync', () =>
    withPlane({ capacity: SIZE }, async (server, proxy) => {
      const answer = await send(proxy, UploadPath.Sync, { file: f('disk.raw'), bearer: token() });
      expect(answer.status).toBe(200);
      expect((await server.finished).kind).toBe('success');
      expect(readFileSync(server.target).equals(readFileSync(f('disk.raw')))).toBe(true);
    }));

  test('qcow2, sync (scratch, then qemu-img): qemu-img compare says identical', () =>
    withPlane({ capacity: SIZE }, async (server, proxy) => {
      const answer = await send(proxy, UploadPath.Sync, { file: f('disk.qcow2'), bearer: token() });
      expect(answer).toMatchObject({ status: 200 });
      expect(await server.finished).toMatchObject({ kind: 'success', sourceFormat: 'qcow2' });
      sh('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', server.target, f('disk.raw')]);
      expect(expectSameDisk(server.target, f('disk.raw'))).toBe(true);
    }));

  test('qcow2.xz, async: 200 once the body is in, then the disk completes', () =>
    withPlane({ capacity: SIZE }, async (server, proxy) => {
      const answer = await send(proxy, UploadPath.Async, { file: f('disk.qcow2.xz'), bearer: token() });
      expect(answer.status).toBe(200);
      expect(await server.finished).toMatchObject({ kind: 'success', sourceFormat: 'qcow2+xz' });
      expect(expectSameDisk(server.target, f('disk.raw'))).toBe(true);
    }));

  test.each<[string, string, string]>([
    ['raw.xz (xz writes the file), v1alpha1 path', 'disk.raw.xz', UploadPath.AlphaSync],
    ['raw.gz (decompressed in node), chunked async', 'disk.raw.gz', UploadPath.Async],
  ])('%s', (_what, image, path) =>
    withPlane({ capacity: SIZE }, async (server, proxy) => {
      const answer = await send(proxy, path, { body: createReadStream(f(image)), bearer: token() });
      expect(answer.status).toBe(200);
      expect((await server.finished).kind).toBe('success');
      expect(readFileSync(server.target).equals(readFileSync(f('disk.raw')))).toBe(true);
    }));

  test('a tar archive into a directory target', () =>
    withPlane({ contentType: 'archive' }, async (server, proxy) => {
      const answer = await send(proxy, UploadPath.Sync, { file: f('data.tar'), bearer: token() });
      expect(answer.status).toBe(200);
      expect((await server.finished).kind).toBe('success');
      expect(readFileSync(join(server.target, 'dir/a.txt'), 'utf8')).toBe('hello upload\n');
      expect(readFileSync(join(server.target, 'b.bin'), 'utf8')).toBe('x'.repeat(100_000));
    }));

  test('the form path: the "file" field of a multipart body (chunked, no Content-Length)', () =>
    withPlane({ capacity: SIZE }, async (server, proxy) => {
      const boundary = 'ferry-boundary-1234';
      const body = new PassThrough();
      const answered = send(proxy, UploadPath.Form, { body, bearer: token(), headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } });
      body.write(`--${boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nnot the image\r\n`);
      body.write(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="disk.qcow2"\r\nContent-Type: application/octet-stream\r\n\r\n`);
      for await (const chunk of createReadStream(f('disk.qcow2'), { highWaterMark: 7777 })) body.write(chunk);
      body.end(`\r\n--${boundary}--\r\n`);
      expect((await answered).status).toBe(200);
      expect(await server.finished).toMatchObject({ kind: 'success', sourceFormat: 'qcow2' });
      expect(expectSameDisk(server.target, f('disk.raw'))).toBe(true);
    }));

  test('HEAD on the async path answers 200 (virtctl\'s probe); on the sync path 404', () =>
    withPlane({}, async (_server, proxy) => {
      expect((await send(proxy, UploadPath.Async, { method: 'HEAD', bearer: token() })).status).toBe(200);
      expect((await send(proxy, UploadPath.AlphaFormAsync, { method: 'HEAD', bearer: token() })).status).toBe(200);
      expect((await send(proxy, UploadPath.Sync, { method: 'HEAD', bearer: token() })).status).toBe(404);
      expect((await send(proxy, UploadPath.Sync, { method: 'GET', bearer: token() })).status).toBe(404);
      expect((await send(proxy, UploadPath.Healthz, { method: 'GET' })).status).toBe(200);
    }));
});

describe('the status table (cdi.md §3.1b)', () => {
  test('proxy: no or malformed Authorization 400, bad/forged/expired token 401, not an upload token 400', () =>
    withPlane({}, async (server, proxy) => {
      const body = 'x'.repeat(1000);
      expect((await send(proxy, UploadPath.Sync, { body })).status).toBe(400);
      expect((await send(proxy, UploadPath.Sync, { body, authorization: 'Basic abc' })).status).toBe(400);
      expect((await send(proxy, UploadPath.Sync, { body, bearer: 'not.a.token' })).status).toBe(401);
      const forged = signUploadToken(uploadClaims(NS, PVC, Date.now()), generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey);
      expect((await send(proxy, UploadPath.Sync, { body, bearer: forged })).status).toBe(401);
      expect((await send(proxy, UploadPath.Sync, { body, bearer: token(uploadClaims(NS, PVC, Date.now() - 20 * 60_000)) })).status).toBe(401);
      expect((await send(proxy, UploadPath.Sync, { body, bearer: token({ ...uploadClaims(NS, PVC, Date.now()), operation: TokenOperation.Clone }) })).status).toBe(400);
      expect((await send(proxy, UploadPath.Sync, { body, bearer: token({ ...uploadClaims(NS, PVC, Date.now()), resource: { ...PVC_RESOURCE, resource: 'pods' } }) })).status).toBe(400);
      // Nothing reached the server.
      expect(existsSync(server.target)).toBe(false);
    }));

  test('proxy: a token for another PVC reaches only that PVC, which is not an upload target here: 503', () =>
    withPlane(
      {},
      async (server, proxy) => {
        const answer = await send(proxy, UploadPath.Sync, { body: 'abc', bearer: token(uploadClaims(NS, 'other', Date.now())) });
        expect(answer.status).toBe(503);
        expect(answer.body).toContain('ns1/other');
        const another = await send(proxy, UploadPath.Sync, { body: 'abc', bearer: token(uploadClaims('ns2', PVC, Date.now())) });
        expect(another.status).toBe(503);
        expect(existsSync(server.target)).toBe(false);
      },
      async (ns, name) => (ns === NS && name === PVC ? { kind: 'ready' } : { kind: 'missing' }),
    ));

  test.each<[string, TargetStatus, string]>([
    ['server not ready within the wait', { kind: 'not-ready' }, 'not ready'],
    ['PVC already uploaded', { kind: 'succeeded' }, 'already finished uploading'],
    ['PVC not an upload target', { kind: 'not-upload-target' }, 'not an upload target'],
  ])('proxy: %s → 503', (_what, status, reason) =>
    withPlane(
      {},
      async (_server, proxy) => {
        const answer = await send(proxy, UploadPath.Sync, { body: 'abc', bearer: token() });
        expect(answer.status).toBe(503);
        expect(answer.body).toContain(reason);
      },
      async () => status,
    ));

  test('proxy: a target marked ready whose server takes no connection yet is waited for (a stale mark), then forwarded', async () => {
    const gone = await startServer({ capacity: SIZE });
    const port = gone.port;
    await gone.close();
    const proxy = await startProxy(port, async () => ({ kind: 'ready' }), 5000);
    let server: Awaited<ReturnType<typeof startServer>> | undefined;
    try {
      const answering = send(proxy.port, UploadPath.Sync, { file: f('disk.raw'), bearer: token() });
      // The replacement server comes up on the same address a moment later.
      await new Promise((r) => setTimeout(r, 400));
      server = await startServer({ capacity: SIZE }, port);
      expect((await answering).status).toBe(200);
      expect((await server.finished).kind).toBe('success');
      expect(readFileSync(server.target).equals(readFileSync(f('disk.raw')))).toBe(true);
    } finally {
      await proxy.close();
      await server?.close();
    }
  });

  test('proxy: the server unreachable → 502 "error in upload-proxy: ..."', async () => {
    const server = await startServer();
    const port = server.port;
    await server.close();
    const proxy = await startProxy(port);
    try {
      const answer = await send(proxy.port, UploadPath.Sync, { body: 'abc', bearer: token() });
      expect(answer.status).toBe(502);
      expect(answer.body).toMatch(/^error in upload-proxy: /);
    } finally {
      await proxy.close();
    }
  });

  test('server: a second concurrent upload 503; after success 409', () =>
    withPlane({ capacity: SIZE }, async (server, proxy) => {
      const started = new Promise<void>((resolve) => server.progress.subscribe((s) => s.bytes > 0 && resolve()));
      const body = new PassThrough();
      const first = send(proxy, UploadPath.Sync, { body, bearer: token(), headers: { 'content-length': String(SIZE) } });
      const bytes = readFileSync(f('disk.raw'));
      body.write(bytes.subarray(0, MiB));
      await started;
      const second = await send(proxy, UploadPath.Sync, { file: f('disk.raw'), bearer: token() });
      expect(second.status).toBe(503);
      body.end(bytes.subarray(MiB));
      expect((await first).status).toBe(200);
      const third = await send(proxy, UploadPath.Sync, { file: f('disk.raw'), bearer: token() });
      expect(third.status).toBe(409);
      expect(readFileSync(server.target).equals(bytes)).toBe(true);
    }));

  test('server: a client that breaks off mid-upload leaves nothing behind, and the next upload succeeds', () =>
    withPlane({ capacity: SIZE }, async (server, proxy) => {
      const started = new Promise<void>((resolve) => server.progress.subscribe((s) => s.bytes > 0 && resolve()));
      const req = request({ host: '127.0.0.1', port: proxy, path: UploadPath.Sync, method: 'POST', ca: serverCa.cert, servername: 'localhost', agent: false, headers: { authorization: `Bearer ${token()}`, 'content-length': String(SIZE) } });
      req.on('error', () => undefined);
      req.write(readFileSync(f('disk.raw')).subarray(0, 2 * MiB));
      await started;
      req.destroy();
      // Bounded: the server notices the broken body and is idle again (≤ 50 × 100 ms).
      let answer: Answer | undefined;
      for (let i = 0; i < 50; i += 1) {
        answer = await send(proxy, UploadPath.Sync, { file: f('disk.raw'), bearer: token() });
        if (answer.status !== 503) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(answer?.status).toBe(200);
      expect(readFileSync(server.target).equals(readFileSync(f('disk.raw')))).toBe(true);
      expect(existsSync(`${server.target}.ferry-partial`)).toBe(false);
    }));

  test.each<[string, string]>([
    ['raw larger than the volume (Content-Length)', 'disk.raw'],
    ['qcow2 whose virtual size is larger than the volume', 'disk.qcow2'],
  ])('server: %s → 400 with CDI\'s message; nothing left behind, and a retry is possible', (_what, image) =>
    withPlane({ capacity: SIZE / 2 }, async (server, proxy) => {
      const answer = await send(proxy, UploadPath.Sync, { file: f(image), bearer: token() });
      expect(answer.status).toBe(400);
      expect(answer.body).toMatch(/^Saving stream failed: effective image size is larger than the reported available storage: /);
      expect(answer.headers[ERROR_CODE_HEADER]).toBe('TARGET_TOO_SMALL');
      expect(existsSync(server.target)).toBe(false);
      // The server is idle again, not done: a fitting image is accepted.
      const retry = await send(proxy, UploadPath.Sync, { body: Buffer.alloc(SIZE / 2, 7), bearer: token() });
      expect(retry.status).toBe(200);
    }));

  test('server: a qcow2 with no scratch mounted → 500 saying so; the termination message asks for scratch', () =>
    withPlane({ capacity: SIZE, scratchDir: undefined }, async (server, proxy) => {
      const answer = await send(proxy, UploadPath.Async, { file: f('disk.qcow2'), bearer: token() });
      expect(answer.status).toBe(500);
      expect(answer.body).toContain('needs scratch space');
      expect(await server.finished).toMatchObject({ kind: 'success', scratchSpaceRequired: true });
      expect(existsSync(server.target)).toBe(false);
    }));

  test('server: a form upload without a file field → 400', () =>
    withPlane({}, async (_server, proxy) => {
      const boundary = 'b0';
      const answer = await send(proxy, UploadPath.Form, { body: `--${boundary}\r\nContent-Disposition: form-data; name="x"\r\n\r\nabc\r\n--${boundary}--\r\n`, bearer: token(), headers: { 'content-type': `multipart/form-data; boundary=${boundary}` } });
      expect(answer.status).toBe(400);
      expect(answer.body).toContain('no "file" field');
    }));

  test('server: refuses clients without the proxy\'s certificate (401); /healthz is open', async () => {
    const server = await startServer();
    try {
      const body = 'abc';
      expect((await send(server.port, UploadPath.Sync, { body })).status).toBe(401);
      expect((await send(server.port, UploadPath.Sync, { body, client: rogueClient })).status).toBe(401);
      expect((await send(server.port, UploadPath.Sync, { body, client: wrongCnClient })).status).toBe(401);
      expect((await send(server.port, UploadPath.Async, { method: 'HEAD', client: rogueClient })).status).toBe(401);
      expect((await send(server.port, UploadPath.Healthz, { method: 'GET' })).status).toBe(200);
      expect((await send(server.port, '/elsewhere', { body, client: proxyClient })).status).toBe(404);
      expect(existsSync(server.target)).toBe(false);
      // The proxy's certificate is served.
      expect((await send(server.port, UploadPath.Sync, { body: Buffer.alloc(MiB, 1), client: proxyClient })).status).toBe(200);
    } finally {
      await server.close();
    }
  });
});


describe('resumable uploads (tus 1.0 core on /v1beta1/upload-resumable, ADR 0010)', () => {
  const IMAGE = 32 * MiB;
  beforeAll(() => {
    // Incompressible, so the qcow2 is as large as the raw and every cut falls inside a body.
    writeFileSync(f('random.raw'), randomBytes(IMAGE));
    convertImage(f('random.raw'), 'qcow2', f('random.qcow2'));
  });

  test.each<[string, string]>([
    ['raw', 'random.raw'],
    ['qcow2', 'random.qcow2'],
  ])('%s: the connection cut at 30 %% and 70 %%; the client resumes; ≤ 1.1× the bytes; identical', (_what, image) =>
    withPlane({ capacity: IMAGE }, async (server, proxyPort) => {
      const size = statSync(f(image)).size;
      const relay = await startCuttingRelay(proxyPort, size, [0.3, 0.7]);
      const messages: string[] = [];
      let tokens = 0;
      try {
        const outcome = await uploadImage({
          proxyUrl: `https://127.0.0.1:${relay.port}`,
          file: f(image),
          size,
          token: async () => {
            tokens += 1;
            return token();
          },
          insecure: false,
          ca: serverCa.cert,
          retry: 5,
          onMessage: (m) => messages.push(m),
        });
        expect(relay.cuts()).toBe(2);
        expect(outcome.method).toBe(UploadMethod.Resumable);
        expect(outcome.resumes).toBeGreaterThanOrEqual(2);
        // What went over the wire: everything the relay carried (TLS, headers, HEADs and the resent
        // bytes). The client's own count also holds what died in its socket buffers at each cut.
        expect(relay.forwarded()).toBeGreaterThanOrEqual(size);
        expect(relay.forwarded()).toBeLessThanOrEqual(1.1 * size);
        expect(outcome.bytesWritten).toBeGreaterThanOrEqual(relay.forwarded() - 64 * 1024);
        expect(messages.filter((m) => m.startsWith('resuming the upload at byte')).length).toBeGreaterThanOrEqual(2);
        expect(tokens).toBe(1);
      } finally {
        await relay.close();
      }
      expect(await server.finished).toMatchObject({ kind: 'success' });
      expect(readFileSync(server.target).equals(readFileSync(f('random.raw')))).toBe(true);
      expect(existsSync(join(f(`scratch-${serial}`), 'resumable-upload.staged'))).toBe(false);
    }),
  60_000);

  const tus = (extra: Record<string, string> = {}): Record<string, string> => ({ 'tus-resumable': TUS_VERSION, ...extra });

  test('the tus rules: 412 without Tus-Resumable, 415, 409 with the durable offset, 400 on a changed length; HEAD reports the offset', () =>
    withPlane({ capacity: SIZE }, async (server, proxy) => {
      const raw = readFileSync(f('disk.raw'));
      const half = raw.subarray(0, raw.length / 2);
      const r = UploadPath.Resumable;
      expect((await send(proxy, r, { method: 'HEAD', bearer: token() })).status).toBe(412);
      const empty = await send(proxy, r, { method: 'HEAD', bearer: token(), headers: tus() });
      expect(empty.status).toBe(200);
      expect(empty.headers).toMatchObject({ 'upload-offset': '0', 'upload-defer-length': '1', 'tus-resumable': TUS_VERSION });
      expect((await send(proxy, r, { method: 'PATCH', bearer: token(), body: half, headers: tus({ 'upload-offset': '0', 'upload-length': String(raw.length) }) })).status).toBe(415);
      expect((await send(proxy, r, { method: 'PATCH', bearer: token(), body: half, headers: tus({ 'content-type': TUS_CONTENT_TYPE, 'upload-offset': '0' }) })).status).toBe(400);
      const first = await send(proxy, r, { method: 'PATCH', bearer: token(), body: half, headers: tus({ 'content-type': TUS_CONTENT_TYPE, 'upload-offset': '0', 'upload-length': String(raw.length) }) });
      expect(first.status).toBe(204);
      expect(first.headers['upload-offset']).toBe(String(half.length));
      const stale = await send(proxy, r, { method: 'PATCH', bearer: token(), body: half, headers: tus({ 'content-type': TUS_CONTENT_TYPE, 'upload-offset': '0' }) });
      expect(stale).toMatchObject({ status: 409 });
      expect(stale.headers['upload-offset']).toBe(String(half.length));
      const changed = await send(proxy, r, { method: 'PATCH', bearer: token(), body: half, headers: tus({ 'content-type': TUS_CONTENT_TYPE, 'upload-offset': String(half.length), 'upload-length': String(raw.length + 1) }) });
      expect(changed.status).toBe(400);
      expect(await send(proxy, r, { method: 'HEAD', bearer: token(), headers: tus() })).toMatchObject({ status: 200, headers: expect.objectContaining({ 'upload-offset': String(half.length), 'upload-length': String(raw.length) }) });
      // A one-shot upload while a resumable one holds the target: 503, as for any second upload.
      expect((await send(proxy, UploadPath.Sync, { body: raw, bearer: token() })).status).toBe(503);
      // No token, no offset: the proxy checks every request.
      expect((await send(proxy, r, { method: 'HEAD', headers: tus() })).status).toBe(400);
      expect((await send(proxy, r, { method: 'HEAD', bearer: 'forged.token.here', headers: tus() })).status).toBe(401);
      const rest = await send(proxy, r, { method: 'PATCH', bearer: token(), body: raw.subarray(half.length), headers: tus({ 'content-type': TUS_CONTENT_TYPE, 'upload-offset': String(half.length) }) });
      expect(rest.status).toBe(204);
      expect(rest.headers['upload-offset']).toBe(String(raw.length));
      expect(await server.finished).toMatchObject({ kind: 'success' });
      expect(readFileSync(server.target).equals(raw)).toBe(true);
      expect((await send(proxy, r, { method: 'HEAD', bearer: token(), headers: tus() })).status).toBe(409);
    }));

  test('a token that expires during the upload: the resumed request gets a new one; a wrong token aborts at once', () =>
    withPlane({ capacity: IMAGE }, async (server, proxyPort) => {
      const size = statSync(f('random.raw')).size;
      // Held 3 s after the cut: the first token (valid for 1–2 s) has expired when the client resumes.
      const relay = await startCuttingRelay(proxyPort, size, [0.3], 3000);
      const issued: number[] = [];
      try {
        const outcome = await uploadImage({
          proxyUrl: `https://127.0.0.1:${relay.port}`,
          file: f('random.raw'),
          size,
          token: async () => {
            issued.push(Date.now());
            return issued.length === 1 ? signUploadToken(uploadClaims(NS, PVC, Date.now(), -8), signing.privateKey) : token();
          },
          insecure: false,
          ca: serverCa.cert,
          retry: 5,
        });
        expect(outcome.method).toBe(UploadMethod.Resumable);
        expect(issued).toHaveLength(2);
        expect(relay.forwarded()).toBeLessThanOrEqual(1.1 * size);
      } finally {
        await relay.close();
      }
      expect(await server.finished).toMatchObject({ kind: 'success' });
      expect(readFileSync(server.target).equals(readFileSync(f('random.raw')))).toBe(true);
      const forged = (await uploadImage({ proxyUrl: `https://127.0.0.1:${proxyPort}`, file: f('random.raw'), size, token: async () => 'abc.def.ghi', insecure: false, ca: serverCa.cert, retry: 5 }).catch((e: unknown) => e)) as FerryError;
      expect(forged).toMatchObject({ code: ErrorCode.Unauthorized });
      expect((forged as FerryError).message).toMatch(/^authentication failed: upload refused \(HTTP 401\)/);
    }),
  60_000);

  test('a target that stays unavailable (503): --retry attempts, then the server\'s reason', () =>
    withPlane(
      {},
      async (_server, proxy) => {
        const messages: string[] = [];
        const error = (await uploadImage({ proxyUrl: `https://127.0.0.1:${proxy}`, file: f('disk.raw'), size: SIZE, token: async () => token(), insecure: false, ca: serverCa.cert, retry: 3, onMessage: (m) => messages.push(m) }).catch((e: unknown) => e)) as FerryError;
        expect(error).toMatchObject({ code: ErrorCode.SourceUnavailable });
        expect(error.message).toBe(`error uploading image after 3 retries: upload refused (HTTP 503): rejecting Upload Request for PVC ${NS}/${PVC} that already finished uploading`);
        expect(messages.filter((m) => m.startsWith('upload attempt'))).toHaveLength(3);
      },
      async () => ({ kind: 'succeeded' }),
    ));

  test('without scratch the resumable path is not offered (404) and the client falls back to virtctl\'s one-shot', () =>
    withPlane({ capacity: SIZE, scratchDir: undefined }, async (server, proxy) => {
      expect((await send(proxy, UploadPath.Resumable, { method: 'HEAD', bearer: token(), headers: tus() })).status).toBe(404);
      const outcome = await uploadImage({ proxyUrl: `https://127.0.0.1:${proxy}`, file: f('disk.raw'), size: SIZE, token: async () => token(), insecure: false, ca: serverCa.cert, retry: 2 });
      expect(outcome).toMatchObject({ method: UploadMethod.Async, attempts: 1, bytesWritten: SIZE });
      expect((await server.finished).kind).toBe('success');
      expect(readFileSync(server.target).equals(readFileSync(f('disk.raw')))).toBe(true);
    }));
});

describe('raw resumable uploads are written in place (ADR 0010, "Raw uploads in place")', () => {
  const IMAGE = 16 * MiB;
  const CUT = 9 * MiB + 512 * 1024;
  const tus = (extra: Record<string, string> = {}): Record<string, string> => ({ 'tus-resumable': TUS_VERSION, ...extra });
  const patch = (offset: number, fingerprint?: string): Record<string, string> =>
    tus({ 'content-type': TUS_CONTENT_TYPE, 'upload-offset': String(offset), 'upload-length': String(IMAGE), ...(fingerprint !== undefined ? { 'upload-metadata': encodeUploadMetadata({ fingerprint }) } : {}) });
  let image: Buffer;
  beforeAll(() => {
    // Data at both ends and across the cut, zeros between: the zeros must stay holes.
    image = Buffer.alloc(IMAGE);
    randomBytes(MiB).copy(image, 0);
    randomBytes(2 * MiB).copy(image, 8 * MiB);
    randomBytes(MiB).copy(image, IMAGE - MiB);
    writeFileSync(f('sparse.raw'), image);
  });

  test('cut, then a new server on the same volumes: resumed from the record, no staged copy, sparse, the disk named only when complete', async () => {
    const first = await startServer({ capacity: IMAGE });
    const scratch = f(`scratch-${serial}`);
    const target = first.target;
    let proxy = await startProxy(first.port);
    const fp = await fileFingerprint(f('sparse.raw'), IMAGE);
    try {
      const part = await send(proxy.port, UploadPath.Resumable, { method: 'PATCH', bearer: token(), body: image.subarray(0, CUT), headers: patch(0, fp) });
      expect(part).toMatchObject({ status: 204, headers: expect.objectContaining({ 'upload-offset': String(CUT) }) });
      // The bytes are in the target's upload file, not on scratch; the record (on scratch) says so.
      expect(existsSync(join(scratch, 'resumable-upload.staged'))).toBe(false);
      expect(JSON.parse(readFileSync(join(scratch, 'resumable-upload.staged.offset'), 'utf8'))).toEqual({ offset: CUT, length: IMAGE, mode: 'in-place', fingerprint: fp });
      expect(existsSync(`${target}.ferry-upload`)).toBe(true);
      expect(existsSync(target)).toBe(false);
    } finally {
      await proxy.close();
      await first.close();
    }
    // The pod is replaced: a new server on the same target and scratch resumes from the record.
    const second = await startServer({ capacity: IMAGE, target: { kind: 'file', path: target }, scratchDir: scratch });
    proxy = await startProxy(second.port);
    try {
      const head = await send(proxy.port, UploadPath.Resumable, { method: 'HEAD', bearer: token(), headers: tus({ 'upload-metadata': encodeUploadMetadata({ fingerprint: fp }) }) });
      expect(head).toMatchObject({ status: 200, headers: expect.objectContaining({ 'upload-offset': String(CUT), 'upload-length': String(IMAGE) }) });
      const rest = await send(proxy.port, UploadPath.Resumable, { method: 'PATCH', bearer: token(), body: image.subarray(CUT), headers: patch(CUT, fp) });
      expect(rest).toMatchObject({ status: 204, headers: expect.objectContaining({ 'upload-offset': String(IMAGE) }) });
      expect(await second.finished).toMatchObject({ kind: 'success', sourceFormat: 'raw', diskSize: IMAGE });
    } finally {
      await proxy.close();
      await second.close();
    }
    expect(readFileSync(target).equals(image)).toBe(true);
    // 4 MiB of data; the 12 MiB of zeros are holes (allowing a few blocks of metadata).
    expect(statSync(target).blocks * 512).toBeLessThan(5 * MiB);
    expect(existsSync(`${target}.ferry-upload`)).toBe(false);
    expect(existsSync(join(scratch, 'resumable-upload.staged.offset'))).toBe(false);
  }, 60_000);

  test('a fixed VHD (raw with a footer after the disk), one footer larger than the volume: accepted (in place, unit-tested verdict), the footer cut, the disk exact', async () => {
    convertImage(f('disk.raw'), 'vpc', f('fixed.vhd'), ['-o', 'subformat=fixed']);
    const vhd = readFileSync(f('fixed.vhd'));
    const disk = vhd.length - 512;
    await withPlane({ capacity: disk }, async (server, proxy) => {
      const outcome = await uploadImage({ proxyUrl: `https://127.0.0.1:${proxy}`, file: f('fixed.vhd'), size: vhd.length, token: async () => token(), insecure: false, ca: serverCa.cert, retry: 1 });
      expect(outcome.method).toBe(UploadMethod.Resumable);
      expect(await server.finished).toMatchObject({ kind: 'success', diskSize: disk });
      expect(readFileSync(server.target).equals(vhd.subarray(0, disk))).toBe(true);
      expect(existsSync(join(f(`scratch-${serial}`), 'resumable-upload.staged'))).toBe(false);
    });
  }, 60_000);

  test('a raw image larger than the volume: 400 with CDI\'s message before a byte is written; the server takes another upload', () =>
    withPlane({ capacity: 8 * MiB }, async (server, proxy) => {
      const refused = await send(proxy, UploadPath.Resumable, { method: 'PATCH', bearer: token(), body: image.subarray(0, 2 * MiB), headers: patch(0) });
      expect(refused.status).toBe(400);
      expect(refused.body).toMatch(/^Saving stream failed: effective image size is larger than the reported available storage: the raw image has 16777216 bytes; the usable target capacity is 8388608/);
      expect(refused.headers[ERROR_CODE_HEADER]).toBe(ErrorCode.TargetTooSmall);
      expect(existsSync(`${server.target}.ferry-upload`)).toBe(false);
      expect(existsSync(server.target)).toBe(false);
      expect(await send(proxy, UploadPath.Resumable, { method: 'HEAD', bearer: token(), headers: tus() })).toMatchObject({ status: 200, headers: expect.objectContaining({ 'upload-offset': '0' }) });
      const outcome = await uploadImage({ proxyUrl: `https://127.0.0.1:${proxy}`, file: f('disk.raw'), size: SIZE, token: async () => token(), insecure: false, ca: serverCa.cert, retry: 2 });
      expect(outcome.method).toBe(UploadMethod.Resumable);
      expect(await server.finished).toMatchObject({ kind: 'success' });
      expect(readFileSync(server.target).equals(readFileSync(f('disk.raw')))).toBe(true);
    }));
});

describe('a staged upload is resumed only by the same file (ADR 0010, "Which file is resumed")', () => {
  const LENGTH = 8 * MiB;
  const tus = { 'tus-resumable': TUS_VERSION, 'content-type': TUS_CONTENT_TYPE };
  beforeAll(() => {
    writeFileSync(f('one.raw'), randomBytes(LENGTH));
    writeFileSync(f('other.raw'), randomBytes(LENGTH));
    writeFileSync(f('two.raw'), randomBytes(2 * LENGTH));
    convertImage(f('two.raw'), 'qcow2', f('two.qcow2'));
  });
  const flip = (bytes: Buffer, at: number): void => void bytes.writeUInt8(bytes.readUInt8(at) ^ 0xff, at);

  test.each<[string, string, boolean]>([
    ['another file of the same length starts over from byte 0', 'other.raw', false],
    ['the same file resumes where the first left off', 'one.raw', true],
  ])('%s', (_what, file, resumes) =>
    withPlane({ capacity: LENGTH }, async (server, proxy) => {
      const half = readFileSync(f('one.raw')).subarray(0, LENGTH / 2);
      const fp = await fileFingerprint(f('one.raw'), LENGTH);
      const part = await send(proxy, UploadPath.Resumable, { method: 'PATCH', bearer: token(), body: half, headers: { ...tus, 'upload-offset': '0', 'upload-length': String(LENGTH), 'upload-metadata': encodeUploadMetadata({ fingerprint: fp }) } });
      expect(part.status).toBe(204);
      const outcome = await uploadImage({ proxyUrl: `https://127.0.0.1:${proxy}`, file: f(file), size: LENGTH, token: async () => token(), insecure: false, ca: serverCa.cert, retry: 2 });
      expect(outcome.method).toBe(UploadMethod.Resumable);
      if (resumes) expect(outcome.bytesWritten).toBe(LENGTH / 2);
      else expect(outcome.bytesWritten).toBe(LENGTH);
      expect(await server.finished).toMatchObject({ kind: 'success' });
      expect(readFileSync(server.target).equals(readFileSync(f(file)))).toBe(true);
    }));

  test('staged on scratch too (a qcow2): another file of the same length is not appended to it', () =>
    withPlane({ capacity: 2 * LENGTH }, async (server, proxy) => {
      const qcow2 = readFileSync(f('two.qcow2'));
      const other = Buffer.from(qcow2);
      // Same length; another byte in a data cluster of the first half (appending to the staged half
      // would lose it) and in the last cluster (so the fingerprint, which reads the ends, differs).
      flip(other, Math.floor(other.length / 4));
      flip(other, other.length - 1);
      writeFileSync(f('other.qcow2'), other);
      sh('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', f('other.qcow2'), f('other-qcow2.raw')]);
      expect(readFileSync(f('other-qcow2.raw')).equals(readFileSync(f('two.raw')))).toBe(false);
      const fp = await fileFingerprint(f('two.qcow2'), qcow2.length);
      const part = await send(proxy, UploadPath.Resumable, { method: 'PATCH', bearer: token(), body: qcow2.subarray(0, qcow2.length / 2), headers: { ...tus, 'upload-offset': '0', 'upload-length': String(qcow2.length), 'upload-metadata': encodeUploadMetadata({ fingerprint: fp }) } });
      expect(part.status).toBe(204);
      expect(existsSync(join(f(`scratch-${serial}`), 'resumable-upload.staged'))).toBe(true);
      const outcome = await uploadImage({ proxyUrl: `https://127.0.0.1:${proxy}`, file: f('other.qcow2'), size: other.length, token: async () => token(), insecure: false, ca: serverCa.cert, retry: 2 });
      expect(outcome.bytesWritten).toBe(other.length);
      expect(await server.finished).toMatchObject({ kind: 'success', sourceFormat: 'qcow2' });
      expect(readFileSync(server.target).equals(readFileSync(f('other-qcow2.raw')))).toBe(true);
    }),
  60_000);
});

describe('an early answer stops the body: client and proxy stop sending (issue #14)', () => {
  const BIG = 96 * MiB;
  beforeAll(() => writeFileSync(f('big.raw'), randomBytes(BIG)));

  test.each<[string, boolean]>([
    ['resumable (tus): refused from its first bytes', true],
    ['one-shot (virtctl\'s POST): refused from its Content-Length', false],
  ])('an image too big for the volume, %s: 400 with CDI\'s message, and far less than the image crosses the wire', (_what, resumable) =>
    withPlane({ capacity: 8 * MiB }, async (server, proxyPort) => {
      // A relay that only counts: what the client put on the wire towards the proxy.
      const relay = await startCuttingRelay(proxyPort, BIG, []);
      const started = Date.now();
      try {
        const error = (await uploadImage({ proxyUrl: `https://127.0.0.1:${relay.port}`, file: f('big.raw'), size: BIG, token: async () => token(), insecure: false, ca: serverCa.cert, retry: 1, resumable }).catch((e: unknown) => e)) as FerryError;
        expect(error).toMatchObject({ code: ErrorCode.TargetTooSmall });
        expect(error.message).toMatch(/upload refused \(HTTP 400\): Saving stream failed: effective image size is larger than the reported available storage/);
        process.stderr.write(`early answer (${resumable ? 'tus' : 'one-shot'}): ${relay.forwarded()} bytes of a ${BIG}-byte image crossed the relay in ${Date.now() - started} ms\n`);
        expect(relay.forwarded()).toBeLessThan(BIG / 4);
      } finally {
        await relay.close();
      }
      expect(existsSync(server.target)).toBe(false);
    }),
  60_000);

  test('a client that does not stop (it never looks at the answer while sending): the proxy stops reading its body and cuts it off; the answer still reaches it', () =>
    withPlane({ capacity: 8 * MiB }, async (server, proxyPort) => {
      const relay = await startCuttingRelay(proxyPort, BIG, []);
      try {
        // As Go's transport (virtctl) does: the body is written on, whatever comes back (Node's own
        // client stops at an early answer). Raw TLS: the request head, then the file; settles at close.
        const answer = await new Promise<{ status: number; body: string }>((resolve) => {
          const received: Buffer[] = [];
          const socket = tlsConnect({ host: '127.0.0.1', port: relay.port, ca: serverCa.cert, servername: 'localhost' }, () => {
            socket.write(`POST ${UploadPath.Sync} HTTP/1.1\r\nhost: localhost\r\ncontent-type: application/octet-stream\r\ncontent-length: ${BIG}\r\nauthorization: Bearer ${token()}\r\n\r\n`);
            createReadStream(f('big.raw')).pipe(socket);
          });
          socket.on('data', (c: Buffer) => received.push(c));
          socket.on('error', () => undefined);
          socket.on('close', () => {
            const text = Buffer.concat(received).toString('latin1');
            resolve({ status: Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0), body: text.split('\r\n\r\n').slice(1).join('\r\n\r\n') });
          });
        });
        expect(answer.status).toBe(400);
        expect(answer.body).toMatch(/^Saving stream failed: effective image size is larger than the reported available storage/);
        process.stderr.write(`early answer, a client that keeps sending: ${relay.forwarded()} bytes of a ${BIG}-byte image crossed the relay\n`);
        expect(relay.forwarded()).toBeLessThan(BIG / 4);
      } finally {
        await relay.close();
      }
      expect(existsSync(server.target)).toBe(false);
    }),
  60_000);
});
