/** Reading a PEM file named by a setting: a missing or unreadable file is INVALID_SPEC naming the setting. */

import { readFileSync } from 'node:fs';
import { ErrorCode, FerryError } from '../errors.js';

export function readPemFile(setting: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new FerryError(ErrorCode.InvalidSpec, `${setting}: cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}
