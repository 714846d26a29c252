/**
 * The upload's progress for a person: bytes sent of the total, the rate and the time left. On a
 * terminal one line is redrawn in place (at most every `redrawMs`); otherwise (a CI log, a pipe)
 * one line is written every `lineEveryMs`, never a stream of carriage returns.
 */

import { formatBytes } from '../../src/quantity.js';

export interface ProgressSample {
  readonly bytes: number;
  readonly total: number;
  /** Bytes per second over the window, undefined before a second sample. */
  readonly rate?: number;
}

/** Pure: seconds as `m:ss` or `h:mm:ss`. */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.round(seconds));
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${ss}` : `${m}:${ss}`;
}

/** Pure: the progress line, e.g. ` 12.0 MiB / 48.0 MiB  25%  10.2 MiB/s  ETA 0:04`. */
export function progressLine({ bytes, total, rate }: ProgressSample): string {
  const percent = total > 0 ? Math.min(100, Math.floor((bytes / total) * 100)) : 100;
  const speed = rate === undefined ? '--' : `${formatBytes(Math.round(rate))}/s`;
  const eta = rate === undefined || rate <= 0 ? '--:--' : formatDuration((total - bytes) / rate);
  return `${formatBytes(bytes)} / ${formatBytes(total)}  ${percent}%  ${speed}  ETA ${eta}`;
}

export interface ProgressOutput {
  write(text: string): unknown;
  readonly isTTY?: boolean;
}

export interface ProgressReporter {
  /** The bytes the server has (after a resume: the offset it reported) plus those sent since. */
  update(bytes: number): void;
  /** Writes the final line (and the newline a terminal needs). */
  done(): void;
}

/** Rate over a sliding window of samples (a resume jumps `bytes` back: the window restarts). */
export function createProgressReporter(options: {
  readonly total: number;
  readonly out: ProgressOutput;
  readonly now: () => number;
  readonly redrawMs?: number;
  readonly lineEveryMs?: number;
  readonly windowMs?: number;
}): ProgressReporter {
  const { total, out, now } = options;
  const tty = out.isTTY === true;
  const every = tty ? (options.redrawMs ?? 200) : (options.lineEveryMs ?? 5000);
  const windowMs = options.windowMs ?? 10_000;
  const samples: Array<{ t: number; bytes: number }> = [];
  let last = -Infinity;
  let bytes = 0;
  const rate = (): number | undefined => {
    const first = samples[0];
    const latest = samples[samples.length - 1];
    if (!first || !latest || latest.t <= first.t) return undefined;
    return ((latest.bytes - first.bytes) * 1000) / (latest.t - first.t);
  };
  const draw = (final: boolean): void => {
    const r = rate();
    const line = progressLine({ bytes, total, ...(r !== undefined ? { rate: r } : {}) });
    out.write(tty ? `\r\x1b[K${line}${final ? '\n' : ''}` : `${line}\n`);
  };
  return {
    update(n: number): void {
      const t = now();
      if (n < bytes) samples.length = 0;
      bytes = n;
      samples.push({ t, bytes: n });
      while (samples.length > 2 && (samples[0] as { t: number }).t < t - windowMs) samples.shift();
      if (t - last >= every) {
        last = t;
        draw(false);
      }
    },
    done(): void {
      draw(true);
    },
  };
}
