/** Parsing virsh's output, and the libvirt configuration the launcher writes. */

import { describe, expect, test } from '@jest/globals';
import { ErrorCode } from '../../src/errors.js';
import { libvirtdConf, libvirtdPaths, libvirtUri, longestSocketPath, qemuConf, qemuLogPath, UNIX_PATH_MAX } from '../../launcher/libvirtd.js';
import { parseDomState, parseLifecycleEvent } from '../../launcher/virsh.js';
import { codeOf } from './helpers.js';

describe('parseDomState', () => {
  test.each([
    ['shut off (shutdown)\n\n', 'shut off', 'shutdown'],
    ['running (booted)\n', 'running', 'booted'],
    ['paused (I/O error)\n', 'paused', 'I/O error'],
    ['in shutdown (unknown)', 'in shutdown', 'unknown'],
    ['crashed (panicked)', 'crashed', 'panicked'],
    ['running', 'running', 'unknown'],
  ])('%j', (text, state, reason) => {
    expect(parseDomState(text)).toEqual({ state, reason });
  });
});

describe('parseLifecycleEvent', () => {
  test.each([
    ["event 'lifecycle' for domain 'test_ci': Started Booted", { domain: 'test_ci', event: 'Started', detail: 'Booted' }],
    ["event 'lifecycle' for domain 'test_ci': Shutdown Finished after guest request", { domain: 'test_ci', event: 'Shutdown', detail: 'Finished after guest request' }],
    ["event 'lifecycle' for domain 'ns_a': Stopped Shutdown\n", { domain: 'ns_a', event: 'Stopped', detail: 'Shutdown' }],
    ["2026-11-27 10:04:44.164+0000: event 'lifecycle' for domain 'x': Undefined Removed", { domain: 'x', event: 'Undefined', detail: 'Removed' }],
  ])('%j', (line, event) => {
    expect(parseLifecycleEvent(line)).toEqual(event);
  });

  test.each(['events received: 6', '', "event 'reboot' for domain 'x'"])('%j is no lifecycle event', (line) => {
    expect(parseLifecycleEvent(line)).toBeUndefined();
  });
});

describe('libvirt configuration', () => {
  const paths = libvirtdPaths('/run/x/libvirt');

  test('everything lives under the run directory', () => {
    for (const p of Object.values(paths)) expect(p.startsWith('/run/x/libvirt')).toBe(true);
    expect(libvirtUri(paths)).toBe('qemu:///session?socket=/run/x/libvirt/sock/libvirt-sock');
    expect(qemuLogPath(paths, 'ns_vm')).toBe('/run/x/libvirt/cache/libvirt/qemu/log/ns_vm.log');
  });

  test('libvirtd.conf: the socket dir, no auth on a 0700 socket, a log file', () => {
    const conf = libvirtdConf(paths);
    expect(conf).toContain('unix_sock_dir = "/run/x/libvirt/sock"');
    expect(conf).toContain('unix_sock_rw_perms = "0700"');
    expect(conf).toContain('auth_unix_rw = "none"');
    expect(conf).toContain('log_outputs = "3:file:/run/x/libvirt/libvirtd.log"');
  });

  test('qemu.conf: no virtlogd, cgroups, namespaces or security driver', () => {
    expect(qemuConf().split('\n')).toEqual(expect.arrayContaining(['stdio_handler = "file"', 'cgroup_controllers = [ ]', 'namespaces = [ ]', 'security_driver = "none"']));
  });

  test("libvirt's sockets fit sun_path in the pod, not below a long directory", () => {
    expect(longestSocketPath(libvirtdPaths('/var/run/libvirt'))).toBeLessThanOrEqual(UNIX_PATH_MAX);
    expect(longestSocketPath(libvirtdPaths(`/tmp/${'d'.repeat(40)}/run/libvirt`))).toBeGreaterThan(UNIX_PATH_MAX);
  });

  test('a path that would break the config syntax is refused', () => {
    expect(codeOf(() => libvirtdConf(libvirtdPaths('/tmp/a"b')))).toBe(ErrorCode.InvalidSpec);
  });
});
