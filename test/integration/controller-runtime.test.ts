/**
 * The shared controller runtime (controller/runtime/controller.ts) on the real apiserver, with a
 * controller of its own (no Ferry logic): PVCs listed before start are queued once the cache is
 * filled, a change wakes its key, the resync queues every key again; a custom resource whose CRD is
 * not installed yet leaves the controller ready and looking again, and once the test creates the
 * CRD the controller watches it; after stop nothing is reconciled, neither a change nor a resync.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { setTimeout as sleep } from 'node:timers/promises';
import { ApiextensionsV1Api, CoreV1Api, CustomObjectsApi, type KubernetesObject } from '@kubernetes/client-node';
import { silentLogger } from '../../src/logging.js';
import { Controller, type Watch } from '../../controller/runtime/controller.js';
import { crdServed } from '../../controller/runtime/crds.js';
import { objectKey } from '../../controller/runtime/keys.js';
import type { HandlerResult } from '../../controller/runtime/work-queue.js';
import { type ControlPlane, startControlPlane } from '../helpers/cluster.js';

const GROUP = 'runtime-test.ferry.dev';
const PLURAL = 'widgets';

let cp: ControlPlane;

/** Reconciles nothing: records each key it is given. */
class Recorder extends Controller {
  readonly seen: string[] = [];

  constructor(
    private readonly what: 'pvcs' | 'widgets',
    options: { resyncMs?: number; retryMs?: number } = {},
  ) {
    super({ kubeConfig: cp.kubeConfig, config: { namespaces: [], concurrency: 2 }, logger: silentLogger() }, { name: 'recorder', keyField: 'key', ...options });
  }

  protected async reconcile(key: string): Promise<HandlerResult> {
    this.seen.push(key);
    return {};
  }

  protected override async missing(): Promise<string | undefined> {
    if (this.what === 'pvcs' || (await crdServed(cp.kubeConfig.makeApiClient(CustomObjectsApi), GROUP, 'v1', PLURAL))) return undefined;
    return 'widgets are not served yet';
  }

  protected watch(): Watch {
    const informer = this.what === 'pvcs' ? this.informers.pvcs() : this.informers.custom<KubernetesObject>(GROUP, 'v1', PLURAL);
    informer.onChange((obj) => this.enqueue(objectKey(obj)));
    return { sources: [informer], keys: () => informer.list().map(objectKey) };
  }

  count(key: string): number {
    return this.seen.filter((k) => k === key).length;
  }
}

/** Polls `check` every 100 ms for at most 30 s. */
async function until(what: string, check: () => boolean): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (check()) return;
    await sleep(100);
  }
  throw new Error(`never: ${what}`);
}

async function createPvc(namespace: string, name: string): Promise<void> {
  await cp.kubeConfig.makeApiClient(CoreV1Api).createNamespacedPersistentVolumeClaim({ namespace, body: { metadata: { name }, spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: '1Gi' } } } } });
}

beforeAll(async () => void (cp = await startControlPlane()), 120_000);
afterAll(() => cp?.stop());

describe('controller runtime on the real apiserver', () => {
  test('keys from the filled cache, from changes and from the resync; after stop nothing is reconciled (no event, no resync)', async () => {
    const ns = await cp.newNamespace('runtime');
    await createPvc(ns, 'before');
    const controller = new Recorder('pvcs', { resyncMs: 300 });
    expect(controller.ready).toBe(false);
    await controller.start();
    expect(controller.ready).toBe(true);
    await until('the PVC listed before start is reconciled', () => controller.count(`${ns}/before`) >= 1);
    await createPvc(ns, 'after');
    await until('the new PVC wakes its key', () => controller.count(`${ns}/after`) >= 1);
    // Nothing changes the PVC again: only the resync brings its key back.
    await until('the resync queues it again', () => controller.count(`${ns}/before`) >= 3);
    await controller.stop();
    const seen = controller.seen.length;
    await createPvc(ns, 'late');
    await sleep(1500);
    expect(controller.seen.length).toBe(seen);
    expect(controller.count(`${ns}/late`)).toBe(0);
  }, 90_000);

  test('a CRD not installed: ready meanwhile and looking again; once it is installed the controller watches it', async () => {
    const custom = cp.kubeConfig.makeApiClient(CustomObjectsApi);
    const controller = new Recorder('widgets', { retryMs: 300 });
    await controller.start();
    expect(controller.ready).toBe(true);
    expect(controller.seen).toEqual([]);
    const ext = cp.kubeConfig.makeApiClient(ApiextensionsV1Api);
    await ext.createCustomResourceDefinition({
      body: {
        metadata: { name: `${PLURAL}.${GROUP}` },
        spec: {
          group: GROUP,
          scope: 'Namespaced',
          names: { plural: PLURAL, singular: 'widget', kind: 'Widget' },
          versions: [{ name: 'v1', served: true, storage: true, schema: { openAPIV3Schema: { type: 'object', x_kubernetes_preserve_unknown_fields: true } } }],
        },
      },
    });
    const ns = await cp.newNamespace('widgets');
    // Created as soon as the apiserver serves widgets: the controller's next look lists it (or its watch sees it).
    for (let i = 0; ; i++) {
      try {
        await custom.createNamespacedCustomObject({ group: GROUP, version: 'v1', namespace: ns, plural: PLURAL, body: { apiVersion: `${GROUP}/v1`, kind: 'Widget', metadata: { name: 'w1' } } });
        break;
      } catch (err) {
        if (i >= 100) throw err;
        await sleep(200);
      }
    }
    await until('the widget is reconciled', () => controller.count(`${ns}/w1`) >= 1);
    expect(controller.ready).toBe(true);
    await controller.stop();
  }, 90_000);
});
