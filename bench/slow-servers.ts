/**
 * `ferry import` against the servers people point it at (issue #16, bench/README.md "Importer
 * against ordinary servers"): `python3 -m http.server` (no Range), a small Python server with
 * Range (bench/range-server.py), nginx, and the project's own test server; raw, qcow2, raw.gz and
 * raw.xz of the same payload, each against `curl` + the matching tool writing the same target.
 * Runs interleaved per row (ferry, [baseline ferry], reference, ferry, …), page cache dropped
 * before each, `sync` inside the timing; medians, and the median of the per-run ratios.
 * Run as root:
 *   npm run build && node dist/bench/slow-servers.js [runs] [MiB] [servers] [images]
 *   e.g. node dist/bench/slow-servers.js 3 512 python,range,nginx,node raw,qcow2,gz,xz
 * FERRY_BENCH_BASELINE=<other checkout>/bin/ferry.js adds that build's `ferry import` to each row.
 * bin/ferry.js runs the bundle `npm run build` makes (dist/bundle/); FERRY_BUNDLE=0 measures tsc output.
 */

import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { FERRY_BIN, REPO_ROOT } from '../test/helpers/ferry-process.js';
import { tempDir } from '../test/helpers/fixtures.js';
import { startServer, type TestServer } from '../test/helpers/http-server.js';
import { measure, median, type Sample } from './timing.js';
import { WORKER_NODE_OPTIONS } from '../src/contract/import-spec.js';

const MiB = 1024 * 1024;
const runs = Number(process.argv[2] ?? 3);
const sizeMiB = Number(process.argv[3] ?? 512);
const servers = (process.argv[4] ?? 'python,range,nginx,node').split(',');
const images = (process.argv[5] ?? 'raw,qcow2,gz,xz').split(',');
const baseline = process.env.FERRY_BENCH_BASELINE;
const dir = tempDir('ferry-bench-slow-');
const f = (n: string): string => join(dir, n);
/** FERRY_BENCH_WWW: a folder that already holds the four fixtures (made by `fixtures` below), reused. */
const reuse = process.env.FERRY_BENCH_WWW;
const www = reuse ?? f('www');
/** FERRY_BENCH_PORT: the Python servers and nginx listen on this port + 1, 2, 3 (two runs side by side). */
const port = Number(process.env.FERRY_BENCH_PORT ?? 18100);

const IMAGES: Record<string, { readonly file: string; readonly reference: (url: string, out: string) => string }> = {
  raw: { file: 'disk.raw', reference: (u, out) => `curl -sf -o ${out} ${u}` },
  qcow2: { file: 'disk.qcow2', reference: (u, out) => `curl -sf -o ${f('dl.qcow2')} ${u} && qemu-img convert -O raw ${f('dl.qcow2')} ${out} && rm ${f('dl.qcow2')}` },
  gz: { file: 'disk.raw.gz', reference: (u, out) => `curl -sf ${u} | gzip -dc > ${out}` },
  xz: { file: 'disk.raw.xz', reference: (u, out) => `curl -sf ${u} | xz -dc -T0 > ${out}` },
};

interface Server {
  readonly base: string;
  stop(): Promise<void>;
}

/** A child server, stopped by its PID. */
async function child(command: string, args: readonly string[], port: number): Promise<Server> {
  const proc: ChildProcess = spawn(command, args, { stdio: 'ignore' });
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i += 1) {
    try {
      execFileSync('curl', ['-sf', '-o', '/dev/null', '-r', '0-0', `${base}/disk.raw`]);
      break;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    base,
    stop: async () => {
      if (proc.exitCode !== null) return;
      const exited = new Promise((r) => proc.once('exit', r));
      proc.kill('SIGTERM');
      await exited;
    },
  };
}

async function startNamed(name: string): Promise<Server> {
  switch (name) {
    case 'python':
      return child('python3', ['-m', 'http.server', '--bind', '127.0.0.1', '--directory', www, String(port + 1)], port + 1);
    case 'range':
      return child('python3', [join(REPO_ROOT, 'bench', 'range-server.py'), www, String(port + 2)], port + 2);
    case 'nginx': {
      // One process (no master), so the PID we start is the server; everything under the temp dir.
      const prefix = f('nginx');
      mkdirSync(join(prefix, 'logs'), { recursive: true });
      writeFileSync(
        join(prefix, 'nginx.conf'),
        `daemon off; master_process off; worker_processes 1; pid ${prefix}/nginx.pid; error_log ${prefix}/logs/error.log;
events { worker_connections 64; }
http { access_log off; sendfile on; tcp_nopush on; types {} default_type application/octet-stream;
  client_body_temp_path ${prefix}/tmp; proxy_temp_path ${prefix}/tmp; fastcgi_temp_path ${prefix}/tmp; uwsgi_temp_path ${prefix}/tmp; scgi_temp_path ${prefix}/tmp;
  server { listen 127.0.0.1:${port + 3}; root ${www}; } }
`,
      );
      return child('nginx', ['-p', prefix, '-c', join(prefix, 'nginx.conf')], port + 3);
    }
    case 'node': {
      const server: TestServer = await startServer();
      for (const image of Object.values(IMAGES)) server.route(`/${image.file}`, { file: join(www, image.file) });
      return { base: server.url, stop: () => server.close() };
    }
    default:
      throw new Error(`unknown server ${name}`);
  }
}

function fixtures(): void {
  if (reuse) return;
  mkdirSync(www, { recursive: true });
  const raw = join(www, 'disk.raw');
  console.error(`fixtures: ${sizeMiB} MiB of /usr (a MiB of noise first), as raw, qcow2, gz -6, xz -3...`);
  // Real, compressible data; the noise first so the payload is not itself taken for a tar archive.
  execFileSync('sh', ['-c', `(head -c ${MiB} /dev/urandom; while tar cf - /usr 2>/dev/null; do :; done | head -c ${(sizeMiB - 1) * MiB}) > ${raw}`]);
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, join(www, 'disk.qcow2')]);
  execFileSync('sh', ['-c', `gzip -6 -c ${raw} > ${raw}.gz && xz -3 -T2 -c ${raw} > ${raw}.xz`]);
}

interface Row {
  readonly server: string;
  readonly image: string;
  readonly load: string;
  readonly ferry: Sample[];
  readonly base: Sample[];
  readonly reference: Sample[];
}

const fmt = (samples: readonly Sample[]): string => `${median(samples.map((s) => s.seconds)).toFixed(2)} (${samples.map((s) => s.seconds.toFixed(2)).join(', ')})`;
const rss = (samples: readonly Sample[]): number => Math.max(...samples.map((s) => s.peakRssMiB));
const cpu = (samples: readonly Sample[]): string => median(samples.map((s) => s.cpuSeconds)).toFixed(2);
const ratio = (a: readonly Sample[], b: readonly Sample[]): string => median(a.map((s, i) => s.seconds / (b[i]?.seconds ?? NaN))).toFixed(2);

async function main(): Promise<void> {
  fixtures();
  const out = f('out.img');
  const clean = (): void => ['out.img', 'dl.qcow2', 'scratch'].forEach((n) => rmSync(f(n), { force: true, recursive: true }));
  // The V8 heap settings an importer pod runs with (src/contract/import-spec.ts), so RSS is the pod's.
  const ferry = (bin: string, url: string): string => `NODE_OPTIONS='${WORKER_NODE_OPTIONS}' node ${bin} import --quiet --url ${url} --dest ${out} --scratch-dir ${f('scratch')}`;
  const rows: Row[] = [];
  for (const name of servers) {
    const server = await startNamed(name);
    try {
      for (const image of images) {
        const spec = IMAGES[image];
        if (!spec) throw new Error(`unknown image ${image}`);
        const url = `${server.base}/${spec.file}`;
        const row: Row = { server: name, image, load: loadavg()[0]?.toFixed(1) ?? '?', ferry: [], base: [], reference: [] };
        for (let i = 0; i < runs; i += 1) {
          row.ferry.push(await measure(ferry(FERRY_BIN, url)));
          // The first run's result is checked: every path must give the raw payload back.
          if (i === 0) execFileSync('cmp', ['-s', out, join(www, 'disk.raw')]);
          clean();
          if (baseline) {
            row.base.push(await measure(ferry(baseline, url)));
            clean();
          }
          row.reference.push(await measure(spec.reference(url, out)));
          if (i === 0) execFileSync('cmp', ['-s', out, join(www, 'disk.raw')]);
          clean();
        }
        rows.push(row);
        console.error(`${name} ${image}: ferry ${fmt(row.ferry)}${baseline ? `, baseline ${fmt(row.base)}` : ''}, reference ${fmt(row.reference)}, ratio ${ratio(row.ferry, row.reference)}, cpu ${cpu(row.ferry)} / ${cpu(row.reference)}, peak RSS MiB ${rss(row.ferry)} / ${rss(row.reference)} (load ${row.load})`);
      }
    } finally {
      await server.stop();
    }
  }
  console.log(`| server | image | ferry import s | ${baseline ? 'baseline s | ' : ''}reference s | ratio${baseline ? ' (baseline)' : ''} | peak RSS MiB ferry / ${baseline ? 'baseline / ' : ''}reference | CPU s ferry / ${baseline ? 'baseline / ' : ''}reference | load |`);
  console.log(`|---|---|---|${baseline ? '---|' : ''}---|---|---|---|---|`);
  for (const r of rows) {
    const b = baseline ? `${fmt(r.base)} | ` : '';
    const br = baseline ? ` (${ratio(r.base, r.reference)})` : '';
    const bm = baseline ? `${rss(r.base)} / ` : '';
    console.log(`| ${r.server} | ${r.image} | ${fmt(r.ferry)} | ${b}${fmt(r.reference)} | ${ratio(r.ferry, r.reference)}${br} | ${rss(r.ferry)} / ${bm}${rss(r.reference)} | ${cpu(r.ferry)} / ${baseline ? `${cpu(r.base)} / ` : ''}${cpu(r.reference)} | ${r.load} |`);
  }
  rmSync(dir, { recursive: true, force: true });
}

main().catch((err: unknown) => {
  console.error(err);
  rmSync(dir, { recursive: true, force: true });
  process.exit(1);
});
