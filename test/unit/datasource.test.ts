/** DataSource: the PVC it names, and the CRD's shape (snapshot refused, pvc required, status left alone). */

import { describe, expect, test } from '@jest/globals';
import { dataSourcePvc, type DataSource } from '../../src/api/datasource.js';
import { DATASOURCE_CRD } from '../../src/api/datasource-crd.js';

const ds = (pvc: unknown, namespace = 'golden-images'): DataSource => ({ metadata: { name: 'fedora', namespace }, spec: { source: { ...(pvc !== undefined ? { pvc } : {}) } } }) as DataSource;

describe('DataSource', () => {
  test.each([
    ['namespace defaults to the DataSource\'s', { name: 'fedora-41' }, { namespace: 'golden-images', name: 'fedora-41' }],
    ['an explicit namespace is kept', { namespace: 'other', name: 'x' }, { namespace: 'other', name: 'x' }],
    ['no pvc', undefined, undefined],
    ['an empty name', { name: '' }, undefined],
  ])('dataSourcePvc: %s', (_what, pvc, want) => {
    expect(dataSourcePvc(ds(pvc))).toEqual(want);
  });

  test('the CRD: namespaced cdi.kubevirt.io/v1beta1, snapshot refused by a rule on the field, pvc required', () => {
    const spec = DATASOURCE_CRD.spec as { group: string; scope: string; names: { kind: string; plural: string }; versions: Array<{ name: string; schema: { openAPIV3Schema: { properties: { spec: { properties: { source: Record<string, unknown> } } } } } }> };
    expect(spec).toMatchObject({ group: 'cdi.kubevirt.io', scope: 'Namespaced', names: { kind: 'DataSource', plural: 'datasources' } });
    const source = spec.versions[0]!.schema.openAPIV3Schema.properties.spec.properties.source as { properties: { snapshot: { 'x-kubernetes-validations': Array<{ rule: string; message: string }> } }; 'x-kubernetes-validations': Array<{ rule: string }> };
    expect(source.properties.snapshot['x-kubernetes-validations']).toEqual([expect.objectContaining({ rule: 'false', message: expect.stringContaining('spec.source.snapshot') })]);
    expect(source['x-kubernetes-validations']).toEqual([expect.objectContaining({ rule: 'has(self.pvc)' })]);
  });
});
