/**
 * `ferry vm start|stop|restart <name>` and `ferry expose vmi|vm <name>`: the cluster-facing VM
 * commands (virtctl's). Composition root: flags, the kubeconfig, and the exit status. What start/stop
 * mean per run strategy lives in src/api/kubevirt-lifecycle.ts.
 */

import { parseArgs } from 'node:util';
import { CoreV1Api, CustomObjectsApi, KubeConfig, PatchStrategy, setHeaderOptions, type V1Service } from '@kubernetes/client-node';
import { ErrorCode, FerryError, toFerryError } from '../src/errors.js';
import { API_VERSION, GROUP, Kind, Plural, VERSION, type VirtualMachine, type VirtualMachineInstance, vmiId, VmLabel } from '../src/api/kubevirt.js';
import { type LifecycleChange, restartChange, startChange, stopChange } from '../src/api/kubevirt-lifecycle.js';

export const VM_USAGE = `Usage: ferry vm start|stop|restart <name> [-n NAMESPACE] [--kubeconfig FILE]

start    run a stopped VM (Halted → Always; Manual/RerunOnFailure: a Start request)
stop     stop a VM (Always/Once → Halted; Manual/RerunOnFailure: a Stop request)
restart  replace the running VMI with a new one`;

export const EXPOSE_USAGE = `Usage: ferry expose vmi|vm <name> --port PORT [--target-port PORT] [--type ClusterIP|NodePort|LoadBalancer]
                    [--name SERVICE] [--protocol TCP|UDP] [-n NAMESPACE] [--kubeconfig FILE]

Creates a Service that reaches the guest: it selects the launcher pod by vmi.kubevirt.io/id, and the
launcher forwards the interface's declared ports to the guest. Without --port, the ports declared
on the VMI's interface are used.`;

interface Io {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
}

function kubeConfig(path: string | undefined): KubeConfig {
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else kc.loadFromDefault();
  return kc;
}

function notFound(err: unknown): boolean {
  return (err as { code?: unknown }).code === 404;
}

async function readVm(custom: CustomObjectsApi, namespace: string, name: string): Promise<VirtualMachine> {
  try {
    return (await custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: Plural.VM, name })) as VirtualMachine;
  } catch (err) {
    if (notFound(err)) throw new FerryError(ErrorCode.SourceNotFound, `VirtualMachine ${namespace}/${name} not found`);
    throw err;
  }
}

async function readVmi(custom: CustomObjectsApi, namespace: string, name: string): Promise<VirtualMachineInstance | undefined> {
  try {
    return (await custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: Plural.VMI, name })) as VirtualMachineInstance;
  } catch (err) {
    if (notFound(err)) return undefined;
    throw err;
  }
}

/** Sends a lifecycle change; exported for tests that drive the cluster the way the CLI does. */
export async function applyLifecycle(kc: KubeConfig, namespace: string, name: string, change: LifecycleChange): Promise<void> {
  const custom = kc.makeApiClient(CustomObjectsApi);
  const jsonPatch = setHeaderOptions('Content-Type', PatchStrategy.JsonPatch);
  const at = { group: GROUP, version: VERSION, namespace, name };
  try {
    if (change.target === 'spec') await custom.patchNamespacedCustomObject({ ...at, plural: Plural.VM, body: change.patch }, jsonPatch);
    else if (change.target === 'status') await custom.patchNamespacedCustomObjectStatus({ ...at, plural: Plural.VM, body: change.patch }, jsonPatch);
    else await custom.deleteNamespacedCustomObject({ ...at, plural: Plural.VMI, body: { preconditions: { uid: change.uid } } });
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (code === 409 || code === 422) throw new FerryError(ErrorCode.InvalidSpec, `VM ${namespace}/${name} changed meanwhile; try again`);
    throw err;
  }
}

const CONFLICT_ATTEMPTS = 5;

/**
 * Reads the VM and its VMI, works out the change and sends it; the patches are guarded by the
 * state they were computed from, so a VM the controller updated meanwhile is read again (bounded).
 */
export async function vmLifecycle(kc: KubeConfig, namespace: string, name: string, verb: 'start' | 'stop' | 'restart'): Promise<void> {
  const custom = kc.makeApiClient(CustomObjectsApi);
  for (let attempt = 1; ; attempt += 1) {
    const vm = await readVm(custom, namespace, name);
    const vmi = await readVmi(custom, namespace, name);
    const change = verb === 'start' ? startChange(vm, vmi) : verb === 'stop' ? stopChange(vm, vmi) : restartChange(vm, vmi);
    try {
      await applyLifecycle(kc, namespace, name, change);
      return;
    } catch (err) {
      if (attempt >= CONFLICT_ATTEMPTS || !/changed meanwhile/.test((err as Error).message)) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
    }
  }
}

/** The Service `ferry expose` creates: pure, for tests. */
export function exposeService(
  target: { kind: 'vm' | 'vmi'; object: VirtualMachine | VirtualMachineInstance },
  options: { name?: string; port?: number; targetPort?: number; type?: string; protocol?: string },
): V1Service {
  const meta = target.object.metadata;
  const vmName = meta.name ?? '';
  const spec = target.kind === 'vm' ? (target.object as VirtualMachine).spec.template.spec : (target.object as VirtualMachineInstance).spec;
  const declared = spec.domain.devices?.interfaces?.flatMap((i) => i.ports ?? []) ?? [];
  const ports =
    options.port !== undefined
      ? [{ port: options.port, targetPort: options.targetPort ?? options.port, protocol: options.protocol ?? 'TCP' }]
      : declared.map((p, i) => ({ name: `port-${i + 1}`, port: p.port, targetPort: p.port, protocol: p.protocol ?? 'TCP' }));
  if (ports.length === 0) throw new FerryError(ErrorCode.InvalidSpec, `--port is required: ${vmName} declares no ports on its interface`);
  const type = options.type ?? 'ClusterIP';
  if (!['ClusterIP', 'NodePort', 'LoadBalancer'].includes(type)) throw new FerryError(ErrorCode.InvalidSpec, `--type must be ClusterIP, NodePort or LoadBalancer, got "${type}"`);
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: {
      name: options.name ?? `${vmName}-svc`,
      namespace: meta.namespace ?? 'default',
      ownerReferences: [
        { apiVersion: API_VERSION, kind: target.kind === 'vm' ? Kind.VM : Kind.VMI, name: vmName, uid: meta.uid ?? '', blockOwnerDeletion: false },
      ],
    },
    spec: { type, selector: { [VmLabel.VmiId]: vmiId(vmName) }, ports },
  };
}

function parse(argv: readonly string[]) {
  return parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: {
      namespace: { type: 'string', short: 'n' },
      kubeconfig: { type: 'string' },
      port: { type: 'string' },
      'target-port': { type: 'string' },
      type: { type: 'string' },
      name: { type: 'string' },
      protocol: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
}

function port(text: string | undefined, flag: string): number | undefined {
  if (text === undefined) return undefined;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new FerryError(ErrorCode.InvalidSpec, `--${flag} must be a port number, got "${text}"`);
  return n;
}

function namespaceOf(kc: KubeConfig, flag: string | undefined): string {
  return flag ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? 'default';
}

async function guarded(io: Io, usage: string, body: () => Promise<void>): Promise<number> {
  try {
    await body();
    return 0;
  } catch (err) {
    const error = toFerryError(err);
    io.stderr.write(`error ${error.code}: ${error.message.split('\n')[0]}\n`);
    if (error.code === ErrorCode.InvalidSpec && /usage/i.test(error.message)) io.stderr.write(`${usage}\n`);
    return error.exitCode;
  }
}

export function vmCommand(argv: readonly string[], io: Io): Promise<number> {
  return guarded(io, VM_USAGE, async () => {
    const { values, positionals } = parse(argv);
    const [verb, name] = positionals;
    if (values.help) return void io.stderr.write(`${VM_USAGE}\n`);
    if ((verb !== 'start' && verb !== 'stop' && verb !== 'restart') || !name) throw new FerryError(ErrorCode.InvalidSpec, `usage: ferry vm start|stop|restart <name>`);
    const kc = kubeConfig(values.kubeconfig);
    const namespace = namespaceOf(kc, values.namespace);
    await vmLifecycle(kc, namespace, name, verb);
    io.stdout.write(`VM ${name} was scheduled to ${verb}\n`);
  });
}

export function exposeCommand(argv: readonly string[], io: Io): Promise<number> {
  return guarded(io, EXPOSE_USAGE, async () => {
    const { values, positionals } = parse(argv);
    const [kind, name] = positionals;
    if (values.help) return void io.stderr.write(`${EXPOSE_USAGE}\n`);
    if ((kind !== 'vm' && kind !== 'vmi') || !name) throw new FerryError(ErrorCode.InvalidSpec, 'usage: ferry expose vmi|vm <name> --port PORT');
    const kc = kubeConfig(values.kubeconfig);
    const namespace = namespaceOf(kc, values.namespace);
    const custom = kc.makeApiClient(CustomObjectsApi);
    const object = kind === 'vm' ? await readVm(custom, namespace, name) : await readVmi(custom, namespace, name);
    if (!object) throw new FerryError(ErrorCode.SourceNotFound, `VirtualMachineInstance ${namespace}/${name} not found`);
    const service = exposeService(
      { kind, object },
      {
        ...(values.name ? { name: values.name } : {}),
        ...(values.port !== undefined ? { port: port(values.port, 'port') } : {}),
        ...(values['target-port'] !== undefined ? { targetPort: port(values['target-port'], 'target-port') } : {}),
        ...(values.type ? { type: values.type } : {}),
        ...(values.protocol ? { protocol: values.protocol } : {}),
      },
    );
    const created = await kc.makeApiClient(CoreV1Api).createNamespacedService({ namespace, body: service });
    io.stdout.write(`Service ${created.metadata?.name ?? ''} successfully exposed for ${kind} ${name}\n`);
  });
}
