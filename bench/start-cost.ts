/**
 * The fixed cost of one `ferry import` (issue #16, bench/README.md "Importer against ordinary
 * servers", "Third pass"): CPU seconds (user + system, children included) of `ferry import --help`
 * and of importing a small raw and qcow2 image from `python3 -m http.server` on loopback, page
 * cache dropped before each run, interleaved between
 *   tsc     bin/ferry.js running tsc's output (FERRY_BUNDLE=0), what main shipped before the bundle;
 *   bundle  bin/ferry.js, package.json and a fresh bundle (scripts/bundle.ts) in a folder without
 *           node_modules, as the images hold them;
 *   baseline FERRY_BENCH_BASELINE=<other checkout>/bin/ferry.js, when set.
 * Run as root (drop_caches):
 *   npm run build && node dist/bench/start-cost.js [runs] [MiB]      (default 5 runs, 8 MiB)
 */

import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync, rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { FERRY_BIN, freePort, REPO_ROOT } from '../test/helpers/ferry-process.js';
import { tempDir } from '../test/helpers/fixtures.js';
import { measure, median, type Sample } from './timing.js';

const MiB = 1024 * 1024;
const runs = Number(process.argv[2] ?? 5);
const sizeMiB = Number(process.argv[3] ?? 8);
const dir = tempDir('ferry-bench-start-');
const f = (n: string): string => join(dir, n);

function install(): string {
  const root = f('opt-ferry');
  mkdirSync(join(root, 'bin'), { recursive: true });
  copyFileSync(FERRY_BIN, join(root, 'bin', 'ferry.js'));
  copyFileSync(join(REPO_ROOT, 'package.json'), join(root, 'package.json'));
  execFileSync(process.execPath, [join(REPO_ROOT, 'dist', 'scripts', 'bundle.js'), join(root, 'dist', 'bundle')], { stdio: 'inherit' });
  return join(root, 'bin', 'ferry.js');
}

async function main(): Promise<void> {
  const www = f('www');
  mkdirSync(www);
  execFileSync('sh', ['-c', `head -c ${sizeMiB * MiB} /dev/urandom > ${www}/disk.raw`]);
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', `${www}/disk.raw`, `${www}/disk.qcow2`]);
  const port = await freePort();
  const server = spawn('python3', ['-m', 'http.server', '--bind', '127.0.0.1', '--directory', www, String(port)], { stdio: 'ignore' });
  try {
    const base = `http://127.0.0.1:${port}`;
    for (let i = 0; i < 100; i += 1) {
      try {
        execFileSync('curl', ['-sf', '-o', '/dev/null', `${base}/disk.raw`]);
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 100));
      }
    }
    const bundled = install();
    const contenders: Array<[string, string, NodeJS.ProcessEnv]> = [
      ['tsc', FERRY_BIN, { FERRY_BUNDLE: '0' }],
      ['bundle', bundled, { FERRY_BUNDLE: '1' }],
      ...(process.env.FERRY_BENCH_BASELINE ? [['baseline', process.env.FERRY_BENCH_BASELINE, {}] as [string, string, NodeJS.ProcessEnv]] : []),
    ];
    const out = f('out.img');
    const commands: Array<[string, string]> = [
      ['import --help', 'import --help 2> /dev/null'],
      [`raw ${sizeMiB} MiB`, `import --quiet --url ${base}/disk.raw --dest ${out}`],
      [`qcow2 ${sizeMiB} MiB`, `import --quiet --url ${base}/disk.qcow2 --dest ${out} --scratch-dir ${f('scratch')}`],
    ];
    console.log(`| command | ${contenders.map(([n]) => `${n} CPU-s median (runs)`).join(' | ')} | load |`);
    console.log(`|---|${contenders.map(() => '---|').join('')}---|`);
    for (const [what, args] of commands) {
      const load = loadavg()[0]?.toFixed(1) ?? '?';
      const samples = new Map<string, Sample[]>(contenders.map(([n]) => [n, []]));
      for (let i = 0; i < runs; i += 1) {
        for (const [name, bin, env] of contenders) {
          samples.get(name)?.push(await measure(`node ${bin} ${args}`, env));
          if (what !== 'import --help' && i === 0) execFileSync('cmp', ['-s', out, `${www}/disk.raw`]);
          rmSync(out, { force: true });
        }
      }
      const cell = (s: readonly Sample[]): string => `${median(s.map((x) => x.cpuSeconds)).toFixed(2)} (${s.map((x) => x.cpuSeconds.toFixed(2)).join(', ')})`;
      console.log(`| ${what} | ${contenders.map(([n]) => cell(samples.get(n) ?? [])).join(' | ')} | ${load} |`);
    }
  } finally {
    if (server.exitCode === null && server.signalCode === null) {
      const exited = new Promise((r) => server.once('exit', r));
      server.kill('SIGTERM');
      await exited;
    }
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
