/** The DataSource CRD (`datasources.cdi.kubevirt.io`, namespaced), through the one generator (./crd-schema.ts). */

import { AGE_COLUMN, arr, crd, obj, open, refused, str, validated } from './crd-schema.js';
import { DATASOURCE_GROUP, DATASOURCE_KIND, DATASOURCE_PLURAL, DATASOURCE_VERSION } from './datasource.js';

const pvc = obj('The PVC to clone from.', {
  namespace: str("Namespace of the PVC (default: the DataSource's)."),
  name: str('Name of the PVC.'),
}, { required: ['name'] });

const source = validated(
  open('Where the data is: one of pvc or snapshot.', {
    pvc,
    snapshot: refused('A VolumeSnapshot to clone from.', 'spec.source.snapshot is not supported by Ferry (no snapshot clones); use spec.source.pvc', { namespace: str('Namespace of the snapshot.'), name: str('Name of the snapshot.') }),
  }),
  { rule: 'has(self.pvc)', message: 'spec.source.pvc is required', reason: 'FieldValueRequired' },
);

const condition = open('A condition, as CDI sets it.', {
  type: str('Ready.'),
  status: str('True, False or Unknown.'),
  reason: str('Why, in one word.'),
  message: str('Why, in words.'),
  lastTransitionTime: { type: 'string', format: 'date-time', description: 'When status last changed.' },
  lastHeartbeatTime: { type: 'string', format: 'date-time', description: 'When reason or message last changed.' },
});

export const DATASOURCE_CRD = crd({
  group: DATASOURCE_GROUP,
  version: DATASOURCE_VERSION,
  kind: DATASOURCE_KIND,
  plural: DATASOURCE_PLURAL,
  shortNames: ['das'],
  description: 'A named source to clone from (a PVC in the DataSource\'s namespace, usually a golden-image namespace); DataVolumes name it in spec.sourceRef.',
  spec: obj('What the DataSource points at.', { source }, { required: ['source'] }),
  status: open('Observed state (set by the DataSource controller).', {
    conditions: arr('Condition Ready: the source exists and is populated.', condition),
  }),
  columns: [AGE_COLUMN],
});
