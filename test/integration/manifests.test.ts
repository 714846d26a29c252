/**
 * The install manifests (kubectl apply -k manifests/) against the real apiserver: every object
 * passes server-side validation (a dry-run create), so a broken manifest fails CI.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CoreV1Api, type KubernetesObject, KubernetesObjectApi, loadAllYaml, loadYaml } from '@kubernetes/client-node';
import { startControlPlane, type ControlPlane } from '../helpers/cluster.js';
import { REPO_ROOT } from '../helpers/ferry-process.js';

let cp: ControlPlane;
const manifests = join(REPO_ROOT, 'manifests');

function objects(): KubernetesObject[] {
  const kustomization = loadYaml<{ resources: string[] }>(readFileSync(join(manifests, 'kustomization.yaml'), 'utf8'));
  return kustomization.resources.flatMap((file) => loadAllYaml(readFileSync(join(manifests, file), 'utf8')) as KubernetesObject[]);
}

beforeAll(async () => {
  cp = await startControlPlane();
}, 120_000);

afterAll(async () => {
  await cp?.stop();
});

describe('manifests/', () => {
  test('every object is accepted by the apiserver (server-side dry run)', async () => {
    const all = objects();
    expect(all.map((o) => o.kind)).toEqual(
      expect.arrayContaining(['CustomResourceDefinition', 'Namespace', 'ServiceAccount', 'ClusterRole', 'ClusterRoleBinding', 'Role', 'RoleBinding', 'ConfigMap', 'Deployment']),
    );
    // Namespaced objects need their namespace to exist for real; the rest is a dry run.
    for (const ns of all.filter((o) => o.kind === 'Namespace')) await cp.kubeConfig.makeApiClient(CoreV1Api).createNamespace({ body: ns });
    const api = KubernetesObjectApi.makeApiClient(cp.kubeConfig);
    for (const object of all.filter((o) => o.kind !== 'Namespace')) {
      const created = await api.create(object, undefined, 'All');
      expect(created.metadata?.name).toBe(object.metadata?.name);
    }
  });

  test('the controller Deployment runs two replicas under the restricted profile', () => {
    const deployment = objects().find((o) => o.kind === 'Deployment') as unknown as {
      spec: { replicas: number; template: { spec: { securityContext: Record<string, unknown>; containers: Array<{ securityContext: Record<string, unknown>; args: string[] }> } } };
    };
    expect(deployment.spec.replicas).toBe(2);
    expect(deployment.spec.template.spec.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    expect(deployment.spec.template.spec.containers[0]?.securityContext).toMatchObject({ allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
    expect(deployment.spec.template.spec.containers[0]?.args[0]).toBe('controller');
  });
});
