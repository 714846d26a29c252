/**
 * A launcher in a network namespace the test creates, standing in for the launcher pod's: a veth
 * pair inside it (no dummy interfaces on this machine) carries the "pod address" and a default route,
 * as a CNI plugin would set up; nothing appears in the machine's own namespace. The test reaches the
 * guest there through `nsenter --net` (ssh, nc). Needs root (unshare --net). Used by
 * test/component/launcher-network.test.ts and bench/net-throughput.ts.
 */

import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdirSync, readdirSync, readFileSync, readlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { FERRY_BIN } from './ferry-process.js';

const run = promisify(execFile);

/** The pod's address and its gateway inside the namespace (the gateway answers nothing). */
export const POD_IP = '10.251.0.2';
const POD_GATEWAY = '10.251.0.1';

export class Netns {
  private inode = '';

  private constructor(private readonly holder: ChildProcess) {}

  get pid(): number {
    return this.holder.pid ?? -1;
  }

  /** `--net=` path for nsenter. */
  get netPath(): string {
    return `/proc/${this.pid}/ns/net`;
  }

  /** A new namespace held by a `sleep` (stopped by PID in `close`), with the pod's address and route. */
  static async create(lifetimeSeconds = 900): Promise<Netns> {
    const holder = spawn('unshare', ['--net', '--', 'sleep', String(lifetimeSeconds)], { stdio: 'ignore' });
    const ns = new Netns(holder);
    // unshare execs sleep once the namespace exists: its ns link then differs from ours.
    const own = execFileSync('readlink', ['/proc/self/ns/net'], { encoding: 'utf8' }).trim();
    for (let i = 0; i < 100; i++) {
      const link = await run('readlink', [ns.netPath]).then((r) => r.stdout.trim(), () => '');
      if (link !== '' && link !== own) {
        ns.inode = link;
        break;
      }
      if (i === 99) throw new Error('the network namespace did not appear');
      await new Promise((r) => setTimeout(r, 20));
    }
    for (const cmd of [
      ['ip', 'link', 'add', 'pod0', 'type', 'veth', 'peer', 'name', 'pod1'],
      ['ip', 'addr', 'add', `${POD_IP}/24`, 'dev', 'pod0'],
      ['ip', 'link', 'set', 'lo', 'up'],
      ['ip', 'link', 'set', 'pod0', 'up'],
      ['ip', 'link', 'set', 'pod1', 'up'],
      ['ip', 'route', 'add', 'default', 'via', POD_GATEWAY, 'dev', 'pod0'],
      // The launcher pod's "safe" sysctl: passt binds the pod's ports below 1024 without a capability.
      ['sysctl', '-qw', 'net.ipv4.ip_unprivileged_port_start=0'],
    ]) {
      await ns.exec(cmd[0]!, cmd.slice(1));
    }
    return ns;
  }

  /** Runs a program in the namespace; rejects on a non-zero exit or after `timeoutMs`. */
  async exec(file: string, args: readonly string[], timeoutMs = 30_000): Promise<string> {
    const { stdout } = await run('nsenter', [`--net=${this.netPath}`, '--', file, ...args], { timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: 1 << 20 });
    return stdout;
  }

  /** Spawns a program in the namespace (nsenter execs it: the child's PID is the program's). */
  spawn(file: string, args: readonly string[], env: NodeJS.ProcessEnv): ChildProcess {
    return spawn('nsenter', [`--net=${this.netPath}`, '--', file, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  }

  /**
   * Kills, by PID, whatever still runs in the namespace (a launcher killed mid-test leaves libvirtd,
   * QEMU and passt behind; only processes of this namespace are matched), then its holder.
   */
  close(): void {
    if (this.inode !== '') {
      for (const entry of readdirSync('/proc')) {
        const pid = Number(entry);
        if (!Number.isInteger(pid) || pid === this.pid) continue;
        let link = '';
        try {
          link = readlinkSync(`/proc/${pid}/ns/net`);
        } catch {
          continue;
        }
        if (link === this.inode) {
          try {
            process.kill(pid, 'SIGKILL');
          } catch {
            // already gone
          }
        }
      }
    }
    if (this.holder.exitCode === null && this.holder.signalCode === null) this.holder.kill('SIGKILL');
  }
}

// The SSH key and client options live with the node harness (scripts/demo.ts uses them too).
export { sshArgs, sshKeyPair } from '../../tools/node-cluster/ssh.js';

/** A VMI with the boot disk as its PVC and cloud-init user-data, and no interfaces or ports (the seed demo's shape). */
export function guestVmi(name: string, userData: string, extraSpec = ''): string {
  const indented = userData.split('\n').map((l) => `        ${l}`).join('\n');
  return `apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: ${name}
  namespace: launcher-test
  uid: ${randomBytes(4).toString('hex')}-0000-4000-8000-${randomBytes(6).toString('hex')}
spec:
  terminationGracePeriodSeconds: 60
  domain:
    memory:
      guest: 256Mi
    devices:
      disks:
      - name: rootdisk
        disk:
          bus: virtio
      - name: cloudinit
        disk:
          bus: sata
${extraSpec}  volumes:
  - name: rootdisk
    persistentVolumeClaim:
      claimName: rootdisk-pvc
  - name: cloudinit
    cloudInitNoCloud:
      userData: |
${indented}
`;
}

export interface GuestRun {
  readonly root: string;
  readonly serialLog: string;
  readonly child: ChildProcess;
  readonly done: Promise<{ code: number | null; output: string }>;
  /** What the launcher printed so far (pino JSON lines). */
  output(): string;
}

/** `ferry launcher` in the namespace on a pod-like layout under `root` (volumes/rootdisk/disk.img). */
export function launchInNetns(ns: Netns, root: string, disk: string, vmiYaml: string, extraArgs: readonly string[] = []): GuestRun {
  mkdirSync(join(root, 'volumes', 'rootdisk'), { recursive: true });
  copyFileSync(disk, join(root, 'volumes', 'rootdisk', 'disk.img'));
  writeFileSync(join(root, 'vmi.yaml'), vmiYaml);
  const serialLog = join(root, 'serial.log');
  const args = [
    FERRY_BIN, 'launcher',
    '--vmi', join(root, 'vmi.yaml'),
    '--volumes-dir', join(root, 'volumes'),
    '--runtime-dir', join(root, 'run'),
    '--serial-log', serialLog,
    '--termination-log', join(root, 'termination-log'),
    '--status-address', '127.0.0.1',
    '--accel', 'tcg',
    ...extraArgs,
  ];
  const child = ns.spawn(process.execPath, args, { PATH: process.env.PATH, HOME: process.env.HOME });
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const done = new Promise<{ code: number | null; output: string }>((resolve) => child.on('close', (code) => resolve({ code, output })));
  return { root, serialLog, child, done, output: () => output };
}

/** Stops a launcher: SIGTERM twice (ACPI, then destroy at once), SIGKILL if it is still there after `timeoutMs`. */
export async function stopLauncher(run: GuestRun, timeoutMs = 30_000): Promise<void> {
  if (run.child.exitCode !== null || run.child.signalCode !== null) return;
  run.child.kill('SIGTERM');
  run.child.kill('SIGTERM');
  const stopped = await Promise.race([run.done.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), timeoutMs))]);
  if (!stopped) run.child.kill('SIGKILL');
}

/** TCP to the pod address in the namespace: what the server sends before it closes. */
export function tcpRead(ns: Netns, host: string, port: number): Promise<string> {
  return ns.exec('bash', ['-c', `busybox nc -w 20 ${host} ${port} </dev/null`], 60_000);
}

/** Waits (bounded) until the serial log holds `marker`; fails early if the launcher ended. */
export async function serialMarker(run: GuestRun, marker: string, timeoutMs = 150_000): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = (() => {
      try {
        return readFileSync(run.serialLog, 'latin1');
      } catch {
        return '';
      }
    })();
    if (text.includes(marker)) return text;
    if (run.child.exitCode !== null) throw new Error(`the launcher ended (${run.child.exitCode}) before "${marker}":\n${run.output().slice(-2000)}`);
    if (Date.now() > deadline) throw new Error(`no "${marker}" on the serial console within ${timeoutMs} ms:\n${text.slice(-1500)}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}
