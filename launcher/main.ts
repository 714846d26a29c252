/**
 * `ferry launcher` and `ferry console`: composition root of the launcher program. The only place
 * that reads flags and the environment, resolves the user QEMU runs as, installs signal handlers and
 * writes the termination message.
 */

import { existsSync, statSync } from 'node:fs';
import { access, chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { ErrorCode, FerryError } from '../src/errors.js';
import { runTool } from '../src/io/child-process.js';
import { createLogger } from '../src/logging.js';
import type { VirtualMachineInstance } from '../src/api/kubevirt.js';
import { PodNetworkBackend, PodPath } from '../src/contract/launch-plan.js';
import { type AccelRequest, decodeConsoleArgs, decodeLauncherArgs, decodeLauncherVmi, DEFAULT_LAUNCHER_STATUS_PORT, LauncherPodEnv } from '../src/contract/launcher-pod.js';
import { encodeLauncherStatus, type LauncherStatus } from '../src/contract/launcher-status.js';
import { TERMINATION_MESSAGE_PATH } from '../src/contract/termination.js';
import { attachConsole } from './console.js';
import { KVM_DEVICE } from './kvm-probe.js';
import { Launcher, type LauncherConfig } from './launcher.js';
import type { RunAs } from './libvirtd.js';
import { failureOutcome } from './outcome.js';
import { startStatusServer, type StatusServer } from './status-server.js';

const VMI_ENV = LauncherPodEnv.Vmi;
const TERMINATION_LOG = TERMINATION_MESSAGE_PATH;
export const DEFAULT_QEMU_USER = 'libvirt-qemu';
export const DEFAULT_EMULATOR = '/usr/bin/qemu-system-x86_64';

export const LAUNCHER_USAGE = `Usage: ferry launcher [--vmi FILE] [options]

Runs one VirtualMachineInstance: starts libvirtd (session mode, no systemd), defines and starts the
domain, serves its serial console and /readyz, follows it until it is shut off. SIGTERM powers the
guest off through ACPI and destroys it after spec.terminationGracePeriodSeconds.

Options:
  --vmi FILE              the VMI as YAML or JSON (default: $${VMI_ENV}, JSON)
  --volumes-dir DIR       filesystem PVCs as DIR/<volume>/disk.img (default ${PodPath.VmiDisks})
  --volume-size VOL=SIZE  capacity of a PVC volume, sizes its disk.img (repeatable; default: its free space)
  --accel MODE            auto, kvm or tcg (default auto: KVM when a probe guest runs under it)
  --allow-emulation       with --accel auto: use TCG when KVM does not work
  --pod-network BACKEND   passt (every port of the network namespace reaches the guest) or slirp
                          (QEMU user-mode NAT, declared ports only). Default: passt in the pod
                          ($${VMI_ENV}), slirp with --vmi, which runs in the machine's own namespace
  --serial-log FILE       append everything the guest prints on its serial console to FILE
  --runtime-dir DIR       keep all run-time state under DIR (default: the pod's /var/run paths)
  --cache-dir DIR         libvirt's QEMU capability cache, shared by runs (default ~/.cache/ferry/libvirt)
  --status-port PORT      HTTP /readyz, /healthz, /status (default ${DEFAULT_LAUNCHER_STATUS_PORT}; 0: any free port)
  --status-address ADDR   address of that endpoint (default 0.0.0.0)
  --termination-log FILE  where the JSON termination message goes (default ${TERMINATION_LOG} if it exists)
  --qemu-user NAME        when run as root: the user libvirtd and QEMU run as (default ${DEFAULT_QEMU_USER})
  --emulator PATH         the QEMU binary (default ${DEFAULT_EMULATOR})
  --log-level LEVEL       pino level (default info)

Exit status: 0 the guest powered off or was stopped; 2 invalid VMI or flags; 3 grace period expired;
4 the guest crashed; 5 no usable KVM; 6 a volume failed; 7 libvirtd failed; 8 the domain did not start;
9 other launcher errors.`;

export const CONSOLE_USAGE = `Usage: ferry console --socket PATH

Attaches to a launcher's serial console socket: prints what the guest printed so far (up to 1 MiB)
and then live output, sends your input to the guest. On a terminal, Ctrl-] detaches.`;

export interface LauncherOptions {
  readonly vmiFile?: string;
  readonly volumesDir: string;
  readonly volumeSizes: Readonly<Record<string, number>>;
  readonly accel: AccelRequest;
  readonly allowEmulation: boolean;
  readonly podNetwork: PodNetworkBackend;
  readonly serialLog?: string;
  readonly runtimeDir?: string;
  readonly cacheDir?: string;
  readonly statusPort: number;
  readonly statusAddress: string;
  readonly terminationLog?: string;
  readonly qemuUser: string;
  readonly emulator: string;
  readonly logLevel: string;
}

function invalid(message: string): FerryError {
  return new FerryError(ErrorCode.InvalidSpec, message, { details: { reason: 'InvalidSpec' } });
}

/** Pure: flags (decoded by the launcher pod contract) and the two environment variables that give defaults → options. */
export function parseLauncherArgs(argv: readonly string[], env: NodeJS.ProcessEnv): LauncherOptions {
  const args = decodeLauncherArgs(argv);
  const cacheBase = env.XDG_CACHE_HOME || (env.HOME && env.HOME !== '/' ? join(env.HOME, '.cache') : undefined);
  const abs = (p: string | undefined) => (p === undefined ? undefined : resolve(p));
  return {
    ...(args.vmiFile !== undefined ? { vmiFile: args.vmiFile } : {}),
    volumesDir: abs(args.volumesDir) ?? PodPath.VmiDisks,
    volumeSizes: args.volumeSizes,
    accel: args.accel ?? 'auto',
    allowEmulation: args.allowEmulation,
    // passt takes every free port of the namespace it runs in: right for the pod's own, not for a machine's.
    podNetwork: args.podNetwork ?? (args.vmiFile === undefined ? PodNetworkBackend.Passt : PodNetworkBackend.Slirp),
    ...(args.serialLog !== undefined ? { serialLog: abs(args.serialLog) } : {}),
    ...(args.runtimeDir !== undefined ? { runtimeDir: abs(args.runtimeDir) } : {}),
    ...(args.cacheDir !== undefined ? { cacheDir: abs(args.cacheDir) } : cacheBase ? { cacheDir: join(cacheBase, 'ferry', 'libvirt') } : {}),
    statusPort: args.statusPort ?? DEFAULT_LAUNCHER_STATUS_PORT,
    statusAddress: args.statusAddress ?? '0.0.0.0',
    ...(args.terminationLog !== undefined ? { terminationLog: abs(args.terminationLog) } : existsSync(TERMINATION_LOG) ? { terminationLog: TERMINATION_LOG } : {}),
    qemuUser: args.qemuUser ?? DEFAULT_QEMU_USER,
    emulator: args.emulator ?? DEFAULT_EMULATOR,
    logLevel: args.logLevel ?? 'info',
  };
}

async function loadVmi(options: LauncherOptions, env: NodeJS.ProcessEnv): Promise<VirtualMachineInstance> {
  if (options.vmiFile === undefined) {
    const json = env[VMI_ENV];
    if (!json) throw invalid(`no VMI: pass --vmi FILE or set ${VMI_ENV}`);
    return decodeLauncherVmi(json);
  }
  const text = await readFile(options.vmiFile, 'utf8').catch((err: Error) => {
    throw invalid(`cannot read --vmi ${options.vmiFile}: ${err.message}`);
  });
  // Loaded here, not at start-up: client-node takes ~0.7 s to import, and the signal handlers
  // must be in place before that.
  const { loadYaml } = await import('@kubernetes/client-node');
  try {
    return loadYaml<VirtualMachineInstance>(text);
  } catch (err) {
    throw invalid(`the VMI is not valid YAML or JSON: ${(err as Error).message}`);
  }
}

/** uid and primary gid of a user, from the system's user database. */
async function lookupUser(name: string): Promise<RunAs> {
  const stdout = await runTool('getent', ['passwd', name], { timeoutMs: 10_000 }).then(
    (out) => out.stdout,
    () => '',
  );
  const fields = stdout.trim().split(':');
  if (fields.length < 4) {
    throw invalid(`the launcher runs as root and starts libvirtd and QEMU as user "${name}", which does not exist; create it (useradd -r ${name}) or pass --qemu-user`);
  }
  return { uid: Number(fields[2]), gid: Number(fields[3]) };
}

/**
 * libvirtd is spawned with one group only (no supplementary groups), so where /dev/kvm is open to a
 * group (root:kvm 0660 on Debian) that group becomes the daemon's, letting QEMU open it.
 */
function kvmGroup(user: RunAs): RunAs {
  try {
    const st = statSync(KVM_DEVICE);
    return (st.mode & 0o006) !== 0o006 && (st.mode & 0o060) === 0o060 ? { uid: user.uid, gid: st.gid } : user;
  } catch {
    return user;
  }
}

/** A directory the process can create and write, else undefined. */
async function writableDir(dir: string | undefined): Promise<string | undefined> {
  if (dir === undefined) return undefined;
  try {
    await mkdir(dir, { recursive: true });
    await access(dir, 2 /* W_OK */);
    return dir;
  } catch {
    return undefined;
  }
}

interface Layout {
  readonly libvirtDir: string;
  readonly privateDir: string;
  readonly cloudInitDir: string;
  readonly secretsDir: string;
  readonly temporary?: string;
}

/** `<TMPDIR>/ferry-XXXXXX`: short, since libvirt's sockets below it must fit 107 bytes. */
export const TEMPORARY_ROOT_PREFIX = 'ferry-';

/**
 * The mode of the launcher's own temporary run-time directory. mkdtemp makes it 0700; when QEMU runs
 * as another user (the launcher runs as root) it must traverse it to open the cloud-init ISO, the
 * empty disks and the serial socket below: the directory stays root's and opens to QEMU's group only,
 * to search, never to list or write (a user that could write it could plant links root follows).
 */
export function temporaryRootAccess(runAs: RunAs | undefined): { readonly mode: number; readonly gid?: number } {
  return runAs ? { mode: 0o710, gid: runAs.gid } : { mode: 0o700 };
}

/**
 * Everything under --runtime-dir; else, when the VM controller started us (the VMI in $FERRY_VMI),
 * the pod's paths; else (a local run) a temporary directory, removed at the end.
 */
async function layout(options: LauncherOptions, inPod: boolean, runAs: RunAs | undefined): Promise<Layout> {
  let root = options.runtimeDir;
  let temporary: string | undefined;
  if (root === undefined) {
    if (inPod && (await writableDir(PodPath.LibvirtRuntime))) {
      return { libvirtDir: PodPath.LibvirtRuntime, privateDir: PodPath.Private, cloudInitDir: PodPath.CloudInitDir, secretsDir: PodPath.SecretSources };
    }
    root = temporary = await mkdtemp(join(tmpdir(), TEMPORARY_ROOT_PREFIX));
    const access = temporaryRootAccess(runAs);
    if (access.gid !== undefined) await chown(root, process.getuid?.() ?? 0, access.gid);
    await chmod(root, access.mode);
  }
  await mkdir(root, { recursive: true, mode: 0o755 });
  return {
    libvirtDir: join(root, 'libvirt'),
    privateDir: join(root, 'private'),
    cloudInitDir: join(root, 'ephemeral', 'cloud-init-data'),
    secretsDir: join(root, 'secrets'),
    ...(temporary ? { temporary } : {}),
  };
}

export interface LauncherIo {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
}

/** `ferry launcher`: runs until the guest is shut off; resolves to the exit status. */
export async function launcherCommand(argv: readonly string[], env: NodeJS.ProcessEnv, io: LauncherIo): Promise<number> {
  if (argv.includes('--help') || argv.includes('-h')) {
    io.stderr.write(`${LAUNCHER_USAGE}\n`);
    return 0;
  }
  let options: LauncherOptions;
  try {
    options = parseLauncherArgs(argv, env);
  } catch (err) {
    io.stderr.write(`error INVALID_SPEC: ${(err as Error).message}\n\n${LAUNCHER_USAGE}\n`);
    return 2;
  }
  const logger = createLogger({ name: 'ferry-launcher', level: options.logLevel });
  const writeTermination = async (status: LauncherStatus) => {
    if (!options.terminationLog) return;
    await writeFile(options.terminationLog, encodeLauncherStatus(status)).catch((err: Error) =>
      logger.warn({ path: options.terminationLog, err: err.message }, 'cannot write the termination message'),
    );
  };
  // Installed first: a SIGTERM during start-up must not kill the process before it can clean up.
  let launcher: Launcher | undefined;
  let earlyStops = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    logger.info({ signal }, 'signal received');
    if (launcher) launcher.requestStop();
    else earlyStops += 1;
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  let dirs: Layout | undefined;
  let server: StatusServer | undefined;
  try {
    let config: LauncherConfig;
    try {
      const vmi = await loadVmi(options, env);
      const runAs = process.getuid?.() === 0 ? kvmGroup(await lookupUser(options.qemuUser)) : undefined;
      dirs = await layout(options, options.vmiFile === undefined, runAs);
      const cache = await writableDir(options.cacheDir);
      config = {
        vmi,
        accel: options.accel,
        allowEmulation: options.allowEmulation,
        podNetwork: options.podNetwork,
        emulator: options.emulator,
        libvirtDir: dirs.libvirtDir,
        privateDir: dirs.privateDir,
        volumes: {
          volumes: options.volumesDir,
          block: PodPath.BlockDir,
          cloudInit: dirs.cloudInitDir,
          emptyDisks: join(dirs.libvirtDir, 'empty-disks'),
          secrets: dirs.secretsDir,
        },
        volumeSizes: options.volumeSizes,
        ...(options.serialLog ? { serialLog: options.serialLog } : {}),
        ...(runAs ? { runAs } : {}),
        ...(cache ? { capabilityCache: cache } : {}),
      };
      launcher = new Launcher(config, { logger });
      for (; earlyStops > 0; earlyStops--) launcher.requestStop();
      server = await startStatusServer(launcher, options.statusPort, options.statusAddress);
      logger.info({ port: server.port, address: options.statusAddress }, 'status endpoint listening');
    } catch (err) {
      const result = failureOutcome(err, undefined);
      logger.error({ reason: result.status.reason }, result.status.message);
      await writeTermination(result.status);
      return result.exitCode;
    }
    const result = await launcher.run();
    await writeTermination(result.status);
    return result.exitCode;
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
    await server?.close();
    if (dirs?.temporary) await rm(dirs.temporary, { recursive: true, force: true });
  }
}

/** `ferry console --socket PATH`. */
export async function consoleCommand(argv: readonly string[], io: { stdin: NodeJS.ReadStream; stdout: NodeJS.WritableStream; stderr: NodeJS.WritableStream }): Promise<number> {
  let socket: string | undefined;
  try {
    const args = decodeConsoleArgs(argv);
    if (args.help) {
      io.stderr.write(`${CONSOLE_USAGE}\n`);
      return 0;
    }
    socket = args.socket;
  } catch (err) {
    io.stderr.write(`error INVALID_SPEC: ${(err as Error).message}\n\n${CONSOLE_USAGE}\n`);
    return 2;
  }
  if (!socket) {
    io.stderr.write(`error INVALID_SPEC: --socket is required\n\n${CONSOLE_USAGE}\n`);
    return 2;
  }
  return attachConsole({ socketPath: socket, stdin: io.stdin, stdout: io.stdout, stderr: io.stderr });
}
