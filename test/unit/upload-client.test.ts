/** The upload client's pure parts: URLs, the meaning of an answer, the progress line, the tus verdicts. */

import { describe, expect, test } from '@jest/globals';
import { ErrorCode } from '../../src/errors.js';
import { answerError, uploadUrl } from '../../cli/upload/client.js';
import { createProgressReporter, formatDuration, progressLine } from '../../cli/upload/progress.js';
import { headAnswer, patchVerdict, tusVersionRefusal } from '../../importer/upload-server-resumable.js';
import { codeOf } from './helpers.js';

describe('uploadUrl (virtctl: the path appended unless the URL has it; https:// when no scheme)', () => {
  test.each<[string, string, string]>([
    ['https://p:8443', '/v1beta1/upload-async', 'https://p:8443/v1beta1/upload-async'],
    ['https://p:8443/', '/v1beta1/upload', 'https://p:8443/v1beta1/upload'],
    ['p.example:443', '/v1beta1/upload', 'https://p.example/v1beta1/upload'],
    ['https://p/prefix', '/v1beta1/upload-resumable', 'https://p/prefix/v1beta1/upload-resumable'],
    ['https://p/v1beta1/upload-async', '/v1beta1/upload', 'https://p/v1beta1/upload'],
  ])('%s + %s', (base, path, url) => expect(uploadUrl(base, path).toString()).toBe(url));
  test('not a URL, or not http(s): INVALID_SPEC', () => {
    expect(codeOf(() => uploadUrl('https://', '/x'))).toBe(ErrorCode.InvalidSpec);
    expect(codeOf(() => uploadUrl('ftp://p', '/x'))).toBe(ErrorCode.InvalidSpec);
  });
});

describe('answerError: the server\'s reason and code', () => {
  test.each<[number, Record<string, string>, ErrorCode, boolean]>([
    [401, {}, ErrorCode.Unauthorized, false],
    [409, {}, ErrorCode.TargetError, false],
    [503, {}, ErrorCode.SourceUnavailable, true],
    [400, { 'x-ferry-error-code': 'TARGET_TOO_SMALL' }, ErrorCode.TargetTooSmall, false],
    [500, { 'x-ferry-error-code': 'NOT_A_CODE' }, ErrorCode.SourceUnavailable, true],
  ])('%d %j → %s', (status, headers, code, retryable) => {
    const error = answerError(status, 'Saving stream failed: because\n', headers);
    expect(error).toMatchObject({ code, retryable });
    expect(error.message).toContain(`(HTTP ${status}): Saving stream failed: because`);
  });
});

describe('progress', () => {
  test('the line: bytes, percent, rate, ETA', () => {
    expect(progressLine({ bytes: 12 * 1048576, total: 48 * 1048576, rate: 4 * 1048576 })).toBe('12.0 MiB / 48.0 MiB  25%  4.00 MiB/s  ETA 0:09');
    expect(progressLine({ bytes: 0, total: 100 })).toBe('0 B / 100 B  0%  --  ETA --:--');
    expect(formatDuration(3725)).toBe('1:02:05');
  });

  test('not a terminal: one line every 5 s, then the final one', () => {
    const lines: string[] = [];
    let t = 0;
    const p = createProgressReporter({ total: 100 * 1048576, out: { write: (s: string) => lines.push(s) }, now: () => t });
    for (let i = 1; i <= 100; i += 1) {
      t = i * 200;
      p.update(i * 1048576);
    }
    p.done();
    expect(lines).toHaveLength(4 + 1); // at t = 200, 5200, 10200, 15200 ms, and the final one
    expect(lines.every((l) => l.endsWith('\n') && !l.includes('\r'))).toBe(true);
    expect(lines[lines.length - 1]).toMatch(/^100\.0 MiB \/ 100\.0 MiB {2}100% {2}5\.00 MiB\/s {2}ETA 0:00\n$/);
  });

  test('a terminal: the line redrawn in place; a resume restarts the rate window', () => {
    const lines: string[] = [];
    let t = 0;
    const p = createProgressReporter({ total: 10, out: { write: (s: string) => lines.push(s), isTTY: true }, now: () => t, redrawMs: 100 });
    p.update(5);
    t = 1000;
    p.update(8);
    t = 2000;
    p.update(3); // resumed from an earlier offset
    p.done();
    expect(lines.every((l) => l.startsWith('\r\x1b[K'))).toBe(true);
    expect(lines[1]).toContain('3 B/s');
    expect(lines[3]).toMatch(/3 B \/ 10 B {2}30% {2}-- {2}ETA --:--\n$/);
  });
});

describe('the tus verdicts of the upload server (pure)', () => {
  const headers = (offset: string, length?: string, contentLength?: string) => ({ contentType: 'application/offset+octet-stream', offset, ...(length !== undefined ? { length } : {}), ...(contentLength !== undefined ? { contentLength } : {}) });
  test('Tus-Resumable 1.0.0 required except on OPTIONS', () => {
    expect(tusVersionRefusal('HEAD', undefined)?.answer).toBe('TusVersion');
    expect(tusVersionRefusal('PATCH', '0.2.2')?.answer).toBe('TusVersion');
    expect(tusVersionRefusal('PATCH', '1.0.0')).toBeUndefined();
    expect(tusVersionRefusal('OPTIONS', undefined)).toBeUndefined();
  });
  test('HEAD: the durable offset and the length once known; busy/done as the one-shot paths', () => {
    expect(headAnswer({ kind: 'empty' }, 'none').headers).toEqual({ 'upload-offset': '0', 'upload-defer-length': '1' });
    expect(headAnswer({ kind: 'staging', offset: 7, length: 10, writing: false }, 'none').headers).toEqual({ 'upload-offset': '7', 'upload-length': '10' });
    expect(headAnswer({ kind: 'staged', length: 10 }, 'none').headers).toEqual({ 'upload-offset': '10', 'upload-length': '10' });
    expect(headAnswer({ kind: 'empty' }, 'busy').answer).toBe('Busy');
    expect(headAnswer({ kind: 'staged', length: 10 }, 'done').answer).toBe('AlreadyDone');
  });
  test.each<[string, Parameters<typeof patchVerdict>[0], Parameters<typeof patchVerdict>[2], string | { offset: number; length: number }]>([
    ['first PATCH with its length', { kind: 'empty' }, headers('0', '10'), { offset: 0, length: 10 }],
    ['a resume from the durable offset', { kind: 'staging', offset: 4, length: 10, writing: false }, headers('4', undefined, '6'), { offset: 4, length: 10 }],
    ['wrong content type', { kind: 'empty' }, { ...headers('0', '10'), contentType: 'application/octet-stream' }, 'TusContentType'],
    ['no offset', { kind: 'empty' }, headers('', '10'), 'TusBadHeaders'],
    ['first PATCH without a length', { kind: 'empty' }, headers('0'), 'TusBadHeaders'],
    ['a zero length', { kind: 'empty' }, headers('0', '0'), 'TusBadHeaders'],
    ['a stale offset', { kind: 'staging', offset: 4, length: 10, writing: false }, headers('0'), 'TusOffsetConflict'],
    ['a changed length', { kind: 'staging', offset: 4, length: 10, writing: false }, headers('4', '11'), 'TusBadHeaders'],
    ['a body past the length', { kind: 'staging', offset: 4, length: 10, writing: false }, headers('4', undefined, '7'), 'TusBadHeaders'],
    ['another PATCH still writing', { kind: 'staging', offset: 4, length: 10, writing: true }, headers('4'), 'TusLocked'],
    ['all staged', { kind: 'staged', length: 10 }, headers('4'), 'TusOffsetConflict'],
  ])('%s', (_what, state, h, expected) => {
    const verdict = patchVerdict(state, 'none', h);
    if (typeof expected === 'string') expect(verdict).toMatchObject({ ok: false, refusal: { answer: expected } });
    else expect(verdict).toEqual({ ok: true, ...expected });
  });
  test('a conflict carries the durable offset', () => {
    expect(patchVerdict({ kind: 'staging', offset: 4, length: 10, writing: false }, 'none', headers('0'))).toMatchObject({ ok: false, refusal: { headers: { 'upload-offset': '4' } } });
    expect(patchVerdict({ kind: 'empty' }, 'done', headers('0', '1'))).toMatchObject({ ok: false, refusal: { answer: 'AlreadyDone' } });
  });
});
