/**
 * Import progress as one number that only grows (CDI's metric is a counter of percent), built from
 * the phase at hand: bytes received against the announced length, then qemu-img's own percentage.
 * Listeners (metric, logs, a terminal bar) subscribe; the engine only reports.
 */

export const Phase = {
  Transfer: 'transfer',
  Verify: 'verify',
  Convert: 'convert',
  Resize: 'resize',
  Complete: 'complete',
} as const;
export type Phase = (typeof Phase)[keyof typeof Phase];

export interface ProgressSnapshot {
  readonly phase: Phase;
  /** Bytes handled in this phase (for convert: an estimate from qemu-img's percentage). */
  readonly bytes: number;
  /** Bytes this phase will handle, when known. */
  readonly total?: number;
  /** Overall progress of the import, 0–100, never decreasing. */
  readonly percent: number;
}

export type ProgressListener = (snapshot: ProgressSnapshot) => void;

export class Progress {
  private readonly listeners: ProgressListener[] = [];
  private phase: Phase = Phase.Transfer;
  private range: readonly [number, number] = [0, 100];
  private total: number | undefined;
  private overall = 0;

  subscribe(listener: ProgressListener): void {
    this.listeners.push(listener);
  }

  /** Enters a phase that will move overall progress from `from` to `to` percent. */
  begin(phase: Phase, from: number, to: number, total?: number): void {
    this.phase = phase;
    this.range = [Math.max(from, this.overall), Math.max(to, this.overall)];
    this.total = total;
    this.emit(0);
  }

  /** Reports `bytes` done in the current phase (of the total given to `begin`). */
  bytes(bytes: number): void {
    const fraction = this.total ? Math.min(1, bytes / this.total) : 0;
    this.move(fraction, bytes);
  }

  /** Reports a percentage of the current phase (qemu-img's). */
  percent(percent: number): void {
    const fraction = Math.min(1, Math.max(0, percent / 100));
    this.move(fraction, this.total !== undefined ? Math.round(fraction * this.total) : 0);
  }

  complete(): void {
    this.phase = Phase.Complete;
    this.overall = 100;
    this.emit(this.total ?? 0);
  }

  private move(fraction: number, bytes: number): void {
    const [from, to] = this.range;
    this.overall = Math.max(this.overall, from + fraction * (to - from));
    this.emit(bytes);
  }

  private emit(bytes: number): void {
    const snapshot: ProgressSnapshot = {
      phase: this.phase,
      bytes,
      ...(this.total !== undefined ? { total: this.total } : {}),
      percent: this.overall,
    };
    for (const listener of this.listeners) listener(snapshot);
  }
}

/**
 * Pure helper for rate and ETA: keeps the last sample and derives bytes/s from the next one. The
 * caller passes the clock, so tests need no timers.
 */
export class RateMeter {
  private last: { at: number; bytes: number; phase: Phase } | undefined;
  private rate = 0;

  sample(at: number, snapshot: ProgressSnapshot): { rate: number; etaSeconds?: number } {
    if (this.last && this.last.phase === snapshot.phase && at > this.last.at) {
      const instant = ((snapshot.bytes - this.last.bytes) * 1000) / (at - this.last.at);
      this.rate = this.rate === 0 ? instant : 0.7 * this.rate + 0.3 * instant;
    } else if (this.last?.phase !== snapshot.phase) {
      this.rate = 0;
    }
    this.last = { at, bytes: snapshot.bytes, phase: snapshot.phase };
    const remaining = snapshot.total !== undefined ? snapshot.total - snapshot.bytes : undefined;
    return remaining !== undefined && this.rate > 0 ? { rate: this.rate, etaSeconds: remaining / this.rate } : { rate: this.rate };
  }
}

/** Wraps a listener so it runs at most once per `intervalMs`, plus on every phase change. */
export function throttled(listener: ProgressListener, intervalMs: number, now: () => number): ProgressListener {
  let lastAt = -Infinity;
  let lastPhase: Phase | undefined;
  return (snapshot) => {
    const at = now();
    if (snapshot.phase !== lastPhase || snapshot.phase === Phase.Complete || at - lastAt >= intervalMs) {
      lastAt = at;
      lastPhase = snapshot.phase;
      listener(snapshot);
    }
  };
}
