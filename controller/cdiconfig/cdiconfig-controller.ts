/**
 * Keeps CDIConfig `config`: creates it when absent and keeps its status at the effective values
 * (./plan.ts). There is one object, so instead of an informer it is read on start and every
 * `resyncMs` (an admin's spec change shows in status within that time); a pass that created the
 * object runs again at once to write its status.
 */

import { type CustomObjectsApi, type KubeConfig, CustomObjectsApi as CustomObjects } from '@kubernetes/client-node';
import { type CdiConfig, type CdiConfigDefaults, CDICONFIG_GROUP, CDICONFIG_NAME, CDICONFIG_PLURAL, CDICONFIG_VERSION } from '../../src/api/cdiconfig.js';
import type { Logger } from '../../src/logging.js';
import { errorLine, isKube, KubeError, kubeCall, kubeGet } from '../runtime/errors.js';
import { Controller, type Watch } from '../runtime/controller.js';
import type { HandlerResult } from '../runtime/work-queue.js';
import { jsonPatch } from '../runtime/writer.js';
import { CdiConfigAction, planCdiConfig } from './plan.js';

export interface CdiConfigControllerDeps {
  readonly kubeConfig: KubeConfig;
  readonly defaults: CdiConfigDefaults;
  readonly logger: Logger;
  readonly resyncMs?: number;
}

const where = { group: CDICONFIG_GROUP, version: CDICONFIG_VERSION, plural: CDICONFIG_PLURAL } as const;
const op = (verb: string) => ({ verb, resource: `${CDICONFIG_PLURAL}.${CDICONFIG_GROUP}`, name: CDICONFIG_NAME });

/** One pass: read, plan, apply. True when it created the object (status is written by the next pass). */
export async function reconcileCdiConfig(custom: CustomObjectsApi, defaults: CdiConfigDefaults): Promise<boolean> {
  const observed = (await kubeGet(op('get'), () => custom.getClusterCustomObject({ ...where, name: CDICONFIG_NAME }))) as CdiConfig | undefined;
  const plan = planCdiConfig(observed, defaults);
  if (plan === undefined) return false;
  if (plan.action === CdiConfigAction.Create) {
    try {
      await kubeCall(op('create'), () => custom.createClusterCustomObject({ ...where, body: plan.object }));
    } catch (err) {
      if (!isKube(err, KubeError.AlreadyExists)) throw err;
    }
    return true;
  }
  // The whole status is replaced (a JSON patch `add` on /status): a merge patch would keep values the spec no longer sets.
  await kubeCall(op('patch'), () => custom.patchClusterCustomObjectStatus({ ...where, name: CDICONFIG_NAME, body: [{ op: 'add', path: '/status', value: plan.status }] }, jsonPatch));
  return false;
}

/**
 * On the shared runtime (runtime/controller.ts) with no cache: the one key is queued on start and
 * every `resyncMs`, and the controller is ready once the first pass ran (whatever its outcome).
 */
export class CdiConfigController extends Controller {
  private readonly custom: CustomObjectsApi;

  constructor(private readonly cdiDeps: CdiConfigControllerDeps) {
    super({ ...cdiDeps, config: { namespaces: [], concurrency: 1 } }, { name: 'CDIConfig controller', keyField: 'cdiConfig', resyncMs: cdiDeps.resyncMs ?? 10_000, readyAfterFirstPass: true });
    this.custom = cdiDeps.kubeConfig.makeApiClient(CustomObjects);
  }

  /** A failed pass is logged and tried at the next resync (no backoff: one object, read every `resyncMs`). */
  protected async reconcile(): Promise<HandlerResult> {
    try {
      // At most two rounds: create, then the status of what was created.
      if (await reconcileCdiConfig(this.custom, this.cdiDeps.defaults)) await reconcileCdiConfig(this.custom, this.cdiDeps.defaults);
    } catch (err) {
      this.logger.warn({ err: errorLine(err) }, `CDIConfig ${CDICONFIG_NAME}: reconcile failed (the CRD may not be installed: manifests/crds); trying again`);
    }
    return {};
  }

  protected watch(): Watch {
    return { sources: [], keys: () => [CDICONFIG_NAME] };
  }
}
