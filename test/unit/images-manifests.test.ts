/**
 * The install manifests name Ferry's two images only through kustomize `images:`, so
 * `kustomize edit set image ferry=… ferry-launcher=…` reaches every pod: the controller's own
 * container, and the importer and launcher pods it creates from the image names in its ConfigMap
 * (rewritten by the same transformer through kustomizeconfig.yaml). docs/adr/0007-images.md.
 */

import { describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { dumpYaml, type KubernetesObject, loadAllYaml, loadYaml } from '@kubernetes/client-node';
import { parseControllerArgs } from '../../controller/main.js';
import { REPO_ROOT } from '../helpers/ferry-process.js';

const MANIFESTS = join(REPO_ROOT, 'manifests');
/** The images `npm run images` builds (scripts/build-images.sh), by their kustomize names. */
const IMAGE_NAMES = ['ferry', 'ferry-launcher'];

interface Kustomization {
  resources: string[];
  configurations?: string[];
  images?: Array<{ name: string; newName?: string; newTag?: string; digest?: string }>;
}
interface FieldSpec {
  path: string;
  kind: string;
}
interface Container {
  name: string;
  image: string;
  args?: string[];
  envFrom?: Array<{ configMapRef?: { name: string } }>;
}
interface Deployment extends KubernetesObject {
  spec: { template: { spec: { containers: Container[]; initContainers?: Container[] } } };
}
interface ConfigMap extends KubernetesObject {
  data: Record<string, string>;
}

const read = (file: string) => readFileSync(join(MANIFESTS, file), 'utf8');
const kustomization = loadYaml<Kustomization>(read('kustomization.yaml'));
const objects = (): KubernetesObject[] => kustomization.resources.flatMap((file) => loadAllYaml(read(file)) as KubernetesObject[]);
const deployment = objects().find((o) => o.kind === 'Deployment') as Deployment;
const config = objects().find((o) => o.kind === 'ConfigMap' && o.metadata?.name === 'ferry-controller') as ConfigMap;

/** Every string field named `image` outside the CRDs (whose schemas describe, not name, images). */
function imageFields(value: unknown, path: string[] = []): Array<[string, string]> {
  if (Array.isArray(value)) return value.flatMap((v, i) => imageFields(v, [...path, String(i)]));
  if (value === null || typeof value !== 'object') return [];
  return Object.entries(value).flatMap(([key, v]) =>
    key === 'image' && typeof v === 'string' ? [[[...path, key].join('/'), v] as [string, string]] : imageFields(v, [...path, key]),
  );
}

describe('manifests/ image names (kustomize images:)', () => {
  test('kustomization.yaml maps both image names to a registry name', () => {
    expect((kustomization.images ?? []).map((i) => i.name).sort()).toEqual(IMAGE_NAMES);
    for (const image of kustomization.images ?? []) {
      expect(image.newName).toMatch(/\//);
      expect(image.newTag !== undefined || image.digest !== undefined).toBe(true);
      // YAML 1.1 reads tags like `y`, `no` or `1.10` as non-strings; kustomize then rejects them.
      if (image.newTag !== undefined) expect(typeof image.newTag).toBe('string');
    }
  });

  test('every container image in the resources is a kustomize image name', () => {
    const found = objects()
      .filter((o) => o.kind !== 'CustomResourceDefinition')
      .flatMap((o) => imageFields(o).map(([path, image]) => `${o.kind}/${o.metadata?.name}: ${path}=${image}`));
    expect(found.sort()).toEqual([
      'DaemonSet/ferry-seccomp-profile: spec/template/spec/containers/0/image=ferry',
      'Deployment/ferry-apiserver: spec/template/spec/containers/0/image=ferry',
      'Deployment/ferry-controller: spec/template/spec/containers/0/image=ferry',
      'StatefulSet/ferry-uploadproxy: spec/template/spec/containers/0/image=ferry',
    ]);
  });

  test('the importer and launcher images in the ConfigMap are rewritten by the same transformer', () => {
    expect(config.data.IMPORTER_IMAGE).toBe('ferry');
    expect(config.data.LAUNCHER_IMAGE).toBe('ferry-launcher');
    expect(kustomization.configurations).toEqual(['kustomizeconfig.yaml']);
    const specs = loadYaml<{ images: FieldSpec[] }>(read('kustomizeconfig.yaml')).images;
    expect(specs).toEqual(
      expect.arrayContaining([
        { path: 'data/IMPORTER_IMAGE', kind: 'ConfigMap' },
        { path: 'data/LAUNCHER_IMAGE', kind: 'ConfigMap' },
      ]),
    );
  });

  test('the Deployment hands both images to the controller through flags it parses', () => {
    const controller = deployment.spec.template.spec.containers[0]!;
    expect(controller.envFrom).toContainEqual({ configMapRef: { name: config.metadata?.name } });
    const args = controller.args ?? [];
    expect(args).toEqual(expect.arrayContaining(['--importer-image=$(IMPORTER_IMAGE)', '--launcher-image=$(LAUNCHER_IMAGE)']));
    // What the kubelet makes of them once it has expanded $(VAR) from the ConfigMap:
    const expanded = args.slice(1).map((a) => a.replace(/\$\(([A-Z_]+)\)/g, (_, name: string) => config.data[name] ?? `$(${name})`));
    const parsed = parseControllerArgs(expanded.filter((a) => !a.includes('$('))).config;
    expect([parsed.importerImage, parsed.launcherImage]).toEqual(['ferry', 'ferry-launcher']);
  });

  // The real kustomize (kubectl's): what `kustomize edit set image` leads to, in a copy.
  const kubectl = (process.env.PATH ?? '').split(delimiter).map((dir) => join(dir, 'kubectl')).find((p) => existsSync(p));
  (kubectl ? test : test.skip)('kubectl kustomize points every image at the registry set in images:', () => {
    const dir = mkdtempSync(join(tmpdir(), 'ferry-kustomize-'));
    try {
      cpSync(MANIFESTS, dir, { recursive: true });
      const edited = loadYaml<Kustomization>(readFileSync(join(dir, 'kustomization.yaml'), 'utf8'));
      edited.images = [
        { name: 'ferry', newName: 'registry.example.com:5000/team/ferry', newTag: '1.2.3' },
        { name: 'ferry-launcher', newName: 'registry.example.com:5000/team/ferry-launcher', digest: `sha256:${'0'.repeat(64)}` },
      ];
      writeFileSync(join(dir, 'kustomization.yaml'), dumpYaml(edited));
      const rendered = loadAllYaml(execFileSync(kubectl!, ['kustomize', dir], { encoding: 'utf8', maxBuffer: 64 << 20 })) as KubernetesObject[];
      const dep = rendered.find((o) => o.kind === 'Deployment') as Deployment;
      const cm = rendered.find((o) => o.kind === 'ConfigMap') as ConfigMap;
      expect(dep.spec.template.spec.containers[0]!.image).toBe('registry.example.com:5000/team/ferry:1.2.3');
      expect(cm.data.IMPORTER_IMAGE).toBe('registry.example.com:5000/team/ferry:1.2.3');
      expect(cm.data.LAUNCHER_IMAGE).toBe(`registry.example.com:5000/team/ferry-launcher@sha256:${'0'.repeat(64)}`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
