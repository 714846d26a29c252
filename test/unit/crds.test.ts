/** Ferry's CRDs: generated files in step with src/api/, KubeVirt's and CDI's names and columns, structural schemas, CEL admission rules. */

import { describe, expect, test } from '@jest/globals';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DiskBus, RunStrategy } from '../../src/api/kubevirt.js';
import { crdFiles } from '../../src/api/crd-files.js';
import { MAX_DATAVOLUME_TEMPLATES, VM_CRD, VMI_CRD } from '../../src/api/crds.js';
import { DATAVOLUME_CRD } from '../../src/api/datavolume-crd.js';
import { REFUSED_SOURCES } from '../../src/api/datavolume.js';
import { REPO_ROOT } from '../helpers/ferry-process.js';

type Schema = Record<string, unknown>;

interface Crd {
  metadata: { name: string };
  spec: {
    group: string;
    scope: string;
    names: { kind: string; plural: string; singular: string; shortNames: string[]; categories: string[] };
    versions: Array<{
      name: string;
      served: boolean;
      storage: boolean;
      subresources?: { status?: object };
      additionalPrinterColumns: Array<{ name: string; type: string; jsonPath: string }>;
      schema: { openAPIV3Schema: Schema };
    }>;
  };
}

const CRDS: Array<[string, Crd]> = [
  ['VirtualMachineInstance', VMI_CRD as unknown as Crd],
  ['VirtualMachine', VM_CRD as unknown as Crd],
  ['DataVolume', DATAVOLUME_CRD as unknown as Crd],
];
const version = (crd: Crd) => crd.spec.versions[0]!;
const root = (crd: Crd): Schema => version(crd).schema.openAPIV3Schema;
const at = (schema: Schema, ...path: string[]): Schema =>
  path.reduce<Schema>((s, key) => ((s.properties as Record<string, Schema> | undefined)?.[key] ?? (key === '[]' ? (s.items as Schema) : undefined)) as Schema, schema);

describe('manifests/crds', () => {
  const REGENERATE = 'run `npm run build && node dist/scripts/gen-crds.js` to regenerate manifests/crds/';

  test.each(Object.entries(crdFiles()))('%s is up to date with src/api/crds.ts', (path, text) => {
    const onDisk = readFileSync(join(REPO_ROOT, path), 'utf8');
    if (onDisk !== text) throw new Error(`${path} differs from crdFiles(): ${REGENERATE}`);
    expect(onDisk).toBe(text);
  });

  test('holds exactly the generated files', () => {
    const listed = readdirSync(join(REPO_ROOT, 'manifests', 'crds')).map((f) => `manifests/crds/${f}`).sort();
    expect(listed).toEqual(Object.keys(crdFiles()).sort());
  });

  test('every file says it is generated', () => {
    for (const text of Object.values(crdFiles())) expect(text.split('\n')[0]).toMatch(/^# Generated .* do not edit\.$/);
  });
});

describe('CRD names and columns (as KubeVirt)', () => {
  test.each<[string, string, string, string[]]>([
    ['VirtualMachineInstance', 'virtualmachineinstances', 'virtualmachineinstance', ['vmi', 'vmis']],
    ['VirtualMachine', 'virtualmachines', 'virtualmachine', ['vm', 'vms']],
  ])('%s: kubevirt.io/v1, namespaced, plural %s, short names', (kind, plural, singular, shortNames) => {
    const crd = CRDS.find(([k]) => k === kind)![1];
    expect(crd.metadata.name).toBe(`${plural}.kubevirt.io`);
    expect(crd.spec.group).toBe('kubevirt.io');
    expect(crd.spec.scope).toBe('Namespaced');
    expect(crd.spec.names).toEqual(expect.objectContaining({ kind, plural, singular, shortNames, categories: ['all'] }));
    expect(crd.spec.versions.map((v) => [v.name, v.served, v.storage])).toEqual([['v1', true, true]]);
  });

  test('DataVolume: cdi.kubevirt.io/v1beta1, namespaced, short names dv and dvs, CDI\'s columns', () => {
    const crd = DATAVOLUME_CRD as unknown as Crd;
    expect(crd.metadata.name).toBe('datavolumes.cdi.kubevirt.io');
    expect(crd.spec.scope).toBe('Namespaced');
    expect(crd.spec.names).toEqual(expect.objectContaining({ kind: 'DataVolume', plural: 'datavolumes', singular: 'datavolume', shortNames: ['dv', 'dvs'] }));
    expect(crd.spec.versions.map((v) => [v.name, v.served, v.storage])).toEqual([['v1beta1', true, true]]);
    expect(version(crd).additionalPrinterColumns.map((c) => [c.name, c.type, c.jsonPath])).toEqual([
      ['Phase', 'string', '.status.phase'],
      ['Progress', 'string', '.status.progress'],
      ['Restarts', 'integer', '.status.restartCount'],
      ['Age', 'date', '.metadata.creationTimestamp'],
    ]);
  });

  test.each(CRDS)('%s has a status subresource', (_, crd) => {
    expect(version(crd).subresources).toEqual({ status: {} });
  });

  const READY = ".status.conditions[?(@.type=='Ready')].status";
  test.each<[string, Crd, Array<[string, string, string]>]>([
    [
      'VirtualMachineInstance',
      VMI_CRD as unknown as Crd,
      [
        ['Age', 'date', '.metadata.creationTimestamp'],
        ['Phase', 'string', '.status.phase'],
        ['IP', 'string', '.status.interfaces[0].ipAddress'],
        ['NodeName', 'string', '.status.nodeName'],
        ['Ready', 'string', READY],
      ],
    ],
    [
      'VirtualMachine',
      VM_CRD as unknown as Crd,
      [
        ['Age', 'date', '.metadata.creationTimestamp'],
        ['Status', 'string', '.status.printableStatus'],
        ['Ready', 'string', READY],
      ],
    ],
  ])('%s printer columns', (_, crd, columns) => {
    expect(version(crd).additionalPrinterColumns.map((c) => [c.name, c.type, c.jsonPath])).toEqual(columns);
  });

  test('enums follow the API constants', () => {
    expect(at(root(VM_CRD as unknown as Crd), 'spec', 'runStrategy').enum).toEqual(Object.values(RunStrategy));
    const disk = at(root(VMI_CRD as unknown as Crd), 'spec', 'domain', 'devices', 'disks', '[]');
    expect(at(disk, 'disk', 'bus').enum).toEqual(Object.values(DiskBus));
    expect(at(disk, 'cdrom', 'bus').enum).toEqual(Object.values(DiskBus));
  });

  test('dataVolumeTemplates: each entry is metadata (name required) and the DataVolume spec with its rules, bar the transition rule', () => {
    const templates = at(root(VM_CRD as unknown as Crd), 'spec', 'dataVolumeTemplates');
    expect(templates.maxItems).toBe(MAX_DATAVOLUME_TEMPLATES);
    const entry = templates.items as Schema;
    expect(entry.required).toEqual(['metadata', 'spec']);
    expect(at(entry, 'metadata').required).toEqual(['name']);
    const dvSpec = at(root(DATAVOLUME_CRD as unknown as Crd), 'spec');
    const rules = (s: Schema) => ((s['x-kubernetes-validations'] as Array<{ rule: string }> | undefined) ?? []).map((r) => r.rule);
    expect(rules(at(entry, 'spec'))).toEqual(rules(dvSpec).filter((r) => r !== 'self == oldSelf'));
    expect(rules(dvSpec)).toContain('self == oldSelf');
    // Below spec, the same schema: sources refused by name, the same descriptions.
    expect(at(entry, 'spec', 'source')).toEqual(at(dvSpec, 'source'));
    expect(at(entry, 'spec', 'storage')).toEqual(at(dvSpec, 'storage'));
  });

  test('the VM template holds the same VMI spec schema', () => {
    expect(at(root(VM_CRD as unknown as Crd), 'spec', 'template', 'spec')).toEqual(at(root(VMI_CRD as unknown as Crd), 'spec'));
  });
});

describe('structural schemas', () => {
  /** Every schema node with its path, descending into properties, items and additionalProperties. */
  function nodes(schema: Schema, path = ''): Array<[string, Schema]> {
    const out: Array<[string, Schema]> = [[path || '.', schema]];
    for (const [key, child] of Object.entries((schema.properties as Record<string, Schema> | undefined) ?? {})) out.push(...nodes(child, `${path}.${key}`));
    if (schema.items) out.push(...nodes(schema.items as Schema, `${path}[]`));
    if (typeof schema.additionalProperties === 'object') out.push(...nodes(schema.additionalProperties as Schema, `${path}{}`));
    return out;
  }
  const INT_OR_STRING = [{ type: 'integer' }, { type: 'string' }];

  test.each(CRDS)('%s: every node has a type (or is int-or-string with the allowed anyOf)', (_, crd) => {
    const bad = nodes(root(crd))
      .filter(([, s]) => (s['x-kubernetes-int-or-string'] === true ? JSON.stringify(s.anyOf) !== JSON.stringify(INT_OR_STRING) || 'type' in s : typeof s.type !== 'string'))
      .map(([p]) => p);
    expect(bad).toEqual([]);
  });

  test.each(CRDS)('%s: every object without properties preserves unknown fields', (_, crd) => {
    const bad = nodes(root(crd))
      // The root metadata is the apiserver's: a CRD may only say `type: object` there.
      .filter(([p]) => p !== '.metadata')
      .filter(([, s]) => s.type === 'object' && Object.keys((s.properties as object | undefined) ?? {}).length === 0 && s.additionalProperties === undefined)
      .filter(([, s]) => s['x-kubernetes-preserve-unknown-fields'] !== true)
      .map(([p]) => p);
    expect(bad).toEqual([]);
  });

  test.each(CRDS)('%s: spec and status keep KubeVirt fields Ferry does not know', (_, crd) => {
    expect(at(root(crd), 'spec')['x-kubernetes-preserve-unknown-fields']).toBe(true);
    expect(at(root(crd), 'status')['x-kubernetes-preserve-unknown-fields']).toBe(true);
    expect(root(crd).required).toEqual(['spec']);
  });

  test('the root metadata is only `type: object`', () => {
    for (const [, crd] of CRDS) expect(at(root(crd), 'metadata')).toEqual({ type: 'object' });
  });
});

describe('DataVolume admission rules', () => {
  const dv = root(DATAVOLUME_CRD as unknown as Crd);
  const rules = (schema: Schema): Array<{ rule: string; message: string }> => (schema['x-kubernetes-validations'] as Array<{ rule: string; message: string }> | undefined) ?? [];

  test.each([...REFUSED_SOURCES])('spec.source.%s is declared and refused by a rule on itself (the error names the field)', (key) => {
    const node = at(dv, 'spec', 'source', key);
    expect(node.description).toContain('Refused by Ferry');
    expect(rules(node)).toEqual([expect.objectContaining({ rule: 'false' })]);
  });

  test('spec.source.upload is accepted (an empty object, no refusal rule)', () => {
    const node = at(dv, 'spec', 'source', 'upload');
    expect(node.description).not.toContain('Refused by Ferry');
    expect(rules(node)).toEqual([]);
  });

  test('clones are accepted: spec.source.pvc and spec.sourceRef carry no refusal, and only a clone may leave spec.storage\'s size out', () => {
    for (const node of [at(dv, 'spec', 'source', 'pvc'), at(dv, 'spec', 'sourceRef')]) expect(node.description).not.toContain('Refused by Ferry');
    expect(rules(at(dv, 'spec', 'source', 'pvc'))).toEqual([]);
    expect(rules(at(dv, 'spec', 'sourceRef')).map((r) => r.rule)).toEqual(["self.kind == 'DataSource'"]);
    expect(rules(at(dv, 'spec')).find((r) => r.rule.includes('self.storage.resources'))?.rule).toContain('has(self.sourceRef) || (has(self.source) && has(self.source.pvc))');
  });

  test('exactly one source counts every declared source key', () => {
    const source = at(dv, 'spec', 'source');
    const declared = Object.keys(source.properties as object).sort();
    const counted = [...(rules(source)[0]?.rule.matchAll(/has\(self\.(\w+)\)/g) ?? [])].map((m) => m[1]).sort();
    expect(counted).toEqual(declared);
  });

  test('the spec is immutable and needs one source and one target', () => {
    expect(rules(at(dv, 'spec')).map((r) => r.rule)).toEqual(
      expect.arrayContaining(['self == oldSelf', 'has(self.source) != has(self.sourceRef)', 'has(self.pvc) != has(self.storage)']),
    );
  });
});
