/**
 * Writes Ferry's CRDs (src/api/crd-files.ts: kubevirt.io/v1 and cdi.kubevirt.io/v1beta1: DataVolume, CDIConfig, DataSource) to manifests/crds/. Run after changing the schema:
 * `npm run build && node dist/scripts/gen-crds.js`; test/unit/crds.test.ts fails while they differ.
 */

import { writeFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { crdFiles } from '../src/api/crd-files.js';

const root = process.argv[2] ?? process.cwd();
mkdirSync(join(root, 'manifests', 'crds'), { recursive: true });
for (const [path, text] of Object.entries(crdFiles())) {
  writeFileSync(join(root, path), text);
  process.stdout.write(`wrote ${path}\n`);
}
