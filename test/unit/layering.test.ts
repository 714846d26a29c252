/**
 * The layering rule (docs/adr/0006-layout.md), checked on the TypeScript sources: `src/` is the
 * kernel and imports nothing outside `src/` (and no process or file-system I/O); each program
 * (`importer/`, `controller/`, `launcher/`, `cli/`) imports `src/` and its own folder, never another
 * program. bin/ferry.js, test/, bench/ and scripts/ compose programs and are not checked.
 */

import { describe, expect, test } from '@jest/globals';
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, normalize, sep } from 'node:path';
import ts from 'typescript';
import { REPO_ROOT } from '../helpers/ferry-process.js';

export const KERNEL = 'src';
export const PROGRAMS = ['importer', 'controller', 'launcher', 'cli', 'uploadproxy', 'apiserver', 'clone'] as const;

/**
 * Node modules that do process or file-system I/O: a program's business, not the kernel's. The
 * kernel keeps logging (pino) and pure codecs (node:crypto hashes, client-node's YAML writer), and
 * `src/io/` holds the one piece of I/O plumbing that several programs share (running a tool).
 */
export const KERNEL_IO = 'src/io/';
export const KERNEL_FORBIDDEN_MODULES = [
  'fs',
  'fs/promises',
  'child_process',
  'net',
  'http',
  'https',
  'http2',
  'dgram',
  'tls',
  'dns',
  'cluster',
  'worker_threads',
  'readline',
];

/** The module specifiers a file imports: static, `export … from`, `import type`, dynamic `import()`. */
export function importsOf(text: string): string[] {
  return ts.preProcessFile(text, true, true).importedFiles.map((f) => f.fileName);
}

/** The top folder of a repository-relative path (`cli/console-main.ts` → `cli`). */
function topOf(path: string): string {
  return path.split('/')[0] ?? '';
}

/** Pure: why `file` (repository-relative, `/`-separated) may not import `specifier`, or undefined. */
export function violation(file: string, specifier: string): string | undefined {
  const from = topOf(file);
  if (specifier.startsWith('.')) {
    const target = normalize(join(dirname(file), specifier)).split(sep).join('/');
    if (target.startsWith('..')) return `${specifier} leaves the repository`;
    const to = topOf(target);
    if (to === from) return undefined;
    if (from === KERNEL) return `${specifier} (${target}): src/ imports nothing outside src/`;
    if (to === KERNEL) return undefined;
    return `${specifier} (${target}): ${from}/ imports src/ and ${from}/ only, never ${to}/`;
  }
  if (from === KERNEL && !file.startsWith(KERNEL_IO)) {
    const name = specifier.replace(/^node:/, '');
    if (KERNEL_FORBIDDEN_MODULES.includes(name)) return `${specifier}: src/ does no process or file I/O; that belongs to the program that needs it`;
  }
  return undefined;
}

function tsFiles(dir: string): string[] {
  return readdirSync(join(REPO_ROOT, dir), { withFileTypes: true }).flatMap((entry) => {
    const path = `${dir}/${entry.name}`;
    if (entry.isDirectory()) return tsFiles(path);
    return entry.isFile() && entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts') ? [path] : [];
  });
}

const FILES = [KERNEL, ...PROGRAMS].flatMap(tsFiles);

describe('the layering checker', () => {
  test.each<[string, string, string | undefined]>([
    ['cli/console-main.ts', '../launcher/domain/domain-plan.js', 'never launcher/'],
    ['controller/vm/launcher-pod.ts', '../../src/contract/launch-plan.js', undefined],
    ['controller/vm/vm-controller.ts', '../import/reconcile.js', undefined],
    ['controller/vm/vm-controller.ts', '../../importer/engine.js', 'never importer/'],
    ['importer/main.ts', '../test/helpers/fixtures.js', 'never test/'],
    ['src/contract/launch-plan.ts', '../api/kubevirt.js', undefined],
    ['src/errors.ts', '../launcher/outcome.js', 'nothing outside src/'],
    ['src/logging.ts', 'pino', undefined],
    ['src/api/kubevirt.ts', 'node:crypto', undefined],
    ['src/api/cdi.ts', 'node:fs/promises', 'no process or file I/O'],
    ['src/api/cdi.ts', 'child_process', 'no process or file I/O'],
    ['src/io/child-process.ts', 'node:child_process', undefined],
    ['launcher/volumes.ts', 'node:child_process', undefined],
    ['launcher/main.ts', '../../elsewhere.js', 'leaves the repository'],
    ['uploadproxy/proxy.ts', '../importer/upload-server.js', 'never importer/'],
    ['uploadproxy/proxy.ts', '../src/contract/upload-token.js', undefined],
  ])('%s importing %s', (file, specifier, expected) => {
    const result = violation(file, specifier);
    if (expected === undefined) expect(result).toBeUndefined();
    else expect(result).toContain(expected);
  });

  test('sees every kind of import', () => {
    const text = [
      "import { a } from './a.js';",
      "import type { B } from '../b.js';",
      "import './side-effect.js';",
      "export { c } from './c.js';",
      "export * from './d.js';",
      'const { e } = await import(\n  "./e.js"\n);',
      'import {\n  f,\n  g,\n} from "./fg.js";',
    ].join('\n');
    expect(importsOf(text).sort()).toEqual(['../b.js', './a.js', './c.js', './d.js', './e.js', './fg.js', './side-effect.js']);
  });

  test('reads the real sources (a checker that reads nothing passes vacuously)', () => {
    for (const dir of [KERNEL, ...PROGRAMS]) expect(FILES.filter((f) => f.startsWith(`${dir}/`)).length).toBeGreaterThan(0);
    expect(importsOf(readFileSync(join(REPO_ROOT, 'launcher/main.ts'), 'utf8'))).toContain('../src/errors.js');
  });
});

describe('the layering rule holds', () => {
  test('no file in src/ or a program imports across the rule', () => {
    const offending = FILES.flatMap((file) =>
      importsOf(readFileSync(join(REPO_ROOT, file), 'utf8')).flatMap((specifier) => {
        const why = violation(file, specifier);
        return why === undefined ? [] : [`${file} imports ${why}`];
      }),
    );
    expect(offending).toEqual([]);
  });
});
