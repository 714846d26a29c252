/** Timers (controller/runtime/work-queue.ts `Timers`) that only fire when a test says so. */

import type { Timers } from '../../controller/runtime/work-queue.js';

export class ManualTimers implements Timers {
  private nextId = 1;
  readonly live = new Map<number, { fn: () => void; ms: number }>();
  readonly cleared: number[] = [];

  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.nextId++;
    this.live.set(id, { fn, ms });
    return id;
  }

  clearTimeout(handle: unknown): void {
    this.cleared.push(handle as number);
    this.live.delete(handle as number);
  }

  /** The delays of the live timers, in the order they were set. */
  delays(): number[] {
    return [...this.live.values()].map((t) => t.ms);
  }

  fireAll(): void {
    const all = [...this.live.entries()];
    this.live.clear();
    for (const [, t] of all) t.fn();
  }

  /** Fires the live timers of delay `ms`. */
  fire(ms: number): void {
    for (const [id, t] of [...this.live.entries()]) {
      if (t.ms !== ms) continue;
      this.live.delete(id);
      t.fn();
    }
  }
}
