/**
 * Importer benchmarks against the physical limit, side by side in one run (see bench/README.md).
 * Run as root (it drops the page cache between runs): npm run build && node dist/bench/importer.js [runs]
 * FERRY_BENCH_BASELINE=<other checkout>/bin/ferry.js adds, after each `ferry import` row, the same
 * import by that build, its runs interleaved with this build's (A, B, A, B, …), so a change is
 * compared with what it changed under the same load.
 */

import { execFileSync } from 'node:child_process';
import { rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { FERRY_BIN } from '../test/helpers/ferry-process.js';
import { sh, tempDir } from '../test/helpers/fixtures.js';
import { startServer, type TestServer } from '../test/helpers/http-server.js';
import { measure, median, type Sample } from './timing.js';

const MiB = 1024 * 1024;
const runs = Number(process.argv[2] ?? 3);
/** Which parts to run, e.g. "1234" (all) or "24". */
const sections = process.argv[3] ?? '1234';
const baseline = process.env.FERRY_BENCH_BASELINE;
const dir = tempDir('ferry-bench-');
const f = (n: string): string => join(dir, n);

async function series(label: string, command: () => string, env: NodeJS.ProcessEnv = {}, cleanup: () => void = () => undefined): Promise<{ label: string; seconds: number; rss: number; all: string }> {
  const samples: Sample[] = [];
  for (let i = 0; i < runs; i += 1) {
    samples.push(await measure(command(), env));
    cleanup();
  }
  const row = { label, seconds: median(samples.map((s) => s.seconds)), rss: median(samples.map((s) => s.peakRssMiB)), all: samples.map((s) => s.seconds.toFixed(2)).join(', ') };
  console.error(`${label}: ${row.seconds.toFixed(2)} s (runs ${row.all}), peak RSS ${row.rss} MiB`);
  return row;
}

const ferryWith = (bin: string, url: string, dest: string, extra = ''): string => `node ${bin} import --quiet --url ${url} --dest ${dest} --scratch-dir ${f('scratch')} ${extra}`;
const ferry = (url: string, dest: string, extra = ''): string => ferryWith(FERRY_BIN, url, dest, extra);

/** A `ferry import` row, and with FERRY_BENCH_BASELINE the same import by the baseline build, interleaved. */
async function ferrySeries(add: Add, group: string, label: string, url: string, dest: string, extra: string, cleanup: () => void): Promise<void> {
  if (!baseline) return add(group, series(label, () => ferry(url, dest, extra), {}, cleanup));
  const mine: Sample[] = [];
  const theirs: Sample[] = [];
  for (let i = 0; i < runs; i += 1) {
    mine.push(await measure(ferry(url, dest, extra), {}));
    cleanup();
    theirs.push(await measure(ferryWith(baseline, url, dest, extra), {}));
    cleanup();
  }
  for (const [l, samples] of [[label, mine], [`${label} (baseline)`, theirs]] as const) {
    const row = { label: l, seconds: median(samples.map((x) => x.seconds)), rss: median(samples.map((x) => x.peakRssMiB)), all: samples.map((x) => x.seconds.toFixed(2)).join(', ') };
    console.error(`${l}: ${row.seconds.toFixed(2)} s (runs ${row.all}), peak RSS ${row.rss} MiB`);
    await add(group, Promise.resolve(row));
  }
}

async function main(): Promise<void> {
  const server: TestServer = await startServer();
  const rows: Array<{ group: string; label: string; seconds: number; rss: number; all: string }> = [];
  const add = async (group: string, r: ReturnType<typeof series>): Promise<void> => void rows.push({ group, ...(await r) });
  const clean = (...names: string[]) => () => names.forEach((n) => rmSync(f(n), { force: true, recursive: true }));

  sh('dd', ['if=/dev/urandom', `of=${f('rand512')}`, 'bs=4M', 'count=128', 'status=none']);
  if (sections.includes('1')) await qcow2Section(server, add, clean);
  if (sections.includes('2')) await compressedSection(server, add, clean);
  if (sections.includes('3') || sections.includes('4')) await bigSection(server, add, clean);
  await server.close();
  console.log('| case | contender | median s (runs) | peak RSS MiB |');
  console.log('|---|---|---|---|');
  for (const r of rows) console.log(`| ${r.group} | ${r.label} | ${r.seconds.toFixed(2)} (${r.all}) | ${r.rss} |`);
  rmSync(dir, { recursive: true, force: true });
}

type Add = (group: string, r: ReturnType<typeof series>) => Promise<void>;
type Clean = (...names: string[]) => () => void;

async function qcow2Section(server: TestServer, add: Add, clean: Clean): Promise<void> {
  // 1. qcow2, 1 GiB virtual, 512 MiB of random data.
  console.error('fixtures: qcow2 (1 GiB virtual, 512 MiB random)...');
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', f('disk.qcow2'), '1G']);
  sh('qemu-io', ['-c', `write -s ${f('rand512')} 256M 512M`, f('disk.qcow2')]);
  server.route('/disk.qcow2', { file: f('disk.qcow2') });
  const q = `${server.url}/disk.qcow2`;
  await ferrySeries(add, 'qcow2 → raw', 'ferry import (nbdkit, no scratch)', q, f('out.img'), '', clean('out.img'));
  await ferrySeries(add, 'qcow2 → raw', 'ferry import --via-scratch (download, then convert)', q, f('out.img'), '--via-scratch', clean('out.img'));
  await add('qcow2 → raw', series('curl -o + qemu-img convert -O raw', () => `curl -s -o ${f('dl.qcow2')} ${q} && qemu-img convert -O raw ${f('dl.qcow2')} ${f('out.img')}`, {}, clean('dl.qcow2', 'out.img')));
  sh('qemu-img', ['convert', '-O', 'raw', f('disk.qcow2'), f('ref.img')]);
  await add('qcow2 → raw', series('cp of the raw result (disk limit)', () => `cp ${f('ref.img')} ${f('out.img')}`, {}, clean('out.img')));
  rmSync(f('ref.img'));
}

async function compressedSection(server: TestServer, add: Add, clean: Clean): Promise<void> {
  // 2. Compressed raw: a realistic, compressible 512 MiB (the start of a tar of /usr).
  console.error('fixtures: 512 MiB of /usr, gz/xz/zst...');
  // A MiB of boot-sector-like noise first, so the payload is not itself taken for a tar archive.
  execFileSync('sh', ['-c', `(head -c ${MiB} /dev/urandom; tar cf - /usr 2>/dev/null | head -c ${511 * MiB}) > ${f('real.raw')}`]);
  execFileSync('sh', ['-c', `gzip -6 -c ${f('real.raw')} > ${f('real.raw.gz')}`]);
  execFileSync('sh', ['-c', `xz -3 -T2 -c ${f('real.raw')} > ${f('real.raw.xz')}`]);
  execFileSync('sh', ['-c', `zstd -q -3 -T2 -c ${f('real.raw')} > ${f('real.raw.zst')}`]);
  for (const [ext, tool] of [['gz', 'gzip'], ['xz', 'xz'], ['zst', 'zstd']] as const) {
    server.route(`/real.raw.${ext}`, { file: f(`real.raw.${ext}`) });
    const u = `${server.url}/real.raw.${ext}`;
    await ferrySeries(add, `raw.${ext} → raw`, 'ferry import', u, f('out.img'), '', clean('out.img'));
    await add(`raw.${ext} → raw`, series(`curl | ${tool} -dc > f`, () => `curl -s ${u} | ${tool} -dc > ${f('out.img')}`, {}, clean('out.img')));
  }
  // The same kind of payload, four times bigger: what is fixed cost (start-up) and what is per byte.
  console.error('fixtures: 2 GiB of /usr, zst...');
  execFileSync('sh', ['-c', `(head -c ${MiB} /dev/urandom; tar cf - /usr 2>/dev/null | head -c ${2047 * MiB}) | zstd -q -3 -T2 -c > ${f('real2g.raw.zst')}`]);
  server.route('/real2g.raw.zst', { file: f('real2g.raw.zst') });
  const big = `${server.url}/real2g.raw.zst`;
  await ferrySeries(add, '2 GiB raw.zst → raw', 'ferry import', big, f('out.img'), '', clean('out.img'));
  await add('2 GiB raw.zst → raw', series('curl | zstd -dc > f', () => `curl -s ${big} | zstd -dc > ${f('out.img')}`, {}, clean('out.img')));
  rmSync(f('real2g.raw.zst'));
}

async function bigSection(server: TestServer, add: Add, clean: Clean): Promise<void> {
  // 3. Peak RSS of the importer process for big images.
  console.error('fixtures: 10 GiB sparse qcow2, 2 GiB random raw...');
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', f('big.qcow2'), '10G']);
  sh('qemu-io', ['-c', `write -s ${f('rand512')} 1G 256M`, '-c', `write -P 0x5a 6G 256M`, f('big.qcow2')]);
  server.route('/big.qcow2', { file: f('big.qcow2') });
  execFileSync('sh', ['-c', `cat ${f('rand512')} ${f('rand512')} ${f('rand512')} ${f('rand512')} > ${f('rand2g.raw')}`]);
  server.route('/rand2g.raw', { file: f('rand2g.raw') });
  await ferrySeries(add, 'peak RSS', 'ferry import 10 GiB-virtual qcow2 (nbdkit)', `${server.url}/big.qcow2`, f('out.img'), '', clean('out.img'));
  await ferrySeries(add, 'peak RSS', 'ferry import 2 GiB random raw', `${server.url}/rand2g.raw`, f('out.img'), '', clean('out.img'));
  await ferrySeries(add, 'peak RSS', 'ferry import 2 GiB random raw --connections 4', `${server.url}/rand2g.raw`, f('out.img'), '--connections 4', clean('out.img'));
  await add('peak RSS', series('curl -o (same server, same file)', () => `curl -s -o ${f('out.img')} ${server.url}/rand2g.raw`, {}, clean('out.img')));

  // 4. A server that drops the connection every 256 MiB.
  server.route('/cut.raw', { file: f('rand2g.raw'), closeAfter: 256 * MiB });
  const before = server.sent.get('/cut.raw') ?? 0;
  await add('resume', series('ferry import 2 GiB raw, cut every 256 MiB', () => ferry(`${server.url}/cut.raw`, f('out.img')), {}, clean('out.img')));
  const sentPerRun = ((server.sent.get('/cut.raw') ?? 0) - before) / runs;
  const size = statSync(f('rand2g.raw')).size;
  console.error(`resume: bytes sent per run ${sentPerRun} = ${(sentPerRun / size).toFixed(3)} × the image`);
  console.log(`resume: ${(sentPerRun / size).toFixed(3)} × the image size sent per run`);
}

main().catch((err: unknown) => {
  console.error(err);
  rmSync(dir, { recursive: true, force: true });
  process.exit(1);
});
