/**
 * The one exponential backoff: the delay before retry number `n` (1-based) is `baseMs · 2^(n−1)`,
 * capped at `maxMs`. Work queues, run-once pods, resumes and start failures all use it, so a change of
 * policy is made here once.
 */
export function backoffMs(n: number, baseMs: number, maxMs: number): number {
  const step = Math.max(0, Math.floor(n) - 1);
  // 2^step overflows to Infinity long after any cap; Math.min keeps the cap.
  return Math.max(0, Math.min(maxMs, baseMs * 2 ** Math.min(step, 1023)));
}

/**
 * `delay` spread by ±`fraction` with `random` in [0, 1) (injected, so tests are exact), so many keys
 * failing together do not retry in lockstep.
 */
export function jittered(delay: number, fraction: number, random: () => number): number {
  return Math.max(0, Math.round(delay * (1 - fraction + 2 * fraction * random())));
}
