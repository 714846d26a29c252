/**
 * The launcher pod contract (src/contract/launcher-pod.ts): the codec round-trips, and what the VM
 * controller writes into the pod is what the launcher's own parsers read back.
 */

import { describe, expect, test } from '@jest/globals';
import type { V1Container } from '@kubernetes/client-node';
import { DEFAULT_CONFIG } from '../../controller/config.js';
import { buildLauncherPod, type ClaimInfo, launcherVmi } from '../../controller/vm/launcher-pod.js';
import { socketPipeCommand } from '../../cli/console-main.js';
import { parseLauncherArgs } from '../../launcher/main.js';
import { defaultVmiSpec } from '../../src/api/kubevirt-defaults.js';
import { VmAnnotation } from '../../src/api/kubevirt.js';
import { ErrorCode } from '../../src/errors.js';
import { PodPath, podRuntimePaths } from '../../src/contract/launch-plan.js';
import {
  consoleCommandLine,
  decodeConsoleArgs,
  decodeLauncherArgs,
  decodeLauncherVmi,
  DEFAULT_LAUNCHER_STATUS_PORT,
  encodeConsoleArgs,
  encodeLauncherArgs,
  encodeLauncherVmi,
  FERRY_COMMAND,
  LAUNCHER_CONTAINER,
  LAUNCHER_FLAGS,
  type LauncherArgs,
  LauncherCommand,
  launcherCommandLine,
  LauncherHttpPath,
  LauncherPodEnv,
} from '../../src/contract/launcher-pod.js';
import { TERMINATION_MESSAGE_PATH } from '../../src/contract/termination.js';
import { codeOf, LAUNCHER_CONFIG, makeVmi, VMI_UID } from './helpers.js';

const ALL: LauncherArgs = {
  statusPort: 0,
  accel: 'tcg',
  allowEmulation: true,
  podNetwork: 'slirp',
  volumeSizes: { rootdisk: 10 * 1024 ** 3, 'data-1': 512 },
  vmiFile: 'vmi.yaml',
  volumesDir: './volumes',
  serialLog: 'serial.log',
  runtimeDir: '/r',
  cacheDir: '/c',
  statusAddress: '127.0.0.1',
  terminationLog: '/t',
  qemuUser: 'qemu',
  emulator: '/usr/bin/qemu-system-x86_64',
  logLevel: 'debug',
};

describe('the launcher argv', () => {
  test.each<[string, LauncherArgs]>([
    ['nothing set', { allowEmulation: false, volumeSizes: {} }],
    ['what the controller sets', { statusPort: 8181, accel: 'auto', allowEmulation: true, volumeSizes: { rootdisk: 1073741824 } }],
    ['every flag', ALL],
    ['odd but legal values', { accel: 'kvm', allowEmulation: false, volumeSizes: { a: 0 }, serialLog: '--not-a-flag', statusAddress: '::1' }],
  ])('round-trips: %s', (_, args) => {
    expect(decodeLauncherArgs(encodeLauncherArgs(args))).toEqual(args);
  });

  test('every flag is encoded (a flag added to one side only fails here)', () => {
    const flags = encodeLauncherArgs(ALL)
      .filter((a) => a.startsWith('--'))
      .map((a) => a.slice(2).split('=')[0]);
    expect([...new Set(flags)].sort()).toEqual([...LAUNCHER_FLAGS].sort());
  });

  test('volume sizes may be quantities on the command line', () => {
    expect(decodeLauncherArgs(['--volume-size', 'rootdisk=10Gi']).volumeSizes).toEqual({ rootdisk: 10 * 1024 ** 3 });
  });

  test.each([
    [['--pod-network', 'bridge']],
    [['--accel', 'hvf']],
    [['--volume-size', 'rootdisk']],
    [['--volume-size', '=1Gi']],
    [['--volume-size', 'rootdisk=lots']],
    [['--status-port', '70000']],
    [['--status-port', '-1']],
    [['--no-such-flag']],
    [['--vmi']],
    [['positional']],
  ])('%j is INVALID_SPEC', (argv) => {
    expect(codeOf(() => decodeLauncherArgs(argv))).toBe(ErrorCode.InvalidSpec);
  });

  test.each<[string, LauncherArgs]>([
    ['a port out of range', { statusPort: 65536, allowEmulation: false, volumeSizes: {} }],
    ['a volume name with =', { allowEmulation: false, volumeSizes: { 'a=b': 1 } }],
    ['a fractional size', { allowEmulation: false, volumeSizes: { a: 1.5 } }],
  ])('encoding refuses %s', (_, args) => {
    expect(codeOf(() => encodeLauncherArgs(args))).toBe(ErrorCode.InvalidSpec);
  });

  test('the arguments are `launcher <flags>`, run by the image entrypoint (no command: tini stays PID 1)', () => {
    expect(launcherCommandLine({ allowEmulation: true, volumeSizes: {} })).toEqual({ args: [LauncherCommand.Launcher, '--allow-emulation'] });
  });
});

describe('the launcher pod as the launcher reads it', () => {
  const claims = new Map<string, ClaimInfo>([['disk', { block: false, capacityBytes: 5 * 1024 ** 3 }]]);
  const vmi = (() => {
    const v = makeVmi({ labels: { app: 'web' }, annotations: { note: 'controller only' } });
    return { ...v, spec: defaultVmiSpec(v.spec, v.metadata) };
  })();
  const pod = buildLauncherPod(vmi, claims, { ...LAUNCHER_CONFIG, launcherStatusPort: 9090 });
  const container = pod.spec!.containers[0]! as V1Container;

  test('the controller writes `ferry launcher …`, and the launcher parses it into what the controller meant', () => {
    expect(container.command).toBeUndefined();
    expect(container.args?.[0]).toBe(LauncherCommand.Launcher);
    const options = parseLauncherArgs(container.args!.slice(1), {});
    expect(options).toMatchObject({ statusPort: 9090, accel: 'auto', allowEmulation: LAUNCHER_CONFIG.allowEmulation, volumesDir: PodPath.VmiDisks });
    const sized = (vmi.spec.volumes ?? []).find((v) => v.persistentVolumeClaim?.claimName === 'disk');
    expect(sized).toBeDefined();
    expect(options.volumeSizes).toEqual({ [sized!.name]: 5 * 1024 ** 3 });
  });

  test(`$${LauncherPodEnv.Vmi}: the launcher decodes what the controller encoded (identity and spec only)`, () => {
    const value = container.env?.find((e) => e.name === LauncherPodEnv.Vmi)?.value;
    expect(value).toBeDefined();
    const decoded = decodeLauncherVmi(value!);
    expect(decoded).toEqual(launcherVmi(vmi));
    expect(decoded.metadata).toEqual({ name: vmi.metadata.name, namespace: vmi.metadata.namespace, uid: VMI_UID, labels: { app: 'web' } });
    expect(decoded.spec).toEqual(vmi.spec);
  });

  test("the controller's default status port is the launcher's", () => {
    expect(DEFAULT_CONFIG.launcherStatusPort).toBe(DEFAULT_LAUNCHER_STATUS_PORT);
  });

  test('the container name, the probe path and port, the termination message path', () => {
    expect(container.name).toBe(LAUNCHER_CONTAINER);
    expect(pod.metadata?.annotations?.[VmAnnotation.DefaultContainer]).toBe(LAUNCHER_CONTAINER);
    expect(container.readinessProbe?.httpGet).toEqual({ path: LauncherHttpPath.Ready, port: 9090 });
    expect(container.ports).toContainEqual({ name: 'launcher-status', containerPort: 9090, protocol: 'TCP' });
    expect(container.terminationMessagePath).toBe(TERMINATION_MESSAGE_PATH);
    expect(container.volumeMounts).toContainEqual({ name: 'libvirt-runtime', mountPath: PodPath.LibvirtRuntime });
  });
});

describe(`$${LauncherPodEnv.Vmi}`, () => {
  test('round-trips a VMI to its identity and spec', () => {
    const vmi = makeVmi({ labels: { a: 'b' }, annotations: { x: 'y' }, finalizers: ['f'], status: { phase: 'Running' } });
    const decoded = decodeLauncherVmi(encodeLauncherVmi(vmi));
    expect(decoded).toEqual({ apiVersion: vmi.apiVersion, kind: vmi.kind, metadata: { name: vmi.metadata.name, namespace: vmi.metadata.namespace, uid: vmi.metadata.uid, labels: { a: 'b' } }, spec: vmi.spec });
    expect(decodeLauncherVmi(encodeLauncherVmi(decoded))).toEqual(decoded);
  });

  test.each(['', 'not json', 'null', '[]', '"vmi"', '{"metadata":{}}', '{"spec":{}}', '{"metadata":null,"spec":{}}'])('%j is INVALID_SPEC', (text) => {
    expect(codeOf(() => decodeLauncherVmi(text))).toBe(ErrorCode.InvalidSpec);
  });
});

describe('`ferry console --socket` in the pod', () => {
  test.each([{}, { socket: '/var/run/kubevirt-private/u/console.sock' }, { help: true }, { socket: '-x', help: true }])('round-trips %j', (args) => {
    expect(decodeConsoleArgs(encodeConsoleArgs(args))).toEqual(args);
  });

  test("the CLI's command is what the launcher program reads: the pod's socket paths", () => {
    const vmi = makeVmi();
    for (const [which, path] of [
      ['console', podRuntimePaths(VMI_UID).consoleSocket],
      ['vnc', podRuntimePaths(VMI_UID).vncSocket],
    ] as const) {
      const argv = socketPipeCommand(vmi, which);
      expect(argv).toEqual(consoleCommandLine(path));
      expect(argv.slice(0, 2)).toEqual([FERRY_COMMAND, LauncherCommand.Console]);
      expect(decodeConsoleArgs(argv.slice(2))).toEqual({ socket: path });
    }
  });

  test('an unknown flag is INVALID_SPEC', () => {
    expect(codeOf(() => decodeConsoleArgs(['--sock', 'x']))).toBe(ErrorCode.InvalidSpec);
  });
});
