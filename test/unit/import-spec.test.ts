import { describe, expect, test } from '@jest/globals';
import { decodeImportEnv, encodeImportEnv, formatHeaderLine, type ImportSpec, normalizeSource, parseHeaderLine } from '../../src/contract/import-spec.js';
import { codeOf } from './helpers.js';

const GiB = 2 ** 30;

const base: ImportSpec = {
  source: 'http',
  endpoint: 'https://images.example.com/disk.qcow2',
  contentType: 'kubevirt',
  target: { kind: 'file', path: '/data/disk.img' },
  insecureTls: false,
  filesystemOverhead: 0.06,
  preallocation: false,
  proxy: {},
};

const specs: Array<[string, ImportSpec]> = [
  [
    'http with credentials, CA, checksum, capacity and proxy',
    {
      ...base,
      credentials: { username: 'alice', password: 's3cr=t:with,odd chars' },
      caPath: '/certs',
      insecureTls: false,
      checksum: { algorithm: 'sha256', hex: 'ab'.repeat(32) },
      capacity: 10 * GiB,
      filesystemOverhead: 0.055,
      preallocation: true,
      scratchDir: '/scratch',
      ownerUid: '6f1c1f5e-0000-4000-8000-000000000001',
      proxy: { httpProxy: 'http://proxy:3128', httpsProxy: 'http://user:pw@proxy:3129', noProxy: '.cluster.local,10.0.0.1' },
    },
  ],
  ['minimal http', base],
  [
    'http with extra headers (one name twice) and the secret headers directory',
    {
      ...base,
      extraHeaders: [
        { name: 'Authorization', value: 'Bearer abc.def' },
        { name: 'X-Trace', value: 'a: b, c' },
        { name: 'X-Trace', value: '2' },
      ],
      secretHeadersDir: '/extraheaders',
    },
  ],
  ['insecure http', { ...base, insecureTls: true }],
  ['blank with capacity', { ...base, source: 'blank', endpoint: '', capacity: 5 * GiB }],
  ['blank on a block device without capacity', { ...base, source: 'blank', endpoint: '', target: { kind: 'block', path: '/dev/cdi-block-volume' }, filesystemOverhead: 0 }],
  ['archive with a directory target', { ...base, endpoint: 'https://x.example.com/a.tar.gz', contentType: 'archive', target: { kind: 'directory', path: '/data' } }],
  ['block target', { ...base, target: { kind: 'block', path: '/dev/cdi-block-volume' }, filesystemOverhead: 0, capacity: 20 * GiB }],
  ['s3 with keys', { ...base, source: 's3', endpoint: 'https://s3.example.com/bucket/disk.img', credentials: { username: 'AKID', password: 'SECRET' } }],
  ['s3 URL with an endpoint override and a region', { ...base, source: 's3', endpoint: 's3://bucket/images/disk.img', s3Endpoint: 'http://127.0.0.1:7480', s3Region: 'eu-west-1' }],
  ['local file', { ...base, source: 'file', endpoint: '/images/disk.vmdk', checksum: { algorithm: 'md5', hex: '0f'.repeat(16) } }],
];

describe('encodeImportEnv / decodeImportEnv', () => {
  test.each(specs)('%s round trips', (_name, spec) => {
    const env = encodeImportEnv(spec);
    for (const value of Object.values(env)) expect(typeof value).toBe('string');
    expect(decodeImportEnv(env)).toEqual(spec);
  });

  test('the s3 endpoint and region travel as IMPORTER_S3_ENDPOINT and IMPORTER_S3_REGION', () => {
    const env = encodeImportEnv({ ...base, source: 's3', endpoint: 's3://b/k', s3Endpoint: 'https://minio.local:9000', s3Region: 'eu-west-1' });
    expect(env).toMatchObject({ IMPORTER_SOURCE: 's3', IMPORTER_ENDPOINT: 's3://b/k', IMPORTER_S3_ENDPOINT: 'https://minio.local:9000', IMPORTER_S3_REGION: 'eu-west-1' });
  });

  test('the decoded spec is frozen', () => {
    expect(Object.isFrozen(decodeImportEnv(encodeImportEnv(base)))).toBe(true);
  });

  test('writes CDI variable names', () => {
    const env = encodeImportEnv(specs[0]![1]);
    expect(env).toMatchObject({
      IMPORTER_SOURCE: 'http',
      IMPORTER_ENDPOINT: 'https://images.example.com/disk.qcow2',
      IMPORTER_CONTENTTYPE: 'kubevirt',
      IMPORTER_ACCESS_KEY_ID: 'alice',
      IMPORTER_CERT_DIR: '/certs',
      IMPORTER_CHECKSUM: `sha256:${'ab'.repeat(32)}`,
      IMPORTER_IMAGE_SIZE: String(10 * GiB),
      INSECURE_TLS: 'false',
      FILESYSTEM_OVERHEAD: '0.055',
      PREALLOCATION: 'true',
      http_proxy: 'http://proxy:3128',
      https_proxy: 'http://user:pw@proxy:3129',
      no_proxy: '.cluster.local,10.0.0.1',
    });
  });
});

describe('decodeImportEnv (CDI compatibility)', () => {
  const env = (extra: Record<string, string | undefined>): Record<string, string | undefined> => ({
    IMPORTER_ENDPOINT: 'http://example.com/disk.img',
    IMPORTER_TARGET_PATH: '/data/disk.img',
    ...extra,
  });

  test.each<[string | undefined, string]>([
    [undefined, 'http'],
    ['', 'http'],
    ['http', 'http'],
    ['s3', 's3'],
    ['registry', 'registry'],
    ['none', 'blank'],
    ['blank', 'blank'],
  ])('IMPORTER_SOURCE %j -> %s', (source, expected) => {
    expect(normalizeSource(source)).toBe(expected);
    expect(decodeImportEnv(env({ IMPORTER_SOURCE: source, IMPORTER_IMAGE_SIZE: '1Gi' })).source).toBe(expected);
  });

  test('applies the defaults', () => {
    expect(decodeImportEnv(env({}))).toEqual({
      source: 'http',
      endpoint: 'http://example.com/disk.img',
      contentType: 'kubevirt',
      target: { kind: 'file', path: '/data/disk.img' },
      insecureTls: false,
      filesystemOverhead: 0.06,
      preallocation: false,
      proxy: {},
    });
  });

  test.each<[string, number]>([
    ['10Gi', 10 * GiB],
    ['500M', 500e6],
    ['1048576', 1048576],
  ])('IMPORTER_IMAGE_SIZE %j -> %d bytes', (size, bytes) => {
    expect(decodeImportEnv(env({ IMPORTER_IMAGE_SIZE: size })).capacity).toBe(bytes);
  });

  test.each<[string, boolean]>([
    ['true', true],
    ['TRUE', true],
    ['1', true],
    ['yes', true],
    ['false', false],
    ['0', false],
    ['No', false],
    ['', false],
  ])('INSECURE_TLS %j -> %s', (value, expected) => {
    expect(decodeImportEnv(env({ INSECURE_TLS: value })).insecureTls).toBe(expected);
  });

  test.each<[string, number]>([
    ['0', 0],
    ['0.055', 0.055],
    ['0.999', 0.999],
    ['', 0.06],
  ])('FILESYSTEM_OVERHEAD %j -> %d', (value, expected) => {
    expect(decodeImportEnv(env({ FILESYSTEM_OVERHEAD: value })).filesystemOverhead).toBe(expected);
  });

  test('credentials from IMPORTER_ACCESS_KEY_ID / IMPORTER_SECRET_KEY', () => {
    expect(decodeImportEnv(env({ IMPORTER_ACCESS_KEY_ID: 'u', IMPORTER_SECRET_KEY: 'p' })).credentials).toEqual({ username: 'u', password: 'p' });
    expect(decodeImportEnv(env({ IMPORTER_SECRET_KEY: 'p' })).credentials).toEqual({ username: '', password: 'p' });
  });

  test('upper-case proxy variables are a fallback', () => {
    const spec = decodeImportEnv(env({ HTTP_PROXY: 'http://upper:1', HTTPS_PROXY: 'http://upper:2', NO_PROXY: 'upper.local' }));
    expect(spec.proxy).toEqual({ httpProxy: 'http://upper:1', httpsProxy: 'http://upper:2', noProxy: 'upper.local' });
  });

  test('lower-case proxy variables win over upper-case ones', () => {
    const spec = decodeImportEnv(
      env({ http_proxy: 'http://lower:1', HTTP_PROXY: 'http://upper:1', https_proxy: 'http://lower:2', HTTPS_PROXY: 'http://upper:2', no_proxy: 'lower', NO_PROXY: 'upper' }),
    );
    expect(spec.proxy).toEqual({ httpProxy: 'http://lower:1', httpsProxy: 'http://lower:2', noProxy: 'lower' });
  });

  test('an empty lower-case proxy variable falls back to the upper-case one', () => {
    expect(decodeImportEnv(env({ http_proxy: '', HTTP_PROXY: 'http://upper:1' })).proxy).toEqual({ httpProxy: 'http://upper:1' });
  });

  test.each<[string, Record<string, string | undefined>]>([
    ['INSECURE_TLS "maybe"', { INSECURE_TLS: 'maybe' }],
    ['PREALLOCATION "on"', { PREALLOCATION: 'on' }],
    ['FILESYSTEM_OVERHEAD 1', { FILESYSTEM_OVERHEAD: '1' }],
    ['FILESYSTEM_OVERHEAD -0.1', { FILESYSTEM_OVERHEAD: '-0.1' }],
    ['FILESYSTEM_OVERHEAD "abc"', { FILESYSTEM_OVERHEAD: 'abc' }],
    ['FILESYSTEM_OVERHEAD "Infinity"', { FILESYSTEM_OVERHEAD: 'Infinity' }],
    ['missing IMPORTER_TARGET_PATH', { IMPORTER_TARGET_PATH: undefined }],
    ['empty IMPORTER_TARGET_PATH', { IMPORTER_TARGET_PATH: '' }],
    ['archive into a file target', { IMPORTER_CONTENTTYPE: 'archive' }],
    ['archive into a block target', { IMPORTER_CONTENTTYPE: 'archive', IMPORTER_TARGET_KIND: 'block' }],
    ['kubevirt into a directory', { IMPORTER_TARGET_KIND: 'directory' }],
    ['blank archive', { IMPORTER_SOURCE: 'none', IMPORTER_CONTENTTYPE: 'archive', IMPORTER_TARGET_KIND: 'directory', IMPORTER_IMAGE_SIZE: '1Gi' }],
    ['blank file without size', { IMPORTER_SOURCE: 'none' }],
    ['unknown source', { IMPORTER_SOURCE: 'ftp' }],
    ['unknown content type', { IMPORTER_CONTENTTYPE: 'iso' }],
    ['unknown target kind', { IMPORTER_TARGET_KIND: 'pipe' }],
    ['http without endpoint', { IMPORTER_ENDPOINT: undefined }],
    ['invalid image size', { IMPORTER_IMAGE_SIZE: '10GB' }],
    ['zero image size', { IMPORTER_IMAGE_SIZE: '0' }],
    ['invalid checksum', { IMPORTER_CHECKSUM: 'sha256:abc' }],
  ])('%s -> INVALID_SPEC', (_name, extra) => {
    expect(codeOf(() => decodeImportEnv(env(extra)))).toBe('INVALID_SPEC');
  });
});

describe('extra headers', () => {
  test('travel as CDI\'s IMPORTER_EXTRA_HEADER_<n>, read back in the order of n (10 after 9)', () => {
    const headers = Array.from({ length: 11 }, (_, i) => ({ name: `X-H${i}`, value: `v${i}` }));
    const env = encodeImportEnv({ ...base, extraHeaders: headers });
    expect(env).toMatchObject({ IMPORTER_EXTRA_HEADER_0: 'X-H0: v0', IMPORTER_EXTRA_HEADER_10: 'X-H10: v10' });
    // An environment does not keep order: shuffle it.
    const shuffled = Object.fromEntries(Object.entries(env).reverse());
    expect(decodeImportEnv(shuffled).extraHeaders).toEqual(headers);
  });

  test.each([
    ['Authorization: Bearer x', { name: 'Authorization', value: 'Bearer x' }],
    ['X-Key:v', { name: 'X-Key', value: 'v' }],
    ["x!#$%&'*+.^_`|~9:  spaced value \t", { name: "x!#$%&'*+.^_`|~9", value: 'spaced value' }],
    ['X: a:b:c', { name: 'X', value: 'a:b:c' }],
  ])('%j parses', (line, header) => {
    expect(parseHeaderLine(line, 'h')).toEqual(header);
    expect(parseHeaderLine(formatHeaderLine(header), 'h')).toEqual(header);
  });

  test.each([
    ['no colon', 'Bearer secret-value'],
    ['a space before the colon', 'X-Key : secret-value'],
    ['an empty name', ': secret-value'],
    ['a name with a slash', 'X/Key: secret-value'],
    ['a LF in the value', 'X-Key: secret-value\nInjected: 1'],
    ['a CR in the value', 'X-Key: secret-value\rx'],
    ['a NUL in the value', 'X-Key: secret-value\u0000'],
    ['an empty value', 'X-Key:   '],
    ['a character past Latin-1', 'X-Key: secret-value\u2028'],
    ['a character beyond ASCII (node would send Latin-1, curl UTF-8)', 'X-Key: secret-value\u00e9'],
    ['Range, which the importer sets itself', 'Range: bytes=0-1 secret-value'],
    ['Host, in any case', 'hOST: secret-value'],
    ['Transfer-Encoding (request smuggling)', 'Transfer-Encoding: chunked secret-value'],
  ])('%s: INVALID_SPEC (reason bad-header), the line not in the message', (_what, line) => {
    let error: unknown;
    try {
      parseHeaderLine(line, 'IMPORTER_EXTRA_HEADER_3');
    } catch (err) {
      error = err;
    }
    expect(error).toMatchObject({ code: 'INVALID_SPEC', details: { reason: 'bad-header' } });
    expect((error as Error).message).toContain('IMPORTER_EXTRA_HEADER_3');
    expect((error as Error).message).not.toContain('secret-value');
  });

  test('a bad variable fails the decode, before anything runs; so does a suffix that is not a number', () => {
    const env = encodeImportEnv(base);
    expect(codeOf(() => decodeImportEnv({ ...env, IMPORTER_EXTRA_HEADER_0: 'no colon here' }))).toBe('INVALID_SPEC');
    expect(codeOf(() => decodeImportEnv({ ...env, IMPORTER_EXTRA_HEADER_X: 'A: b' }))).toBe('INVALID_SPEC');
  });

  test('only the http source takes them', () => {
    const env = encodeImportEnv({ ...base, source: 's3', endpoint: 'https://s3.example.com/b/k' });
    expect(codeOf(() => decodeImportEnv({ ...env, IMPORTER_EXTRA_HEADER_0: 'A: b' }))).toBe('INVALID_SPEC');
    expect(codeOf(() => decodeImportEnv({ ...env, IMPORTER_SECRET_EXTRA_HEADERS_DIR: '/extraheaders' }))).toBe('INVALID_SPEC');
  });
});
