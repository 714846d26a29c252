/**
 * The extra headers of CDI's `secretExtraHeaders`: each Secret is mounted at `<dir>/<n>`
 * (`/extraheaders/0`, ...), and every key of it is a file holding one "Name: value" line. Read
 * once, before the importer sends anything; a bad line fails INVALID_SPEC naming the Secret's
 * number and key, never the line.
 */

import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type HttpHeader, type ImportSpec, parseHeaderLine, validateSpec } from '../../src/contract/import-spec.js';
import { ErrorCode, FerryError } from '../../src/errors.js';

/** A Secret volume's own entries (`..data`, `..2026_12_01...`) start with dots; the keys are the rest. */
const isKey = (name: string): boolean => !name.startsWith('.');

/** The header lines under `dir`: Secrets in the order of their number, keys in name order. */
export async function readSecretHeaders(dir: string): Promise<HttpHeader[]> {
  const entries = await readdir(dir, { withFileTypes: true }).catch((err: NodeJS.ErrnoException) => {
    throw new FerryError(ErrorCode.InvalidSpec, `the extra header Secrets at ${dir} cannot be read: ${err.code ?? err.message}`);
  });
  const secrets = entries
    .filter((e) => /^\d+$/.test(e.name) && (e.isDirectory() || e.isSymbolicLink()))
    .map((e) => e.name)
    .sort((a, b) => Number(a) - Number(b));
  const headers: HttpHeader[] = [];
  for (const n of secrets) {
    const keys = (await readdir(join(dir, n))).filter(isKey).sort();
    for (const key of keys) {
      const text = await readFile(join(dir, n, key), 'utf8');
      // A file written with `echo` ends in a newline: one at the end is not part of the value.
      headers.push(parseHeaderLine(text.replace(/\r?\n$/, ''), `secret extra header ${n} key ${key}`));
    }
  }
  return headers;
}

/** The spec with the Secrets' headers after the literal ones (CDI's order), the directory consumed. */
export async function withSecretHeaders(spec: ImportSpec): Promise<ImportSpec> {
  if (spec.secretHeadersDir === undefined) return spec;
  const { secretHeadersDir, ...rest } = spec;
  const secret = await readSecretHeaders(secretHeadersDir);
  const extraHeaders = [...(spec.extraHeaders ?? []), ...secret];
  return validateSpec({ ...rest, ...(extraHeaders.length > 0 ? { extraHeaders } : {}) });
}
