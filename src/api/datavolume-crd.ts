/**
 * The DataVolume CRD (`datavolumes.cdi.kubevirt.io`, v1beta1): CDI's names, short names and
 * printer columns, a structural schema with descriptions for the fields Ferry reads (unknown CDI
 * fields preserved), and admission as CEL rules in the schema (docs/adr/0008-datavolume-admission.md):
 * exactly one source and one target, the spec immutable, and every source or field Ferry does not
 * implement refused by name.
 */

import { AGE_COLUMN, arr, bool, crd, empty, obj, open, quantities, type Rule, refused, type Schema, str, validated } from './crd-schema.js';
import { ChecksumAlgorithm } from '../checksum.js';
import { DV_GROUP, DV_KIND, DV_PLURAL, DV_VERSION, DvPhase, REFUSED_SOURCES } from './datavolume.js';

const NOT_YET = 'not supported by Ferry yet';
const NEVER = 'not supported by Ferry';

const secretRef = str('Name of a Secret in the DataVolume namespace with keys accessKeyId and secretKey (CDI\'s keys), passed to the importer by reference.');
const certConfigMap = str('Name of a ConfigMap in the DataVolume namespace with the CA certificates to trust, mounted into the importer.');
const url = (what: string): Schema => str(what, { minLength: 1 });
const scheme = (schemes: readonly string[], what: string): Rule => ({
  rule: schemes.map((s) => `self.url.startsWith('${s}')`).join(' || '),
  message: `url must start with ${schemes.join(' or ')}${what}`,
  fieldPath: '.url',
});

/**
 * A header line: a token name, a colon, a value that is not blank and has no line break (RE2). A
 * `pattern`, not a CEL rule: a rule's estimated cost, multiplied by a VM's unbounded
 * dataVolumeTemplates, is over the apiserver's budget. The importer checks every line again,
 * control characters too (src/contract/import-spec.ts).
 */
const HEADER_LINE = "^[-!#$%&'*+.^_`|~0-9A-Za-z]+:[^\\r\\n]*[^\\s][^\\r\\n]*$";
const MAX_HEADERS = 32;

const http = validated(
  open(
    'Import from an HTTP(S) URL: a raw, qcow2, VMDK, VHD(X), VDI or ISO image, optionally gz/xz/zstd compressed (or a tar archive with contentType archive).',
    {
      url: url('URL of the image (http:// or https://).'),
      secretRef: str('Name of a Secret with keys accessKeyId and secretKey, sent as HTTP basic authentication (user, password).'),
      certConfigMap,
      checksum: str('Expected digest of the downloaded bytes, algorithm:hex (sha256, sha512, sha1 or md5); a mismatch fails the import permanently.', {
        pattern: `^(${Object.entries(ChecksumAlgorithm).map(([algo, digits]) => `${algo}:[0-9a-fA-F]{${digits}}`).join('|')})$`,
      }),
      insecureSkipVerify: bool('Skip TLS certificate verification (explicit opt-in).'),
      extraHeaders: {
        ...arr(
          'Extra HTTP headers, "Name: value" each, sent with every request to the URL\'s origin (scheme, host, port) and never to another origin a redirect leads to.',
          str('One "Name: value" line: a token name, a colon, a value without line breaks.', { pattern: HEADER_LINE }),
        ),
        maxItems: MAX_HEADERS,
      },
      secretExtraHeaders: {
        ...arr(
          'Names of Secrets in the DataVolume namespace whose every key holds one "Name: value" header line, sent as extraHeaders are; mounted into the importer, never copied.',
          str('A Secret name.', { maxLength: 253, pattern: '^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$' }),
        ),
        maxItems: MAX_HEADERS,
      },
    },
    { required: ['url'] },
  ),
  scheme(['http://', 'https://'], ''),
);

const s3 = validated(
  open('Import from an S3-compatible object store: url is http(s)://<endpoint>/<bucket>/<key>.', { url: url('Object URL: http(s)://<endpoint>/<bucket>/<key>.'), secretRef, certConfigMap }, { required: ['url'] }),
  scheme(['http://', 'https://'], ''),
);

const registry = validated(
  open(
    'Import the disk/ image of a containerDisk image from a container registry.',
    {
      url: url('Image reference: docker://host[:port]/repo:tag or docker://host/repo@sha256:<digest>.'),
      secretRef: str('Name of a Secret with keys accessKeyId and secretKey: the registry user name and password (or token).'),
      certConfigMap,
      pullMethod: str(`How the image is pulled: pod (the importer pulls it; the default). node (the kubelet pulls it) is refused: ${NEVER}.`, { enum: ['pod', 'node'] }),
      imageStream: str(`An OpenShift ImageStream (needs pullMethod node). Refused: ${NEVER}.`),
      platform: open(`Platform of a multi-architecture image. Refused: ${NOT_YET}.`),
    },
    { required: ['url'] },
  ),
  { rule: "!has(self.pullMethod) || self.pullMethod == 'pod'", message: `pullMethod node is ${NEVER}; use pod`, fieldPath: '.pullMethod', reason: 'FieldValueForbidden' },
  { rule: '!has(self.imageStream)', message: `imageStream is ${NEVER}`, fieldPath: '.imageStream', reason: 'FieldValueForbidden' },
  { rule: '!has(self.platform)', message: `platform is ${NOT_YET}`, fieldPath: '.platform', reason: 'FieldValueForbidden' },
  { rule: "!has(self.url) || self.url.startsWith('docker://')", message: `url must start with docker:// (oci-archive:// is ${NEVER})`, fieldPath: '.url' },
);

const objectRef = (what: string): Schema => ({ namespace: str(`Namespace of the ${what} (default: the DataVolume's).`), name: str(`Name of the ${what}.`) });

const SOURCE_KEYS = ['http', 's3', 'registry', 'blank', 'upload', 'pvc', ...REFUSED_SOURCES] as const;

const source = validated(
  open('Where the data comes from: exactly one of http, s3, registry, blank, upload or pvc.', {
    http,
    s3,
    registry,
    blank: empty('A blank raw disk of the PVC\'s usable size.'),
    upload: empty('Wait for an upload (virtctl image-upload or ferry image-upload) through the upload proxy.'),
    pvc: obj(
      'Clone another PVC (host-assisted copy). Across namespaces the creating user needs create on datavolumes/source (or create pods) in the source namespace, checked by the clone webhook.',
      objectRef('source PVC'),
      { required: ['name'] },
    ),
    gcs: refused('Import from Google Cloud Storage.', `gcs is ${NEVER}`),
    imageio: refused('Import from oVirt ImageIO.', `imageio is ${NEVER}`),
    vddk: refused('Import from VMware through VDDK.', `vddk is ${NEVER}`),
    snapshot: refused('Clone a VolumeSnapshot.', `snapshot is ${NEVER}`),
  }),
  { rule: `[${SOURCE_KEYS.map((k) => `has(self.${k})`).join(', ')}].filter(x, x).size() == 1`, message: `exactly one source is required: one of ${SOURCE_KEYS.slice(0, 6).join(', ')}` },
);

const claimFields = (accessModes: string): Schema => ({
  accessModes: arr(accessModes, { type: 'string', enum: ['ReadWriteOnce', 'ReadOnlyMany', 'ReadWriteMany', 'ReadWriteOncePod'] }),
  volumeMode: str('Filesystem (disk.img on the volume) or Block (the raw device).', { enum: ['Filesystem', 'Block'] }),
  storageClassName: str('Storage class of the PVC (default: the cluster\'s default class).'),
  resources: open('Resources of the PVC.', { requests: quantities('requests.storage: the size.'), limits: quantities('Limits.') }),
  selector: open('Label selector of the volumes to bind.'),
  volumeName: str('Bind to this PersistentVolume.'),
  dataSource: open(`External population. Refused: ${NOT_YET}.`),
  dataSourceRef: open(`External population. Refused: ${NOT_YET}.`),
});

const sizeRequired = (field: string): Rule => ({
  rule: "has(self.resources) && has(self.resources.requests) && 'storage' in self.resources.requests",
  message: `${field}.resources.requests.storage is required`,
  fieldPath: '.resources',
  reason: 'FieldValueRequired',
});
const noPopulation: Rule = { rule: '!has(self.dataSource) && !has(self.dataSourceRef)', message: `dataSource and dataSourceRef (external population) are ${NOT_YET}`, reason: 'FieldValueForbidden' };

const pvc = validated(
  open('The PVC to create, as a PersistentVolumeClaimSpec, used as given (the size is not grown).', claimFields('Access modes (exactly one required).')),
  { rule: 'has(self.accessModes) && size(self.accessModes) == 1', message: 'spec.pvc.accessModes must hold exactly one access mode', fieldPath: '.accessModes', reason: 'FieldValueRequired' },
  sizeRequired('spec.pvc'),
  noPopulation,
);

const storage = validated(
  open(
    'The PVC to create, with defaults: accessModes [ReadWriteOnce] and volumeMode Filesystem when absent; for Filesystem volumes the size is grown by the filesystem overhead (default 6 %) so that the requested size is usable.',
    claimFields('Access modes (default [ReadWriteOnce]).'),
  ),
  noPopulation,
);

const sourceRef = validated(
  obj('A DataSource to clone from: its spec.source.pvc is the source (clone authorization as for source.pvc).', { kind: str('DataSource (the only kind).'), ...objectRef('DataSource') }, { required: ['kind', 'name'] }),
  { rule: "self.kind == 'DataSource'", message: 'spec.sourceRef.kind must be DataSource', fieldPath: '.kind' },
);

/** A clone (source.pvc or sourceRef) may leave spec.storage's size out: the source's size is taken. */
const CLONES = '(has(self.sourceRef) || (has(self.source) && has(self.source.pvc)))';

const spec = validated(
  open('What to import and where: one source (spec.source) and one target (spec.pvc or spec.storage).', {
    source,
    sourceRef,
    pvc,
    storage,
    contentType: str('kubevirt (a disk image, the default) or archive (a tar archive unpacked onto the volume).', { enum: ['kubevirt', 'archive'] }),
    preallocation: bool('Allocate the whole disk up front.'),
    priorityClassName: str('Priority class for the importer pod (passed to the PVC as cdi.kubevirt.io/storage.pod.priorityclassname).'),
    checkpoints: arr(`Multi-stage (warm) import checkpoints, for imageio and vddk sources. Ignored: ${NEVER}.`, open('A checkpoint.')),
    finalCheckpoint: bool(`Whether the last checkpoint is final. Ignored: ${NEVER}.`),
  }),
  { rule: 'has(self.source) != has(self.sourceRef)', message: 'exactly one of spec.source or spec.sourceRef is required' },
  { rule: 'has(self.pvc) != has(self.storage)', message: 'exactly one of spec.pvc or spec.storage is required' },
  {
    rule: `!has(self.storage) || ${CLONES} || (has(self.storage.resources) && has(self.storage.resources.requests) && 'storage' in self.storage.resources.requests)`,
    message: 'spec.storage.resources.requests.storage is required (only a clone may leave it out and take its source\'s size)',
    fieldPath: '.storage.resources',
    reason: 'FieldValueRequired',
  },
  {
    rule: "!(has(self.source) && (has(self.source.blank) || has(self.source.registry)) && has(self.contentType) && self.contentType == 'archive')",
    message: 'contentType archive needs an http, s3 or pvc source',
    fieldPath: '.contentType',
  },
  { rule: 'self == oldSelf', message: 'spec is immutable' },
);

const condition = open('A condition, as CDI sets it.', {
  type: str('Ready, Bound or Running.'),
  status: str('True, False or Unknown.'),
  reason: str('Why, in one word.'),
  message: str('Why, in words.'),
  lastTransitionTime: { type: 'string', format: 'date-time', description: 'When status last changed.' },
  lastHeartbeatTime: { type: 'string', format: 'date-time', description: 'When reason or message last changed.' },
});

const status = open('Observed state, from the PVC the DataVolume created.', {
  phase: str(`${Object.values(DvPhase).filter((p) => p !== '').join(', ')}.`),
  progress: str('Transfer progress, "NN.NN%", or "N/A" when unknown.'),
  restartCount: { type: 'integer', format: 'int32', description: 'Importer restarts after retryable failures.' },
  claimName: str('Name of the PVC (the DataVolume name).'),
  conditions: arr('Conditions Ready, Bound and Running.', condition),
});

export const DATAVOLUME_CRD = crd({
  group: DV_GROUP,
  version: DV_VERSION,
  kind: DV_KIND,
  plural: DV_PLURAL,
  shortNames: ['dv', 'dvs'],
  description: 'DataVolume (CDI\'s cdi.kubevirt.io/v1beta1): a PVC and the data to put in it, imported, uploaded or cloned by Ferry.',
  spec,
  status,
  columns: [
    { name: 'Phase', type: 'string', jsonPath: '.status.phase', description: 'The phase the data volume is in' },
    { name: 'Progress', type: 'string', jsonPath: '.status.progress', description: 'Transfer progress in percentage if known, N/A otherwise' },
    { name: 'Restarts', type: 'integer', jsonPath: '.status.restartCount', description: 'The number of times the transfer has been restarted.' },
    AGE_COLUMN,
  ],
});

/** The DataVolume spec schema, for the VM's `spec.dataVolumeTemplates[].spec` (src/api/crds.ts). */
export const DATAVOLUME_SPEC_SCHEMA: Schema = spec;
