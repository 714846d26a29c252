/**
 * The bundled entry points (scripts/bundle.ts, dist/bundle/) as the images ship them: bin/ferry.js,
 * package.json and the bundle in a folder with no node_modules and no tsc output anywhere above it,
 * so every module a run needs must come from the bundle. `ferry import` and the importer pod
 * program run end to end against real HTTP servers on loopback, through the paths that load code
 * lazily (tar-stream for archives, the proxy agents, prom-client, the S3 and registry sources); and
 * bin/ferry.js's choice between the bundle and tsc's output.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { decodeTermination } from '../../src/contract/termination.js';
import { compress, convertImage, expectSameDisk, makeRawDisk, makeTar, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import { freePort, REPO_ROOT, type ProcessResult } from '../helpers/ferry-process.js';
import { startServer, type TestServer } from '../helpers/http-server.js';
import { startProxy, type TestProxy } from '../helpers/proxy.js';
import { makePki, type TestPki } from '../helpers/tls.js';
import { pushImage, startRegistry, type TestRegistry, writeOciLayout } from '../helpers/registry.js';

let dir: string;
let install: string;
let server: TestServer;
let secure: TestServer;
let pki: TestPki;
let proxy: TestProxy;
let registry: TestRegistry;
let raw: string;
const f = (name: string): string => join(dir, name);

/** A node process run to its end (SIGKILL after `timeoutMs`), PATH and HOME only plus `env`. */
function run(command: string, args: readonly string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 120_000): Promise<ProcessResult> {
  const child = spawn(command, args, { env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  return new Promise((resolve) => {
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

/** `ferry …` from the install folder, the bundle required (FERRY_BUNDLE=1: an error if it is not used). */
const ferry = (args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<ProcessResult> =>
  run(process.execPath, [join(install, 'bin', 'ferry.js'), ...args], { FERRY_BUNDLE: '1', ...env });

beforeAll(async () => {
  dir = tempDir('ferry-bundle-');
  install = f('opt-ferry');
  mkdirSync(join(install, 'bin'), { recursive: true });
  copyFileSync(join(REPO_ROOT, 'bin', 'ferry.js'), join(install, 'bin', 'ferry.js'));
  copyFileSync(join(REPO_ROOT, 'package.json'), join(install, 'package.json'));
  const bundled = await run(process.execPath, [join(REPO_ROOT, 'dist', 'scripts', 'bundle.js'), join(install, 'dist', 'bundle')], {}, 300_000);
  if (bundled.code !== 0) throw new Error(`scripts/bundle.ts failed (${bundled.code}): ${bundled.stderr}`);

  raw = f('disk.raw');
  makeRawDisk(raw, 8 * MiB);
  convertImage(raw, 'qcow2', f('disk.qcow2'));
  compress('gzip', raw, f('disk.raw.gz'));
  await makeTar(f('tree.tar'), [{ name: 'etc/', type: 'directory' }, { name: 'etc/hostname', content: 'bundled\n' }]);
  server = await startServer();
  server.route('/disk.qcow2', { file: f('disk.qcow2') });
  server.route('/norange.raw', { file: raw, ranges: false });
  server.route('/disk.raw.gz', { file: f('disk.raw.gz') });
  server.route('/tree.tar', { file: f('tree.tar') });
  // Path-style S3 (`/bucket/key`): the SDK signs, this server does not check; the bytes are the file's.
  server.route('/bucket/disk.qcow2', { file: f('disk.qcow2') });
  mkdirSync(f('pki'));
  pki = makePki(f('pki'));
  secure = await startServer({ tls: { key: pki.key, cert: pki.cert } });
  secure.route('/disk.qcow2', { file: f('disk.qcow2') });
  secure.route('/disk.raw', { file: raw });
  proxy = await startProxy();
  registry = await startRegistry(f('registry'));
  const layout = f('layout');
  await writeOciLayout(layout, 'v1', { layers: [{ compression: 'gzip', entries: [{ name: 'disk/', type: 'directory' }, { name: 'disk/disk.qcow2', file: f('disk.qcow2') }] }] });
  await pushImage(layout, 'v1', registry, 'disk/qcow2');
}, 360_000);

afterAll(async () => {
  await server?.close();
  await secure?.close();
  await proxy?.close();
  await registry?.stop();
  removeDir(dir);
});

describe('the bundle, installed without node_modules', () => {
  test('the install folder is what an image holds: no node_modules on the way up, no tsc output', () => {
    for (let d = install; ; d = dirname(d)) {
      expect(existsSync(join(d, 'node_modules'))).toBe(false);
      if (dirname(d) === d) break;
    }
    expect(readdirSync(join(install, 'dist'))).toEqual(['bundle']);
    const manifest = JSON.parse(readFileSync(join(install, 'dist', 'bundle', 'manifest.json'), 'utf8')) as { entries: string[] };
    expect(manifest.entries).toContain('importer/cli-main.js');
    expect(readFileSync(join(install, 'dist', 'bundle', 'THIRD-PARTY-LICENSES.txt'), 'utf8')).toMatch(/^got@\S+ \(MIT;/m);
  });

  test.each([
    ['a qcow2 with Range', '/disk.qcow2', 'qcow2'],
    ['a raw image without Range (the child curl)', '/norange.raw', 'raw'],
    ['a raw.gz (node decodes)', '/disk.raw.gz', 'raw+gzip'],
  ])('ferry import of %s over HTTP', async (_what, path, format) => {
    const out = f(`import${path.replace(/\W/g, '-')}.img`);
    const r = await ferry(['import', '--url', `${server.url}${path}`, '--dest', out, '--scratch-dir', f('scratch'), '--quiet']);
    expect(r.stderr).toContain(`Import Complete: ${out} (${8 * MiB} bytes, from ${format})`);
    expect(r.code).toBe(0);
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
  });

  test('an import over HTTP never loads node:http2 (got\'s http2-wrapper is left out of the bundle), node:tls, node:https, node:zlib or node:assert', async () => {
    // Prints, as the process exits, every built-in module it loaded whose name says http2, tls, https, zlib or assert.
    const preload = f('report-http2.mjs');
    writeFileSync(preload, "process.on('exit', () => process.stderr.write(`http2 modules: [${process.moduleLoadList.filter((m) => /http2/i.test(m)).join(', ')}]\\ntls modules: [${process.moduleLoadList.filter((m) => /^NativeModule (https|tls|internal\\/tls)/.test(m)).join(', ')}]\\nlazy modules: [${process.moduleLoadList.filter((m) => /^NativeModule (zlib|assert)$/.test(m)).join(', ')}]\\n`));\n");
    const out = f('no-http2.img');
    const r = await ferry(['import', '--url', `${server.url}/disk.qcow2`, '--dest', out, '--scratch-dir', f('scratch'), '--quiet'], { NODE_OPTIONS: `--import=${preload}` });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('http2 modules: []');
    expect(r.stderr).toContain('tls modules: []');
    expect(r.stderr).toContain('lazy modules: []');
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
  });

  test('a raw.gz import loads node:zlib when the gzip layer asks for it (its stand-in in the bundle)', async () => {
    const preload = f('report-zlib.mjs');
    writeFileSync(preload, "process.on('exit', () => process.stderr.write(`zlib loaded: ${process.moduleLoadList.includes('NativeModule zlib')}\\n`));\n");
    const out = f('lazy-zlib.img');
    const r = await ferry(['import', '--url', `${server.url}/disk.raw.gz`, '--dest', out, '--quiet'], { NODE_OPTIONS: `--import=${preload}` });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('zlib loaded: true');
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
  });

  test.each([
    ['disk.qcow2', 'read in place through nbdkit or staged'],
    ['disk.raw', 'the one stream'],
  ])('an import over HTTPS with --ca-file (%s, %s): node:tls and node:https load when first used', async (name) => {
    const preload = f('report-tls.mjs');
    writeFileSync(preload, "process.on('exit', () => process.stderr.write(`tls loaded: ${process.moduleLoadList.includes('NativeModule tls')}\\n`));\n");
    const out = f(`https-${name}.img`);
    const r = await ferry(['import', '--url', `${secure.url}/${name}`, '--dest', out, '--ca-file', pki.caFile, '--scratch-dir', f('scratch'), '--quiet'], { NODE_OPTIONS: `--import=${preload}` });
    expect(r.stderr).toContain('Import Complete');
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('tls loaded: true');
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
  });

  test('an HTTPS server whose certificate is not trusted is refused through the bundle too', async () => {
    const r = await ferry(['import', '--url', `${secure.url}/disk.qcow2`, '--dest', f('untrusted.img'), '--scratch-dir', f('scratch'), '--quiet', '--retries', '1']);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/^error [A-Z_]+: .*(certificate|self.signed|issuer)/im);
    expect(existsSync(f('untrusted.img'))).toBe(false);
  });

  test('an import over HTTP makes no Intl object (ICU is never initialised: got\'s checks make their list formats when first used)', async () => {
    // Counts, as the process exits, the objects made by every Intl constructor.
    const preload = f('count-intl.mjs');
    writeFileSync(
      preload,
      [
        'let made = 0;',
        "for (const name of Object.getOwnPropertyNames(Intl).filter((n) => typeof Intl[n] === 'function' && /^[A-Z]/.test(n))) {",
        '  Intl[name] = new Proxy(Intl[name], { construct(target, args, newTarget) { made += 1; return Reflect.construct(target, args, newTarget); } });',
        '}',
        "process.on('exit', () => process.stderr.write(`Intl objects made: ${made}\\n`));",
        '',
      ].join('\n'),
    );
    const out = f('no-intl.img');
    const r = await ferry(['import', '--url', `${server.url}/disk.qcow2`, '--dest', out, '--scratch-dir', f('scratch'), '--quiet'], { NODE_OPTIONS: `--import=${preload}` });
    expect(r.code).toBe(0);
    expect(r.stderr).toContain('Intl objects made: 0');
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
  });

  test('ferry import from S3 (the AWS SDK, loaded when needed)', async () => {
    const out = f('s3.img');
    const r = await ferry(['import', '--url', 's3://bucket/disk.qcow2', '--dest', out, '--s3-endpoint', server.url,
      '--access-key-id', 'AKIDBUNDLE', '--secret-access-key', 'bundle-secret', '--scratch-dir', f('scratch'), '--quiet']);
    expect(r.stderr).toContain('Import Complete');
    expect(r.code).toBe(0);
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
    expect(server.requests.some((q) => q.path === '/bucket/disk.qcow2' && q.authorization?.startsWith('AWS4-HMAC-SHA256 Credential=AKIDBUNDLE/'))).toBe(true);
  });

  test('ferry import of a containerDisk from a registry (the registry source, loaded when needed)', async () => {
    const out = f('registry.img');
    const r = await ferry(['import', '--url', `docker://${registry.host}/disk/qcow2:v1`, '--dest', out, '--insecure', '--scratch-dir', f('scratch'), '--quiet']);
    expect(r.stderr).toContain('Import Complete');
    expect(r.code).toBe(0);
    expect(expectSameDisk(out, raw, 8 * MiB)).toBe(true);
  });

  test('ferry import of a tar archive over HTTP with --metrics-port (tar-stream and prom-client, loaded when needed)', async () => {
    const out = f('tree');
    mkdirSync(out);
    const r = await ferry(['import', '--url', `${server.url}/tree.tar`, '--dest', out, '--content-type', 'archive', '--metrics-port', String(await freePort()), '--quiet']);
    expect(r.code).toBe(0);
    expect(readFileSync(join(out, 'etc', 'hostname'), 'utf8')).toBe('bundled\n');
  });

  test('the importer pod program through an HTTP proxy (the proxy agent, loaded when needed)', async () => {
    const term = f('term-proxy');
    const disk = f('pod/disk.img');
    const r = await ferry(['importer'], {
      IMPORTER_SOURCE: 'http',
      IMPORTER_CONTENTTYPE: 'kubevirt',
      IMPORTER_TARGET_KIND: 'file',
      IMPORTER_ENDPOINT: `${server.url}/disk.raw.gz`,
      IMPORTER_TARGET_PATH: disk,
      IMPORTER_IMAGE_SIZE: '8Mi',
      FILESYSTEM_OVERHEAD: '0',
      http_proxy: proxy.url,
      FERRY_LOG_LEVEL: 'warn',
      FERRY_METRICS_PORT: '0',
      FERRY_TERMINATION_LOG: term,
    });
    expect(r.code).toBe(0);
    expect(decodeTermination(readFileSync(term, 'utf8'))).toMatchObject({ kind: 'success', sourceFormat: 'raw+gzip' });
    expect(proxy.seen).toContain(`GET ${server.url}/disk.raw.gz`);
    expect(expectSameDisk(disk, raw, 8 * MiB)).toBe(true);
  });

  test.each([
    [['controller', '--help'], 0, 'Usage: ferry controller'],
    [['apiserver', '--help'], 0, 'Usage: ferry apiserver'],
    [['launcher', '--help'], 0, 'Usage: ferry launcher'],
    [['image-upload', '--help'], 0, 'Usage: ferry image-upload'],
    [['uploadserver'], 2, 'INVALID_SPEC'],
    [['uploadproxy'], 2, 'INVALID_SPEC'],
    [['clone-source'], 2, 'INVALID_SPEC'],
    [['clone-target'], 2, 'INVALID_SPEC'],
  ])('every other program starts from the bundle: ferry %j', async (args, code, text) => {
    const r = await ferry(args);
    expect(r.stdout + r.stderr).toContain(text);
    expect(r.code).toBe(code);
  });
});

describe('bin/ferry.js: the bundle or tsc output', () => {
  /**
   * A checkout's layout: tsc's output (links into this checkout's dist/, whose node_modules resolve)
   * beside a bundle whose manifest is older than that output, and whose import entry is gone, so
   * only the tsc output can run `ferry import`.
   */
  let checkout: string;
  beforeAll(() => {
    checkout = f('checkout');
    mkdirSync(join(checkout, 'bin'), { recursive: true });
    mkdirSync(join(checkout, 'dist', 'bundle'), { recursive: true });
    copyFileSync(join(REPO_ROOT, 'bin', 'ferry.js'), join(checkout, 'bin', 'ferry.js'));
    copyFileSync(join(REPO_ROOT, 'package.json'), join(checkout, 'package.json'));
    for (const d of ['src', 'importer']) symlinkSync(join(REPO_ROOT, 'dist', d), join(checkout, 'dist', d));
    const manifest = join(checkout, 'dist', 'bundle', 'manifest.json');
    copyFileSync(join(install, 'dist', 'bundle', 'manifest.json'), manifest);
    utimesSync(manifest, new Date(0), new Date(0));
  });

  const inCheckout = (env: NodeJS.ProcessEnv): Promise<ProcessResult> =>
    run(process.execPath, [join(checkout, 'bin', 'ferry.js'), 'import', '--help'], env);

  test('a bundle older than tsc output is not used: tsc output runs', async () => {
    const r = await inCheckout({});
    expect(r.stderr).toContain('Usage: ferry import');
    expect(r.code).toBe(0);
  });

  test('FERRY_BUNDLE=1 says why the bundle is not used', async () => {
    const r = await inCheckout({ FERRY_BUNDLE: '1' });
    expect(r.stderr).toMatch(/FERRY_BUNDLE=1 but the bundle is not used: dist\/\S+ is newer than the bundle/);
    expect(r.code).toBe(40);
  });

  test('a fresh bundle is used: with its entry gone, the run fails; FERRY_BUNDLE=0 runs tsc output', async () => {
    utimesSync(join(checkout, 'dist', 'bundle', 'manifest.json'), new Date(), new Date());
    const fresh = await inCheckout({});
    expect(fresh.stderr).toMatch(/ERR_MODULE_NOT_FOUND|Cannot find module/);
    expect(fresh.code).toBe(40);
    const off = await inCheckout({ FERRY_BUNDLE: '0' });
    expect(off.code).toBe(0);
    rmSync(join(checkout, 'dist', 'bundle', 'manifest.json'));
    const none = await inCheckout({ FERRY_BUNDLE: '1' });
    expect(none.stderr).toContain('no dist/bundle/manifest.json');
  });
});
