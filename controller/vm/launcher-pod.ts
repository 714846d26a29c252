/**
 * VMI → launcher pod, as a pure function. The pod runs `ferry launcher` (libvirtd + QEMU inside the
 * pod) non-root under the "restricted" Pod Security Standard, with KubeVirt's labels, annotations and
 * mount paths, so Services selecting the VMI's labels and PVCs prepared for KubeVirt work unchanged.
 */

import { createHash } from 'node:crypto';
import type { V1Container, V1Pod, V1PodSpec, V1Volume, V1VolumeDevice, V1VolumeMount } from '@kubernetes/client-node';
import { MiB, parseQuantity } from '../../src/quantity.js';
import { API_VERSION, claimOf, Kind, VmAnnotation, type VirtualMachineInstance, vmiId, VmLabel } from '../../src/api/kubevirt.js';
import { guestMemoryBytes, vcpuCount } from '../../src/api/kubevirt-defaults.js';
import { cloudInitSecretDir, PodNetworkBackend, PodPath } from '../../src/contract/launch-plan.js';
import { decodeLauncherVmi, encodeLauncherVmi, LAUNCHER_CONTAINER, launcherCommandLine, LauncherHttpPath, LauncherPodEnv } from '../../src/contract/launcher-pod.js';
import { TERMINATION_MESSAGE_PATH } from '../../src/contract/termination.js';
import { memoryOverheadBytes } from '../../src/api/vm-overhead.js';

/** The UID KubeVirt's launcher and QEMU run as (the `qemu` user); PVC files are group-owned by it. */
export const LAUNCHER_UID = 107;
/** KubeVirt pads the pod's grace period so the launcher can still destroy a guest that ignored ACPI. */
export const GRACE_PADDING_SECONDS = 30;
/** Requested CPU per vCPU: KubeVirt's default cpuAllocationRatio of 10. */
export const MILLICPU_PER_VCPU = 100;

export interface LauncherConfig {
  readonly launcherImage: string;
  readonly launcherPullPolicy: 'Always' | 'IfNotPresent' | 'Never';
  /** Cluster setting: run guests under TCG where the node has no working /dev/kvm. */
  readonly allowEmulation: boolean;
  /** Port of the launcher's /readyz and /status endpoint. */
  readonly launcherStatusPort: number;
}

/** What the controller knows about a volume's PVC from its cache. */
export interface ClaimInfo {
  readonly block: boolean;
  /** What disk.img may grow to: min(requested, provisioned), as KubeVirt sizes it. */
  readonly capacityBytes?: number;
}

/**
 * A deterministic pod name per VMI incarnation: a re-created VMI (new UID) gets a new pod, and a
 * repeated create of the same one is AlreadyExists, not a second pod.
 */
export function launcherPodName(vmi: VirtualMachineInstance): string {
  const name = vmi.metadata.name ?? '';
  const hash = createHash('sha256').update(vmi.metadata.uid ?? name).digest('hex').slice(0, 5);
  const prefix = 'virt-launcher-';
  const keep = 63 - prefix.length - hash.length - 1;
  return `${prefix}${name.slice(0, keep).replace(/[-.]+$/, '')}-${hash}`;
}

/** Resources for the compute container: guest memory + measured overhead, 100m per vCPU. */
export function launcherResources(vmi: VirtualMachineInstance, config: LauncherConfig): { requests: Record<string, string>; limits: Record<string, string>; overhead: number } {
  const spec = vmi.spec;
  const guest = guestMemoryBytes(spec) ?? 0;
  const overhead = memoryOverheadBytes(spec, { emulation: config.allowEmulation });
  const addOverhead = spec.domain.resources?.overcommitGuestOverhead !== true;
  const requestedMemory = spec.domain.resources?.requests?.memory;
  const memoryRequest = (requestedMemory !== undefined ? parseQuantity(requestedMemory) : guest) + (addOverhead ? overhead : 0);
  const requests: Record<string, string> = {
    memory: `${Math.ceil(memoryRequest / MiB)}Mi`,
    cpu: spec.domain.resources?.requests?.cpu ?? `${vcpuCount(spec) * MILLICPU_PER_VCPU}m`,
  };
  const limits: Record<string, string> = {};
  const memoryLimit = spec.domain.resources?.limits?.memory;
  if (memoryLimit !== undefined) limits.memory = `${Math.ceil((parseQuantity(memoryLimit) + overhead) / MiB)}Mi`;
  const cpuLimit = spec.domain.resources?.limits?.cpu;
  if (cpuLimit !== undefined) limits.cpu = cpuLimit;
  // Without emulation the pod must land where KVM works: KubeVirt's device-plugin resource.
  if (!config.allowEmulation) limits['devices.kubevirt.io/kvm'] = '1';
  return { requests, limits, overhead };
}

function podLabels(vmi: VirtualMachineInstance): Record<string, string> {
  return {
    ...(vmi.metadata.labels ?? {}),
    [VmLabel.App]: VmLabel.AppLauncher,
    [VmLabel.CreatedBy]: vmi.metadata.uid ?? '',
    [VmLabel.VmiId]: vmiId(vmi.metadata.name ?? ''),
  };
}

function podAnnotations(vmi: VirtualMachineInstance, overhead: number): Record<string, string> {
  const copied = Object.fromEntries(Object.entries(vmi.metadata.annotations ?? {}).filter(([k]) => !k.startsWith('kubectl.kubernetes.io')));
  return {
    ...copied,
    [VmAnnotation.Domain]: vmi.metadata.name ?? '',
    [VmAnnotation.DefaultContainer]: LAUNCHER_CONTAINER,
    [VmAnnotation.MemoryOverhead]: String(overhead),
  };
}

/** The VMI as the launcher receives it (`$FERRY_VMI`): identity and spec, nothing the controller owns. */
export function launcherVmi(vmi: VirtualMachineInstance): VirtualMachineInstance {
  return decodeLauncherVmi(encodeLauncherVmi(vmi));
}

interface Storage {
  volumes: V1Volume[];
  mounts: V1VolumeMount[];
  devices: V1VolumeDevice[];
}

function storageFor(vmi: VirtualMachineInstance, claims: ReadonlyMap<string, ClaimInfo>): Storage {
  const volumes: V1Volume[] = [];
  const mounts: V1VolumeMount[] = [];
  const devices: V1VolumeDevice[] = [];
  for (const volume of vmi.spec.volumes ?? []) {
    const claim = claimOf(volume);
    if (claim) {
      volumes.push({ name: volume.name, persistentVolumeClaim: { claimName: claim.claimName, readOnly: claim.readOnly } });
      if (claims.get(claim.claimName)?.block) devices.push({ name: volume.name, devicePath: `${PodPath.BlockDir}/${volume.name}` });
      else mounts.push({ name: volume.name, mountPath: `${PodPath.VmiDisks}/${volume.name}`, readOnly: claim.readOnly });
      continue;
    }
    const ci = volume.cloudInitNoCloud;
    const secretMounts: Array<[string | undefined, string]> = [
      [ci?.secretRef?.name, cloudInitSecretDir(volume.name, 'user')],
      [ci?.networkDataSecretRef?.name, cloudInitSecretDir(volume.name, 'network')],
    ];
    for (const [secretName, mountPath] of secretMounts) {
      if (secretName === undefined) continue;
      const name = `${volume.name}-${mountPath === cloudInitSecretDir(volume.name, 'network') ? 'ndata' : 'udata'}`;
      volumes.push({ name, secret: { secretName } });
      mounts.push({ name, mountPath, readOnly: true });
    }
  }
  // Scratch space the launcher owns: sockets, libvirt's runtime state, cloud-init ISO, empty disks.
  for (const [name, mountPath] of [
    ['private', PodPath.Private],
    ['ephemeral-disks', PodPath.EphemeralDisks],
    ['libvirt-runtime', PodPath.LibvirtRuntime],
  ] as const) {
    volumes.push({ name, emptyDir: {} });
    mounts.push({ name, mountPath });
  }
  return { volumes, mounts, devices };
}

/**
 * The launcher's seccomp profile, relative to the kubelet's seccomp directory
 * (/var/lib/kubelet/seccomp/ferry/launcher.json): launcher/seccomp-launcher.json, containerd's
 * RuntimeDefault plus unshare, mount, umount2 and pivot_root for passt's own sandbox.
 */
export const LAUNCHER_SECCOMP_PROFILE = 'ferry/launcher.json';

export function buildLauncherPod(vmi: VirtualMachineInstance, claims: ReadonlyMap<string, ClaimInfo>, config: LauncherConfig): V1Pod {
  const spec = vmi.spec;
  const { requests, limits, overhead } = launcherResources(vmi, config);
  const storage = storageFor(vmi, claims);
  const ports = (spec.domain.devices?.interfaces ?? []).flatMap((iface) =>
    (iface.ports ?? []).map((p) => ({ ...(p.name ? { name: p.name } : {}), containerPort: p.port, protocol: p.protocol ?? 'TCP' })),
  );
  const grace = spec.terminationGracePeriodSeconds ?? 30;
  // A missing or smaller disk.img on a filesystem PVC is created/grown to the PVC's size.
  const volumeSizes: Record<string, number> = {};
  for (const volume of spec.volumes ?? []) {
    const claim = claimOf(volume);
    const info = claim ? claims.get(claim.claimName) : undefined;
    if (claim && info && !info.block && !claim.readOnly && info.capacityBytes !== undefined) volumeSizes[volume.name] = info.capacityBytes;
  }
  // passt sandboxes itself in a user namespace (unshare, mount, pivot_root), which RuntimeDefault
  // forbids: "Couldn't create user namespace: Operation not permitted" on a real kubelet. With a
  // pod interface the pod runs under LAUNCHER_SECCOMP_PROFILE (RuntimeDefault + those four calls),
  // a Localhost profile the node must hold; restricted PSS allows Localhost.
  const podNetwork = (spec.domain.devices?.interfaces ?? []).length > 0;
  const seccompProfile = podNetwork ? { type: 'Localhost', localhostProfile: LAUNCHER_SECCOMP_PROFILE } : { type: 'RuntimeDefault' };
  const commandLine = launcherCommandLine({ statusPort: config.launcherStatusPort, accel: 'auto', allowEmulation: config.allowEmulation, podNetwork: PodNetworkBackend.Passt, volumeSizes });
  const container: V1Container = {
    name: LAUNCHER_CONTAINER,
    image: config.launcherImage,
    imagePullPolicy: config.launcherPullPolicy,
    args: commandLine.args,
    env: [
      { name: LauncherPodEnv.Vmi, value: encodeLauncherVmi(vmi) },
      { name: LauncherPodEnv.PodName, valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
    ],
    resources: { requests, ...(Object.keys(limits).length > 0 ? { limits } : {}) },
    ports: [...ports, { name: 'launcher-status', containerPort: config.launcherStatusPort, protocol: 'TCP' }],
    readinessProbe: { httpGet: { path: LauncherHttpPath.Ready, port: config.launcherStatusPort }, periodSeconds: 2, failureThreshold: 2 },
    volumeMounts: storage.mounts,
    ...(storage.devices.length > 0 ? { volumeDevices: storage.devices } : {}),
    terminationMessagePath: TERMINATION_MESSAGE_PATH,
    terminationMessagePolicy: 'FallbackToLogsOnError',
    securityContext: {
      allowPrivilegeEscalation: false,
      runAsNonRoot: true,
      capabilities: { drop: ['ALL'] },
      seccompProfile,
    },
  };
  const podSpec: V1PodSpec = {
    restartPolicy: 'Never',
    terminationGracePeriodSeconds: grace + GRACE_PADDING_SECONDS,
    enableServiceLinks: false,
    automountServiceAccountToken: false,
    hostname: spec.hostname ?? (vmi.metadata.name ?? '').split('.')[0]!.slice(0, 63),
    ...(spec.subdomain ? { subdomain: spec.subdomain } : {}),
    ...(spec.nodeSelector ? { nodeSelector: spec.nodeSelector } : {}),
    ...(spec.affinity ? { affinity: spec.affinity as V1PodSpec['affinity'] } : {}),
    ...(spec.tolerations ? { tolerations: spec.tolerations } : {}),
    ...(spec.priorityClassName ? { priorityClassName: spec.priorityClassName } : {}),
    ...(spec.schedulerName ? { schedulerName: spec.schedulerName } : {}),
    securityContext: {
      // passt (non-root, no capabilities) listens on the pod's ports for the guest, every one of them
      // when none is declared (docs/adr/0011): ports below 1024 (SSH's 22) need this namespaced
      // sysctl, one of the "safe" ones the restricted profile allows.
      ...(podNetwork ? { sysctls: [{ name: 'net.ipv4.ip_unprivileged_port_start', value: '0' }] } : {}),
      runAsNonRoot: true,
      runAsUser: LAUNCHER_UID,
      runAsGroup: LAUNCHER_UID,
      fsGroup: LAUNCHER_UID,
      seccompProfile,
    },
    containers: [container],
    volumes: storage.volumes,
  };
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: launcherPodName(vmi),
      namespace: vmi.metadata.namespace ?? 'default',
      labels: podLabels(vmi),
      annotations: podAnnotations(vmi, overhead),
      ownerReferences: [
        { apiVersion: API_VERSION, kind: Kind.VMI, name: vmi.metadata.name ?? '', uid: vmi.metadata.uid ?? '', controller: true, blockOwnerDeletion: true },
      ],
    },
    spec: podSpec,
  };
}
