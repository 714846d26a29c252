import { describe, expect, test } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadAllYaml } from '@kubernetes/client-node';
import { UploadSecret, UPLOAD_PROXY_SERVICE } from '../../controller/certs/upload-certs.js';
import { UploadProxyEnv } from '../../uploadproxy/main.js';
import { UploadProxyCaBundle, UploadProxyService } from '../../src/contract/upload-api.js';
import { REPO_ROOT } from '../helpers/ferry-process.js';

type Obj = {
  kind: string;
  metadata: { name: string; namespace?: string };
  spec?: Record<string, any>;
  rules?: Array<{ apiGroups?: string[]; resources: string[]; resourceNames?: string[]; verbs: string[] }>;
  roleRef?: { kind: string; name: string };
  subjects?: Array<{ kind: string; name: string }>;
};
const load = (file: string): Obj[] => loadAllYaml(readFileSync(join(REPO_ROOT, 'manifests', file), 'utf8')) as Obj[];

describe('manifests/uploadproxy.yaml, rbac-upload.yaml and rbac-upload-users.yaml', () => {
  const proxy = load('uploadproxy.yaml');
  const statefulSet = proxy.find((o) => o.kind === 'StatefulSet')!;
  const pod = statefulSet.spec!.template.spec;
  const container = pod.containers[0];

  test('the proxy mounts the Secrets the controller makes and the token key ConfigMap, under the restricted profile', () => {
    const volumes = Object.fromEntries(pod.volumes.map((v: any) => [v.name, v.secret?.secretName ?? v.configMap?.name]));
    expect(volumes).toEqual({ token: 'ferry-upload-token-public', serving: UploadSecret.ProxyServing, client: UploadSecret.ProxyClient });
    const env = Object.fromEntries(container.env.map((e: any) => [e.name, e.value]));
    expect(env[UploadProxyEnv.PublicKeyFile]).toBe('/etc/ferry/token/public.pem');
    expect(env[UploadProxyEnv.ServerCaFile]).toBe('/etc/ferry/client/ca.crt');
    for (const name of [UploadProxyEnv.TlsKeyFile, UploadProxyEnv.TlsCertFile, UploadProxyEnv.ClientKeyFile, UploadProxyEnv.ClientCertFile]) expect(env[name]).toMatch(/^\/etc\/ferry\/(serving|client)\/tls\.(key|crt)$/);
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    expect(container.securityContext).toMatchObject({ allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
  });

  test("the Service is the one the serving certificate names, 443 → 8443; the proxy may only get PVCs", () => {
    const service = proxy.find((o) => o.kind === 'Service')!;
    expect(service.metadata.name).toBe(UPLOAD_PROXY_SERVICE);
    expect(service.spec!.ports).toEqual([expect.objectContaining({ port: 443, targetPort: 8443 })]);
    expect(proxy.find((o) => o.kind === 'ClusterRole')!.rules).toEqual([{ apiGroups: [''], resources: ['persistentvolumeclaims'], verbs: ['get'] }]);
    // What `ferry image-upload` tells a user to port-forward to (src/contract/upload-api.ts) is this Service.
    expect({ namespace: service.metadata.namespace, name: service.metadata.name, port: service.spec!.ports[0].port }).toEqual({ namespace: UploadProxyService.namespace, name: UploadProxyService.name, port: UploadProxyService.port });
  });

  test('the controller may make Services and Secrets for uploads, and read Secrets only in its namespace', () => {
    const rbac = load('rbac-upload.yaml');
    const cluster = rbac.find((o) => o.kind === 'ClusterRole')!.rules!;
    expect(cluster.find((r) => r.resources.includes('secrets'))?.verbs).toEqual(['create', 'update', 'delete']);
    expect(cluster.find((r) => r.resources.includes('services'))?.verbs).toEqual(expect.arrayContaining(['create', 'delete', 'watch']));
    const role = rbac.find((o) => o.kind === 'Role')!;
    expect(role.metadata.namespace).toBe('ferry-system');
    expect(role.rules).toEqual([
      { apiGroups: [''], resources: ['secrets'], verbs: ['get'] },
      { apiGroups: [''], resources: ['configmaps'], resourceNames: [UploadProxyCaBundle.configMap], verbs: ['get', 'update'] },
      { apiGroups: [''], resources: ['configmaps'], verbs: ['create'] },
    ]);
  });

  test('one proxy pod, named as the client and the users\' Role name it', () => {
    expect(statefulSet.spec).toMatchObject({ replicas: 1, serviceName: UploadProxyService.name });
    // A StatefulSet's pods are <name>-<ordinal>.
    expect(`${statefulSet.metadata.name}-0`).toBe(UploadProxyService.pod);
    expect(statefulSet.metadata.namespace).toBe(UploadProxyService.namespace);
  });

  test('every authenticated user may read the proxy CA, find the proxy pod and port-forward to it: each rule pinned by name', () => {
    const users = load('rbac-upload-users.yaml');
    const role = users.find((o) => o.kind === 'Role')!;
    const binding = users.find((o) => o.kind === 'RoleBinding')!;
    expect(role.metadata.namespace).toBe(UploadProxyService.namespace);
    expect(binding.metadata.namespace).toBe(UploadProxyService.namespace);
    expect(binding.roleRef).toMatchObject({ kind: 'Role', name: role.metadata.name });
    expect(binding.subjects).toEqual([expect.objectContaining({ kind: 'Group', name: 'system:authenticated' })]);
    for (const rule of role.rules!) expect(rule.resourceNames?.length).toBe(1);
    const grants = role.rules!.map((r) => `${r.verbs.join(',')} ${r.resources.join(',')}/${r.resourceNames!.join(',')}`);
    expect(grants).toEqual([
      `get configmaps/${UploadProxyCaBundle.configMap}`,
      `get services/${UploadProxyService.name}`,
      `get pods/${UploadProxyService.pod}`,
      `create,get pods/portforward/${UploadProxyService.pod}`,
    ]);
    expect(readFileSync(join(REPO_ROOT, 'manifests', 'kustomization.yaml'), 'utf8')).toContain('- rbac-upload-users.yaml');
  });
});
