import { describe, expect, test } from '@jest/globals';
import type { ProxySettings } from '../../src/contract/import-spec.js';
import { FerryError } from '../../src/errors.js';
import { classifyHttpError, type HttpSourceOptions, optionsFor, proxyFor, redactUrl, sameOrigin } from '../../importer/sources/http-source.js';

const HTTP = 'http://proxy.corp:3128';
const HTTPS = 'http://secure-proxy.corp:3129';
const both = (noProxy?: string): ProxySettings => ({ httpProxy: HTTP, httpsProxy: HTTPS, ...(noProxy !== undefined ? { noProxy } : {}) });

describe('proxyFor', () => {
  test.each<[string, string, ProxySettings, string | undefined]>([
    ['http uses http_proxy', 'http://images.example.com/d.img', both(), HTTP],
    ['https uses https_proxy', 'https://images.example.com/d.img', both(), HTTPS],
    ['https without https_proxy goes direct', 'https://images.example.com/d.img', { httpProxy: HTTP }, undefined],
    ['http without http_proxy goes direct', 'http://images.example.com/d.img', { httpsProxy: HTTPS }, undefined],
    ['no proxy configured', 'http://images.example.com/d.img', {}, undefined],
    ['empty proxy value', 'http://images.example.com/d.img', { httpProxy: '' }, undefined],
    ['no_proxy exact host', 'http://images.example.com/d.img', both('images.example.com'), undefined],
    ['no_proxy is case-insensitive', 'http://Images.Example.COM/d.img', both('IMAGES.example.com'), undefined],
    ['no_proxy ".example.com" matches a subdomain', 'http://sub.example.com/d.img', both('.example.com'), undefined],
    ['no_proxy "example.com" matches a subdomain', 'http://sub.example.com/d.img', both('example.com'), undefined],
    ['no_proxy "*.example.com" matches a subdomain', 'http://sub.example.com/d.img', both('*.example.com'), undefined],
    ['no_proxy ".example.com" matches the domain itself', 'http://example.com/d.img', both('.example.com'), undefined],
    ['no_proxy "example.com" does not match badexample.com', 'http://badexample.com/d.img', both('example.com'), HTTP],
    ['no_proxy "*"', 'https://anything.test/d.img', both('*'), undefined],
    ['no_proxy list with blanks', 'https://registry.local/d.img', both(' foo.test , registry.local ,'), undefined],
    ['no_proxy host:port, same port', 'http://images.example.com:8080/d.img', both('images.example.com:8080'), undefined],
    ['no_proxy host:port, other port', 'http://images.example.com:9090/d.img', both('images.example.com:8080'), HTTP],
    ['no_proxy host:port, default https port', 'https://images.example.com/d.img', both('images.example.com:443'), undefined],
    ['no_proxy host:port, default http port', 'http://images.example.com/d.img', both('images.example.com:80'), undefined],
    ['no_proxy IPv4 address', 'http://10.0.0.5/d.img', both('10.0.0.5'), undefined],
    ['no_proxy IPv6 address', 'http://[::1]:8080/d.img', both('::1'), undefined],
    ['unrelated host gets the proxy', 'https://other.test/d.img', both('example.com,.cluster.local'), HTTPS],
  ])('%s', (_name, url, proxy, expected) => {
    expect(proxyFor(url, proxy)).toBe(expected);
  });
});

describe('redactUrl', () => {
  test.each<[string, string]>([
    ['https://alice:s3cret@images.example.com/d.img?x=1', 'https://redacted@images.example.com/d.img?x=1'],
    ['http://alice@images.example.com/d.img', 'http://redacted@images.example.com/d.img'],
    ['http://:s3cret@images.example.com/', 'http://redacted@images.example.com/'],
    ['https://images.example.com/d.img', 'https://images.example.com/d.img'],
    ['not a url', 'not a url'],
  ])('%j -> %j', (url, expected) => {
    expect(redactUrl(url)).toBe(expected);
    expect(redactUrl(url)).not.toContain('s3cret');
  });
});

describe('classifyHttpError', () => {
  const URL_WITH_PASSWORD = 'https://alice:s3cret@images.example.com/d.img';

  test.each<[string, unknown, string, boolean]>([
    ['HTTP 404', { name: 'HTTPError', response: { statusCode: 404 } }, 'SOURCE_NOT_FOUND', false],
    ['HTTP 410', { name: 'HTTPError', response: { statusCode: 410 } }, 'SOURCE_NOT_FOUND', false],
    ['HTTP 401', { name: 'HTTPError', response: { statusCode: 401 } }, 'UNAUTHORIZED', false],
    ['HTTP 403', { name: 'HTTPError', response: { statusCode: 403 } }, 'UNAUTHORIZED', false],
    ['HTTP 500', { name: 'HTTPError', response: { statusCode: 500 } }, 'SOURCE_UNAVAILABLE', true],
    ['HTTP 503', { name: 'HTTPError', response: { statusCode: 503 } }, 'SOURCE_UNAVAILABLE', true],
    ['HTTP 408', { name: 'HTTPError', response: { statusCode: 408 } }, 'SOURCE_UNAVAILABLE', true],
    ['HTTP 429', { name: 'HTTPError', response: { statusCode: 429 } }, 'SOURCE_UNAVAILABLE', true],
    ['HTTP 400', { name: 'HTTPError', response: { statusCode: 400 } }, 'SOURCE_UNAVAILABLE', false],
    ['HTTP 416', { name: 'HTTPError', response: { statusCode: 416 } }, 'SOURCE_UNAVAILABLE', false],
    ['too many redirects', { name: 'MaxRedirectsError', message: 'Redirected 10 times. Aborting.' }, 'SOURCE_UNAVAILABLE', false],
    ['connection refused', { name: 'RequestError', code: 'ECONNREFUSED', message: 'connect ECONNREFUSED 10.0.0.1:443' }, 'SOURCE_UNAVAILABLE', true],
    ['DNS failure', { name: 'RequestError', code: 'ENOTFOUND', message: 'getaddrinfo ENOTFOUND nowhere.test' }, 'SOURCE_UNAVAILABLE', true],
    ['self-signed chain (code only)', { code: 'SELF_SIGNED_CERT_IN_CHAIN' }, 'TLS_ERROR', false],
    ['expired certificate', { name: 'RequestError', code: 'CERT_HAS_EXPIRED', message: 'certificate has expired' }, 'TLS_ERROR', false],
    ['wrong host name', { name: 'RequestError', code: 'ERR_TLS_CERT_ALTNAME_INVALID' }, 'TLS_ERROR', false],
    ['TLS failure recognised by message', { name: 'RequestError', message: 'unable to get local issuer certificate' }, 'TLS_ERROR', false],
    ['idle socket timeout', { name: 'TimeoutError', event: 'socket', message: "Timeout awaiting 'socket' for 120000ms" }, 'SOURCE_UNAVAILABLE', true],
    ['first byte timeout', { name: 'TimeoutError', event: 'response' }, 'SOURCE_UNAVAILABLE', true],
    ['read error', { name: 'ReadError' }, 'TRUNCATED', true],
    ['connection reset', { name: 'RequestError', code: 'ECONNRESET', message: 'read ECONNRESET' }, 'TRUNCATED', true],
    ['premature close', { code: 'ERR_STREAM_PREMATURE_CLOSE', message: 'Premature close' }, 'TRUNCATED', true],
    ['something else', new Error('weird'), 'SOURCE_UNAVAILABLE', true],
    ['a string', 'oops', 'SOURCE_UNAVAILABLE', true],
  ])('%s -> %s (retryable %s)', (_name, err, code, retryable) => {
    const ferry = classifyHttpError(err, URL_WITH_PASSWORD);
    expect(ferry).toBeInstanceOf(FerryError);
    expect(ferry).toMatchObject({ code, retryable });
    expect(ferry.message).not.toContain('s3cret');
  });

  test('HTTP status goes into details', () => {
    expect(classifyHttpError({ name: 'HTTPError', response: { statusCode: 502 } }, 'http://x.test/').details).toEqual({ status: 502 });
  });

  test('a FerryError passes through unchanged', () => {
    const err = new FerryError('CHECKSUM_MISMATCH', 'bad sum');
    expect(classifyHttpError(err, 'http://x.test/')).toBe(err);
  });
});

describe('requests after a redirect', () => {
  const base: HttpSourceOptions = {
    url: 'https://images.example/fedora.qcow2',
    credentials: { username: 'u', password: 'p' },
    insecureTls: false,
    proxy: {},
    timeouts: { connectMs: 1000, firstByteMs: 1000, idleMs: 1000 },
    headers: { Authorization: 'Bearer t', Cookie: 'c=1', 'X-Mirror': 'eu' },
  };

  test.each<[string, string, boolean]>([
    ['https://images.example/a', 'https://images.example/b', true],
    ['https://images.example/a', 'https://images.example:443/b', true],
    ['https://images.example/a', 'http://images.example/a', false],
    ['https://images.example/a', 'https://mirror.example/a', false],
    ['https://images.example:8443/a', 'https://images.example/a', false],
    ['not a url', 'https://images.example/a', false],
  ])('sameOrigin(%s, %s) is %s', (a, b, expected) => {
    expect(sameOrigin(a, b)).toBe(expected);
  });

  test('the same origin keeps credentials and headers', () => {
    expect(optionsFor(base, 'https://images.example/pub/fedora.qcow2')).toEqual({ ...base, url: 'https://images.example/pub/fedora.qcow2' });
  });

  test('another origin gets neither the credentials nor authorization/cookie headers', () => {
    const moved = optionsFor(base, 'https://mirror.example/fedora.qcow2');
    expect(moved.url).toBe('https://mirror.example/fedora.qcow2');
    expect(moved.credentials).toBeUndefined();
    expect(moved.headers).toEqual({ 'X-Mirror': 'eu' });
  });
});
