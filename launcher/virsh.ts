/**
 * libvirt through the `virsh` CLI, always with an argument array. Each call is a short-lived
 * process with a timeout and its stderr kept for the error; `watchLifecycle` keeps one
 * `virsh event --loop` process for prompt notice of state changes.
 */

import { spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import { ErrorCode, FerryError } from '../src/errors.js';
import { runTool } from '../src/io/child-process.js';

export const VIRSH_BINARY = 'virsh';
export const VIRSH_TIMEOUT_MS = 60_000;

/** `virsh domstate` state names. */
export const DomainState = {
  NoState: 'no state',
  Running: 'running',
  Idle: 'idle',
  Paused: 'paused',
  InShutdown: 'in shutdown',
  ShutOff: 'shut off',
  Crashed: 'crashed',
  PmSuspended: 'pmsuspended',
} as const;
export type DomainState = (typeof DomainState)[keyof typeof DomainState];

export interface DomainStateReason {
  readonly state: DomainState | string;
  /** libvirt's reason, e.g. `booted`, `shutdown`, `destroyed`, `crashed`, `I/O error`. */
  readonly reason: string;
}

/** Parses `virsh domstate --reason` output: `shut off (shutdown)`. */
export function parseDomState(text: string): DomainStateReason {
  const line = text.trim().split('\n')[0]?.trim() ?? '';
  const m = /^(.*?)\s*\(([^)]*)\)$/.exec(line);
  return m ? { state: m[1]!, reason: m[2]! } : { state: line, reason: 'unknown' };
}

export interface LifecycleEvent {
  readonly domain: string;
  /** Started, Suspended, Resumed, Stopped, Shutdown, Crashed, Defined, Undefined, PMSuspended. */
  readonly event: string;
  readonly detail: string;
}

/** Parses one line of `virsh event --loop --event lifecycle`: `event 'lifecycle' for domain 'x': Stopped Shutdown`. */
export function parseLifecycleEvent(line: string): LifecycleEvent | undefined {
  const m = /event 'lifecycle' for domain '(.*)': (\S+)(?: (.*))?$/.exec(line.trim());
  return m ? { domain: m[1]!, event: m[2]!, detail: (m[3] ?? '').trim() } : undefined;
}


export class Virsh {
  constructor(
    readonly uri: string,
    private readonly binary: string = VIRSH_BINARY,
  ) {}

  /** Runs `virsh -c URI ...args`; a failure is a FerryError INTERNAL carrying virsh's stderr. */
  async run(args: readonly string[], timeoutMs = VIRSH_TIMEOUT_MS): Promise<string> {
    const { stdout } = await runTool(this.binary, ['-q', '-c', this.uri, ...args], { timeoutMs, what: `virsh ${args[0] ?? ''}` });
    return stdout;
  }

  async define(xmlPath: string): Promise<void> {
    await this.run(['define', xmlPath]);
  }

  async start(name: string, options: { paused?: boolean } = {}): Promise<void> {
    await this.run(['start', name, ...(options.paused ? ['--paused'] : [])]);
  }

  async resume(name: string): Promise<void> {
    await this.run(['resume', name]);
  }

  async domstate(name: string): Promise<DomainStateReason> {
    return parseDomState(await this.run(['domstate', '--reason', name], 15_000));
  }

  /** Asks the guest to power off through the ACPI power button. */
  async shutdownAcpi(name: string): Promise<void> {
    await this.run(['shutdown', name, '--mode', 'acpi']);
  }

  async destroy(name: string): Promise<void> {
    await this.run(['destroy', name]);
  }

  async undefine(name: string): Promise<void> {
    await this.run(['undefine', name]);
  }

  /**
   * Follows a domain's lifecycle events with one `virsh event --loop` process; `stop` kills it by
   * PID. Events only prompt a fresh `domstate`; they are not trusted as the state themselves.
   */
  watchLifecycle(name: string, onEvent: (event: LifecycleEvent) => void): { stop(): Promise<void> } {
    const child = spawn(this.binary, ['-q', '-c', this.uri, 'event', '--domain', name, '--event', 'lifecycle', '--loop'], {
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    child.on('error', () => undefined);
    const exited = new Promise<void>((resolve) => child.on('close', () => resolve()));
    createInterface({ input: child.stdout }).on('line', (line) => {
      const event = parseLifecycleEvent(line);
      if (event) onEvent(event);
    });
    return {
      async stop() {
        if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
        await exited;
      },
    };
  }
}
