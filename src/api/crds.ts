/**
 * The CustomResourceDefinitions for Ferry's `kubevirt.io/v1` subset, as data: structural schemas for
 * the fields Ferry reads (so `kubectl explain` documents them), unknown KubeVirt fields preserved
 * (so KubeVirt YAML applies unchanged), KubeVirt's printer columns and short names, and status
 * subresources, through the generator in ./crd-schema.ts. `scripts/gen-crds.ts` writes them to
 * manifests/crds/ (./crd-files.ts); a test keeps the files in step.
 */

import { GROUP, Kind, Plural, VERSION } from './kubevirt.js';
import { AGE_COLUMN, arr, bool, crd, empty, int, obj, open, quantities, quantity, type Schema, str, strings } from './crd-schema.js';
import { DATAVOLUME_SPEC_SCHEMA } from './datavolume-crd.js';

const diskTarget = (what: string): Schema =>
  open(`Attach the volume as a ${what}.`, {
    bus: str('Bus of the device: virtio, sata or scsi. Default sata (as KubeVirt on amd64).', { enum: ['virtio', 'sata', 'scsi'] }),
    readonly: bool('Attach read-only.'),
    ...(what === 'cdrom' ? { tray: str('open or closed (default closed).') } : {}),
  });

const secretRef = (description: string): Schema => obj(description, { name: str('Name of a Secret in the VMI namespace.') }, { required: ['name'] });

const vmiSpec: Schema = open('Specification of the virtual machine instance.', {
  domain: open('The virtual hardware.', {
    cpu: open('CPU topology. Without one, sockets follow the CPU request.', {
      cores: int('Cores per socket.', { minimum: 1 }),
      sockets: int('Sockets.', { minimum: 1 }),
      threads: int('Threads per core.', { minimum: 1 }),
      model: str('CPU model; host-model by default under KVM, a TCG-safe model under emulation.'),
    }),
    memory: open('Guest memory.', { guest: quantity('Memory the guest sees; defaults to resources.requests.memory.') }),
    resources: open('Resources of the launcher pod.', {
      requests: quantities('Requests (memory, cpu).'),
      limits: quantities('Limits (memory, cpu).'),
      overcommitGuestOverhead: bool('Do not add the launcher overhead to the memory request.'),
    }),
    machine: open('Machine type.', { type: str('QEMU machine type (default q35).') }),
    firmware: open('Firmware.', {
      uuid: str('SMBIOS UUID; stable per VM name by default.'),
      serial: str('SMBIOS serial number.'),
      bootloader: open('Boot firmware: bios (SeaBIOS).', { bios: open('Legacy BIOS.', { useSerial: bool('BIOS output on the serial console.') }), efi: empty('UEFI (not supported yet).') }),
    }),
    features: open('Hypervisor features.', { acpi: open('ACPI (on unless enabled: false).', { enabled: bool('Enable ACPI.') }) }),
    devices: open('Devices.', {
      disks: arr(
        'Disks, each backed by the volume of the same name.',
        open('A disk.', {
          name: str('Name of the volume that backs this disk.'),
          disk: diskTarget('disk'),
          cdrom: diskTarget('cdrom'),
          bootOrder: int('Boot order (1 first).', { minimum: 1 }),
          serial: str('Serial number the guest sees.'),
          cache: str('Cache mode: none, writethrough or writeback (default: none where O_DIRECT works).'),
          io: str('I/O mode: native, threads or default.'),
        }),
      ),
      interfaces: arr(
        'Network interfaces; one pod-network interface is supported.',
        open('An interface.', {
          name: str('Name of the network it connects to.'),
          model: str('Device model (default virtio).'),
          masquerade: empty('NAT behind the pod address; declared ports are forwarded to the guest.'),
          bridge: empty('Not supported by Ferry.'),
          macAddress: str('MAC address.'),
          ports: arr('Ports forwarded from the pod to the guest.', open('A port.', { name: str('Port name.'), port: int('Port number.'), protocol: str('TCP or UDP (default TCP).') })),
        }),
      ),
      autoattachPodInterface: bool('Add a pod-network interface when none is declared (default true).'),
      autoattachSerialConsole: bool('Attach a serial console (default true).'),
      autoattachGraphicsDevice: bool('Attach VGA + VNC (default true).'),
      rng: empty('A virtio RNG device fed from /dev/urandom.'),
    }),
  }),
  volumes: arr(
    'Volumes.',
    open('A volume: exactly one source.', {
      name: str('Volume name (matches a disk).'),
      persistentVolumeClaim: open('A PVC: disk.img on a filesystem volume, or the raw block device.', { claimName: str('PVC name.'), readOnly: bool('Read-only.') }),
      dataVolume: open('A DataVolume: the PVC of the same name.', { name: str('DataVolume (PVC) name.') }),
      cloudInitNoCloud: open('A cloud-init NoCloud ISO (label cidata).', {
        userData: str('Inline user data.'),
        userDataBase64: str('Base64 user data.'),
        secretRef: secretRef('Secret with user data under key userdata or userData.'),
        networkData: str('Inline network config.'),
        networkDataBase64: str('Base64 network config.'),
        networkDataSecretRef: secretRef('Secret with network config under key networkdata or networkData.'),
      }),
      emptyDisk: open('A sparse scratch disk that lives as long as the VMI.', { capacity: quantity('Size.') }),
      containerDisk: open('Not supported by Ferry: import the image into a PVC with source registry.', { image: str('Image.') }),
    }),
  ),
  networks: arr('Networks.', open('A network.', { name: str('Network name.'), pod: open('The pod network.', { vmNetworkCIDR: str('Guest network (default 10.0.2.0/24).') }) })),
  nodeSelector: { type: 'object', description: 'Passed to the launcher pod.', additionalProperties: { type: 'string' } },
  affinity: open('Passed to the launcher pod.'),
  tolerations: arr('Passed to the launcher pod.', open('A toleration.')),
  terminationGracePeriodSeconds: int('Seconds the guest gets to shut down after ACPI power-off (default 30).', { minimum: 0 }),
  hostname: str('Guest hostname.'),
  subdomain: str('Subdomain.'),
  priorityClassName: str('Passed to the launcher pod.'),
  schedulerName: str('Passed to the launcher pod.'),
});

const conditions = arr(
  'Conditions.',
  open('A condition.', {
    type: str('Type.'),
    status: str('True, False or Unknown.'),
    reason: str('Reason.'),
    message: str('Message.'),
    lastProbeTime: { type: 'string', nullable: true, format: 'date-time' },
    lastTransitionTime: { type: 'string', nullable: true, format: 'date-time' },
  }),
);

const vmiStatus: Schema = open('Observed state.', {
  phase: str('Pending, Scheduling, Scheduled, Running, Succeeded, Failed or Unknown.'),
  reason: str('Why the VMI is in this phase.'),
  nodeName: str('Node of the launcher pod.'),
  conditions,
  interfaces: arr('Interfaces and their addresses.', open('An interface.', { name: str('Name.'), ipAddress: str('Address.'), ipAddresses: arr('Addresses.', { type: 'string' }), mac: str('MAC.'), infoSource: str('Where the address came from.') })),
});

const vmStatus: Schema = open('Observed state.', {
  created: bool('A VMI exists.'),
  ready: bool('The VMI is ready.'),
  printableStatus: str('Stopped, Provisioning, WaitingForVolumeBinding, Starting, Running, Stopping, Terminating, CrashLoopBackOff, ErrorPvcNotFound, DataVolumeError, Unknown.'),
  runStrategy: str('The run strategy in effect.'),
  conditions,
  stateChangeRequests: arr('Pending start/stop requests (Manual, RerunOnFailure).', open('A request.', { action: str('Start or Stop.'), uid: str('UID of the VMI a Stop targets.') })),
  startFailure: open('Consecutive failed starts and when the next start may happen.', {
    consecutiveFailCount: int('Failures in a row.'),
    lastFailedVMIUID: str('UID of the last failed VMI.'),
    retryAfterTimestamp: { type: 'string', format: 'date-time' },
  }),
  observedGeneration: int('Generation last acted on.'),
});

/**
 * A DataVolume template takes the DataVolume's own spec schema and its CEL rules, except the one that
 * makes the spec immutable: `oldSelf` cannot be used inside a list whose items the apiserver cannot
 * correlate across updates, and KubeVirt lets a VM's templates change anyway (only a DataVolume
 * created from one is immutable, by its own CRD).
 */
function withoutTransitionRules(schema: Schema): Schema {
  const rules = (schema['x-kubernetes-validations'] as Array<{ rule: string }> | undefined)?.filter((r) => !r.rule.includes('oldSelf')) ?? [];
  const rest: Schema = { ...schema };
  delete rest['x-kubernetes-validations'];
  return rules.length > 0 ? { ...rest, 'x-kubernetes-validations': rules } : rest;
}

/** Most templates a VM may carry: bounds the CEL cost estimate of the rules inside each item. */
export const MAX_DATAVOLUME_TEMPLATES = 32;

const dataVolumeTemplates: Schema = {
  ...arr(
    `DataVolumes the VM needs: each is created (named metadata.name, in the VM's namespace, owned by the VM) before the VMI starts, and the VMI starts once every one has Succeeded. A volume \`dataVolume: {name}\` mounts its PVC. At most ${MAX_DATAVOLUME_TEMPLATES}.`,
    obj(
      'A DataVolume to create for the VM.',
      {
        apiVersion: str('Ignored (cdi.kubevirt.io/v1beta1).'),
        kind: str('Ignored (DataVolume).'),
        metadata: open('Name, labels and annotations of the DataVolume.', {
          name: str('Name of the DataVolume and of its PVC.', { minLength: 1, maxLength: 253 }),
          labels: strings('Labels of the DataVolume.'),
          annotations: strings('Annotations of the DataVolume (they pass to the PVC, as in CDI).'),
        }, { required: ['name'] }),
        spec: withoutTransitionRules(DATAVOLUME_SPEC_SCHEMA),
        status: open('Ignored.'),
      },
      { required: ['metadata', 'spec'] },
    ),
  ),
  maxItems: MAX_DATAVOLUME_TEMPLATES,
};

const age = AGE_COLUMN;
const ready = { name: 'Ready', type: 'string', jsonPath: ".status.conditions[?(@.type=='Ready')].status" } as const;
const kubevirt = (kind: string, plural: string, shortNames: string[]) => ({ group: GROUP, version: VERSION, kind, plural, shortNames, description: `${kind} (the kubevirt.io/v1 subset Ferry serves).` });

export const VMI_CRD = crd({
  ...kubevirt(Kind.VMI, Plural.VMI, ['vmi', 'vmis']),
  spec: vmiSpec,
  status: vmiStatus,
  columns: [
    age,
    { name: 'Phase', type: 'string', jsonPath: '.status.phase' },
    { name: 'IP', type: 'string', jsonPath: '.status.interfaces[0].ipAddress' },
    { name: 'NodeName', type: 'string', jsonPath: '.status.nodeName' },
    ready,
  ],
});

export const VM_CRD = crd({
  ...kubevirt(Kind.VM, Plural.VM, ['vm', 'vms']),
  spec: open('Specification of the virtual machine.', {
    running: bool('Deprecated: true means runStrategy Always, false Halted.'),
    runStrategy: str('Always, Halted, Manual, RerunOnFailure or Once.', { enum: ['Always', 'Halted', 'Manual', 'RerunOnFailure', 'Once'] }),
    template: open('The VMI to run.', { metadata: open('Labels and annotations for the VMI.'), spec: vmiSpec }),
    dataVolumeTemplates,
  }),
  status: vmStatus,
  columns: [age, { name: 'Status', type: 'string', jsonPath: '.status.printableStatus' }, ready],
});
