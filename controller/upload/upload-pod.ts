/**
 * Pure builders for what the upload controller creates for one upload target: the upload server
 * pod (`ferry uploadserver`, passing the "restricted" Pod Security Standard), the Service CDI's
 * proxy dials (`cdi-upload-<pvc>:8443`), and the Secret that delivers the pod's server certificate.
 * The pod's environment comes from the one codec, src/contract/upload-server.ts.
 */

import type { V1OwnerReference, V1PersistentVolumeClaim, V1Pod, V1Secret, V1Service, V1Volume, V1VolumeDevice, V1VolumeMount } from '@kubernetes/client-node';
import { Annotation, PodPath, UPLOAD_POD_LABELS, UPLOAD_SERVICE_LABEL, UploadAnnotation, Label } from '../../src/api/cdi.js';
import { ContentType, type ImportTarget, TargetKind, WORKER_NODE_OPTIONS } from '../../src/contract/import-spec.js';
import { TERMINATION_MESSAGE_PATH } from '../../src/contract/termination.js';
import { UPLOAD_PROXY_CLIENT_NAME, UPLOAD_SERVER_PORT, UploadPath, uploadServiceName } from '../../src/contract/upload-api.js';
import { encodeUploadServerEnv, type UploadServerConfig, UploadServerEnv } from '../../src/contract/upload-server.js';
import type { ControllerConfig } from '../config.js';
import { boundedName, isBlock, priorityClassOf, requestedBytes, scratchPvcName } from '../import/importer-pod.js';
import { serviceHosts } from '../certs/upload-certs.js';

/** Where the pod finds its certificate Secret, and the Secret's keys. */
export const UploadTlsPath = {
  Dir: '/etc/ferry/upload-tls',
  Key: '/etc/ferry/upload-tls/tls.key',
  Cert: '/etc/ferry/upload-tls/tls.crt',
  ClientCa: '/etc/ferry/upload-tls/client-ca.crt',
} as const;
export const UploadTlsKey = { Key: 'tls.key', Cert: 'tls.crt', ClientCa: 'client-ca.crt' } as const;

/** CDI's names: pod and Service `cdi-upload-<pvc>`. */
export function uploadPodName(pvcName: string): string {
  return uploadServiceName(pvcName);
}

export function uploadTlsSecretName(pvcName: string): string {
  return boundedName('', uploadServiceName(pvcName), '-tls');
}

/** The DNS names the proxy may reach the server by; the server's certificate carries them all. */
export function uploadServerHosts(namespace: string, pvcName: string): string[] {
  return serviceHosts(uploadServiceName(pvcName), namespace);
}

export function contentTypeOf(pvc: V1PersistentVolumeClaim): ContentType | undefined {
  const value = pvc.metadata?.annotations?.[Annotation.ContentType] ?? ContentType.Kubevirt;
  return value === '' ? ContentType.Kubevirt : (Object.values(ContentType) as string[]).includes(value) ? (value as ContentType) : undefined;
}

function ownedByPvc(pvc: V1PersistentVolumeClaim): V1OwnerReference[] {
  return [{ apiVersion: 'v1', kind: 'PersistentVolumeClaim', name: pvc.metadata?.name ?? '', uid: pvc.metadata?.uid ?? '', controller: true, blockOwnerDeletion: true }];
}

function labelsFor(pvc: V1PersistentVolumeClaim): Record<string, string> {
  const name = pvc.metadata?.name ?? '';
  return { ...UPLOAD_POD_LABELS, [UPLOAD_SERVICE_LABEL]: uploadPodName(name), [Label.OwnerPvc]: boundedName('', name) };
}

export interface UploadPodOptions {
  readonly withScratch: boolean;
  /** Milliseconds since the epoch: the server exits if no upload has finished by then. */
  readonly deadline: number;
}

export function uploadServerConfigFor(pvc: V1PersistentVolumeClaim, contentType: ContentType, config: ControllerConfig, options: UploadPodOptions): UploadServerConfig {
  const block = isBlock(pvc);
  const capacity = requestedBytes(pvc);
  const target: ImportTarget = block
    ? { kind: TargetKind.Block, path: PodPath.BlockDevice }
    : contentType === ContentType.Archive
      ? { kind: TargetKind.Directory, path: PodPath.DataDir }
      : { kind: TargetKind.File, path: PodPath.Disk };
  return {
    target,
    contentType,
    ...(capacity !== undefined ? { capacity } : {}),
    filesystemOverhead: block ? 0 : config.filesystemOverhead,
    preallocation: pvc.metadata?.annotations?.[Annotation.PreallocationRequested] === 'true',
    ...(options.withScratch ? { scratchDir: PodPath.Scratch } : {}),
    tls: { keyFile: UploadTlsPath.Key, certFile: UploadTlsPath.Cert, clientCaFile: UploadTlsPath.ClientCa },
    clientName: UPLOAD_PROXY_CLIENT_NAME,
    port: UPLOAD_SERVER_PORT,
    deadline: options.deadline,
    terminationLog: TERMINATION_MESSAGE_PATH,
  };
}

export function buildUploadPod(pvc: V1PersistentVolumeClaim, contentType: ContentType, config: ControllerConfig, options: UploadPodOptions): V1Pod {
  const name = pvc.metadata?.name ?? '';
  const env = Object.entries({ ...encodeUploadServerEnv(uploadServerConfigFor(pvc, contentType, config, options)), NODE_OPTIONS: WORKER_NODE_OPTIONS }).map(([k, v]) => ({ name: k, value: v }));
  const volumes: V1Volume[] = [
    { name: 'data', persistentVolumeClaim: { claimName: name } },
    { name: 'tls', secret: { secretName: uploadTlsSecretName(name), defaultMode: 0o440 } },
  ];
  const mounts: V1VolumeMount[] = [{ name: 'tls', mountPath: UploadTlsPath.Dir, readOnly: true }];
  const devices: V1VolumeDevice[] = [];
  if (isBlock(pvc)) devices.push({ name: 'data', devicePath: PodPath.BlockDevice });
  else mounts.push({ name: 'data', mountPath: PodPath.DataDir });
  if (options.withScratch) {
    volumes.push({ name: 'scratch', persistentVolumeClaim: { claimName: scratchPvcName(name) } });
    mounts.push({ name: 'scratch', mountPath: PodPath.Scratch });
  }
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: uploadPodName(name),
      namespace: pvc.metadata?.namespace ?? '',
      labels: labelsFor(pvc),
      annotations: { [UploadAnnotation.CreatedByUploadController]: 'yes' },
      ownerReferences: ownedByPvc(pvc),
    },
    spec: {
      // The controller decides what follows an exit, from the termination message.
      restartPolicy: 'Never',
      ...priorityClassOf(pvc),
      enableServiceLinks: false,
      automountServiceAccountToken: false,
      securityContext: { runAsNonRoot: true, runAsUser: 107, runAsGroup: 107, fsGroup: 107, seccompProfile: { type: 'RuntimeDefault' } },
      containers: [
        {
          name: 'uploadserver',
          image: config.importerImage,
          imagePullPolicy: config.importerPullPolicy,
          args: ['uploadserver'],
          env,
          ports: [{ name: 'upload', containerPort: UPLOAD_SERVER_PORT, protocol: 'TCP' }],
          readinessProbe: { httpGet: { path: UploadPath.Healthz, port: UPLOAD_SERVER_PORT, scheme: 'HTTPS' }, initialDelaySeconds: 1, periodSeconds: 5 },
          resources: config.importerResources,
          volumeMounts: mounts,
          ...(devices.length > 0 ? { volumeDevices: devices } : {}),
          terminationMessagePath: TERMINATION_MESSAGE_PATH,
          terminationMessagePolicy: 'FallbackToLogsOnError',
          securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] }, runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } },
        },
      ],
      volumes,
    },
  };
}

/** CDI's per-PVC Service: 8443 to the pod's 8443, selecting the pod by `service: <pod name>`. */
export function buildUploadService(pvc: V1PersistentVolumeClaim): V1Service {
  const name = pvc.metadata?.name ?? '';
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name: uploadServiceName(name),
      namespace: pvc.metadata?.namespace ?? '',
      labels: labelsFor(pvc),
      annotations: { [UploadAnnotation.CreatedByUploadController]: 'yes' },
      ownerReferences: ownedByPvc(pvc),
    },
    spec: {
      type: 'ClusterIP',
      selector: { [UPLOAD_SERVICE_LABEL]: uploadPodName(name) },
      ports: [{ name: 'uploadserver', protocol: 'TCP', port: UPLOAD_SERVER_PORT, targetPort: UPLOAD_SERVER_PORT }],
    },
  };
}

/** The Secret the pod mounts: its key, its certificate and the client CA bundle (PEM). */
export function buildUploadTlsSecret(pvc: V1PersistentVolumeClaim, material: { key: string; cert: string; clientCaBundle: string }): V1Secret {
  const name = pvc.metadata?.name ?? '';
  const b64 = (text: string): string => Buffer.from(text).toString('base64');
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'Opaque',
    metadata: {
      name: uploadTlsSecretName(name),
      namespace: pvc.metadata?.namespace ?? '',
      labels: labelsFor(pvc),
      annotations: { [UploadAnnotation.CreatedByUploadController]: 'yes' },
      ownerReferences: ownedByPvc(pvc),
    },
    data: { [UploadTlsKey.Key]: b64(material.key), [UploadTlsKey.Cert]: b64(material.cert), [UploadTlsKey.ClientCa]: b64(material.clientCaBundle) },
  };
}

/** The pod with its DEADLINE moved to `deadline` when that is earlier (its certificate ends sooner). */
export function withEarlierDeadline(pod: V1Pod, deadline: number): V1Pod {
  const containers = (pod.spec?.containers ?? []).map((c) => ({
    ...c,
    env: (c.env ?? []).map((e) => {
      if (e.name !== UploadServerEnv.Deadline || e.value === undefined) return e;
      return Date.parse(e.value) <= deadline ? e : { ...e, value: new Date(deadline).toISOString() };
    }),
  }));
  return { ...pod, spec: { ...pod.spec, containers } };
}
