/**
 * The temporary pod that binds a VMI's WaitForFirstConsumer volumes, as KubeVirt's
 * "ephemeral provisioning" pod does. A storage class in that mode binds a PVC only when a pod that
 * uses it is scheduled, but the import into the PVC must finish before the VMI's launcher pod may
 * start: so this pod, with the launcher's scheduling constraints and resource requests (the node
 * the scheduler picks for it is one where the launcher fits too), mounts the PVCs, runs
 * `ferry version` and exits. The scheduler binds the volumes on its way; the import controller
 * then imports, and the VMI controller deletes this pod once no volume waits.
 */

import { createHash } from 'node:crypto';
import type { V1Pod, V1VolumeDevice, V1VolumeMount } from '@kubernetes/client-node';
import { API_VERSION, claimOf, EPHEMERAL_PROVISIONING_ANNOTATION, Kind, type VirtualMachineInstance, VmLabel } from '../../src/api/kubevirt.js';
import { type ClaimInfo, LAUNCHER_UID, type LauncherConfig, launcherResources } from './launcher-pod.js';

/** Deterministic per VMI incarnation, distinct from the launcher pod's name. */
export function provisioningPodName(vmi: VirtualMachineInstance): string {
  const name = vmi.metadata.name ?? '';
  const hash = createHash('sha256').update(`${vmi.metadata.uid ?? name}:provisioning`).digest('hex').slice(0, 5);
  const prefix = 'virt-launcher-';
  const suffix = `-bind-${hash}`;
  return `${prefix}${name.slice(0, 63 - prefix.length - suffix.length).replace(/[-.]+$/, '')}${suffix}`;
}

export function isProvisioningPod(pod: V1Pod | undefined): boolean {
  return pod?.metadata?.annotations?.[EPHEMERAL_PROVISIONING_ANNOTATION] === 'true';
}

/** The pod for `claimNames` (the VMI's claims that wait); the VMI has been defaulted. */
export function buildProvisioningPod(vmi: VirtualMachineInstance, claims: ReadonlyMap<string, ClaimInfo>, waiting: readonly string[], config: LauncherConfig): V1Pod {
  const spec = vmi.spec;
  const { requests, limits } = launcherResources(vmi, config);
  const mounts: V1VolumeMount[] = [];
  const devices: V1VolumeDevice[] = [];
  const volumes = (spec.volumes ?? []).flatMap((volume) => {
    const claim = claimOf(volume);
    if (!claim || !waiting.includes(claim.claimName)) return [];
    if (claims.get(claim.claimName)?.block) devices.push({ name: volume.name, devicePath: `/dev/ferry-bind/${volume.name}` });
    else mounts.push({ name: volume.name, mountPath: `/var/run/ferry-bind/${volume.name}`, readOnly: true });
    return [{ name: volume.name, persistentVolumeClaim: { claimName: claim.claimName, readOnly: true } }];
  });
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: provisioningPodName(vmi),
      namespace: vmi.metadata.namespace ?? 'default',
      // Not the VMI's own labels: a Service selecting the VM must never route to this pod.
      labels: { [VmLabel.App]: VmLabel.AppLauncher, [VmLabel.CreatedBy]: vmi.metadata.uid ?? '' },
      annotations: { [EPHEMERAL_PROVISIONING_ANNOTATION]: 'true' },
      ownerReferences: [{ apiVersion: API_VERSION, kind: Kind.VMI, name: vmi.metadata.name ?? '', uid: vmi.metadata.uid ?? '', controller: true, blockOwnerDeletion: true }],
    },
    spec: {
      restartPolicy: 'Never',
      terminationGracePeriodSeconds: 1,
      enableServiceLinks: false,
      automountServiceAccountToken: false,
      ...(spec.nodeSelector ? { nodeSelector: spec.nodeSelector } : {}),
      ...(spec.affinity ? { affinity: spec.affinity as NonNullable<V1Pod['spec']>['affinity'] } : {}),
      ...(spec.tolerations ? { tolerations: spec.tolerations } : {}),
      ...(spec.priorityClassName ? { priorityClassName: spec.priorityClassName } : {}),
      ...(spec.schedulerName ? { schedulerName: spec.schedulerName } : {}),
      securityContext: { runAsNonRoot: true, runAsUser: LAUNCHER_UID, runAsGroup: LAUNCHER_UID, seccompProfile: { type: 'RuntimeDefault' } },
      containers: [
        {
          name: 'bind',
          image: config.launcherImage,
          imagePullPolicy: config.launcherPullPolicy,
          args: ['version'],
          resources: { requests, ...(Object.keys(limits).length > 0 ? { limits } : {}) },
          volumeMounts: mounts,
          ...(devices.length > 0 ? { volumeDevices: devices } : {}),
          securityContext: { allowPrivilegeEscalation: false, runAsNonRoot: true, capabilities: { drop: ['ALL'] }, seccompProfile: { type: 'RuntimeDefault' } },
        },
      ],
      volumes,
    },
  };
}
