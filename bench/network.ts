/**
 * The importer's download strategies across emulated wide-area links (see bench/README.md,
 * "Importer across a network"): what `--connections` should default to, and whether reading a
 * qcow2 in place over HTTP ranges still beats download-then-convert when every request costs a
 * round trip. The links are emulated by bench/wan-proxy.ts (this kernel has no netem).
 * Run as root (it drops the page cache between runs):
 *   npm run build && node dist/bench/network.js [runs] [scenario,...] [contender filter]
 */

import { spawn } from 'node:child_process';
import { rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { FERRY_BIN } from '../test/helpers/ferry-process.js';
import { sh, tempDir } from '../test/helpers/fixtures.js';
import { startServer } from '../test/helpers/http-server.js';
import { measure, median } from './timing.js';
import { startWanProxy, type WanOptions } from './wan-proxy.js';

const runs = Number(process.argv[2] ?? 3);
const MB = 1e6;
const MiB = 1024 * 1024;

const SCENARIOS: Record<string, { readonly title: string; readonly link: WanOptions }> = {
  lan: { title: '1 Gbit/s LAN, no added delay', link: { rttMs: 0, windowBytes: 3 * MiB, linkBytesPerSec: 125 * MB } },
  regional: { title: '1 Gbit/s, 10 ms RTT', link: { rttMs: 10, windowBytes: 3 * MiB, linkBytesPerSec: 125 * MB } },
  far: { title: '1 Gbit/s, 100 ms RTT, 3 MiB window (~31 MB/s per connection)', link: { rttMs: 100, windowBytes: 3 * MiB, linkBytesPerSec: 125 * MB } },
  store: {
    title: 'object store: 10 ms RTT, 50 MB/s per connection, 2 Gbit/s link',
    link: { rttMs: 10, windowBytes: 3 * MiB, perConnectionBytesPerSec: 50 * MB, linkBytesPerSec: 250 * MB },
  },
};
const chosen = (process.argv[3] ?? Object.keys(SCENARIOS).join(',')).split(',');

const dir = tempDir('ferry-bench-net-');
const f = (n: string): string => join(dir, n);

interface Contender {
  readonly label: string;
  readonly command: (base: string) => string;
  /** Checks the result of the first run. */
  readonly check: () => void;
}

/** Median request-to-first-byte time of small ranged GETs on one kept-alive connection (curl). */
async function requestLatencyMs(url: string): Promise<number> {
  const args = ['-r', '0-4095', '-w', '%{time_pretransfer} %{time_starttransfer}\\n', ...Array.from({ length: 9 }, () => ['-o', '/dev/null', url]).flat()];
  const out = await new Promise<string>((resolve, reject) => {
    const child = spawn('curl', ['-s', ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let text = '';
    child.stdout.on('data', (d: Buffer) => (text += d.toString()));
    child.on('close', (code) => (code === 0 ? resolve(text) : reject(new Error(`curl exited ${code}`))));
  });
  const samples = out.trim().split('\n').slice(1).map((line) => {
    const [pre, first] = line.split(' ').map(Number);
    return ((first ?? NaN) - (pre ?? NaN)) * 1000;
  });
  return median(samples);
}

async function main(): Promise<void> {
  console.error('fixtures: 512 MiB random raw, its zstd -1, qcow2 1 GiB virtual with the same 512 MiB...');
  sh('dd', ['if=/dev/urandom', `of=${f('disk.raw')}`, 'bs=4M', 'count=128', 'status=none']);
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', f('disk.qcow2'), '1G']);
  sh('qemu-io', ['-c', `write -s ${f('disk.raw')} 256M 512M`, f('disk.qcow2')]);
  sh('zstd', ['-q', '-1', '-T2', f('disk.raw'), '-o', f('disk.raw.zst')]);
  const server = await startServer();
  server.route('/disk.raw', { file: f('disk.raw') });
  server.route('/disk.qcow2', { file: f('disk.qcow2') });
  server.route('/disk.raw.zst', { file: f('disk.raw.zst') });
  const ferry = (base: string, name: string, extra = ''): string =>
    `node ${FERRY_BIN} import --quiet --url ${base}/${name} --dest ${f('out.img')} --scratch-dir ${f('scratch')} ${extra}`;
  const sameRaw = (): void => void sh('cmp', ['-s', f('out.img'), f('disk.raw')]);
  const sameQcow2 = (): void => void sh('qemu-img', ['compare', '-q', '-F', 'qcow2', '-f', 'raw', f('out.img'), f('disk.qcow2')]);
  const contenders: Contender[] = [
    { label: 'raw: ferry import (default, `--connections auto`)', command: (b) => ferry(b, 'disk.raw'), check: sameRaw },
    { label: 'raw: ferry import --connections 1 (nbdkit + qemu-img)', command: (b) => ferry(b, 'disk.raw', '--connections 1'), check: sameRaw },
    ...[2, 4, 8].map((n) => ({ label: `raw: ferry import --connections ${n}`, command: (b: string) => ferry(b, 'disk.raw', `--connections ${n}`), check: sameRaw })),
    { label: 'raw: `curl -o`', command: (b) => `curl -s -o ${f('out.img')} ${b}/disk.raw`, check: sameRaw },
    { label: 'raw.zst: ferry import (default, `--connections auto`)', command: (b) => ferry(b, 'disk.raw.zst'), check: sameRaw },
    { label: 'raw.zst: ferry import --connections 1', command: (b) => ferry(b, 'disk.raw.zst', '--connections 1'), check: sameRaw },
    { label: 'raw.zst: `curl | zstd -dc > f`', command: (b) => `curl -s ${b}/disk.raw.zst | zstd -dcq > ${f('out.img')}`, check: sameRaw },
    { label: 'qcow2: ferry import (default, `--connections auto`)', command: (b) => ferry(b, 'disk.qcow2'), check: sameQcow2 },
    { label: 'qcow2: ferry import --connections 1 (read in place through nbdkit)', command: (b) => ferry(b, 'disk.qcow2', '--connections 1'), check: sameQcow2 },
    { label: 'qcow2: ferry import --connections 1 --via-scratch (one stream to scratch)', command: (b) => ferry(b, 'disk.qcow2', '--connections 1 --via-scratch'), check: sameQcow2 },
    { label: 'qcow2: ferry import --connections 4 (ranges to scratch)', command: (b) => ferry(b, 'disk.qcow2', '--connections 4'), check: sameQcow2 },
    { label: 'qcow2: `curl -o` + `qemu-img convert`', command: (b) => `curl -s -o ${f('dl.qcow2')} ${b}/disk.qcow2 && qemu-img convert -O raw ${f('dl.qcow2')} ${f('out.img')}`, check: sameQcow2 },
  ];
  const only = process.argv[4];
  if (only !== undefined) contenders.splice(0, contenders.length, ...contenders.filter((c) => c.label.startsWith(only)));
  const clean = (): void => ['out.img', 'dl.qcow2', 'scratch'].forEach((n) => rmSync(f(n), { recursive: true, force: true }));
  const port = Number(new URL(server.url).port);
  const rawMB = statSync(f('disk.raw')).size / MB;

  for (const name of chosen) {
    const scenario = SCENARIOS[name];
    if (!scenario) throw new Error(`unknown scenario ${name}; known: ${Object.keys(SCENARIOS).join(', ')}`);
    const proxy = await startWanProxy(port, scenario.link);
    const base = `http://127.0.0.1:${proxy.port}`;
    const latency = await requestLatencyMs(`${base}/disk.raw`);
    console.error(`[${name}] request to first byte on a warm connection: ${latency.toFixed(1)} ms`);
    const rows = contenders.map((c) => ({ c, seconds: [] as number[], rss: [] as number[], connections: 0 }));
    try {
      // Interleaved, so drift on the shared machine hits every contender alike.
      for (let run = 0; run < runs; run += 1) {
        for (const row of rows) {
          const before = proxy.connections();
          const sample = await measure(row.c.command(base));
          if (run === 0) row.c.check();
          clean();
          row.seconds.push(sample.seconds);
          row.rss.push(sample.peakRssMiB);
          row.connections = proxy.connections() - before;
          console.error(`[${name}] ${row.c.label}: ${sample.seconds.toFixed(2)} s, ${row.connections} TCP connections`);
        }
      }
    } finally {
      await proxy.close();
    }
    console.log(`\n### ${scenario.title} (measured: ${latency.toFixed(1)} ms from request to first byte)\n`);
    console.log('| contender | median s (runs) | MB/s of the 512 MiB of data | TCP connections | peak RSS MiB |');
    console.log('|---|---|---|---|---|');
    for (const r of rows) {
      const s = median(r.seconds);
      console.log(`| ${r.c.label.replaceAll('|', '\\|')} | ${s.toFixed(2)} (${r.seconds.map((x) => x.toFixed(2)).join(', ')}) | ${(rawMB / s).toFixed(0)} | ${r.connections} | ${median(r.rss)} |`);
    }
  }
  await server.close();
  rmSync(dir, { recursive: true, force: true });
}

main().catch((err: unknown) => {
  console.error(err);
  rmSync(dir, { recursive: true, force: true });
  process.exit(1);
});
