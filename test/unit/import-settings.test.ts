/** The import controller under CDIConfig's settings: the importer pod, its scratch PVC and the plan's proxy CA copy. */

import { describe, expect, test } from '@jest/globals';
import type { V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';
import { resolveSettings } from '../../src/api/cdiconfig.js';
import { decodeImportEnv } from '../../src/contract/import-spec.js';
import type { ImportRequest } from '../../src/api/import-request.js';
import { Annotation } from '../../src/api/cdi.js';
import { DEFAULT_CONFIG } from '../../controller/config.js';
import { buildImporterPod, buildProxyCaConfigMap, buildScratchPvc, PROXY_CA_FILE, proxyCaConfigMapName } from '../../controller/import/importer-pod.js';
import { planImport } from '../../controller/import/plan.js';
import { configWithSettings, flagDefaults } from '../../controller/runtime/cdi-settings.js';
import { buildUploadPod } from '../../controller/upload/upload-pod.js';
import { decodeUploadServerEnv } from '../../src/contract/upload-server.js';

const config = { ...DEFAULT_CONFIG, ferryNamespace: 'ferry-system' };
const defaults = flagDefaults(config);
const request: ImportRequest = { source: 'http', endpoint: 'https://images.example/disk.qcow2', contentType: 'kubevirt', insecureTls: false, retainPod: false, preallocation: false };

function pvc(o: { storageClass?: string; block?: boolean; annotations?: Record<string, string> } = {}): V1PersistentVolumeClaim {
  return {
    metadata: { name: 'disk', namespace: 'vms', uid: 'u-1', annotations: { [Annotation.Endpoint]: request.endpoint, ...(o.annotations ?? {}) } },
    spec: { accessModes: ['ReadWriteOnce'], volumeMode: o.block ? 'Block' : 'Filesystem', resources: { requests: { storage: '10Gi' } }, ...(o.storageClass ? { storageClassName: o.storageClass } : {}) },
  };
}

/** The spec the importer would decode from the pod's environment. */
function decoded(pod: V1Pod) {
  const env = Object.fromEntries((pod.spec?.containers[0]?.env ?? []).map((e) => [e.name, e.value]));
  return decodeImportEnv(env);
}

const admin = resolveSettings(
  {
    podResourceRequirements: { requests: { cpu: '300m', memory: '100Mi' }, limits: { cpu: '2', memory: '1Gi' } },
    filesystemOverhead: { global: '0.1', storageClass: { local: '0.02' } },
    scratchSpaceStorageClass: 'scratchy',
    importProxy: { HTTPProxy: 'http://proxy.corp:3128', HTTPSProxy: 'http://proxy.corp:3129', noProxy: '.svc,.cluster.local' },
  },
  defaults,
);

describe('importer pod under CDIConfig', () => {
  test('without settings the flags apply (no proxy, the flag overhead and resources)', () => {
    const pod = buildImporterPod(pvc(), request, config, { withScratch: false });
    expect(pod.spec?.containers[0]?.resources).toEqual(config.importerResources);
    expect(decoded(pod)).toMatchObject({ filesystemOverhead: config.filesystemOverhead, proxy: {} });
    expect(pod.spec?.priorityClassName).toBeUndefined();
  });

  test("the admin's resources, overhead (per class, else global; 0 for block) and proxy reach the pod", () => {
    const pod = buildImporterPod(pvc({ storageClass: 'local' }), request, config, { withScratch: false, settings: admin });
    expect(pod.spec?.containers[0]?.resources).toEqual({ requests: { cpu: '300m', memory: '100Mi' }, limits: { cpu: '2', memory: '1Gi' } });
    expect(decoded(pod)).toMatchObject({ filesystemOverhead: 0.02, proxy: { httpProxy: 'http://proxy.corp:3128', httpsProxy: 'http://proxy.corp:3129', noProxy: '.svc,.cluster.local' } });
    expect(decoded(buildImporterPod(pvc({ storageClass: 'other' }), request, config, { withScratch: false, settings: admin })).filesystemOverhead).toBe(0.1);
    expect(decoded(buildImporterPod(pvc({ block: true, storageClass: 'local' }), request, config, { withScratch: false, settings: admin })).filesystemOverhead).toBe(0);
    // CDI's lower-case variable names.
    const names = (pod.spec?.containers[0]?.env ?? []).map((e) => e.name);
    expect(names).toEqual(expect.arrayContaining(['http_proxy', 'https_proxy', 'no_proxy']));
  });

  test("a DataVolume's priority class (CDI's PVC annotation) becomes the pod's", () => {
    const pod = buildImporterPod(pvc({ annotations: { 'cdi.kubevirt.io/storage.pod.priorityclassname': 'high' } }), request, config, { withScratch: false });
    expect(pod.spec?.priorityClassName).toBe('high');
  });

  test('scratch space takes scratchSpaceStorageClass, else the target class', () => {
    expect(buildScratchPvc(pvc({ storageClass: 'local' }), admin).spec?.storageClassName).toBe('scratchy');
    expect(buildScratchPvc(pvc({ storageClass: 'local' }), resolveSettings({}, defaults)).spec?.storageClassName).toBe('local');
    expect(buildScratchPvc(pvc(), resolveSettings({}, defaults)).spec?.storageClassName).toBeUndefined();
  });

  test('a trusted proxy CA joins the source CAs in one projected directory', () => {
    const settings = resolveSettings({ importProxy: { HTTPSProxy: 'http://p:1', trustedCAProxy: 'corp-ca' } }, defaults);
    const withCa = buildImporterPod(pvc(), { ...request, certConfigMap: 'source-ca' }, config, { withScratch: false, settings });
    expect(withCa.spec?.volumes?.find((v) => v.name === 'certs')).toEqual({
      name: 'certs',
      projected: { sources: [{ configMap: { name: 'source-ca' } }, { configMap: { name: 'import-proxy-cm-disk', items: [{ key: 'ca.crt', path: PROXY_CA_FILE }] } }] },
    });
    expect(decoded(withCa).caPath).toBe('/certs');
    const alone = buildImporterPod(pvc(), request, config, { withScratch: false, settings });
    expect(alone.spec?.volumes?.find((v) => v.name === 'certs')?.projected?.sources).toHaveLength(1);
    expect(decoded(alone).caPath).toBe('/certs');
    expect(alone.spec?.containers[0]?.volumeMounts).toContainEqual({ name: 'certs', mountPath: '/certs', readOnly: true });
    expect(buildProxyCaConfigMap(pvc(), { 'ca.crt': 'PEM' })).toMatchObject({
      metadata: { name: proxyCaConfigMapName('disk'), namespace: 'vms', ownerReferences: [{ kind: 'PersistentVolumeClaim', uid: 'u-1', controller: true }] },
      data: { 'ca.crt': 'PEM' },
    });
  });

  test('the plan copies the proxy CA before it creates the pod, and builds the pod with the settings it observed', () => {
    const settings = resolveSettings({ importProxy: { trustedCAProxy: 'corp-ca' }, podResourceRequirements: { limits: { memory: '2Gi' } } }, defaults);
    const plan = planImport({ pvc: pvc(), now: 0, settings }, config);
    const types = plan.actions.map((a) => a.type);
    expect(plan.actions).toContainEqual({ type: 'copyProxyCa', from: { namespace: 'ferry-system', name: 'corp-ca' }, name: 'import-proxy-cm-disk' });
    expect(types.indexOf('copyProxyCa')).toBeLessThan(types.indexOf('createPod'));
    const create = plan.actions.find((a) => a.type === 'createPod');
    expect(create?.type === 'createPod' && create.pod.spec?.containers[0]?.resources).toEqual({ limits: { memory: '2Gi' } });
    // Without a trusted CA there is nothing to copy.
    expect(planImport({ pvc: pvc(), now: 0, settings: admin }, config).actions.map((a) => a.type)).not.toContain('copyProxyCa');
    // A scratch PVC planned under the settings takes the scratch class.
    const scratch = planImport({ pvc: pvc({ annotations: { [Annotation.RequiresScratch]: 'true' } }), now: 0, settings: admin }, config).actions.find((a) => a.type === 'createScratchPvc');
    expect(scratch?.type === 'createScratchPvc' && scratch.pvc.spec?.storageClassName).toBe('scratchy');
  });

  test('an upload pod takes the same resources, per-class overhead and priority class (upload/reconcile.ts reads the config through configWithSettings)', () => {
    const target = pvc({ storageClass: 'local', annotations: { 'cdi.kubevirt.io/storage.pod.priorityclassname': 'high' } });
    const pod = buildUploadPod(target, 'kubevirt', configWithSettings(config, admin, 'local'), { withScratch: false, deadline: 10_000 });
    expect(pod.spec?.containers[0]?.resources).toEqual(admin.podResourceRequirements);
    expect(pod.spec?.priorityClassName).toBe('high');
    const env = Object.fromEntries((pod.spec?.containers[0]?.env ?? []).map((e) => [e.name, e.value]));
    expect(decodeUploadServerEnv(env).filesystemOverhead).toBe(0.02);
  });
});
