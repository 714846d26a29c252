/** Shared helpers for the unit tests (not a test file itself). */

import type { V1PersistentVolumeClaim } from '@kubernetes/client-node';
import type { LauncherConfig } from '../../controller/vm/launcher-pod.js';
import { type ErrorCode, FerryError } from '../../src/errors.js';
import { API_VERSION, Kind, type RunStrategy, type VirtualMachine, type VirtualMachineInstance, type VmiPhase, type VmiSpec, type VmiStatus, type VmStatus } from '../../src/api/kubevirt.js';

/** Runs `fn`, which must throw a FerryError, and returns that error. */
export function ferryErrorOf(fn: () => unknown): FerryError {
  try {
    fn();
  } catch (err) {
    if (err instanceof FerryError) return err;
    throw new Error(`expected a FerryError, got ${String(err)}`);
  }
  throw new Error('expected a FerryError, but nothing was thrown');
}

/** The `code` of the FerryError that `fn` throws. */
export function codeOf(fn: () => unknown): ErrorCode {
  return ferryErrorOf(fn).code;
}

// ---------------------------------------------------------------------------------------------
// Builders for the VM layer's tests (kubevirt.io/v1 objects, launcher pods, PVCs).

export const VM_NS = 'vms';
export const VM_NAME = 'web';
export const VM_UID = 'vm-uid-1';
export const VMI_UID = 'vmi-uid-1';

/** A valid VMI spec: 128Mi guest, one filesystem PVC volume `rootdisk` on claim `disk`. */
export function vmiSpec(over: Partial<VmiSpec> = {}): VmiSpec {
  return {
    domain: { memory: { guest: '128Mi' }, devices: { disks: [{ name: 'rootdisk', disk: { bus: 'virtio' } }] } },
    volumes: [{ name: 'rootdisk', persistentVolumeClaim: { claimName: 'disk' } }],
    ...over,
  };
}

export interface VmiOptions {
  readonly name?: string;
  readonly uid?: string;
  readonly spec?: VmiSpec;
  readonly status?: VmiStatus;
  readonly labels?: Record<string, string>;
  readonly annotations?: Record<string, string>;
  readonly finalizers?: string[];
  readonly deleting?: boolean;
}

export function makeVmi(o: VmiOptions = {}): VirtualMachineInstance {
  return {
    apiVersion: API_VERSION,
    kind: Kind.VMI,
    metadata: {
      name: o.name ?? VM_NAME,
      namespace: VM_NS,
      uid: o.uid ?? VMI_UID,
      ...(o.labels ? { labels: o.labels } : {}),
      ...(o.annotations ? { annotations: o.annotations } : {}),
      ...(o.finalizers ? { finalizers: o.finalizers } : {}),
      ...(o.deleting ? { deletionTimestamp: '2024-05-01T11:00:00.000Z' } : {}),
    },
    spec: o.spec ?? vmiSpec(),
    ...(o.status ? { status: o.status } : {}),
  };
}

/** A VMI in a phase (no phase: just created, not processed). */
export function vmiIn(phase: VmiPhase | undefined, o: VmiOptions = {}): VirtualMachineInstance {
  return makeVmi({ ...o, ...(phase ? { status: { phase, ...(o.status ?? {}) } } : {}) });
}

export interface VmOptions {
  readonly runStrategy?: RunStrategy;
  readonly running?: boolean;
  readonly status?: VmStatus;
  readonly deleting?: boolean;
  readonly generation?: number;
  readonly resourceVersion?: string;
  readonly template?: VirtualMachine['spec']['template'];
}

export function makeVm(o: VmOptions = {}): VirtualMachine {
  return {
    apiVersion: API_VERSION,
    kind: Kind.VM,
    metadata: {
      name: VM_NAME,
      namespace: VM_NS,
      uid: VM_UID,
      resourceVersion: o.resourceVersion ?? '42',
      ...(o.generation !== undefined ? { generation: o.generation } : {}),
      ...(o.deleting ? { deletionTimestamp: '2024-05-01T11:00:00.000Z' } : {}),
    },
    spec: {
      ...(o.runStrategy !== undefined ? { runStrategy: o.runStrategy } : {}),
      ...(o.running !== undefined ? { running: o.running } : {}),
      template: o.template ?? { metadata: { labels: { app: VM_NAME } }, spec: vmiSpec() },
    },
    ...(o.status ? { status: o.status } : {}),
  };
}

export function makeVmPvc(name: string, o: { block?: boolean; annotations?: Record<string, string> } = {}): V1PersistentVolumeClaim {
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: { name, namespace: VM_NS, uid: `pvc-${name}`, ...(o.annotations ? { annotations: o.annotations } : {}) },
    spec: { accessModes: ['ReadWriteOnce'], volumeMode: o.block ? 'Block' : 'Filesystem', resources: { requests: { storage: '1Gi' } } },
  };
}

/** The controller's launcher settings in the VM tests: emulation allowed, status on 8443. */
export const LAUNCHER_CONFIG: LauncherConfig = Object.freeze({
  launcherImage: 'ghcr.io/ferry-dev/ferry:test',
  launcherPullPolicy: 'IfNotPresent',
  allowEmulation: true,
  launcherStatusPort: 8443,
});
