/**
 * A real one-node Kubernetes cluster for the node tests (test/node/) and `npm run demo`
 * (scripts/demo.ts): etcd, kube-apiserver,
 * kube-controller-manager, kube-scheduler, kubelet, kube-proxy and containerd (+ runc, CNI bridge),
 * every one of them inside a network namespace this helper creates and one private mount namespace,
 * so pod and service addresses never appear in the machine's own namespace and kubelet's volume
 * mounts never reach the root mount namespace. The jest process (root namespace) reaches the
 * apiserver through a loopback-only bridge: socat 127.0.0.1:<port> → a unix socket → socat inside
 * the netns → 127.0.0.1:6443.
 *
 * Measured recipe with every error met on this machine kind: /work/shared/reference/real-node.md
 * (a veth pair with both ends inside the namespace since the kernel has no dummy interfaces;
 * `unshare --mount` + `nsenter --net` because `ip netns exec` remounts /sys and hides the cgroup v1
 * mounts from runc; containerd's restrict_oom_score_adj since root lacks CAP_SYS_RESOURCE;
 * kubelet's failCgroupV1: false; the three global sysctls kubelet rewrites, restored by stop()).
 *
 * Binaries: scripts/build-control-plane.sh (one `go build`, cache outside the repo). Needs root.
 * Each start() uses its own netns name, work dir and cgroup root (kubelet `cgroupRoot`), so two
 * clusters do not share a path; stop() (and an exit hook after a crash) stops every process by PID
 * and removes what the cluster made: containers, shims, cgroups, the netns, /run leftovers, and puts
 * the sysctls back.
 */

import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import {
  closeSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, rmdirSync,
  statSync, writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import * as k8s from '@kubernetes/client-node';
import { createServer } from 'node:net';
import { controlPlaneBinDir, repoRoot } from '../control-plane/bin-dir.js';

/** The repository this runs from (dist/tools/node-cluster → the root). */
export const REPO_ROOT = repoRoot();

/** A port free on 127.0.0.1 right now (the loopback bridge retries if it is taken meanwhile). */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Bounds every wait of start(); the Node goes Ready 4–13 s after containerd starts on this machine. */
const START_TIMEOUT_MS = Number(process.env.FERRY_NODE_START_TIMEOUT_MS ?? 180_000);

export const NODE_NAME = 'fnode';
/** The node's address, on the veth end inside the netns; nothing outside the netns routes to it. */
export const NODE_IP = '10.77.0.10';
const POD_CIDR = '10.244.0.0/24';
const CLUSTER_CIDR = '10.244.0.0/16';
const SERVICE_CIDR = '10.96.0.0/16';
/**
 * The kubelet's clusterDNS: cluster-dns.ts answers Service names there (docs/adr/0015), on the
 * netns's lo, so pods reach it through their gateway. The address is in the Service range's lower
 * band, which the apiserver hands out only on request, so no Service gets it by chance.
 */
export const CLUSTER_DNS_IP = '10.96.0.10';
const PAUSE_IMAGE = 'localhost/ferry-node-pause:busybox';
/** The common name of the kube-apiserver's front-proxy client certificate (--requestheader-allowed-names). */
const FRONT_PROXY_CLIENT_NAME = 'front-proxy-client';

/** The StorageClasses start() creates; both are `kubernetes.io/no-provisioner` over pre-created local PVs. */
export const StorageClass = {
  /** Binds when the first pod using the claim is scheduled, as local volumes do on real clusters. */
  WaitForFirstConsumer: 'ferry-local-wffc',
  /** Binds as soon as a PV fits (the cluster's default class). */
  Immediate: 'ferry-local',
} as const;

/** The global sysctls kubelet rewrites (vm.overcommit_memory=1, kernel.panic=10, kernel.panic_on_oops=1). */
const KUBELET_SYSCTLS = ['vm.overcommit_memory', 'kernel.panic', 'kernel.panic_on_oops'] as const;

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface NodeProcess {
  readonly name: string;
  readonly pid: number;
  readonly logFile: string;
  stop(): Promise<void>;
}

export interface NodeCluster {
  /** Work dir: PKI, configs, logs (logs/<name>.log), containerd/kubelet state, local PV directories. */
  readonly workDir: string;
  /** The network namespace's name (under /run/netns). */
  readonly netns: string;
  /** The kubelet's seccomp root (`<root-dir>/seccomp`; /var/lib/kubelet/seccomp on a usual node), empty at start. */
  readonly kubeletSeccompDir: string;
  /** Admin kubeconfig for the root namespace (through the loopback bridge); kubectl works with it. */
  readonly kubeconfigPath: string;
  readonly kubeConfig: k8s.KubeConfig;
  /** https://127.0.0.1:<port> in the root namespace. */
  readonly server: string;
  /** Seconds from containerd's start to the Node's Ready condition, for the report. */
  readonly readyAfterSeconds: number;
  /** Runs the cluster's kubectl (root namespace, admin kubeconfig) without blocking the event loop. */
  kubectl(args: readonly string[], options?: { input?: string; timeoutMs?: number }): Promise<RunResult>;
  /** Like kubectl(), but throws with stderr on a non-zero exit. */
  kubectlOk(args: readonly string[], options?: { input?: string; timeoutMs?: number }): Promise<string>;
  /** `ctr -n k8s.io ARGS` against the node's containerd (inside its namespaces). */
  ctr(args: readonly string[], timeoutMs?: number): Promise<RunResult>;
  /** `ctr -n k8s.io images import` of an OCI archive; returns the image names it holds. */
  importImage(archive: string): Promise<string[]>;
  /** Starts a process inside the netns and the cluster's mount namespace (a hostNetwork server, say). */
  startInNode(name: string, bin: string, args: readonly string[]): NodeProcess;
  /** Creates `count` local PVs of `size` for `storageClass` (directories under workDir/pv); returns their names. */
  addLocalVolumes(storageClass: string, count: number, size: string): Promise<string[]>;
  /** The host directory behind a local PV. */
  volumeDir(pvName: string): string;
  /** Stops everything by PID and removes every trace; safe to call twice. */
  stop(): Promise<void>;
}

interface Proc {
  readonly name: string;
  readonly child: ChildProcess;
  readonly logFile: string;
  exited: boolean;
  readonly exit: Promise<void>;
}

function sh(cmd: string, args: readonly string[], input?: string): string {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'], input: input ?? '', timeout: 60_000 });
}

function trySh(cmd: string, args: readonly string[]): string | undefined {
  try {
    return sh(cmd, args);
  } catch {
    return undefined;
  }
}

function run(cmd: string, args: readonly string[], options: { input?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env: options.env ?? process.env });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => (stdout += c));
    child.stderr.setEncoding('utf8').on('data', (c: string) => (stderr += c));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 120_000);
    child.once('error', (e) => {
      clearTimeout(timer);
      resolve({ code: -1, stdout, stderr: stderr + String(e) });
    });
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : -1), stdout, stderr: signal ? `${stderr}\n(killed by ${signal})` : stderr });
    });
    // A child that exits before reading its stdin (ctr during stop(), say) makes the write EPIPE:
    // the exit code above says what happened; the pipe's error must not crash the test file.
    child.stdin.on('error', () => undefined);
    child.stdin.end(options.input ?? '');
  });
}

function tail(file: string, lines = 25): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([p.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/** The binaries, or an error that says how to get them. */
function binaries(): Record<'etcd' | 'apiserver' | 'controllerManager' | 'scheduler' | 'kubelet' | 'proxy' | 'kubectl', string> {
  const dir = controlPlaneBinDir();
  const bins = {
    etcd: join(dir, 'etcd'),
    apiserver: join(dir, 'kube-apiserver'),
    controllerManager: join(dir, 'kube-controller-manager'),
    scheduler: join(dir, 'kube-scheduler'),
    kubelet: join(dir, 'kubelet'),
    proxy: join(dir, 'kube-proxy'),
    kubectl: join(dir, 'kubectl'),
  };
  const missing = Object.values(bins).filter((f) => !existsSync(f));
  if (missing.length > 0) throw new Error(`node-cluster: binaries missing (${missing.join(', ')}); build them with: bash scripts/build-control-plane.sh`);
  const tools = ['containerd', 'containerd-shim-runc-v2', 'ctr', 'runc', 'socat', 'unshare', 'nsenter', 'ip', 'openssl', 'busybox', 'conntrack'];
  const absent = tools.filter((t) => trySh('sh', ['-c', `command -v ${t}`]) === undefined);
  if (absent.length > 0) throw new Error(`node-cluster: programs missing: ${absent.join(', ')} (bash scripts/setup-debian.sh installs them)`);
  if (!existsSync('/usr/lib/cni/bridge')) throw new Error('node-cluster: CNI plugins missing in /usr/lib/cni (apt-get install containernetworking-plugins)');
  if (process.getuid?.() !== 0) throw new Error('node-cluster: needs root (network namespaces, containerd, kubelet)');
  return bins;
}

// ---------------------------------------------------------------------------------------------
// PKI and configuration files

interface Pki {
  readonly dir: string;
  path(name: string): string;
}

function makePki(dir: string): Pki {
  mkdirSync(dir, { recursive: true });
  const p = (f: string): string => join(dir, f);
  const openssl = (args: string[]): void => void sh('openssl', args);
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', p('ca.key'), '-out', p('ca.crt'), '-days', '7', '-subj', '/CN=ferry-node-ca']);
  const cert = (name: string, subject: string, san?: string, ca = 'ca'): void => {
    writeFileSync(
      p(`${name}.ext`),
      `basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n${san ? `subjectAltName=${san}\n` : ''}`,
    );
    openssl(['req', '-new', ...ec, '-keyout', p(`${name}.key`), '-out', p(`${name}.csr`), '-subj', subject]);
    openssl(['x509', '-req', '-in', p(`${name}.csr`), '-CA', p(`${ca}.crt`), '-CAkey', p(`${ca}.key`), '-CAcreateserial', '-days', '7', '-sha256', '-extfile', p(`${name}.ext`), '-out', p(`${name}.crt`)]);
  };
  cert('apiserver', '/CN=kube-apiserver', `IP:127.0.0.1,IP:${NODE_IP},IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local`);
  cert('apiserver-kubelet-client', '/O=system:masters/CN=kube-apiserver-kubelet-client');
  cert('admin', '/O=system:masters/CN=admin');
  cert('controller-manager', '/CN=system:kube-controller-manager');
  cert('scheduler', '/CN=system:kube-scheduler');
  cert('kubelet', `/O=system:nodes/CN=system:node:${NODE_NAME}`, `IP:${NODE_IP},DNS:${NODE_NAME}`);
  cert('kube-proxy', '/CN=system:kube-proxy');
  // The aggregation layer's front proxy (kubeadm's front-proxy-ca, never the client CA): the
  // kube-apiserver forwards a user to an APIService's server (ferry apiserver's upload tokens)
  // with this client certificate, which is what makes its X-Remote-* headers believable.
  openssl(['req', '-x509', ...ec, '-keyout', p('front-proxy-ca.key'), '-out', p('front-proxy-ca.crt'), '-days', '7', '-subj', '/CN=ferry-node-front-proxy-ca']);
  cert('front-proxy-client', `/CN=${FRONT_PROXY_CLIENT_NAME}`, undefined, 'front-proxy-ca');
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', p('sa.key')]);
  openssl(['pkey', '-in', p('sa.key'), '-pubout', '-out', p('sa.pub')]);
  return { dir, path: p };
}

function kubeconfig(pki: Pki, user: string, server: string): string {
  const b64 = (f: string): string => readFileSync(pki.path(f)).toString('base64');
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    `- name: ${NODE_NAME}`,
    `  cluster: {server: "${server}", certificate-authority-data: ${b64('ca.crt')}}`,
    'users:',
    `- name: ${user}`,
    `  user: {client-certificate-data: ${b64(`${user}.crt`)}, client-key-data: ${b64(`${user}.key`)}}`,
    'contexts:',
    `- name: ${NODE_NAME}`,
    `  context: {cluster: ${NODE_NAME}, user: ${user}}`,
    `current-context: ${NODE_NAME}`,
    '',
  ].join('\n');
}

interface Paths {
  readonly work: string;
  readonly cfg: string;
  readonly logs: string;
  readonly run: string;
  readonly sock: string;
  readonly cgroupRoot: string;
}

function writeConfigs(p: Paths, pki: Pki): void {
  mkdirSync(join(p.cfg, 'cni'), { recursive: true });
  for (const u of ['admin', 'controller-manager', 'scheduler']) writeFileSync(join(p.cfg, `${u}.kubeconfig`), kubeconfig(pki, u, 'https://127.0.0.1:6443'));
  for (const u of ['kubelet', 'kube-proxy']) writeFileSync(join(p.cfg, `${u}.kubeconfig`), kubeconfig(pki, u, `https://${NODE_IP}:6443`));
  writeFileSync(
    join(p.cfg, 'containerd.toml'),
    `version = 2
root = "${p.run}/containerd/root"
state = "${p.run}/containerd/state"
[grpc]
  address = "${p.sock}"
[ttrpc]
  address = "${p.sock}.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "${p.run}/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "${PAUSE_IMAGE}"
  enable_selinux = false
  # Root here lacks CAP_SYS_RESOURCE: lowering oom_score_adj (-998 for the pause container) is EACCES
  # and runc dies ("can't get final child's PID from pipe: EOF"). Clamp to >= containerd's own.
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "${p.cfg}/cni"
`,
  );
  writeFileSync(
    join(p.cfg, 'cni', '10-fnode.conflist'),
    JSON.stringify({
      cniVersion: '1.0.0',
      name: 'fnode',
      plugins: [
        {
          type: 'bridge', bridge: 'cni0', isGateway: true, ipMasq: false, hairpinMode: true,
          ipam: { type: 'host-local', dataDir: join(p.run, 'cni-ipam'), ranges: [[{ subnet: POD_CIDR }]], routes: [{ dst: '0.0.0.0/0' }] },
        },
        { type: 'portmap', capabilities: { portMappings: true } },
        { type: 'loopback' },
      ],
    }),
  );
  // The node's own resolver (hostNetwork pods, dnsPolicy Default): the cluster DNS too, since
  // nothing outside the namespace is reachable.
  writeFileSync(join(p.cfg, 'resolv.conf'), `nameserver ${CLUSTER_DNS_IP}\n`);
  writeFileSync(
    join(p.cfg, 'kubelet.yaml'),
    `apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
# kubelet 1.36 refuses cgroup v1 unless told not to; this machine has cgroup v1.
failCgroupV1: false
failSwapOn: false
# Under a cgroup of this cluster's own, so two clusters never share /sys/fs/cgroup/*/kubepods.
cgroupRoot: ${p.cgroupRoot}
containerRuntimeEndpoint: unix://${p.sock}
address: ${NODE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${pki.path('ca.crt')}}
authorization:
  mode: Webhook
clusterDomain: cluster.local
clusterDNS: [${CLUSTER_DNS_IP}]
resolvConf: ${p.cfg}/resolv.conf
podLogsDir: ${p.run}/pod-logs
serializeImagePulls: false
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%", nodefs.inodesFree: "1%"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
syncFrequency: 10s
fileCheckFrequency: 5s
nodeStatusUpdateFrequency: 5s
`,
  );
  writeFileSync(
    join(p.cfg, 'kube-proxy.yaml'),
    `apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clusterCIDR: ${CLUSTER_CIDR}
hostnameOverride: ${NODE_NAME}
bindAddress: 0.0.0.0
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
clientConnection: {kubeconfig: ${p.cfg}/kube-proxy.kubeconfig}
# Leave the machine's conntrack sysctls alone.
conntrack: {maxPerCore: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
nodePortAddresses: ["${NODE_IP}/32", "127.0.0.0/8"]
`,
  );
}

/**
 * The sandbox ("pause") image as an OCI archive: Debian's static busybox sleeping. containerd stops
 * sandboxes with SIGKILL, so a PID 1 that ignores SIGTERM is fine. No registry, no compiler.
 */
function makePauseImage(dir: string): string {
  const root = join(dir, 'rootfs');
  const layout = join(dir, 'layout');
  mkdirSync(join(root, 'bin'), { recursive: true });
  mkdirSync(join(layout, 'blobs', 'sha256'), { recursive: true });
  copyFileSync(sh('sh', ['-c', 'command -v busybox']).trim(), join(root, 'bin', 'busybox'));
  const layerTar = join(dir, 'layer.tar');
  sh('tar', ['--sort=name', '--mtime=@0', '--owner=0', '--group=0', '--numeric-owner', '-C', root, '-cf', layerTar, '.']);
  const blob = (data: Buffer): { digest: string; size: number } => {
    const hex = createHash('sha256').update(data).digest('hex');
    writeFileSync(join(layout, 'blobs', 'sha256', hex), data);
    return { digest: `sha256:${hex}`, size: data.length };
  };
  const layer = blob(readFileSync(layerTar));
  const config = blob(Buffer.from(JSON.stringify({
    architecture: 'amd64', os: 'linux',
    config: { Entrypoint: ['/bin/busybox', 'sleep', '2147483647'], WorkingDir: '/' },
    rootfs: { type: 'layers', diff_ids: [layer.digest] },
  })));
  const manifest = blob(Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', ...config },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', ...layer }],
  })));
  writeFileSync(join(layout, 'index.json'), JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests: [{
      mediaType: 'application/vnd.oci.image.manifest.v1+json', ...manifest,
      platform: { architecture: 'amd64', os: 'linux' },
      annotations: { 'io.containerd.image.name': PAUSE_IMAGE, 'org.opencontainers.image.ref.name': 'busybox' },
    }],
  }));
  writeFileSync(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  const archive = join(dir, 'pause.oci.tar');
  sh('tar', ['-C', layout, '-cf', archive, 'oci-layout', 'index.json', 'blobs']);
  return archive;
}

// ---------------------------------------------------------------------------------------------
// Traces left on the machine, and their removal (also run from the exit hook: synchronous)

/** Clusters of this process that stop() has not finished; the exit hook cleans them after a crash. */
const liveClusters = new Set<Cleaner>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const c of liveClusters) c.cleanupSync();
  });
}

/** Shared across clusters (and processes): the sysctls as they were before the first live cluster. */
const SYSCTL_DIR = join(tmpdir(), 'ferry-node-sysctl');

function recordSysctls(id: string): void {
  mkdirSync(SYSCTL_DIR, { recursive: true });
  const orig = join(SYSCTL_DIR, 'orig');
  if (!existsSync(orig)) writeFileSync(orig, KUBELET_SYSCTLS.map((s) => `${s}=${sh('sysctl', ['-n', s]).trim()}`).join('\n') + '\n');
  writeFileSync(join(SYSCTL_DIR, `live-${id}`), String(process.pid));
}

/** Puts the sysctls back once no other live cluster (of any process) still runs a kubelet. */
function restoreSysctls(id: string): string {
  rmSync(join(SYSCTL_DIR, `live-${id}`), { force: true });
  const others = readdirSync(SYSCTL_DIR).filter((f) => f.startsWith('live-') && alive(Number(readFileSync(join(SYSCTL_DIR, f), 'utf8'))));
  if (others.length > 0) return `left to ${others.join(', ')}`;
  const orig = join(SYSCTL_DIR, 'orig');
  if (!existsSync(orig)) return 'nothing recorded';
  const lines = readFileSync(orig, 'utf8').trim().split('\n');
  for (const l of lines) trySh('sysctl', ['-qw', l]);
  rmSync(SYSCTL_DIR, { recursive: true, force: true });
  return lines.join(' ');
}

function nsInode(path: string): string | undefined {
  try {
    return readlinkSync(path);
  } catch {
    return undefined;
  }
}

/** Every cgroup v1 hierarchy (and the unified one) mounted under /sys/fs/cgroup. */
function cgroupHierarchies(): string[] {
  const out: string[] = [];
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-');
    const fstype = f[sep + 1];
    const mnt = f[4];
    if ((fstype === 'cgroup' || fstype === 'cgroup2') && mnt?.startsWith('/sys/fs/cgroup')) out.push(mnt);
  }
  return [...new Set(out)];
}

function cgroupProcs(dir: string): number[] {
  const pids: number[] = [];
  const walk = (d: string): void => {
    let entries: string[];
    try {
      entries = readdirSync(d);
    } catch {
      return;
    }
    try {
      for (const l of readFileSync(join(d, 'cgroup.procs'), 'utf8').split('\n')) if (l.trim()) pids.push(Number(l));
    } catch {
      // not a cgroup dir
    }
    for (const e of entries) {
      const sub = join(d, e);
      try {
        if (statSync(sub).isDirectory()) walk(sub);
      } catch {
        // vanished
      }
    }
  };
  walk(dir);
  return pids;
}

function rmdirTree(dir: string): void {
  let entries: string[];
  try {
    entries = readdirSync(dir);
  } catch {
    return;
  }
  for (const e of entries) {
    const sub = join(dir, e);
    try {
      if (statSync(sub).isDirectory()) rmdirTree(sub);
    } catch {
      // vanished
    }
  }
  try {
    rmdirSync(dir);
  } catch {
    // busy or gone; the caller retries
  }
}

class Cleaner {
  readonly procs: Proc[] = [];
  netnsCreated = false;
  mntNs: string | undefined;
  podNetns = new Set<string>();
  containerIds = new Set<string>();
  cleaned = false;

  constructor(
    readonly id: string,
    readonly paths: Paths,
    readonly netns: string,
    readonly keep: boolean,
  ) {}

  /** Every pid that belongs to this cluster: our Procs, anything in our netns or mount ns, anything in our cgroups. */
  ourPids(): number[] {
    const pids = new Set<number>();
    for (const p of this.procs) if (!p.exited && p.child.pid) pids.add(p.child.pid);
    const net = nsInode(`/run/netns/${this.netns}`) ? statSafe(`/run/netns/${this.netns}`) : undefined;
    for (const e of readdirSync('/proc')) {
      if (!/^\d+$/.test(e) || Number(e) === process.pid) continue;
      if (this.mntNs && nsInode(`/proc/${e}/ns/mnt`) === this.mntNs) pids.add(Number(e));
      else if (net !== undefined && statSafe(`/proc/${e}/ns/net`) === net) pids.add(Number(e));
    }
    for (const h of cgroupHierarchies()) for (const pid of cgroupProcs(join(h, this.paths.cgroupRoot))) pids.add(pid);
    return [...pids];
  }

  /** SIGKILL whatever is left, then remove cgroups, netns, /run leftovers, sysctls, the work dir. */
  cleanupSync(): string[] {
    const notes: string[] = [];
    if (this.cleaned) return notes;
    for (let round = 0; round < 5; round++) {
      const pids = this.ourPids();
      if (pids.length === 0) break;
      if (round === 0) notes.push(`killed ${pids.length} leftover process(es)`);
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          // gone
        }
      }
      execFileSync('sleep', ['0.3']);
    }
    for (const h of cgroupHierarchies()) {
      const d = join(h, this.paths.cgroupRoot);
      for (let i = 0; i < 10 && existsSync(d); i++) {
        rmdirTree(d);
        if (existsSync(d)) execFileSync('sleep', ['0.3']);
      }
      if (existsSync(d)) notes.push(`could not remove cgroup ${d}`);
    }
    if (this.netnsCreated) {
      if (trySh('ip', ['netns', 'del', this.netns]) === undefined && existsSync(`/run/netns/${this.netns}`)) notes.push(`could not delete netns ${this.netns}`);
    }
    // The pod netns placeholders containerd made under /run/netns (their bind mounts lived in our mount ns).
    for (const path of this.podNetns) {
      if (existsSync(path) && trySh('mountpoint', ['-q', path]) === undefined) rmSync(path, { force: true });
    }
    // runc state and shim sockets of our containers (shims remove their own on a clean exit).
    for (const id of this.containerIds) {
      rmSync(`/run/containerd/runc/k8s.io/${id}`, { recursive: true, force: true });
      const sock = createHash('sha256').update(join(this.paths.sock, 'k8s.io', id)).digest('hex');
      rmSync(`/run/containerd/s/${sock}`, { force: true });
    }
    for (const d of ['/run/containerd/runc/k8s.io', '/run/containerd/runc', '/run/containerd/s', '/run/containerd/fifo', '/run/containerd']) {
      try {
        rmdirSync(d);
      } catch {
        // not empty (someone else's) or absent
      }
    }
    notes.push(`sysctls: ${restoreSysctls(this.id)}`);
    const mounts = readFileSync('/proc/self/mountinfo', 'utf8').split('\n').filter((l) => l.includes(this.paths.work)).length;
    if (mounts > 0) notes.push(`${mounts} mount(s) under ${this.paths.work} remain in the root mount namespace`);
    if (!this.keep) {
      // rm(1): several times faster than rmSync over the image snapshots' tens of thousands of files.
      if (trySh('rm', ['-rf', '--one-file-system', this.paths.work]) === undefined) notes.push(`could not remove ${this.paths.work}`);
    }
    this.cleaned = true;
    liveClusters.delete(this);
    return notes;
  }
}

function statSafe(path: string): number | undefined {
  try {
    return statSync(path).ino;
  } catch {
    return undefined;
  }
}

// ---------------------------------------------------------------------------------------------

/**
 * Starts the cluster, imports the pause image, creates the two StorageClasses and `volumes` local
 * PVs of each (2Gi), and returns once the Node is Ready and the default ServiceAccount exists.
 */
export async function startNodeCluster(options: { volumes?: number } = {}): Promise<NodeCluster> {
  const bins = binaries();
  const id = randomBytes(4).toString('hex');
  const work = mkdtempSync(join(tmpdir(), 'ferry-node-'));
  const paths: Paths = {
    work,
    cfg: join(work, 'config'),
    logs: join(work, 'logs'),
    run: join(work, 'run'),
    sock: join(work, 'run', 'containerd', 'containerd.sock'),
    cgroupRoot: `/ferry-node-${id}`,
  };
  for (const d of [paths.cfg, paths.logs, paths.run, join(paths.run, 'etcd'), join(paths.run, 'kubelet'), join(paths.run, 'pod-logs'), join(work, 'pv')]) mkdirSync(d, { recursive: true });
  // The kubelet's root is per cluster (--root-dir below): Localhost seccomp profiles are read from
  // <root-dir>/seccomp, which Ferry's DaemonSet fills (installFerry patches its hostPath to it).
  const netns = `ferry-node-${id}`;
  const cleaner = new Cleaner(id, paths, netns, process.env.FERRY_KEEP_NODE === '1');
  liveClusters.add(cleaner);
  installExitHook();

  const deadline = Date.now() + START_TIMEOUT_MS;
  const started: Proc[] = cleaner.procs;
  const spawnProc = (name: string, cmd: string, args: readonly string[]): Proc => {
    const logFile = join(paths.logs, `${name}.log`);
    const fd = openSync(logFile, 'a');
    // Own process group: stop() signals the group, so forked helpers (socat's) go too.
    const child = spawn(cmd, args, { stdio: ['ignore', fd, fd], cwd: work, detached: true });
    closeSync(fd);
    let done!: () => void;
    const proc: Proc = { name, child, logFile, exited: false, exit: new Promise<void>((r) => (done = r)) };
    child.once('exit', () => {
      proc.exited = true;
      done();
    });
    child.once('error', () => {
      proc.exited = true;
      done();
    });
    started.push(proc);
    return proc;
  };
  let holder: Proc | undefined;
  const inNode = (name: string, bin: string, args: readonly string[]): Proc => {
    if (!holder?.child.pid) throw new Error('node-cluster: no namespace holder');
    return spawnProc(name, 'nsenter', [`--mount=/proc/${holder.child.pid}/ns/mnt`, `--net=/run/netns/${netns}`, `--wd=${work}`, '--', bin, ...args]);
  };
  const waitFor = async (what: string, check: () => Promise<boolean> | boolean, watch: Proc[] = started): Promise<void> => {
    let last = '';
    for (;;) {
      for (const p of watch) {
        if (p.exited) throw new Error(`node-cluster: ${p.name} exited (code ${p.child.exitCode}, signal ${p.child.signalCode}) while waiting for ${what}; last lines of ${p.logFile}:\n${tail(p.logFile)}`);
      }
      try {
        if (await check()) return;
      } catch (e) {
        last = (e as Error).message;
      }
      if (Date.now() > deadline) {
        const logs = watch.map((p) => `--- ${p.logFile}:\n${tail(p.logFile, 12)}`).join('\n');
        throw new Error(`node-cluster: timed out after ${START_TIMEOUT_MS} ms waiting for ${what}${last ? ` (last: ${last})` : ''}\n${logs}`);
      }
      await sleep(250);
    }
  };
  const ctrArgs = ['--address', paths.sock, '-n', 'k8s.io'];
  const ctr = (args: readonly string[], timeoutMs = 120_000): Promise<RunResult> =>
    run('nsenter', [`--mount=/proc/${holder?.child.pid}/ns/mnt`, `--net=/run/netns/${netns}`, '--', 'ctr', ...ctrArgs, ...args], { timeoutMs });
  const adminRootKubeconfig = join(paths.cfg, 'admin-rootns.kubeconfig');
  const kubectl = (args: readonly string[], o: { input?: string; timeoutMs?: number } = {}): Promise<RunResult> =>
    run(bins.kubectl, ['--kubeconfig', adminRootKubeconfig, ...args], o);
  const kubectlOk = async (args: readonly string[], o: { input?: string; timeoutMs?: number } = {}): Promise<string> => {
    const r = await kubectl(args, o);
    if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`);
    return r.stdout;
  };

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      let t = Date.now();
      const times: string[] = [];
      const lap = (what: string): void => {
        times.push(`${what} ${((Date.now() - t) / 1000).toFixed(1)} s`);
        t = Date.now();
      };
      // 1. Pods first, so kubelet tears their sandboxes down the normal way (bounded).
      const api = started.find((p) => p.name === 'kube-apiserver');
      const kubelet = started.find((p) => p.name === 'kubelet');
      if (api && !api.exited && kubelet && !kubelet.exited && existsSync(adminRootKubeconfig)) {
        await kubectl(['delete', 'pods', '--all', '-A', '--grace-period=1', '--timeout=40s', '--wait=true'], { timeoutMs: 50_000 });
      }
      lap('pods');
      // 2. Note our containers' ids and pod netns paths before containerd goes.
      const containerd = started.find((p) => p.name === 'containerd');
      if (containerd && !containerd.exited) {
        const ids = (await ctr(['containers', 'ls', '-q'], 20_000)).stdout.split('\n').filter(Boolean);
        for (const cid of ids) {
          cleaner.containerIds.add(cid);
          const info = await ctr(['containers', 'info', cid], 20_000);
          for (const m of info.stdout.matchAll(/"path":\s*"(\/(?:var\/)?run\/netns\/cni-[^"]+)"/g)) cleaner.podNetns.add(m[1]!.replace(/^\/var\/run\//, '/run/'));
        }
      }
      // 3. Daemons by PID, in reverse start order: SIGTERM to the group, bounded, then SIGKILL.
      const byOrder = [...started].sort((a, b) => rank(a.name) - rank(b.name));
      for (const p of byOrder) {
        if (p.name === 'containerd') {
          // Containers still running (sandboxes): through containerd, before it stops.
          const tasks = (await ctr(['tasks', 'ls', '-q'], 20_000)).stdout.split('\n').filter(Boolean);
          for (const t of tasks) await ctr(['tasks', 'kill', '-s', 'SIGKILL', t], 10_000);
          for (const t of tasks) await ctr(['tasks', 'delete', '-f', t], 10_000);
        }
        await stopProc(p, p.name === 'kubelet' || p.name === 'containerd' ? 20_000 : 10_000);
      }
      lap('processes');
      // 4. Whatever is left, and every trace.
      const notes = cleaner.cleanupSync();
      lap('traces');
      process.stderr.write(`node-cluster ${netns} stopped (${times.join(', ')})${notes.length > 0 ? `: ${notes.join('; ')}` : ''}\n`);
    })();
    return stopping;
  };

  try {
    // The network namespace: lo + a veth pair with both ends inside (this kernel has no dummy
    // interfaces); the node address on one end, a default route out of it into the void.
    sh('ip', ['netns', 'add', netns]);
    cleaner.netnsCreated = true;
    const ipn = (...a: string[]): string => sh('ip', ['-n', netns, ...a]);
    ipn('link', 'set', 'lo', 'up');
    ipn('link', 'add', 'fnode0', 'type', 'veth', 'peer', 'name', 'fnode0p');
    ipn('link', 'set', 'fnode0p', 'up');
    ipn('addr', 'add', `${NODE_IP}/24`, 'dev', 'fnode0');
    ipn('link', 'set', 'fnode0', 'up');
    ipn('route', 'add', 'default', 'dev', 'fnode0');
    ipn('addr', 'add', `${CLUSTER_DNS_IP}/32`, 'dev', 'lo');
    sh('ip', ['netns', 'exec', netns, 'sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.bridge.bridge-nf-call-iptables=1', 'net.bridge.bridge-nf-call-ip6tables=1']);
    recordSysctls(id);
    // kubelet's cgroup root must exist in every hierarchy; cpuset needs its cpus/mems filled in.
    for (const h of cgroupHierarchies()) {
      const d = join(h, paths.cgroupRoot);
      mkdirSync(d, { recursive: true });
      for (const f of ['cpuset.cpus', 'cpuset.mems']) if (existsSync(join(d, f))) writeFileSync(join(d, f), readFileSync(join(h, f)));
    }

    const pki = makePki(join(work, 'pki'));
    writeConfigs(paths, pki);
    const pauseArchive = makePauseImage(join(work, 'pause'));

    // One private mount namespace (slave of the root one: mounts made inside never show outside)
    // that containerd, kubelet and runc share; every daemon enters it and the netns with nsenter.
    // NOT `ip netns exec`: it remounts /sys, which hides the cgroup v1 mounts from runc.
    holder = spawnProc('holder', 'unshare', ['--mount', '--propagation', 'slave', '--', 'sleep', '2147483647']);
    const holderPid = holder.child.pid;
    // unshare execs sleep once the namespace exists: sleep's name means the namespace is there.
    await waitFor('the mount namespace', () => holderPid !== undefined && readFileSync(`/proc/${holderPid}/comm`, 'utf8').trim() === 'sleep');
    cleaner.mntNs = nsInode(`/proc/${holderPid}/ns/mnt`);

    const t0 = Date.now();
    const containerd = inNode('containerd', 'containerd', ['--config', join(paths.cfg, 'containerd.toml')]);
    await waitFor('containerd', async () => (await ctr(['version'], 10_000)).code === 0, [holder, containerd]);
    const imported = await ctr(['images', 'import', pauseArchive]);
    if (imported.code !== 0) throw new Error(`node-cluster: pause image import failed: ${imported.stderr}`);

    const pk = pki.path;
    const etcd = inNode('etcd', bins.etcd, [
      '--name=fnode', `--data-dir=${join(paths.run, 'etcd')}`, '--unsafe-no-fsync',
      '--listen-client-urls=http://127.0.0.1:2379', '--advertise-client-urls=http://127.0.0.1:2379',
      '--listen-peer-urls=http://127.0.0.1:2380', '--initial-advertise-peer-urls=http://127.0.0.1:2380',
      '--initial-cluster=fnode=http://127.0.0.1:2380', '--listen-metrics-urls=',
    ]);
    const api = inNode('kube-apiserver', bins.apiserver, [
      '--etcd-servers=http://127.0.0.1:2379', '--bind-address=0.0.0.0', '--secure-port=6443', `--advertise-address=${NODE_IP}`,
      `--service-cluster-ip-range=${SERVICE_CIDR}`, '--allow-privileged=true', '--profiling=false',
      `--client-ca-file=${pk('ca.crt')}`, `--tls-cert-file=${pk('apiserver.crt')}`, `--tls-private-key-file=${pk('apiserver.key')}`,
      `--kubelet-client-certificate=${pk('apiserver-kubelet-client.crt')}`, `--kubelet-client-key=${pk('apiserver-kubelet-client.key')}`,
      '--kubelet-preferred-address-types=InternalIP',
      '--service-account-issuer=https://kubernetes.default.svc.cluster.local',
      `--service-account-key-file=${pk('sa.pub')}`, `--service-account-signing-key-file=${pk('sa.key')}`,
      '--authorization-mode=Node,RBAC', '--enable-admission-plugins=NodeRestriction',
      `--requestheader-client-ca-file=${pk('front-proxy-ca.crt')}`, `--requestheader-allowed-names=${FRONT_PROXY_CLIENT_NAME}`,
      '--requestheader-username-headers=X-Remote-User', '--requestheader-group-headers=X-Remote-Group', '--requestheader-extra-headers-prefix=X-Remote-Extra-',
      `--proxy-client-cert-file=${pk('front-proxy-client.crt')}`, `--proxy-client-key-file=${pk('front-proxy-client.key')}`,
    ]);
    // The loopback bridge for the root namespace: socat inside the netns serves a unix socket in
    // the work dir (unix sockets are not bound to a netns) → 127.0.0.1:6443; socat in the root
    // namespace listens on 127.0.0.1 only and connects to that socket.
    const apiSock = join(paths.run, 'apiserver.sock');
    const bridgeIn = inNode('bridge-netns', 'socat', [`UNIX-LISTEN:${apiSock},fork,mode=600`, 'TCP:127.0.0.1:6443']);
    let server = '';
    let bridgeOut: Proc | undefined;
    for (let attempt = 0; attempt < 5 && !bridgeOut; attempt++) {
      const port = await freePort();
      const p = spawnProc('bridge-root', 'socat', [`TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork`, `UNIX-CONNECT:${apiSock}`]);
      await sleep(300);
      if (p.exited) continue; // the port was taken meanwhile
      bridgeOut = p;
      server = `https://127.0.0.1:${port}`;
    }
    if (!bridgeOut) throw new Error('node-cluster: could not start the loopback bridge (socat)');
    writeFileSync(adminRootKubeconfig, kubeconfig(pki, 'admin', server));
    const kc = new k8s.KubeConfig();
    kc.loadFromFile(adminRootKubeconfig);
    const core = kc.makeApiClient(k8s.CoreV1Api);
    await waitFor('kube-apiserver /readyz', async () => (await kubectl(['get', '--raw', '/readyz'], { timeoutMs: 10_000 })).code === 0, [holder, containerd, etcd, api, bridgeIn, bridgeOut]);

    // Cluster DNS (cluster-dns.ts, next to this file in dist/) from the in-namespace admin kubeconfig.
    const dns = inNode('cluster-dns', process.execPath, [fileURLToPath(new URL('./cluster-dns.js', import.meta.url)), join(paths.cfg, 'admin.kubeconfig'), CLUSTER_DNS_IP]);
    await waitFor('cluster DNS', () => readFileSync(dns.logFile, 'utf8').includes('cluster-dns: serving'), [holder, containerd, etcd, api, dns]);

    const cm = inNode('kube-controller-manager', bins.controllerManager, [
      `--kubeconfig=${paths.cfg}/controller-manager.kubeconfig`,
      `--authentication-kubeconfig=${paths.cfg}/controller-manager.kubeconfig`, `--authorization-kubeconfig=${paths.cfg}/controller-manager.kubeconfig`,
      '--bind-address=127.0.0.1', '--leader-elect=false', '--use-service-account-credentials=true',
      `--service-account-private-key-file=${pk('sa.key')}`, `--root-ca-file=${pk('ca.crt')}`,
      `--cluster-signing-cert-file=${pk('ca.crt')}`, `--cluster-signing-key-file=${pk('ca.key')}`,
      '--allocate-node-cidrs=true', `--cluster-cidr=${CLUSTER_CIDR}`, '--node-cidr-mask-size=24', `--service-cluster-ip-range=${SERVICE_CIDR}`,
    ]);
    const scheduler = inNode('kube-scheduler', bins.scheduler, [
      `--kubeconfig=${paths.cfg}/scheduler.kubeconfig`,
      `--authentication-kubeconfig=${paths.cfg}/scheduler.kubeconfig`, `--authorization-kubeconfig=${paths.cfg}/scheduler.kubeconfig`,
      '--bind-address=127.0.0.1', '--leader-elect=false',
    ]);
    const kubelet = inNode('kubelet', bins.kubelet, [
      `--config=${paths.cfg}/kubelet.yaml`, `--kubeconfig=${paths.cfg}/kubelet.kubeconfig`,
      `--root-dir=${join(paths.run, 'kubelet')}`, `--cert-dir=${join(paths.run, 'kubelet', 'pki')}`,
      `--hostname-override=${NODE_NAME}`, `--node-ip=${NODE_IP}`, '--v=1',
    ]);
    const proxy = inNode('kube-proxy', bins.proxy, [`--config=${paths.cfg}/kube-proxy.yaml`]);
    const all = [holder, containerd, etcd, api, bridgeIn, bridgeOut, dns, cm, scheduler, kubelet, proxy];
    await waitFor(`Node ${NODE_NAME} Ready`, async () => {
      const node = await core.readNode({ name: NODE_NAME });
      return node.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
    }, all);
    const readyAfterSeconds = (Date.now() - t0) / 1000;
    await waitFor('the default ServiceAccount', async () => (await core.readNamespacedServiceAccount({ name: 'default', namespace: 'default' })) !== undefined, all);

    const storage = kc.makeApiClient(k8s.StorageV1Api);
    for (const [name, mode] of [[StorageClass.WaitForFirstConsumer, 'WaitForFirstConsumer'], [StorageClass.Immediate, 'Immediate']] as const) {
      await storage.createStorageClass({
        body: {
          apiVersion: 'storage.k8s.io/v1',
          kind: 'StorageClass',
          metadata: { name, ...(mode === 'Immediate' ? { annotations: { 'storageclass.kubernetes.io/is-default-class': 'true' } } : {}) },
          provisioner: 'kubernetes.io/no-provisioner',
          volumeBindingMode: mode,
          reclaimPolicy: 'Delete',
        },
      });
    }
    let pvSeq = 0;
    const volumeDir = (pvName: string): string => join(work, 'pv', pvName);
    const addLocalVolumes = async (storageClass: string, count: number, size: string): Promise<string[]> => {
      const names: string[] = [];
      for (let i = 0; i < count; i++) {
        const name = `local-${++pvSeq}`;
        mkdirSync(volumeDir(name), { recursive: true });
        await core.createPersistentVolume({
          body: {
            apiVersion: 'v1',
            kind: 'PersistentVolume',
            metadata: { name },
            spec: {
              capacity: { storage: size },
              accessModes: ['ReadWriteOnce'],
              persistentVolumeReclaimPolicy: 'Retain',
              storageClassName: storageClass,
              volumeMode: 'Filesystem',
              local: { path: volumeDir(name) },
              nodeAffinity: { required: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'kubernetes.io/hostname', operator: 'In', values: [NODE_NAME] }] }] } },
            },
          },
        });
        names.push(name);
      }
      return names;
    };
    const perClass = options.volumes ?? 4;
    await addLocalVolumes(StorageClass.WaitForFirstConsumer, perClass, '2Gi');
    await addLocalVolumes(StorageClass.Immediate, perClass, '2Gi');

    return {
      workDir: work,
      netns,
      kubeletSeccompDir: join(paths.run, 'kubelet', 'seccomp'),
      kubeconfigPath: adminRootKubeconfig,
      kubeConfig: kc,
      server,
      readyAfterSeconds,
      kubectl,
      kubectlOk,
      ctr,
      importImage: async (archive: string): Promise<string[]> => {
        const r = await ctr(['images', 'import', archive], 300_000);
        if (r.code !== 0) throw new Error(`node-cluster: ctr images import ${archive} failed: ${r.stderr.trim()}`);
        return [...r.stdout.matchAll(/^unpacking (\S+)/gm)].map((m) => m[1]!);
      },
      startInNode: (name: string, bin: string, args: readonly string[]): NodeProcess => {
        const p = inNode(name, bin, args);
        return { name, pid: p.child.pid ?? -1, logFile: p.logFile, stop: () => stopProc(p, 5_000) };
      },
      addLocalVolumes,
      volumeDir,
      stop,
    };
  } catch (e) {
    await stop();
    throw e;
  }
}

/** Stop order: what tests started in the node first, then the bridge, the node, the control plane. */
const STOP_ORDER = ['bridge-root', 'bridge-netns', 'cluster-dns', 'kube-proxy', 'kubelet', 'containerd', 'kube-scheduler', 'kube-controller-manager', 'kube-apiserver', 'etcd', 'holder'];

function rank(name: string): number {
  return STOP_ORDER.indexOf(name);
}

/** SIGTERM to the process group, a bounded wait, then SIGKILL. */
async function stopProc(p: Proc, ms: number): Promise<void> {
  if (p.exited || !p.child.pid) return;
  const signal = (s: NodeJS.Signals): void => {
    try {
      process.kill(-p.child.pid!, s);
    } catch {
      p.child.kill(s);
    }
  };
  signal('SIGTERM');
  if (await within(p.exit, ms)) return;
  signal('SIGKILL');
  await within(p.exit, 5_000);
}

// ---------------------------------------------------------------------------------------------
// Ferry on the node: the built images and the install a user does (test/node/*.test.ts)

/** Where `npm run images` leaves the OCI archives (FERRY_IMAGES_OUT overrides, as in scripts/build-images.sh). */
export const IMAGES_DIR = process.env.FERRY_IMAGES_OUT ?? join(REPO_ROOT, 'dist', 'images');

/** dist/images/<name>.oci.tar, or an error that says how to build it. */
export function imageArchive(name: 'ferry' | 'ferry-launcher'): string {
  const path = join(IMAGES_DIR, `${name}.oci.tar`);
  if (!existsSync(path)) throw new Error(`${path} missing: build the images with \`npm run images\``);
  return path;
}

/** The reference ferry's images carry in their index.json (`localhost/<name>:<tag>`). */
export function imageName(archive: string): string {
  const index = JSON.parse(execFileSync('tar', ['-xOf', archive, 'index.json'], { encoding: 'utf8' })) as { manifests: { annotations?: Record<string, string> }[] };
  const name = index.manifests[0]?.annotations?.['io.containerd.image.name'];
  if (!name) throw new Error(`${archive}: no io.containerd.image.name in index.json`);
  return name;
}

/** The DaemonSet that installs the launcher's seccomp profile on every node (manifests/seccomp-profile.yaml). */
export const SECCOMP_DAEMONSET = { namespace: 'ferry-node', name: 'ferry-seccomp-profile' } as const;

/**
 * The install a user does, with only the image names changed: `kubectl apply -k` of an overlay (in
 * `dir`) over manifests/ that renames the images to `ferryImage` and its launcher sibling, adds
 * `--allow-emulation` (no usable /dev/kvm here) and points the seccomp DaemonSet's hostPath at this
 * kubelet's seccomp root (its --root-dir is per cluster), then waits for the controller's rollout
 * and for the DaemonSet to have written the profile. Returns the overlay's directory (apply it again
 * with `kubectl apply -k`).
 */
export async function installFerry(cluster: NodeCluster, ferryImage: string, dir: string): Promise<string> {
  const overlay = join(dir, 'overlay');
  mkdirSync(overlay, { recursive: true });
  const base = readFileSync(join(REPO_ROOT, 'manifests', 'kustomization.yaml'), 'utf8');
  const baseName = (short: string): string => new RegExp(`- name: ${short}\\s*\\n\\s*newName: (\\S+)`).exec(base)?.[1] ?? short;
  const [repo, tag] = [ferryImage.slice(0, ferryImage.lastIndexOf(':')), ferryImage.slice(ferryImage.lastIndexOf(':') + 1)];
  const launcherRepo = repo.replace(/\/ferry$/, '/ferry-launcher');
  // The base's image transformer ran first: the overlay renames what it produced, in the
  // ConfigMap's image fields too (the base's kustomizeconfig.yaml, copied: kustomize loads no
  // file from outside the overlay).
  copyFileSync(join(REPO_ROOT, 'manifests', 'kustomizeconfig.yaml'), join(overlay, 'kustomizeconfig.yaml'));
  writeFileSync(
    join(overlay, 'kustomization.yaml'),
    [
      'apiVersion: kustomize.config.k8s.io/v1beta1',
      'kind: Kustomization',
      'resources:',
      `  - ${relative(overlay, join(REPO_ROOT, 'manifests'))}`,
      'configurations:',
      '  - kustomizeconfig.yaml',
      'images:',
      `  - {name: ${baseName('ferry')}, newName: ${repo}, newTag: "${tag}"}`,
      `  - {name: ${baseName('ferry-launcher')}, newName: ${launcherRepo}, newTag: "${tag}"}`,
      // This node has no usable /dev/kvm: guests run under TCG, as on any cluster without KVM.
      'patches:',
      '  - target: {kind: Deployment, name: ferry-controller}',
      '    patch: |-',
      '      - {op: add, path: /spec/template/spec/containers/0/args/-, value: --allow-emulation}',
      `  - target: {kind: DaemonSet, name: ${SECCOMP_DAEMONSET.name}}`,
      '    patch: |-',
      `      - {op: replace, path: /spec/template/spec/volumes/0/hostPath/path, value: ${join(cluster.kubeletSeccompDir, 'ferry')}}`,
      '',
    ].join('\n'),
  );
  await cluster.kubectlOk(['apply', '-k', overlay]);
  await cluster.kubectlOk(['-n', 'ferry-system', 'rollout', 'status', 'deployment/ferry-controller', '--timeout=180s'], { timeoutMs: 200_000 });
  await cluster.kubectlOk(['-n', SECCOMP_DAEMONSET.namespace, 'rollout', 'status', `daemonset/${SECCOMP_DAEMONSET.name}`, '--timeout=120s'], { timeoutMs: 130_000 });
  return overlay;
}

/** Creates a namespace that enforces the restricted Pod Security Standard. */
export async function restrictedNamespace(cluster: NodeCluster, name: string): Promise<void> {
  await cluster.kubeConfig.makeApiClient(k8s.CoreV1Api).createNamespace({
    body: { metadata: { name, labels: { 'pod-security.kubernetes.io/enforce': 'restricted', 'pod-security.kubernetes.io/enforce-version': 'latest' } } },
  });
}

/** Polls `probe` every second until it returns a value, or fails after `ms` with what it saw last. */
export async function until<T>(what: string, ms: number, probe: () => Promise<T | undefined>, describeLast: () => Promise<string> = async () => ''): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}\n${await describeLast()}`);
    await sleep(1000);
  }
}
