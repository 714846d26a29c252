/** The cluster-facing console/VNC commands: which pod they reach and what runs in it. */

import { describe, expect, test } from '@jest/globals';
import type { V1Pod } from '@kubernetes/client-node';
import { ErrorCode, FerryError } from '../../src/errors.js';
import type { VirtualMachineInstance } from '../../src/api/kubevirt.js';
import { pickLauncherPod, socketPipeCommand } from '../../cli/console-main.js';

const vmi = (phase?: string): VirtualMachineInstance => ({
  apiVersion: 'kubevirt.io/v1',
  kind: 'VirtualMachineInstance',
  metadata: { name: 'web', namespace: 'ns', uid: 'uid-1' },
  spec: { domain: {} },
  ...(phase ? { status: { phase: phase as never } } : {}),
});

const pod = (name: string, phase: string, uid = 'uid-1', deleting = false): V1Pod => ({
  metadata: { name, labels: { 'kubevirt.io/created-by': uid }, ...(deleting ? { deletionTimestamp: new Date() } : {}) },
  status: { phase },
});

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof FerryError ? err.code : 'not a FerryError';
  }
  return undefined;
}

describe('socketPipeCommand', () => {
  test('the console goes to the launcher console socket, VNC to libvirt socket, both under the VMI uid', () => {
    expect(socketPipeCommand(vmi('Running'), 'console')).toEqual(['ferry', 'console', '--socket', '/var/run/kubevirt-private/uid-1/console.sock']);
    expect(socketPipeCommand(vmi('Running'), 'vnc')).toEqual(['ferry', 'console', '--socket', '/var/run/kubevirt-private/uid-1/virt-vnc']);
  });
});

describe('pickLauncherPod', () => {
  test('the running pod of this VMI incarnation', () => {
    const pods = [pod('old', 'Succeeded'), pod('other', 'Running', 'uid-2'), pod('gone', 'Running', 'uid-1', true), pod('live', 'Running')];
    expect(pickLauncherPod(vmi('Running'), pods).metadata?.name).toBe('live');
  });

  test.each([['Scheduling'], ['Succeeded'], ['Failed'], [undefined]])('a VMI in phase %s is refused with INVALID_SPEC', (phase) => {
    expect(codeOf(() => pickLauncherPod(vmi(phase), [pod('live', 'Running')]))).toBe(ErrorCode.InvalidSpec);
  });

  test('a running VMI without a running pod is SOURCE_NOT_FOUND', () => {
    expect(codeOf(() => pickLauncherPod(vmi('Running'), [pod('old', 'Failed')]))).toBe(ErrorCode.SourceNotFound);
  });
});
