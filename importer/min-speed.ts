/**
 * The slowest transfer that still counts as progress, like curl's --speed-limit/--speed-time: a
 * body that delivers fewer than `bytesPerSecond × windowMs` bytes while the reader waits on it for
 * `windowMs` is failed (SOURCE_UNAVAILABLE, retryable), however steadily it trickles. The idle
 * timeout alone never fires on a server that sends one byte a second.
 *
 * Only time the reader spends waiting on the source counts: a consumer that holds the stream
 * back (a slow disk, a decompressor) does not make the source look slow.
 */

import { ErrorCode, FerryError } from '../src/errors.js';

export interface MinSpeed {
  /** Bytes per second; 0 turns the check off. */
  readonly bytesPerSecond: number;
  /** How long the transfer may stay below it; 0 turns the check off. */
  readonly windowMs: number;
}

export const SpeedVerdict = { Open: 'open', Ok: 'ok', Slow: 'slow' } as const;
export type SpeedVerdict = (typeof SpeedVerdict)[keyof typeof SpeedVerdict];

/** Pure: bytes a window must deliver (0 when the check is off). */
export function minimumBytes(limit: MinSpeed): number {
  return isOff(limit) ? 0 : Math.ceil((limit.bytesPerSecond * limit.windowMs) / 1000);
}

function isOff(limit: MinSpeed): boolean {
  return !(limit.bytesPerSecond > 0 && limit.windowMs > 0);
}

/**
 * Pure accounting of one tumbling window: time spent waiting and bytes delivered. When a full
 * window of waiting has passed it decides: `slow`, or `ok` and a new window starts.
 */
export class SpeedWindow {
  private waitedMs = 0;
  private bytes = 0;

  constructor(private readonly limit: MinSpeed) {}

  get enabled(): boolean {
    return !isOff(this.limit);
  }

  /** Waiting left in this window before it is judged (at least 1 ms). */
  remainingMs(): number {
    return Math.max(1, this.limit.windowMs - this.waitedMs);
  }

  /** Adds `waitedMs` of waiting and the `bytes` that ended it; judges a full window. */
  add(waitedMs: number, bytes: number): SpeedVerdict {
    if (!this.enabled) return SpeedVerdict.Ok;
    this.waitedMs += Math.max(0, waitedMs);
    this.bytes += bytes;
    if (this.waitedMs < this.limit.windowMs) return SpeedVerdict.Open;
    const slow = this.bytes < minimumBytes(this.limit);
    this.waitedMs = 0;
    this.bytes = 0;
    return slow ? SpeedVerdict.Slow : SpeedVerdict.Ok;
  }
}

/** The error a too-slow transfer fails with (retryable: the next attempt may find a better path). */
export function tooSlowError(where: string, limit: MinSpeed): FerryError {
  const seconds = limit.windowMs / 1000;
  return new FerryError(
    ErrorCode.SourceUnavailable,
    `${where}: fewer than ${minimumBytes(limit)} bytes arrived in ${seconds} s (the minimum speed is ${limit.bytesPerSecond} bytes/s over ${seconds} s)`,
    { retryable: true, details: { reason: 'too-slow', bytesPerSecond: limit.bytesPerSecond, windowMs: limit.windowMs } },
  );
}

/** Whether an error is the minimum-speed check's (a break that did not show real progress). */
export function isTooSlow(err: unknown): boolean {
  return err instanceof FerryError && err.details.reason === 'too-slow';
}

/** The minimum-speed check beside a read loop that someone else runs (see `watchSpeed`). */
export interface SpeedWatch {
  /** A chunk of `bytes` arrived (the wait for it ends). */
  received(bytes: number): void;
  /** The reader asks for the next chunk (a wait begins). */
  reading(): void;
  /** The too-slow error once a window of waiting delivered too little. */
  readonly failure: FerryError | undefined;
  stop(): void;
}

/**
 * The check without a stage in the byte path: the read loop reports arrivals and waits, and one
 * timer judges the window while a read is outstanding and calls `onSlow` (which closes the body, so
 * the pending read ends). Measured: racing every chunk of a node-decoded gzip body against the
 * check cost ~15 % of the import; this costs two clock reads per chunk. Undefined when the check
 * is off.
 */
export function watchSpeed(limit: MinSpeed, where: string, onSlow: (err: FerryError) => void): SpeedWatch | undefined {
  const window = new SpeedWindow(limit);
  if (!window.enabled) return undefined;
  let waiting = true;
  let mark = performance.now();
  let failure: FerryError | undefined;
  const fail = (): void => {
    failure ??= tooSlowError(where, limit);
  };
  const tickMs = Math.max(20, Math.min(1000, Math.floor(limit.windowMs / 4)));
  const timer = setInterval(() => {
    if (!waiting || failure) return;
    const now = performance.now();
    const verdict = window.add(now - mark, 0);
    mark = now;
    if (verdict === SpeedVerdict.Slow) {
      fail();
      onSlow(failure as unknown as FerryError);
    }
  }, tickMs);
  return {
    received(bytes: number): void {
      const now = performance.now();
      if (window.add(now - mark, bytes) === SpeedVerdict.Slow) fail();
      waiting = false;
      mark = now;
    },
    reading(): void {
      waiting = true;
      mark = performance.now();
    },
    get failure() {
      return failure;
    },
    stop(): void {
      clearInterval(timer);
    },
  };
}

/**
 * Hands on `body`'s chunks; fails with `tooSlowError` as soon as a window of waiting delivered
 * too little, without waiting for the next chunk (a stalled body has none). The caller lets go of
 * the body when this throws (the pending read then fails, unobserved).
 */
export async function* guardSpeed(body: AsyncIterable<Buffer>, limit: MinSpeed, where: string): AsyncGenerator<Buffer> {
  const window = new SpeedWindow(limit);
  if (!window.enabled) {
    yield* body;
    return;
  }
  const iterator = body[Symbol.asyncIterator]();
  // One timer for the whole body, not one armed and cleared per chunk (that cost a node-decoded
  // gzip import measurable time): it looks at the window every tick while a read is outstanding and
  // fails that read, so a stall is judged at most a tick late. Each read races its own small
  // promise (a long-lived one would collect a reaction per chunk).
  let waiting = false;
  let mark = 0;
  let failRead: ((err: FerryError) => void) | undefined;
  const tickMs = Math.max(20, Math.min(1000, Math.floor(limit.windowMs / 4)));
  const timer = setInterval(() => {
    if (!waiting) return;
    const now = performance.now();
    const verdict = window.add(now - mark, 0);
    mark = now;
    if (verdict === SpeedVerdict.Slow) failRead?.(tooSlowError(where, limit));
  }, tickMs);
  try {
    for (;;) {
      mark = performance.now();
      waiting = true;
      let next: IteratorResult<Buffer>;
      try {
        const stopped = new Promise<never>((_, reject) => (failRead = reject));
        next = await Promise.race([iterator.next(), stopped]);
      } finally {
        waiting = false;
        failRead = undefined;
      }
      if (next.done) return;
      if (window.add(performance.now() - mark, next.value.length) === SpeedVerdict.Slow) throw tooSlowError(where, limit);
      yield next.value;
    }
  } finally {
    clearInterval(timer);
  }
}
