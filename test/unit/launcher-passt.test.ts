/**
 * passt's argv (launcher/passt.ts): what the launcher runs beside QEMU for a passt interface of the
 * plan. test/component/launcher-network.test.ts runs it for real.
 */

import { describe, expect, test } from '@jest/globals';
import { passtArgs, portSpec } from '../../launcher/passt.js';
import type { ResolvedInterface } from '../../src/contract/launch-plan.js';
import { codeOf } from './helpers.js';

const NIC: ResolvedInterface = {
  name: 'default',
  model: 'virtio',
  mac: '02:00:00:00:00:01',
  binding: 'masquerade',
  backend: 'passt',
  ports: [],
  forward: { tcp: [{ start: 1, end: 14232 }, { start: 40443, end: 40443 }], udp: [] },
  passtSocket: '/var/run/libvirt/passt/default.sock',
  cidr: '10.0.2.0/24',
};

describe('portSpec', () => {
  test.each<[Parameters<typeof portSpec>[0], string]>([
    ['all', 'all'],
    [[], 'none'],
    [[{ start: 22, end: 22 }], '22'],
    [[{ start: 1, end: 14232 }, { start: 40443, end: 40443 }], '1-14232,40443'],
  ])('%j → %s', (forward, spec) => {
    expect(portSpec(forward)).toBe(spec);
  });
});

describe('passtArgs', () => {
  test('foreground, one QEMU, its log file, the guest MAC, KubeVirt masquerade addresses, the ports', () => {
    expect(passtArgs(NIC, '/var/run/libvirt/passt-default.log')).toEqual([
      '--foreground',
      '--one-off',
      '--socket', '/var/run/libvirt/passt/default.sock',
      '--log-file', '/var/run/libvirt/passt-default.log',
      '--mac-addr', '02:00:00:00:00:01',
      '--address', '10.0.2.2',
      '--netmask', '24',
      '--gateway', '10.0.2.1',
      '--tcp-ports', '1-14232,40443',
      '--udp-ports', 'none',
    ]);
  });

  test('a custom vmNetworkCIDR sets the addresses; every port when the plan says all', () => {
    const args = passtArgs({ ...NIC, cidr: '10.11.12.0/24', forward: { tcp: 'all', udp: 'all' } }, '/l');
    expect(args.join(' ')).toContain('--address 10.11.12.2 --netmask 24 --gateway 10.11.12.1 --tcp-ports all --udp-ports all');
  });

  test('a slirp interface has no passt', () => {
    expect(codeOf(() => passtArgs({ ...NIC, backend: 'slirp', forward: undefined, passtSocket: undefined } as ResolvedInterface, '/l'))).toBe('INTERNAL');
  });
});
