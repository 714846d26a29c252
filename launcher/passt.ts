/**
 * passt beside QEMU, one per pod-network interface (docs/adr/0011-pod-network-passt.md): started by
 * the launcher in the foreground as QEMU's user with no capabilities, QEMU connects to its unix socket
 * (domain-xml.ts `networkArgs`). It answers the guest's DHCP with KubeVirt's masquerade addresses and
 * forwards the pod's ports to it. `--one-off`: it ends when QEMU closes the socket; it is also stopped
 * by PID at the end of the run.
 */

import { type ChildProcess, spawn } from 'node:child_process';
import { chown, mkdir, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { ErrorCode, FerryError } from '../src/errors.js';
import type { Logger } from '../src/logging.js';
import type { PortForward, ResolvedInterface } from '../src/contract/launch-plan.js';
import { masqueradeAddresses } from './domain/domain-plan.js';
import { delay, fileTail, type RunAs, stopChild, UNIX_PATH_MAX } from './libvirtd.js';
import { PASST_BINARY } from './pod-network.js';

export const PASST_START_TIMEOUT_MS = 10_000;
export const PASST_STOP_TIMEOUT_MS = 5_000;

/** passt's port specifier: `all`, `none`, or `1-14232,40443`. */
export function portSpec(forward: PortForward): string {
  if (forward === 'all') return 'all';
  if (forward.length === 0) return 'none';
  return forward.map((r) => (r.start === r.end ? `${r.start}` : `${r.start}-${r.end}`)).join(',');
}

/** passt's argv for a passt interface of the plan: foreground, one QEMU, the masquerade addresses, the ports. */
export function passtArgs(iface: ResolvedInterface, logFile: string): string[] {
  if (iface.passtSocket === undefined || iface.forward === undefined) throw new FerryError(ErrorCode.Internal, `interface "${iface.name}" is not a passt interface`);
  const net = masqueradeAddresses(iface.cidr);
  return [
    '--foreground',
    '--one-off',
    '--socket', iface.passtSocket,
    '--log-file', logFile,
    ...(iface.mac !== undefined ? ['--mac-addr', iface.mac] : []),
    '--address', net.guest,
    '--netmask', String(net.prefix),
    '--gateway', net.gateway,
    '--tcp-ports', portSpec(iface.forward.tcp),
    '--udp-ports', portSpec(iface.forward.udp),
  ];
}

export interface PasstOptions {
  readonly iface: ResolvedInterface;
  /** passt's log (it has no syslog in a pod); its tail goes into a start failure's message. */
  readonly logFile: string;
  /** Drop to this user (the launcher runs as root); QEMU runs as the same one. */
  readonly runAs?: RunAs;
  readonly binary?: string;
  readonly startTimeoutMs?: number;
  readonly logger: Logger;
}

export class Passt {
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private stderrTail = '';
  readonly exited: Promise<void>;

  private constructor(
    private readonly child: ChildProcess,
    private readonly options: PasstOptions,
  ) {
    child.stderr?.on('data', (d: Buffer) => (this.stderrTail = (this.stderrTail + d.toString()).slice(-4000)));
    this.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        if (code !== 0) options.logger.warn({ pid: child.pid, code, signal }, 'passt ended');
        resolve();
      });
    });
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get running(): boolean {
    return this.exitInfo === undefined;
  }

  async diagnostics(): Promise<string> {
    const exit = this.exitInfo ? `passt exited (${this.exitInfo.code ?? this.exitInfo.signal}). ` : '';
    return `${exit}${[await fileTail(this.options.logFile, 8), this.stderrTail.trim()].filter(Boolean).join('\n')}`.trim();
  }

  /** Spawns passt and waits (bounded) until its socket exists; it binds every forwarded port before that. */
  static async start(options: PasstOptions): Promise<Passt> {
    const socket = options.iface.passtSocket ?? '';
    if (socket.length > UNIX_PATH_MAX) throw new FerryError(ErrorCode.InvalidSpec, `passt's socket ${socket} is longer than ${UNIX_PATH_MAX} bytes; use a shorter --runtime-dir`);
    const args = passtArgs(options.iface, options.logFile);
    await mkdir(dirname(socket), { recursive: true, mode: 0o700 });
    if (options.runAs) await chown(dirname(socket), options.runAs.uid, options.runAs.gid);
    await rm(socket, { force: true });
    const binary = options.binary ?? PASST_BINARY;
    // Own process group, as libvirtd: a terminal's Ctrl-C reaches only the launcher.
    const child = spawn(binary, args, {
      env: { PATH: '/usr/sbin:/usr/bin:/sbin:/bin' },
      detached: true,
      stdio: ['ignore', 'ignore', 'pipe'],
      ...(options.runAs ? { uid: options.runAs.uid, gid: options.runAs.gid } : {}),
    });
    const spawnError = new Promise<Error>((resolve) => child.once('error', resolve));
    const passt = new Passt(child, options);
    const timeoutMs = options.startTimeoutMs ?? PASST_START_TIMEOUT_MS;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const failed = await Promise.race([spawnError, passt.exited.then(() => 'exited' as const), delay(50).then(() => undefined)]);
      if (failed instanceof Error) throw new FerryError(ErrorCode.Internal, `cannot start ${binary}: ${failed.message}`, { cause: failed });
      if (failed === 'exited' || !passt.running) throw new FerryError(ErrorCode.Internal, `passt did not start: ${await passt.diagnostics()}`);
      // Not a connect: with --one-off the first client that leaves ends passt.
      if ((await stat(socket).catch(() => undefined))?.isSocket()) break;
      if (Date.now() > deadline) {
        await passt.stop();
        throw new FerryError(ErrorCode.Internal, `passt did not open ${socket} within ${timeoutMs} ms: ${await passt.diagnostics()}`);
      }
    }
    options.logger.info({ pid: passt.pid, socket, args }, 'passt started');
    return passt;
  }

  /** SIGTERM, then SIGKILL after a bounded wait; by PID. */
  async stop(timeoutMs = PASST_STOP_TIMEOUT_MS): Promise<void> {
    await stopChild(this.child, this.exited, () => this.running, timeoutMs, () => this.options.logger.warn({ pid: this.pid }, 'passt did not stop on SIGTERM; killing it'));
  }
}
