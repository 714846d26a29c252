/**
 * Guest network throughput through the pod network, slirp (before, ADR 0005) against passt (after,
 * ADR 0011), in the same run: the test disk boots under TCG in a network namespace made here
 * (test/helpers/netns-guest.ts), the guest's busybox `nc` runs a sink (`wc -c`) or a `dd` source (started over
 * SSH), and a client in the namespace sends to / reads from the pod address. See bench/README.md,
 * "Guest network throughput". Needs root.
 *   npm run build && node dist/bench/net-throughput.js [MiB per transfer, default 64] [runs, default 3] [slirp,passt]
 */

import { execFileSync, spawn } from 'node:child_process';
import { chmodSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../test/helpers/ferry-process.js';
import { removeDir, tempDir } from '../test/helpers/fixtures.js';
import { guestVmi, launchInNetns, Netns, POD_IP, serialMarker, sshArgs, sshKeyPair, stopLauncher } from '../test/helpers/netns-guest.js';

const mib = Number(process.argv[2] ?? 64);
const runs = Number(process.argv[3] ?? 3);
const backends = (process.argv[4] ?? 'slirp,passt').split(',') as Array<'slirp' | 'passt'>;
const SINK_PORT = 5001;
const SOURCE_PORT = 5002;

/** The client, run inside the namespace: upload N bytes and wait for the guest to close, or read until EOF. */
const CLIENT = `
const net = require('node:net');
const [mode, host, port, bytes] = process.argv.slice(1);
const total = Number(bytes);
const t0 = process.hrtime.bigint();
let moved = 0;
let said = '';
const s = net.connect(Number(port), host, () => {
  // The source needs no input: close our side at once (passt 2023-03 sends a silent client nothing, ADR 0011).
  if (mode !== 'up') return s.end();
  const chunk = Buffer.alloc(1 << 16);
  const pump = () => { while (moved < total) { moved += chunk.length; if (!s.write(chunk)) return s.once('drain', pump); } s.end(); };
  pump();
});
s.on('data', (d) => { if (mode === 'down') moved += d.length; else said += d.toString(); });
s.setTimeout(120000, () => s.destroy(new Error('idle')));
s.on('error', (e) => { console.error(e.message); process.exit(1); });
s.on('close', () => { console.log(JSON.stringify({ bytes: moved, ms: Number(process.hrtime.bigint() - t0) / 1e6, said })); });
`;

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

interface Result {
  readonly backend: string;
  readonly up: number[];
  readonly down: number[];
}

async function retry<T>(what: string, fn: () => Promise<T>, attempts = 20): Promise<T> {
  for (let i = 1; ; i++) {
    try {
      return await fn();
    } catch (err) {
      if (i >= attempts) throw new Error(`${what}: ${(err as Error).message}`);
      console.error(`${what}, attempt ${i}: ${(err as Error).message.split('\n').slice(-3).join(' | ')}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

/** One transfer: the guest end over SSH, the client in the namespace; MiB/s. */
async function transfer(ns: Netns, key: string, mode: 'up' | 'down'): Promise<number> {
  const bytes = mib * 1024 * 1024;
  // Upload: the guest counts what it got (wc -c) and says so over the socket, so a connection that
  // reached no listener (slirp and passt accept before the guest does) does not count.
  const guest = mode === 'up' ? `nc -l -p ${SINK_PORT} -e wc -c` : `nc -l -p ${SOURCE_PORT} -e dd if=/dev/zero bs=65536 count=${bytes / 65536}`;
  const remote = spawn('nsenter', [`--net=${ns.netPath}`, '--', 'ssh', ...sshArgs(key, 22, POD_IP, guest)], { stdio: 'ignore' });
  try {
    // The guest's nc listens once SSH has run it: retry the connection until it is there.
    const ms = await retry(`${mode} transfer`, async () => {
      const out = await ns.exec(process.execPath, ['-e', CLIENT, mode, POD_IP, String(mode === 'up' ? SINK_PORT : SOURCE_PORT), String(bytes)], 180_000);
      const r = JSON.parse(out.trim().split('\n').pop()!) as { bytes: number; ms: number; said: string };
      if (mode === 'down' ? r.bytes < bytes : r.said.trim() !== String(bytes)) throw new Error(`${mode}: not all ${bytes} bytes arrived (${r.bytes} moved; the guest said ${JSON.stringify(r.said.slice(0, 200))})`);
      return r.ms;
    });
    return bytes / 1024 / 1024 / (ms / 1000);
  } finally {
    if (remote.exitCode === null) remote.kill('SIGKILL');
  }
}

async function measure(backend: 'slirp' | 'passt', dir: string, disk: string, key: { key: string; publicKey: string }): Promise<Result> {
  const ns = await Netns.create(1800);
  // Declared ports, so slirp forwards them too; passt forwards them anyway.
  const declared = `      interfaces:\n      - name: default\n        masquerade: {}\n        ports:\n        - port: 22\n        - port: ${SINK_PORT}\n        - port: ${SOURCE_PORT}\n`;
  const vmi = guestVmi(`net-${backend}`, `#cloud-config\nssh_authorized_keys:\n  - ${key.publicKey}`, declared).replace('  volumes:\n', '  networks:\n  - name: default\n    pod: {}\n  volumes:\n');
  const run = launchInNetns(ns, join(dir, backend), disk, vmi, ['--pod-network', backend]);
  try {
    await serialMarker(run, 'FERRY-SSH-OK', 240_000);
    const result: Result = { backend, up: [], down: [] };
    for (let i = 0; i < runs; i++) {
      result.up.push(await transfer(ns, key.key, 'up'));
      result.down.push(await transfer(ns, key.key, 'down'));
      console.log(`${backend} run ${i + 1}: host→guest ${result.up.at(-1)!.toFixed(1)} MiB/s, guest→host ${result.down.at(-1)!.toFixed(1)} MiB/s`);
    }
    return result;
  } finally {
    await stopLauncher(run);
    ns.close();
  }
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('needs root (unshare --net)');
  const disk = execFileSync('bash', [join(REPO_ROOT, 'scripts', 'make-boot-disk.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  const dir = tempDir('fnb-');
  chmodSync(dir, 0o755);
  try {
    const key = sshKeyPair(dir);
    const results: Result[] = [];
    for (const backend of backends) results.push(await measure(backend, dir, disk, key));
    console.log(`\n${mib} MiB per transfer, ${runs} runs, median MiB/s (TCG guest, virtio-net, 1 vCPU):`);
    console.log('| backend | host → guest | guest → host |');
    console.log('|---|---|---|');
    for (const r of results) console.log(`| ${r.backend} | ${median(r.up).toFixed(1)} | ${median(r.down).toFixed(1)} |`);
  } finally {
    removeDir(dir);
  }
}

await main();
