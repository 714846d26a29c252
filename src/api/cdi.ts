/**
 * CDI's vocabulary on PersistentVolumeClaims and pods, as Ferry reads and writes it. Keys are CDI's
 * own (so CDI manifests and tools work unchanged); the few Ferry additions live under `ferry.dev/`.
 */

const CDI = 'cdi.kubevirt.io';

export const Annotation = {
  // Import request (written by users or a DataVolume controller).
  Endpoint: `${CDI}/storage.import.endpoint`,
  LegacyEndpoint: 'kubevirt.io/storage.import.endpoint',
  Source: `${CDI}/storage.import.source`,
  SecretName: `${CDI}/storage.import.secretName`,
  CertConfigMap: `${CDI}/storage.import.certConfigMap`,
  InsecureSkipVerify: `${CDI}/storage.import.insecureSkipVerify`,
  ContentType: `${CDI}/storage.contentType`,
  Checksum: `${CDI}/storage.import.checksum`,
  /** Numbered: `<key>.0`, `<key>.1`, ...: one "Name: value" header line each (a DataVolume's http.extraHeaders). */
  ExtraHeaders: `${CDI}/storage.import.extraHeaders`,
  /** Numbered: `<key>.0`, ...: the name of a Secret whose every key is one header line (http.secretExtraHeaders). */
  SecretExtraHeaders: `${CDI}/storage.import.secretExtraHeaders`,
  RetainAfterCompletion: `${CDI}/storage.pod.retainAfterCompletion`,
  PreallocationRequested: `${CDI}/storage.preallocation.requested`,
  /** Present (any value, as CDI reads it): import now, even where the storage class binds on first consumer. */
  ImmediateBinding: `${CDI}/storage.bind.immediate.requested`,

  // Status (written by the controller).
  ImportPodName: `${CDI}/storage.import.importPodName`,
  PodPhase: `${CDI}/storage.pod.phase`,
  PodRestarts: `${CDI}/storage.pod.restarts`,
  RequiresScratch: `${CDI}/storage.import.requiresScratch`,
  FatalError: `${CDI}/storage.import.fatalError`,
  Preallocation: `${CDI}/storage.preallocation`,
  RunningCondition: `${CDI}/storage.condition.running`,
  RunningMessage: `${CDI}/storage.condition.running.message`,
  RunningReason: `${CDI}/storage.condition.running.reason`,
  /** Overrides a DataVolume's Bound condition while the PVC is not Bound (CDI's storage.condition.bound*). */
  BoundCondition: `${CDI}/storage.condition.bound`,
  BoundMessage: `${CDI}/storage.condition.bound.message`,
  BoundReason: `${CDI}/storage.condition.bound.reason`,
  CreatedByController: `${CDI}/storage.createdByController`,

  // Ferry's own.
  Progress: 'ferry.dev/import.progress',
  ErrorCode: 'ferry.dev/import.errorCode',
  LastFailureTime: 'ferry.dev/import.lastFailureTime',
  /** UID of the failed pod already counted, so a stale cache cannot count one failure twice. */
  LastFailedPod: 'ferry.dev/import.lastFailedPod',
} as const;
export type Annotation = (typeof Annotation)[keyof typeof Annotation];

export const Label = {
  App: 'app',
  Component: CDI,
  Prometheus: `prometheus.${CDI}`,
  OwnerPvc: 'ferry.dev/pvc',
} as const;

export const LabelValue = {
  App: 'containerized-data-importer',
  Importer: 'importer',
} as const;

/** The importer pod's labels, as CDI's (so existing selectors and dashboards find them). */
export const IMPORTER_POD_LABELS: Readonly<Record<string, string>> = Object.freeze({
  [Label.App]: LabelValue.App,
  [Label.Component]: LabelValue.Importer,
  [Label.Prometheus]: 'true',
});

export const IMPORTER_POD_SELECTOR = `${Label.App}=${LabelValue.App},${Label.Component}=${LabelValue.Importer}`;

/** Pod phases as the PVC mirrors them. */
export const PodPhase = {
  Pending: 'Pending',
  Running: 'Running',
  Succeeded: 'Succeeded',
  Failed: 'Failed',
} as const;
export type PodPhase = (typeof PodPhase)[keyof typeof PodPhase];

export const EventReason = {
  ImportSucceeded: 'ImportSucceeded',
  ImportFailed: 'ErrImportFailed',
  ScratchRequired: 'ScratchSpaceRequired',
  InvalidRequest: 'ErrInvalidImportRequest',
  WaitForFirstConsumer: 'WaitForFirstConsumer',
} as const;
export type EventReason = (typeof EventReason)[keyof typeof EventReason];

/** Paths inside the importer pod, as CDI lays them out. */
export const PodPath = {
  DataDir: '/data',
  Disk: '/data/disk.img',
  BlockDevice: '/dev/cdi-block-volume',
  Scratch: '/scratch',
  Certs: '/certs',
  /** The secretExtraHeaders Secrets, one directory each: `/extraheaders/<n>`. */
  ExtraHeaders: '/extraheaders',
} as const;

/** Upload targets and their server pods (CDI's keys; appended with the upload controller). */
export const UploadAnnotation = {
  /** A PVC that waits for an upload (value ignored, as CDI's `storage.upload.target: ""`). */
  Target: `${CDI}/storage.upload.target`,
  /** The upload server pod's name, written by the controller. */
  PodName: `${CDI}/storage.uploadPodName`,
  /** `"true"` while the upload server pod is Ready: the proxy forwards only then. */
  PodReady: `${CDI}/storage.pod.ready`,
  /** On the pods, Services and Secrets the upload controller creates. */
  CreatedByUploadController: `${CDI}/storage.createdByUploadController`,
} as const;

export const UploadLabelValue = {
  UploadServer: 'cdi-upload-server',
} as const;

/** CDI's Service selector label on an upload pod (`service: <pod name>`). */
export const UPLOAD_SERVICE_LABEL = 'service';

/** The upload server pod's labels, as CDI's. */
export const UPLOAD_POD_LABELS: Readonly<Record<string, string>> = Object.freeze({
  [Label.App]: LabelValue.App,
  [Label.Component]: UploadLabelValue.UploadServer,
});

export const UPLOAD_POD_SELECTOR = `${Label.App}=${LabelValue.App},${Label.Component}=${UploadLabelValue.UploadServer}`;

export const UploadEventReason = {
  UploadSucceeded: 'UploadSucceeded',
  UploadFailed: 'ErrUploadFailed',
  UploadReady: 'UploadReady',
  ScratchRequired: 'ScratchSpaceRequired',
  PodNameTaken: 'ErrUploadPodNameTaken',
} as const;
