/**
 * How a launcher run ended, as the termination message and exit status: pure functions of what the
 * launcher saw (the domain's final state, what it did on a stop request) or the error that ended it.
 */

import { ErrorCode, FerryError, isFerryError } from '../src/errors.js';
import type { Accel } from '../src/contract/launch-plan.js';
import { isLauncherReason, LAUNCHER_REASONS, LauncherReason, type LauncherStatus } from '../src/contract/launcher-status.js';
import type { DomainStateReason } from './virsh.js';

export interface Outcome {
  readonly status: LauncherStatus;
  readonly exitCode: number;
}

/** A FerryError that names the launcher reason it ends the run with. */
export function launchError(reason: LauncherReason, message: string, cause?: unknown): FerryError {
  const code = reason === LauncherReason.InvalidSpec ? ErrorCode.InvalidSpec : ErrorCode.Internal;
  return new FerryError(code, message, { ...(cause !== undefined ? { cause } : {}), details: { reason } });
}

function outcome(reason: LauncherReason, message: string, accel: Accel | undefined): Outcome {
  const { phase, exitCode } = LAUNCHER_REASONS[reason];
  return { status: { phase, reason, message, ...(accel ? { accel } : {}) }, exitCode };
}

/** What the launcher did about a stop request (SIGTERM). */
export type StopAction = 'none' | 'acpi' | 'destroyed' | 'destroyedAfterGrace';

export interface RunFacts {
  /** The domain's state when it stopped running. */
  readonly final: DomainStateReason;
  readonly stop: StopAction;
  readonly graceSeconds: number;
  readonly accel?: Accel;
}

/** The outcome of a run whose domain was started and has ended. */
export function outcomeOf(facts: RunFacts): Outcome {
  const { final, stop, accel } = facts;
  if (stop === 'destroyedAfterGrace') {
    return outcome(LauncherReason.GracePeriodExpired, `the guest did not power off within ${facts.graceSeconds} s of the ACPI shutdown request and was destroyed`, accel);
  }
  if (final.state === 'shut off' && final.reason === 'shutdown') {
    return outcome(LauncherReason.Shutdown, stop === 'acpi' ? 'the guest powered off after the ACPI shutdown request' : 'the guest powered off', accel);
  }
  if (final.state === 'shut off' && final.reason === 'destroyed' && stop === 'destroyed') {
    return outcome(LauncherReason.Destroyed, 'the guest was destroyed by the stop request (no ACPI, a zero grace period, or a second request)', accel);
  }
  return outcome(LauncherReason.Crashed, `the guest ended without powering off: ${final.state} (${final.reason})`, accel);
}

/** The outcome of a stop request that came before the guest was started. */
export function stoppedBeforeStart(accel: Accel | undefined): Outcome {
  return outcome(LauncherReason.Stopped, 'stopped before the guest was started', accel);
}

/** The outcome of an error that ended the run. */
export function failureOutcome(err: unknown, accel: Accel | undefined): Outcome {
  const reason = isFerryError(err) ? err.details.reason : undefined;
  if (typeof reason === 'string' && isLauncherReason(reason)) return outcome(reason, (err as Error).message, accel);
  if (isFerryError(err) && err.code === ErrorCode.InvalidSpec) return outcome(LauncherReason.InvalidSpec, err.message, accel);
  return outcome(LauncherReason.LauncherError, err instanceof Error ? err.message : String(err), accel);
}
