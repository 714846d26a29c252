/**
 * The pod-network probe's parsers (launcher/pod-network.ts): /proc texts as Linux writes them, taken
 * from this machine and from a dual-stack pod.
 */

import { describe, expect, test } from '@jest/globals';
import { hasIpv4DefaultRoute, hasIpv6DefaultRoute, parseOpenFilesLimit, parsePortRange } from '../../launcher/pod-network.js';

const LIMITS = `Limit                     Soft Limit           Hard Limit           Units
Max cpu time              unlimited            unlimited            seconds
Max open files            1024                 20000                files
Max locked memory         8388608              8388608              bytes
`;

describe('parseOpenFilesLimit: the hard limit, which passt raises its soft limit to', () => {
  test.each<[string, string, number | undefined]>([
    ['this machine', LIMITS, 20000],
    ['unlimited', LIMITS.replace('20000  ', 'unlimited'), 1 << 20],
    ['no such line', 'Limit Soft Hard\n', undefined],
    ['garbage', LIMITS.replace('20000', 'lots'), undefined],
  ])('%s', (_what, text, expected) => {
    expect(parseOpenFilesLimit(text)).toBe(expected);
  });
});

describe('parsePortRange', () => {
  test.each<[string, { start: number; end: number } | undefined]>([
    ['32768\t60999\n', { start: 32768, end: 60999 }],
    ['1024 65535', { start: 1024, end: 65535 }],
    ['60999 32768', undefined],
    ['0 100', undefined],
    ['', undefined],
  ])('%j', (text, expected) => {
    expect(parsePortRange(text)).toEqual(expected);
  });
});

const ROUTE_HEADER = 'Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n';

describe('default routes: the IP families passt listens on', () => {
  test('IPv4: a default route on eth0 counts, a subnet route or lo does not', () => {
    expect(hasIpv4DefaultRoute(`${ROUTE_HEADER}eth0\t00000000\t0100F40A\t0003\t0\t0\t0\t00000000\t0\t0\t0\n`)).toBe(true);
    expect(hasIpv4DefaultRoute(`${ROUTE_HEADER}eth0\t0000F40A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n`)).toBe(false);
    expect(hasIpv4DefaultRoute(ROUTE_HEADER)).toBe(false);
  });

  test('IPv6: ::/0 on eth0 counts; the unreachable ::/0 on lo of a v4-only namespace does not', () => {
    const zero = '0'.repeat(32);
    const onEth0 = `${zero} 00 ${zero} 00 fe800000000000000000000000000001 00000400 00000001 00000000 00000003     eth0\n`;
    const onLo = `${zero} 00 ${zero} 00 ${zero} ffffffff 00000001 00000000 00200200       lo\n`;
    expect(hasIpv6DefaultRoute(onEth0)).toBe(true);
    expect(hasIpv6DefaultRoute(onLo)).toBe(false);
    expect(hasIpv6DefaultRoute('')).toBe(false);
  });
});
