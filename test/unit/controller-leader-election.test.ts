import { describe, expect, test } from '@jest/globals';
import type { V1Lease } from '@kubernetes/client-node';
import { canAcquire } from '../../controller/runtime/leader-election.js';

const NOW = Date.parse('2024-05-01T12:00:00.000Z');
const ME = 'ferry-controller-0';
const OTHER = 'ferry-controller-1';

function lease(holder: string | undefined, renewedMsAgo: number | undefined, durationSeconds: number | undefined = 15): V1Lease {
  return {
    metadata: { name: 'ferry-controller', namespace: 'ferry-system' },
    spec: {
      ...(holder !== undefined ? { holderIdentity: holder } : {}),
      ...(renewedMsAgo !== undefined ? { renewTime: new Date(NOW - renewedMsAgo) } : {}),
      ...(durationSeconds !== undefined ? { leaseDurationSeconds: durationSeconds } : {}),
    },
  };
}

describe('canAcquire', () => {
  test.each<[string, V1Lease | undefined, boolean]>([
    ['no lease', undefined, true],
    ['lease without spec', { metadata: { name: 'x' } }, true],
    ['no holder', lease(undefined, 1000), true],
    ['empty holder (released)', lease('', 1000), true],
    ['same holder, fresh', lease(ME, 1000), true],
    ['same holder, long expired', lease(ME, 3_600_000), true],
    ['other holder, just renewed', lease(OTHER, 0), false],
    ['other holder, renewed 14.9 s ago (15 s lease)', lease(OTHER, 14_900), false],
    ['other holder, exactly at expiry', lease(OTHER, 15_000), false],
    ['other holder, 1 ms past expiry', lease(OTHER, 15_001), true],
    ['other holder, expired long ago', lease(OTHER, 3_600_000), true],
    ['other holder, 60 s lease renewed 30 s ago', lease(OTHER, 30_000, 60), false],
    ['other holder, 60 s lease renewed 61 s ago', lease(OTHER, 61_000, 60), true],
    ['other holder, no duration → 15 s default, renewed 10 s ago', lease(OTHER, 10_000, undefined), false],
    ['other holder, no duration → 15 s default, renewed 16 s ago', lease(OTHER, 16_000, undefined), true],
    ['other holder, never renewed', lease(OTHER, undefined), true],
  ])('%s → %s', (_name, l, expected) => {
    expect(canAcquire(l, ME, NOW)).toBe(expected);
  });

  test('a renew time in the future (clock skew) keeps the other holder', () => {
    expect(canAcquire(lease(OTHER, -5000), ME, NOW)).toBe(false);
  });
});
