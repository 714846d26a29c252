import { describe, expect, test } from '@jest/globals';
import {
  decodeTermination,
  encodeTermination,
  type ImportFailure,
  TERMINATION_MESSAGE_LIMIT,
  type TerminationMessage,
} from '../../src/contract/termination.js';

const failure = (message: string): ImportFailure => ({ kind: 'failure', code: 'SOURCE_UNAVAILABLE', message, retryable: true });

describe('encodeTermination / decodeTermination', () => {
  test.each<[string, TerminationMessage]>([
    ['minimal success', { kind: 'success', message: 'Import Complete', scratchSpaceRequired: false, preallocationApplied: false }],
    [
      'full success',
      { kind: 'success', message: 'Import Complete', scratchSpaceRequired: true, preallocationApplied: true, sourceFormat: 'qcow2', diskSize: 10 * 2 ** 30 },
    ],
    ['retryable failure', failure('503 from the server')],
    ['failure with retryable overridden', { kind: 'failure', code: 'INVALID_SPEC', message: 'bad', retryable: true }],
    ['failure with an empty message', { kind: 'failure', code: 'INTERNAL', message: '', retryable: false }],
  ])('%s round trips', (_name, msg) => {
    const text = encodeTermination(msg);
    expect(() => JSON.parse(text)).not.toThrow();
    expect(decodeTermination(text)).toEqual(msg);
  });

  test('a success is written with CDI field names', () => {
    const text = encodeTermination({ kind: 'success', message: 'Import Complete', scratchSpaceRequired: true, preallocationApplied: false });
    expect(JSON.parse(text)).toEqual({ message: 'Import Complete', scratchSpaceRequired: true, preallocationApplied: false });
  });
});

describe('the 4096-byte limit', () => {
  test.each<[string, string]>([
    ['10,000 ASCII characters', 'x'.repeat(10_000)],
    ["'é' repeated 5000 times", 'é'.repeat(5000)],
    ['5000 emoji (surrogate pairs)', '😀'.repeat(5000)],
    ['5000 control characters (escaped by JSON)', '\u0001'.repeat(5000)],
  ])('a failure with %s fits and still decodes with its code', (_name, message) => {
    const text = encodeTermination(failure(message));
    expect(Buffer.byteLength(text)).toBeLessThanOrEqual(TERMINATION_MESSAGE_LIMIT);
    const decoded = decodeTermination(text);
    expect(decoded).toMatchObject({ kind: 'failure', code: 'SOURCE_UNAVAILABLE', retryable: true });
  });

  test('a long ASCII message keeps its beginning and uses most of the budget', () => {
    const message = 'abcdefghij'.repeat(1000);
    const text = encodeTermination(failure(message));
    expect(Buffer.byteLength(text)).toBeGreaterThan(TERMINATION_MESSAGE_LIMIT - 200);
    const decoded = decodeTermination(text);
    expect(decoded.message.startsWith('abcdefghij'.repeat(300))).toBe(true);
    expect(decoded.message.endsWith('…')).toBe(true);
  });

  test('a long success message fits too', () => {
    const text = encodeTermination({ kind: 'success', message: 'y'.repeat(9000), scratchSpaceRequired: true, preallocationApplied: false, sourceFormat: 'vmdk' });
    expect(Buffer.byteLength(text)).toBeLessThanOrEqual(TERMINATION_MESSAGE_LIMIT);
    expect(decodeTermination(text)).toMatchObject({ kind: 'success', scratchSpaceRequired: true, sourceFormat: 'vmdk' });
  });

  // The message is cut by UTF-8 bytes and JSON escaping, not by characters.
  test.each<[string, string]>([
    ["'é' repeated 5000 times", 'é'.repeat(5000)],
    ['5000 emoji', '😀'.repeat(5000)],
  ])('a failure with %s keeps a useful part of the message', (_name, message) => {
    const decoded = decodeTermination(encodeTermination(failure(message)));
    expect(decoded.message.length).toBeGreaterThan(1000);
  });
});

describe('decodeTermination of foreign text', () => {
  test.each([
    'panic: runtime error\n  at foo (bar.js:1:1)',
    '',
    '{"truncated',
    '42',
    'null',
    '"a string"',
    '[]',
    '{"code":"NOT_A_CODE","message":"x"}',
    '{"scratchSpaceRequired":true}',
  ])('%j -> failure INTERNAL, retryable', (text) => {
    expect(decodeTermination(text)).toMatchObject({ kind: 'failure', code: 'INTERNAL', retryable: true });
  });

  test('keeps the (trimmed) text of a crash as the message', () => {
    expect(decodeTermination('  Error: boom\n')).toEqual({ kind: 'failure', code: 'INTERNAL', message: 'Error: boom', retryable: true });
  });

  test('caps the kept crash text at 1024 characters', () => {
    expect(decodeTermination('z'.repeat(5000)).message).toHaveLength(1024);
  });

  test('reads a CDI importer success', () => {
    expect(decodeTermination('{"scratchSpaceRequired":true,"preallocationApplied":false,"message":"Import Complete"}')).toEqual({
      kind: 'success',
      message: 'Import Complete',
      scratchSpaceRequired: true,
      preallocationApplied: false,
    });
  });

  test('a failure without retryable takes the default from the table', () => {
    expect(decodeTermination('{"code":"TRUNCATED","message":"cut"}')).toEqual({ kind: 'failure', code: 'TRUNCATED', message: 'cut', retryable: true });
    expect(decodeTermination('{"code":"BACKING_FILE"}')).toEqual({ kind: 'failure', code: 'BACKING_FILE', message: '', retryable: false });
  });
});
