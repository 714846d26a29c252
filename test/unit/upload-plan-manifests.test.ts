import { describe, expect, test } from '@jest/globals';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadAllYaml } from '@kubernetes/client-node';
import { UploadSecret, UPLOAD_PROXY_SERVICE } from '../../controller/certs/upload-certs.js';
import { UploadProxyEnv } from '../../uploadproxy/main.js';
import { UploadProxyService } from '../../src/contract/upload-api.js';
import { REPO_ROOT } from '../helpers/ferry-process.js';

type Obj = { kind: string; metadata: { name: string; namespace?: string }; spec?: Record<string, any>; rules?: Array<{ resources: string[]; verbs: string[] }> };
const load = (file: string): Obj[] => loadAllYaml(readFileSync(join(REPO_ROOT, 'manifests', file), 'utf8')) as Obj[];

describe('manifests/uploadproxy.yaml and rbac-upload.yaml', () => {
  const proxy = load('uploadproxy.yaml');
  const deployment = proxy.find((o) => o.kind === 'Deployment')!;
  const pod = deployment.spec!.template.spec;
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
    expect(role.rules).toEqual([{ apiGroups: [''], resources: ['secrets'], verbs: ['get'] }]);
  });
});
