/**
 * What the launcher tells the VM controller, two ways. The termination message: how the guest
 * ended, written by the launcher to /dev/termination-log and read by the VM controller from the
 * pod's container status; one JSON object of at most 4096 bytes (the kubelet's limit):
 * `{"phase","reason","message","accel"}`. And the live `GET /status` body (launcher-pod.ts has the
 * port and path) while it runs: its phase, the domain's state, the accelerator.
 */

export const LAUNCHER_STATUS_MAX_BYTES = 4096;

export interface LauncherStatus {
  /** Succeeded: the guest powered off (by itself or gracefully); Failed: it crashed or never ran. */
  readonly phase: 'Succeeded' | 'Failed';
  /** A CamelCase reason (Shutdown, Destroyed, Crashed, NoKVM, LibvirtFailed, InvalidSpec, ...). */
  readonly reason: string;
  readonly message: string;
  readonly accel?: 'kvm' | 'tcg';
}

/** JSON that fits the limit: the message is shortened (on a character boundary, with "…") when needed. */
export function encodeLauncherStatus(status: LauncherStatus): string {
  const encode = (message: string) => JSON.stringify({ phase: status.phase, reason: status.reason, message, ...(status.accel ? { accel: status.accel } : {}) });
  const full = encode(status.message);
  if (Buffer.byteLength(full) <= LAUNCHER_STATUS_MAX_BYTES) return full;
  // Each character costs its JSON-escaped UTF-8 bytes; keep the longest prefix that fits.
  let budget = LAUNCHER_STATUS_MAX_BYTES - Buffer.byteLength(encode('…'));
  let kept = '';
  for (const char of status.message) {
    budget -= Buffer.byteLength(JSON.stringify(char)) - 2;
    if (budget < 0) break;
    kept += char;
  }
  return encode(`${kept}…`);
}

/** The status, or undefined for anything else (e.g. a log tail the kubelet used as fallback). */
export function decodeLauncherStatus(text: string): LauncherStatus | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (value === null || typeof value !== 'object') return undefined;
  const v = value as Record<string, unknown>;
  if ((v.phase !== 'Succeeded' && v.phase !== 'Failed') || typeof v.reason !== 'string' || typeof v.message !== 'string') return undefined;
  return {
    phase: v.phase,
    reason: v.reason,
    message: v.message,
    ...(v.accel === 'kvm' || v.accel === 'tcg' ? { accel: v.accel } : {}),
  };
}

/**
 * The reasons the launcher ends with, its phase and process exit status for each. Succeeded exits 0;
 * each failure has its own small status so a shell (or `kubectl get pod`) tells them apart.
 */
export const LauncherReason = {
  /** The guest powered off: by itself, or after the ACPI shutdown a stop request sent. */
  Shutdown: 'Shutdown',
  /** A stop request destroyed the guest: no ACPI, a zero grace period, or a second request. */
  Destroyed: 'Destroyed',
  /** The stop request came before the guest was started. */
  Stopped: 'Stopped',
  /** The guest ignored the ACPI shutdown for the whole grace period and was destroyed (KubeVirt: Failed). */
  GracePeriodExpired: 'GracePeriodExpired',
  /** QEMU ended without the guest powering off (crash, kill, destroyed from outside). */
  Crashed: 'Crashed',
  InvalidSpec: 'InvalidSpec',
  /** KVM is not usable and emulation is not allowed (or KVM was demanded). */
  NoKvm: 'NoKVM',
  VolumeFailed: 'VolumeFailed',
  LibvirtFailed: 'LibvirtFailed',
  /** libvirt refused the domain or QEMU did not start (its log tail is in the message). */
  StartFailed: 'StartFailed',
  LauncherError: 'LauncherError',
} as const;
export type LauncherReason = (typeof LauncherReason)[keyof typeof LauncherReason];

export const LAUNCHER_REASONS: Readonly<Record<LauncherReason, { readonly phase: LauncherStatus['phase']; readonly exitCode: number }>> = Object.freeze({
  Shutdown: { phase: 'Succeeded', exitCode: 0 },
  Destroyed: { phase: 'Succeeded', exitCode: 0 },
  Stopped: { phase: 'Succeeded', exitCode: 0 },
  InvalidSpec: { phase: 'Failed', exitCode: 2 },
  GracePeriodExpired: { phase: 'Failed', exitCode: 3 },
  Crashed: { phase: 'Failed', exitCode: 4 },
  NoKVM: { phase: 'Failed', exitCode: 5 },
  VolumeFailed: { phase: 'Failed', exitCode: 6 },
  LibvirtFailed: { phase: 'Failed', exitCode: 7 },
  StartFailed: { phase: 'Failed', exitCode: 8 },
  LauncherError: { phase: 'Failed', exitCode: 9 },
});

export function isLauncherReason(value: string): value is LauncherReason {
  return Object.prototype.hasOwnProperty.call(LAUNCHER_REASONS, value);
}

/** The launcher's phase in `GET /status`: the termination phases and the ones before. */
export type LauncherPhase = 'Starting' | 'Running' | 'Stopping' | LauncherStatus['phase'];
const LAUNCHER_PHASES: readonly string[] = ['Starting', 'Running', 'Stopping', 'Succeeded', 'Failed'];

/** The `GET /status` body. */
export interface LauncherStatusBody {
  readonly phase: LauncherPhase;
  /** libvirt's domain name, `<namespace>_<name>`. */
  readonly domain?: string;
  /** `virsh domstate --reason`: state and reason. */
  readonly domainState?: string;
  readonly domainReason?: string;
  readonly accel?: 'kvm' | 'tcg';
  /** The guest runs under TCG (software emulation): the controller reports it as a condition. */
  readonly emulation?: boolean;
  readonly consoleSocket?: string;
  /** Once the run ended: its reason and message, as in the termination message. */
  readonly reason?: string;
  readonly message?: string;
  /** Milliseconds from the launcher's start to each step. */
  readonly timings: Readonly<Record<string, number>>;
}

export function encodeLauncherStatusBody(body: LauncherStatusBody): string {
  return `${JSON.stringify(body)}\n`;
}

/** The body, or undefined for anything that is not one (an older launcher, a proxy's error page). */
export function decodeLauncherStatusBody(text: string): LauncherStatusBody | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return undefined;
  const v = value as Record<string, unknown>;
  if (typeof v.phase !== 'string' || !LAUNCHER_PHASES.includes(v.phase)) return undefined;
  const str = (key: string) => (typeof v[key] === 'string' ? { [key]: v[key] as string } : {});
  const timings: Record<string, number> = {};
  if (v.timings !== null && typeof v.timings === 'object') {
    for (const [step, ms] of Object.entries(v.timings as Record<string, unknown>)) if (typeof ms === 'number') timings[step] = ms;
  }
  return {
    phase: v.phase as LauncherPhase,
    ...str('domain'),
    ...str('domainState'),
    ...str('domainReason'),
    ...(v.accel === 'kvm' || v.accel === 'tcg' ? { accel: v.accel } : {}),
    ...(typeof v.emulation === 'boolean' ? { emulation: v.emulation } : {}),
    ...str('consoleSocket'),
    ...str('reason'),
    ...str('message'),
    timings,
  };
}
