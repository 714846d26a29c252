import { describe, expect, test } from '@jest/globals';
import { ERROR_TABLE, ErrorCode, FerryError, isErrorCode, isFerryError, toFerryError } from '../../src/errors.js';

const codes = Object.values(ErrorCode);

describe('ERROR_TABLE', () => {
  test('has an entry for every ErrorCode and nothing else', () => {
    expect(Object.keys(ERROR_TABLE).sort()).toEqual([...codes].sort());
  });

  test('exit codes are distinct', () => {
    const exitCodes = codes.map((code) => ERROR_TABLE[code].exitCode);
    expect(new Set(exitCodes).size).toBe(codes.length);
  });

  test.each(codes)('%s has an exit code in 2..255 (0 and 1 are reserved)', (code) => {
    const { exitCode } = ERROR_TABLE[code];
    expect(Number.isInteger(exitCode)).toBe(true);
    expect(exitCode).toBeGreaterThanOrEqual(2);
    expect(exitCode).toBeLessThanOrEqual(255);
  });

  test.each(codes)('%s has a summary', (code) => {
    expect(ERROR_TABLE[code].summary.length).toBeGreaterThan(0);
  });
});

describe('FerryError', () => {
  test.each(codes)('%s takes retryable and exitCode from the table by default', (code) => {
    const err = new FerryError(code, 'boom');
    expect(err.code).toBe(code);
    expect(err.retryable).toBe(ERROR_TABLE[code].retryable);
    expect(err.exitCode).toBe(ERROR_TABLE[code].exitCode);
    expect(err.details).toEqual({});
    expect(err.name).toBe('FerryError');
    expect(err.message).toBe('boom');
    expect(err).toBeInstanceOf(Error);
  });

  test.each<[ErrorCode, boolean]>([
    [ErrorCode.SourceUnavailable, false],
    [ErrorCode.InvalidSpec, true],
  ])('retryable is overridable (%s -> %s)', (code, retryable) => {
    expect(new FerryError(code, 'x', { retryable }).retryable).toBe(retryable);
  });

  test('keeps cause and details', () => {
    const cause = new Error('inner');
    const err = new FerryError(ErrorCode.TargetTooSmall, 'x', { cause, details: { usable: 5 } });
    expect(err.cause).toBe(cause);
    expect(err.details).toEqual({ usable: 5 });
  });

  test('isFerryError tells FerryErrors from other values', () => {
    expect(isFerryError(new FerryError(ErrorCode.Internal, 'x'))).toBe(true);
    expect(isFerryError(new Error('x'))).toBe(false);
    expect(isFerryError({ code: 'INTERNAL' })).toBe(false);
  });
});

describe('toFerryError', () => {
  const errno = (code: string): NodeJS.ErrnoException => Object.assign(new Error(`${code}: oops`), { code });

  test('returns a FerryError unchanged', () => {
    const err = new FerryError(ErrorCode.Truncated, 'x');
    expect(toFerryError(err, ErrorCode.TargetError)).toBe(err);
  });

  test.each(['ENOSPC', 'EDQUOT'])('maps errno %s to NO_SPACE', (code) => {
    const cause = errno(code);
    const err = toFerryError(cause, ErrorCode.TargetError);
    expect(err.code).toBe('NO_SPACE');
    expect(err.retryable).toBe(false);
    expect(err.cause).toBe(cause);
  });

  test.each<[unknown, ErrorCode | undefined, ErrorCode]>([
    [errno('EACCES'), ErrorCode.TargetError, 'TARGET_ERROR'],
    [new Error('plain'), undefined, 'INTERNAL'],
    ['a string', undefined, 'INTERNAL'],
    [undefined, ErrorCode.ConvertFailed, 'CONVERT_FAILED'],
  ])('wraps %p with fallback %p as %s', (thrown, fallback, code) => {
    const err = fallback === undefined ? toFerryError(thrown) : toFerryError(thrown, fallback);
    expect(err.code).toBe(code);
    expect(err.cause).toBe(thrown);
  });
});

describe('isErrorCode', () => {
  test.each(codes)('%s is a code', (code) => {
    expect(isErrorCode(code)).toBe(true);
  });

  test.each(['', 'invalid_spec', 'NOPE', 'toString', '__proto__', 'hasOwnProperty'])('%j is not a code', (value) => {
    expect(isErrorCode(value)).toBe(false);
  });
});
