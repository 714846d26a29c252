import { describe, expect, test } from '@jest/globals';
import { renderProgressLine } from '../../importer/progress-line.js';
import type { ProgressSnapshot } from '../../importer/progress.js';

const MiB = 2 ** 20;
const GiB = 2 ** 30;

const snapshot = (over: Partial<ProgressSnapshot> = {}): ProgressSnapshot => ({ phase: 'transfer', bytes: 512 * MiB, total: GiB, percent: 25, ...over });

describe('renderProgressLine', () => {
  test.each<[string, ProgressSnapshot, number, number | undefined, number | undefined, string]>([
    ['all parts', snapshot(), 10 * MiB, 51.2, undefined, 'transfer  25.0%  512.0 MiB / 1.00 GiB  10.0 MiB/s  ETA 51s'],
    ['no total', snapshot({ total: undefined }), 0, undefined, undefined, 'transfer  25.0%  512.0 MiB'],
    ['no rate, no ETA', snapshot(), 0, undefined, undefined, 'transfer  25.0%  512.0 MiB / 1.00 GiB'],
    ['ETA over a minute', snapshot({ phase: 'convert', percent: 66.666 }), MiB, 125, undefined, 'convert   66.7%  512.0 MiB / 1.00 GiB  1.00 MiB/s  ETA 2m05s'],
    ['ETA over an hour', snapshot({ percent: 1 }), 1000, 3 * 3600 + 7 * 60 + 59, undefined, 'transfer   1.0%  512.0 MiB / 1.00 GiB  1000 B/s  ETA 3h07m'],
    ['ETA rounding up to a minute', snapshot(), 1, 59.6, undefined, 'transfer  25.0%  512.0 MiB / 1.00 GiB  1 B/s  ETA 1m00s'],
    ['infinite ETA', snapshot(), 1, Number.POSITIVE_INFINITY, undefined, 'transfer  25.0%  512.0 MiB / 1.00 GiB  1 B/s  ETA --'],
    ['a bar', snapshot(), 0, undefined, 10, 'transfer [###.......]  25.0%  512.0 MiB / 1.00 GiB'],
    ['an empty bar', snapshot({ percent: 0, bytes: 0 }), 0, undefined, 4, 'transfer [....]   0.0%  0 B / 1.00 GiB'],
    ['a full bar', snapshot({ phase: 'complete', percent: 100, bytes: GiB }), 0, undefined, 8, 'complete [########] 100.0%  1.00 GiB / 1.00 GiB'],
  ])('%s', (_name, snap, rate, eta, barWidth, expected) => {
    expect(renderProgressLine(snap, rate, eta, barWidth)).toBe(expected);
  });

  test('shows the phase, a one-decimal percent and the amounts', () => {
    const line = renderProgressLine(snapshot({ phase: 'verify', percent: 42.26 }), 0, undefined);
    expect(line).toContain('verify');
    expect(line).toContain('42.3%');
    expect(line).toContain('512.0 MiB / 1.00 GiB');
  });

  test.each([1, 10, 40, 80])('a bar of width %d has exactly that many cells', (width) => {
    const line = renderProgressLine(snapshot({ percent: 37.5 }), 0, undefined, width);
    const bar = /\[([#.]*)\]/.exec(line)?.[1];
    expect(bar).toHaveLength(width);
  });

  test('no bar when the width is 0', () => {
    expect(renderProgressLine(snapshot(), 0, undefined, 0)).not.toContain('[');
  });
});
