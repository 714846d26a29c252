/**
 * The clone events of a request body, decoded as its chunks arrive. The body runs in flowing mode:
 * each 'data' chunk (a 16 KiB TLS record) goes through the push decoder at once, and its events
 * are queued for the writer, which takes them with `poll` while there are any and awaits `next`
 * only when the queue is empty. That is no promise per chunk, where an async iterator of the body
 * feeding an async decoder cost three (bench/README.md, "The clone reads and writes O_DIRECT").
 * Above PAUSE_BYTES of queued data the body is paused until the writer is down to half of it,
 * so a disk slower than the network holds the socket back instead of filling memory.
 */

import type { IncomingMessage } from 'node:http';
import { ErrorCode, FerryError } from '../src/errors.js';
import { type CloneEvent, CloneStreamDecoder, CloneStreamError, CloneStreamFault } from '../src/contract/clone-stream.js';

/** Queued data bytes at which the body is paused. */
export const PAUSE_BYTES = 2 * 1024 * 1024;

export interface PolledEvents extends AsyncIterator<CloneEvent> {
  /** The next event if one is queued (a fault decoded after the queued events is thrown in its turn). */
  poll(): CloneEvent | undefined;
  return(): Promise<IteratorResult<CloneEvent>>;
}

export class BodyEvents implements PolledEvents {
  private readonly queue: CloneEvent[] = [];
  private head = 0;
  private queuedBytes = 0;
  private fault: unknown;
  private ended = false;
  private detached = false;
  private paused = false;
  private wake: (() => void) | undefined;
  private readonly decoder: CloneStreamDecoder;

  /**
   * Starts reading `req`. A body cut off (the source died, the connection broke) is a truncated
   * stream, whatever error the socket reports; `signal` (SIGTERM) makes it fail INTERRUPTED.
   * `observe` sees each event as it is decoded (progress). `return` stops reading without
   * destroying the body, so a refusal can drain it while it answers.
   */
  constructor(
    private readonly req: IncomingMessage,
    private readonly signal: AbortSignal,
    observe?: (event: CloneEvent) => void,
  ) {
    this.decoder = new CloneStreamDecoder((event) => {
      observe?.(event);
      this.queue.push(event);
      if (event.type === 'data') this.queuedBytes += event.bytes.length;
    });
    signal.addEventListener('abort', this.onAbort, { once: true });
    req.on('data', this.onData);
    req.once('end', this.onEnd);
    req.once('error', this.onError);
    req.once('close', this.onClose);
  }

  private readonly interrupted = (): FerryError => new FerryError(ErrorCode.Interrupted, 'the clone target was stopped during the transfer');

  private readonly onAbort = (): void => {
    this.req.destroy(this.interrupted());
  };

  private readonly onData = (chunk: Buffer): void => {
    if (this.fault !== undefined) return;
    try {
      this.decoder.push(chunk);
    } catch (err) {
      this.stopWith(err);
    }
    if (this.queuedBytes > PAUSE_BYTES && !this.paused) {
      this.paused = true;
      this.req.pause();
    }
    this.notify();
  };

  private readonly onEnd = (): void => {
    try {
      this.decoder.end();
      this.ended = true;
    } catch (err) {
      this.stopWith(err);
    }
    this.notify();
  };

  private readonly onError = (err: Error): void => {
    this.stopWith(this.signal.aborted ? this.interrupted() : new CloneStreamError(CloneStreamFault.Truncated, `the connection broke before the end record: ${err.message}`));
  };

  private readonly onClose = (): void => {
    if (!this.ended) this.stopWith(this.signal.aborted ? this.interrupted() : new CloneStreamError(CloneStreamFault.Truncated, 'the connection closed before the end record'));
  };

  private stopWith(err: unknown): void {
    this.fault ??= err;
    this.detach();
    this.notify();
  }

  private notify(): void {
    const wake = this.wake;
    this.wake = undefined;
    wake?.();
  }

  private detach(): void {
    if (this.detached) return;
    this.detached = true;
    this.signal.removeEventListener('abort', this.onAbort);
    this.req.off('data', this.onData);
    this.req.off('end', this.onEnd);
    this.req.off('error', this.onError);
    this.req.off('close', this.onClose);
    this.req.on('error', () => undefined); // a late socket error must not become an uncaught one
  }

  poll(): CloneEvent | undefined {
    if (this.head < this.queue.length) {
      const event = this.queue[this.head] as CloneEvent;
      this.queue[this.head] = undefined as unknown as CloneEvent;
      this.head += 1;
      if (this.head === this.queue.length) {
        this.queue.length = 0;
        this.head = 0;
      }
      if (event.type === 'data') {
        this.queuedBytes -= event.bytes.length;
        if (this.paused && this.queuedBytes <= PAUSE_BYTES / 2) {
          this.paused = false;
          this.req.resume();
        }
      }
      return event;
    }
    if (this.fault !== undefined) {
      const err = this.fault;
      this.fault = undefined;
      this.ended = true; // the fault is handed out once; after it the events are done
      throw err;
    }
    return undefined;
  }

  async next(): Promise<IteratorResult<CloneEvent>> {
    for (;;) {
      const event = this.poll();
      if (event !== undefined) return { done: false, value: event };
      if (this.ended || this.detached) return { done: true, value: undefined };
      await new Promise<void>((resolve) => (this.wake = resolve));
    }
  }

  async return(): Promise<IteratorResult<CloneEvent>> {
    this.queue.length = 0;
    this.head = 0;
    this.detach();
    if (this.paused) this.req.resume();
    return { done: true, value: undefined };
  }
}
