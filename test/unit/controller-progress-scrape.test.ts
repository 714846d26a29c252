import { describe, expect, test } from '@jest/globals';
import { formatProgress } from '../../controller/import/progress-scrape.js';
import { decodeProgress as parseProgress } from '../../src/contract/import-progress.js';

const UID = '6f1c1f5e-0000-4000-8000-000000000001';
const OTHER = '6f1c1f5e-0000-4000-8000-000000000002';

const page = (lines: string[]): string =>
  [
    '# HELP kubevirt_cdi_import_progress_total The import progress in percentage',
    '# TYPE kubevirt_cdi_import_progress_total counter',
    ...lines,
    '',
    '# HELP ferry_import_phase_bytes Bytes handled so far in the current import phase',
    '# TYPE ferry_import_phase_bytes gauge',
    `ferry_import_phase_bytes{ownerUID="${UID}",phase="download"} 12345678`,
    '',
  ].join('\n');

describe('parseProgress', () => {
  test.each<[string, string, string, number | undefined]>([
    ['the only line', page([`kubevirt_cdi_import_progress_total{ownerUID="${UID}"} 45.5`]), UID, 45.5],
    [
      'the right UID among several',
      page([`kubevirt_cdi_import_progress_total{ownerUID="${OTHER}"} 90`, `kubevirt_cdi_import_progress_total{ownerUID="${UID}"} 12.25`, 'kubevirt_cdi_import_progress_total{ownerUID="z"} 3']),
      UID,
      12.25,
    ],
    ['another UID only → undefined', page([`kubevirt_cdi_import_progress_total{ownerUID="${OTHER}"} 90`]), UID, undefined],
    ['a UID that is a prefix of another is not confused', page([`kubevirt_cdi_import_progress_total{ownerUID="${UID}0"} 90`]), UID, undefined],
    ['no progress line → undefined', page([]), UID, undefined],
    ['empty text → undefined', '', UID, undefined],
    ['an integer', page([`kubevirt_cdi_import_progress_total{ownerUID="${UID}"} 7`]), UID, 7],
    ['exponent notation', page([`kubevirt_cdi_import_progress_total{ownerUID="${UID}"} 1.5e+1`]), UID, 15],
    ['zero', page([`kubevirt_cdi_import_progress_total{ownerUID="${UID}"} 0`]), UID, 0],
    ['above 100 → clamped to 100', page([`kubevirt_cdi_import_progress_total{ownerUID="${UID}"} 100.0000001`]), UID, 100],
    ['far above 100 → 100', page([`kubevirt_cdi_import_progress_total{ownerUID="${UID}"} 250`]), UID, 100],
    ['negative → clamped to 0', page([`kubevirt_cdi_import_progress_total{ownerUID="${UID}"} -3`]), UID, 0],
    ['garbage value → undefined', page([`kubevirt_cdi_import_progress_total{ownerUID="${UID}"} 1.2.3`]), UID, undefined],
    ['a different metric with the same label is ignored', `ferry_import_phase_bytes{ownerUID="${UID}"} 42\n`, UID, undefined],
    ['a line that is only a comment is ignored', `# kubevirt_cdi_import_progress_total{ownerUID="${UID}"} 42\n`, UID, undefined],
  ])('%s', (_name, text, uid, expected) => {
    expect(parseProgress(text, uid)).toBe(expected);
  });

  test.each(['a.b', 'a+b', 'a*b', '(a)', '[a]', 'a?b', 'a|b', '^a$', 'a{2}', 'a\\b', '.*'])('UID with regex special characters: %s', (uid) => {
    const text = page([
      `kubevirt_cdi_import_progress_total{ownerUID="xyz"} 11`,
      `kubevirt_cdi_import_progress_total{ownerUID="axb"} 22`,
      `kubevirt_cdi_import_progress_total{ownerUID="aab"} 33`,
      `kubevirt_cdi_import_progress_total{ownerUID="${uid}"} 44`,
    ]);
    expect(parseProgress(text, uid)).toBe(44);
    // The pattern alone does not match anything else.
    expect(parseProgress(text.replace(`"${uid}"`, '"nomatch"'), uid)).toBeUndefined();
  });
});

describe('formatProgress', () => {
  test.each<[number, string]>([
    [45.123, '45.12%'],
    [0, '0.00%'],
    [100, '100.00%'],
    [99.999, '100.00%'],
    [3.5, '3.50%'],
  ])('%d → %s', (n, s) => {
    expect(formatProgress(n)).toBe(s);
  });
});
