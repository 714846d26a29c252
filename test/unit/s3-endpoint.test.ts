import { describe, expect, test } from '@jest/globals';
import { FerryError } from '../../src/errors.js';
import { buildSpec } from '../../importer/cli-main.js';
import { classifyS3Error, describeS3Location, parseS3Location, type S3Location, type S3LocationOptions } from '../../importer/sources/s3-source.js';
import { codeOf } from './helpers.js';

describe('parseS3Location', () => {
  test.each<[string, string, S3LocationOptions, S3Location]>([
    ['s3:// on AWS, default region', 's3://images/fedora/disk.qcow2', {}, { bucket: 'images', key: 'fedora/disk.qcow2', region: 'us-east-1', forcePathStyle: false }],
    ['s3:// on AWS, given region', 's3://images/d.img', { region: 'eu-west-1' }, { bucket: 'images', key: 'd.img', region: 'eu-west-1', forcePathStyle: false }],
    [
      's3:// with an endpoint override: path-style, trailing slash dropped',
      's3://images/d.img',
      { endpoint: 'http://127.0.0.1:7480/' },
      { bucket: 'images', key: 'd.img', endpoint: 'http://127.0.0.1:7480', region: 'us-east-1', forcePathStyle: true },
    ],
    ['an s3:// key is literal, not percent-decoded', 's3://b/a%20b c.img', {}, { bucket: 'b', key: 'a%20b c.img', region: 'us-east-1', forcePathStyle: false }],
    [
      "CDI's form: http://host:port/bucket/key",
      'http://minio.cdi:9000/images/nested/disk.img',
      {},
      { bucket: 'images', key: 'nested/disk.img', endpoint: 'http://minio.cdi:9000', region: 'us-east-1', forcePathStyle: true },
    ],
    [
      "CDI's form over https, key percent-decoded",
      'https://10.0.0.5/images/my%20disk.img',
      { region: 'local' },
      { bucket: 'images', key: 'my disk.img', endpoint: 'https://10.0.0.5', region: 'local', forcePathStyle: true },
    ],
    [
      'a path-style AWS host names the region',
      'https://s3.eu-central-1.amazonaws.com/images/d.img',
      {},
      { bucket: 'images', key: 'd.img', endpoint: 'https://s3.eu-central-1.amazonaws.com', region: 'eu-central-1', forcePathStyle: true },
    ],
    [
      'the global AWS host is us-east-1 whatever the option',
      'https://s3.amazonaws.com/images/d.img',
      { region: 'eu-west-1' },
      { bucket: 'images', key: 'd.img', endpoint: 'https://s3.amazonaws.com', region: 'us-east-1', forcePathStyle: true },
    ],
    ['a legacy s3-<region> host', 'https://s3-us-west-2.amazonaws.com/b/k', {}, { bucket: 'b', key: 'k', endpoint: 'https://s3-us-west-2.amazonaws.com', region: 'us-west-2', forcePathStyle: true }],
    ['a virtual-hosted AWS URL names the bucket', 'https://my.bucket.s3.ap-south-1.amazonaws.com/dir/d.img', {}, { bucket: 'my.bucket', key: 'dir/d.img', region: 'ap-south-1', forcePathStyle: false }],
  ])('%s', (_name, url, options, expected) => {
    expect(parseS3Location(url, options)).toEqual(expected);
  });

  test.each<[string, string, S3LocationOptions]>([
    ['no key', 's3://bucket', {}],
    ['no key after the bucket', 's3://bucket/', {}],
    ['no bucket', 's3:///key', {}],
    ['CDI form without a key', 'http://127.0.0.1:9000/bucket', {}],
    ['CDI form without a bucket', 'http://127.0.0.1:9000/', {}],
    ['a query string (presigned URLs are http)', 'https://h/b/k?X-Amz-Signature=abc', {}],
    ['an endpoint override with a host URL', 'http://h:9000/b/k', { endpoint: 'http://other:9000' }],
    ['an endpoint with a path', 's3://b/k', { endpoint: 'http://h:9000/prefix' }],
    ['an endpoint that is not http', 's3://b/k', { endpoint: 'ftp://h' }],
    ['an endpoint that is not a URL', 's3://b/k', { endpoint: 'h:9000' }],
    ['another scheme', 'gs://b/k', {}],
    ['bad percent-encoding', 'http://h/b/%zz', {}],
  ])('%s is INVALID_SPEC', (_name, url, options) => {
    expect(codeOf(() => parseS3Location(url, options))).toBe('INVALID_SPEC');
  });

  test('the description names bucket, key and where, never a key or secret', () => {
    expect(describeS3Location(parseS3Location('s3://b/k.img', { endpoint: 'https://h:1' }))).toBe('s3://b/k.img at https://h:1');
    expect(describeS3Location(parseS3Location('s3://b/k.img'))).toBe('s3://b/k.img (us-east-1)');
  });
});

describe('classifyS3Error', () => {
  const s3 = (name: string, status: number): unknown => Object.assign(new Error(name === 'Unknown' ? 'UnknownError' : name), { name, $fault: 'client', $metadata: { httpStatusCode: status } });
  test.each<[string, unknown, string, boolean]>([
    ['NoSuchKey', s3('NoSuchKey', 404), 'SOURCE_NOT_FOUND', false],
    ['NoSuchBucket', s3('NoSuchBucket', 404), 'SOURCE_NOT_FOUND', false],
    ['a bare 404', s3('Unknown', 404), 'SOURCE_NOT_FOUND', false],
    ['InvalidAccessKeyId', s3('InvalidAccessKeyId', 403), 'UNAUTHORIZED', false],
    ['SignatureDoesNotMatch', s3('SignatureDoesNotMatch', 403), 'UNAUTHORIZED', false],
    ['AccessDenied', s3('AccessDenied', 403), 'UNAUTHORIZED', false],
    ['wrong region header (400)', s3('AuthorizationHeaderMalformed', 400), 'UNAUTHORIZED', false],
    ['the object changed (If-Match failed)', s3('PreconditionFailed', 412), 'SOURCE_UNAVAILABLE', true],
    ['bucket in another region', s3('PermanentRedirect', 301), 'SOURCE_UNAVAILABLE', false],
    ['InternalError 500', s3('InternalError', 500), 'SOURCE_UNAVAILABLE', true],
    ['SlowDown 503', s3('SlowDown', 503), 'SOURCE_UNAVAILABLE', true],
    ['RequestTimeout 400', s3('RequestTimeout', 400), 'SOURCE_UNAVAILABLE', true],
    ['InvalidRange 416', s3('InvalidRange', 416), 'SOURCE_UNAVAILABLE', false],
    ['connection refused (SDK metadata, no status)', Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED', $metadata: { attempts: 1 } }), 'SOURCE_UNAVAILABLE', true],
    ['an unknown CA', Object.assign(new Error('self-signed certificate in certificate chain'), { code: 'SELF_SIGNED_CERT_IN_CHAIN', $metadata: {} }), 'TLS_ERROR', false],
    ['idle socket timeout', Object.assign(new Error('the request socket timed out'), { name: 'TimeoutError' }), 'SOURCE_UNAVAILABLE', true],
    ['body cut mid-object', Object.assign(new Error('aborted'), { code: 'ECONNRESET' }), 'TRUNCATED', true],
  ])('%s -> %s (retryable %s)', (_name, err, code, retryable) => {
    const ferry = classifyS3Error(err, 's3://b/k at http://h:1');
    expect(ferry).toBeInstanceOf(FerryError);
    expect(ferry).toMatchObject({ code, retryable });
  });

  test('the S3 error code and status go into details', () => {
    expect(classifyS3Error(s3('NoSuchKey', 404), 'x').details).toEqual({ status: 404, s3Code: 'NoSuchKey' });
  });
});

describe('ferry import flags for s3', () => {
  const base = { dest: '/tmp/out.img' };
  test('an s3:// URL is the s3 source; endpoint, region and keys go into the spec', () => {
    const spec = buildSpec({ ...base, url: 's3://b/k.img', 's3-endpoint': 'http://127.0.0.1:7480', region: 'eu-west-1', 'access-key-id': 'AK', 'secret-access-key': 'SK' });
    expect(spec).toMatchObject({ source: 's3', endpoint: 's3://b/k.img', s3Endpoint: 'http://127.0.0.1:7480', s3Region: 'eu-west-1', credentials: { username: 'AK', password: 'SK' } });
  });

  test('keys fall back to AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; none means anonymous', () => {
    expect(buildSpec({ ...base, url: 's3://b/k' }, { AWS_ACCESS_KEY_ID: 'EA', AWS_SECRET_ACCESS_KEY: 'ES' }).credentials).toEqual({ username: 'EA', password: 'ES' });
    expect(buildSpec({ ...base, url: 's3://b/k' }).credentials).toBeUndefined();
  });

  test.each<[string, Record<string, string>]>([
    ['s3 flags with an http URL', { url: 'http://h/d.img', 's3-endpoint': 'http://h:1' }],
    ['an access key without a secret', { url: 's3://b/k', 'access-key-id': 'AK' }],
    ['basic auth with s3', { url: 's3://b/k', username: 'u', password: 'p' }],
  ])('%s is INVALID_SPEC', (_name, values) => {
    expect(codeOf(() => buildSpec({ ...base, ...values }))).toBe('INVALID_SPEC');
  });
});
