/** The README's error table and pod contract are documentation users grep: keep them true. */

import { describe, expect, test } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { ERROR_TABLE, type ErrorCode } from '../../src/errors.js';
import { ImportEnv } from '../../src/contract/import-spec.js';
import { REPO_ROOT } from '../helpers/ferry-process.js';

const readme = readFileSync(join(REPO_ROOT, 'README.md'), 'utf8');

describe('README', () => {
  test.each(Object.entries(ERROR_TABLE) as Array<[ErrorCode, (typeof ERROR_TABLE)[ErrorCode]]>)('documents %s with its exit status and retry rule', (code, info) => {
    const row = readme.split('\n').find((line) => line.startsWith(`| \`${code}\` |`));
    expect(row).toBeDefined();
    const cells = (row ?? '').split('|').map((c) => c.trim());
    expect(cells[2]).toBe(String(info.exitCode));
    expect(cells[3]).toBe(info.retryable ? 'yes' : 'no');
  });

  test.each(Object.values(ImportEnv))('documents the importer variable %s', (name) => {
    expect(readme).toMatch(new RegExp(`\\b${name}\\b`));
  });
});
