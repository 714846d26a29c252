/**
 * The registry source against a real registry (Debian's docker-registry, distribution 2.8) on
 * loopback: plain HTTP, TLS with htpasswd, and the bearer-token flow with a token server of ours.
 * Images are containerDisks written as OCI layouts by the test and pushed with skopeo.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { runEngine, spec } from '../helpers/engine.js';
import { runFerry } from '../helpers/ferry-process.js';
import { convertImage, expectSameDisk, makeRawDisk, MiB, removeDir, tempDir } from '../helpers/fixtures.js';
import {
  type ImageSpec,
  type LayerSpec,
  pushImage,
  type PushOptions,
  registryBlobPath,
  startRegistry,
  startTokenServer,
  type TestRegistry,
  type TokenServer,
  type WrittenImage,
  writeOciLayout,
} from '../helpers/registry.js';
import type { ImportSpec } from '../../src/contract/import-spec.js';
import { classifyEntry, Shadows } from '../../importer/sources/oci-disk.js';
import { parseChallenge } from '../../importer/sources/oci-client.js';
import { selectPlatform } from '../../importer/sources/oci-manifest.js';
import { parseImageReference } from '../../importer/sources/oci-reference.js';

const USER = 'ferry';
const PASSWORD = 's3cret-pw';
const SIZE = 4 * MiB;

let dir: string;
let raw: string;
let qcow2: string;
let oldRaw: string;
let oldQcow2: string;
let plain: TestRegistry;
let secure: TestRegistry;
let tokens: TokenServer;
let bearer: TestRegistry;
const images = new Map<string, WrittenImage>();

/** A layer holding `disk/` and one disk file. */
function diskLayer(file: string, name = 'disk/disk.img', compression: LayerSpec['compression'] = 'gzip'): LayerSpec {
  return { compression, entries: [{ name: 'disk/', type: 'directory' }, { name, file }] };
}

async function publish(registry: TestRegistry, ref: string, image: ImageSpec | readonly ImageSpec[], options: PushOptions = {}): Promise<string> {
  const [repo, tag] = ref.split(':') as [string, string];
  const layout = join(dir, 'layouts', `${registry.host.replace(/\W/g, '_')}-${repo.replace(/\//g, '_')}-${tag}`);
  images.set(ref, await writeOciLayout(layout, tag, image));
  await pushImage(layout, tag, registry, repo, options);
  return `docker://${registry.host}/${ref}`;
}

function target(name: string): ImportSpec['target'] {
  return { kind: 'file', path: join(dir, 'out', `${name}.img`) };
}

function registrySpec(endpoint: string, out: string, fields: Partial<ImportSpec> = {}): ImportSpec {
  return spec({ source: 'registry', endpoint, target: target(out), scratchDir: join(dir, 'scratch'), ...fields });
}

/** No completed disk, no partial file left next to it, no scratch leftovers. */
function nothingWritten(out: string): boolean {
  const leftovers = readdirSync(join(dir, 'out')).filter((n) => n.startsWith(`${out}.`));
  const scratch = existsSync(join(dir, 'scratch')) ? readdirSync(join(dir, 'scratch')) : [];
  return leftovers.length === 0 && scratch.length === 0;
}

function sameAs(out: string, expectedRaw: string): boolean {
  return expectSameDisk(target(out).path, expectedRaw, SIZE);
}

beforeAll(async () => {
  dir = tempDir('ferry-registry-');
  for (const d of ['out', 'layouts']) mkdirSync(join(dir, d));
  raw = join(dir, 'disk.raw');
  qcow2 = join(dir, 'disk.qcow2');
  oldRaw = join(dir, 'old.raw');
  oldQcow2 = join(dir, 'old.qcow2');
  makeRawDisk(raw, SIZE);
  convertImage(raw, 'qcow2', qcow2);
  makeRawDisk(oldRaw, SIZE);
  convertImage(oldRaw, 'qcow2', oldQcow2);

  plain = await startRegistry(join(dir, 'plain'));
  secure = await startRegistry(join(dir, 'secure'), { tls: true, htpasswd: { user: USER, password: PASSWORD } });
  tokens = await startTokenServer(join(dir, 'tokens'), { users: { [USER]: PASSWORD }, publicPrefix: 'public/' });
  bearer = await startRegistry(join(dir, 'bearer'), { tls: true, token: tokens });

  await publish(plain, 'disk/raw:v1', { layers: [diskLayer(raw)] });
  await publish(plain, 'disk/qcow2:v1', { layers: [diskLayer(qcow2, 'disk/disk.qcow2')] });
  await publish(plain, 'disk/docker:v1', { layers: [diskLayer(qcow2, 'disk/disk.qcow2')] }, { dockerV2: true });
  await publish(plain, 'disk/zstd:v1', { layers: [{ compression: 'zstd', entries: [{ name: 'etc/motd', content: 'below' }] }, diskLayer(qcow2, 'disk/disk.qcow2', 'zstd')] });
  await publish(plain, 'layers/override:v1', {
    layers: [diskLayer(oldQcow2, 'disk/disk.qcow2'), diskLayer(qcow2, 'disk/disk.qcow2', 'none'), { entries: [{ name: 'etc/motd', content: 'on top' }] }],
  });
  await publish(plain, 'layers/renamed:v1', { layers: [diskLayer(oldRaw, 'disk/old.img'), diskLayer(raw, 'disk/new.img')] });
  await publish(plain, 'layers/whiteout:v1', {
    layers: [diskLayer(qcow2, 'disk/good.qcow2'), diskLayer(oldRaw, 'disk/bad.img'), { entries: [{ name: 'disk/.wh.bad.img', content: '' }] }],
  });
  await publish(plain, 'layers/opaque:v1', { layers: [diskLayer(raw), { entries: [{ name: 'disk/', type: 'directory' }, { name: 'disk/.wh..wh..opq', content: '' }] }] });
  await publish(plain, 'multi/arch:v1', [
    { architecture: 'arm64', layers: [diskLayer(oldRaw)] },
    { architecture: 'amd64', layers: [diskLayer(raw)] },
  ]);
  await publish(plain, 'multi/arch-docker:v1', [
    { architecture: 'arm64', layers: [diskLayer(oldRaw)] },
    { architecture: 'amd64', layers: [diskLayer(raw)] },
  ], { dockerV2: true });
  await publish(plain, 'multi/no-amd64:v1', [
    { architecture: 'arm64', layers: [diskLayer(oldRaw)] },
    { architecture: 's390x', layers: [diskLayer(oldRaw)] },
  ]);
  await publish(plain, 'bad/nodisk:v1', { layers: [{ entries: [{ name: 'etc/motd', content: 'no disk here' }, { name: 'disk/', type: 'directory' }] }] });
  await publish(plain, 'bad/twodisks:v1', { layers: [{ entries: [{ name: 'disk/a.img', file: raw }, { name: 'disk/b.img', file: oldRaw }] }] });
  await publish(secure, 'private/disk:v1', { layers: [diskLayer(qcow2, 'disk/disk.qcow2')] }, { creds: `${USER}:${PASSWORD}` });
  await publish(bearer, 'private/disk:v1', { layers: [diskLayer(raw)] }, { creds: `${USER}:${PASSWORD}` });
  await publish(bearer, 'public/disk:v1', { layers: [diskLayer(raw)] }, { creds: `${USER}:${PASSWORD}` });
}, 180_000);

afterAll(async () => {
  await plain?.stop();
  await secure?.stop();
  await bearer?.stop();
  await tokens?.close();
  if (dir) removeDir(dir);
});

describe('registry source: images', () => {
  test('a raw disk streams straight into the target (no scratch needed)', async () => {
    const { result, error } = await runEngine(registrySpec(`docker://${plain.host}/disk/raw:v1`, 'raw', { insecureTls: true, scratchDir: undefined }));
    expect(error).toBeUndefined();
    expect(result?.sourceFormat).toBe('raw');
    expect(sameAs('raw', raw)).toBe(true);
  });

  test('a qcow2 disk goes through scratch and is converted', async () => {
    const { result, error } = await runEngine(registrySpec(`docker://${plain.host}/disk/qcow2:v1`, 'qcow2', { insecureTls: true }));
    expect(error).toBeUndefined();
    expect(result).toMatchObject({ sourceFormat: 'qcow2', via: 'scratch', scratchSpaceRequired: false });
    expect(sameAs('qcow2', raw)).toBe(true);
    expect(readdirSync(join(dir, 'scratch'))).toEqual([]);
  });

  test('a qcow2 disk without scratch space asks for it and writes nothing', async () => {
    const { result, error } = await runEngine(registrySpec(`docker://${plain.host}/disk/qcow2:v1`, 'noscratch', { insecureTls: true, scratchDir: undefined }));
    expect(error).toBeUndefined();
    expect(result?.scratchSpaceRequired).toBe(true);
    expect(existsSync(target('noscratch').path)).toBe(false);
  });

  test('Docker v2 schema 2 manifests work as OCI ones do', async () => {
    const { error } = await runEngine(registrySpec(`docker://${plain.host}/disk/docker:v1`, 'docker', { insecureTls: true }));
    expect(error).toBeUndefined();
    expect(sameAs('docker', raw)).toBe(true);
  });

  test('zstd-compressed layers are decompressed with zstd', async () => {
    const { error } = await runEngine(registrySpec(`docker://${plain.host}/disk/zstd:v1`, 'zstd', { insecureTls: true }));
    expect(error).toBeUndefined();
    expect(sameAs('zstd', raw)).toBe(true);
  });

  test('pulled by digest, the manifest is checked against it', async () => {
    const digest = images.get('disk/raw:v1')?.top.digest ?? '';
    const byDigest = await runEngine(registrySpec(`docker://${plain.host}/disk/raw@${digest}`, 'by-digest', { insecureTls: true }));
    expect(byDigest.error).toBeUndefined();
    expect(sameAs('by-digest', raw)).toBe(true);
    const other = await runEngine(registrySpec(`docker://${plain.host}/disk/raw@sha256:${'0'.repeat(64)}`, 'no-digest', { insecureTls: true }));
    expect(other.error?.code).toBe('SOURCE_NOT_FOUND');
  });

  test('the last layer with a disk wins over an older disk of the same name', async () => {
    const { error } = await runEngine(registrySpec(`docker://${plain.host}/layers/override:v1`, 'override', { insecureTls: true }));
    expect(error).toBeUndefined();
    expect(sameAs('override', raw)).toBe(true);
  });

  test('the last layer with a disk wins over an older disk of another name', async () => {
    const { error } = await runEngine(registrySpec(`docker://${plain.host}/layers/renamed:v1`, 'renamed', { insecureTls: true }));
    expect(error).toBeUndefined();
    expect(sameAs('renamed', raw)).toBe(true);
  });

  test('a whited-out disk in a later layer is skipped; the earlier one is imported', async () => {
    const { error } = await runEngine(registrySpec(`docker://${plain.host}/layers/whiteout:v1`, 'whiteout', { insecureTls: true }));
    expect(error).toBeUndefined();
    expect(sameAs('whiteout', raw)).toBe(true);
  });

  test('an opaque disk/ directory hides the disks below it: INVALID_IMAGE', async () => {
    const { error } = await runEngine(registrySpec(`docker://${plain.host}/layers/opaque:v1`, 'opaque', { insecureTls: true }));
    expect(error?.code).toBe('INVALID_IMAGE');
    expect(error?.message).toContain('no disk image under disk/');
    expect(nothingWritten('opaque')).toBe(true);
  });

  test('an image index: linux/amd64 is picked (OCI index and Docker manifest list)', async () => {
    for (const repo of ['multi/arch', 'multi/arch-docker']) {
      const out = repo.replace('/', '-');
      const { error } = await runEngine(registrySpec(`docker://${plain.host}/${repo}:v1`, out, { insecureTls: true }));
      expect(error).toBeUndefined();
      expect(sameAs(out, raw)).toBe(true);
    }
  });

  test('an index without linux/amd64 is SOURCE_NOT_FOUND naming the platforms it has', async () => {
    const { error } = await runEngine(registrySpec(`docker://${plain.host}/multi/no-amd64:v1`, 'no-amd64', { insecureTls: true }));
    expect(error?.code).toBe('SOURCE_NOT_FOUND');
    expect(error?.message).toContain('linux/arm64, linux/s390x');
    expect(nothingWritten('no-amd64')).toBe(true);
  });

  test('no disk under disk/ is INVALID_IMAGE naming the image', async () => {
    const { error } = await runEngine(registrySpec(`docker://${plain.host}/bad/nodisk:v1`, 'nodisk', { insecureTls: true }));
    expect(error?.code).toBe('INVALID_IMAGE');
    expect(error?.message).toContain(`no disk image under disk/ in docker://${plain.host}/bad/nodisk:v1`);
    expect(nothingWritten('nodisk')).toBe(true);
  });

  test('two disks in the winning layer is INVALID_IMAGE, and nothing is written', async () => {
    const { error } = await runEngine(registrySpec(`docker://${plain.host}/bad/twodisks:v1`, 'twodisks', { insecureTls: true }));
    expect(error?.code).toBe('INVALID_IMAGE');
    expect(error?.message).toMatch(/more than one disk image/);
    expect(nothingWritten('twodisks')).toBe(true);
  });

  test('a missing tag or repository is SOURCE_NOT_FOUND, not retried', async () => {
    for (const ref of ['disk/raw:v9', 'nope/nothing:v1']) {
      const { error } = await runEngine(registrySpec(`docker://${plain.host}/${ref}`, 'missing', { insecureTls: true }));
      expect(error?.code).toBe('SOURCE_NOT_FOUND');
      expect(error?.retryable).toBe(false);
    }
  });

  test('a registry that refuses connections is retryable SOURCE_UNAVAILABLE', async () => {
    const gone = await startRegistry(join(dir, 'gone'));
    await gone.stop();
    const { error } = await runEngine(registrySpec(`docker://${gone.host}/disk/raw:v1`, 'refused', { insecureTls: true }), { attempts: 2 });
    expect(error?.code).toBe('SOURCE_UNAVAILABLE');
    expect(error?.retryable).toBe(true);
  });

  test('plain HTTP without the insecure opt-in is TLS_ERROR', async () => {
    const { error } = await runEngine(registrySpec(`docker://${plain.host}/disk/raw:v1`, 'plain-strict'));
    expect(error?.code).toBe('TLS_ERROR');
  });

  test('a registry archive content type is refused as CDI does', async () => {
    const { error } = await runEngine(
      spec({ source: 'registry', contentType: 'archive', endpoint: `docker://${plain.host}/disk/raw:v1`, target: { kind: 'directory', path: join(dir, 'arch') } }),
    );
    expect(error?.code).toBe('INVALID_SPEC');
  });
});

describe('registry source: blob digests', () => {
  /** Publishes an image of its own (no blob shared) and flips one byte in the middle of its disk layer. */
  async function corrupted(ref: string, compression: LayerSpec['compression']): Promise<string> {
    const own = join(dir, `${ref.replace(/\W/g, '_')}.raw`);
    makeRawDisk(own, SIZE);
    const endpoint = await publish(plain, ref, { layers: [diskLayer(own, 'disk/disk.img', compression)] });
    const layer = images.get(ref)?.layers.get('linux/amd64')?.[0];
    const path = registryBlobPath(plain, layer?.digest ?? '');
    const bytes = readFileSync(path);
    const at = Math.floor(bytes.length / 2);
    bytes[at] = (bytes[at] ?? 0) ^ 0xff;
    writeFileSync(path, bytes);
    return endpoint;
  }

  test('an uncompressed layer whose bytes do not match its digest is CHECKSUM_MISMATCH; no disk', async () => {
    const endpoint = await corrupted('corrupt/plain:v1', 'none');
    const { error } = await runEngine(registrySpec(endpoint, 'corrupt-plain', { insecureTls: true, scratchDir: undefined }));
    expect(error?.code).toBe('CHECKSUM_MISMATCH');
    expect(error?.retryable).toBe(false);
    expect(nothingWritten('corrupt-plain')).toBe(true);
  });

  test('a corrupt gzip layer is reported as the digest mismatch it is, not as bad gzip', async () => {
    const endpoint = await corrupted('corrupt/gzip:v1', 'gzip');
    const { error } = await runEngine(registrySpec(endpoint, 'corrupt-gzip', { insecureTls: true, scratchDir: undefined }));
    expect(error?.code).toBe('CHECKSUM_MISMATCH');
    expect(nothingWritten('corrupt-gzip')).toBe(true);
  });
});

describe('registry source: TLS and basic auth', () => {
  const creds = { username: USER, password: PASSWORD };

  test('the test CA and the right credentials import', async () => {
    const { error } = await runEngine(registrySpec(`docker://${secure.host}/private/disk:v1`, 'secure', { credentials: creds, caPath: secure.caFile }));
    expect(error).toBeUndefined();
    expect(sameAs('secure', raw)).toBe(true);
  });

  test('a CA directory (a mounted ConfigMap) works as well as a file', async () => {
    const { error } = await runEngine(registrySpec(`docker://${secure.host}/private/disk:v1`, 'secure-dir', { credentials: creds, caPath: secure.certDir }));
    expect(error).toBeUndefined();
  });

  test('a wrong password is UNAUTHORIZED, not retried', async () => {
    const { error } = await runEngine(registrySpec(`docker://${secure.host}/private/disk:v1`, 'wrong-pw', { credentials: { username: USER, password: 'nope' }, caPath: secure.caFile }));
    expect(error?.code).toBe('UNAUTHORIZED');
    expect(error?.retryable).toBe(false);
    expect(nothingWritten('wrong-pw')).toBe(true);
  });

  test('no credentials is UNAUTHORIZED', async () => {
    const { error } = await runEngine(registrySpec(`docker://${secure.host}/private/disk:v1`, 'no-creds', { caPath: secure.caFile }));
    expect(error?.code).toBe('UNAUTHORIZED');
  });

  test('without the CA it is TLS_ERROR; the insecure opt-in gets through', async () => {
    const strict = await runEngine(registrySpec(`docker://${secure.host}/private/disk:v1`, 'no-ca', { credentials: creds }));
    expect(strict.error?.code).toBe('TLS_ERROR');
    const insecure = await runEngine(registrySpec(`docker://${secure.host}/private/disk:v1`, 'insecure', { credentials: creds, insecureTls: true }));
    expect(insecure.error).toBeUndefined();
    expect(sameAs('insecure', raw)).toBe(true);
  });

  test('the CLI: ferry import --url docker://… --username --password --ca-file', async () => {
    const out = join(dir, 'out', 'cli.img');
    const args = ['import', '--quiet', '--url', `docker://${secure.host}/private/disk:v1`, '--dest', out, '--ca-file', secure.caFile ?? '', '--scratch-dir', join(dir, 'scratch')];
    const ok = await runFerry([...args, '--username', USER, '--password', PASSWORD]);
    expect(ok.stderr).toContain('Import Complete');
    expect(ok.code).toBe(0);
    expect(expectSameDisk(out, raw, SIZE)).toBe(true);
    const denied = await runFerry([...args, '--username', USER, '--password', 'nope']);
    expect(denied.code).toBe(11);
    expect(denied.stderr).toMatch(/^error UNAUTHORIZED: /m);
  });
});

describe('registry source: bearer tokens', () => {
  test('credentials are exchanged for a token scoped to the repository', async () => {
    const before = tokens.requests.length;
    const { error } = await runEngine(registrySpec(`docker://${bearer.host}/private/disk:v1`, 'bearer', { credentials: { username: USER, password: PASSWORD }, caPath: bearer.caFile }));
    expect(error).toBeUndefined();
    expect(sameAs('bearer', raw)).toBe(true);
    expect(tokens.requests.slice(before)).toEqual([{ user: USER, scopes: ['repository:private/disk:pull'] }]);
  });

  test('an anonymous token pulls a public repository', async () => {
    const before = tokens.requests.length;
    const { error } = await runEngine(registrySpec(`docker://${bearer.host}/public/disk:v1`, 'bearer-public', { caPath: bearer.caFile }));
    expect(error).toBeUndefined();
    expect(sameAs('bearer-public', raw)).toBe(true);
    expect(tokens.requests.slice(before)).toEqual([{ user: '', scopes: ['repository:public/disk:pull'] }]);
  });

  test('an anonymous token without access to a private repository is UNAUTHORIZED', async () => {
    const { error } = await runEngine(registrySpec(`docker://${bearer.host}/private/disk:v1`, 'bearer-anon', { caPath: bearer.caFile }));
    expect(error?.code).toBe('UNAUTHORIZED');
  });

  test('a token service refusing the password is UNAUTHORIZED', async () => {
    const { error } = await runEngine(registrySpec(`docker://${bearer.host}/private/disk:v1`, 'bearer-wrong', { credentials: { username: USER, password: 'nope' }, caPath: bearer.caFile }));
    expect(error?.code).toBe('UNAUTHORIZED');
    expect(error?.message).toContain('token service');
  });
});

describe('registry source: pure parts', () => {
  test.each([
    ['docker://127.0.0.1:5000/probe/disk:v1', { registry: '127.0.0.1:5000', apiHost: '127.0.0.1:5000', repository: 'probe/disk', tag: 'v1' }],
    ['docker://registry.example/a/b/c', { registry: 'registry.example', repository: 'a/b/c', tag: 'latest' }],
    ['docker://fedora', { registry: 'docker.io', apiHost: 'registry-1.docker.io', repository: 'library/fedora', tag: 'latest' }],
    ['docker://kubevirt/fedora-cloud-container-disk-demo:latest', { registry: 'docker.io', repository: 'kubevirt/fedora-cloud-container-disk-demo', tag: 'latest' }],
    [`docker://localhost:5000/x@sha256:${'a'.repeat(64)}`, { registry: 'localhost:5000', repository: 'x', digest: `sha256:${'a'.repeat(64)}` }],
    [`docker://quay.io/x/y:t@sha256:${'b'.repeat(64)}`, { registry: 'quay.io', repository: 'x/y', tag: 't', digest: `sha256:${'b'.repeat(64)}` }],
    ['docker://[::1]:5000/x:1', { registry: '[::1]:5000', repository: 'x', tag: '1' }],
  ])('parses %s', (endpoint, expected) => {
    expect(parseImageReference(endpoint)).toMatchObject(expected);
  });

  test.each(['http://x/y', 'docker://', 'docker://host/Upper:v1', 'docker://host/x@sha256:123', 'docker://host/x:bad/tag', 'docker://host/x:'])('rejects %s as INVALID_SPEC', (endpoint) => {
    expect(() => parseImageReference(endpoint)).toThrow(expect.objectContaining({ code: 'INVALID_SPEC' }));
  });

  test('parses bearer and basic challenges', () => {
    expect(parseChallenge('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/fedora:pull"')).toEqual({
      scheme: 'bearer',
      params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/fedora:pull' },
    });
    expect(parseChallenge('Basic realm="x"')).toEqual({ scheme: 'basic', params: { realm: 'x' } });
    expect(parseChallenge(undefined)).toBeUndefined();
  });

  test('whiteouts and shadows: what a lower layer may still contribute', () => {
    expect(classifyEntry('./disk/disk.img', 'file')).toEqual({ kind: 'disk', path: 'disk/disk.img' });
    expect(classifyEntry('disk/.wh.disk.img', 'file')).toEqual({ kind: 'whiteout', path: 'disk/disk.img' });
    expect(classifyEntry('disk/.wh..wh..opq', 'file')).toEqual({ kind: 'opaque', dir: 'disk' });
    expect(classifyEntry('.wh.disk', 'file')).toEqual({ kind: 'whiteout', path: 'disk' });
    expect(classifyEntry('disk/link', 'symlink')).toEqual({ kind: 'other', path: 'disk/link', directory: false });
    const upper = new Shadows();
    upper.note(classifyEntry('disk/.wh.a.img', 'file'));
    upper.note(classifyEntry('disk/', 'directory'));
    upper.note(classifyEntry('disk/c.img', 'file'));
    expect(upper.hides('disk/a.img')).toBe(true);
    expect(upper.hides('disk/b.img')).toBe(false);
    expect(upper.hides('disk/c.img')).toBe(true);
    upper.note(classifyEntry('.wh.disk', 'file'));
    expect(upper.hides('disk/b.img')).toBe(true);
  });

  test('platform selection: exact match, a lone unlabelled manifest, or SOURCE_NOT_FOUND', () => {
    const d = (architecture?: string) => ({ mediaType: '', digest: `sha256:${(architecture ?? 'x').padEnd(64, '0')}`, size: 1, ...(architecture ? { platform: { os: 'linux', architecture } } : {}) });
    const amd64 = { os: 'linux', architecture: 'amd64' };
    expect(selectPlatform([d('arm64'), d('amd64')], amd64, 'img')).toEqual(d('amd64'));
    expect(selectPlatform([d()], amd64, 'img')).toEqual(d());
    expect(() => selectPlatform([d('arm64'), { ...d(), platform: { os: 'unknown', architecture: 'unknown' } }], amd64, 'img')).toThrow(/it has linux\/arm64$/);
  });
});
