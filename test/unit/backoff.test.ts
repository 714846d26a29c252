import { backoffMs, jittered } from '../../src/backoff.js';

describe('backoffMs', () => {
  test.each([
    [0, 1000, 30_000, 1000],
    [1, 1000, 30_000, 1000],
    [2, 1000, 30_000, 2000],
    [3, 1000, 30_000, 4000],
    [5, 1000, 30_000, 16_000],
    [6, 1000, 30_000, 30_000],
    [10_000, 1000, 30_000, 30_000],
    [2.7, 10, 1000, 20],
  ])('retry %d, base %d, cap %d → %d ms', (n, base, cap, want) => {
    expect(backoffMs(n, base, cap)).toBe(want);
  });
});

describe('jittered', () => {
  test('spreads by the fraction around the delay, with the injected randomness', () => {
    expect(jittered(1000, 0.2, () => 0)).toBe(800);
    expect(jittered(1000, 0.2, () => 0.5)).toBe(1000);
    expect(jittered(1000, 0.2, () => 0.999_999)).toBe(1200);
    expect(jittered(1000, 0, () => 0.7)).toBe(1000);
  });
});
