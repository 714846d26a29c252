/**
 * VM boot: `ferry launcher` (process start → guest marker on the console) against bare QEMU on the
 * same disk in the same run (see bench/README.md, "VM boot").
 *   npm run build && node dist/bench/vm-boot.js [runs]
 */

import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { FERRY_BIN, REPO_ROOT } from '../test/helpers/ferry-process.js';
import { removeDir, tempDir } from '../test/helpers/fixtures.js';

const runs = Number(process.argv[2] ?? 3);
const MARKER = 'FERRY-BOOT-OK';
const dir = tempDir('fb-');
chmodSync(dir, 0o755);
const disk = execFileSync('bash', [join(REPO_ROOT, 'scripts', 'make-boot-disk.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();

interface Sample {
  readonly marker: number;
  readonly exit: number;
  readonly steps?: Record<string, number>;
}

function median(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

function seconds(ms: number): string {
  return (ms / 1000).toFixed(2);
}

/** Bare QEMU, as in the infra probe: the marker on stdout, then QEMU's exit. */
function bare(): Promise<Sample> {
  const image = join(dir, 'bare.raw');
  copyFileSync(disk, image);
  const t0 = performance.now();
  const child = spawn('qemu-system-x86_64', ['-accel', 'tcg', '-m', '256', '-nographic', '-no-reboot', '-drive', `file=${image},format=raw,if=virtio`], { stdio: ['ignore', 'pipe', 'ignore'] });
  let text = '';
  let marker = 0;
  child.stdout.on('data', (d: Buffer) => {
    text += d.toString('latin1');
    if (!marker && text.includes(MARKER)) marker = performance.now() - t0;
  });
  return new Promise((resolve) => child.on('close', () => resolve({ marker, exit: performance.now() - t0 })));
}

/** `ferry launcher` on a pod-like layout; the marker read through its console socket. */
function launcher(name: string, args: readonly string[]): Promise<Sample> {
  const root = join(dir, name);
  removeDir(root);
  mkdirSync(join(root, 'volumes', 'rootdisk'), { recursive: true });
  copyFileSync(disk, join(root, 'volumes', 'rootdisk', 'disk.img'));
  writeFileSync(
    join(root, 'vmi.yaml'),
    `apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: bench, namespace: bench}
spec:
  domain:
    memory: {guest: 256Mi}
    devices:
      disks: [{name: rootdisk, bootOrder: 1, disk: {bus: virtio}}]
  volumes: [{name: rootdisk, persistentVolumeClaim: {claimName: rootdisk}}]
`,
  );
  const t0 = performance.now();
  const child = spawn(process.execPath, [FERRY_BIN, 'launcher', '--vmi', join(root, 'vmi.yaml'), '--volumes-dir', join(root, 'volumes'), '--runtime-dir', join(root, 'run'), '--status-port', '0', '--status-address', '127.0.0.1', ...args], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  let marker = 0;
  const privateDir = join(root, 'run', 'private');
  const watch = setInterval(() => {
    if (!existsSync(privateDir)) return;
    const sock = readdirSync(privateDir).map((d) => join(privateDir, d, 'console.sock')).find((p) => existsSync(p));
    if (!sock) return;
    clearInterval(watch);
    let text = '';
    const socket = createConnection(sock);
    socket.on('error', () => undefined);
    socket.on('data', (d: Buffer) => {
      text += d.toString('latin1');
      if (!marker && text.includes(MARKER)) marker = performance.now() - t0;
    });
  }, 10);
  return new Promise((resolve) =>
    child.on('close', (code) => {
      clearInterval(watch);
      if (code !== 0) console.error(`launcher exited ${code}:\n${out.slice(-2000)}`);
      const last = out.trim().split('\n').map((l) => JSON.parse(l) as { timings?: Record<string, number> }).findLast((l) => l.timings);
      resolve({ marker, exit: performance.now() - t0, ...(last?.timings ? { steps: last.timings } : {}) });
    }),
  );
}

async function main(): Promise<void> {
  const warm = join(dir, 'cache-warm');
  const rows: Array<{ label: string; samples: Sample[] }> = [
    { label: 'bare qemu-system-x86_64 -accel tcg', samples: [] },
    { label: 'ferry launcher --accel tcg (capability cache warm)', samples: [] },
    { label: 'ferry launcher --accel auto --allow-emulation (KVM probe, warm)', samples: [] },
  ];
  // Warm the capability cache once (not counted), then alternate the contenders run by run.
  await launcher('warmup', ['--accel', 'tcg', '--cache-dir', warm]);
  for (let i = 0; i < runs; i++) {
    rows[0]!.samples.push(await bare());
    rows[1]!.samples.push(await launcher(`tcg${i}`, ['--accel', 'tcg', '--cache-dir', warm]));
    rows[2]!.samples.push(await launcher(`auto${i}`, ['--accel', 'auto', '--allow-emulation', '--cache-dir', warm]));
  }
  const cold = { label: 'ferry launcher --accel tcg (capability cache cold, 1 run)', samples: [await launcher('cold', ['--accel', 'tcg', '--cache-dir', join(dir, 'cache-cold')])] };
  rows.push(cold);

  console.log(`\n${runs} runs, ${new Date().toISOString()}, load ${execFileSync('cat', ['/proc/loadavg'], { encoding: 'utf8' }).split(' ').slice(0, 3).join(' ')}\n`);
  console.log('| contender | marker s, median (runs) | exit s, median | launcher steps, median ms |');
  console.log('|---|---|---|---|');
  for (const row of rows) {
    const markers = row.samples.map((s) => s.marker);
    const exits = row.samples.map((s) => s.exit);
    const steps = row.samples[0]?.steps
      ? Object.keys(row.samples[0].steps)
          .map((k) => `${k} ${Math.round(median(row.samples.map((s) => s.steps?.[k] ?? 0)))}`)
          .join(', ')
      : '';
    console.log(`| ${row.label} | ${seconds(median(markers))} (${markers.map(seconds).join(', ')}) | ${seconds(median(exits))} | ${steps} |`);
  }
  removeDir(dir);
}

await main();
