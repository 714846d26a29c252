/**
 * Pure builders for a host-assisted clone's objects (cdi.md §4.2): the target pod (`ferry
 * clone-target`, an upload server pod in shape: its Service `cdi-upload-<pvc>`, its TLS Secret from
 * the upload server CA, `CLIENT_NAME` = the clone's client name) in the target namespace, and the
 * source pod (`ferry clone-source`, CDI's `<target UID>-source-pod`) in the source namespace,
 * mounting the source PVC read-only, with a per-clone client certificate Secret. Both pass the
 * "restricted" Pod Security Standard. The environments come from src/contract/clone-env.ts.
 */

import type { V1Affinity, V1PersistentVolumeClaim, V1Pod, V1Secret } from '@kubernetes/client-node';
import { Label, LabelValue, UPLOAD_SERVICE_LABEL } from '../../src/api/cdi.js';
import { CLONE_SOURCE_DEVICE, CLONE_SOURCE_MOUNT, cloneClientName, decodeCloneTargetProgress, encodeCloneSourceEnv, encodeCloneTargetProgress, sourceOf, VolumeMode } from '../../src/contract/clone-env.js';
import { CLONE_HEALTHZ_PATH, CLONE_PATH } from '../../src/contract/clone-stream.js';
import type { CloneRef, ObjectRef } from '../../src/contract/clone-token.js';
import { ContentType, WORKER_NODE_OPTIONS } from '../../src/contract/import-spec.js';
import { TERMINATION_MESSAGE_PATH } from '../../src/contract/termination.js';
import { UPLOAD_SERVER_PORT, uploadServiceName } from '../../src/contract/upload-api.js';
import { encodeUploadServerEnv } from '../../src/contract/upload-server.js';
import type { ControllerConfig } from '../config.js';
import { isBlock, ownerUid } from '../import/importer-pod.js';
import { buildUploadPod, uploadServerConfigFor } from '../upload/upload-pod.js';

/** Labels on the clone pods: `ferry.dev/clone: target|source` (the controller's informer selects on the key). */
export const CLONE_LABEL = 'ferry.dev/clone';
export const CloneRole = { Target: 'target', Source: 'source' } as const;
export const CLONE_POD_SELECTOR = CLONE_LABEL;
/** On a source pod and Secret (no owner reference crosses namespaces): the target PVC, `<ns>/<name>`, and its UID. */
export const CLONE_TARGET_ANNOTATION = 'ferry.dev/clone.target';
export const CLONE_TARGET_UID_LABEL = 'ferry.dev/clone-target-uid';

export const CloneTlsPath = { Dir: '/etc/ferry/clone-tls', Key: '/etc/ferry/clone-tls/tls.key', Cert: '/etc/ferry/clone-tls/tls.crt', ServerCa: '/etc/ferry/clone-tls/ca.crt' } as const;
export const CloneTlsKey = { Key: 'tls.key', Cert: 'tls.crt', ServerCa: 'ca.crt' } as const;

/** The target pod and Service: CDI's upload names (the target is an upload server). */
export const targetPodName = (pvcName: string): string => uploadServiceName(pvcName);
/** CDI's source pod name, and its Secret. */
export const sourcePodName = (targetUid: string): string => `${targetUid}-source-pod`;
export const sourceSecretName = (targetUid: string): string => `${targetUid}-source-tls`;

export function cloneOf(pvc: V1PersistentVolumeClaim, source: ObjectRef): CloneRef {
  return { source, target: { namespace: pvc.metadata?.namespace ?? '', name: pvc.metadata?.name ?? '' } };
}

/**
 * Pure: where the target serves its progress: the importers' metrics port, or the one after the
 * target's own port when they are the same (both default to 8443, CDI's).
 */
export function targetMetricsPort(config: ControllerConfig): number {
  return config.importerMetricsPort === UPLOAD_SERVER_PORT ? UPLOAD_SERVER_PORT + 1 : config.importerMetricsPort;
}

/** Pure: the progress endpoint a target pod was made with (read back from its environment), or undefined. */
export function targetProgressOf(pod: V1Pod): { readonly port: number; readonly ownerUid: string } | undefined {
  const env = Object.fromEntries((pod.spec?.containers?.[0]?.env ?? []).map((e) => [e.name, e.value ?? '']));
  try {
    const { metricsPort, ownerUid: owner } = decodeCloneTargetProgress(env, -1);
    return metricsPort === 0 ? undefined : { port: metricsPort, ownerUid: owner };
  } catch {
    return undefined;
  }
}

/** The target pod: the upload server pod's shape, running `clone-target` for exactly this clone's client. */
export function buildTargetPod(pvc: V1PersistentVolumeClaim, contentType: ContentType, clone: CloneRef, config: ControllerConfig, deadline: number): V1Pod {
  const base = buildUploadPod(pvc, contentType, config, { withScratch: false, deadline });
  const env = encodeUploadServerEnv({ ...uploadServerConfigFor(pvc, contentType, config, { withScratch: false, deadline }), clientName: cloneClientName(clone.source, clone.target) });
  const container = base.spec!.containers[0]!;
  const name = pvc.metadata?.name ?? '';
  return {
    ...base,
    metadata: { ...base.metadata, labels: { [Label.App]: LabelValue.App, [CLONE_LABEL]: CloneRole.Target, [UPLOAD_SERVICE_LABEL]: targetPodName(name) } },
    spec: {
      ...base.spec!,
      containers: [
        {
          ...container,
          name: 'clone-target',
          args: ['clone-target'],
          env: Object.entries({ ...env, ...encodeCloneTargetProgress({ ownerUid: ownerUid(pvc), metricsPort: targetMetricsPort(config) }), NODE_OPTIONS: WORKER_NODE_OPTIONS }).map(([k, v]) => ({ name: k, value: v })),
          readinessProbe: { httpGet: { path: CLONE_HEALTHZ_PATH, port: UPLOAD_SERVER_PORT, scheme: 'HTTPS' }, initialDelaySeconds: 1, periodSeconds: 5 },
        },
      ],
    },
  };
}

/** The DNS names the source reaches the target by (the target's certificate carries them). */
export function targetUrl(clone: CloneRef): string {
  return `https://${targetPodName(clone.target.name)}.${clone.target.namespace}.svc:${UPLOAD_SERVER_PORT}${CLONE_PATH}`;
}

function sourceMeta(target: V1PersistentVolumeClaim, clone: CloneRef, name: string): V1Pod['metadata'] {
  return {
    name,
    namespace: clone.source.namespace,
    labels: { [Label.App]: LabelValue.App, [CLONE_LABEL]: CloneRole.Source, [CLONE_TARGET_UID_LABEL]: target.metadata?.uid ?? '' },
    annotations: { [CLONE_TARGET_ANNOTATION]: `${clone.target.namespace}/${clone.target.name}` },
  };
}

/** Pure: whether a claim can be attached to one node at a time (ReadWriteOnce, ReadWriteOncePod). */
export function singleNode(pvc: V1PersistentVolumeClaim): boolean {
  const modes = pvc.spec?.accessModes ?? [];
  return modes.length > 0 && modes.every((m) => m === 'ReadWriteOnce' || m === 'ReadWriteOncePod');
}

/**
 * Pure: the nodes the source claim is in use on, when it can be attached to one node only: every
 * unfinished pod (not the clone's own) with a volume of that claim, read-only or not, that has a
 * node. CDI gives the source pod a required affinity to such pods; a required node affinity to
 * their nodes says the same without a label to select them by.
 */
export function sourceNodes(sourcePvc: V1PersistentVolumeClaim, pods: readonly V1Pod[]): string[] {
  if (!singleNode(sourcePvc)) return [];
  const name = sourcePvc.metadata?.name;
  const nodes = pods
    .filter((p) => p.metadata?.labels?.[CLONE_LABEL] === undefined && p.status?.phase !== 'Succeeded' && p.status?.phase !== 'Failed')
    .filter((p) => (p.spec?.volumes ?? []).some((v) => v.persistentVolumeClaim?.claimName === name))
    .map((p) => p.spec?.nodeName)
    .filter((n): n is string => n !== undefined && n !== '');
  return [...new Set(nodes)].sort();
}

/** Pure: the source pod's affinity: required to the nodes the RWO source is in use on, preferred next to the target pod. */
export function sourceAffinity(sourcePvc: V1PersistentVolumeClaim, pods: readonly V1Pod[], clone: CloneRef): V1Affinity {
  const nodes = sourceNodes(sourcePvc, pods);
  return {
    ...(nodes.length > 0
      ? { nodeAffinity: { requiredDuringSchedulingIgnoredDuringExecution: { nodeSelectorTerms: [{ matchFields: [{ key: 'metadata.name', operator: 'In', values: nodes }] }] } } }
      : {}),
    // Next to the target pod when the scheduler can (CDI's preferred affinity).
    podAffinity: {
      preferredDuringSchedulingIgnoredDuringExecution: [
        { weight: 100, podAffinityTerm: { topologyKey: 'kubernetes.io/hostname', namespaces: [clone.target.namespace], labelSelector: { matchLabels: { [UPLOAD_SERVICE_LABEL]: targetPodName(clone.target.name) } } } },
      ],
    },
  };
}

/** The source pod: the source PVC read-only (its disk.img, its directory tree, or its device), nothing else writable. */
export function buildSourcePod(target: V1PersistentVolumeClaim, sourcePvc: V1PersistentVolumeClaim, contentType: ContentType, clone: CloneRef, config: ControllerConfig, sourceUsers: readonly V1Pod[] = []): V1Pod {
  const uid = target.metadata?.uid ?? '';
  const block = isBlock(sourcePvc);
  const { kind, path } = sourceOf(block ? VolumeMode.Block : VolumeMode.Filesystem, contentType, block ? CLONE_SOURCE_DEVICE : CLONE_SOURCE_MOUNT);
  const env = encodeCloneSourceEnv({
    kind,
    path,
    url: targetUrl(clone),
    tls: { keyFile: CloneTlsPath.Key, certFile: CloneTlsPath.Cert, serverCaFile: CloneTlsPath.ServerCa },
    terminationLog: TERMINATION_MESSAGE_PATH,
  });
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: sourceMeta(target, clone, sourcePodName(uid)),
    spec: {
      restartPolicy: 'Never',
      enableServiceLinks: false,
      automountServiceAccountToken: false,
      // No fsGroup: the kubelet would change ownership on the source volume.
      securityContext: { runAsNonRoot: true, runAsUser: 107, runAsGroup: 107, seccompProfile: { type: 'RuntimeDefault' } },
      affinity: sourceAffinity(sourcePvc, sourceUsers, clone),
      containers: [
        {
          name: 'clone-source',
          image: config.importerImage,
          imagePullPolicy: config.importerPullPolicy,
          args: ['clone-source'],
          env: Object.entries({ ...env, NODE_OPTIONS: WORKER_NODE_OPTIONS }).map(([k, v]) => ({ name: k, value: v })),
          resources: config.importerResources,
          volumeMounts: [{ name: 'tls', mountPath: CloneTlsPath.Dir, readOnly: true }, ...(block ? [] : [{ name: 'source', mountPath: CLONE_SOURCE_MOUNT, readOnly: true }])],
          ...(block ? { volumeDevices: [{ name: 'source', devicePath: CLONE_SOURCE_DEVICE }] } : {}),
          terminationMessagePath: TERMINATION_MESSAGE_PATH,
          terminationMessagePolicy: 'FallbackToLogsOnError',
          securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] }, runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } },
        },
      ],
      volumes: [
        { name: 'source', persistentVolumeClaim: { claimName: clone.source.name, readOnly: true } },
        // 0444, not 0440: without fsGroup the kubelet leaves the files root's, and user 107 reads them
        // only through the other bits (EACCES on a real node otherwise). The Secret is this pod's alone.
        { name: 'tls', secret: { secretName: sourceSecretName(uid), defaultMode: 0o444 } },
      ],
    },
  };
}

/** The source pod's Secret: its client key and certificate (CN = the client name) and the server CA bundle. */
export function buildSourceSecret(target: V1PersistentVolumeClaim, clone: CloneRef, material: { key: string; cert: string; serverCaBundle: string }): V1Secret {
  const b64 = (text: string): string => Buffer.from(text).toString('base64');
  return {
    apiVersion: 'v1',
    kind: 'Secret',
    type: 'Opaque',
    metadata: sourceMeta(target, clone, sourceSecretName(target.metadata?.uid ?? '')),
    data: { [CloneTlsKey.Key]: b64(material.key), [CloneTlsKey.Cert]: b64(material.cert), [CloneTlsKey.ServerCa]: b64(material.serverCaBundle) },
  };
}
