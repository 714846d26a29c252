/**
 * The skeleton every controller shares: event sources (the informers) whose handlers map objects
 * to work-queue keys → one work queue (de-duplicated, one reconcile in flight per key, per-key
 * jittered backoff from 500 ms to a minute) → the controller's reconcile. The runtime owns the
 * queue, the periodic resync, the wait for CRDs that are not installed yet, start/stop and the
 * "synced" readiness; a controller only says which objects wake which keys and how a key is
 * reconciled (the abstract methods).
 *
 * start(): if something the controller needs is not served yet, it logs that, reports ready (so the
 * controllers beside it are not held up) and looks again after `retryMs`; otherwise it wires the
 * sources once (`watch`), runs `prepare`, waits for every source's first list, reports ready and
 * queues every key of the resync, then again every `resyncMs`.
 * stop(): timers first, then the informers (when the controller made its own), then the queue
 * (reconciles in flight finish; the caller bounds the wait).
 */

import type { KubeConfig } from '@kubernetes/client-node';
import type { Logger } from '../../src/logging.js';
import type { ControllerConfig } from '../config.js';
import type { SettingsSource } from './cdi-settings.js';
import { errorLine } from './errors.js';
import { InformerFactory } from './informers.js';
import type { ReconcileMetrics } from './metrics.js';
import { type HandlerResult, type Timers, WorkQueue } from './work-queue.js';

/** The backoff of a failed reconcile: doubled per failure of the key, from this to at most a minute. */
export const RECONCILE_BACKOFF = Object.freeze({ baseBackoffMs: 500, maxBackoffMs: 60_000 });

/** How long a controller waits before it looks again for a CRD that was not installed. */
export const RETRY_CRD_MS = 30_000;

/** Something whose first list the controller waits for (an informer). */
export interface Source {
  start(): Promise<void>;
}

/** What `watch` made: the sources to fill, and the keys a resync queues. */
export interface Watch {
  /** Absent entries are skipped (an optional cache). */
  readonly sources: readonly (Source | undefined)[];
  /** Every key to queue again, on start and every `resyncMs`; absent keys are skipped. */
  keys(): Iterable<string | undefined>;
}

/** A controller's start, stop and readiness: what the composition root runs. */
export interface Runnable {
  readonly ready: boolean;
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** What every controller's dependencies include (each controller's own deps extend these). */
export interface RuntimeDeps {
  readonly kubeConfig: KubeConfig;
  readonly config: { readonly namespaces: readonly string[]; readonly concurrency: number };
  readonly logger: Logger;
  /** The process's shared informers; without it the controller makes (and stops) its own. */
  readonly informers?: InformerFactory | undefined;
  readonly now?: (() => number) | undefined;
}

/** The import, upload and clone controllers': the whole config, the resync period, CDIConfig's settings. */
export interface PvcControllerDeps extends RuntimeDeps {
  readonly config: ControllerConfig;
  /** How often every cached PVC is queued again (default 5 minutes). */
  readonly resyncMs?: number;
  /** CDIConfig's settings (runtime/cdi-settings.ts); absent: the flags alone. */
  readonly settings?: SettingsSource;
}

export interface ControllerOptions {
  /** For log lines: "DataVolume controller". */
  readonly name: string;
  /** The log field that carries the key in "reconcile failed" (pvc, dv, …) and that line's message. */
  readonly keyField: string;
  readonly failedMessage?: string;
  /** Every key is queued again this often; absent: only once, on start. */
  readonly resyncMs?: number | undefined;
  /** How long to wait before looking again for what `missing` reported (default 30 s). */
  readonly retryMs?: number | undefined;
  /** Ready only once the first reconcile of every resync key has run (a controller without a cache to fill). */
  readonly readyAfterFirstPass?: boolean;
  /** Counts and times each reconcile. */
  readonly metrics?: ReconcileMetrics;
  /** For tests: timers that fire when the test says (the queue's backoff uses them too). */
  readonly timers?: Timers;
  /** For tests: the backoff's jitter. */
  readonly random?: () => number;
}

interface Periodic {
  readonly ms: number;
  readonly fn: () => void;
}

const realTimers: Timers = {
  setTimeout: (fn, ms) => {
    const t = setTimeout(fn, ms);
    t.unref();
    return t;
  },
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
};

export abstract class Controller implements Runnable {
  protected readonly logger: Logger;
  private readonly queue: WorkQueue;
  private readonly timers: Timers;
  private readonly ownsInformers: boolean;
  private factory: InformerFactory | undefined;
  private watching: Promise<Watch> | undefined;
  private readonly pending = new Set<unknown>();
  private readonly periodic: Periodic[] = [];
  private synced = false;
  private stopped = false;

  constructor(
    private readonly deps: RuntimeDeps,
    private readonly options: ControllerOptions,
  ) {
    this.ownsInformers = deps.informers === undefined;
    this.factory = deps.informers;
    this.timers = options.timers ?? realTimers;
    const logger = (this.logger = deps.logger);
    const { metrics, failedMessage = 'reconcile failed', keyField } = options;
    this.queue = new WorkQueue(
      metrics ? (key) => metrics.observe(() => this.reconcile(key), () => this.queue.length) : (key) => this.reconcile(key),
      {
        concurrency: deps.config.concurrency,
        ...RECONCILE_BACKOFF,
        timers: this.timers,
        ...(options.random ? { random: options.random } : {}),
        onError: (key, err, retryInMs) => logger.warn({ [keyField]: key, retryInMs, err: errorLine(err) }, failedMessage),
      },
      deps.now,
    );
  }

  /** One key: read the caches, plan, apply. A throw is retried with the key's backoff. */
  protected abstract reconcile(key: string): Promise<HandlerResult>;

  /** Makes the caches and wires their handlers to `enqueue` (called once, at the first start that finds everything served). */
  protected abstract watch(): Watch | Promise<Watch>;

  /** What is not served yet, as the warning to log; undefined when the controller can start. */
  protected missing(): Promise<string | undefined> {
    return Promise.resolve(undefined);
  }

  /** Runs after `watch` and before the sources start (a failure fails start). */
  protected prepare(): Promise<void> {
    return Promise.resolve();
  }

  /** The informers: the shared factory, else the controller's own, made on first use. */
  protected get informers(): InformerFactory {
    this.factory ??= new InformerFactory(this.deps.kubeConfig, this.deps.config.namespaces, this.deps.logger);
    return this.factory;
  }

  /** Queues `key` (nothing when absent). Handlers call only this. */
  protected enqueue(key: string | undefined): void {
    if (key) this.queue.add(key);
  }

  /** Runs `fn` every `ms` from the end of start (the caches filled) until stop. Call it from the constructor. */
  protected every(ms: number, fn: () => void): void {
    this.periodic.push({ ms, fn });
  }

  private schedule({ ms, fn }: Periodic): void {
    const tick = (): void => {
      const handle = this.timers.setTimeout(() => {
        this.pending.delete(handle);
        if (this.stopped) return;
        fn();
        tick();
      }, ms);
      this.pending.add(handle);
    };
    tick();
  }

  get ready(): boolean {
    return this.synced;
  }

  /** Resolves once the caches are filled (or once something needed was found missing). */
  async start(): Promise<void> {
    const missing = await this.missing();
    if (missing !== undefined) {
      this.logger.warn(missing);
      this.synced = true;
      const handle = this.timers.setTimeout(() => {
        this.pending.delete(handle);
        this.synced = false;
        if (!this.stopped) this.start().catch((e: unknown) => this.logger.error({ err: errorLine(e) }, `${this.options.name} start failed`));
      }, this.options.retryMs ?? RETRY_CRD_MS);
      this.pending.add(handle);
      return;
    }
    // Made once; a failed watch (an apiserver error) is made again by the next start.
    this.watching ??= Promise.resolve()
      .then(() => this.watch())
      .catch((err: unknown) => {
        this.watching = undefined;
        throw err;
      });
    const watch = await this.watching;
    await this.prepare();
    await Promise.all(watch.sources.map((s) => s?.start()));
    const all = (): void => {
      for (const key of watch.keys()) this.enqueue(key);
    };
    all();
    if (this.options.readyAfterFirstPass) await this.queue.idle();
    this.synced = true;
    if (this.stopped) return;
    if (this.options.resyncMs !== undefined) this.schedule({ ms: this.options.resyncMs, fn: all });
    for (const p of this.periodic) this.schedule(p);
  }

  /** Stops taking work and waits for reconciles in flight (the caller bounds the wait). */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const handle of this.pending) this.timers.clearTimeout(handle);
    this.pending.clear();
    if (this.ownsInformers && this.factory) await this.factory.stop();
    await this.queue.shutdown();
  }

  /** Waits until nothing is queued or running (for tests and benchmarks). */
  idle(): Promise<void> {
    return this.queue.idle();
  }
}

/** Several controllers started, stopped and judged ready as one; `alsoStop` (their shared informers) stops with them. */
export function combine(parts: readonly Runnable[], alsoStop: () => Promise<void>): Runnable {
  return {
    get ready() {
      return parts.every((p) => p.ready);
    },
    start: async () => void (await Promise.all(parts.map((p) => p.start()))),
    stop: async () => void (await Promise.all([...parts.map((p) => p.stop()), alsoStop()])),
  };
}
