/** Shared helpers for the unit tests (not a test file itself). */

import { type ErrorCode, FerryError } from '../../src/errors.js';

/** Runs `fn`, which must throw a FerryError, and returns that error. */
export function ferryErrorOf(fn: () => unknown): FerryError {
  try {
    fn();
  } catch (err) {
    if (err instanceof FerryError) return err;
    throw new Error(`expected a FerryError, got ${String(err)}`);
  }
  throw new Error('expected a FerryError, but nothing was thrown');
}

/** The `code` of the FerryError that `fn` throws. */
export function codeOf(fn: () => unknown): ErrorCode {
  return ferryErrorOf(fn).code;
}
