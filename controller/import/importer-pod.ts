/**
 * Pure builders for what the controller creates: the importer pod (a run-once pod that passes the
 * "restricted" Pod Security Standard) and its scratch PVC. The pod's environment comes from the
 * one import-spec codec; credentials are secret references, never values.
 */

import { createHash } from 'node:crypto';
import type { V1ConfigMap, V1EnvVar, V1ObjectMeta, V1PersistentVolumeClaim, V1Pod, V1Volume, V1VolumeDevice, V1VolumeMount } from '@kubernetes/client-node';
import { Annotation, IMPORTER_POD_LABELS, Label, PodPath } from '../../src/api/cdi.js';
import { type CdiSettings, overheadOfClass, resolveSettings } from '../../src/api/cdiconfig.js';
import { DvAnnotation, requiredSpace } from '../../src/api/datavolume.js';
import { encodeImportEnv, encodeImporterSettings, ImportEnv, type ImportSpec, TargetKind, WORKER_NODE_OPTIONS } from '../../src/contract/import-spec.js';
import { TERMINATION_MESSAGE_PATH } from '../../src/contract/termination.js';
import type { ImportRequest } from '../../src/api/import-request.js';
import { MiB, parseQuantity, usableSpace } from '../../src/quantity.js';
import type { ControllerConfig } from '../config.js';
import { flagDefaults } from '../runtime/cdi-settings.js';

const MAX_NAME = 63;

/** `<prefix><name>`, shortened with a stable hash when it would not fit a DNS label. */
export function boundedName(prefix: string, name: string, suffix = ''): string {
  const full = `${prefix}${name}${suffix}`;
  if (full.length <= MAX_NAME) return full;
  const hash = createHash('sha256').update(full).digest('hex').slice(0, 8);
  const keep = MAX_NAME - prefix.length - suffix.length - hash.length - 1;
  return `${prefix}${name.slice(0, keep).replace(/[-.]+$/, '')}-${hash}${suffix}`;
}

export function importerPodName(pvcName: string): string {
  return boundedName('importer-', pvcName);
}

export function scratchPvcName(pvcName: string): string {
  return boundedName('', pvcName, '-scratch');
}

/** The UID progress is reported under: the PVC's single owner (a DataVolume) if any, as CDI does. */
export function ownerUid(pvc: V1PersistentVolumeClaim): string {
  const owners = pvc.metadata?.ownerReferences ?? [];
  return owners.length === 1 && owners[0]?.uid ? owners[0].uid : (pvc.metadata?.uid ?? '');
}

export function isBlock(pvc: V1PersistentVolumeClaim): boolean {
  return pvc.spec?.volumeMode === 'Block';
}

/** The PVC's requested size in bytes (what CDI passes as IMPORTER_IMAGE_SIZE). */
export function requestedBytes(pvc: V1PersistentVolumeClaim): number | undefined {
  const q = pvc.spec?.resources?.requests?.storage;
  return q === undefined ? undefined : parseQuantity(String(q));
}

export interface PodOptions {
  readonly withScratch: boolean;
  /** CDIConfig's settings in effect (runtime/cdi-settings.ts); absent: the controller's flags. */
  readonly settings?: CdiSettings;
}

/** The settings a pod is built with: those given, else the flags'. */
export function settingsOf(config: ControllerConfig, settings: CdiSettings | undefined): CdiSettings {
  return settings ?? resolveSettings(undefined, flagDefaults(config));
}

/** The key CDI's proxy CA ConfigMap holds the CA under, and the file it becomes beside the other CAs. */
export const PROXY_CA_KEY = 'ca.crt';
export const PROXY_CA_FILE = 'import-proxy-ca.crt';

/** CDI's copy of the trusted proxy CA ConfigMap in the PVC's namespace. */
export function proxyCaConfigMapName(pvcName: string): string {
  return boundedName('import-proxy-cm-', pvcName);
}

/** The PVC's worker-pod priority class (a DataVolume's spec.priorityClassName, as CDI's annotation). */
export function priorityClassOf(pvc: V1PersistentVolumeClaim): { priorityClassName?: string } {
  const name = pvc.metadata?.annotations?.[DvAnnotation.PodPriorityClassName]?.trim();
  return name ? { priorityClassName: name } : {};
}

export function importSpecFor(pvc: V1PersistentVolumeClaim, request: ImportRequest, config: ControllerConfig, options: PodOptions): ImportSpec {
  const settings = settingsOf(config, options.settings);
  const { httpProxy, httpsProxy, noProxy, trustedCAProxy } = settings.importProxy;
  const block = isBlock(pvc);
  const capacity = requestedBytes(pvc);
  const target = block
    ? { kind: TargetKind.Block, path: PodPath.BlockDevice }
    : request.contentType === 'archive'
      ? { kind: TargetKind.Directory, path: PodPath.DataDir }
      : { kind: TargetKind.File, path: PodPath.Disk };
  return {
    source: request.source,
    endpoint: request.endpoint,
    contentType: request.contentType,
    target,
    ...(request.certConfigMap || trustedCAProxy ? { caPath: PodPath.Certs } : {}),
    insecureTls: request.insecureTls,
    ...(request.checksum ? { checksum: request.checksum } : {}),
    ...(request.extraHeaders?.length ? { extraHeaders: request.extraHeaders } : {}),
    ...(request.secretExtraHeaders?.length ? { secretHeadersDir: PodPath.ExtraHeaders } : {}),
    ...(capacity !== undefined ? { capacity } : {}),
    filesystemOverhead: block ? 0 : overheadOfClass(settings, pvc.spec?.storageClassName),
    preallocation: request.preallocation,
    ...(options.withScratch ? { scratchDir: PodPath.Scratch } : {}),
    ownerUid: ownerUid(pvc),
    proxy: { ...(httpProxy ? { httpProxy } : {}), ...(httpsProxy ? { httpsProxy } : {}), ...(noProxy ? { noProxy } : {}) },
  };
}

export function buildImporterPod(pvc: V1PersistentVolumeClaim, request: ImportRequest, config: ControllerConfig, options: PodOptions): V1Pod {
  const name = pvc.metadata?.name ?? '';
  const namespace = pvc.metadata?.namespace ?? '';
  const settings = settingsOf(config, options.settings);
  const spec = importSpecFor(pvc, request, config, { ...options, settings });
  const env: V1EnvVar[] = Object.entries({ ...encodeImportEnv(spec), ...encodeImporterSettings({ metricsPort: config.importerMetricsPort }), NODE_OPTIONS: WORKER_NODE_OPTIONS }).map(([k, v]) => ({ name: k, value: v }));
  if (request.secretName) {
    env.push(
      { name: ImportEnv.AccessKeyId, valueFrom: { secretKeyRef: { name: request.secretName, key: 'accessKeyId', optional: true } } },
      { name: ImportEnv.SecretKey, valueFrom: { secretKeyRef: { name: request.secretName, key: 'secretKey', optional: true } } },
    );
  }

  const volumes: V1Volume[] = [{ name: 'data', persistentVolumeClaim: { claimName: name } }];
  const mounts: V1VolumeMount[] = [];
  const devices: V1VolumeDevice[] = [];
  if (isBlock(pvc)) devices.push({ name: 'data', devicePath: PodPath.BlockDevice });
  else mounts.push({ name: 'data', mountPath: PodPath.DataDir });
  const proxyCa = settings.importProxy.trustedCAProxy ? proxyCaConfigMapName(name) : undefined;
  if (proxyCa) {
    // The proxy's CA joins the source's CAs in one directory: the importer trusts every file there (CDI: /certs + /proxycerts).
    const sources = [
      ...(request.certConfigMap ? [{ configMap: { name: request.certConfigMap } }] : []),
      { configMap: { name: proxyCa, items: [{ key: PROXY_CA_KEY, path: PROXY_CA_FILE }] } },
    ];
    volumes.push({ name: 'certs', projected: { sources } });
    mounts.push({ name: 'certs', mountPath: PodPath.Certs, readOnly: true });
  } else if (request.certConfigMap) {
    volumes.push({ name: 'certs', configMap: { name: request.certConfigMap } });
    mounts.push({ name: 'certs', mountPath: PodPath.Certs, readOnly: true });
  }
  request.secretExtraHeaders?.forEach((secretName, n) => {
    // CDI's layout: Secret n at /extraheaders/n, every key one header line; only the importer's user (group) reads them.
    volumes.push({ name: `extra-headers-${n}`, secret: { secretName, defaultMode: 0o440 } });
    mounts.push({ name: `extra-headers-${n}`, mountPath: `${PodPath.ExtraHeaders}/${n}`, readOnly: true });
  });
  if (options.withScratch) {
    volumes.push({ name: 'scratch', persistentVolumeClaim: { claimName: scratchPvcName(name) } });
    mounts.push({ name: 'scratch', mountPath: PodPath.Scratch });
  }
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: importerPodName(name),
      namespace,
      labels: { ...IMPORTER_POD_LABELS, [Label.OwnerPvc]: boundedName('', name) },
      annotations: { [Annotation.CreatedByController]: 'yes' },
      ownerReferences: [
        { apiVersion: 'v1', kind: 'PersistentVolumeClaim', name, uid: pvc.metadata?.uid ?? '', controller: true, blockOwnerDeletion: true },
      ],
    },
    spec: {
      // Run once: the controller decides about retries from the termination message.
      restartPolicy: 'Never',
      ...priorityClassOf(pvc),
      enableServiceLinks: false,
      automountServiceAccountToken: false,
      securityContext: {
        runAsNonRoot: true,
        runAsUser: 107,
        runAsGroup: 107,
        fsGroup: 107,
        seccompProfile: { type: 'RuntimeDefault' },
      },
      containers: [
        {
          name: 'importer',
          image: config.importerImage,
          imagePullPolicy: config.importerPullPolicy,
          args: ['importer'],
          env,
          ports: [{ name: 'metrics', containerPort: config.importerMetricsPort, protocol: 'TCP' }],
          resources: settings.podResourceRequirements,
          volumeMounts: mounts,
          ...(devices.length > 0 ? { volumeDevices: devices } : {}),
          terminationMessagePath: TERMINATION_MESSAGE_PATH,
          terminationMessagePolicy: 'FallbackToLogsOnError',
          securityContext: {
            allowPrivilegeEscalation: false,
            capabilities: { drop: ['ALL'] },
            runAsNonRoot: true,
            seccompProfile: { type: 'RuntimeDefault' },
          },
        },
      ],
      volumes,
    },
  };
}

/** Metadata of an object the PVC owns (deleted with it), labelled as the importer's. */
function ownedBy(pvc: V1PersistentVolumeClaim, objectName: string): V1ObjectMeta {
  const name = pvc.metadata?.name ?? '';
  return {
    name: objectName,
    namespace: pvc.metadata?.namespace ?? '',
    labels: { ...IMPORTER_POD_LABELS, [Label.OwnerPvc]: boundedName('', name) },
    ownerReferences: [{ apiVersion: 'v1', kind: 'PersistentVolumeClaim', name, uid: pvc.metadata?.uid ?? '', controller: true, blockOwnerDeletion: true }],
  };
}

/**
 * The scratch PVC's size as CDI computes it (pkg/controller/util.go): what the target can use
 * (GetUsableSpace of its request under its own overhead, a MiB multiple), grown so that much stays
 * usable on the scratch volume under the scratch class's overhead (GetRequiredSpace), rounded up
 * to a MiB.
 */
export function scratchBytes(request: number, targetOverhead: number, scratchOverhead: number): number {
  const usable = Math.floor(usableSpace(request, targetOverhead) / MiB) * MiB;
  return Math.ceil(requiredSpace(usable, scratchOverhead) / MiB) * MiB;
}

/**
 * Scratch space for images that must be staged before conversion; deleted after the import. Its
 * class is CDIConfig's scratchSpaceStorageClass, else the target's (CDI's rule); its size
 * `scratchBytes` under the two classes' filesystem overheads (a Block target has none; scratch is
 * always a Filesystem volume).
 */
export function buildScratchPvc(pvc: V1PersistentVolumeClaim, settings: CdiSettings): V1PersistentVolumeClaim {
  const name = pvc.metadata?.name ?? '';
  const storageClassName = settings.scratchSpaceStorageClass ?? pvc.spec?.storageClassName;
  const request = requestedBytes(pvc);
  // Whole MiB: written as `<n>Mi`, as a person would.
  const size = request === undefined ? '1Gi' : `${scratchBytes(request, isBlock(pvc) ? 0 : overheadOfClass(settings, pvc.spec?.storageClassName), overheadOfClass(settings, storageClassName)) / MiB}Mi`;
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: ownedBy(pvc, scratchPvcName(name)),
    spec: {
      accessModes: ['ReadWriteOnce'],
      volumeMode: 'Filesystem',
      resources: { requests: { storage: size } },
      ...(storageClassName ? { storageClassName } : {}),
    },
  };
}

/** CDI's copy of the trusted proxy CA in the PVC's namespace, owned by the PVC: `data` from the admin's ConfigMap. */
export function buildProxyCaConfigMap(pvc: V1PersistentVolumeClaim, data: Readonly<Record<string, string>>): V1ConfigMap {
  const name = pvc.metadata?.name ?? '';
  return {
    apiVersion: 'v1',
    kind: 'ConfigMap',
    metadata: ownedBy(pvc, proxyCaConfigMapName(name)),
    data: { ...data },
  };
}
