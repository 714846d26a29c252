/**
 * The shared controller runtime (controller/runtime/controller.ts) where it is pure: start waits for
 * every source, queues the resync keys and re-arms the resync; a missing CRD reports ready and looks
 * again; a failed reconcile is retried with the key's backoff and logged under the controller's key
 * field; stop clears the timers and waits for the reconcile in flight. Sources are promises the test
 * settles and timers fire when the test says; no Kubernetes API is involved (the informer path is in
 * test/integration/controller-runtime.test.ts). Also the key maps, the metrics and `combine`.
 */

import { describe, expect, test } from '@jest/globals';
import { Writable } from 'node:stream';
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import { Registry } from 'prom-client';
import { createLogger } from '../../src/logging.js';
import { combine, Controller, type ControllerOptions, RECONCILE_BACKOFF, type Runnable, type Source, type Watch } from '../../controller/runtime/controller.js';
import { ownerPvcKey, servedPvcKey } from '../../controller/runtime/keys.js';
import { reconcileMetrics } from '../../controller/runtime/metrics.js';
import type { HandlerResult } from '../../controller/runtime/work-queue.js';
import { ManualTimers as TestTimers } from '../helpers/manual-timers.js';

/** A source whose first list completes when the test says so. */
class Deferred implements Source {
  starts = 0;
  resolve!: () => void;
  private readonly listed = new Promise<void>((r) => (this.resolve = r));

  start(): Promise<void> {
    this.starts += 1;
    return this.listed;
  }
}

/** Log lines as objects. */
function capture(): { logger: ReturnType<typeof createLogger>; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const destination = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const line of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(line) as Record<string, unknown>);
      done();
    },
  });
  return { logger: createLogger({ name: 'runtime-test', level: 'debug', destination }), lines };
}

const flush = async (): Promise<void> => {
  for (let i = 0; i < 20; i++) await Promise.resolve();
};

interface Setup {
  readonly sources?: Source[];
  keys?: Array<string | undefined>;
  readonly missing?: Array<string | undefined>;
  readonly reconcile?: (key: string) => Promise<HandlerResult>;
  readonly options?: Partial<ControllerOptions>;
  /** How many times watch throws before it works. */
  readonly watchFails?: number;
}

/** A controller whose sources, keys and reconcile the test decides. */
class TestController extends Controller {
  readonly reconciled: string[] = [];
  watches = 0;
  missingCalls = 0;

  constructor(
    private readonly setup: Setup,
    timers: TestTimers,
    logger: ReturnType<typeof createLogger>,
  ) {
    super(
      // Never used: the test's sources are not informers, and no factory is made unless asked for.
      { kubeConfig: {} as KubeConfig, config: { namespaces: [], concurrency: 2 }, logger },
      { name: 'test controller', keyField: 'thing', resyncMs: 1000, retryMs: 5000, timers, random: () => 0.5, ...setup.options },
    );
  }

  protected reconcile(key: string): Promise<HandlerResult> {
    this.reconciled.push(key);
    return this.setup.reconcile ? this.setup.reconcile(key) : Promise.resolve({});
  }

  protected watch(): Watch {
    this.watches += 1;
    if (this.watches <= (this.setup.watchFails ?? 0)) throw new Error('the apiserver is not answering');
    return { sources: [...(this.setup.sources ?? []), undefined], keys: () => this.setup.keys ?? [] };
  }

  protected override missing(): Promise<string | undefined> {
    const answer = this.setup.missing?.[this.missingCalls];
    this.missingCalls += 1;
    return Promise.resolve(answer);
  }

  wake(key: string | undefined): void {
    this.enqueue(key);
  }

  periodically(ms: number, fn: () => void): void {
    this.every(ms, fn);
  }
}

function make(setup: Setup): { c: TestController; timers: TestTimers; lines: Array<Record<string, unknown>> } {
  const timers = new TestTimers();
  const { logger, lines } = capture();
  return { c: new TestController(setup, timers, logger), timers, lines };
}

describe('controller runtime: start, resync, readiness', () => {
  test('not ready until every source has listed; then the resync keys are queued (absent ones skipped) and the resync is armed', async () => {
    const a = new Deferred();
    const b = new Deferred();
    const { c, timers } = make({ sources: [a, b], keys: ['ns/one', undefined, 'ns/two'] });
    const started = c.start();
    await flush();
    expect(c.ready).toBe(false);
    expect([a.starts, b.starts]).toEqual([1, 1]);
    a.resolve();
    await flush();
    expect(c.ready).toBe(false);
    b.resolve();
    await started;
    expect(c.ready).toBe(true);
    await c.idle();
    expect(c.reconciled).toEqual(['ns/one', 'ns/two']);
    expect(timers.delays()).toEqual([1000]);
    await c.stop();
  });

  test('each resync queues every key again and re-arms itself; stop clears it', async () => {
    const state = { sources: [] as Source[], keys: ['ns/a'] as Array<string | undefined> };
    const { c, timers } = make(state);
    await c.start();
    await c.idle();
    state.keys = ['ns/a', 'ns/b'];
    timers.fire(1000);
    await c.idle();
    expect(c.reconciled).toEqual(['ns/a', 'ns/a', 'ns/b']);
    expect(timers.delays()).toEqual([1000]);
    await c.stop();
    expect(timers.delays()).toEqual([]);
  });

  test('without resyncMs the keys are queued once, on start', async () => {
    const { c, timers } = make({ keys: ['ns/a'], options: { resyncMs: undefined } });
    await c.start();
    await c.idle();
    expect(c.reconciled).toEqual(['ns/a']);
    expect(timers.delays()).toEqual([]);
    await c.stop();
  });

  test('readyAfterFirstPass: start resolves, and the controller is ready, only after the first reconcile ran', async () => {
    let finish!: () => void;
    const { c } = make({ keys: ['config'], reconcile: () => new Promise((r) => (finish = () => r({}))), options: { readyAfterFirstPass: true } });
    let resolved = false;
    const started = c.start().then(() => (resolved = true));
    await flush();
    expect(c.reconciled).toEqual(['config']);
    expect([resolved, c.ready]).toEqual([false, false]);
    finish();
    await started;
    expect(c.ready).toBe(true);
    await c.stop();
  });

  test('periodic work (every) starts with the resync, after the caches are filled, and stops with the controller', async () => {
    const source = new Deferred();
    const { c, timers } = make({ sources: [source] });
    let ticks = 0;
    c.periodically(250, () => (ticks += 1));
    const started = c.start();
    await flush();
    expect(timers.delays()).toEqual([]);
    source.resolve();
    await started;
    expect(timers.delays().sort((a, b) => a - b)).toEqual([250, 1000]);
    timers.fire(250);
    timers.fire(250);
    expect(ticks).toBe(2);
    await c.stop();
    expect(timers.delays()).toEqual([]);
  });
});

describe('controller runtime: what is not served yet', () => {
  test('logs what is missing, reports ready, looks again after retryMs (not ready meanwhile), and wires the sources once it is served', async () => {
    const { c, timers, lines } = make({ missing: ['the thing CRD is not installed', 'still not installed', undefined], keys: ['ns/a'] });
    await c.start();
    expect(c.ready).toBe(true);
    expect(c.watches).toBe(0);
    expect(lines.filter((l) => l.level === 40).map((l) => l.msg)).toEqual(['the thing CRD is not installed']);
    expect(timers.delays()).toEqual([5000]);
    timers.fire(5000);
    // The retry's start is in flight: not ready until it has an answer.
    expect(c.ready).toBe(false);
    await flush();
    expect(c.ready).toBe(true);
    expect(timers.delays()).toEqual([5000]);
    timers.fire(5000);
    await flush();
    await c.idle();
    expect(c.missingCalls).toBe(3);
    expect(c.watches).toBe(1);
    expect(c.ready).toBe(true);
    expect(c.reconciled).toEqual(['ns/a']);
    expect(timers.delays()).toEqual([1000]);
    await c.stop();
  });

  test('a watch that failed is made again by the next start; once made it is not made again', async () => {
    const { c } = make({ watchFails: 1, keys: ['ns/a'] });
    await expect(c.start()).rejects.toThrow('the apiserver is not answering');
    expect(c.ready).toBe(false);
    await c.start();
    await c.start();
    expect(c.watches).toBe(2);
    expect(c.ready).toBe(true);
    await c.stop();
  });

  test('stop during start: no resync is armed afterwards', async () => {
    const source = new Deferred();
    const { c, timers } = make({ sources: [source] });
    const started = c.start();
    await flush();
    await c.stop();
    source.resolve();
    await started;
    expect(timers.delays()).toEqual([]);
  });

  test('stop cancels the look-again', async () => {
    const { c, timers } = make({ missing: ['missing'] });
    await c.start();
    expect(timers.delays()).toEqual([5000]);
    await c.stop();
    expect(timers.delays()).toEqual([]);
    expect(c.missingCalls).toBe(1);
  });

  test('a start that fails on retry is logged with the controller name', async () => {
    const { c, timers, lines } = make({ missing: ['missing'], sources: [{ start: () => Promise.reject(new Error('list refused')) }] });
    await c.start();
    timers.fire(5000);
    await flush();
    const error = lines.find((l) => l.level === 50);
    expect(error?.msg).toBe('test controller start failed');
    expect(String(error?.err)).toContain('list refused');
    await c.stop();
  });
});

describe('controller runtime: the queue', () => {
  test('a failed reconcile is logged under the key field and retried after the base backoff (jitter 0.5: exact)', async () => {
    let fail = true;
    const { c, timers, lines } = make({
      reconcile: () => (fail ? Promise.reject(new Error('apiserver said no')) : Promise.resolve({})),
      options: { resyncMs: undefined, failedMessage: 'test reconcile failed' },
    });
    await c.start();
    c.wake('ns/x');
    await c.idle();
    const warn = lines.find((l) => l.msg === 'test reconcile failed');
    expect(warn).toMatchObject({ thing: 'ns/x', retryInMs: RECONCILE_BACKOFF.baseBackoffMs });
    expect(timers.delays()).toEqual([500]);
    fail = false;
    timers.fire(500);
    await c.idle();
    expect(c.reconciled).toEqual(['ns/x', 'ns/x']);
    expect(timers.delays()).toEqual([]);
    await c.stop();
  });

  test('enqueue skips an absent key; requeueAfterMs comes back after that delay', async () => {
    const { c, timers } = make({ reconcile: async () => ({ requeueAfterMs: 7000 }), options: { resyncMs: undefined } });
    await c.start();
    c.wake(undefined);
    c.wake('ns/y');
    await c.idle();
    expect(c.reconciled).toEqual(['ns/y']);
    expect(timers.delays()).toEqual([7000]);
    await c.stop();
    expect(timers.delays()).toEqual([]);
  });

  test('stop waits for the reconcile in flight and takes no more work', async () => {
    let finish!: () => void;
    const { c } = make({ reconcile: () => new Promise((r) => (finish = () => r({}))), options: { resyncMs: undefined } });
    await c.start();
    c.wake('ns/z');
    await flush();
    let stopped = false;
    const stopping = c.stop().then(() => (stopped = true));
    await flush();
    expect(stopped).toBe(false);
    finish();
    await stopping;
    c.wake('ns/after');
    await c.idle();
    expect(c.reconciled).toEqual(['ns/z']);
  });
});

describe('controller runtime: metrics', () => {
  test('reconciles are counted by result and timed, and the queue depth is read as each ends', async () => {
    const registry = new Registry();
    const metrics = reconcileMetrics(registry);
    await metrics.observe(async () => ({}), () => 3);
    await expect(metrics.observe(() => Promise.reject(new Error('no')), () => 1)).rejects.toThrow('no');
    const text = await registry.metrics();
    expect(text).toContain('ferry_controller_reconcile_total{result="ok"} 1');
    expect(text).toContain('ferry_controller_reconcile_total{result="error"} 1');
    expect(text).toContain('ferry_controller_reconcile_duration_seconds_count 2');
    expect(text).toContain('ferry_controller_queue_depth 1');
  });

  test('a controller with metrics counts its reconciles', async () => {
    const registry = new Registry();
    const { c } = make({ keys: ['ns/a', 'ns/b'], options: { metrics: reconcileMetrics(registry), resyncMs: undefined } });
    await c.start();
    await c.idle();
    expect(await registry.metrics()).toContain('ferry_controller_reconcile_total{result="ok"} 2');
    await c.stop();
  });
});

describe('combine', () => {
  test('ready when every part is; start starts all; stop stops all and the shared informers', async () => {
    const calls: string[] = [];
    const part = (name: string, ready: boolean): Runnable => ({
      ready,
      start: async () => void calls.push(`start ${name}`),
      stop: async () => void calls.push(`stop ${name}`),
    });
    expect(combine([part('a', true), part('b', true)], async () => undefined).ready).toBe(true);
    const both = combine([part('a', true), part('b', false)], async () => void calls.push('stop informers'));
    expect(both.ready).toBe(false);
    await both.start();
    await both.stop();
    expect(calls).toEqual(['start a', 'start b', 'stop a', 'stop b', 'stop informers']);
  });
});

describe('work-queue keys of objects', () => {
  const meta = (m: NonNullable<KubernetesObject['metadata']>): KubernetesObject => ({ metadata: m });
  const pvcOwner = (name: string, controller?: boolean) => ({ apiVersion: 'v1', kind: 'PersistentVolumeClaim', name, uid: 'u', ...(controller !== undefined ? { controller } : {}) });
  test.each([
    ['a pod owned by a PVC', meta({ namespace: 'ns', name: 'importer-disk', ownerReferences: [pvcOwner('disk')] }), 'ns/disk'],
    ['a pod owned by something else', meta({ namespace: 'ns', name: 'p', ownerReferences: [{ apiVersion: 'v1', kind: 'Node', name: 'n', uid: 'u' }] }), undefined],
    ['no owner', meta({ namespace: 'ns', name: 'p' }), undefined],
    ['no namespace', meta({ name: 'p', ownerReferences: [pvcOwner('disk')] }), undefined],
  ])('ownerPvcKey: %s', (_what, obj, key) => {
    expect(ownerPvcKey(obj)).toBe(key);
  });

  test.each([
    ['a PVC of its own', meta({ namespace: 'ns', name: 'disk' }), 'ns/disk'],
    ['a scratch PVC (controller owner PVC)', meta({ namespace: 'ns', name: 'disk-scratch', ownerReferences: [pvcOwner('disk', true)] }), 'ns/disk'],
    ['a PVC owned, not controlled, by a PVC', meta({ namespace: 'ns', name: 'other', ownerReferences: [pvcOwner('disk', false)] }), 'ns/other'],
    ['no namespace', meta({ name: 'disk' }), undefined],
  ])('servedPvcKey: %s', (_what, obj, key) => {
    expect(servedPvcKey(obj)).toBe(key);
  });
});
