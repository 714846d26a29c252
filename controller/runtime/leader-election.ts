/**
 * Leader election on a coordination.k8s.io Lease: acquire when absent or expired, renew while
 * holding, and report loss. Writes use the Lease's resourceVersion, so two candidates that race
 * cannot both win: the apiserver rejects the second write with a conflict.
 */

import { type CoordinationV1Api, type V1Lease, V1MicroTime } from '@kubernetes/client-node';
import type { Logger } from '../../src/logging.js';
import { describeApiError, isKube, KubeError, kubeCall, kubeErrorOf, type KubeOp } from './errors.js';

export interface LeaderElectionOptions {
  readonly namespace: string;
  readonly name: string;
  readonly identity: string;
  readonly leaseDurationSeconds: number;
  readonly renewIntervalMs: number;
}

/** Pure: may `identity` take the lease at `now`? */
export function canAcquire(lease: V1Lease | undefined, identity: string, now: number): boolean {
  if (!lease?.spec?.holderIdentity) return true;
  if (lease.spec.holderIdentity === identity) return true;
  const renewed = lease.spec.renewTime ? new Date(lease.spec.renewTime).getTime() : 0;
  const duration = (lease.spec.leaseDurationSeconds ?? 15) * 1000;
  return now > renewed + duration;
}

const FIXES = 'apply the manifests (kubectl apply -k manifests/), pass --lease-namespace with a namespace that exists, or run with --leader-elect false';

/**
 * Pure: what is wrong, in one line a user can act on, when a Lease call failed (`err` is a
 * `KubeApiError` naming the operation). A create that finds no namespace is the missing Lease
 * namespace; Forbidden is missing RBAC; anything else is the API error's own line.
 */
export function leaseProblem(err: unknown, namespace: string): string {
  const info = kubeErrorOf(err);
  const op = (err as { op?: KubeOp }).op;
  if (info.kind === KubeError.NotFound && op?.verb === 'create') return `the Lease namespace "${namespace}" does not exist: ${FIXES}`;
  if (info.kind === KubeError.Forbidden) {
    return `not allowed to ${op?.verb ?? 'use'} Leases in namespace "${namespace}" (${info.message}): apply the manifests' RBAC (kubectl apply -k manifests/), or run with --leader-elect false`;
  }
  return `leader election failed: ${describeApiError(err)}`;
}

export class LeaderElector {
  private leading = false;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  private trouble: string | undefined;
  /** A renewal in flight: `stop` waits for it, so its write and the release never race. */
  private renewing: Promise<boolean> | undefined;

  constructor(
    private readonly api: CoordinationV1Api,
    private readonly options: LeaderElectionOptions,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  get isLeader(): boolean {
    return this.leading;
  }

  /** Why the last attempt on the Lease failed (one line with the fix), until one succeeds. */
  get problem(): string | undefined {
    return this.trouble;
  }

  /** Tries until leadership is won (or `stop()`); then keeps renewing and calls `onLost` once on loss. */
  async run(onLeading: () => void, onLost: () => void): Promise<void> {
    while (!this.stopped && !(await this.tryAcquireOrRenew())) {
      await new Promise((r) => setTimeout(r, this.options.renewIntervalMs));
    }
    if (this.stopped) return;
    this.logger.info({ lease: `${this.options.namespace}/${this.options.name}`, identity: this.options.identity }, 'became leader');
    onLeading();
    const renew = async (): Promise<void> => {
      if (this.stopped) return;
      this.renewing = this.tryAcquireOrRenew();
      const ok = await this.renewing;
      this.renewing = undefined;
      // Stopped meanwhile: a deliberate step-down, not a loss (the release may have won the race).
      if (this.stopped) return;
      if (!ok) {
        this.logger.warn({ identity: this.options.identity }, 'lost leadership');
        this.leading = false;
        onLost();
        return;
      }
      this.timer = setTimeout(() => void renew(), this.options.renewIntervalMs);
    };
    this.timer = setTimeout(() => void renew(), this.options.renewIntervalMs);
  }

  /** Stops renewing and gives the lease up so another replica can take over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.renewing;
    if (!this.leading) return;
    this.leading = false;
    const { namespace, name } = this.options;
    try {
      const lease = await kubeCall({ verb: 'get', resource: 'leases', namespace, name }, () => this.api.readNamespacedLease({ namespace, name }));
      if (lease.spec?.holderIdentity === this.options.identity) {
        lease.spec.holderIdentity = undefined;
        lease.spec.renewTime = undefined;
        await kubeCall({ verb: 'update', resource: 'leases', namespace, name }, () => this.api.replaceNamespacedLease({ namespace, name, body: lease }));
      }
    } catch (err) {
      this.logger.warn({ err: describeApiError(err) }, 'could not release the lease');
    }
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name, identity, leaseDurationSeconds } = this.options;
    // Lease times are MicroTime: the apiserver rejects a plain Date's millisecond form.
    const nowDate = new V1MicroTime(this.now());
    try {
      const op = (verb: string): KubeOp => ({ verb, resource: 'leases', namespace, name });
      let lease: V1Lease | undefined;
      try {
        lease = await kubeCall(op('get'), () => this.api.readNamespacedLease({ namespace, name }));
      } catch (err) {
        if (!isKube(err, KubeError.NotFound)) throw err;
      }
      if (!lease) {
        await kubeCall(op('create'), () =>
          this.api.createNamespacedLease({
            namespace,
            body: {
              metadata: { name, namespace },
              spec: { holderIdentity: identity, leaseDurationSeconds, acquireTime: nowDate, renewTime: nowDate, leaseTransitions: 0 },
            },
          }),
        );
        this.healthy();
        this.leading = true;
        return true;
      }
      if (!canAcquire(lease, identity, this.now())) {
        this.healthy();
        this.leading = false;
        return false;
      }
      const spec = lease.spec ?? {};
      const takingOver = spec.holderIdentity !== identity;
      lease.spec = {
        ...spec,
        holderIdentity: identity,
        leaseDurationSeconds,
        renewTime: nowDate,
        ...(takingOver ? { acquireTime: nowDate, leaseTransitions: (spec.leaseTransitions ?? 0) + 1 } : {}),
      };
      await kubeCall(op('update'), () => this.api.replaceNamespacedLease({ namespace, name, body: lease }));
      this.healthy();
      this.leading = true;
      return true;
    } catch (err) {
      // A conflict is another candidate's write winning the race: no problem.
      if (isKube(err, KubeError.Conflict) || isKube(err, KubeError.AlreadyExists)) this.healthy();
      else this.failed(leaseProblem(err, namespace));
      this.leading = false;
      return false;
    }
  }

  /** Says a problem once (not on every retry), and again only when it changes. */
  private failed(problem: string): void {
    if (problem !== this.trouble) this.logger.error({ lease: `${this.options.namespace}/${this.options.name}` }, problem);
    this.trouble = problem;
  }

  private healthy(): void {
    if (this.trouble !== undefined) this.logger.info({ lease: `${this.options.namespace}/${this.options.name}` }, 'the Lease is usable again');
    this.trouble = undefined;
  }
}
