/**
 * The launcher pod's contract: what the VM controller writes into the pod and the launcher reads
 * (the `compute` container, the VMI in `$FERRY_VMI`, the `ferry launcher` argv), what the launcher
 * serves back (its HTTP port and paths), and the `ferry console --socket` argv the CLI runs in the
 * pod. One codec, used by controller/vm/launcher-pod.ts, launcher/main.ts and cli/console-main.ts.
 * The termination message and `/status` body are in launcher-status.ts; paths in launch-plan.ts.
 */

import { parseArgs } from 'node:util';
import { API_VERSION, Kind, type VirtualMachineInstance } from '../api/kubevirt.js';
import { ErrorCode, FerryError } from '../errors.js';
import { parseQuantity } from '../quantity.js';
import { POD_NETWORK_BACKENDS, type PodNetworkBackend } from './launch-plan.js';

/** The container that runs the launcher (KubeVirt's name; `kubectl exec` and the CLI pick it). */
export const LAUNCHER_CONTAINER = 'compute';

/** Environment variables the controller sets in the launcher container. */
export const LauncherPodEnv = {
  /** The VMI, JSON (encodeLauncherVmi). */
  Vmi: 'FERRY_VMI',
  /** The pod's own name, from the downward API. */
  PodName: 'POD_NAME',
} as const;

/** The launcher's HTTP endpoint: the port it listens on unless told otherwise, and its paths. */
export const DEFAULT_LAUNCHER_STATUS_PORT = 8181;
export const LauncherHttpPath = {
  /** 200 while the domain runs: the pod's readiness probe. */
  Ready: '/readyz',
  /** 200 while the process serves. */
  Health: '/healthz',
  /** The launcher's status as JSON (launcher-status.ts: encodeLauncherStatusBody). */
  Status: '/status',
} as const;

/** The `ferry` executable and its subcommands, as a container's command line names them. */
export const FERRY_COMMAND = 'ferry';
export const LauncherCommand = { Launcher: 'launcher', Console: 'console' } as const;

export type AccelRequest = 'auto' | 'kvm' | 'tcg';
export const ACCEL_REQUESTS: readonly AccelRequest[] = ['auto', 'kvm', 'tcg'];

/**
 * The flags of `ferry launcher`, as given: no defaults applied, paths not resolved (launcher/main.ts
 * does both). The VM controller sets the status port, accel, emulation and the volume sizes.
 */
export interface LauncherArgs {
  readonly statusPort?: number;
  readonly accel?: AccelRequest;
  readonly allowEmulation: boolean;
  /** `--pod-network passt|slirp` (launch-plan.ts `PodNetworkBackend`; the launcher defaults to passt). */
  readonly podNetwork?: PodNetworkBackend;
  /** Capacity in bytes of each filesystem PVC volume, by volume name (`--volume-size VOL=BYTES`). */
  readonly volumeSizes: Readonly<Record<string, number>>;
  readonly vmiFile?: string;
  readonly volumesDir?: string;
  readonly serialLog?: string;
  readonly runtimeDir?: string;
  readonly cacheDir?: string;
  readonly statusAddress?: string;
  readonly terminationLog?: string;
  readonly qemuUser?: string;
  readonly emulator?: string;
  readonly logLevel?: string;
}

/** The string-valued flags, by field. */
const STRING_FLAGS = {
  vmiFile: 'vmi',
  volumesDir: 'volumes-dir',
  serialLog: 'serial-log',
  runtimeDir: 'runtime-dir',
  cacheDir: 'cache-dir',
  statusAddress: 'status-address',
  terminationLog: 'termination-log',
  qemuUser: 'qemu-user',
  emulator: 'emulator',
  logLevel: 'log-level',
} as const satisfies Partial<Record<keyof LauncherArgs, string>>;

/** Every flag `ferry launcher` takes (without the leading `--`). */
export const LAUNCHER_FLAGS: readonly string[] = ['status-port', 'accel', 'allow-emulation', 'pod-network', 'volume-size', ...Object.values(STRING_FLAGS)];

function invalid(message: string): FerryError {
  return new FerryError(ErrorCode.InvalidSpec, message, { details: { reason: 'InvalidSpec' } });
}

function isPort(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= 65535;
}

/** `--flag value`, or `--flag=value` for a value that would read as a flag. */
function option(flag: string, value: string): string[] {
  return value.startsWith('-') ? [`--${flag}=${value}`] : [`--${flag}`, value];
}

/** The argv after `ferry launcher`. */
export function encodeLauncherArgs(args: LauncherArgs): string[] {
  const argv: string[] = [];
  if (args.statusPort !== undefined) {
    if (!isPort(args.statusPort)) throw invalid(`the status port must be 0..65535, got ${args.statusPort}`);
    argv.push('--status-port', String(args.statusPort));
  }
  if (args.accel !== undefined) argv.push('--accel', args.accel);
  if (args.allowEmulation) argv.push('--allow-emulation');
  if (args.podNetwork !== undefined) argv.push('--pod-network', args.podNetwork);
  for (const [volume, bytes] of Object.entries(args.volumeSizes)) {
    if (volume === '' || volume.includes('=') || !Number.isSafeInteger(bytes) || bytes < 0) throw invalid(`volume size ${volume}=${bytes} cannot be passed`);
    argv.push(...option('volume-size', `${volume}=${bytes}`));
  }
  for (const [field, flag] of Object.entries(STRING_FLAGS) as Array<[keyof typeof STRING_FLAGS, string]>) {
    const value = args[field];
    if (value !== undefined) argv.push(...option(flag, value));
  }
  return argv;
}

/** Reads the argv after `ferry launcher`. Throws INVALID_SPEC (reason InvalidSpec) naming the flag. */
export function decodeLauncherArgs(argv: readonly string[]): LauncherArgs {
  let parsed: ReturnType<typeof parseLaunch>;
  try {
    parsed = parseLaunch(argv);
  } catch (err) {
    throw invalid((err as Error).message);
  }
  const { values, positionals } = parsed;
  if (positionals.length > 0) throw invalid(`unexpected argument "${positionals[0]}"`);
  const accel = values.accel;
  if (accel !== undefined && !(ACCEL_REQUESTS as readonly string[]).includes(accel)) throw invalid(`--accel must be one of ${ACCEL_REQUESTS.join(', ')}, got "${accel}"`);
  const podNetwork = values['pod-network'];
  if (podNetwork !== undefined && !(POD_NETWORK_BACKENDS as readonly string[]).includes(podNetwork)) {
    throw invalid(`--pod-network must be one of ${POD_NETWORK_BACKENDS.join(', ')}, got "${podNetwork}"`);
  }
  const volumeSizes: Record<string, number> = {};
  for (const item of values['volume-size'] ?? []) {
    const eq = item.indexOf('=');
    if (eq <= 0) throw invalid(`--volume-size wants VOLUME=SIZE (e.g. rootdisk=10Gi), got "${item}"`);
    try {
      volumeSizes[item.slice(0, eq)] = parseQuantity(item.slice(eq + 1));
    } catch (err) {
      throw invalid(`--volume-size ${item}: ${(err as Error).message}`);
    }
  }
  const portText = values['status-port'];
  const statusPort = portText === undefined ? undefined : /^\d+$/.test(portText) ? Number(portText) : Number.NaN;
  if (statusPort !== undefined && !isPort(statusPort)) throw invalid(`--status-port must be 0..65535, got "${portText}"`);
  const strings: Partial<Record<keyof typeof STRING_FLAGS, string>> = {};
  for (const [field, flag] of Object.entries(STRING_FLAGS) as Array<[keyof typeof STRING_FLAGS, keyof typeof values]>) {
    const value = values[flag];
    if (typeof value === 'string') strings[field] = value;
  }
  return {
    ...(statusPort !== undefined ? { statusPort } : {}),
    ...(accel !== undefined ? { accel: accel as AccelRequest } : {}),
    allowEmulation: values['allow-emulation'] === true,
    ...(podNetwork !== undefined ? { podNetwork: podNetwork as PodNetworkBackend } : {}),
    volumeSizes,
    ...strings,
  };
}

function parseLaunch(argv: readonly string[]) {
  const string = { type: 'string' } as const;
  return parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: {
      'status-port': string,
      accel: string,
      'allow-emulation': { type: 'boolean' },
      'pod-network': string,
      'volume-size': { type: 'string', multiple: true },
      vmi: string,
      'volumes-dir': string,
      'serial-log': string,
      'runtime-dir': string,
      'cache-dir': string,
      'status-address': string,
      'termination-log': string,
      'qemu-user': string,
      emulator: string,
      'log-level': string,
    },
  });
}

/**
 * The container's arguments that run the launcher with these flags. No `command`: the image's
 * entrypoint (tini, then `ferry`) runs them, so PID 1 reaps the QEMU processes libvirtd daemonizes
 * (with node as PID 1 libvirt waited ~30 s on each zombie: docs/adr/0007-images.md).
 */
export function launcherCommandLine(args: LauncherArgs): { args: string[] } {
  return { args: [LauncherCommand.Launcher, ...encodeLauncherArgs(args)] };
}

/**
 * The VMI as the launcher receives it: identity and spec, nothing the controller owns (status,
 * annotations, finalizers, resource version), as JSON.
 */
export function encodeLauncherVmi(vmi: VirtualMachineInstance): string {
  return JSON.stringify({
    apiVersion: API_VERSION,
    kind: Kind.VMI,
    metadata: {
      name: vmi.metadata.name ?? '',
      namespace: vmi.metadata.namespace ?? 'default',
      uid: vmi.metadata.uid ?? '',
      ...(vmi.metadata.labels ? { labels: vmi.metadata.labels } : {}),
    },
    spec: vmi.spec,
  } satisfies VirtualMachineInstance);
}

/** Reads `$FERRY_VMI`. Throws INVALID_SPEC for text that is not a JSON object with metadata and spec. */
export function decodeLauncherVmi(text: string): VirtualMachineInstance {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw invalid(`${LauncherPodEnv.Vmi} is not JSON: ${(err as Error).message}`);
  }
  const v = value as Partial<VirtualMachineInstance> | null;
  if (v === null || typeof v !== 'object' || Array.isArray(v) || typeof v.metadata !== 'object' || v.metadata === null || typeof v.spec !== 'object' || v.spec === null) {
    throw invalid(`${LauncherPodEnv.Vmi} is not a VirtualMachineInstance (an object with metadata and spec)`);
  }
  return v as VirtualMachineInstance;
}

/** `ferry console --socket PATH`: what the CLI runs in the launcher pod to reach one of its sockets. */
export function consoleCommandLine(socketPath: string): string[] {
  return [FERRY_COMMAND, LauncherCommand.Console, ...encodeConsoleArgs({ socket: socketPath })];
}

export interface ConsoleArgs {
  readonly socket?: string;
  readonly help?: boolean;
}

export function encodeConsoleArgs(args: ConsoleArgs): string[] {
  return [...(args.socket !== undefined ? option('socket', args.socket) : []), ...(args.help ? ['--help'] : [])];
}

/** The argv after `ferry console`, in the pod (or next to a local launcher). Throws INVALID_SPEC. */
export function decodeConsoleArgs(argv: readonly string[]): ConsoleArgs {
  try {
    const { values } = parseArgs({ args: [...argv], options: { socket: { type: 'string' }, help: { type: 'boolean', short: 'h' } } });
    return { ...(values.socket !== undefined ? { socket: values.socket } : {}), ...(values.help ? { help: true } : {}) };
  } catch (err) {
    throw invalid((err as Error).message);
  }
}
