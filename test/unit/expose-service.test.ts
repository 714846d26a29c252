/** `ferry expose`: the Service that reaches a guest, as `virtctl expose` builds it (reference §6). */

import { describe, expect, test } from '@jest/globals';
import { exposeService } from '../../cli/vm-main.js';
import { ErrorCode } from '../../src/errors.js';
import { type InterfacePort, type VirtualMachine, type VirtualMachineInstance, vmiId } from '../../src/api/kubevirt.js';
import { ferryErrorOf, makeVm, makeVmi, VM_NAME, VM_NS, VM_UID, VMI_UID, vmiSpec } from './helpers.js';

type Options = Parameters<typeof exposeService>[1];
type Target = Parameters<typeof exposeService>[0];

const withPorts = (ports: InterfacePort[] | undefined) =>
  vmiSpec({ networks: [{ name: 'default', pod: {} }], domain: { memory: { guest: '1Gi' }, devices: { interfaces: [{ name: 'default', masquerade: {}, ...(ports ? { ports } : {}) }] } } });
const vmiTarget = (ports?: InterfacePort[], name = VM_NAME): Target => ({ kind: 'vmi', object: makeVmi({ name, spec: withPorts(ports) }) });
const vmTarget = (ports?: InterfacePort[]): Target => ({ kind: 'vm', object: makeVm({ template: { spec: withPorts(ports) } }) });

const SSH_HTTP: InterfacePort[] = [{ name: 'ssh', port: 22 }, { port: 80, protocol: 'TCP' }, { port: 53, protocol: 'UDP' }];

describe('exposeService', () => {
  test.each<[string, Target, Options, unknown[]]>([
    ['--port only', vmiTarget(SSH_HTTP), { port: 2222 }, [{ port: 2222, targetPort: 2222, protocol: 'TCP' }]],
    ['--port and --target-port', vmiTarget(), { port: 80, targetPort: 8080 }, [{ port: 80, targetPort: 8080, protocol: 'TCP' }]],
    ['--port, UDP', vmiTarget(), { port: 53, protocol: 'UDP' }, [{ port: 53, targetPort: 53, protocol: 'UDP' }]],
    [
      'the VMI interface ports, named port-1..',
      vmiTarget(SSH_HTTP),
      {},
      [
        { name: 'port-1', port: 22, targetPort: 22, protocol: 'TCP' },
        { name: 'port-2', port: 80, targetPort: 80, protocol: 'TCP' },
        { name: 'port-3', port: 53, targetPort: 53, protocol: 'UDP' },
      ],
    ],
    ['the VM template interface ports', vmTarget([{ port: 443 }]), {}, [{ name: 'port-1', port: 443, targetPort: 443, protocol: 'TCP' }]],
  ])('ports from %s', (_, target, options, ports) => {
    expect(exposeService(target, options).spec?.ports).toEqual(ports);
  });

  test.each<[string, Target]>([
    ['a VMI without interface ports', vmiTarget()],
    ['a VMI with an empty port list', vmiTarget([])],
    ['a VM without interface ports', vmTarget()],
    ['a VMI without interfaces', { kind: 'vmi', object: makeVmi() }],
  ])('no --port and %s → INVALID_SPEC', (_, target) => {
    const err = ferryErrorOf(() => exposeService(target, {}));
    expect(err.code).toBe(ErrorCode.InvalidSpec);
    expect(err.message).toMatch(/--port is required/);
  });

  test.each<[string, Target, string, string]>([
    ['VMI', vmiTarget([{ port: 22 }]), 'VirtualMachineInstance', VMI_UID],
    ['VM', vmTarget([{ port: 22 }]), 'VirtualMachine', VM_UID],
  ])('a %s: selects its launcher pod by vmi.kubevirt.io/id, owned without blocking deletion', (_, target, kind, uid) => {
    const svc = exposeService(target, {});
    expect(svc.apiVersion).toBe('v1');
    expect(svc.kind).toBe('Service');
    expect(svc.metadata?.namespace).toBe(VM_NS);
    expect(svc.spec?.selector).toEqual({ 'vmi.kubevirt.io/id': VM_NAME });
    expect(svc.metadata?.ownerReferences).toEqual([{ apiVersion: 'kubevirt.io/v1', kind, name: VM_NAME, uid, blockOwnerDeletion: false }]);
  });

  test('a long name selects by the hashed id the launcher pod carries', () => {
    const name = `vm-${'x'.repeat(70)}`;
    const svc = exposeService(vmiTarget([{ port: 22 }], name), {});
    expect(svc.spec?.selector).toEqual({ 'vmi.kubevirt.io/id': vmiId(name) });
    expect(vmiId(name)).toHaveLength(63);
  });

  test.each<[Options, string]>([
    [{}, `${VM_NAME}-svc`],
    [{ name: 'ssh' }, 'ssh'],
  ])('service name with %j → %s', (options, name) => {
    expect(exposeService(vmiTarget([{ port: 22 }]), options).metadata?.name).toBe(name);
  });

  test.each([
    [undefined, 'ClusterIP'],
    ['ClusterIP', 'ClusterIP'],
    ['NodePort', 'NodePort'],
    ['LoadBalancer', 'LoadBalancer'],
  ])('--type %s → %s', (type, expected) => {
    expect(exposeService(vmiTarget([{ port: 22 }]), type ? { type } : {}).spec?.type).toBe(expected);
  });

  test.each(['ExternalName', 'clusterip', ''])('--type %j is refused', (type) => {
    const err = ferryErrorOf(() => exposeService(vmiTarget([{ port: 22 }]), { type }));
    expect(err.code).toBe(ErrorCode.InvalidSpec);
    expect(err.message).toMatch(/--type must be ClusterIP, NodePort or LoadBalancer/);
  });

  test('does not change the object it exposes', () => {
    const object: VirtualMachine | VirtualMachineInstance = makeVmi({ spec: withPorts([{ port: 22 }]) });
    const copy = structuredClone(object);
    exposeService({ kind: 'vmi', object }, {});
    expect(object).toEqual(copy);
  });
});
