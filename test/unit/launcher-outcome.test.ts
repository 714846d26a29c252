/** The launcher's termination message: codec round trips, reasons, and how a run maps to them. */

import { describe, expect, test } from '@jest/globals';
import { ErrorCode, FerryError } from '../../src/errors.js';
import {
  decodeLauncherStatus,
  encodeLauncherStatus,
  LAUNCHER_REASONS,
  LAUNCHER_STATUS_MAX_BYTES,
  LauncherReason,
  type LauncherStatus,
} from '../../src/contract/launcher-status.js';
import { failureOutcome, launchError, outcomeOf, stoppedBeforeStart } from '../../launcher/outcome.js';

describe('launcher status codec', () => {
  test.each<LauncherStatus>([
    { phase: 'Succeeded', reason: 'Shutdown', message: 'the guest powered off', accel: 'tcg' },
    { phase: 'Failed', reason: 'NoKVM', message: 'KVM is not usable' },
    { phase: 'Failed', reason: 'StartFailed', message: 'cannot start: "quotes", ünïcödé\nQEMU log:\nline', accel: 'kvm' },
  ])('round-trips %j', (status) => {
    expect(decodeLauncherStatus(encodeLauncherStatus(status))).toEqual(status);
  });

  test('a long message is cut to fit 4096 bytes, on a character boundary', () => {
    const text = encodeLauncherStatus({ phase: 'Failed', reason: 'Crashed', message: 'é'.repeat(5000), accel: 'tcg' });
    expect(Buffer.byteLength(text)).toBeLessThanOrEqual(LAUNCHER_STATUS_MAX_BYTES);
    const decoded = decodeLauncherStatus(text);
    expect(decoded?.reason).toBe('Crashed');
    expect(decoded?.accel).toBe('tcg');
    expect(decoded?.message).toMatch(/^é{2000,}…$/);
  });

  test.each(['', 'panic: something', '{"phase":"Running","reason":"x","message":""}', '{"phase":"Failed"}', 'null'])('%j is not a status', (text) => {
    expect(decodeLauncherStatus(text)).toBeUndefined();
  });
});

describe('reasons', () => {
  test('succeeded reasons exit 0, failures have distinct non-zero statuses', () => {
    const codes = Object.values(LauncherReason).map((r) => LAUNCHER_REASONS[r]);
    for (const { phase, exitCode } of codes) expect(exitCode === 0).toBe(phase === 'Succeeded');
    const failed = codes.filter((c) => c.phase === 'Failed').map((c) => c.exitCode);
    expect(new Set(failed).size).toBe(failed.length);
  });
});

describe('outcomeOf', () => {
  const base = { graceSeconds: 30, accel: 'tcg' as const };

  test.each([
    // final state, stop action, reason, exit
    [{ state: 'shut off', reason: 'shutdown' }, 'none', 'Shutdown', 0],
    [{ state: 'shut off', reason: 'shutdown' }, 'acpi', 'Shutdown', 0],
    [{ state: 'shut off', reason: 'destroyed' }, 'destroyed', 'Destroyed', 0],
    [{ state: 'shut off', reason: 'destroyed' }, 'destroyedAfterGrace', 'GracePeriodExpired', 3],
    [{ state: 'shut off', reason: 'destroyed' }, 'none', 'Crashed', 4],
    [{ state: 'shut off', reason: 'crashed' }, 'none', 'Crashed', 4],
    [{ state: 'crashed', reason: 'panicked' }, 'acpi', 'Crashed', 4],
    [{ state: 'shut off', reason: 'failed' }, 'none', 'Crashed', 4],
  ] as const)('%j after %s → %s', (final, stop, reason, exitCode) => {
    const o = outcomeOf({ ...base, final, stop });
    expect(o.status.reason).toBe(reason);
    expect(o.exitCode).toBe(exitCode);
    expect(o.status.accel).toBe('tcg');
    expect(o.status.phase).toBe(exitCode === 0 ? 'Succeeded' : 'Failed');
  });

  test('the grace period is in the message', () => {
    expect(outcomeOf({ ...base, final: { state: 'shut off', reason: 'destroyed' }, stop: 'destroyedAfterGrace' }).status.message).toContain('30 s');
  });

  test('a stop before the start succeeds', () => {
    expect(stoppedBeforeStart(undefined)).toEqual({ status: { phase: 'Succeeded', reason: 'Stopped', message: expect.any(String) }, exitCode: 0 });
  });
});

describe('failureOutcome', () => {
  test('a launch error keeps its reason', () => {
    expect(failureOutcome(launchError(LauncherReason.NoKvm, 'no kvm'), undefined)).toEqual({ status: { phase: 'Failed', reason: 'NoKVM', message: 'no kvm' }, exitCode: 5 });
  });

  test('INVALID_SPEC errors are InvalidSpec, anything else LauncherError', () => {
    expect(failureOutcome(new FerryError(ErrorCode.InvalidSpec, 'bad'), 'tcg').status).toEqual({ phase: 'Failed', reason: 'InvalidSpec', message: 'bad', accel: 'tcg' });
    expect(failureOutcome(new Error('boom'), undefined)).toMatchObject({ status: { reason: 'LauncherError', message: 'boom' }, exitCode: 9 });
    expect(failureOutcome(new FerryError(ErrorCode.Internal, 'x', { details: { reason: 'NotAReason' } }), undefined).status.reason).toBe('LauncherError');
  });
});
