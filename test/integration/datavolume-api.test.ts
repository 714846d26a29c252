/**
 * The DataVolume API on a real kube-apiserver, no controller: the CRD from manifests/crds, its CEL
 * admission rules (a refused source is a 422 naming the field, at create time), the printer
 * columns as the real `kubectl get dv` prints them, and the schema's descriptions as the real
 * `kubectl explain` reads them (kubectl built by scripts/build-control-plane.sh).
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { ApiException, CustomObjectsApi, PatchStrategy, setHeaderOptions } from '@kubernetes/client-node';
import { DV_GROUP, DV_PLURAL, DV_VERSION } from '../../src/api/datavolume.js';
import { controlPlaneBinDir, startControlPlane, type ControlPlane } from '../helpers/cluster.js';
import { installCrds } from '../helpers/crds.js';

let cp: ControlPlane;
let custom: CustomObjectsApi;
const KUBECTL = join(controlPlaneBinDir(), 'kubectl');

beforeAll(async () => {
  cp = await startControlPlane();
  custom = cp.kubeConfig.makeApiClient(CustomObjectsApi);
  await installCrds(cp.kubeConfig);
}, 120_000);

afterAll(async () => {
  await cp?.stop();
});

const dv = (name: string, spec: Record<string, unknown>) => ({ apiVersion: `${DV_GROUP}/${DV_VERSION}`, kind: 'DataVolume', metadata: { name }, spec });
const storage = { storage: { resources: { requests: { storage: '1Gi' } } } };
const create = (namespace: string, body: object) => custom.createNamespacedCustomObject({ group: DV_GROUP, version: DV_VERSION, namespace, plural: DV_PLURAL, body });

/** The apiserver's answer to a create that must fail: its HTTP status and Status message. */
async function refusal(namespace: string, body: object): Promise<{ code: number; message: string }> {
  try {
    await create(namespace, body);
  } catch (err) {
    if (!(err instanceof ApiException)) throw err;
    const status = (typeof err.body === 'string' ? JSON.parse(err.body) : err.body) as { message?: string };
    return { code: err.code, message: status.message ?? '' };
  }
  throw new Error('the apiserver accepted it');
}

function kubectl(...args: string[]): string {
  return execFileSync(KUBECTL, ['--kubeconfig', cp.kubeconfigPath, ...args], { encoding: 'utf8', timeout: 30_000 });
}

describe('DataVolume admission (CEL rules in the CRD schema)', () => {
  test('accepts each source Ferry imports', async () => {
    const ns = await cp.newNamespace();
    for (const [name, source] of [
      ['http', { http: { url: 'https://images.example/disk.qcow2', checksum: `sha256:${'ab'.repeat(32)}`, insecureSkipVerify: true, secretRef: 's', certConfigMap: 'c' } }],
      ['http-headers', { http: { url: 'https://images.example/disk.qcow2', extraHeaders: ['Authorization: Bearer abc', "X-Odd!#$%&'*+.^_`|~: a: b\tc"], secretExtraHeaders: ['tokens', 'more.tokens'] } }],
      ['s3', { s3: { url: 'https://s3.example/bucket/disk.img', secretRef: 's' } }],
      ['registry', { registry: { url: 'docker://quay.io/containerdisks/fedora:40', pullMethod: 'pod' } }],
      ['blank', { blank: {} }],
      ['upload', { upload: {} }],
    ] as const) {
      const created = (await create(ns, dv(name, { source, ...storage, contentType: 'kubevirt', preallocation: false, priorityClassName: 'high' }))) as { metadata: { name: string } };
      expect(created.metadata.name).toBe(name);
    }
  });

  test.each<[string, Record<string, unknown>, string]>([
    ['gcs', { source: { gcs: { url: 'gs://b/k' } }, ...storage }, 'spec.source.gcs: Forbidden: gcs is not supported by Ferry'],
    ['imageio', { source: { imageio: { url: 'https://ovirt/api', diskId: 'x' } }, ...storage }, 'spec.source.imageio: Forbidden: imageio is not supported by Ferry'],
    ['vddk', { source: { vddk: { url: 'https://vc', uuid: 'u' } }, ...storage }, 'spec.source.vddk: Forbidden: vddk is not supported by Ferry'],
    ['snapshot', { source: { snapshot: { name: 'snap' } }, ...storage }, 'spec.source.snapshot: Forbidden: snapshot is not supported by Ferry'],
    ['node-pull', { source: { registry: { url: 'docker://r/i:1', pullMethod: 'node' } }, ...storage }, 'spec.source.registry.pullMethod: Forbidden: pullMethod node is not supported by Ferry; use pod'],
    ['clone-no-name', { source: { pvc: { namespace: 'x' } }, storage: {} }, 'spec.source.pvc.name: Required value'],
    ['sourceref-kind', { sourceRef: { kind: 'PersistentVolumeClaim', name: 'fedora' }, storage: {} }, 'spec.sourceRef.kind: Invalid value: spec.sourceRef.kind must be DataSource'],
    ['a header without a colon', { source: { http: { url: 'https://x/y', extraHeaders: ['X-A: 1', 'Bearer xyz'] } }, ...storage }, 'spec.source.http.extraHeaders[1] in body should match'],
    ['a header with a space in its name', { source: { http: { url: 'https://x/y', extraHeaders: ['X A: 1'] } }, ...storage }, 'spec.source.http.extraHeaders[0] in body should match'],
    ['a header with a line break', { source: { http: { url: 'https://x/y', extraHeaders: ['X-A: 1\r\nX-B: 2'] } }, ...storage }, 'spec.source.http.extraHeaders[0] in body should match'],
    ['a header with an empty value', { source: { http: { url: 'https://x/y', extraHeaders: ['X-A:  '] } }, ...storage }, 'spec.source.http.extraHeaders[0] in body should match'],
    ['a secretExtraHeaders entry that is not a Secret name', { source: { http: { url: 'https://x/y', secretExtraHeaders: ['Not_A_Secret'] } }, ...storage }, 'spec.source.http.secretExtraHeaders[0] in body should match'],
    ['33 extra headers', { source: { http: { url: 'https://x/y', extraHeaders: Array.from({ length: 33 }, (_, i) => `X-${i}: v`) } }, ...storage }, 'spec.source.http.extraHeaders: Too many: 33: must have at most 32 items'],
    ['checksum', { source: { http: { url: 'https://x/y', checksum: 'sha256:abc' } }, ...storage }, 'spec.source.http.checksum: Invalid value: "sha256:abc": spec.source.http.checksum in body should match'],
    ['two-sources', { source: { http: { url: 'https://x/y' }, blank: {} }, ...storage }, 'spec.source: Invalid value: exactly one source is required'],
    ['no-target', { source: { blank: {} } }, 'spec: Invalid value: exactly one of spec.pvc or spec.storage is required'],
    ['no-size', { source: { blank: {} }, storage: {} }, 'spec.storage.resources: Required value: spec.storage.resources.requests.storage is required'],
    ['ftp', { source: { http: { url: 'ftp://x/y' } }, ...storage }, 'spec.source.http.url: Invalid value: url must start with http:// or https://'],
    ['archive-blank', { source: { blank: {} }, ...storage, contentType: 'archive' }, 'spec.contentType: Invalid value: contentType archive needs an http, s3 or pvc source'],
  ])('refuses %s at create time with a 422 naming the field', async (name, spec, expected) => {
    const ns = await cp.newNamespace();
    const { code, message } = await refusal(ns, dv(name, spec));
    expect(code).toBe(422);
    expect(message).toContain(expected);
  });

  test('clones (source.pvc, sourceRef) are accepted, and may leave spec.storage\'s size out', async () => {
    const ns = await cp.newNamespace();
    for (const [name, spec] of [
      ['clone', { source: { pvc: { namespace: 'x', name: 'y' } }, storage: {} }],
      ['sourceref', { sourceRef: { kind: 'DataSource', name: 'fedora' }, storage: {} }],
      ['clone-sized', { source: { pvc: { name: 'y' } }, ...storage }],
    ] as const) {
      const created = (await create(ns, dv(name, spec))) as { metadata: { name: string } };
      expect(created.metadata.name).toBe(name);
    }
  });

  test('CDI fields Ferry does not read are kept, not pruned', async () => {
    const ns = await cp.newNamespace();
    await create(ns, dv('cdi-yaml', { source: { http: { url: 'https://x/y.img', futureOption: 'a' } }, storage: { resources: { requests: { storage: '1Gi' } }, futureField: 1 }, checkpoints: [{ previous: '', current: 'c1' }] }));
    const back = (await custom.getNamespacedCustomObject({ group: DV_GROUP, version: DV_VERSION, namespace: ns, plural: DV_PLURAL, name: 'cdi-yaml' })) as { spec: Record<string, Record<string, unknown>> };
    expect(back.spec.source?.http).toMatchObject({ futureOption: 'a' });
    expect(back.spec.storage).toMatchObject({ futureField: 1 });
    expect(back.spec.checkpoints).toEqual([{ previous: '', current: 'c1' }]);
  });

  test('the spec is immutable; the status is the controller\'s', async () => {
    const ns = await cp.newNamespace();
    await create(ns, dv('fixed', { source: { blank: {} }, ...storage }));
    const patch = (body: object) =>
      custom.patchNamespacedCustomObject({ group: DV_GROUP, version: DV_VERSION, namespace: ns, plural: DV_PLURAL, name: 'fixed', body }, setHeaderOptions('Content-Type', PatchStrategy.MergePatch));
    const err = await patch({ spec: { preallocation: true } }).then(() => undefined, (e: unknown) => e as ApiException<string>);
    expect(err?.code).toBe(422);
    expect(String(err?.body)).toContain('spec is immutable');
    // Labels and annotations stay editable.
    await patch({ metadata: { labels: { team: 'a' } } });
  });
});

const describeKubectl = existsSync(KUBECTL) ? describe : describe.skip;

describeKubectl('kubectl (the real one)', () => {
  test('kubectl get dv prints Phase, Progress, Restarts and Age', async () => {
    const ns = await cp.newNamespace();
    await create(ns, dv('fedora', { source: { http: { url: 'https://images.example/f.qcow2' } }, ...storage }));
    await custom.patchNamespacedCustomObjectStatus(
      { group: DV_GROUP, version: DV_VERSION, namespace: ns, plural: DV_PLURAL, name: 'fedora', body: { status: { phase: 'ImportInProgress', progress: '42.50%', restartCount: 1 } } },
      setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
    );
    const out = kubectl('get', 'dv', '-n', ns).trimEnd().split('\n');
    expect(out[0]?.split(/\s+/)).toEqual(['NAME', 'PHASE', 'PROGRESS', 'RESTARTS', 'AGE']);
    expect(out[1]?.split(/\s+/).slice(0, 4)).toEqual(['fedora', 'ImportInProgress', '42.50%', '1']);
    // The short name and the category resolve too.
    expect(kubectl('get', 'dvs', '-n', ns, '-o', 'name').trim()).toBe('datavolume.cdi.kubevirt.io/fedora');
  });

  test('kubectl explain dv.spec.source.http reads the descriptions', () => {
    const out = kubectl('explain', 'dv.spec.source.http');
    expect(out).toMatch(/^GROUP:\s+cdi\.kubevirt\.io$/m);
    expect(out).toMatch(/^KIND:\s+DataVolume$/m);
    expect(out).toMatch(/^VERSION:\s+v1beta1$/m);
    expect(out).toMatch(/^\s+url\s+<string> -required-$/m);
    expect(out).toMatch(/Import from an HTTP\(S\) URL/);
    for (const field of ['url', 'secretRef', 'certConfigMap', 'checksum', 'insecureSkipVerify', 'extraHeaders', 'secretExtraHeaders']) expect(out).toMatch(new RegExp(`^\\s+${field}\\s`, 'm'));
    expect(kubectl('explain', 'dv.spec.storage')).toContain('accessModes [ReadWriteOnce]');
    expect(kubectl('explain', 'dv.spec.source.gcs')).toContain('Refused by Ferry');
  });
});
