/**
 * The steps every run of Ferry on the node cluster shares (test/node/*.test.ts and `npm run demo`):
 * import the built images and install Ferry from the manifests, serve the boot disk as the examples'
 * `disk-server` Service, wait for a VMI to be Running and Ready, and ssh into its guest through a
 * NodePort. Each step throws with what the cluster shows when it does not happen in time; none uses
 * jest, so scripts/demo.ts runs them as the tests do.
 */

import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import {
  imageArchive, imageName, installFerry, NODE_IP, type NodeCluster, type NodeProcess, REPO_ROOT, restrictedNamespace, until,
} from './node-cluster.js';
import { sshArgs } from './ssh.js';

export type FerryImage = 'ferry' | 'ferry-launcher';

/** The port of the examples' disk-server Service (examples/demo/disk-server.yaml) and of the httpd behind it. */
export const DISK_SERVER_PORT = 8080;
export const DISK_SERVER_YAML = join(REPO_ROOT, 'examples', 'demo', 'disk-server.yaml');

const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

export interface FerryInstall {
  /** The ferry image's reference as imported (`localhost/ferry:<commit>`). */
  readonly ferryImage: string;
  /** The kustomize overlay installFerry() applied (apply it again with `kubectl apply -k`). */
  readonly overlay: string;
}

/**
 * Imports `images` into the node's containerd (each must hold the name its archive says), creates
 * `namespaces` enforcing the restricted Pod Security Standard, installs Ferry with `kubectl apply -k`
 * and waits for the controller (and, with `apiserver`, ferry apiserver: the clone webhook is
 * failurePolicy Fail). `progress` hears each step with its time.
 */
export async function setUpFerry(
  cluster: NodeCluster,
  dir: string,
  options: { images: readonly FerryImage[]; namespaces?: readonly string[]; apiserver?: boolean; progress?: (line: string) => void },
): Promise<FerryInstall> {
  const progress = options.progress ?? ((): void => undefined);
  let t = Date.now();
  for (const image of options.images) {
    const archive = imageArchive(image);
    const imported = await cluster.importImage(archive);
    if (!imported.includes(imageName(archive))) throw new Error(`${archive}: imported ${imported.join(', ')}, not ${imageName(archive)}`);
    progress(`imported ${imageName(archive)} into the node's containerd (${seconds(Date.now() - t)})`);
    t = Date.now();
  }
  for (const ns of options.namespaces ?? []) await restrictedNamespace(cluster, ns);
  const ferryImage = imageName(imageArchive('ferry'));
  const overlay = await installFerry(cluster, ferryImage, dir);
  if (options.apiserver) {
    const rollout = await cluster.kubectl(['-n', 'ferry-system', 'rollout', 'status', 'deployment/ferry-apiserver', '--timeout=180s'], { timeoutMs: 200_000 });
    if (rollout.code !== 0) {
      const pods = await cluster.kubectl(['-n', 'ferry-system', 'describe', 'pods', '-l', 'app.kubernetes.io/component=apiserver']);
      const logs = await cluster.kubectl(['-n', 'ferry-system', 'logs', '-l', 'app.kubernetes.io/component=apiserver', '--tail=20', '--prefix']);
      throw new Error(`ferry-apiserver did not roll out: ${rollout.stderr}\n${pods.stdout.slice(-6000)}\n${logs.stdout}${logs.stderr}`);
    }
  }
  progress(`kubectl apply -k → Ferry rolled out (${seconds(Date.now() - t)})`);
  return { ferryImage, overlay };
}

/** The test disk of scripts/make-boot-disk.sh (cached by its recipe): a kernel, busybox, dropbear, cloud-init's key. */
export function makeBootDisk(): string {
  return execFileSync('bash', [join(REPO_ROOT, 'scripts', 'make-boot-disk.sh')], { encoding: 'utf8' }).trim().split('\n').pop() ?? '';
}

export interface DiskServer {
  /** The boot disk's path on this machine (compare the imported disk against it). */
  readonly bootDisk: string;
  /** busybox httpd on the node address; its log (`-v`) names the clients. */
  readonly http: NodeProcess;
}

/**
 * The examples' `disk-server`: busybox httpd on the node address serving the boot disk as
 * `fileName` from `dir`/www, and in each of `namespaces` the Service of examples/demo/disk-server.yaml
 * (an EndpointSlice to the node), which the cluster DNS names `disk-server.<ns>.svc.cluster.local`.
 */
export async function startDiskServer(cluster: NodeCluster, dir: string, fileName: string, namespaces: readonly string[]): Promise<DiskServer> {
  const bootDisk = makeBootDisk();
  const www = join(dir, 'www');
  mkdirSync(www, { recursive: true });
  copyFileSync(bootDisk, join(www, fileName));
  const http = cluster.startInNode('httpd', 'busybox', ['httpd', '-f', '-v', '-p', `${NODE_IP}:${DISK_SERVER_PORT}`, '-h', www]);
  for (const ns of namespaces) await cluster.kubectlOk(['-n', ns, 'apply', '-f', DISK_SERVER_YAML]);
  return { bootDisk, http };
}

/** `{"step": seconds, …}` of step → milliseconds, for a test's last line. */
export function formatTimings(timings: Readonly<Record<string, number>>): string {
  return JSON.stringify(Object.fromEntries(Object.entries(timings).map(([k, v]) => [k, Number((v / 1000).toFixed(1))])));
}

/** The lines of `changed` that differ from `original`; throws when the line counts differ (a line was added or lost). */
export function changedLines(original: string, changed: string): string[] {
  const a = original.split('\n');
  const b = changed.split('\n');
  if (a.length !== b.length) throw new Error(`line count changed: ${a.length} → ${b.length}`);
  return b.filter((line, i) => line !== a[i]);
}

export type Vmi = { status?: { phase?: string; nodeName?: string; conditions?: { type: string; status: string; reason?: string; message?: string }[] } };

export async function vmiStatus(cluster: NodeCluster, namespace: string, name: string): Promise<Vmi> {
  const custom = cluster.kubeConfig.makeApiClient(k8s.CustomObjectsApi);
  return (await custom.getNamespacedCustomObject({ group: 'kubevirt.io', version: 'v1', namespace, plural: 'virtualmachineinstances', name })) as Vmi;
}

/** Waits for the VMI's phase Running with Ready True; `onPhase` hears every new phase (the demo prints them). */
export async function vmiRunningAndReady(
  cluster: NodeCluster,
  namespace: string,
  name: string,
  ms: number,
  options: { describe?: () => Promise<string>; onPhase?: (phase: string) => void | Promise<void> } = {},
): Promise<Vmi> {
  let last: string | undefined;
  return until(`VMI ${namespace}/${name} Running and Ready`, ms, async () => {
    const v = await vmiStatus(cluster, namespace, name);
    const ready = v.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
    const shown = `${v.status?.phase ?? '(no phase yet)'}${ready ? ', Ready' : ''}`;
    if (shown !== last) await options.onPhase?.(shown);
    last = shown;
    return v.status?.phase === 'Running' && ready ? v : undefined;
  }, options.describe);
}

/** Runs a program inside the cluster's netns (the node's network), bounded; never rejects. */
export function inNodeNet(cluster: NodeCluster, file: string, args: readonly string[], timeoutMs: number): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    const child = spawn('nsenter', [`--net=/run/netns/${cluster.netns}`, '--', file, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code: code ?? -1, out });
    });
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ code: -1, out: String(e) });
    });
  });
}

/** The `ssh` command line a user on the node runs (printed by the demo; what sshIntoGuest runs). */
export function sshCommand(cluster: NodeCluster, key: string, port: number, command: string): string[] {
  return ['nsenter', `--net=/run/netns/${cluster.netns}`, '--', 'ssh', ...sshArgs(key, port, NODE_IP, command)];
}

export interface SshResult {
  /** The server's first line (`SSH-2.0-dropbear_…`). */
  readonly banner: string;
  /** When the banner came (Date.now()). */
  readonly bannerAt: number;
  /** What `command` printed in the guest. */
  readonly out: string;
}

/**
 * From the node's network: waits (bounded by `bannerMs`) for an SSH banner on `<node address>:port`
 * (the guest boots under TCG after its VMI is Ready), then logs in with `key` and runs `command`,
 * retrying (bounded by `loginMs`) until ssh exits 0.
 */
export async function sshIntoGuest(
  cluster: NodeCluster,
  options: { key: string; port: number; command: string; bannerMs: number; loginMs: number; describe?: () => Promise<string> },
): Promise<SshResult> {
  const banner = await until(`an SSH banner on ${NODE_IP}:${options.port}`, options.bannerMs, async () => {
    const r = await inNodeNet(cluster, 'busybox', ['nc', '-w', '5', NODE_IP, String(options.port)], 15_000);
    return r.out.startsWith('SSH-') ? r.out.split('\n')[0]!.trim() : undefined;
  }, options.describe);
  const bannerAt = Date.now();
  const out = await until('ssh login', options.loginMs, async () => {
    const r = await inNodeNet(cluster, 'ssh', sshArgs(options.key, options.port, NODE_IP, options.command), 60_000);
    return r.code === 0 ? r.out : undefined;
  }, options.describe);
  return { banner, bannerAt, out };
}

/** What a failing wait prints: objects of Ferry's and pods in `namespaces`, recent events, the launcher's and the controller's logs. */
export async function describeCluster(cluster: NodeCluster, namespaces: readonly string[]): Promise<string> {
  const out = async (args: string[]): Promise<string> => {
    const r = await cluster.kubectl(args);
    return `${r.stdout}${r.stderr}`.trim();
  };
  const parts: string[] = [];
  for (const ns of namespaces) {
    parts.push(
      `${ns}: pvc, dv, vm, vmi, pods:\n${await out(['-n', ns, 'get', 'pvc,dv,vm,vmi,pods', '-o', 'wide'])}`,
      `${ns}: pvc annotations: ${await out(['-n', ns, 'get', 'pvc', '-o', 'jsonpath={range .items[*]}{.metadata.name} {.metadata.annotations}{"\\n"}{end}'])}`,
      `${ns}: events:\n${(await out(['-n', ns, 'get', 'events', '--sort-by=.lastTimestamp'])).split('\n').slice(-15).join('\n')}`,
      `${ns}: launcher log:\n${(await out(['-n', ns, 'logs', '-l', 'kubevirt.io=virt-launcher', '--tail=30'])).slice(-4000)}`,
    );
  }
  parts.push(`controller log:\n${(await out(['-n', 'ferry-system', 'logs', 'deploy/ferry-controller', '--tail=20'])).slice(-5000)}`);
  return parts.join('\n');
}
