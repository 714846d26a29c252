/** Informer plumbing both controllers share. */

import type { Informer, KubernetesObject, ObjectCache } from '@kubernetes/client-node';
import type { Logger } from '../../src/logging.js';

export type Cached<T extends KubernetesObject> = Informer<T> & ObjectCache<T>;

/**
 * Calls `handler` on every add, update and delete (handlers only enqueue keys), and restarts the
 * informer 2 s after an error — client-node's informer stops on most errors — until `stopped()`.
 */
export function watchRestarting<T extends KubernetesObject>(informer: Cached<T>, what: string, handler: (obj: T) => void, logger: Logger, stopped: () => boolean): void {
  informer.on('add', handler);
  informer.on('update', handler);
  informer.on('delete', handler);
  informer.on('error', (err: unknown) => {
    if (stopped()) return;
    logger.warn({ informer: what, err: (err as Error | undefined)?.message }, 'watch failed; restarting');
    setTimeout(() => {
      if (!stopped()) informer.start().catch(() => undefined);
    }, 2000).unref();
  });
}
