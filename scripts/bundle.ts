/**
 * `npm run build`'s second step: the programs bin/ferry.js runs, bundled by esbuild from tsc's
 * output into dist/bundle/ (issue #16: node loads a handful of files instead of ~200, which saves
 * start-up CPU in every import pod; bench/README.md "Importer against ordinary servers").
 *
 *   node dist/scripts/bundle.js [OUT_DIR]   (after tsc; `npm run build` does both; default dist/bundle)
 *
 * One entry per composition root, at the same relative path as in dist/ (dist/bundle/importer/cli-main.js
 * exports what dist/importer/cli-main.js does); code shared by several programs and every dynamic
 * import (tar-stream, the proxy agents, the S3 and registry sources, metrics) goes into chunks under
 * dist/bundle/chunks/, so what a program loads lazily it still loads lazily. Every npm dependency is
 * bundled: the image needs no node_modules (docs/adr/0007-images.md).
 * dist/bundle/manifest.json lists the entries and the dist/ files they were built from, so
 * bin/ferry.js can tell a bundle older than tsc's output (a `tsc` without this step) and not use it.
 */

import { existsSync, readdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build, type Plugin } from 'esbuild';

/** The composition roots bin/ferry.js imports, relative to dist/. */
const BUNDLE_ENTRIES = [
  'importer/cli-main.js',
  'importer/main.js',
  'importer/upload-server-main.js',
  'clone/source-main.js',
  'clone/target-main.js',
  'controller/main.js',
  'apiserver/main.js',
  'uploadproxy/main.js',
  'launcher/main.js',
  'cli/vm-main.js',
  'cli/console-main.js',
  'cli/image-upload-main.js',
] as const;

/** The manifest bin/ferry.js reads: bundle entries and the dist/ inputs (relative to dist/). */
export interface BundleManifest {
  readonly entries: readonly string[];
  readonly inputs: readonly string[];
}

// dist/scripts → dist
const DIST = join(fileURLToPath(new URL('.', import.meta.url)), '..');
const OUT = process.argv[2] !== undefined ? resolve(process.argv[2]) : join(DIST, 'bundle');

/**
 * node:http is required, not imported: an ES module import of node:http reads every export of the
 * module, the lazy WebSocket, CloseEvent and MessageEvent getters too, and those load undici
 * (measured cold: `import 'node:http'` 0.11 CPU-s, `require('node:http')` 0.05, `node -e 0` 0.04;
 * no other built-in the programs import differs). So each static ES module import of it (ours and
 * got's) resolves to one CommonJS stub, `module.exports = require('node:http')`, whose properties
 * esbuild reads where they are used. A dynamic import() is left alone: a stub's chunk would export
 * only `default` (see namedDynamicCommonJs).
 */
const requireHttp: Plugin = {
  name: 'require-node-http',
  setup(b) {
    b.onResolve({ filter: /^(node:)?http$/ }, (args) =>
      args.kind === 'import-statement' ? { path: 'node:http', namespace: 'require-stub' } : undefined);
    b.onLoad({ filter: /.*/, namespace: 'require-stub' }, (args) => ({ contents: `module.exports = require(${JSON.stringify(args.path)});`, loader: 'js' }));
  },
};

/**
 * got imports http2-wrapper, and node:http2 with it, when it loads, for its `http2` option; Ferry
 * never sets that option (every request is HTTP/1.1, as nbdkit's and curl's are). The bundle gets a
 * stand-in whose use throws, so the option set one day fails loudly instead of quietly doing
 * HTTP/1.1. Measured: see bench/README.md, "Seventh pass".
 */
const noHttp2Wrapper: Plugin = {
  name: 'no-http2-wrapper',
  setup(b) {
    b.onResolve({ filter: /^http2-wrapper$/ }, () => ({ path: 'http2-wrapper', namespace: 'no-http2' }));
    b.onLoad({ filter: /.*/, namespace: 'no-http2' }, () => ({
      contents: "const off = () => { throw new Error('HTTP/2 is left out of the bundle (scripts/bundle.ts, noHttp2Wrapper)'); };\nexport default { auto: off, globalAgent: undefined };",
      loader: 'js',
    }));
  },
};

/**
 * Built-ins the bundle used to load at start although an import over plain HTTP never uses them.
 * Each gets a CommonJS stand-in whose properties, the built-in's own (listed at build time), load it
 * when first read; esbuild reads an import's names through those properties at their use, so the
 * module loads when the code first asks for it. Measured, `require(name)` over `node -e 0`, five runs:
 * - node:tls and node:https (got's static imports, and ours of `rootCertificates`): 7 ms warm, 12 ms
 *   with the page cache dropped. `checkServerIdentity`, which got copies into every request's
 *   options, is a function that loads TLS when first called.
 * - node:zlib (decompress-response in got, which Ferry runs with `decompress: false`; the gzip layer;
 *   the clone stream's crc32): 5 ms warm. decompress-response reads one property when it loads, so
 *   that read is deferred too (`lazyZstdCheck`).
 * - node:assert (pino's sonic-boom and thread-stream, a `require` when the logger loads; they call it
 *   on close and on a worker's errors): 7 ms warm. The stand-in is a function that calls it.
 */
const LAZY_IMPORTS = /^(node:)?(tls|https|zlib)$/;
const LAZY_REQUIRES = /^(node:)?assert$/;

const lazyBuiltins: Plugin = {
  name: 'lazy-builtins',
  setup(b) {
    b.onResolve({ filter: /^(node:)?(tls|https|zlib|assert)$/ }, (args) => {
      if (args.namespace === 'lazy-builtin') return undefined; // the stand-in's own require: the built-in
      const lazy = args.kind === 'import-statement' ? LAZY_IMPORTS.test(args.path) : args.kind === 'require-call' && LAZY_REQUIRES.test(args.path);
      return lazy ? { path: `node:${args.path.replace(/^node:/, '')}`, namespace: 'lazy-builtin' } : undefined;
    });
    b.onLoad({ filter: /.*/, namespace: 'lazy-builtin' }, (args) => {
      const builtin: unknown = createRequire(import.meta.url)(args.path);
      const names = Object.keys(builtin as object);
      const callable = typeof builtin === 'function';
      return {
        contents: [
          'let loaded;',
          `const load = () => (loaded ??= require(${JSON.stringify(args.path)}));`,
          ...(callable ? ['const standIn = function (...args) { return load()(...args); };', 'module.exports = standIn;'] : []),
          `for (const name of ${JSON.stringify(names.filter((n) => n !== 'checkServerIdentity'))}) Object.defineProperty(module.exports, name, { enumerable: true, get: () => load()[name] });`,
          // got reads it into every request's options, plain HTTP too: a stand-in that loads on its first call.
          ...(names.includes('checkServerIdentity') ? ["Object.defineProperty(module.exports, 'checkServerIdentity', { enumerable: true, value: (...args) => load().checkServerIdentity(...args) });"] : []),
        ].join('\n'),
        loader: 'js',
      };
    });
  },
};

/**
 * decompress-response asks, when it loads, whether node:zlib has zstd, which loads zlib. The answer
 * is now computed at its first use. The build fails when the package's source no longer has that
 * one check and its one use, so an upgrade is looked at again.
 */
const ZSTD_CHECK = "const supportsZstd = typeof zlib.createZstdDecompress === 'function';";

function lazyZstdChecks(source: string, where: string): string {
  const checks = source.split(ZSTD_CHECK).length - 1;
  const uses = source.match(/\bif \(supportsZstd\)/g)?.length ?? 0;
  const all = source.match(/\bsupportsZstd\b/g)?.length ?? 0;
  if (checks !== 1 || uses !== 1 || all !== 2) throw new Error(`${where}: expected one zstd check and one use to make lazy, found ${checks} and ${uses} of ${all} (scripts/bundle.ts, lazyZstdCheck)`);
  return source
    .replace(ZSTD_CHECK, "let zstdKnown; const supportsZstd = () => (zstdKnown ??= typeof zlib.createZstdDecompress === 'function');")
    .replace(/\bif \(supportsZstd\)/, 'if (supportsZstd())');
}

const lazyZstdCheck: Plugin = {
  name: 'lazy-zstd-check',
  setup(b) {
    b.onLoad({ filter: /[\\/]node_modules[\\/]decompress-response[\\/]index\.js$/ }, (args) => ({
      contents: lazyZstdChecks(readFileSync(args.path, 'utf8'), args.path),
      loader: 'js',
    }));
  },
};

/**
 * @sindresorhus/is (got's argument checks) makes two `Intl.ListFormat`s when it loads, for the text of
 * one error message. The first `Intl` object a process makes initialises ICU: measured, `node -e`
 * with one `new Intl.ListFormat` against `node -e 0`, five runs each: +10 ms warm, +30 ms with the
 * page cache dropped (ICU's data is read from the node binary). Nothing else Ferry runs uses `Intl`.
 * The bundle makes each formatter when it is first used. The build fails when the package no longer
 * has exactly those two, so an upgrade is looked at again.
 */
const LAZY_LIST_FORMAT_HELPER =
  'const __ferryLazyListFormat = (...args) => { let made; return { format: (list) => (made ??= new Intl.ListFormat(...args)).format(list) }; };\n';

function lazyListFormats(source: string, where: string): string {
  const made = source.match(/new Intl\.ListFormat\(/g)?.length ?? 0;
  if (made !== 2) throw new Error(`${where}: expected 2 \`new Intl.ListFormat(\` to make lazy, found ${made} (scripts/bundle.ts, lazyListFormat)`);
  return LAZY_LIST_FORMAT_HELPER + source.replace(/new Intl\.ListFormat\(/g, '__ferryLazyListFormat(');
}

const lazyListFormat: Plugin = {
  name: 'lazy-list-format',
  setup(b) {
    b.onLoad({ filter: /[\\/]node_modules[\\/]@sindresorhus[\\/]is[\\/]distribution[\\/]index\.js$/ }, (args) => ({
      contents: lazyListFormats(readFileSync(args.path, 'utf8'), args.path),
      loader: 'js',
    }));
  },
};

/**
 * A dynamic import of a CommonJS package (`await import('http-proxy-agent')`): node gives the module
 * its named exports (`{ HttpProxyAgent }`), but in an esbuild bundle with code splitting the chunk it
 * loads exports only `default` (module.exports), so the name is undefined. The import is routed to
 * an ES module facade that re-exports module.exports's keys by name, read from the package at build
 * time, as node's own CommonJS lexer would find them.
 */
const namedDynamicCommonJs: Plugin = {
  name: 'named-dynamic-commonjs',
  setup(b) {
    b.onResolve({ filter: /^[^./]/ }, async (args) => {
      // Ours only: the dependencies' own dynamic imports are of ES modules (the AWS SDK's dist-es).
      if (args.kind !== 'dynamic-import' || args.namespace === 'cjs-facade' || args.path.startsWith('node:') || args.importer.includes('/node_modules/')) return undefined;
      const resolved = await b.resolve(args.path, { kind: 'import-statement', resolveDir: args.resolveDir, namespace: 'file' });
      if (resolved.errors.length > 0 || resolved.external || !commonJs(resolved.path)) return undefined;
      return { path: resolved.path, namespace: 'cjs-facade', pluginData: { specifier: args.path, resolveDir: args.resolveDir } };
    });
    b.onLoad({ filter: /.*/, namespace: 'cjs-facade' }, (args) => {
      const { specifier, resolveDir } = args.pluginData as { specifier: string; resolveDir: string };
      const names = Object.keys(createRequire(args.path)(args.path) as object).filter((k) => /^[A-Za-z_$][\w$]*$/.test(k) && k !== 'default');
      const from = JSON.stringify(specifier);
      return {
        // require(), not `import m from`: node's default is module.exports itself, __esModule or not.
        contents: [`const m = require(${from});`, 'export default m;', ...names.map((k) => `export const ${k} = m.${k};`)].join('\n'),
        loader: 'js',
        resolveDir,
      };
    });
  },
};

/** Whether node loads this file as CommonJS: .cjs, or .js under a package.json without "type": "module". */
function commonJs(file: string): boolean {
  if (file.endsWith('.cjs')) return true;
  if (!file.endsWith('.js')) return false;
  for (let dir = join(file, '..'); ; dir = join(dir, '..')) {
    try {
      return (JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { type?: string }).type !== 'module';
    } catch {
      if (dir === join(dir, '..')) return true;
    }
  }
}

/** The npm packages (folders under some node_modules/) that bundled files came from. */
function bundledPackages(inputs: readonly string[]): string[] {
  const roots = new Set<string>();
  for (const input of inputs) {
    const m = /^(.*node_modules\/(?:@[^/]+\/)?[^/]+)\//.exec(input);
    if (m?.[1]) roots.add(join(DIST, m[1]));
  }
  return [...roots].sort();
}

/**
 * The bundle replaces node_modules in the images, and with it the packages' own licence files: their
 * names, versions, licences and licence texts, in one file beside the bundle.
 */
function licenceText(packages: readonly string[]): string {
  const parts = packages.map((dir) => {
    const pkg = JSON.parse(readFileSync(join(dir, 'package.json'), 'utf8')) as { name?: string; version?: string; license?: string };
    const files = readdirSync(dir).filter((f) => /^(licen[cs]e|copying|notice)/i.test(f)).sort();
    const texts = files.map((f) => readFileSync(join(dir, f), 'utf8').trimEnd());
    const where = relative(join(DIST, '..'), dir);
    return [`${pkg.name ?? where}@${pkg.version ?? '?'} (${pkg.license ?? 'see below'}; ${where})`, ...(texts.length > 0 ? texts : ['(no licence file in the package)'])].join('\n\n');
  });
  return `Third-party packages bundled into dist/bundle/ (scripts/bundle.ts), ${packages.length} in all.\n\n${parts.join(`\n\n${'-'.repeat(72)}\n\n`)}\n`;
}

async function main(): Promise<void> {
  // Built beside OUT_DIR and moved in whole, so a failed build leaves the last one as it was. Replaces
  // only an earlier bundle (or nothing): OUT_DIR may be a mistyped path.
  if (existsSync(OUT) && readdirSync(OUT).length > 0 && !existsSync(join(OUT, 'manifest.json'))) {
    throw new Error(`${OUT} is not empty and holds no manifest.json: not a bundle, not replaced`);
  }
  const work = `${OUT}.tmp`;
  rmSync(work, { recursive: true, force: true });
  const result = await build({
    absWorkingDir: DIST,
    entryPoints: BUNDLE_ENTRIES.map((e) => ({ in: e, out: e.replace(/\.js$/, '') })),
    outdir: work,
    bundle: true,
    splitting: true,
    format: 'esm',
    platform: 'node',
    target: 'node24',
    chunkNames: 'chunks/[name]-[hash]',
    sourcemap: 'linked',
    metafile: true,
    logLevel: 'warning',
    legalComments: 'none',
    plugins: [requireHttp, lazyBuiltins, lazyZstdCheck, noHttp2Wrapper, lazyListFormat, namedDynamicCommonJs],
    // CommonJS dependencies (pino, prom-client, …) call require() for node's built-ins; an ES module
    // has no require, so each output file gets one (named so it cannot clash with bundled code).
    banner: { js: "import { createRequire as __ferryCreateRequire } from 'node:module'; const require = __ferryCreateRequire(import.meta.url);" },
  });
  // Files only: a plugin's modules are named `namespace:path`.
  const files = Object.keys(result.metafile.inputs).filter((p) => !/^[a-z0-9-]+:/.test(p));
  const inputs = files
    .filter((p) => !p.includes('node_modules/'))
    .map((p) => relative(DIST, join(DIST, p)))
    .sort();
  const packages = bundledPackages(files);
  writeFileSync(join(work, 'THIRD-PARTY-LICENSES.txt'), licenceText(packages));
  const manifest: BundleManifest = { entries: [...BUNDLE_ENTRIES], inputs };
  writeFileSync(join(work, 'manifest.json'), `${JSON.stringify(manifest, null, 1)}\n`);
  rmSync(OUT, { recursive: true, force: true });
  renameSync(work, OUT);
  const bytes = Object.entries(result.metafile.outputs)
    .filter(([p]) => p.endsWith('.js'))
    .reduce((sum, [, o]) => sum + o.bytes, 0);
  const outputs = Object.keys(result.metafile.outputs).filter((p) => p.endsWith('.js')).length;
  process.stdout.write(`bundle: ${BUNDLE_ENTRIES.length} entries, ${outputs} files, ${(bytes / 1048576).toFixed(1)} MiB in ${relative(process.cwd(), OUT) || OUT} (from ${inputs.length} dist files and ${packages.length} npm packages)\n`);
}

await main();
