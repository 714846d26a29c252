/**
 * The launcher as a real process: real libvirtd and QEMU under TCG booting the tiny disk that
 * scripts/make-boot-disk.sh builds from Debian packages, laid out like the pod's PVC mount
 * (`<tmp>/volumes/rootdisk/disk.img`). The guest's init reports on its serial console (FERRY-*
 * markers) and powers off, or waits for the ACPI power button, as its cloud-init user-data says.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, chownSync, copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, type Stats, statSync, writeFileSync } from 'node:fs';
import { createConnection, type Socket } from 'node:net';
import { join } from 'node:path';
import { decodeLauncherStatus } from '../../src/contract/launcher-status.js';
import { PROBE_EXIT_STATUS, probeKvm, runProbeGuest } from '../../launcher/kvm-probe.js';
import { FERRY_BIN, freePort, type ProcessResult, REPO_ROOT, type RunningProcess, startFerry } from '../helpers/ferry-process.js';
import { removeDir, tempDir } from '../helpers/fixtures.js';

const BOOT_TIMEOUT = 180_000;

let dir: string;
let bootDisk: string;
let kvmWorks: boolean;

beforeAll(() => {
  bootDisk = execFileSync('bash', [join(REPO_ROOT, 'scripts', 'make-boot-disk.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  // Short: libvirt's unix sockets live below it (108-byte limit).
  dir = tempDir('fl-');
  // QEMU runs as an unprivileged user when the tests run as root: it must reach the files.
  chmodSync(dir, 0o755);
}, 300_000);

afterAll(() => {
  if (!dir) return;
  killLeftovers(dir);
  removeDir(dir);
});

/**
 * Insurance for a launcher that was killed (a test timeout): its libvirtd and QEMU, found by their
 * pid files below `root` and only when /proc shows that very process (a command line naming `root`).
 */
function killLeftovers(root: string): void {
  const pidFiles = execFileSync('find', [root, '-name', '*.pid', '-path', '*/run/libvirt/*'], { encoding: 'utf8' }).split('\n').filter(Boolean);
  for (const file of pidFiles) {
    const pid = Number(readFileSync(file, 'utf8').trim());
    const cmdline = Number.isInteger(pid) && pid > 1 && existsSync(`/proc/${pid}/cmdline`) ? readFileSync(`/proc/${pid}/cmdline`, 'utf8') : '';
    if (cmdline.includes(root)) process.kill(pid, 'SIGKILL');
  }
}

interface Vmi {
  name: string;
  userData?: string;
  graceSeconds?: number;
  memory?: string;
  /** An emptyDisk volume `scratch` of this capacity. */
  emptyDisk?: string;
}

function vmiYaml(v: Vmi): string {
  const cloudInit = v.userData !== undefined;
  const userData = (v.userData ?? '').split('\n').map((l) => `        ${l}`).join('\n');
  return `apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata:
  name: ${v.name}
  namespace: launcher-test
  uid: ${randomBytes(4).toString('hex')}-0000-4000-8000-${randomBytes(6).toString('hex')}
spec:
  terminationGracePeriodSeconds: ${v.graceSeconds ?? 30}
  domain:
${v.memory === '' ? '' : `    memory:\n      guest: ${v.memory ?? '256Mi'}\n`}    devices:
      disks:
      - name: rootdisk
        bootOrder: 1
        disk:
          bus: virtio
${cloudInit ? '      - name: cloudinit\n        disk:\n          bus: sata\n' : ''}${v.emptyDisk ? '      - name: scratch\n        disk:\n          bus: virtio\n' : ''}  volumes:
  - name: rootdisk
    persistentVolumeClaim:
      claimName: rootdisk-pvc
${cloudInit ? `  - name: cloudinit\n    cloudInitNoCloud:\n      userData: |\n${userData}\n` : ''}${v.emptyDisk ? `  - name: scratch\n    emptyDisk:\n      capacity: ${v.emptyDisk}\n` : ''}`;
}

interface Run {
  readonly root: string;
  readonly proc: RunningProcess;
  readonly serialLog: string;
  readonly terminationLog: string;
  readonly statusPort: number;
  readonly runtimeDir: string;
}

/** `ferry launcher` as an unprivileged user, as in a restricted pod (uid 107 there). */
function startAs(user: { uid: number; gid: number }, home: string, args: readonly string[]): RunningProcess {
  const child = spawn(process.execPath, [FERRY_BIN, ...args], { uid: user.uid, gid: user.gid, env: { PATH: process.env.PATH, HOME: home }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stdout += d.toString()));
  const done = new Promise<ProcessResult>((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr: '' })));
  return { done, kill: (signal: NodeJS.Signals = 'SIGKILL') => child.kill(signal) };
}

function chownTree(path: string, user: { uid: number; gid: number }): void {
  chownSync(path, user.uid, user.gid);
  if (statSync(path).isDirectory()) for (const entry of readdirSync(path)) chownTree(join(path, entry), user);
}

interface LaunchOptions {
  /** Run as this user instead of the test's own. */
  readonly user?: { uid: number; gid: number };
  /** Leave --runtime-dir out: the launcher makes its own temporary one (TMPDIR: the test's directory, short for libvirt's sockets). */
  readonly ownRuntimeDir?: boolean;
}

/** A VMI directory like the pod's (volumes/rootdisk/disk.img) and a running `ferry launcher`. */
async function launch(v: Vmi, extraArgs: readonly string[], options: LaunchOptions = {}): Promise<Run> {
  const { user } = options;
  const root = join(dir, v.name);
  mkdirSync(join(root, 'volumes', 'rootdisk'), { recursive: true });
  copyFileSync(bootDisk, join(root, 'volumes', 'rootdisk', 'disk.img'));
  writeFileSync(join(root, 'vmi.yaml'), vmiYaml(v));
  const statusPort = await freePort();
  const run = {
    root,
    serialLog: join(root, 'serial.log'),
    terminationLog: join(root, 'termination-log'),
    runtimeDir: join(root, 'run'),
    statusPort,
  };
  const args = [
      'launcher',
      '--vmi', join(root, 'vmi.yaml'),
      '--volumes-dir', join(root, 'volumes'),
      ...(options.ownRuntimeDir ? [] : ['--runtime-dir', run.runtimeDir]),
      '--serial-log', run.serialLog,
      '--termination-log', run.terminationLog,
      '--status-port', String(statusPort),
      '--status-address', '127.0.0.1',
      ...extraArgs,
  ];
  if (user) {
    mkdirSync(join(root, 'home'));
    chownTree(root, user);
  }
  const env = options.ownRuntimeDir ? { TMPDIR: dir } : {};
  const proc = user ? startAs(user, join(root, 'home'), args) : startFerry(args, env, BOOT_TIMEOUT);
  return { ...run, proc };
}

async function until<T>(what: string, fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 120_000, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await fn();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** The launcher's console socket (the VMI's private directory holds exactly one). */
function consoleSocket(run: Run): string | undefined {
  const privateDir = join(run.runtimeDir, 'private');
  if (!existsSync(privateDir)) return undefined;
  for (const uid of execFileSync('ls', [privateDir], { encoding: 'utf8' }).split('\n').filter(Boolean)) {
    const path = join(privateDir, uid, 'console.sock');
    if (existsSync(path) && statSync(path).isSocket()) return path;
  }
  return undefined;
}

/** A console client that collects what it receives. */
class ConsoleClient {
  text = '';
  closed = false;
  private constructor(readonly socket: Socket) {
    socket.on('data', (d: Buffer) => (this.text += d.toString('latin1')));
    socket.on('close', () => (this.closed = true));
    socket.on('error', () => undefined);
  }

  static async connect(path: string): Promise<ConsoleClient> {
    const socket = createConnection(path);
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new ConsoleClient(socket);
  }

  waitFor(marker: string, timeoutMs = 120_000): Promise<string> {
    return until(`"${marker}" on the console`, () => (this.text.includes(marker) ? this.text : undefined), timeoutMs, 100);
  }
}

async function status(run: Run): Promise<Record<string, unknown> | undefined> {
  try {
    const response = await fetch(`http://127.0.0.1:${run.statusPort}/status`);
    return (await response.json()) as Record<string, unknown>;
  } catch {
    return undefined;
  }
}

async function readyz(run: Run): Promise<number | undefined> {
  try {
    return (await fetch(`http://127.0.0.1:${run.statusPort}/readyz`)).status;
  } catch {
    return undefined;
  }
}

function termination(run: Run) {
  return decodeLauncherStatus(readFileSync(run.terminationLog, 'utf8'));
}

describe('KVM probe', () => {
  test('the probe guest runs to its end under TCG (so a KVM failure is KVM, not the probe)', async () => {
    expect(await runProbeGuest({ emulator: '/usr/bin/qemu-system-x86_64', accel: 'tcg', timeoutMs: 20_000 })).toEqual({ usable: true });
    expect(PROBE_EXIT_STATUS).toBe(133);
  }, 30_000);

  test('says whether KVM works here (kvm_pvm: it does not)', async () => {
    const result = await probeKvm({ emulator: '/usr/bin/qemu-system-x86_64' });
    kvmWorks = result.usable;
    if (!result.usable) expect(result.reason).toMatch(/does not exist|did not finish|failed/);
  }, 30_000);
});

describe('ferry launcher boots a VMI under TCG', () => {
  test('PVC disk: the marker reaches the console socket and the serial log, exit 0, Succeeded', async () => {
    const run = await launch({ name: 'boot' }, ['--allow-emulation', '--volume-size', 'rootdisk=64Mi']);
    const socket = await until('the console socket', () => consoleSocket(run));
    const early = await ConsoleClient.connect(socket);
    await early.waitFor('FERRY-BOOT-OK');

    // Ready while the domain runs, with the accelerator the probe chose.
    expect(await until('readiness', async () => ((await readyz(run)) === 200 ? 200 : undefined), 30_000)).toBe(200);
    expect(await status(run)).toMatchObject({ phase: 'Running', domain: 'launcher-test_boot', domainState: 'running', accel: 'tcg', emulation: true });

    // A second client (the CLI) gets the replay and does not disconnect the first one.
    const cli = startFerry(['console', '--socket', socket], {}, BOOT_TIMEOUT);

    const result = await run.proc.done;
    const attached = await cli.done;
    expect(result.code).toBe(0);
    expect(attached.code).toBe(0);
    expect(attached.stdout).toContain('FERRY-BOOT-OK');
    expect(attached.stdout).toContain('FERRY-POWEROFF');
    expect(early.text).toContain('FERRY-POWEROFF');
    expect(early.text.match(/FERRY-BOOT-OK/g)).toHaveLength(1);
    expect(early.closed).toBe(true);
    const log = readFileSync(run.serialLog, 'latin1');
    expect(log).toContain('FERRY-BOOT-OK');
    expect(log).toContain('FERRY-CLOUDINIT none');
    expect(termination(run)).toEqual({ phase: 'Succeeded', reason: 'Shutdown', message: 'the guest powered off', accel: 'tcg' });
    // The 32 MiB image was grown to the PVC's 64 MiB (it fits: no reserve needed below the free space).
    expect(statSync(join(run.root, 'volumes', 'rootdisk', 'disk.img')).size).toBe(64 * 1024 * 1024);
    // Nothing is left running: the console socket is gone and the status endpoint closed.
    expect(existsSync(socket)).toBe(false);
    expect(await status(run)).toBeUndefined();
  }, BOOT_TIMEOUT);

  test('cloudInitNoCloud user-data reaches the guest (beside an emptyDisk)', async () => {
    const marker = randomBytes(6).toString('hex');
    const run = await launch({ name: 'cloudinit', userData: `#cloud-config\nferry-marker: ${marker}`, emptyDisk: '1Gi' }, ['--accel', 'tcg']);
    const result = await run.proc.done;
    expect(result.code).toBe(0);
    const scratch = join(run.runtimeDir, 'libvirt', 'empty-disks', 'scratch.qcow2');
    expect(readFileSync(scratch).subarray(0, 4).toString('latin1')).toBe('QFI\xfb');
    expect(readFileSync(run.serialLog, 'latin1')).toContain(`FERRY-CLOUDINIT ${marker}`);
    expect(termination(run)?.phase).toBe('Succeeded');
  }, BOOT_TIMEOUT);

  /** Boots a guest that holds (`ferry-hold: <hold>`), sends SIGTERM once it does. */
  async function holdThenTerminate(name: string, hold: string, graceSeconds: number, whileRunning?: (run: Run) => Promise<string>): Promise<{ run: Run; client: ConsoleClient; seen?: string }> {
    const run = await launch({ name, userData: `#cloud-config\nferry-hold: ${hold}`, graceSeconds }, ['--accel', 'tcg']);
    const client = await ConsoleClient.connect(await until('the console socket', () => consoleSocket(run)));
    await client.waitFor('FERRY-HOLD');
    const seen = whileRunning ? await whileRunning(run) : undefined;
    run.proc.kill('SIGTERM');
    return { run, client, ...(seen !== undefined ? { seen } : {}) };
  }

  /**
   * What `ferry vnc <vmi>` runs in the pod for each viewer: `ferry console --socket <virt-vnc>`, a raw
   * pipe. A VNC server speaks first: its RFB version line.
   */
  async function vncGreeting(run: Run): Promise<string> {
    const console = await until('the console socket', () => consoleSocket(run));
    const vnc = join(console, '..', 'virt-vnc');
    const pipe = spawn(process.execPath, [FERRY_BIN, 'console', '--socket', vnc], { stdio: ['pipe', 'pipe', 'pipe'] });
    let got = '';
    pipe.stdout.on('data', (d: Buffer) => (got += d.toString('latin1')));
    try {
      return await until('the RFB greeting', () => (got.length >= 12 ? got.slice(0, 12) : undefined), 15_000, 50);
    } finally {
      pipe.kill();
    }
  }

  test('SIGTERM: the guest powers off on the ACPI shutdown, exit 0, Succeeded', async () => {
    const { run, client, seen } = await holdThenTerminate('acpi', 'yes', 60, vncGreeting);
    expect(seen).toBe('RFB 003.008\n');
    const result = await run.proc.done;
    expect(result.code).toBe(0);
    expect(client.text).toContain('FERRY-ACPI-POWER-BUTTON');
    expect(termination(run)).toEqual({ phase: 'Succeeded', reason: 'Shutdown', message: 'the guest powered off after the ACPI shutdown request', accel: 'tcg' });
  }, BOOT_TIMEOUT);

  test('SIGTERM: a guest that ignores ACPI is destroyed after the grace period, exit 3, Failed', async () => {
    const { run, client } = await holdThenTerminate('noacpi', 'ignore-acpi', 3);
    await until('the Stopping phase', async () => ((await status(run))?.phase === 'Stopping' ? true : undefined), 10_000, 50);
    const result = await run.proc.done;
    expect(result.code).toBe(3);
    expect(client.text).not.toContain('FERRY-POWEROFF');
    expect(termination(run)).toMatchObject({ phase: 'Failed', reason: 'GracePeriodExpired', accel: 'tcg' });
    expect(termination(run)?.message).toContain('3 s');
  }, BOOT_TIMEOUT);
});

describe('ferry launcher as an unprivileged user (the restricted pod)', () => {
  test('boots with its own session libvirtd, exit 0', async () => {
    // As root, become the user the root launcher would run libvirtd as; otherwise we already are one.
    const passwd = process.getuid?.() === 0 ? execFileSync('getent', ['passwd', 'libvirt-qemu'], { encoding: 'utf8' }).split(':') : undefined;
    const user = passwd ? { uid: Number(passwd[2]), gid: Number(passwd[3]) } : undefined;
    const marker = randomBytes(6).toString('hex');
    const run = await launch({ name: 'nonroot', userData: `#cloud-config\nferry-marker: ${marker}` }, ['--allow-emulation'], user ? { user } : {});
    const result = await run.proc.done;
    expect(result.code).toBe(0);
    expect(readFileSync(run.serialLog, 'latin1')).toContain(`FERRY-CLOUDINIT ${marker}`);
    expect(termination(run)).toMatchObject({ phase: 'Succeeded', reason: 'Shutdown', accel: 'tcg' });
    // The capability cache landed in that user's home.
    expect(readdirSync(join(run.root, 'home', '.cache', 'ferry', 'libvirt')).some((f) => f.endsWith('.xml'))).toBe(true);
  }, BOOT_TIMEOUT);
});

describe('ferry launcher as root without --runtime-dir (the README\'s local command)', () => {
  test('its own temporary run-time folder is reachable by QEMU: the cloud-init ISO is read, exit 0', async () => {
    if (process.getuid?.() !== 0) return; // only root drops QEMU to another user
    const marker = randomBytes(6).toString('hex');
    const run = await launch({ name: 'readme', userData: `#cloud-config\nferry-marker: ${marker}` }, ['--allow-emulation'], { ownRuntimeDir: true });
    // While the guest runs: the temporary folder is root's, open to QEMU's group only, to search, not to list or write.
    let st: Stats | undefined;
    const watch = setInterval(() => {
      const own = readdirSync(dir).find((n) => n.startsWith('ferry-'));
      st = (own !== undefined ? statSync(join(dir, own), { throwIfNoEntry: false }) : undefined) ?? st;
    }, 100);
    const result = await run.proc.done.finally(() => clearInterval(watch));
    expect({ code: result.code, termination: termination(run) }).toMatchObject({ code: 0, termination: { phase: 'Succeeded', reason: 'Shutdown', accel: 'tcg' } });
    expect(readFileSync(run.serialLog, 'latin1')).toContain(`FERRY-CLOUDINIT ${marker}`);
    // QEMU's group: libvirt-qemu's own, or /dev/kvm's where that device is open to its group.
    const qemuGroups = [Number(execFileSync('getent', ['passwd', 'libvirt-qemu'], { encoding: 'utf8' }).split(':')[3]), statSync('/dev/kvm', { throwIfNoEntry: false })?.gid];
    expect(st && { mode: (st.mode & 0o777).toString(8), uid: st.uid }).toEqual({ mode: '710', uid: 0 });
    expect(qemuGroups).toContain(st?.gid);
    // Removed at the end.
    expect(readdirSync(dir).filter((n) => n.startsWith('ferry-'))).toEqual([]);
  }, BOOT_TIMEOUT);
});

describe('ferry launcher refuses what it cannot run', () => {
  test('KVM needed, emulation not allowed, KVM not working: fails fast with NoKVM', async () => {
    if (kvmWorks) return; // a host with working KVM would boot the guest instead
    for (const args of [[], ['--accel', 'kvm', '--allow-emulation']]) {
      const run = await launch({ name: `nokvm${args.length}` }, args);
      const result = await run.proc.done;
      expect(result.code).toBe(5);
      const t = termination(run);
      expect(t).toMatchObject({ phase: 'Failed', reason: 'NoKVM' });
      expect(t?.message).toMatch(/KVM/);
      expect(result.stdout).toContain('NoKVM');
      // libvirtd was never started
      expect(existsSync(join(run.runtimeDir, 'libvirt', 'libvirtd.conf'))).toBe(false);
    }
  }, 60_000);

  test('an invalid VMI: exit 2, InvalidSpec naming the field', async () => {
    const run = await launch({ name: 'invalid', memory: '' }, ['--accel', 'tcg']);
    const result = await run.proc.done;
    expect(result.code).toBe(2);
    expect(termination(run)).toMatchObject({ phase: 'Failed', reason: 'InvalidSpec' });
    expect(termination(run)?.message).toContain('spec.domain.memory.guest');

    const sized = await launch({ name: 'badsize' }, ['--accel', 'tcg', '--volume-size', 'nosuch=1Gi']);
    expect((await sized.proc.done).code).toBe(2);
    expect(termination(sized)?.message).toContain('nosuch');
  }, 30_000);
});
