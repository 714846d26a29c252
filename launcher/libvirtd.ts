/**
 * libvirtd inside the launcher, without systemd and without touching /etc: the monolithic daemon of
 * Debian 12 in session mode (an unprivileged user's qemu:///session), with every file it reads or
 * writes in a per-run directory (docs/adr/0004-launcher-libvirt.md). When the launcher runs as root
 * (locally) the daemon runs as an unprivileged user, as it does in a non-root pod.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { createConnection } from 'node:net';
import { chown, copyFile, lstat, mkdir, readFile, readdir, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ErrorCode, FerryError } from '../src/errors.js';
import type { Logger } from '../src/logging.js';

export const LIBVIRTD_BINARY = '/usr/sbin/libvirtd';
export const LIBVIRTD_START_TIMEOUT_MS = 15_000;
export const LIBVIRTD_STOP_TIMEOUT_MS = 10_000;

export interface RunAs {
  readonly uid: number;
  readonly gid: number;
}

/** Where a libvirtd of this run keeps its state; everything under `root`. */
export interface LibvirtdPaths {
  readonly root: string;
  readonly conf: string;
  /** XDG_CONFIG_HOME: libvirt/qemu.conf and the defined domains. */
  readonly config: string;
  /** XDG_RUNTIME_DIR: pid files, QEMU monitor sockets. */
  readonly run: string;
  /** XDG_CACHE_HOME: QEMU capabilities and the QEMU logs (libvirt/qemu/log/<domain>.log). */
  readonly cache: string;
  readonly home: string;
  readonly socketDir: string;
  readonly socket: string;
  readonly log: string;
}

export function libvirtdPaths(root: string): LibvirtdPaths {
  const socketDir = join(root, 'sock');
  return {
    root,
    conf: join(root, 'libvirtd.conf'),
    config: join(root, 'cfg'),
    run: join(root, 'run'),
    cache: join(root, 'cache'),
    home: join(root, 'home'),
    socketDir,
    socket: join(socketDir, 'libvirt-sock'),
    log: join(root, 'libvirtd.log'),
  };
}

/** sun_path holds 108 bytes including the terminating NUL. */
export const UNIX_PATH_MAX = 107;

/**
 * The longest unix socket path libvirt will create for a domain: QEMU's monitor socket in session
 * mode, `<config>/libvirt/qemu/lib/domain-<id>-<name, cut to 20>/monitor.sock`.
 */
export function longestSocketPath(paths: Pick<LibvirtdPaths, 'config'>): number {
  return join(paths.config, 'libvirt', 'qemu', 'lib', `domain-99999-${'x'.repeat(20)}`, 'monitor.sock').length;
}

/** The connection URI of that daemon (session driver, explicit socket). */
export function libvirtUri(paths: Pick<LibvirtdPaths, 'socket'>): string {
  return `qemu:///session?socket=${paths.socket}`;
}

/** Where libvirt writes a domain's QEMU log (stderr, start errors) in session mode. */
export function qemuLogPath(paths: Pick<LibvirtdPaths, 'cache'>, domain: string): string {
  return join(paths.cache, 'libvirt', 'qemu', 'log', `${domain}.log`);
}

/** Where libvirt keeps a running domain's QEMU pid in session mode. */
export function qemuPidPath(paths: Pick<LibvirtdPaths, 'run'>, domain: string): string {
  return join(paths.run, 'libvirt', 'qemu', 'run', `${domain}.pid`);
}

function quoted(path: string): string {
  if (/["\\\n]/.test(path)) throw new FerryError(ErrorCode.InvalidSpec, `path ${JSON.stringify(path)} cannot be used in a libvirt config file`);
  return `"${path}"`;
}

/** libvirtd.conf: only a unix socket in the run's directory, no auth (the socket is 0700), logs to a file. */
export function libvirtdConf(paths: LibvirtdPaths): string {
  return [
    `unix_sock_dir = ${quoted(paths.socketDir)}`,
    'unix_sock_rw_perms = "0700"',
    'auth_unix_ro = "none"',
    'auth_unix_rw = "none"',
    // 3 = warnings and errors; the harmless start-up complaints (no D-Bus, no udev DMI data) are kept
    // out of the launcher's own log and only shown with a failure.
    `log_outputs = ${quoted(`3:file:${paths.log}`)}`,
    '',
  ].join('\n');
}

/**
 * qemu.conf: no cgroups, namespaces or security driver (the pod is the sandbox, as in KubeVirt),
 * QEMU's stdout/stderr to a plain file so no virtlogd is needed.
 */
export function qemuConf(): string {
  return ['stdio_handler = "file"', 'cgroup_controllers = [ ]', 'namespaces = [ ]', 'security_driver = "none"', ''].join('\n');
}

async function chownTree(path: string, owner: RunAs): Promise<void> {
  const st = await lstat(path);
  if (st.uid !== owner.uid || st.gid !== owner.gid) await chown(path, owner.uid, owner.gid);
  if (!st.isDirectory()) return;
  for (const entry of await readdir(path)) await chownTree(join(path, entry), owner);
}

/** The last `lines` lines of a file, '' when it does not exist. */
export async function fileTail(path: string, lines = 15): Promise<string> {
  try {
    const text = await readFile(path, 'utf8');
    return text.split('\n').filter((l) => l.trim() !== '').slice(-lines).join('\n');
  } catch {
    return '';
  }
}

export interface LibvirtdOptions {
  readonly root: string;
  /** A directory shared between runs for libvirt's QEMU capability cache (saves ~4–8 s per start). */
  readonly capabilityCache?: string;
  /** Drop to this user (the launcher runs as root). */
  readonly runAs?: RunAs;
  readonly binary?: string;
  readonly startTimeoutMs?: number;
  readonly logger: Logger;
}

export class Libvirtd {
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private stderrTail = '';
  readonly exited: Promise<void>;

  private constructor(
    private readonly child: ChildProcess,
    readonly paths: LibvirtdPaths,
    private readonly logger: Logger,
    private readonly capabilityCache: string | undefined,
  ) {
    child.stderr?.on('data', (d: Buffer) => (this.stderrTail = (this.stderrTail + d.toString()).slice(-4000)));
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        resolve();
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get uri(): string {
    return libvirtUri(this.paths);
  }

  get running(): boolean {
    return this.exitInfo === undefined;
  }

  /** libvirtd's log tail and anything it printed, for an error message. */
  async diagnostics(): Promise<string> {
    const log = await fileTail(this.paths.log, 10);
    const exit = this.exitInfo ? `libvirtd exited (${this.exitInfo.code ?? this.exitInfo.signal}). ` : '';
    return `${exit}${[log, this.stderrTail.trim()].filter(Boolean).join('\n')}`.trim();
  }

  /** Writes the configuration, spawns libvirtd and waits (bounded) until its socket accepts connections. */
  static async start(options: LibvirtdOptions): Promise<Libvirtd> {
    const paths = libvirtdPaths(options.root);
    if (longestSocketPath(paths) > UNIX_PATH_MAX) {
      throw new FerryError(
        ErrorCode.InvalidSpec,
        `the runtime directory ${options.root} is too long: libvirt's sockets below it would exceed ${UNIX_PATH_MAX} bytes; use a shorter --runtime-dir`,
        { details: { reason: 'LibvirtFailed' } },
      );
    }
    for (const dir of [paths.root, join(paths.config, 'libvirt'), paths.run, join(paths.cache, 'libvirt', 'qemu', 'cache'), paths.home, paths.socketDir]) {
      await mkdir(dir, { recursive: true, mode: 0o700 });
    }
    await writeFile(paths.conf, libvirtdConf(paths));
    await writeFile(join(paths.config, 'libvirt', 'qemu.conf'), qemuConf());
    if (options.capabilityCache) await copyXmlFiles(options.capabilityCache, capabilitiesDir(paths));
    if (options.runAs) await chownTree(paths.root, options.runAs);
    const env = {
      PATH: '/usr/sbin:/usr/bin:/sbin:/bin',
      HOME: paths.home,
      XDG_CONFIG_HOME: paths.config,
      XDG_RUNTIME_DIR: paths.run,
      XDG_CACHE_HOME: paths.cache,
      XDG_DATA_HOME: paths.home,
      XDG_STATE_HOME: paths.home,
    };
    const binary = options.binary ?? LIBVIRTD_BINARY;
    // Own process group: a terminal's Ctrl-C must reach only the launcher, which then shuts the guest down.
    const child = spawn(binary, ['-f', paths.conf], {
      env,
      cwd: paths.home,
      detached: true,
      stdio: ['ignore', 'ignore', 'pipe'],
      ...(options.runAs ? { uid: options.runAs.uid, gid: options.runAs.gid } : {}),
    });
    const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
    const daemon = new Libvirtd(child, paths, options.logger, options.capabilityCache);
    const timeoutMs = options.startTimeoutMs ?? LIBVIRTD_START_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const failed = await Promise.race([spawnError, daemon.exited.then(() => 'exited' as const), delay(50).then(() => undefined)]);
      if (failed instanceof Error) {
        throw new FerryError(ErrorCode.Internal, `cannot start ${binary}: ${failed.message}`, { cause: failed, details: { reason: 'LibvirtFailed' } });
      }
      if (failed === 'exited' || !daemon.running) {
        throw new FerryError(ErrorCode.Internal, `libvirtd did not start: ${await daemon.diagnostics()}`, { details: { reason: 'LibvirtFailed' } });
      }
      if (await accepts(paths.socket)) break;
      if (Date.now() > deadline) {
        await daemon.stop();
        throw new FerryError(ErrorCode.Internal, `libvirtd did not open ${paths.socket} within ${timeoutMs} ms: ${await daemon.diagnostics()}`, {
          details: { reason: 'LibvirtFailed' },
        });
      }
    }
    options.logger.info({ pid: daemon.pid, uri: daemon.uri, ...(options.runAs ? { uid: options.runAs.uid } : {}) }, 'libvirtd started');
    return daemon;
  }

  /**
   * SIGTERM, then SIGKILL after a bounded wait; by PID, never by name. Then the capabilities libvirt
   * probed are copied to the shared cache for the next run.
   */
  async stop(timeoutMs = LIBVIRTD_STOP_TIMEOUT_MS): Promise<void> {
    await stopChild(this.child, this.exited, () => this.running, timeoutMs, () => this.logger.warn({ pid: this.pid }, 'libvirtd did not stop on SIGTERM; killing it'));
    if (this.capabilityCache) {
      const cache = this.capabilityCache;
      await copyXmlFiles(capabilitiesDir(this.paths), cache).catch((err: Error) => this.logger.warn({ cache, err: err.message }, 'cannot update the capability cache'));
    }
  }
}

/** libvirt's QEMU capability cache of this run (session mode). */
function capabilitiesDir(paths: LibvirtdPaths): string {
  return join(paths.cache, 'libvirt', 'qemu', 'cache', 'capabilities');
}

/**
 * Copies the `*.xml` files of one directory into another, each through a temporary name and a
 * rename, so concurrent runs sharing a cache never read half a file. Copies rather than links: the
 * shared cache may live where the unprivileged libvirtd cannot go (root's home).
 */
async function copyXmlFiles(from: string, to: string): Promise<void> {
  const names = (await readdir(from).catch(() => [] as string[])).filter((n) => n.endsWith('.xml'));
  if (names.length === 0) return;
  await mkdir(to, { recursive: true });
  for (const name of names) {
    const temporary = join(to, `.${name}.${process.pid}.tmp`);
    await copyFile(join(from, name), temporary);
    await rename(temporary, join(to, name));
  }
}

/** Stops a daemon the launcher spawned, by PID: SIGTERM, then SIGKILL once `timeoutMs` has passed. */
export async function stopChild(child: ChildProcess, exited: Promise<void>, running: () => boolean, timeoutMs: number, onKill: () => void): Promise<void> {
  if (!running()) return;
  child.kill('SIGTERM');
  const stopped = await Promise.race([exited.then(() => true), delay(timeoutMs).then(() => false)]);
  if (!stopped) {
    onKill();
    child.kill('SIGKILL');
    await exited;
  }
}

export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function accepts(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection(socketPath);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}
