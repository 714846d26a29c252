/** reconcileDataVolume with fake caches and a recording writer: the plan's actions in order, and the apiserver asked before a missing PVC counts as deleted. */

import { describe, expect, test } from '@jest/globals';
import type { V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { buildClaim } from '../../controller/datavolume/claim.js';
import type { DvAction } from '../../controller/datavolume/plan.js';
import { reconcileDataVolume, type DvReconcileDeps } from '../../controller/datavolume/reconcile.js';
import type { DataVolume } from '../../src/api/datavolume.js';
import { silentLogger } from '../../src/logging.js';

const NOW = Date.parse('2026-12-01T10:00:00.000Z');

const dv = (claimName?: string): DataVolume => ({
  apiVersion: 'cdi.kubevirt.io/v1beta1',
  kind: 'DataVolume',
  metadata: { name: 'disk', namespace: 'vms', uid: 'dv-1' },
  spec: { source: { blank: {} }, storage: { resources: { requests: { storage: '1Gi' } } } },
  ...(claimName ? { status: { phase: 'Pending', claimName } } : {}),
});

function deps(o: { dv?: DataVolume; cached?: V1PersistentVolumeClaim; live?: V1PersistentVolumeClaim }): { deps: DvReconcileDeps; applied: DvAction['type'][]; reads: string[] } {
  const applied: DvAction['type'][] = [];
  const reads: string[] = [];
  return {
    applied,
    reads,
    deps: {
      caches: { getDataVolume: () => o.dv, getPvc: () => o.cached },
      writer: { apply: async (_dv, action) => void applied.push(action.type) },
      config: { filesystemOverhead: 0.06 },
      logger: silentLogger(),
      now: () => NOW,
      readPvc: async (ns, name) => {
        reads.push(`${ns}/${name}`);
        return o.live;
      },
    },
  };
}

describe('reconcileDataVolume', () => {
  test('no DataVolume (a PVC of another name woke it): nothing', async () => {
    const d = deps({});
    expect(await reconcileDataVolume('vms/disk', d.deps)).toEqual({});
    expect(d.applied).toEqual([]);
  });

  test('a new DataVolume: the PVC is created, then the status written; the apiserver is not asked', async () => {
    const d = deps({ dv: dv() });
    await reconcileDataVolume('vms/disk', d.deps);
    expect(d.applied).toEqual(['createPvc', 'patchStatus']);
    expect(d.reads).toEqual([]);
  });

  test('a PVC the cache has not seen yet is read from the apiserver, not reported deleted', async () => {
    const d = deps({ dv: dv('disk'), live: buildClaim(dv(), 0.06) });
    await reconcileDataVolume('vms/disk', d.deps);
    expect(d.reads).toEqual(['vms/disk']);
    expect(d.applied).not.toContain('createPvc');
    expect(d.applied.filter((a) => a === 'event')).toEqual([]);
  });

  test('a PVC gone from the apiserver too is reported (status and a Warning), never created again', async () => {
    const d = deps({ dv: dv('disk') });
    await reconcileDataVolume('vms/disk', d.deps);
    expect(d.reads).toEqual(['vms/disk']);
    expect(d.applied).toEqual(['patchStatus', 'event']);
  });
});
