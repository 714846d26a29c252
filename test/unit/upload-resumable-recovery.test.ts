/**
 * ADR 0010: a resumable upload staged on scratch survives its server pod. A new server reads the
 * durable-offset record beside the staged file, cuts off whatever lies past it, and resumes there;
 * anything it cannot trust is removed. Real files in a temp dir.
 */

import { afterAll, describe, expect, test } from '@jest/globals';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { silentLogger } from '../../src/logging.js';
import { createResumableUploads, decodeStageRecord, removeStaged, STAGE_RECORD_SUFFIX } from '../../importer/upload-server-resumable.js';
import { removeDir, tempDir } from '../helpers/fixtures.js';

const dir = tempDir('ferry-upload-recovery-');
afterAll(() => removeDir(dir));

function staged(name: string, bytes: number, record: string | undefined): string {
  const path = join(dir, name);
  writeFileSync(path, Buffer.alloc(bytes, 7));
  if (record !== undefined) writeFileSync(path + STAGE_RECORD_SUFFIX, record);
  return path;
}

function recover(path: string) {
  const calls: Array<[string, number]> = [];
  const uploads = createResumableUploads(path, { otherUpload: () => 'none', staged: (p, n) => void calls.push([p, n]), logger: silentLogger() });
  return { uploads, calls };
}

describe('decodeStageRecord', () => {
  test.each([
    ['{"offset":6,"length":20}', { offset: 6, length: 20 }],
    ['{"offset":20,"length":20}', { offset: 20, length: 20 }],
    ['{"offset":21,"length":20}', undefined],
    ['{"offset":0,"length":0}', undefined],
    ['{"offset":-1,"length":20}', undefined],
    ['{"offset":1.5,"length":20}', undefined],
    ['{"offset":"6","length":20}', undefined],
    ['{"offset":6', undefined],
    ['', undefined],
  ])('%s', (text, want) => {
    expect(decodeStageRecord(text)).toEqual(want);
  });
});

describe('a new server takes up what an earlier one staged', () => {
  test('bytes past the recorded durable offset are cut off; HEAD-able state is that offset', async () => {
    const path = staged('a', 10, '{"offset":6,"length":20}');
    const { uploads, calls } = recover(path);
    await uploads.ready;
    expect(uploads.state()).toEqual({ kind: 'staging', offset: 6, length: 20, writing: false });
    expect(uploads.active()).toBe(true);
    expect(statSync(path).size).toBe(6);
    expect(calls).toEqual([]);
  });

  test('an upload staged whole is imported at once', async () => {
    const path = staged('b', 20, '{"offset":20,"length":20}');
    const { uploads, calls } = recover(path);
    await uploads.ready;
    expect(uploads.state()).toEqual({ kind: 'staged', length: 20 });
    expect(calls).toEqual([[path, 20]]);
  });

  test.each([
    ['no record (an older server, or one that never synced)', 'c', 10, undefined],
    ['a torn record', 'd', 10, '{"offset":'],
    ['a staged file shorter than its record', 'e', 4, '{"offset":6,"length":20}'],
  ])('%s: nothing is trusted, both files go', async (_why, name, bytes, record) => {
    const path = staged(name, bytes, record);
    const { uploads } = recover(path);
    await uploads.ready;
    expect(uploads.state()).toEqual({ kind: 'empty' });
    expect(existsSync(path)).toBe(false);
    expect(existsSync(path + STAGE_RECORD_SUFFIX)).toBe(false);
  });

  test('removeStaged removes the staged file and its record', async () => {
    const path = staged('f', 3, '{"offset":3,"length":9}');
    expect(readFileSync(path + STAGE_RECORD_SUFFIX, 'utf8')).toContain('offset');
    await removeStaged(path);
    expect(existsSync(path) || existsSync(path + STAGE_RECORD_SUFFIX)).toBe(false);
  });
});
