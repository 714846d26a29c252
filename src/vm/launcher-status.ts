/**
 * The launcher's termination message: how the guest ended, written by the launcher to
 * /dev/termination-log and read by the VM controller from the pod's container status. One JSON
 * object of at most 4096 bytes (the kubelet's limit): `{"phase","reason","message","accel"}`.
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

/** JSON that fits the limit: the message is shortened (on a character boundary) when needed. */
export function encodeLauncherStatus(status: LauncherStatus): string {
  let message = status.message;
  for (;;) {
    const text = JSON.stringify({ phase: status.phase, reason: status.reason, message, ...(status.accel ? { accel: status.accel } : {}) });
    if (Buffer.byteLength(text) <= LAUNCHER_STATUS_MAX_BYTES || message.length === 0) return text;
    const over = Buffer.byteLength(text) - LAUNCHER_STATUS_MAX_BYTES;
    message = Array.from(message).slice(0, Math.max(0, Array.from(message).length - Math.max(1, over))).join('');
  }
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
