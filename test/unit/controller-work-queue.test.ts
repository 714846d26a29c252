import { describe, expect, test } from '@jest/globals';
import { type HandlerResult, type QueueOptions, WorkQueue } from '../../controller/runtime/work-queue.js';
import { ManualTimers as FakeTimers } from '../helpers/manual-timers.js';

interface Call {
  readonly key: string;
  resolve(result?: HandlerResult): void;
  reject(err: unknown): void;
  settled: boolean;
}

/** A handler whose calls stay in flight until the test settles them. */
class Handler {
  readonly calls: Call[] = [];
  inFlight = 0;
  maxInFlight = 0;

  readonly fn = (key: string): Promise<HandlerResult> => {
    this.inFlight += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    return new Promise<HandlerResult>((resolve, reject) => {
      const call: Call = {
        key,
        settled: false,
        resolve: (result = {}) => {
          call.settled = true;
          this.inFlight -= 1;
          resolve(result);
        },
        reject: (err) => {
          call.settled = true;
          this.inFlight -= 1;
          reject(err);
        },
      };
      this.calls.push(call);
    });
  };

  keys(): string[] {
    return this.calls.map((c) => c.key);
  }

  pending(key?: string): Call[] {
    return this.calls.filter((c) => !c.settled && (key === undefined || c.key === key));
  }

  /** Settles the oldest unsettled call for `key` (or any key). */
  next(key?: string): Call {
    const c = this.pending(key)[0];
    if (!c) throw new Error(`no pending call${key ? ` for ${key}` : ''}; calls: ${this.keys().join(',')}`);
    return c;
  }
}

async function flush(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}

function setup(o: Partial<QueueOptions> = {}, now: () => number = () => 0) {
  const timers = new FakeTimers();
  const handler = new Handler();
  const errors: Array<{ key: string; retryInMs: number }> = [];
  const queue = new WorkQueue(
    handler.fn,
    {
      concurrency: 1,
      baseBackoffMs: 1000,
      maxBackoffMs: 60_000,
      timers,
      random: () => 0.5,
      onError: (key, _err, retryInMs) => errors.push({ key, retryInMs }),
      ...o,
    },
    now,
  );
  return { timers, handler, errors, queue };
}

describe('WorkQueue: de-duplication', () => {
  test('duplicate adds while queued run once', async () => {
    const { handler, queue } = setup();
    queue.add('busy');
    queue.add('a');
    queue.add('a');
    queue.add('a');
    expect(queue.length).toBe(1);
    handler.next('busy').resolve();
    await flush();
    handler.next('a').resolve();
    await flush();
    expect(handler.keys()).toEqual(['busy', 'a']);
  });

  test('add while running → runs exactly once more afterwards', async () => {
    const { handler, queue } = setup({ concurrency: 4 });
    queue.add('a');
    expect(handler.keys()).toEqual(['a']);
    queue.add('a');
    queue.add('a');
    // One reconcile per key at a time, even with spare concurrency.
    expect(handler.pending('a')).toHaveLength(1);
    handler.next('a').resolve();
    await flush();
    expect(handler.keys()).toEqual(['a', 'a']);
    handler.next('a').resolve();
    await flush();
    expect(handler.keys()).toEqual(['a', 'a']);
  });

  test('a key added while another key runs does not wait for it when there is capacity', () => {
    const { handler, queue } = setup({ concurrency: 2 });
    queue.add('a');
    queue.add('b');
    expect(handler.pending()).toHaveLength(2);
  });
});

describe('WorkQueue: concurrency', () => {
  test.each([1, 2, 3, 5])('never more than %i handlers in flight', async (concurrency) => {
    const { handler, queue } = setup({ concurrency });
    const keys = Array.from({ length: 12 }, (_, i) => `ns/k${i}`);
    for (const k of keys) queue.add(k);
    expect(handler.inFlight).toBe(concurrency);
    // Settle in an irregular order, adding some keys again on the way.
    let round = 0;
    while (handler.pending().length > 0) {
      const pending = handler.pending();
      const c = pending[round % pending.length] as Call;
      if (round % 3 === 0) queue.add(c.key);
      c.resolve();
      await flush();
      expect(handler.inFlight).toBeLessThanOrEqual(concurrency);
      round++;
    }
    expect(handler.maxInFlight).toBe(concurrency);
    expect(new Set(handler.keys())).toEqual(new Set(keys));
    await expect(queue.idle()).resolves.toBeUndefined();
  });
});

describe('WorkQueue: failures', () => {
  test.each<[string, number]>([
    ['random 0 → 0.8×', 0],
    ['random 0.5 → 1.0×', 0.5],
    ['random 0.9999 → ~1.2×', 0.9999],
  ])('backoff with jitter (%s) doubles per failure, within [0.8, 1.2]×base·2^(n−1)', async (_name, r) => {
    const { handler, queue, timers, errors } = setup({ random: () => r, baseBackoffMs: 1000, maxBackoffMs: 1_000_000 });
    queue.add('k');
    for (let n = 1; n <= 5; n++) {
      handler.next('k').reject(new Error(`boom ${n}`));
      await flush();
      const base = 1000 * 2 ** (n - 1);
      const [delay] = timers.delays();
      expect(timers.delays()).toHaveLength(1);
      expect(delay).toBe(Math.round(base * (0.8 + 0.4 * r)));
      expect(delay).toBeGreaterThanOrEqual(0.8 * base);
      expect(delay).toBeLessThanOrEqual(1.2 * base);
      expect(errors[n - 1]).toEqual({ key: 'k', retryInMs: delay });
      // Not re-run until the backoff timer fires.
      expect(handler.pending('k')).toHaveLength(0);
      timers.fireAll();
      expect(handler.pending('k')).toHaveLength(1);
    }
  });

  test('the backoff is capped at maxBackoffMs (before jitter)', async () => {
    const { handler, queue, timers } = setup({ random: () => 0.5, baseBackoffMs: 1000, maxBackoffMs: 3000 });
    queue.add('k');
    const seen: number[] = [];
    for (let n = 1; n <= 5; n++) {
      handler.next('k').reject(new Error('x'));
      await flush();
      seen.push(...timers.delays());
      timers.fireAll();
    }
    expect(seen).toEqual([1000, 2000, 3000, 3000, 3000]);
  });

  test('failures reset after a success', async () => {
    const { handler, queue, timers } = setup({ random: () => 0.5 });
    queue.add('k');
    handler.next('k').reject(new Error('1'));
    await flush();
    timers.fireAll();
    handler.next('k').reject(new Error('2'));
    await flush();
    expect(timers.delays()).toEqual([2000]);
    timers.fireAll();
    handler.next('k').resolve();
    await flush();
    expect(timers.delays()).toEqual([]);
    queue.add('k');
    handler.next('k').reject(new Error('3'));
    await flush();
    expect(timers.delays()).toEqual([1000]);
  });

  test('failures are counted per key', async () => {
    const { handler, queue, timers } = setup({ concurrency: 2, random: () => 0.5 });
    queue.add('a');
    queue.add('b');
    handler.next('a').reject(new Error('a1'));
    await flush();
    timers.fireAll();
    handler.next('a').reject(new Error('a2'));
    handler.next('b').reject(new Error('b1'));
    await flush();
    expect(timers.delays().sort((x, y) => x - y)).toEqual([1000, 2000]);
  });

  test('a handler that throws synchronously is treated as a failure', async () => {
    const timers = new FakeTimers();
    let calls = 0;
    const queue = new WorkQueue(
      () => {
        calls++;
        throw new Error('sync');
      },
      { concurrency: 1, baseBackoffMs: 100, maxBackoffMs: 1000, timers, random: () => 0.5 },
      () => 0,
    );
    queue.add('k');
    await flush();
    expect(calls).toBe(1);
    expect(timers.delays()).toEqual([100]);
    await expect(queue.idle()).resolves.toBeUndefined();
  });
});

describe('WorkQueue: delayed adds', () => {
  test('requeueAfterMs schedules a delayed add', async () => {
    const { handler, queue, timers } = setup();
    queue.add('k');
    handler.next('k').resolve({ requeueAfterMs: 2500 });
    await flush();
    expect(timers.delays()).toEqual([2500]);
    expect(handler.calls).toHaveLength(1);
    timers.fireAll();
    expect(handler.keys()).toEqual(['k', 'k']);
  });

  test('requeueAfterMs 0 → runs again at once', async () => {
    const { handler, queue, timers } = setup();
    queue.add('k');
    handler.next('k').resolve({ requeueAfterMs: 0 });
    await flush();
    expect(timers.delays()).toEqual([]);
    expect(handler.keys()).toEqual(['k', 'k']);
  });

  test('addAfter keeps the earliest', () => {
    let now = 10_000;
    const { handler, queue, timers } = setup({}, () => now);
    queue.addAfter('k', 1000); // due at 11000
    queue.addAfter('k', 5000); // later: ignored
    expect(timers.delays()).toEqual([1000]);
    now += 500;
    queue.addAfter('k', 800); // due at 11300: later than 11000, ignored
    expect(timers.delays()).toEqual([1000]);
    queue.addAfter('k', 200); // due at 10700: earlier, replaces
    expect(timers.delays()).toEqual([200]);
    expect(timers.cleared).toHaveLength(1);
    timers.fireAll();
    expect(handler.keys()).toEqual(['k']);
  });

  test('addAfter with ms <= 0 adds at once', () => {
    const { handler, queue, timers } = setup();
    queue.addAfter('k', 0);
    queue.addAfter('j', -5);
    expect(timers.delays()).toEqual([]);
    expect(handler.keys()).toEqual(['k']);
    expect(queue.length).toBe(1);
  });

  test('add cancels a pending delayed add', () => {
    const { handler, queue, timers } = setup();
    queue.addAfter('k', 1000);
    queue.add('k');
    expect(timers.delays()).toEqual([]);
    expect(handler.keys()).toEqual(['k']);
  });

  test('delayed keys are independent', () => {
    const { queue, timers } = setup();
    queue.addAfter('a', 1000);
    queue.addAfter('b', 2000);
    expect(timers.delays()).toEqual([1000, 2000]);
  });
});

describe('WorkQueue: idle and shutdown', () => {
  test('idle() resolves at once when empty', async () => {
    const { queue } = setup();
    await expect(queue.idle()).resolves.toBeUndefined();
  });

  test('idle() ignores delayed keys', async () => {
    const { queue } = setup();
    queue.addAfter('k', 1000);
    await expect(queue.idle()).resolves.toBeUndefined();
  });

  test('idle() resolves only when everything queued and running is done', async () => {
    const { handler, queue } = setup();
    queue.add('a');
    queue.add('b');
    let idle = false;
    void queue.idle().then(() => {
      idle = true;
    });
    handler.next('a').resolve();
    await flush();
    expect(idle).toBe(false);
    handler.next('b').resolve();
    await flush();
    expect(idle).toBe(true);
  });

  test('shutdown waits for in-flight work, drops queued and delayed keys, and ignores later adds', async () => {
    const { handler, queue, timers } = setup();
    queue.add('a');
    queue.add('b');
    queue.addAfter('c', 1000);
    let done = false;
    const stopped = queue.shutdown().then(() => {
      done = true;
    });
    expect(timers.live.size).toBe(0);
    await flush();
    expect(done).toBe(false);
    queue.add('a'); // while running, after shutdown: must not run again
    queue.add('d');
    queue.addAfter('e', 10);
    expect(timers.live.size).toBe(0);
    handler.next('a').resolve({ requeueAfterMs: 100 });
    await stopped;
    expect(done).toBe(true);
    expect(handler.keys()).toEqual(['a']);
    expect(timers.live.size).toBe(0);
    expect(queue.length).toBe(0);
  });

  test('shutdown of an idle queue resolves at once', async () => {
    const { queue } = setup();
    await expect(queue.shutdown()).resolves.toBeUndefined();
  });
});
