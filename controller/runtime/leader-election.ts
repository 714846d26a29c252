/**
 * Leader election on a coordination.k8s.io Lease: acquire when absent or expired, renew while
 * holding, and report loss. Writes use the Lease's resourceVersion, so two candidates that race
 * cannot both win: the apiserver rejects the second write with a conflict.
 */

import { type CoordinationV1Api, type V1Lease, V1MicroTime } from '@kubernetes/client-node';
import type { Logger } from '../../src/logging.js';

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

function statusOf(err: unknown): number | undefined {
  const code = (err as { code?: unknown }).code;
  return typeof code === 'number' ? code : undefined;
}

export class LeaderElector {
  private leading = false;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly api: CoordinationV1Api,
    private readonly options: LeaderElectionOptions,
    private readonly logger: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  get isLeader(): boolean {
    return this.leading;
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
      const ok = await this.tryAcquireOrRenew();
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
    if (!this.leading) return;
    this.leading = false;
    try {
      const lease = await this.api.readNamespacedLease({ namespace: this.options.namespace, name: this.options.name });
      if (lease.spec?.holderIdentity === this.options.identity) {
        lease.spec.holderIdentity = undefined;
        lease.spec.renewTime = undefined;
        await this.api.replaceNamespacedLease({ namespace: this.options.namespace, name: this.options.name, body: lease });
      }
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'could not release the lease');
    }
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { namespace, name, identity, leaseDurationSeconds } = this.options;
    // Lease times are MicroTime: the apiserver rejects a plain Date's millisecond form.
    const nowDate = new V1MicroTime(this.now());
    try {
      let lease: V1Lease | undefined;
      try {
        lease = await this.api.readNamespacedLease({ namespace, name });
      } catch (err) {
        if (statusOf(err) !== 404) throw err;
      }
      if (!lease) {
        await this.api.createNamespacedLease({
          namespace,
          body: {
            metadata: { name, namespace },
            spec: { holderIdentity: identity, leaseDurationSeconds, acquireTime: nowDate, renewTime: nowDate, leaseTransitions: 0 },
          },
        });
        this.leading = true;
        return true;
      }
      if (!canAcquire(lease, identity, this.now())) {
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
      await this.api.replaceNamespacedLease({ namespace, name, body: lease });
      this.leading = true;
      return true;
    } catch (err) {
      const code = statusOf(err);
      if (code !== 409) this.logger.warn({ err: (err as Error).message, code }, 'lease update failed');
      this.leading = false;
      return false;
    }
  }
}
