import { describe, expect, test } from '@jest/globals';
import { configQuote, curlFailure, curlInvocation, isBrokenTransfer, splitBodyBytes } from '../../importer/sources/curl-fetch.js';
import { FerryError } from '../../src/errors.js';

const TIMEOUTS = { connectMs: 30_000, firstByteMs: 60_000, idleMs: 120_000, minSpeedBytes: 16384, minSpeedWindowMs: 60_000 };
const exit = (code: number | null, stderr = '', signal: NodeJS.Signals | null = null) => ({ code, signal, stderr });

describe('curl invocation', () => {
  test('no secret and no URL on argv: all in the config read from stdin; no ~/.curlrc, no redirects', () => {
    const { args, config } = curlInvocation({
      url: 'https://u:p%40ss@example.com/disk.img?token=abc',
      credentials: { username: 'alice', password: 's3cr"et\\x' },
      proxy: 'http://pu:pp@proxy:3128',
      insecureTls: false,
      timeouts: TIMEOUTS,
    }, '/tmp/ca.pem');
    const argv = args.join(' ');
    for (const secret of ['s3cr', 'alice', 'token=abc', 'pp', 'p%40ss', 'example.com']) expect(argv).not.toContain(secret);
    expect(args.slice(0, 3)).toEqual(['-q', '-K', '-']);
    expect(args).toEqual(expect.arrayContaining(['--max-redirs', '0', '--fail', '--proto', '=http,https', '--cacert', '/tmp/ca.pem']));
    expect(config).toContain('url = "https://example.com/disk.img?token=abc"');
    expect(config).toContain('user = "alice:s3cr\\"et\\\\x"');
    expect(config).toContain('proxy = "http://proxy:3128/"');
    expect(config).toContain('proxy-user = "pu:pp"');
    expect(args).not.toContain('--insecure');
  });

  test('the minimum speed is curl\'s own low-speed limit; off, the idle timeout is a 1 byte/s floor', () => {
    const on = curlInvocation({ url: 'http://h/x', insecureTls: false, timeouts: TIMEOUTS }).args;
    expect(on.slice(on.indexOf('--speed-limit'), on.indexOf('--speed-limit') + 4)).toEqual(['--speed-limit', '16384', '--speed-time', '60']);
    const off = curlInvocation({ url: 'http://h/x', insecureTls: true, timeouts: { ...TIMEOUTS, minSpeedBytes: 0 } }).args;
    expect(off.slice(off.indexOf('--speed-limit'), off.indexOf('--speed-limit') + 4)).toEqual(['--speed-limit', '1', '--speed-time', '120']);
    expect(off).toContain('--insecure');
    expect(curlInvocation({ url: 'http://h/x', insecureTls: false, timeouts: TIMEOUTS }).config).toContain('noproxy = "*"');
  });

  test('a line break in a value is refused (it would start another config line)', () => {
    expect(() => configQuote('a\nheader = "x"')).toThrow(expect.objectContaining({ code: 'INVALID_SPEC' }));
    expect(configQuote('a"b\\c')).toBe('"a\\"b\\\\c"');
  });
});

describe('curl exits as importer errors', () => {
  test.each<[string, ReturnType<typeof exit>, string, boolean]>([
    ['404', exit(22, 'curl: (22) The requested URL returned error: 404'), 'SOURCE_NOT_FOUND', false],
    ['401', exit(22, 'curl: (22) The requested URL returned error: 401'), 'UNAUTHORIZED', false],
    ['503: retryable', exit(22, 'curl: (22) The requested URL returned error: 503'), 'SOURCE_UNAVAILABLE', true],
    ['400: not retryable', exit(22, 'curl: (22) The requested URL returned error: 400'), 'SOURCE_UNAVAILABLE', false],
    ['a broken body', exit(18, 'curl: (18) transfer closed with 100 bytes remaining to read'), 'TRUNCATED', true],
    ['a reset', exit(56, 'curl: (56) Recv failure: Connection reset by peer'), 'TRUNCATED', true],
    ['TLS', exit(60, 'curl: (60) SSL certificate problem: self-signed certificate'), 'TLS_ERROR', false],
    ['a redirect', exit(47, 'curl: (47) Maximum (0) redirects followed'), 'SOURCE_UNAVAILABLE', false],
    ['cannot connect', exit(7, 'curl: (7) Failed to connect'), 'SOURCE_UNAVAILABLE', true],
  ])('%s', (_name, e, code, retryable) => {
    const error = curlFailure(e, 'http://h/x', { timeouts: TIMEOUTS });
    expect(error).toMatchObject({ code, retryable });
  });

  test('too slow is the minimum-speed error (retryable, reason too-slow) and a broken transfer', () => {
    const error = curlFailure(exit(28, 'curl: (28) Operation too slow. Less than 16384 bytes/sec transferred the last 60 seconds'), 'http://h/x', { timeouts: TIMEOUTS });
    expect(error).toMatchObject({ code: 'SOURCE_UNAVAILABLE', retryable: true, details: { reason: 'too-slow' } });
    expect(isBrokenTransfer(error)).toBe(true);
    expect(isBrokenTransfer(curlFailure(exit(18), 'x', { timeouts: TIMEOUTS }))).toBe(true);
    expect(isBrokenTransfer(curlFailure(exit(22, 'error: 404'), 'x', { timeouts: TIMEOUTS }))).toBe(false);
    expect(isBrokenTransfer(new FerryError('TRUNCATED', 'x', { retryable: false }))).toBe(false);
  });

  test('success is no error', () => {
    expect(curlFailure(exit(0), 'x', { timeouts: TIMEOUTS })).toBeUndefined();
  });
});

describe('splitBodyBytes (curl\'s --write-out count on stderr)', () => {
  test('the count is taken out; what curl said stays for the error message', () => {
    expect(splitBodyBytes('ferry-body-bytes 196395792')).toEqual({ fetched: 196395792, stderr: '' });
    expect(splitBodyBytes('curl: (18) transfer closed with 4096 bytes remaining to read\nferry-body-bytes 1048576')).toEqual({
      fetched: 1048576,
      stderr: 'curl: (18) transfer closed with 4096 bytes remaining to read',
    });
  });

  test('no count, or one that is not a byte count: none', () => {
    expect(splitBodyBytes('curl: (7) Failed to connect')).toEqual({ stderr: 'curl: (7) Failed to connect' });
    expect(splitBodyBytes('ferry-body-bytes -1')).toEqual({ stderr: '' });
    expect(splitBodyBytes('ferry-body-bytes 1.5e3x')).toEqual({ stderr: '' });
  });
});
