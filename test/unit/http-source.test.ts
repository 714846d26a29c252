import { describe, expect, test } from '@jest/globals';
import type { ProxySettings } from '../../src/contract/import-spec.js';
import { FerryError } from '../../src/errors.js';
import { classifyHttpError, DEFAULT_HTTP_TIMEOUTS, type HttpSourceOptions, minSpeedFromFlags, minSpeedOf, optionsFor, proxyFor, redactUrl, sameOrigin } from '../../importer/sources/http-source.js';
import { isTooSlow, minimumBytes, SpeedVerdict, SpeedWindow, tooSlowError } from '../../importer/min-speed.js';
import { scrubSecrets, tuningFromEnv } from '../../importer/main.js';
import { childEnvironment, NbdReadLedger, parseNbdLogLine, splitUserinfo } from '../../importer/nbdkit.js';

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

describe('minimum speed (curl --speed-limit/--speed-time)', () => {
  const limit = { bytesPerSecond: 1024, windowMs: 1000 };

  test('a window is judged only once the reader has waited a whole window', () => {
    const w = new SpeedWindow(limit);
    expect(w.add(400, 10)).toBe(SpeedVerdict.Open);
    expect(w.remainingMs()).toBe(600);
    expect(w.add(600, 10)).toBe(SpeedVerdict.Slow);
    // A new window starts after each verdict.
    expect(w.remainingMs()).toBe(1000);
    expect(w.add(999, 1024)).toBe(SpeedVerdict.Open);
    expect(w.add(1, 0)).toBe(SpeedVerdict.Ok);
  });

  test.each<[string, number, number, SpeedVerdict]>([
    ['one byte per 200 ms', 1000, 5, SpeedVerdict.Slow],
    ['nothing at all (a stall)', 1000, 0, SpeedVerdict.Slow],
    ['exactly the limit', 1000, 1024, SpeedVerdict.Ok],
    ['time the consumer held the stream back is not waiting', 0, 0, SpeedVerdict.Open],
  ])('%s', (_name, waited, bytes, verdict) => {
    expect(new SpeedWindow(limit).add(waited, bytes)).toBe(verdict);
  });

  test('0 bytes/s or a 0 window turns the check off', () => {
    expect(new SpeedWindow({ bytesPerSecond: 0, windowMs: 1000 }).add(1e9, 0)).toBe(SpeedVerdict.Ok);
    expect(new SpeedWindow({ bytesPerSecond: 1024, windowMs: 0 }).add(1e9, 0)).toBe(SpeedVerdict.Ok);
    expect(minimumBytes({ bytesPerSecond: 0, windowMs: 1000 })).toBe(0);
    expect(minimumBytes({ bytesPerSecond: 16 * 1024, windowMs: 60_000 })).toBe(960 * 1024);
  });

  test('the too-slow error is retryable SOURCE_UNAVAILABLE and recognisable', () => {
    const e = tooSlowError('http://x/d.img', limit);
    expect(e.code).toBe('SOURCE_UNAVAILABLE');
    expect(e.retryable).toBe(true);
    expect(isTooSlow(e)).toBe(true);
    expect(isTooSlow(new FerryError('SOURCE_UNAVAILABLE', 'x'))).toBe(false);
  });

  test('timeouts without the fields get the defaults; 0 stays 0', () => {
    expect(minSpeedOf({ connectMs: 1, firstByteMs: 1, idleMs: 1 })).toEqual({ bytesPerSecond: DEFAULT_HTTP_TIMEOUTS.minSpeedBytes, windowMs: DEFAULT_HTTP_TIMEOUTS.minSpeedWindowMs });
    expect(minSpeedOf({ connectMs: 1, firstByteMs: 1, idleMs: 1, minSpeedBytes: 0, minSpeedWindowMs: 5 })).toEqual({ bytesPerSecond: 0, windowMs: 5 });
  });

  test('--speed-limit BYTES --speed-time SEC', () => {
    expect(minSpeedFromFlags(undefined, undefined)).toEqual({});
    expect(minSpeedFromFlags('1024', '30')).toEqual({ minSpeedBytes: 1024, minSpeedWindowMs: 30_000 });
    expect(minSpeedFromFlags('0', undefined)).toEqual({ minSpeedBytes: 0 });
    for (const bad of ['-1', '1.5', 'fast', '']) {
      expect(() => minSpeedFromFlags(bad, undefined)).toThrow(expect.objectContaining({ code: 'INVALID_SPEC' }));
      expect(() => minSpeedFromFlags(undefined, bad)).toThrow(expect.objectContaining({ code: 'INVALID_SPEC' }));
    }
  });
});

describe('nbdkit read ledger (log filter lines)', () => {
  test.each<[string, ReturnType<typeof parseNbdLogLine>]>([
    ['2026-12-01 10:00:37.221271 connection=1 Read id=7 offset=0x50000 count=0x100000 ...', { kind: 'read', key: '1:7', count: 0x100000 }],
    ['2026-12-01 10:00:37.229749 connection=1 ...Read id=7 return=0', { kind: 'done', key: '1:7', ok: true }],
    ['2026-12-01 10:00:37.229749 connection=2 ...Read id=3 return=-1 (Input/output error)', { kind: 'done', key: '2:3', ok: false }],
    ['2026-12-01 10:00:37.190777 connection=1 Connect export="" tls=0 size=0x250000', undefined],
    ['2026-12-01 10:00:37.155616 Ready thread_model=2', undefined],
  ])('%s', (line, event) => {
    expect(parseNbdLogLine(line)).toEqual(event);
  });

  const read = (id: number, count: number): string => `t connection=1 Read id=${id} offset=0x0 count=0x${count.toString(16)} ...`;
  const done = (id: number, ret = 0): string => `t connection=1 ...Read id=${id} return=${ret}`;

  test('only time with a read outstanding counts; delivered bytes are judged per window', () => {
    const ledger = new NbdReadLedger({ bytesPerSecond: 1024, windowMs: 1000 });
    // Nothing asked: qemu-img busy elsewhere, however long.
    expect(ledger.tick(5000)).toBe(SpeedVerdict.Open);
    ledger.line(read(1, 4096));
    expect(ledger.outstanding).toBe(1);
    expect(ledger.tick(500)).toBe(SpeedVerdict.Open);
    ledger.line(done(1));
    expect(ledger.tick(500)).toBe(SpeedVerdict.Ok);
    ledger.line(read(2, 4096));
    expect(ledger.tick(600)).toBe(SpeedVerdict.Open);
    expect(ledger.tick(600)).toBe(SpeedVerdict.Slow);
  });

  test('bytes off the network count while a read is still in progress', () => {
    const ledger = new NbdReadLedger({ bytesPerSecond: 1024, windowMs: 1000 });
    ledger.line(read(1, 1 << 20));
    expect(ledger.tick(1000, 4096)).toBe(SpeedVerdict.Ok);
    // A trickle: five bytes a second into a read that never completes.
    expect(ledger.tick(1000, 5)).toBe(SpeedVerdict.Slow);
  });

  test('a read the source failed is counted', () => {
    const ledger = new NbdReadLedger({ bytesPerSecond: 0, windowMs: 0 });
    ledger.line(read(1, 512));
    ledger.line(done(1, -1));
    expect(ledger.failedReads).toBe(1);
    expect(ledger.outstanding).toBe(0);
  });
});

describe('what nbdkit is given', () => {
  test('user:password leaves the URL', () => {
    expect(splitUserinfo('http://u%40x:p%3Aw@proxy:3128')).toEqual({ url: 'http://proxy:3128/', username: 'u@x', password: 'p:w' });
    expect(splitUserinfo('https://host/d.img')).toEqual({ url: 'https://host/d.img' });
    expect(splitUserinfo('not a url')).toEqual({ url: 'not a url' });
  });

  test('the environment is an allowlist: the import secret and proxies are not inherited', () => {
    const env = childEnvironment({ PATH: '/usr/bin', IMPORTER_SECRET_KEY: 's', http_proxy: 'http://u:p@x', HOME: '/root', AWS_SECRET_ACCESS_KEY: 'k' });
    expect(env).toEqual({ PATH: '/usr/bin', HOME: '/root' });
  });
});

describe("the importer pod's environment", () => {
  test('FERRY_HTTP_MIN_SPEED_BYTES and FERRY_HTTP_MIN_SPEED_WINDOW_MS reach the HTTP timeouts; unset, the defaults', () => {
    expect(tuningFromEnv({ FERRY_HTTP_MIN_SPEED_BYTES: '2048', FERRY_HTTP_MIN_SPEED_WINDOW_MS: '30000' }).http).toMatchObject({ minSpeedBytes: 2048, minSpeedWindowMs: 30_000 });
    expect(tuningFromEnv({}).http).toMatchObject({ minSpeedBytes: DEFAULT_HTTP_TIMEOUTS.minSpeedBytes, minSpeedWindowMs: DEFAULT_HTTP_TIMEOUTS.minSpeedWindowMs });
    expect(tuningFromEnv({ FERRY_HTTP_MIN_SPEED_BYTES: '0' }).http.minSpeedBytes).toBe(0);
    expect(() => tuningFromEnv({ FERRY_HTTP_MIN_SPEED_WINDOW_MS: 'soon' })).toThrow(expect.objectContaining({ code: 'INVALID_SPEC' }));
  });

  test('once decoded, the secret and proxies with a password leave the environment children inherit', () => {
    const env: NodeJS.ProcessEnv = { IMPORTER_SECRET_KEY: 's', IMPORTER_ACCESS_KEY_ID: 'id', http_proxy: 'http://u:p@proxy:3128', https_proxy: 'http://proxy:3129', PATH: '/bin' };
    scrubSecrets(env);
    expect(env).toEqual({ IMPORTER_ACCESS_KEY_ID: 'id', https_proxy: 'http://proxy:3129', PATH: '/bin' });
  });
});
