/**
 * `npm run demo`: the README's main job on an embedded default — the talk's seed demo
 * (examples/seed-demo/) end to end. It starts a real one-node Kubernetes cluster inside a network
 * namespace (tools/node-cluster/), installs Ferry from the built images with `kubectl apply -k`,
 * serves the boot disk of scripts/make-boot-disk.sh as the talk's `disk-server` Service
 * (examples/demo/disk-server.yaml, named by the cluster's DNS), and then, printing each step the way
 * a presenter runs it: applies pvc.yaml (a real importer pod; its phases, progress and events as
 * they come; `qemu-img compare` of the PV against the source), vmi.yaml with a key made here in
 * place of the placeholder (a real launcher pod boots it under TCG; Running and Ready), and
 * service.yaml, then `ssh -p 30000 root@<node>` into the guest and prints what the command said.
 * The steps are tools/node-cluster/ferry-on-node.ts's, the ones the node tests run. What it needs
 * and lacks is built first with the project's scripts (the control-plane binaries, the images).
 *
 *   npm run demo [-- --keep] [-- --no-build]   on the embedded cluster (root)
 *   npm run demo -- --local                    `ferry import` only, no Kubernetes (any machine)
 *
 * --keep leaves the cluster running after the ssh step, prints its KUBECONFIG, and stops it on
 * Ctrl-C (or SIGTERM). --no-build fails instead of building what is missing (the node test uses it).
 * Exit status: 0 when every step did what it should, 1 otherwise, 2 for a bad flag, 130 when
 * interrupted before the end.
 */

import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as k8s from '@kubernetes/client-node';
import { Annotation, PodPhase } from '../src/api/cdi.js';
import { controlPlaneBinDir } from '../tools/control-plane/bin-dir.js';
import { IMAGES_DIR, imageName, NODE_IP, type NodeCluster, type NodeProcess, REPO_ROOT, startNodeCluster } from '../tools/node-cluster/node-cluster.js';
import {
  changedLines, describeCluster, DISK_SERVER_PORT, DISK_SERVER_YAML, type FerryImage, setUpFerry, sshCommand, sshIntoGuest, startDiskServer, vmiRunningAndReady,
} from '../tools/node-cluster/ferry-on-node.js';
import { sshKeyPair } from '../tools/node-cluster/ssh.js';

const FERRY_BIN = join(REPO_ROOT, 'bin', 'ferry.js');
const SEED = join(REPO_ROOT, 'examples', 'seed-demo');
const IMAGES: readonly FerryImage[] = ['ferry', 'ferry-launcher'];
/** The talk's names (examples/seed-demo/). */
const NS = 'seed-demo';
const PVC = 'seed-disk';
const VMI = 'seed';
const NODE_PORT = 30000;
const PLACEHOLDER_KEY = /ssh-ed25519 AAAA\S*Placeholder\S* you@laptop/;
/** What the demo runs in the guest over ssh. */
const GUEST_COMMAND = 'uname -sr; echo "hello from the guest: $(grep -c ^processor /proc/cpuinfo) vCPU, up $(cut -d" " -f1 /proc/uptime) s"';
const IMPORT_TIMEOUT_MS = 300_000;
const BOOT_TIMEOUT_MS = 420_000;
const NODE_BINARIES = ['etcd', 'kube-apiserver', 'kube-controller-manager', 'kube-scheduler', 'kubelet', 'kube-proxy', 'kubectl'];

/** The PVC annotations the demo prints as they change: what a user would watch with kubectl. */
const SHOWN = [Annotation.ImportPodName, Annotation.PodPhase, Annotation.RunningReason, Annotation.RequiresScratch, Annotation.Progress, Annotation.ErrorCode] as const;

interface Flags {
  readonly local: boolean;
  readonly keep: boolean;
  readonly build: boolean;
}

function parseFlags(argv: readonly string[]): Flags | string {
  const known = new Set(['--local', '--keep', '--no-build']);
  const bad = argv.find((a) => !known.has(a));
  if (bad !== undefined) return `unknown flag ${bad} (--local, --keep, --no-build)`;
  return { local: argv.includes('--local'), keep: argv.includes('--keep'), build: !argv.includes('--no-build') };
}

const say = (line: string): void => void process.stderr.write(`ferry demo: ${line}\n`);
const seconds = (ms: number): string => `${(ms / 1000).toFixed(1)} s`;

function sh(cmd: string, args: readonly string[]): void {
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
}

/** A 1 GiB qcow2 holding 256 MiB of data (a pattern, then random bytes at 512 MiB); the rest is a hole. */
function makeImage(image: string, scratch: string): void {
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', image, '1G']);
  sh('dd', ['if=/dev/urandom', `of=${scratch}`, 'bs=1M', 'count=128', 'status=none']);
  sh('qemu-io', ['-c', 'write -P 0xab 0 128M', '-c', `write -s ${scratch} 512M 128M`, image]);
  rmSync(scratch);
}

/** `qemu-img compare` of the source and the imported raw disk: its verdict line and its status. */
function compare(image: string, format: 'qcow2' | 'raw', disk: string): { line: string; ok: boolean } {
  const cmp = spawnSync('qemu-img', ['compare', '-f', format, '-F', 'raw', image, disk], { encoding: 'utf8' });
  // compare warns that the sizes differ: the import grew the disk to the volume's capacity on purpose.
  const verdict = `${cmp.stdout}${cmp.stderr}`.split('\n').filter((l) => l !== '' && !l.startsWith('Warning')).join(' ');
  const info = spawnSync('qemu-img', ['info', '-f', 'raw', disk], { encoding: 'utf8' });
  const sizes = info.stdout.split('\n').filter((l) => /virtual size|disk size/.test(l)).map((l) => `  ${l}`).join('\n');
  say(`${verdict} (qemu-img compare of the source and the imported disk, exit ${cmp.status})\n${sizes}`);
  return { line: verdict, ok: cmp.status === 0 };
}

/** `p`, or a rejection as soon as `stopping` fires (Ctrl-C): a step need not end before the teardown starts. */
function unlessStopped<T>(p: Promise<T>, stopping: AbortSignal): Promise<T> {
  if (stopping.aborted) return Promise.reject(new Error('interrupted'));
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new Error('interrupted'));
    stopping.addEventListener('abort', onAbort, { once: true });
    p.then(resolve, reject).finally(() => stopping.removeEventListener('abort', onAbort));
  });
}

/** Runs a child with inherited output; resolves with its exit status. */
function runInherit(cmd: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'inherit', 'inherit'], env });
    child.once('error', () => resolve(127));
    child.once('close', (c) => resolve(c ?? 1));
  });
}

// ---------------------------------------------------------------------------------------------
// --local: `ferry import` against busybox httpd on loopback (no Kubernetes)

async function localDemo(dir: string, stopping: AbortSignal): Promise<number> {
  const www = join(dir, 'www');
  mkdirSync(www);
  const image = join(www, 'demo.qcow2');
  const dest = join(dir, 'volume', 'disk.img');
  say(`building a 1 GiB qcow2 with 256 MiB of data in ${dir}`);
  makeImage(image, join(dir, 'random.bin'));
  // A real HTTP server with Range support, loopback only; stopped by PID below. A taken port makes
  // httpd exit at once: try another.
  let port = 0;
  let httpd: ChildProcess | undefined;
  for (let attempt = 0; attempt < 5 && !httpd; attempt++) {
    port = 20000 + Math.floor(Math.random() * 20000);
    const child = spawn('busybox', ['httpd', '-f', '-p', `127.0.0.1:${port}`, '-h', www], { stdio: 'ignore' });
    await sleep(300);
    if (child.exitCode === null && child.signalCode === null) httpd = child;
  }
  if (!httpd) throw new Error('busybox httpd could not listen on 127.0.0.1');
  try {
    const url = `http://127.0.0.1:${port}/demo.qcow2`;
    say(`serving ${url}`);
    say(`ferry import --url ${url} --dest ${dest} --size 2Gi\n`);
    const code = await runInherit(process.execPath, [FERRY_BIN, 'import', '--url', url, '--dest', dest, '--size', '2Gi', '--scratch-dir', join(dir, 'scratch')]);
    if (stopping.aborted) return 130;
    if (code !== 0) return code;
    return compare(image, 'qcow2', dest).ok ? 0 : 1;
  } finally {
    httpd.kill('SIGTERM');
  }
}

// ---------------------------------------------------------------------------------------------
// The embedded cluster

/** The commit part of a built image's tag (`localhost/ferry:<commit>[-dirty]`). */
const tagCommit = (ref: string): string => ref.slice(ref.lastIndexOf(':') + 1).replace(/-dirty$/, '');

/** Builds the control-plane binaries and the two images when they are missing (or of another commit). */
async function ensureBuilt(build: boolean): Promise<void> {
  const bin = controlPlaneBinDir();
  const missing = NODE_BINARIES.filter((b) => !existsSync(join(bin, b)));
  if (missing.length > 0) {
    if (!build) throw new Error(`missing in ${bin}: ${missing.join(', ')} (bash scripts/build-control-plane.sh)`);
    say(`building ${missing.join(', ')} from the Go module proxy into ${bin} (one go build; ≈6 min cold on 2 cores)`);
    const t = Date.now();
    if ((await runInherit('bash', [join(REPO_ROOT, 'scripts', 'build-control-plane.sh')])) !== 0) throw new Error('scripts/build-control-plane.sh failed');
    say(`control-plane binaries built in ${seconds(Date.now() - t)}`);
  }
  const head = spawnSync('git', ['-C', REPO_ROOT, 'rev-parse', '--short=12', 'HEAD'], { encoding: 'utf8' }).stdout.trim();
  const why = IMAGES.map((name) => {
    const archive = join(IMAGES_DIR, `${name}.oci.tar`);
    if (!existsSync(archive)) return `${archive} missing`;
    const commit = tagCommit(imageName(archive));
    return head !== '' && commit !== head ? `${archive} is of commit ${commit}, HEAD is ${head}` : undefined;
  }).filter((w) => w !== undefined);
  if (why.length === 0) return;
  const absent = why.some((w) => w.endsWith('missing'));
  if (!build && !absent) return say(`${why.join('; ')}: using them as they are (--no-build)`);
  if (!build) throw new Error(`${why.join('; ')} (npm run images)`);
  say(`${why.join('; ')}: building the images (npm run images; a few minutes warm, longer with an empty package cache)`);
  const t = Date.now();
  const code = await runInherit('bash', [join(REPO_ROOT, 'scripts', 'build-images.sh'), ...IMAGES], { ...process.env, FERRY_SKIP_TSC: '1' });
  if (code !== 0) throw new Error('scripts/build-images.sh failed');
  say(`images built in ${seconds(Date.now() - t)}`);
}

/** Prints every change of the PVC's status annotations and every new event about it, until a final phase. */
async function follow(cluster: NodeCluster, stopping: AbortSignal, seenEvents: Set<string>): Promise<string> {
  const core = cluster.kubeConfig.makeApiClient(k8s.CoreV1Api);
  const last: Record<string, string | undefined> = {};
  const deadline = Date.now() + IMPORT_TIMEOUT_MS;
  const t0 = Date.now();
  while (!stopping.aborted) {
    const pvc = await core.readNamespacedPersistentVolumeClaim({ name: PVC, namespace: NS }).catch(() => undefined);
    const a = pvc?.metadata?.annotations ?? {};
    const at = `+${seconds(Date.now() - t0).padStart(7)}`;
    if (pvc?.status?.phase !== last.bound) {
      last.bound = pvc?.status?.phase;
      say(`${at}  PVC ${PVC} ${last.bound ?? '(not yet seen)'}${pvc?.spec?.volumeName ? ` on PV ${pvc.spec.volumeName}` : ''}`);
    }
    for (const key of SHOWN) {
      if (a[key] !== last[key]) {
        last[key] = a[key];
        if (a[key] !== undefined) say(`${at}  ${key}: ${a[key]}`);
      }
    }
    await printEvents(cluster, seenEvents, at);
    const phase = a[Annotation.PodPhase];
    if (phase === PodPhase.Succeeded || (phase === PodPhase.Failed && a[Annotation.FatalError] === 'true')) return phase;
    if (Date.now() > deadline) throw new Error(`no final phase after ${seconds(IMPORT_TIMEOUT_MS)}`);
    await sleep(1000);
  }
  return 'interrupted';
}

/** Prints the namespace's events not printed yet. */
async function printEvents(cluster: NodeCluster, seen: Set<string>, at: string): Promise<void> {
  const core = cluster.kubeConfig.makeApiClient(k8s.CoreV1Api);
  const events = await core.listNamespacedEvent({ namespace: NS }).catch(() => undefined);
  for (const e of events?.items ?? []) {
    const uid = e.metadata?.uid ?? '';
    if (seen.has(uid)) continue;
    seen.add(uid);
    say(`${at}  event ${e.type} ${e.reason} (${e.involvedObject.kind}/${e.involvedObject.name}): ${e.message ?? ''}`);
  }
}

/** A presenter's command line and, indented, the YAML it applies (comments left out). */
function showApply(file: string, yaml: string, note = ''): void {
  const body = yaml.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => `      ${l}`).join('\n');
  say(`$ kubectl -n ${NS} apply -f ${relative(REPO_ROOT, file)}${note ? `   # ${note}` : ''}\n${body}`);
}

async function clusterDemo(dir: string, flags: Flags, stopping: AbortSignal, hold: (c: NodeCluster, h?: NodeProcess) => void): Promise<number> {
  if (process.getuid?.() !== 0) {
    say('the embedded cluster needs root (network namespaces, containerd, kubelet); `npm run demo -- --local` runs the importer alone');
    return 1;
  }
  const tStart = Date.now();
  await ensureBuilt(flags.build);
  if (stopping.aborted) return 130;

  let t = Date.now();
  say('starting a one-node cluster in its own network namespace: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, containerd, kubelet, kube-proxy, cluster DNS');
  const cluster = await startNodeCluster({ volumes: 2 });
  hold(cluster);
  say(`node Ready (${cluster.netns}, ${seconds(Date.now() - t)}), work dir ${cluster.workDir}`);
  if (stopping.aborted) return 130;

  say('kubectl apply -k manifests/ (an overlay that only names the built images): CRDs, ferry-system, RBAC, the controller Deployment, the seccomp DaemonSet');
  await unlessStopped(setUpFerry(cluster, dir, { images: IMAGES, namespaces: [NS], progress: say }), stopping);
  say(`namespace ${NS} enforces the restricted Pod Security Standard`);
  if (stopping.aborted) return 130;

  // The talk's disk server: httpd on the node, named by a Service the cluster DNS answers.
  const disk = await unlessStopped(startDiskServer(cluster, dir, 'disk.raw', [NS]), stopping);
  hold(cluster, disk.http);
  say(`$ kubectl -n ${NS} apply -f ${relative(REPO_ROOT, DISK_SERVER_YAML)}   # busybox httpd on ${NODE_IP}:${DISK_SERVER_PORT} serves the boot disk of scripts/make-boot-disk.sh as disk-server.${NS}.svc.cluster.local`);

  // 1. The PVC: a real importer pod fetches the disk.
  say('step 1: the disk');
  const pvcYaml = readFileSync(join(SEED, 'pvc.yaml'), 'utf8');
  showApply(join(SEED, 'pvc.yaml'), pvcYaml);
  t = Date.now();
  await unlessStopped(cluster.kubectlOk(['-n', NS, 'apply', '-f', '-'], { input: pvcYaml }), stopping);
  const seenEvents = new Set<string>();
  const phase = await follow(cluster, stopping, seenEvents);
  if (phase === 'interrupted') return 130;
  say(`PVC ${PVC}: ${phase} ${seconds(Date.now() - t)} after kubectl apply`);
  if (phase !== PodPhase.Succeeded) return 1;
  const core = cluster.kubeConfig.makeApiClient(k8s.CoreV1Api);
  const pv = (await core.readNamespacedPersistentVolumeClaim({ name: PVC, namespace: NS })).spec?.volumeName ?? '';
  say(`the local PV ${pv} is the node directory ${cluster.volumeDir(pv)}`);
  const { ok } = compare(disk.bootDisk, 'raw', join(cluster.volumeDir(pv), 'disk.img'));
  if (!ok || stopping.aborted) return stopping.aborted ? 130 : 1;

  // 2. The VMI: a real launcher pod boots the disk under TCG.
  say('step 2: the virtual machine');
  const key = sshKeyPair(dir);
  const vmiOriginal = readFileSync(join(SEED, 'vmi.yaml'), 'utf8');
  const vmiYaml = vmiOriginal.replace(PLACEHOLDER_KEY, key.publicKey);
  if (changedLines(vmiOriginal, vmiYaml).length !== 1) throw new Error(`${join(SEED, 'vmi.yaml')}: no placeholder key to replace`);
  showApply(join(SEED, 'vmi.yaml'), vmiYaml, `the placeholder key replaced by ${key.key}.pub`);
  t = Date.now();
  await unlessStopped(cluster.kubectlOk(['-n', NS, 'apply', '-f', '-'], { input: vmiYaml }), stopping);
  await unlessStopped(vmiRunningAndReady(cluster, NS, VMI, BOOT_TIMEOUT_MS, {
    describe: () => describeCluster(cluster, [NS]),
    onPhase: async (p) => {
      await printEvents(cluster, seenEvents, `+${seconds(Date.now() - t).padStart(7)}`);
      say(`+${seconds(Date.now() - t).padStart(7)}  VMI ${VMI} ${p}`);
    },
  }), stopping);
  const launcher = (await core.listNamespacedPod({ namespace: NS, labelSelector: 'kubevirt.io=virt-launcher' })).items[0]?.metadata?.name ?? '(none)';
  say(`VMI ${VMI} Running and Ready ${seconds(Date.now() - t)} after kubectl apply (launcher pod ${launcher}: libvirtd, passt and QEMU under TCG)`);

  // 3. The Service: ssh through the NodePort into the guest.
  say('step 3: ssh into the guest');
  const serviceYaml = readFileSync(join(SEED, 'service.yaml'), 'utf8');
  showApply(join(SEED, 'service.yaml'), serviceYaml);
  await unlessStopped(cluster.kubectlOk(['-n', NS, 'apply', '-f', '-'], { input: serviceYaml }), stopping);
  say(`$ ssh -p ${NODE_PORT} -i ${key.key} root@${NODE_IP} '${GUEST_COMMAND}'   # from the node's network; the guest boots under TCG, so the demo waits for its SSH banner`);
  const ssh = await unlessStopped(sshIntoGuest(cluster, { key: key.key, port: NODE_PORT, command: GUEST_COMMAND, bannerMs: BOOT_TIMEOUT_MS, loginMs: 120_000, describe: () => describeCluster(cluster, [NS]) }), stopping);
  say(`${ssh.banner} answered ${seconds(ssh.bannerAt - t)} after the VMI was applied; the guest says:\n${ssh.out.trimEnd().split('\n').map((l) => `    guest> ${l}`).join('\n')}`);
  say(`the whole run took ${seconds(Date.now() - tStart)}`);
  if (!flags.keep || stopping.aborted) return 0;

  const kubectl = join(controlPlaneBinDir(), 'kubectl');
  process.stderr.write(
    [
      '',
      'The cluster keeps running. In another shell:',
      `  export KUBECONFIG=${cluster.kubeconfigPath}`,
      `  alias kubectl=${kubectl}`,
      `  kubectl -n ${NS} get pvc ${PVC} -o yaml        # CDI's annotations as Ferry wrote them`,
      `  kubectl -n ${NS} get vmi,pods,svc`,
      `  kubectl -n ${NS} get events`,
      '  kubectl -n ferry-system get pods,lease        # the controller Deployment and its Lease',
      `  node ${FERRY_BIN} console ${VMI} -n ${NS}      # the guest's serial console (Ctrl-] leaves)`,
      `  ${sshCommand(cluster, key.key, NODE_PORT, 'uname -a').map((a) => (/[\s'"$]/.test(a) ? `'${a}'` : a)).join(' ')}`,
      `Stop it with Ctrl-C here (or kill ${process.pid}): every process, the namespace and the work dir go.`,
      '',
    ].join('\n'),
  );
  await new Promise<void>((resolve) => stopping.addEventListener('abort', () => resolve(), { once: true }));
  return 0;
}

// ---------------------------------------------------------------------------------------------

async function main(argv: readonly string[]): Promise<number> {
  const flags = parseFlags(argv);
  if (typeof flags === 'string') {
    say(flags);
    return 2;
  }
  const abort = new AbortController();
  let cluster: NodeCluster | undefined;
  let http: NodeProcess | undefined;
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      // A second signal: stop waiting; the cluster's exit hook still kills and removes what is left.
      say(`${signal} again: exiting now`);
      process.exit(130);
    }
    say(`${signal}: stopping`);
    abort.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const dir = mkdtempSync(join(tmpdir(), 'ferry-demo-'));
  let code = 1;
  try {
    code = flags.local
      ? await localDemo(dir, abort.signal)
      : await clusterDemo(dir, flags, abort.signal, (c, h) => {
          cluster = c;
          http = h;
        });
  } catch (e) {
    if (!abort.signal.aborted) {
      say(`failed: ${e instanceof Error ? e.message : String(e)}`);
      if (!flags.local) say('no node on this machine? `npm run demo -- --local` runs the importer alone');
    }
    code = 1;
  } finally {
    if (cluster) {
      say('tearing down: the cluster\'s pods, every process by PID, the network namespace, its mounts, the work dir');
      await http?.stop();
      await cluster.stop();
    }
    rmSync(dir, { recursive: true, force: true });
  }
  // Interrupted before the end: 130, whatever the steps reported; --keep's Ctrl-C after a good check is the normal end.
  return abort.signal.aborted && !(flags.keep && code === 0) ? 130 : code;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);
