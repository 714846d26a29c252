/**
 * What the launcher tells the VM controller (src/contract/launcher-status.ts): the termination
 * message and the live `GET /status` body round-trip, and the real launcher's body decodes.
 */

import { describe, expect, test } from '@jest/globals';
import { Launcher } from '../../launcher/launcher.js';
import { silentLogger } from '../../src/logging.js';
import {
  decodeLauncherStatus,
  decodeLauncherStatusBody,
  encodeLauncherStatus,
  encodeLauncherStatusBody,
  LAUNCHER_REASONS,
  type LauncherStatus,
  type LauncherStatusBody,
} from '../../src/contract/launcher-status.js';
import { makeVmi } from './helpers.js';

describe('the termination message', () => {
  test.each(Object.entries(LAUNCHER_REASONS).flatMap(([reason, { phase }]) => [undefined, 'kvm', 'tcg'].map((accel) => ({ phase, reason, message: `${reason}: the guest …`, ...(accel ? { accel } : {}) }) as LauncherStatus)))(
    'round-trips %j',
    (status) => {
      expect(decodeLauncherStatus(encodeLauncherStatus(status))).toEqual(status);
    },
  );
});

describe('the /status body', () => {
  test.each<[string, LauncherStatusBody]>([
    ['starting', { phase: 'Starting', timings: {} }],
    [
      'running',
      {
        phase: 'Running',
        domain: 'ns_vm',
        domainState: 'running',
        domainReason: 'unpaused',
        accel: 'tcg',
        emulation: true,
        consoleSocket: '/var/run/kubevirt-private/u/console.sock',
        timings: { accelerator: 12, volumes: 30, running: 2800 },
      },
    ],
    ['stopping', { phase: 'Stopping', domain: 'ns_vm', accel: 'kvm', emulation: false, timings: { running: 1 } }],
    ['ended', { phase: 'Failed', reason: 'Crashed', message: 'the guest ended without powering off: crashed (panicked)', accel: 'kvm', emulation: false, timings: { ended: 9 } }],
  ])('round-trips: %s', (_, body) => {
    expect(decodeLauncherStatusBody(encodeLauncherStatusBody(body))).toEqual(body);
  });

  test("the real launcher's body decodes to itself", () => {
    const launcher = new Launcher(
      { vmi: makeVmi(), accel: 'tcg', allowEmulation: true, emulator: '/q', libvirtDir: '/l', privateDir: '/p', volumes: { volumes: '/v', block: '/dev', cloudInit: '/c', emptyDisks: '/e', secrets: '/s' }, volumeSizes: {} },
      { logger: silentLogger(), now: () => 0 },
    );
    const body = launcher.status();
    expect(decodeLauncherStatusBody(encodeLauncherStatusBody(body))).toEqual(body);
    expect(body.phase).toBe('Starting');
  });

  test('fields of the wrong type are dropped; not a body is undefined', () => {
    expect(decodeLauncherStatusBody(JSON.stringify({ phase: 'Running', accel: 'hvf', emulation: 'yes', domain: 3, timings: { a: 1, b: 'x' }, extra: true }))).toEqual({ phase: 'Running', timings: { a: 1 } });
    for (const text of ['', 'oops', 'null', '[]', '{}', '{"phase":"Exploded"}', '{"accel":"kvm"}']) expect(decodeLauncherStatusBody(text)).toBeUndefined();
  });
});
