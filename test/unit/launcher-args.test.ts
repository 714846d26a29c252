/** `ferry launcher` flags. */

import { describe, expect, test } from '@jest/globals';
import { ErrorCode } from '../../src/errors.js';
import { PodPath } from '../../src/contract/launch-plan.js';
import { DEFAULT_LAUNCHER_STATUS_PORT, LAUNCHER_FLAGS } from '../../src/contract/launcher-pod.js';
import { LAUNCHER_USAGE, parseLauncherArgs, temporaryRootAccess } from '../../launcher/main.js';
import { codeOf } from './helpers.js';

describe('parseLauncherArgs', () => {
  test('the pod network: passt in the pod, slirp for a local --vmi run (the machine\'s own namespace), or as asked', () => {
    expect(parseLauncherArgs([], {}).podNetwork).toBe('passt');
    expect(parseLauncherArgs(['--vmi', 'v.yaml'], {}).podNetwork).toBe('slirp');
    expect(parseLauncherArgs(['--vmi', 'v.yaml', '--pod-network', 'passt'], {}).podNetwork).toBe('passt');
    expect(parseLauncherArgs(['--pod-network', 'slirp'], {}).podNetwork).toBe('slirp');
  });

  test('pod defaults', () => {
    const o = parseLauncherArgs([], { HOME: '/home/q' });
    expect(o).toMatchObject({
      volumesDir: PodPath.VmiDisks,
      volumeSizes: {},
      accel: 'auto',
      allowEmulation: false,
      podNetwork: 'passt',
      statusPort: DEFAULT_LAUNCHER_STATUS_PORT,
      statusAddress: '0.0.0.0',
      qemuUser: 'libvirt-qemu',
      emulator: '/usr/bin/qemu-system-x86_64',
      cacheDir: '/home/q/.cache/ferry/libvirt',
    });
    expect(o.vmiFile).toBeUndefined();
    expect(o.runtimeDir).toBeUndefined();
  });

  test('all flags', () => {
    const o = parseLauncherArgs(
      ['--vmi', 'v.yaml', '--volumes-dir', '/v', '--volume-size', 'a=1Gi', '--volume-size', 'b=512Mi', '--accel', 'tcg', '--allow-emulation', '--pod-network', 'slirp', '--serial-log', '/s.log', '--runtime-dir', '/r', '--cache-dir', '/c', '--status-port', '0', '--status-address', '127.0.0.1', '--termination-log', '/t', '--qemu-user', 'qemu', '--emulator', '/q', '--log-level', 'debug'],
      {},
    );
    expect(o).toEqual({
      vmiFile: 'v.yaml',
      volumesDir: '/v',
      volumeSizes: { a: 1024 ** 3, b: 512 * 1024 ** 2 },
      accel: 'tcg',
      allowEmulation: true,
      podNetwork: 'slirp',
      serialLog: '/s.log',
      runtimeDir: '/r',
      cacheDir: '/c',
      statusPort: 0,
      statusAddress: '127.0.0.1',
      terminationLog: '/t',
      qemuUser: 'qemu',
      emulator: '/q',
      logLevel: 'debug',
    });
  });

  test('XDG_CACHE_HOME wins; no home, no cache', () => {
    expect(parseLauncherArgs([], { XDG_CACHE_HOME: '/x', HOME: '/h' }).cacheDir).toBe('/x/ferry/libvirt');
    expect(parseLauncherArgs([], { HOME: '/' }).cacheDir).toBeUndefined();
  });

  test.each(LAUNCHER_FLAGS)('the usage documents --%s', (flag) => {
    expect(LAUNCHER_USAGE).toMatch(new RegExp(`^  --${flag}\\b`, 'm'));
  });

  test.each([
    [['--pod-network', 'tap']],
    [['--accel', 'hvf']],
    [['--volume-size', 'rootdisk']],
    [['--volume-size', 'rootdisk=lots']],
    [['--status-port', '70000']],
    [['--status-port', 'x']],
    [['extra']],
  ])('%j is invalid', (argv) => {
    expect(codeOf(() => parseLauncherArgs(argv, {}))).toBe(ErrorCode.InvalidSpec);
  });
});

describe('temporaryRootAccess (no --runtime-dir)', () => {
  test('QEMU as another user: its group may search the folder, nobody else may, nobody but root writes it', () => {
    expect(temporaryRootAccess({ uid: 999, gid: 995 })).toEqual({ mode: 0o710, gid: 995 });
  });

  test('QEMU as the launcher itself: private', () => {
    expect(temporaryRootAccess(undefined)).toEqual({ mode: 0o700 });
  });
});
