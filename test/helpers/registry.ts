/**
 * A real container registry on loopback for tests and benchmarks: Debian's `docker-registry`
 * (distribution 2.8) as a child process with its config in a temp dir, optionally behind TLS (a
 * test CA), htpasswd basic auth, or bearer tokens from a tiny token server in this process. Test
 * images are written as OCI image layouts in TypeScript and pushed with `skopeo copy`.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { createHash, createPrivateKey, randomBytes, sign, X509Certificate } from 'node:crypto';
import { createReadStream, createWriteStream, mkdirSync, openSync, closeSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { join } from 'node:path';
import { PassThrough, Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';
import tar from 'tar-stream';
import { freePort } from './ferry-process.js';
import { sh } from './fixtures.js';
import { makePki } from './tls.js';

// ---------------------------------------------------------------------------------------------
// OCI image layouts

export const MediaType = {
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  OciConfig: 'application/vnd.oci.image.config.v1+json',
  LayerTar: 'application/vnd.oci.image.layer.v1.tar',
  LayerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
  LayerZstd: 'application/vnd.oci.image.layer.v1.tar+zstd',
} as const;

export type LayerEntry =
  | { readonly name: string; readonly type: 'directory' }
  /** A small file given inline. */
  | { readonly name: string; readonly content: Buffer | string }
  /** A file streamed from disk (big disks stay out of memory). */
  | { readonly name: string; readonly file: string };

export interface LayerSpec {
  readonly entries: readonly LayerEntry[];
  /** Default gzip. */
  readonly compression?: 'gzip' | 'zstd' | 'none';
  /** gzip level (default 6); the benchmark uses 1 for its big layer. */
  readonly gzipLevel?: number;
}

export interface ImageSpec {
  readonly layers: readonly LayerSpec[];
  readonly architecture?: string;
  readonly os?: string;
}

export interface Descriptor {
  readonly mediaType: string;
  readonly digest: string;
  readonly size: number;
  readonly platform?: { readonly architecture: string; readonly os: string };
}

export interface WrittenImage {
  /** What the tag points at: a manifest, or an index for several platforms. */
  readonly top: Descriptor;
  /** The layers of each image, in order, per platform "os/arch". */
  readonly layers: ReadonlyMap<string, readonly Descriptor[]>;
}

/** Counts and hashes the bytes that pass. */
function hashing(hash: ReturnType<typeof createHash>, counter: { n: number }): Transform {
  return new Transform({
    transform(chunk: Buffer, _enc, done) {
      hash.update(chunk);
      counter.n += chunk.length;
      done(null, chunk);
    },
  });
}

async function putBlob(blobs: string, data: Buffer | string, mediaType: string): Promise<Descriptor> {
  const bytes = Buffer.isBuffer(data) ? data : Buffer.from(data);
  const hex = createHash('sha256').update(bytes).digest('hex');
  writeFileSync(join(blobs, hex), bytes);
  return { mediaType, digest: `sha256:${hex}`, size: bytes.length };
}

/** Streams the tar of `entries` into `out`. */
async function packEntries(entries: readonly LayerEntry[], out: Writable): Promise<void> {
  const pack = tar.pack();
  const piping = pipeline(pack, out);
  for (const e of entries) {
    const base = { name: e.name, mtime: new Date(0), uid: 107, gid: 107 };
    if ('type' in e) {
      pack.entry({ ...base, type: 'directory', mode: 0o755 });
    } else if ('content' in e) {
      await new Promise<void>((resolve, reject) => pack.entry({ ...base, mode: 0o644 }, e.content, (err) => (err ? reject(err) : resolve())));
    } else {
      const size = Number(sh('stat', ['-c', '%s', e.file]).toString().trim());
      const sink = pack.entry({ ...base, mode: 0o644, size });
      await pipeline(createReadStream(e.file, { highWaterMark: 1 << 20 }), sink);
    }
  }
  pack.finalize();
  await piping;
}

/** Writes one layer blob; returns its descriptor and diff_id (sha256 of the uncompressed tar). */
async function writeLayer(blobs: string, spec: LayerSpec): Promise<{ descriptor: Descriptor; diffId: string }> {
  const compression = spec.compression ?? 'gzip';
  const tmp = join(blobs, `.tmp-${randomBytes(6).toString('hex')}`);
  const diff = createHash('sha256');
  const blob = createHash('sha256');
  const raw = { n: 0 };
  const packed = { n: 0 };
  const tarOut = new PassThrough({ highWaterMark: 1 << 20 });
  const file = createWriteStream(tmp);
  let compressing: Promise<void>;
  let child: ChildProcess | undefined;
  if (compression === 'gzip') {
    compressing = pipeline(tarOut, hashing(diff, raw), createGzip({ level: spec.gzipLevel ?? 6 }), hashing(blob, packed), file);
  } else if (compression === 'zstd') {
    child = spawn('zstd', ['-q', '-c', '-3'], { stdio: ['pipe', 'pipe', 'inherit'] });
    const exited = new Promise<void>((resolve, reject) => child?.once('close', (code) => (code === 0 ? resolve() : reject(new Error(`zstd exit ${code}`)))));
    compressing = Promise.all([
      pipeline(tarOut, hashing(diff, raw), child.stdin as Writable),
      pipeline(child.stdout as NodeJS.ReadableStream, hashing(blob, packed), file),
      exited,
    ]).then(() => undefined);
  } else {
    compressing = pipeline(tarOut, hashing(diff, raw), hashing(blob, packed), file);
  }
  await Promise.all([packEntries(spec.entries, tarOut), compressing]);
  const hex = blob.digest('hex');
  renameSync(tmp, join(blobs, hex));
  const mediaType = compression === 'gzip' ? MediaType.LayerGzip : compression === 'zstd' ? MediaType.LayerZstd : MediaType.LayerTar;
  return { descriptor: { mediaType, digest: `sha256:${hex}`, size: packed.n }, diffId: `sha256:${diff.digest('hex')}` };
}

async function writeImage(blobs: string, image: ImageSpec): Promise<{ manifest: Descriptor; layers: Descriptor[] }> {
  const layers: Descriptor[] = [];
  const diffIds: string[] = [];
  for (const spec of image.layers) {
    const { descriptor, diffId } = await writeLayer(blobs, spec);
    layers.push(descriptor);
    diffIds.push(diffId);
  }
  const architecture = image.architecture ?? 'amd64';
  const os = image.os ?? 'linux';
  const config = await putBlob(
    blobs,
    JSON.stringify({ architecture, os, config: { Labels: { 'ferry.test': 'yes' } }, rootfs: { type: 'layers', diff_ids: diffIds }, history: layers.map(() => ({ created_by: 'ferry test' })) }),
    MediaType.OciConfig,
  );
  const manifest = await putBlob(blobs, JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciManifest, config, layers }), MediaType.OciManifest);
  return { manifest: { ...manifest, platform: { architecture, os } }, layers };
}

/**
 * Writes an OCI image layout in `dir` (blobs/sha256/*, index.json, oci-layout) with one tag: a
 * single image, or an image index with one manifest per platform when given several images.
 */
export async function writeOciLayout(dir: string, tag: string, images: ImageSpec | readonly ImageSpec[]): Promise<WrittenImage> {
  const blobs = join(dir, 'blobs', 'sha256');
  mkdirSync(blobs, { recursive: true });
  const list = Array.isArray(images) ? (images as readonly ImageSpec[]) : [images as ImageSpec];
  const layers = new Map<string, Descriptor[]>();
  const manifests: Descriptor[] = [];
  for (const image of list) {
    const written = await writeImage(blobs, image);
    manifests.push(written.manifest);
    layers.set(`${written.manifest.platform?.os}/${written.manifest.platform?.architecture}`, written.layers);
  }
  let top: Descriptor;
  if (Array.isArray(images)) {
    top = await putBlob(blobs, JSON.stringify({ schemaVersion: 2, mediaType: MediaType.OciIndex, manifests }), MediaType.OciIndex);
  } else {
    const { platform: _omit, ...plain } = manifests[0] as Descriptor;
    top = plain;
  }
  writeFileSync(join(dir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  writeFileSync(join(dir, 'index.json'), JSON.stringify({ schemaVersion: 2, manifests: [{ ...top, annotations: { 'org.opencontainers.image.ref.name': tag } }] }));
  return { top, layers };
}

/** The path of a blob in the registry's filesystem storage (tests corrupt it there). */
export function registryBlobPath(registry: TestRegistry, digest: string): string {
  const hex = digest.replace(/^sha256:/, '');
  return join(registry.dataDir, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
}

// ---------------------------------------------------------------------------------------------
// The registry process

export interface TestRegistry {
  /** host:port, what goes after docker:// */
  readonly host: string;
  readonly pid: number;
  readonly dataDir: string;
  /** The CA file that signed the server certificate (TLS registries). */
  readonly caFile?: string;
  /** A directory holding only ca.crt: what skopeo's --dest-cert-dir wants. */
  readonly certDir?: string;
  stop(): Promise<void>;
}

export interface RegistryOptions {
  readonly tls?: boolean;
  readonly htpasswd?: { readonly user: string; readonly password: string };
  readonly token?: TokenServer;
}

const live = new Set<ChildProcess>();
let exitHook = false;

function quote(s: string): string {
  return JSON.stringify(s);
}

async function waitUntilServing(host: string, tls: boolean, child: ChildProcess, log: string): Promise<void> {
  const request = tls ? httpsRequest : httpRequest;
  for (let i = 0; i < 200; i += 1) {
    if (child.exitCode !== null) throw new Error(`docker-registry exited with ${child.exitCode}:\n${readFileSync(log, 'utf8').slice(-2000)}`);
    const ok = await new Promise<boolean>((resolve) => {
      const req = request(`${tls ? 'https' : 'http'}://${host}/v2/`, { rejectUnauthorized: false, timeout: 500 }, (res) => {
        res.resume();
        resolve(true);
      });
      req.on('error', () => resolve(false));
      req.on('timeout', () => req.destroy());
      req.end();
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`docker-registry did not answer on ${host}:\n${readFileSync(log, 'utf8').slice(-2000)}`);
}

/** Starts docker-registry on 127.0.0.1 with a free port; all state lives under `dir`. */
export async function startRegistry(dir: string, options: RegistryOptions = {}): Promise<TestRegistry> {
  mkdirSync(dir, { recursive: true });
  const port = await freePort();
  const host = `127.0.0.1:${port}`;
  const dataDir = join(dir, 'data');
  const lines = [
    'version: 0.1',
    'log: {level: warn, accesslog: {disabled: true}}',
    `storage: {filesystem: {rootdirectory: ${quote(dataDir)}}, delete: {enabled: true}}`,
  ];
  let caFile: string | undefined;
  let certDir: string | undefined;
  const http = [`addr: ${host}`, `secret: ${randomBytes(8).toString('hex')}`];
  if (options.tls) {
    const pki = makePki(dir);
    caFile = pki.caFile;
    writeFileSync(join(dir, 'tls.key'), pki.key);
    writeFileSync(join(dir, 'tls.crt'), pki.cert);
    http.push(`tls: {certificate: ${quote(join(dir, 'tls.crt'))}, key: ${quote(join(dir, 'tls.key'))}}`);
    certDir = join(dir, 'certs.d');
    mkdirSync(certDir, { recursive: true });
    writeFileSync(join(certDir, 'ca.crt'), readFileSync(pki.caFile));
  }
  lines.push(`http: {${http.join(', ')}}`);
  if (options.htpasswd) {
    const file = join(dir, 'htpasswd');
    sh('htpasswd', ['-Bbc', file, options.htpasswd.user, options.htpasswd.password]);
    lines.push(`auth: {htpasswd: {realm: ferry-test, path: ${quote(file)}}}`);
  } else if (options.token) {
    const t = options.token;
    lines.push(`auth: {token: {realm: ${quote(t.realm)}, service: ${quote(t.service)}, issuer: ${quote(t.issuer)}, rootcertbundle: ${quote(t.certFile)}}}`);
  }
  const config = join(dir, 'config.yml');
  writeFileSync(config, `${lines.join('\n')}\n`);
  const log = join(dir, 'registry.log');
  const fd = openSync(log, 'a');
  const child = spawn('docker-registry', ['serve', config], { stdio: ['ignore', fd, fd], cwd: dir });
  closeSync(fd);
  live.add(child);
  child.once('exit', () => live.delete(child));
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => {
      for (const c of live) c.kill('SIGKILL');
    });
  }
  try {
    await waitUntilServing(host, options.tls === true, child, log);
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  const pid = child.pid ?? -1;
  return {
    host,
    pid,
    dataDir,
    ...(caFile ? { caFile } : {}),
    ...(certDir ? { certDir } : {}),
    stop: () => stopChild(child),
  };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  process.kill(child.pid ?? -1, 'SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

export interface PushOptions {
  readonly creds?: string;
  /** Push Docker v2 schema 2 manifests (and a manifest list) instead of OCI. */
  readonly dockerV2?: boolean;
}

/**
 * `skopeo copy --all oci:<layout>:<tag> docker://<host>/<repo>:<tag>`. Asynchronous: a token
 * server in this process must keep answering while skopeo runs.
 */
export async function pushImage(layout: string, tag: string, registry: TestRegistry, repo: string, options: PushOptions = {}): Promise<void> {
  const tlsArgs = registry.certDir ? ['--dest-cert-dir', registry.certDir] : ['--dest-tls-verify=false'];
  const args = [
    '--insecure-policy',
    'copy',
    '--quiet',
    '--all',
    ...tlsArgs,
    ...(options.creds ? ['--dest-creds', options.creds] : []),
    // The registry then holds exactly the blobs written (tests corrupt them by digest); a
    // conversion to Docker v2s2 changes manifests, so it cannot preserve digests.
    ...(options.dockerV2 ? ['--format', 'v2s2'] : ['--preserve-digests']),
    `oci:${layout}:${tag}`,
    `docker://${registry.host}/${repo}:${tag}`,
  ];
  const child = spawn('skopeo', args, { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, TMPDIR: layout } });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-4000)));
  const timer = setTimeout(() => child.kill('SIGKILL'), 300_000);
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  clearTimeout(timer);
  if (code !== 0) throw new Error(`skopeo copy to ${registry.host}/${repo}:${tag} failed (${code}): ${stderr}`);
}

// ---------------------------------------------------------------------------------------------
// A bearer-token server (the Docker token protocol), RS256 JWTs with an x5c header

export interface TokenServer {
  /** http://127.0.0.1:<port>/token */
  readonly realm: string;
  readonly service: string;
  readonly issuer: string;
  /** PEM of the signing certificate: the registry's rootcertbundle. */
  readonly certFile: string;
  /** Every token request: the user (or "" for anonymous) and the scopes asked for. */
  readonly requests: Array<{ readonly user: string; readonly scopes: readonly string[] }>;
  close(): Promise<void>;
}

export interface TokenServerOptions {
  readonly users: Readonly<Record<string, string>>;
  /** Repositories under this prefix may be pulled anonymously (like public images on Docker Hub). */
  readonly publicPrefix?: string;
}

function b64url(data: Buffer | string): string {
  return Buffer.from(data).toString('base64url');
}

/** Starts a token service on 127.0.0.1 that grants what valid users ask for. */
export async function startTokenServer(dir: string, options: TokenServerOptions): Promise<TokenServer> {
  mkdirSync(dir, { recursive: true });
  const keyFile = join(dir, 'token.key');
  const certFile = join(dir, 'token.crt');
  sh('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=Ferry Test Token Issuer', '-keyout', keyFile, '-out', certFile]);
  const key = createPrivateKey(readFileSync(keyFile));
  const certDer = new X509Certificate(readFileSync(certFile)).raw;
  const service = 'ferry-test-registry';
  const issuer = 'ferry-test-issuer';
  const requests: Array<{ user: string; scopes: string[] }> = [];

  const issue = (user: string, access: Array<{ type: string; name: string; actions: string[] }>): string => {
    const now = Math.floor(Date.now() / 1000);
    const header = b64url(JSON.stringify({ typ: 'JWT', alg: 'RS256', x5c: [certDer.toString('base64')] }));
    const claims = b64url(JSON.stringify({ iss: issuer, sub: user, aud: service, exp: now + 300, nbf: now - 10, iat: now, jti: randomBytes(8).toString('hex'), access }));
    const signature = sign('sha256', Buffer.from(`${header}.${claims}`), key);
    return `${header}.${claims}.${b64url(signature)}`;
  };

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://x');
    const scopes = url.searchParams.getAll('scope').flatMap((s) => s.split(' ')).filter((s) => s !== '');
    let user = '';
    const auth = req.headers.authorization ?? '';
    if (auth.startsWith('Basic ')) {
      const [u, ...rest] = Buffer.from(auth.slice(6), 'base64').toString().split(':');
      if (u === undefined || options.users[u] !== rest.join(':')) {
        requests.push({ user: u ?? '', scopes });
        res.writeHead(401, { 'content-type': 'application/json' }).end(JSON.stringify({ details: 'incorrect username or password' }));
        return;
      }
      user = u;
    }
    requests.push({ user, scopes });
    const access = scopes.flatMap((scope) => {
      const [type, name, actions] = scope.split(':');
      if (type !== 'repository' || name === undefined || actions === undefined) return [];
      if (user !== '') return [{ type, name, actions: actions.split(',') }];
      return options.publicPrefix !== undefined && name.startsWith(options.publicPrefix) ? [{ type, name, actions: ['pull'] }] : [];
    });
    const token = issue(user, access);
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ token, access_token: token, expires_in: 300, issued_at: new Date().toISOString() }));
  };
  const server: Server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  return {
    realm: `http://127.0.0.1:${port}/token`,
    service,
    issuer,
    certFile,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
