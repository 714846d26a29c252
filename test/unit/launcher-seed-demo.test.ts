/**
 * examples/seed-demo/ (the talk's demo) read through Ferry's own codecs: the PVC is an http import
 * request (the older `kubevirt.io/` endpoint key), the VMI validates with 2Gi and no interfaces (so it
 * gets the default masquerade interface, and its launcher pod the sysctl passt needs for port 22), and
 * the Service sends NodePort 30000 to 22 of the pods carrying the VMI's label.
 */

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, test } from '@jest/globals';
import { loadYaml, type V1PersistentVolumeClaim, type V1Service } from '@kubernetes/client-node';
import { Annotation } from '../../src/api/cdi.js';
import { importRequestFromAnnotations } from '../../src/api/import-request.js';
import type { VirtualMachineInstance } from '../../src/api/kubevirt.js';
import { defaultVmiSpec, guestMemoryBytes, validateVmiSpec } from '../../src/api/kubevirt-defaults.js';
import { buildLauncherPod } from '../../controller/vm/launcher-pod.js';
import { REPO_ROOT } from '../helpers/ferry-process.js';
import { LAUNCHER_CONFIG } from './helpers.js';

const DEMO = join(REPO_ROOT, 'examples', 'seed-demo');
const read = <T>(name: string): T => loadYaml<T>(readFileSync(join(DEMO, name), 'utf8'));

const pvc = read<V1PersistentVolumeClaim>('pvc.yaml');
const vmi = read<VirtualMachineInstance>('vmi.yaml');
const service = read<V1Service>('service.yaml');

describe('examples/seed-demo', () => {
  test('pvc.yaml: an http import through the older kubevirt.io endpoint key', () => {
    expect(pvc.metadata?.annotations?.[Annotation.LegacyEndpoint]).toMatch(/^http:\/\/\S+\.svc\.cluster\.local:\d+\/\S+$/);
    expect(pvc.metadata?.annotations?.[Annotation.Endpoint]).toBeUndefined();
    expect(importRequestFromAnnotations(pvc.metadata?.annotations)).toMatchObject({ source: 'http', endpoint: pvc.metadata?.annotations?.[Annotation.LegacyEndpoint] });
  });

  test('vmi.yaml: 2Gi, the PVC as its disk, no interfaces; defaults add the masquerade one and it validates', () => {
    expect(vmi.spec.domain.devices?.interfaces).toBeUndefined();
    expect(vmi.spec.volumes?.find((v) => v.name === 'rootdisk')?.persistentVolumeClaim?.claimName).toBe(pvc.metadata?.name);
    const spec = defaultVmiSpec(vmi.spec, vmi.metadata);
    expect(validateVmiSpec(spec)).toEqual([]);
    expect(guestMemoryBytes(spec)).toBe(2 * 1024 ** 3);
    expect(spec.domain.devices?.interfaces).toEqual([expect.objectContaining({ name: 'default', masquerade: {} })]);
    expect(vmi.spec.volumes?.find((v) => v.cloudInitNoCloud)?.cloudInitNoCloud?.userData).toMatch(/^ssh_authorized_keys:\n {2}- ssh-ed25519 /m);
  });

  test('its launcher pod runs passt and may bind 22 (no port declared anywhere)', () => {
    const pod = buildLauncherPod({ ...vmi, metadata: { ...vmi.metadata, namespace: 'seed-demo', uid: 'seed-uid' }, spec: defaultVmiSpec(vmi.spec, vmi.metadata) }, new Map(), LAUNCHER_CONFIG);
    expect(pod.spec?.securityContext?.sysctls).toEqual([{ name: 'net.ipv4.ip_unprivileged_port_start', value: '0' }]);
    expect(pod.spec?.containers[0]?.args).toEqual(expect.arrayContaining(['--pod-network', 'passt']));
    expect(pod.metadata?.labels).toMatchObject(service.spec?.selector ?? { missing: 'selector' });
  });

  test('service.yaml: NodePort 30000 to 22, selecting the VMI\'s label', () => {
    expect(service.spec?.type).toBe('NodePort');
    expect(service.spec?.ports).toEqual([expect.objectContaining({ port: 22, targetPort: 22, nodePort: 30000, protocol: 'TCP' })]);
    expect(vmi.metadata.labels).toMatchObject(service.spec?.selector ?? { missing: 'selector' });
  });
});
