/**
 * Interruption: one AbortSignal for the whole import. Awaits that could outlast it (opening a
 * source, a stalled read, a backoff) are raced against it; children get it at spawn.
 */

import { setMaxListeners } from 'node:events';
import { ErrorCode, FerryError } from '../../src/errors.js';
import type { ByteStream } from '../streams.js';

/**
 * The error inner stages see: not retryable, so no inner retry loop (a ranged chunk, a resumed
 * body) carries on. runImport turns any failure after an abort into the table's INTERRUPTED.
 */
export function interruption(): FerryError {
  return new FerryError(ErrorCode.Interrupted, 'the import was interrupted', { retryable: false });
}

/**
 * The import's own signal, aborted when `outer` is: every stage may listen to it (no listener
 * limit), and `dispose` unlinks it from `outer` when the import ends.
 */
export function linkedSignal(outer: AbortSignal | undefined): { readonly signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  setMaxListeners(0, controller.signal);
  if (!outer) return { signal: controller.signal, dispose: () => undefined };
  const abort = (): void => controller.abort(outer.reason);
  if (outer.aborted) abort();
  else outer.addEventListener('abort', abort, { once: true });
  return { signal: controller.signal, dispose: () => outer.removeEventListener('abort', abort) };
}

/**
 * `work`, or INTERRUPTED as soon as `signal` aborts. A result that arrives after the abort goes
 * to `late` (to close what it opened).
 */
export function raceAbort<T>(signal: AbortSignal, work: Promise<T>, late?: (value: T) => void): Promise<T> {
  if (signal.aborted) {
    work.then((value) => late?.(value), () => undefined);
    return Promise.reject(interruption());
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => {
      work.then((value) => late?.(value), () => undefined);
      reject(interruption());
    };
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        if (signal.aborted) late?.(value);
        else resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(err);
      },
    );
  });
}

/**
 * A source whose pending read fails with INTERRUPTED the moment `signal` aborts; the source is
 * then told to close (an HTTP body, a file stream) without waiting for it. `return()` closes the
 * source even before the first read, as a source stream's own would.
 */
export function guarded(source: ByteStream, signal: AbortSignal): AsyncIterableIterator<Buffer> {
  const iterator = source[Symbol.asyncIterator]();
  let closed = false;
  const close = (): void => {
    if (closed) return;
    closed = true;
    void iterator.return?.()?.catch(() => undefined);
  };
  signal.addEventListener('abort', close, { once: true });
  const detach = (): void => signal.removeEventListener('abort', close);
  return {
    [Symbol.asyncIterator]() {
      return this;
    },
    next: async () => {
      try {
        const next = await raceAbort(signal, iterator.next());
        if (next.done) detach();
        return next;
      } catch (err) {
        detach();
        throw err;
      }
    },
    return: async () => {
      detach();
      if (!closed) {
        closed = true;
        if (signal.aborted) void iterator.return?.()?.catch(() => undefined);
        else await iterator.return?.();
      }
      return { done: true, value: undefined };
    },
  };
}
