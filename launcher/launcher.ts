/**
 * One launcher run: VMI → checks and probes → volumes → domain plan → libvirtd → define, start
 * paused, attach the console, resume → follow the domain until it is shut off → outcome. A stop
 * request (SIGTERM) sends an ACPI shutdown and destroys the guest after its grace period; a second
 * request destroys it at once. Everything started here is stopped here, by PID or through libvirt.
 */

import { chown, mkdir, readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Logger } from '../src/logging.js';
import { domainName, type VirtualMachineInstance } from '../src/api/kubevirt.js';
import { DEFAULT_GRACE_SECONDS, defaultVmiSpec, validateVmiSpec } from '../src/api/kubevirt-defaults.js';
import { planDomain } from './domain/domain-plan.js';
import { domainXml } from './domain/domain-xml.js';
import { type Accel, type DomainPlan, PodNetworkBackend, podRuntimePaths } from '../src/contract/launch-plan.js';
import type { AccelRequest } from '../src/contract/launcher-pod.js';
import { type LauncherPhase, LauncherReason, type LauncherStatusBody } from '../src/contract/launcher-status.js';
import { GuestConsole } from './console.js';
import { decideAccel, probeKvm } from './kvm-probe.js';
import { fileTail, Libvirtd, qemuLogPath, qemuPidPath, type RunAs } from './libvirtd.js';
import { failureOutcome, launchError, type Outcome, outcomeOf, type StopAction, stoppedBeforeStart } from './outcome.js';
import { assertReachable, prepareVolumes, type VolumeDirs } from './volumes.js';
import { PASST_BINARY, passtInstalled, probePodNetwork } from './pod-network.js';
import { Passt } from './passt.js';
import { type DomainStateReason, Virsh } from './virsh.js';

export const POLL_INTERVAL_MS = 2000;

export interface LauncherConfig {
  /** The VMI as given (defaults and validation are applied here). */
  readonly vmi: VirtualMachineInstance;
  readonly accel: AccelRequest;
  readonly allowEmulation: boolean;
  readonly emulator: string;
  /** libvirtd's per-run state (config, sockets, QEMU logs, empty disks). */
  readonly libvirtDir: string;
  /** Per-VMI sockets: `<privateDir>/<vmi uid>/{virt-serial0,virt-vnc,console.sock}`. */
  readonly privateDir: string;
  readonly volumes: VolumeDirs;
  readonly volumeSizes: Readonly<Record<string, number>>;
  readonly capabilityCache?: string;
  readonly serialLog?: string;
  /** libvirtd and QEMU run as this user (the launcher runs as root). */
  readonly runAs?: RunAs;
  readonly pollIntervalMs?: number;
  /** How the pod network reaches the guest (default passt: every port; slirp: declared ports only). */
  readonly podNetwork?: PodNetworkBackend;
}

export interface LauncherDeps {
  readonly logger: Logger;
  readonly now?: () => number;
}

function defaulted(vmi: VirtualMachineInstance): VirtualMachineInstance {
  if (!vmi || typeof vmi !== 'object' || !vmi.spec || typeof vmi.spec !== 'object' || !vmi.spec.domain) {
    throw launchError(LauncherReason.InvalidSpec, 'the VMI has no spec.domain');
  }
  if (!vmi.metadata?.name) throw launchError(LauncherReason.InvalidSpec, 'the VMI has no metadata.name');
  const spec = defaultVmiSpec(vmi.spec, vmi.metadata);
  const problems = validateVmiSpec(spec);
  if (problems.length > 0) throw launchError(LauncherReason.InvalidSpec, `invalid VMI: ${problems.join('; ')}`);
  return { ...vmi, spec };
}

export class Launcher {
  private phase: LauncherPhase = 'Starting';
  private readonly started: number;
  private readonly timings: Record<string, number> = {};
  private accel: Accel | undefined;
  private emulation: boolean | undefined;
  private domain: string | undefined;
  private domainState: DomainStateReason | undefined;
  private consoleSocket: string | undefined;
  private result: Outcome | undefined;
  private stopRequests = 0;
  private wake: () => void = () => undefined;
  private console: GuestConsole | undefined;

  constructor(
    private readonly config: LauncherConfig,
    private readonly deps: LauncherDeps,
  ) {
    this.started = this.now();
  }

  private now(): number {
    return (this.deps.now ?? Date.now)();
  }

  private mark(step: string): void {
    this.timings[step] = this.now() - this.started;
  }

  /** The domain runs (the pod's readiness). */
  ready(): boolean {
    return this.phase === 'Running' && this.domainState?.state === 'running';
  }

  status(): LauncherStatusBody {
    return {
      phase: this.phase,
      ...(this.domain ? { domain: this.domain } : {}),
      ...(this.domainState ? { domainState: this.domainState.state, domainReason: this.domainState.reason } : {}),
      ...(this.accel ? { accel: this.accel, emulation: this.emulation === true } : {}),
      ...(this.consoleSocket ? { consoleSocket: this.consoleSocket } : {}),
      ...(this.result ? { reason: this.result.status.reason, message: this.result.status.message } : {}),
      timings: { ...this.timings },
    };
  }

  /** The guest console, once it is being served. */
  get guestConsole(): GuestConsole | undefined {
    return this.console;
  }

  /** SIGTERM: the first asks the guest to power off (ACPI), a second destroys it at once. */
  requestStop(): void {
    this.stopRequests += 1;
    this.deps.logger.info({ requests: this.stopRequests }, this.stopRequests === 1 ? 'stop requested' : 'stop requested again: destroying the guest');
    this.wake();
  }

  async run(): Promise<Outcome> {
    const log = this.deps.logger;
    let daemon: Libvirtd | undefined;
    let virsh: Virsh | undefined;
    let watcher: { stop(): Promise<void> } | undefined;
    let defined = false;
    let plan: DomainPlan | undefined;
    const passts: Passt[] = [];
    try {
      const vmi = defaulted(this.config.vmi);
      const unknown = Object.keys(this.config.volumeSizes).filter((name) => !(vmi.spec.volumes ?? []).some((v) => v.name === name));
      if (unknown.length > 0) throw launchError(LauncherReason.InvalidSpec, `--volume-size names ${unknown.join(', ')}, which the VMI has no volume of`);
      this.domain = domainName(vmi);
      const grace = vmi.spec.terminationGracePeriodSeconds ?? DEFAULT_GRACE_SECONDS;

      const probe =
        this.config.accel === 'tcg'
          ? undefined
          : await probeKvm({ emulator: this.config.emulator, ...this.config.runAs });
      const decision = decideAccel(this.config.accel, this.config.allowEmulation, probe);
      if (!decision.ok) throw launchError(LauncherReason.NoKvm, decision.message);
      this.accel = decision.accel;
      this.emulation = decision.emulation;
      this.mark('accelerator');
      log.info({ accel: decision.accel, emulation: decision.emulation }, decision.note);
      if (this.stopRequests > 0) return this.finish(stoppedBeforeStart(this.accel));

      const paths = podRuntimePaths(vmi.metadata.uid || vmi.metadata.name!, this.config.privateDir);
      const vmiDir = dirname(paths.serialSocket);
      await mkdir(this.config.privateDir, { recursive: true, mode: 0o755 });
      await mkdir(vmiDir, { recursive: true, mode: 0o750 });
      if (this.config.runAs) await chown(vmiDir, this.config.runAs.uid, this.config.runAs.gid);
      const volumes = await prepareVolumes(vmi, { dirs: this.config.volumes, sizes: this.config.volumeSizes, ...(this.config.runAs ? { owner: this.config.runAs } : {}), logger: log });
      if (this.config.runAs) {
        for (const path of [...Object.values(volumes).map((v) => v.path), paths.serialSocket]) await assertReachable(path, this.config.runAs);
      }
      this.mark('volumes');
      const podNetwork = await probePodNetwork(this.config.podNetwork ?? PodNetworkBackend.Passt, join(this.config.libvirtDir, 'passt'));
      plan = planDomain(vmi, {
        accel: decision.accel,
        emulator: this.config.emulator,
        volumes,
        serial: { socketPath: paths.serialSocket },
        vncSocketPath: paths.vncSocket,
        podNetwork,
      });
      for (const iface of plan.interfaces) {
        if (iface.backend === PodNetworkBackend.Passt && !(await passtInstalled())) {
          throw launchError(LauncherReason.StartFailed, `the pod network needs passt, and ${PASST_BINARY} is not installed (Debian: apt-get install passt), or run with --pod-network slirp (declared ports only)`);
        }
        if (iface.backend === PodNetworkBackend.Passt && podNetwork.ipFamilies === 0) {
          throw launchError(LauncherReason.StartFailed, 'the pod network has no default route, which passt needs to forward the pod\'s ports; run with --pod-network slirp (declared ports only) where there is none');
        }
        log.info({ interface: iface.name, backend: iface.backend, forward: iface.forward ?? { declared: iface.ports } }, 'pod network');
      }
      const xml = domainXml(plan);

      if (plan.serial) {
        this.consoleSocket = paths.consoleSocket;
        this.console = await GuestConsole.listen({
          guestSocket: plan.serial.socketPath,
          listenPath: this.consoleSocket,
          ...(this.config.serialLog ? { logFile: this.config.serialLog } : {}),
          logger: log,
        });
      }

      daemon = await Libvirtd.start({
        root: this.config.libvirtDir,
        ...(this.config.capabilityCache ? { capabilityCache: this.config.capabilityCache } : {}),
        ...(this.config.runAs ? { runAs: this.config.runAs } : {}),
        logger: log,
      });
      this.mark('libvirtd');
      virsh = new Virsh(daemon.uri);
      const xmlPath = join(this.config.libvirtDir, 'domain.xml');
      await writeFile(xmlPath, xml);
      for (const iface of plan.interfaces.filter((i) => i.backend === PodNetworkBackend.Passt)) {
        const logFile = join(this.config.libvirtDir, `passt-${iface.name}.log`);
        passts.push(await Passt.start({ iface, logFile, ...(this.config.runAs ? { runAs: this.config.runAs } : {}), logger: log }).catch((err: Error) => {
          throw launchError(LauncherReason.StartFailed, `cannot start the pod network: ${err.message}`, err);
        }));
      }
      await this.step(LauncherReason.StartFailed, 'define the domain', daemon, () => virsh!.define(xmlPath));
      defined = true;
      this.mark('defined');
      if (this.stopRequests > 0) return this.finish(stoppedBeforeStart(this.accel));

      // Paused first, so the console is attached before the guest prints its first byte.
      await this.step(LauncherReason.StartFailed, 'start the domain', daemon, () => virsh!.start(plan!.name, { paused: true }));
      await this.console?.connectGuest();
      watcher = virsh.watchLifecycle(plan.name, () => this.wake());
      await this.step(LauncherReason.StartFailed, 'resume the domain', daemon, () => virsh!.resume(plan!.name));
      this.phase = 'Running';
      this.mark('running');
      log.info({ domain: plan.name, console: this.consoleSocket }, 'guest running');

      const { final, stop } = await this.follow(virsh, daemon, plan, grace);
      this.mark('ended');
      return this.finish(outcomeOf({ final, stop, graceSeconds: grace, ...(this.accel ? { accel: this.accel } : {}) }));
    } catch (err) {
      const result = failureOutcome(err, this.accel);
      log.error({ reason: result.status.reason, err: result.status.message }, 'launcher failed');
      return this.finish(result);
    } finally {
      await watcher?.stop();
      if (virsh && plan && defined) await this.teardownDomain(virsh, daemon!, plan.name);
      for (const passt of passts) await passt.stop();
      await this.console?.close();
      await daemon?.stop();
    }
  }

  private finish(result: Outcome): Outcome {
    this.result = result;
    this.phase = result.status.phase;
    this.deps.logger.info({ phase: result.status.phase, reason: result.status.reason, exitCode: result.exitCode, timings: this.timings }, result.status.message);
    return result;
  }

  /** Runs a libvirt step; a failure carries QEMU's log tail (start errors land there) or libvirtd's. */
  private async step(reason: LauncherReason, what: string, daemon: Libvirtd, fn: () => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      if (!daemon.running) throw launchError(LauncherReason.LibvirtFailed, `cannot ${what}: ${await daemon.diagnostics()}`, err);
      const qemuLog = this.domain ? await fileTail(qemuLogPath(daemon.paths, this.domain), 6) : '';
      throw launchError(reason, `cannot ${what}: ${(err as Error).message}${qemuLog ? `\nQEMU log:\n${qemuLog}` : ''}`, err);
    }
  }

  /** Sleeps until the poll interval passes, a lifecycle event arrives or a stop is requested. */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.wake = () => undefined;
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      this.wake = done;
    });
  }

  /** `domstate`, tolerating a few transient failures while libvirtd lives. */
  private async domstate(virsh: Virsh, daemon: Libvirtd, name: string): Promise<DomainStateReason> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await virsh.domstate(name);
      } catch (err) {
        if (!daemon.running) throw launchError(LauncherReason.LibvirtFailed, `libvirtd ended while the guest ran: ${await daemon.diagnostics()}`, err);
        if (attempt >= 3) throw err;
        await new Promise((r) => setTimeout(r, 500));
      }
    }
  }

  private async follow(virsh: Virsh, daemon: Libvirtd, plan: DomainPlan, grace: number): Promise<{ final: DomainStateReason; stop: StopAction }> {
    const log = this.deps.logger;
    const interval = this.config.pollIntervalMs ?? POLL_INTERVAL_MS;
    let stop: StopAction = 'none';
    let deadline: number | undefined;
    let handledRequests = 0;
    for (;;) {
      const state = await this.domstate(virsh, daemon, plan.name);
      if (state.state !== this.domainState?.state || state.reason !== this.domainState?.reason) log.info({ state: state.state, reason: state.reason }, 'domain state');
      this.domainState = state;
      if (state.state === 'shut off' || state.state === 'crashed') return { final: state, stop };

      if (this.stopRequests > handledRequests) {
        const first = handledRequests === 0;
        handledRequests = this.stopRequests;
        this.phase = 'Stopping';
        if (first && plan.acpi && grace > 0) {
          await virsh.shutdownAcpi(plan.name).catch((err: Error) => log.warn({ err: err.message }, 'ACPI shutdown request failed'));
          stop = 'acpi';
          deadline = this.now() + grace * 1000;
          log.info({ graceSeconds: grace }, 'ACPI shutdown sent');
        } else {
          await virsh.destroy(plan.name).catch((err: Error) => log.warn({ err: err.message }, 'destroy failed'));
          stop = 'destroyed';
          continue;
        }
      }
      if (deadline !== undefined && this.now() >= deadline && stop === 'acpi') {
        log.warn({ graceSeconds: grace }, 'the guest did not power off within the grace period; destroying it');
        await virsh.destroy(plan.name).catch((err: Error) => log.warn({ err: err.message }, 'destroy failed'));
        stop = 'destroyedAfterGrace';
        continue;
      }
      await this.pause(deadline !== undefined ? Math.min(interval, deadline - this.now()) : interval);
    }
  }

  /** Leaves nothing running: destroys a still-running domain, undefines it, kills an orphaned QEMU. */
  private async teardownDomain(virsh: Virsh, daemon: Libvirtd, name: string): Promise<void> {
    const log = this.deps.logger;
    if (daemon.running) {
      const state = await virsh.domstate(name).catch(() => undefined);
      if (state && state.state !== 'shut off') await virsh.destroy(name).catch((err: Error) => log.warn({ err: err.message }, 'destroy failed'));
      await virsh.undefine(name).catch((err: Error) => log.warn({ err: err.message }, 'undefine failed'));
      return;
    }
    // libvirtd is gone: QEMU may still run; its pid file says which process.
    const pid = Number((await readFile(qemuPidPath(daemon.paths, name), 'utf8').catch(() => '')).trim());
    if (Number.isInteger(pid) && pid > 1) {
      try {
        process.kill(pid, 'SIGKILL');
        log.warn({ pid }, 'killed QEMU left behind by libvirtd');
      } catch {
        // already gone
      }
    }
  }
}
