import { describe, expect, test } from '@jest/globals';
import { Annotation } from '../../src/api/cdi.js';
import { extraHeaderAnnotations, type ImportRequest, importRequestFromAnnotations } from '../../src/api/import-request.js';
import { parseChecksum } from '../../src/checksum.js';
import { codeOf } from './helpers.js';

const URL = 'https://images.example.com/disk.qcow2';
const SHA256 = `sha256:${'ab'.repeat(32)}`;

describe('importRequestFromAnnotations: no request', () => {
  test.each<[string, Record<string, string> | undefined]>([
    ['undefined annotations', undefined],
    ['empty annotations', {}],
    ['only unrelated annotations', { 'example.com/foo': 'bar', [Annotation.ContentType]: 'archive' }],
    ['a blank endpoint and no source', { [Annotation.Endpoint]: '   ' }],
    ['an empty source and no endpoint', { [Annotation.Source]: '' }],
    ['a whitespace source and no endpoint', { [Annotation.Source]: '  ' }],
  ])('%s → undefined', (_name, annotations) => {
    expect(importRequestFromAnnotations(annotations)).toBeUndefined();
  });
});

describe('importRequestFromAnnotations: valid requests', () => {
  const defaults = { contentType: 'kubevirt', insecureTls: false, retainPod: false, preallocation: false };
  test.each<[string, Record<string, string>, Partial<ImportRequest>]>([
    ['endpoint only → http', { [Annotation.Endpoint]: URL }, { source: 'http', endpoint: URL }],
    ['the older kubevirt.io endpoint key', { [Annotation.LegacyEndpoint]: URL }, { source: 'http', endpoint: URL }],
    [
      'the cdi key wins over the older key',
      { [Annotation.Endpoint]: URL, [Annotation.LegacyEndpoint]: 'https://old.example.com/x.img' },
      { source: 'http', endpoint: URL },
    ],
    ['endpoint is trimmed', { [Annotation.Endpoint]: `  ${URL}\n` }, { endpoint: URL }],
    ['explicit http', { [Annotation.Endpoint]: URL, [Annotation.Source]: 'http' }, { source: 'http', endpoint: URL }],
    ['source none → blank', { [Annotation.Source]: 'none' }, { source: 'blank', endpoint: '' }],
    ['source none with an endpoint → blank, endpoint dropped', { [Annotation.Source]: 'none', [Annotation.Endpoint]: URL }, { source: 'blank', endpoint: '' }],
    ['source blank', { [Annotation.Source]: 'blank' }, { source: 'blank', endpoint: '' }],
    ['s3', { [Annotation.Source]: 's3', [Annotation.Endpoint]: 's3://bucket/disk.img' }, { source: 's3', endpoint: 's3://bucket/disk.img' }],
    [
      'registry',
      { [Annotation.Source]: 'registry', [Annotation.Endpoint]: 'docker://quay.io/containerdisks/fedora:40' },
      { source: 'registry', endpoint: 'docker://quay.io/containerdisks/fedora:40' },
    ],
    ['content type archive', { [Annotation.Endpoint]: URL, [Annotation.ContentType]: 'archive' }, { contentType: 'archive' }],
    ['content type kubevirt', { [Annotation.Endpoint]: URL, [Annotation.ContentType]: 'kubevirt' }, { contentType: 'kubevirt' }],
    ['empty content type → kubevirt', { [Annotation.Endpoint]: URL, [Annotation.ContentType]: '' }, { contentType: 'kubevirt' }],
  ])('%s', (_name, annotations, expected) => {
    const request = importRequestFromAnnotations(annotations);
    expect(request).toMatchObject({ ...defaults, ...expected });
    expect(request).not.toHaveProperty('secretName');
    expect(request).not.toHaveProperty('certConfigMap');
    expect(request).not.toHaveProperty('checksum');
  });

  test('reads every optional field', () => {
    const request = importRequestFromAnnotations({
      [Annotation.Endpoint]: URL,
      [Annotation.SecretName]: ' creds ',
      [Annotation.CertConfigMap]: 'ca-bundle',
      [Annotation.InsecureSkipVerify]: 'true',
      [Annotation.RetainAfterCompletion]: 'true',
      [Annotation.PreallocationRequested]: 'true',
      [Annotation.Checksum]: SHA256,
    });
    expect(request).toEqual({
      source: 'http',
      endpoint: URL,
      contentType: 'kubevirt',
      secretName: 'creds',
      certConfigMap: 'ca-bundle',
      insecureTls: true,
      checksum: parseChecksum(SHA256),
      retainPod: true,
      preallocation: true,
    });
    expect(Object.isFrozen(request)).toBe(true);
  });

  test.each<[string, keyof ImportRequest]>([
    [Annotation.InsecureSkipVerify, 'insecureTls'],
    [Annotation.RetainAfterCompletion, 'retainPod'],
    [Annotation.PreallocationRequested, 'preallocation'],
  ])('%s is true only for "true"', (key, field) => {
    for (const [value, expected] of [
      ['true', true],
      ['false', false],
      ['', false],
      ['yes', false],
    ] as const) {
      expect(importRequestFromAnnotations({ [Annotation.Endpoint]: URL, [key]: value })?.[field]).toBe(expected);
    }
  });

  test.each<[string, string]>([
    [Annotation.SecretName, 'secretName'],
    [Annotation.CertConfigMap, 'certConfigMap'],
    [Annotation.Checksum, 'checksum'],
  ])('an empty %s is left out', (key, field) => {
    expect(importRequestFromAnnotations({ [Annotation.Endpoint]: URL, [key]: '  ' })).not.toHaveProperty(field);
  });

  test.each(['md5:' + 'a'.repeat(32), 'sha1:' + 'B'.repeat(40), SHA256, 'sha512:' + 'c'.repeat(128)])('checksum %s is accepted', (checksum) => {
    expect(importRequestFromAnnotations({ [Annotation.Endpoint]: URL, [Annotation.Checksum]: checksum })?.checksum).toEqual(parseChecksum(checksum));
  });
});

describe('importRequestFromAnnotations: invalid requests → INVALID_SPEC', () => {
  test.each<[string, Record<string, string>]>([
    ['unknown source', { [Annotation.Source]: 'ftp', [Annotation.Endpoint]: URL }],
    ['upper-case source', { [Annotation.Source]: 'HTTP', [Annotation.Endpoint]: URL }],
    ['file source (not for the controller)', { [Annotation.Source]: 'file', [Annotation.Endpoint]: '/tmp/disk.img' }],
    ['http source without endpoint', { [Annotation.Source]: 'http' }],
    ['s3 without endpoint', { [Annotation.Source]: 's3' }],
    ['registry with a blank endpoint', { [Annotation.Source]: 'registry', [Annotation.Endpoint]: '  ' }],
    ['bad content type', { [Annotation.Endpoint]: URL, [Annotation.ContentType]: 'iso' }],
    ['checksum without algorithm', { [Annotation.Endpoint]: URL, [Annotation.Checksum]: 'ab'.repeat(32) }],
    ['checksum with unknown algorithm', { [Annotation.Endpoint]: URL, [Annotation.Checksum]: `crc32:${'ab'.repeat(4)}` }],
    ['checksum with the wrong length', { [Annotation.Endpoint]: URL, [Annotation.Checksum]: 'sha256:abcd' }],
    ['checksum with non-hex digits', { [Annotation.Endpoint]: URL, [Annotation.Checksum]: `sha256:${'zz'.repeat(32)}` }],
  ])('%s', (_name, annotations) => {
    expect(codeOf(() => importRequestFromAnnotations(annotations))).toBe('INVALID_SPEC');
  });
});

describe('extra headers: the numbered annotations, both ways', () => {
  test('a DataVolume\'s lists become CDI\'s numbered keys and read back in order (10 after 9)', () => {
    const lines = Array.from({ length: 11 }, (_, i) => `X-H${i}: v${i}`);
    const annotations = extraHeaderAnnotations(lines, ['tokens', 'more.tokens']);
    expect(annotations).toMatchObject({
      'cdi.kubevirt.io/storage.import.extraHeaders.0': 'X-H0: v0',
      'cdi.kubevirt.io/storage.import.extraHeaders.10': 'X-H10: v10',
      'cdi.kubevirt.io/storage.import.secretExtraHeaders.0': 'tokens',
      'cdi.kubevirt.io/storage.import.secretExtraHeaders.1': 'more.tokens',
    });
    const shuffled = Object.fromEntries(Object.entries({ [Annotation.Endpoint]: URL, ...annotations }).reverse());
    const request = importRequestFromAnnotations(shuffled);
    expect(request?.extraHeaders).toEqual(lines.map((_, i) => ({ name: `X-H${i}`, value: `v${i}` })));
    expect(request?.secretExtraHeaders).toEqual(['tokens', 'more.tokens']);
  });

  test('none: no keys, and the request has neither field', () => {
    expect(extraHeaderAnnotations(undefined, [])).toEqual({});
    const request = importRequestFromAnnotations({ [Annotation.Endpoint]: URL });
    expect(request).not.toHaveProperty('extraHeaders');
    expect(request).not.toHaveProperty('secretExtraHeaders');
  });

  test.each<[string, Record<string, string>]>([
    ['a header that is not "Name: value"', { [`${Annotation.ExtraHeaders}.0`]: 'Bearer secret-value' }],
    ['a line break in a value', { [`${Annotation.ExtraHeaders}.0`]: 'X: secret-value\r\nY: z' }],
    ['a suffix that is not a number', { [`${Annotation.ExtraHeaders}.first`]: 'X: secret-value' }],
    ['a Secret name that is not one', { [`${Annotation.SecretExtraHeaders}.0`]: 'Not_A_Name' }],
    ['headers on a registry source', { [Annotation.Source]: 'registry', [`${Annotation.ExtraHeaders}.0`]: 'X: secret-value' }],
  ])('%s → INVALID_SPEC, no header value in the message', (_name, extra) => {
    let message = '';
    const code = codeOf(() => {
      try {
        importRequestFromAnnotations({ [Annotation.Endpoint]: URL, ...extra });
      } catch (err) {
        message = (err as Error).message;
        throw err;
      }
    });
    expect(code).toBe('INVALID_SPEC');
    expect(message).not.toContain('secret-value');
  });
});
