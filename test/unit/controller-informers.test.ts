/** The shared informer factory hands every controller the same cache per resource and selector. */

import { describe, expect, test } from '@jest/globals';
import { KubeConfig } from '@kubernetes/client-node';
import { InformerFactory } from '../../controller/runtime/informers.js';
import { silentLogger } from '../../src/logging.js';

function kubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  // Never contacted: nothing here starts an informer.
  kc.loadFromOptions({ clusters: [{ name: 'c', server: 'https://127.0.0.1:1' }], users: [{ name: 'u' }], contexts: [{ name: 'x', cluster: 'c', user: 'u' }], currentContext: 'x' });
  return kc;
}

describe('InformerFactory', () => {
  test('one PVC cache, one cache per pod selector, one per custom resource', () => {
    const f = new InformerFactory(kubeConfig(), ['a', 'b'], silentLogger());
    expect(f.pvcs()).toBe(f.pvcs());
    expect(f.pods('app=importer')).toBe(f.pods('app=importer'));
    expect(f.pods('app=importer')).not.toBe(f.pods('app=launcher'));
    expect(f.custom('kubevirt.io', 'v1', 'virtualmachines')).toBe(f.custom('kubevirt.io', 'v1', 'virtualmachines'));
    expect(f.custom('kubevirt.io', 'v1', 'virtualmachines')).not.toBe(f.custom('kubevirt.io', 'v1', 'virtualmachineinstances'));
  });

  test('an empty cache answers for watched and unwatched namespaces alike, and is not synced before its first list', () => {
    const f = new InformerFactory(kubeConfig(), ['a', 'b'], silentLogger());
    const pvcs = f.pvcs();
    expect(pvcs.synced).toBe(false);
    expect(pvcs.get('x', 'a')).toBeUndefined();
    expect(pvcs.get('x', 'c')).toBeUndefined();
    expect(pvcs.list()).toEqual([]);
    expect(pvcs.list('c')).toEqual([]);
  });
});
