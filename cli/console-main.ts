/**
 * `ferry console <vmi>` and `ferry vnc <vmi>`: reach a running guest's serial console or VNC display
 * through the Kubernetes exec API. Inside the launcher pod, `ferry console --socket PATH` is a raw
 * pipe to the launcher's console socket (replay + live output) or to libvirt's VNC socket, so nothing
 * but the apiserver's own authorization (pods/exec) guards it and no extra port is opened.
 */

import { createServer, type Socket } from 'node:net';
import type { Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import { CoreV1Api, CustomObjectsApi, Exec, KubeConfig, type V1Pod } from '@kubernetes/client-node';
import { ErrorCode, FerryError, toFerryError } from '../src/errors.js';
import { GROUP, Plural, VERSION, type VirtualMachineInstance, VmiPhase, VmLabel } from '../src/api/kubevirt.js';
import { podRuntimePaths } from '../src/contract/launch-plan.js';
import { consoleCommandLine, LAUNCHER_CONTAINER } from '../src/contract/launcher-pod.js';

export const CONSOLE_CLUSTER_USAGE = `Usage: ferry console <vmi> [-n NAMESPACE] [--kubeconfig FILE]
       ferry console --socket PATH            (inside the launcher pod, or next to a local launcher)

Attaches the terminal to the guest's serial console: what it printed since boot (up to 1 MiB), then
live output. Ctrl-] detaches.`;

export const VNC_USAGE = `Usage: ferry vnc <vmi> [--port PORT] [-n NAMESPACE] [--kubeconfig FILE]

Listens on 127.0.0.1:PORT (default: a free port, printed) and carries each VNC viewer connection to
the guest's display through the launcher pod.`;

/** The command run in the launcher pod to reach one of its sockets. */
export function socketPipeCommand(vmi: VirtualMachineInstance, which: 'console' | 'vnc'): string[] {
  const paths = podRuntimePaths(vmi.metadata.uid ?? '');
  return consoleCommandLine(which === 'console' ? paths.consoleSocket : paths.vncSocket);
}

/** The VMI's running launcher pod among the pods it created; a clear error when there is none. */
export function pickLauncherPod(vmi: VirtualMachineInstance, pods: readonly V1Pod[]): V1Pod {
  const name = `${vmi.metadata.namespace}/${vmi.metadata.name}`;
  if (vmi.status?.phase !== VmiPhase.Running) {
    throw new FerryError(ErrorCode.InvalidSpec, `VMI ${name} is not running (phase ${vmi.status?.phase ?? 'unknown'})`);
  }
  const running = pods.filter((p) => p.status?.phase === 'Running' && !p.metadata?.deletionTimestamp && p.metadata?.labels?.[VmLabel.CreatedBy] === vmi.metadata.uid);
  if (running.length === 0) throw new FerryError(ErrorCode.SourceNotFound, `VMI ${name} has no running launcher pod`);
  return running[0]!;
}

interface Io {
  readonly stdin: NodeJS.ReadStream;
  readonly stdout: Writable;
  readonly stderr: Writable;
}

async function locate(argv: readonly string[], extra: Record<string, { type: 'string' }>): Promise<{ kc: KubeConfig; vmi: VirtualMachineInstance; pod: V1Pod; values: Record<string, string | boolean | undefined> }> {
  const { values, positionals } = parseArgs({
    args: [...argv],
    allowPositionals: true,
    options: { namespace: { type: 'string', short: 'n' }, kubeconfig: { type: 'string' }, ...extra },
    strict: true,
  });
  const name = positionals[0];
  if (!name) throw new FerryError(ErrorCode.InvalidSpec, 'the VMI name is required');
  const kc = new KubeConfig();
  if (typeof values.kubeconfig === 'string') kc.loadFromFile(values.kubeconfig);
  else kc.loadFromDefault();
  const namespace = (values.namespace as string | undefined) ?? kc.getContextObject(kc.getCurrentContext())?.namespace ?? 'default';
  let vmi: VirtualMachineInstance;
  try {
    vmi = (await kc.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: Plural.VMI, name })) as VirtualMachineInstance;
  } catch (err) {
    if ((err as { code?: unknown }).code === 404) throw new FerryError(ErrorCode.SourceNotFound, `VirtualMachineInstance ${namespace}/${name} not found`);
    throw err;
  }
  const pods = await kc.makeApiClient(CoreV1Api).listNamespacedPod({ namespace, labelSelector: `${VmLabel.CreatedBy}=${vmi.metadata.uid ?? ''}` });
  return { kc, vmi, pod: pickLauncherPod(vmi, pods.items), values };
}

function fail(io: Io, err: unknown): number {
  const error = toFerryError(err);
  io.stderr.write(`error ${error.code}: ${error.message.split('\n')[0]}\n`);
  return error.exitCode;
}

export async function clusterConsoleCommand(argv: readonly string[], io: Io): Promise<number> {
  try {
    const { kc, vmi, pod } = await locate(argv, {});
    const tty = io.stdin.isTTY === true;
    if (tty) io.stdin.setRawMode(true);
    return await new Promise<number>((resolve, reject) => {
      new Exec(kc)
        .exec(pod.metadata?.namespace ?? '', pod.metadata?.name ?? '', LAUNCHER_CONTAINER, socketPipeCommand(vmi, 'console'), io.stdout, io.stderr, io.stdin, tty, (status) => {
          if (tty) io.stdin.setRawMode(false);
          resolve(status.status === 'Success' ? 0 : 1);
        })
        .catch(reject);
    });
  } catch (err) {
    return fail(io, err);
  }
}

export async function vncCommand(argv: readonly string[], io: Io): Promise<number> {
  try {
    const { kc, vmi, pod, values } = await locate(argv, { port: { type: 'string' } });
    const port = values.port === undefined ? 0 : Number(values.port);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new FerryError(ErrorCode.InvalidSpec, `--port must be a port number, got "${String(values.port)}"`);
    const server = createServer((client: Socket) => {
      new Exec(kc)
        .exec(pod.metadata?.namespace ?? '', pod.metadata?.name ?? '', LAUNCHER_CONTAINER, socketPipeCommand(vmi, 'vnc'), client, null, client, false, () => client.end())
        .catch((err: unknown) => {
          io.stderr.write(`error SOURCE_UNAVAILABLE: ${(err as Error).message}\n`);
          client.destroy();
        });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', resolve);
    });
    const address = server.address();
    io.stdout.write(`VNC for ${vmi.metadata.namespace}/${vmi.metadata.name} on 127.0.0.1:${typeof address === 'object' && address ? address.port : port} (Ctrl-C to stop)\n`);
    return await new Promise<number>((resolve) => process.once('SIGINT', () => server.close(() => resolve(0))));
  } catch (err) {
    return fail(io, err);
  }
}
