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
  for (;;) {
    let mark = performance.now();
    let timer: NodeJS.Timeout | undefined;
    const slow = new Promise<never>((_, reject) => {
      const arm = (): void => {
        timer = setTimeout(() => {
          const now = performance.now();
          const verdict = window.add(now - mark, 0);
          mark = now;
          if (verdict === SpeedVerdict.Slow) reject(tooSlowError(where, limit));
          else arm();
        }, window.remainingMs());
      };
      arm();
    });
    let next: IteratorResult<Buffer>;
    try {
      next = await Promise.race([iterator.next(), slow]);
    } finally {
      clearTimeout(timer);
    }
    if (next.done) return;
    if (window.add(performance.now() - mark, next.value.length) === SpeedVerdict.Slow) throw tooSlowError(where, limit);
    yield next.value;
  }
}
