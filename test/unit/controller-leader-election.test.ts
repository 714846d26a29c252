import { describe, expect, test } from '@jest/globals';
import { ApiException, type CoordinationV1Api, type V1Lease } from '@kubernetes/client-node';
import { createLogger, type Logger } from '../../src/logging.js';
import { KubeApiError } from '../../controller/runtime/errors.js';
import { canAcquire, LeaderElector, leaseProblem } from '../../controller/runtime/leader-election.js';

const NOW = Date.parse('2024-05-01T12:00:00.000Z');
const ME = 'ferry-controller-0';
const OTHER = 'ferry-controller-1';

function lease(holder: string | undefined, renewedMsAgo: number | undefined, durationSeconds: number | undefined = 15): V1Lease {
  return {
    metadata: { name: 'ferry-controller', namespace: 'ferry-system' },
    spec: {
      ...(holder !== undefined ? { holderIdentity: holder } : {}),
      ...(renewedMsAgo !== undefined ? { renewTime: new Date(NOW - renewedMsAgo) } : {}),
      ...(durationSeconds !== undefined ? { leaseDurationSeconds: durationSeconds } : {}),
    },
  };
}

describe('canAcquire', () => {
  test.each<[string, V1Lease | undefined, boolean]>([
    ['no lease', undefined, true],
    ['lease without spec', { metadata: { name: 'x' } }, true],
    ['no holder', lease(undefined, 1000), true],
    ['empty holder (released)', lease('', 1000), true],
    ['same holder, fresh', lease(ME, 1000), true],
    ['same holder, long expired', lease(ME, 3_600_000), true],
    ['other holder, just renewed', lease(OTHER, 0), false],
    ['other holder, renewed 14.9 s ago (15 s lease)', lease(OTHER, 14_900), false],
    ['other holder, exactly at expiry', lease(OTHER, 15_000), false],
    ['other holder, 1 ms past expiry', lease(OTHER, 15_001), true],
    ['other holder, expired long ago', lease(OTHER, 3_600_000), true],
    ['other holder, 60 s lease renewed 30 s ago', lease(OTHER, 30_000, 60), false],
    ['other holder, 60 s lease renewed 61 s ago', lease(OTHER, 61_000, 60), true],
    ['other holder, no duration → 15 s default, renewed 10 s ago', lease(OTHER, 10_000, undefined), false],
    ['other holder, no duration → 15 s default, renewed 16 s ago', lease(OTHER, 16_000, undefined), true],
    ['other holder, never renewed', lease(OTHER, undefined), true],
  ])('%s → %s', (_name, l, expected) => {
    expect(canAcquire(l, ME, NOW)).toBe(expected);
  });

  test('a renew time in the future (clock skew) keeps the other holder', () => {
    expect(canAcquire(lease(OTHER, -5000), ME, NOW)).toBe(false);
  });
});

/** A Lease API that fails the way kube-apiserver does; `create` succeeds once `namespaceExists`. */
function leaseApi(failure: 'namespace' | 'forbidden', onCreate: (n: number) => void) {
  const notFound = (what: string) => new ApiException(404, 'Unknown API Status Code!', JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: what, reason: 'NotFound', code: 404 }), { 'audit-id': 'x' });
  const forbidden = new ApiException(
    403,
    'Unknown API Status Code!',
    JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'leases.coordination.k8s.io "ferry-controller" is forbidden: User "system:serviceaccount:ferry-system:ferry" cannot get resource "leases"', reason: 'Forbidden', code: 403 }),
    { 'audit-id': 'x' },
  );
  const state = { namespaceExists: false, creates: 0 };
  const api = {
    readNamespacedLease: async () => {
      throw failure === 'forbidden' && !state.namespaceExists ? forbidden : notFound('leases.coordination.k8s.io "ferry-controller" not found');
    },
    createNamespacedLease: async ({ body }: { body: V1Lease }) => {
      state.creates += 1;
      onCreate(state.creates);
      if (!state.namespaceExists) throw notFound('namespaces "ferry-gone" not found');
      return body;
    },
  };
  return { api: api as unknown as CoordinationV1Api, state };
}

function recordingLogger(): { logger: Logger; lines: () => Array<Record<string, unknown> & { raw: string }> } {
  const raw: string[] = [];
  const logger = createLogger({ level: 'info', destination: { write: (s: string) => void raw.push(s) } });
  return { logger, lines: () => raw.map((r) => ({ ...(JSON.parse(r) as Record<string, unknown>), raw: r })) };
}

const OPTIONS = { namespace: 'ferry-gone', name: 'ferry-controller', identity: ME, leaseDurationSeconds: 15, renewIntervalMs: 0 };

describe('LeaderElector when the Lease cannot be used', () => {
  test('a missing namespace: one line naming it and the fixes, said once over many attempts; it leads once the namespace exists', async () => {
    const { logger, lines } = recordingLogger();
    let elector: LeaderElector | undefined;
    let problemWhileFailing: string | undefined;
    const { api, state } = leaseApi('namespace', (n) => {
      if (n === 3) problemWhileFailing = elector?.problem;
      if (n === 4) state.namespaceExists = true;
    });
    elector = new LeaderElector(api, OPTIONS, logger, () => NOW);
    const led = new Promise<void>((resolve) => void elector?.run(resolve, () => undefined));
    await led;
    await elector.stop();
    expect(state.creates).toBe(4);
    const told = lines().filter((l) => String(l.msg).includes('ferry-gone'));
    expect(told).toHaveLength(1);
    expect(told[0]?.level).toBe(50);
    expect(told[0]?.msg).toBe('the Lease namespace "ferry-gone" does not exist: apply the manifests (kubectl apply -k manifests/), pass --lease-namespace with a namespace that exists, or run with --leader-elect false');
    expect(problemWhileFailing).toBe(told[0]?.msg);
    expect(elector.problem).toBeUndefined();
    for (const l of lines()) {
      expect(l.raw).not.toContain('HTTP-Code');
      expect(l.raw).not.toContain('audit-id');
    }
  });

  test('Forbidden: one line about the RBAC', async () => {
    const { logger, lines } = recordingLogger();
    let elector: LeaderElector | undefined;
    const { api, state } = leaseApi('forbidden', () => undefined);
    const origRead = api.readNamespacedLease.bind(api);
    let reads = 0;
    (api as unknown as { readNamespacedLease: () => Promise<V1Lease> }).readNamespacedLease = async () => {
      reads += 1;
      if (reads === 3) state.namespaceExists = true;
      return origRead({ namespace: 'ferry-gone', name: 'ferry-controller' });
    };
    elector = new LeaderElector(api, OPTIONS, logger, () => NOW);
    await new Promise<void>((resolve) => void elector?.run(resolve, () => undefined));
    await elector.stop();
    const told = lines().filter((l) => l.level === 50);
    expect(told).toHaveLength(1);
    expect(told[0]?.msg).toMatch(/^not allowed to get Leases in namespace "ferry-gone" \(leases\.coordination\.k8s\.io "ferry-controller" is forbidden: .*\): apply the manifests' RBAC \(kubectl apply -k manifests\/\), or run with --leader-elect false$/);
    for (const l of lines()) expect(l.raw).not.toContain('HTTP-Code');
  });
});

describe('leaseProblem', () => {
  const status = (code: number, reason: string, message: string) =>
    new ApiException(code, 'Unknown API Status Code!', JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code }), {});
  const on = (verb: string, err: unknown) => new KubeApiError(err, { verb, resource: 'leases', namespace: 'ns', name: 'ferry-controller' });
  test.each<[string, unknown, string]>([
    ['create: the namespace is missing', on('create', status(404, 'NotFound', 'namespaces "ns" not found')), 'the Lease namespace "ns" does not exist: apply the manifests (kubectl apply -k manifests/), pass --lease-namespace with a namespace that exists, or run with --leader-elect false'],
    ['update forbidden', on('update', status(403, 'Forbidden', 'no')), 'not allowed to update Leases in namespace "ns" (no): apply the manifests\' RBAC (kubectl apply -k manifests/), or run with --leader-elect false'],
    ['no answer', on('get', Object.assign(new Error('request to https://127.0.0.1:1/x failed, reason: connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' })), 'leader election failed: get leases ns/ferry-controller: no response: request to https://127.0.0.1:1/x failed, reason: connect ECONNREFUSED 127.0.0.1:1'],
    ['a server error', on('update', status(500, 'InternalError', 'etcd timeout')), 'leader election failed: update leases ns/ferry-controller: 500 InternalError: etcd timeout'],
  ])('%s', (_name, err, line) => {
    expect(leaseProblem(err, 'ns')).toBe(line);
  });
});

/** A Lease store with the apiserver's optimistic concurrency: a write with a stale resourceVersion is a 409. */
function versionedLeaseApi() {
  let stored: V1Lease | undefined;
  let version = 0;
  const conflict = () => new ApiException(409, 'Conflict', JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'the object has been modified', reason: 'Conflict', code: 409 }), {});
  const notFound = () => new ApiException(404, 'Not Found', JSON.stringify({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: 'not found', reason: 'NotFound', code: 404 }), {});
  const state = { writes: [] as Array<string | undefined>, gate: undefined as Promise<void> | undefined, gated: 0 };
  const copy = (l: V1Lease): V1Lease => JSON.parse(JSON.stringify(l)) as V1Lease;
  const api = {
    readNamespacedLease: async () => {
      if (stored === undefined) throw notFound();
      return copy(stored);
    },
    createNamespacedLease: async ({ body }: { body: V1Lease }) => {
      version += 1;
      stored = { ...copy(body), metadata: { ...body.metadata, resourceVersion: String(version) } };
      return copy(stored);
    },
    replaceNamespacedLease: async ({ body }: { body: V1Lease }) => {
      const gate = state.gate;
      if (gate !== undefined) {
        state.gated += 1;
        await gate;
      }
      if (body.metadata?.resourceVersion !== stored?.metadata?.resourceVersion) throw conflict();
      version += 1;
      stored = { ...copy(body), metadata: { ...body.metadata, resourceVersion: String(version) } };
      state.writes.push(stored.spec?.holderIdentity);
      return copy(stored);
    },
  };
  return { api: api as unknown as CoordinationV1Api, state, holder: () => stored?.spec?.holderIdentity };
}

describe('stepping down', () => {
  test('stop() during a renewal waits for it, then releases the lease; no loss is reported', async () => {
    const { api, state, holder } = versionedLeaseApi();
    const elector = new LeaderElector(api, { namespace: 'ferry-system', name: 'ferry-controller', identity: ME, leaseDurationSeconds: 15, renewIntervalMs: 5 }, createLogger({ level: 'silent' }));
    const events: string[] = [];
    await elector.run(() => events.push('leading'), () => events.push('lost'));
    let open!: () => void;
    state.gate = new Promise<void>((r) => (open = r));
    for (let i = 0; i < 200 && state.gated === 0; i += 1) await new Promise((r) => setTimeout(r, 5)); // a renewal's write is in flight
    expect(state.gated).toBe(1);
    const stopping = elector.stop();
    await new Promise((r) => setTimeout(r, 20));
    state.gate = undefined;
    open();
    await stopping;
    await new Promise((r) => setTimeout(r, 30)); // no renewal after the stop
    expect(events).toEqual(['leading']);
    expect(state.writes).toEqual([ME, undefined]); // the renewal, then the release: neither conflicted
    expect(holder()).toBeUndefined();
    expect(elector.isLeader).toBe(false);
  });
});
