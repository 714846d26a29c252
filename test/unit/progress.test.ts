import { describe, expect, test } from '@jest/globals';
import { Phase, Progress, type ProgressSnapshot, RateMeter, throttled } from '../../importer/progress.js';

const MiB = 2 ** 20;

function recorded(): { progress: Progress; snapshots: ProgressSnapshot[] } {
  const progress = new Progress();
  const snapshots: ProgressSnapshot[] = [];
  progress.subscribe((s) => snapshots.push(s));
  return { progress, snapshots };
}

const snap = (phase: Phase, bytes: number, total?: number, percent = 0): ProgressSnapshot => ({
  phase,
  bytes,
  percent,
  ...(total !== undefined ? { total } : {}),
});

describe('Progress', () => {
  test('overall percent runs through transfer and convert and never decreases', () => {
    const { progress, snapshots } = recorded();
    const total = 100 * MiB;
    progress.begin(Phase.Transfer, 0, 50, total);
    progress.bytes(25 * MiB);
    progress.bytes(50 * MiB);
    progress.bytes(10 * MiB); // a restarted transfer: bytes go back, percent does not
    progress.bytes(total);
    progress.begin(Phase.Convert, 50, 100);
    progress.percent(0);
    progress.percent(45.5);
    progress.percent(20); // never back
    progress.percent(100);
    progress.complete();

    expect(snapshots.map((s) => [s.phase, s.percent])).toEqual([
      ['transfer', 0],
      ['transfer', 12.5],
      ['transfer', 25],
      ['transfer', 25],
      ['transfer', 50],
      ['convert', 50],
      ['convert', 50],
      ['convert', 72.75],
      ['convert', 72.75],
      ['convert', 100],
      ['complete', 100],
    ]);
    for (let i = 1; i < snapshots.length; i++) {
      expect(snapshots[i]!.percent).toBeGreaterThanOrEqual(snapshots[i - 1]!.percent);
    }
  });

  test('snapshots carry the phase bytes and total', () => {
    const { progress, snapshots } = recorded();
    progress.begin(Phase.Transfer, 0, 50, 1000);
    progress.bytes(400);
    expect(snapshots.at(-1)).toEqual({ phase: 'transfer', bytes: 400, total: 1000, percent: 20 });
    progress.begin(Phase.Convert, 50, 100, 2000);
    progress.percent(50);
    expect(snapshots.at(-1)).toEqual({ phase: 'convert', bytes: 1000, total: 2000, percent: 75 });
    progress.complete();
    expect(snapshots.at(-1)).toEqual({ phase: 'complete', bytes: 2000, total: 2000, percent: 100 });
  });

  test('bytes beyond the total and percentages out of range are clamped', () => {
    const { progress, snapshots } = recorded();
    progress.begin(Phase.Transfer, 0, 50, 100);
    progress.bytes(1000);
    expect(snapshots.at(-1)?.percent).toBe(50);
    progress.begin(Phase.Convert, 50, 100);
    progress.percent(-5);
    expect(snapshots.at(-1)?.percent).toBe(50);
    progress.percent(250);
    expect(snapshots.at(-1)?.percent).toBe(100);
  });

  test('an unknown total leaves the percent where it was and omits total', () => {
    const { progress, snapshots } = recorded();
    progress.begin(Phase.Transfer, 0, 50);
    progress.bytes(123);
    expect(snapshots.at(-1)).toEqual({ phase: 'transfer', bytes: 123, percent: 0 });
  });

  test('a later phase that starts below the current percent starts at the current percent', () => {
    const { progress, snapshots } = recorded();
    progress.begin(Phase.Transfer, 0, 80, 10);
    progress.bytes(10);
    progress.begin(Phase.Verify, 50, 90);
    progress.percent(50);
    expect(snapshots.map((s) => s.percent)).toEqual([0, 80, 80, 85]);
  });

  test('every listener gets every snapshot', () => {
    const progress = new Progress();
    const a: number[] = [];
    const b: number[] = [];
    progress.subscribe((s) => a.push(s.percent));
    progress.subscribe((s) => b.push(s.percent));
    progress.begin(Phase.Transfer, 0, 100, 4);
    progress.bytes(1);
    expect(a).toEqual([0, 25]);
    expect(b).toEqual(a);
  });
});

describe('RateMeter', () => {
  test('the first sample has no rate', () => {
    expect(new RateMeter().sample(0, snap('transfer', 0, 10 * MiB))).toEqual({ rate: 0 });
  });

  test('derives bytes per second and an ETA from two samples', () => {
    const meter = new RateMeter();
    meter.sample(0, snap('transfer', 0, 10 * MiB));
    const { rate, etaSeconds } = meter.sample(1000, snap('transfer', MiB, 10 * MiB));
    expect(rate).toBeCloseTo(MiB);
    expect(etaSeconds).toBeCloseTo(9);
  });

  test('smooths later samples (0.7 old + 0.3 new)', () => {
    const meter = new RateMeter();
    meter.sample(0, snap('transfer', 0));
    meter.sample(1000, snap('transfer', MiB));
    expect(meter.sample(2000, snap('transfer', 4 * MiB)).rate).toBeCloseTo(0.7 * MiB + 0.3 * 3 * MiB);
  });

  test('no ETA without a total', () => {
    const meter = new RateMeter();
    meter.sample(0, snap('transfer', 0));
    const result = meter.sample(500, snap('transfer', MiB));
    expect(result.rate).toBeCloseTo(2 * MiB);
    expect(result.etaSeconds).toBeUndefined();
  });

  test('a phase change resets the rate', () => {
    const meter = new RateMeter();
    meter.sample(0, snap('transfer', 0, 100 * MiB));
    meter.sample(1000, snap('transfer', 50 * MiB, 100 * MiB));
    expect(meter.sample(1500, snap('convert', 0, 100 * MiB))).toEqual({ rate: 0 });
    expect(meter.sample(2500, snap('convert', 10 * MiB, 100 * MiB)).rate).toBeCloseTo(10 * MiB);
  });

  test('a sample at the same instant keeps the previous rate', () => {
    const meter = new RateMeter();
    meter.sample(0, snap('transfer', 0, 4 * MiB));
    meter.sample(1000, snap('transfer', MiB, 4 * MiB));
    const result = meter.sample(1000, snap('transfer', 2 * MiB, 4 * MiB));
    expect(result.rate).toBeCloseTo(MiB);
    expect(result.etaSeconds).toBeCloseTo(2);
  });
});

describe('throttled', () => {
  function harness(intervalMs: number): { emit: (at: number, phase: Phase, bytes?: number) => void; seen: Array<[Phase, number]> } {
    let clock = 0;
    const seen: Array<[Phase, number]> = [];
    const listener = throttled((s) => seen.push([s.phase, s.bytes]), intervalMs, () => clock);
    return {
      emit: (at, phase, bytes = 0) => {
        clock = at;
        listener(snap(phase, bytes));
      },
      seen,
    };
  }

  test('emits the first call, drops calls within the interval, then emits again', () => {
    const { emit, seen } = harness(1000);
    emit(0, 'transfer', 1);
    emit(10, 'transfer', 2);
    emit(999, 'transfer', 3);
    emit(1000, 'transfer', 4);
    emit(1500, 'transfer', 5);
    emit(2100, 'transfer', 6);
    expect(seen).toEqual([
      ['transfer', 1],
      ['transfer', 4],
      ['transfer', 6],
    ]);
  });

  test('emits on every phase change, even within the interval', () => {
    const { emit, seen } = harness(1000);
    emit(0, 'transfer', 1);
    emit(1, 'verify', 2);
    emit(2, 'convert', 3);
    emit(3, 'convert', 4);
    emit(4, 'resize', 5);
    expect(seen.map(([, bytes]) => bytes)).toEqual([1, 2, 3, 5]);
  });

  test("always emits 'complete'", () => {
    const { emit, seen } = harness(1000);
    emit(0, 'transfer', 1);
    emit(1, 'complete', 2);
    emit(2, 'complete', 3);
    expect(seen.map(([, bytes]) => bytes)).toEqual([1, 2, 3]);
  });
});
