/**
 * A real Kubernetes control plane for integration tests: etcd + kube-apiserver, run as child
 * processes on free loopback ports with all state in a temp dir (the envtest model, in Node).
 *
 * The binaries are built by scripts/build-control-plane.sh into a cache outside the repo, at the
 * versions named in tools/control-plane/versions.env. There is no kube-controller-manager and no
 * scheduler: objects are stored and validated, but nothing reconciles them (no pods are created
 * from Deployments, namespaces are not finalized on delete, no default service accounts).
 */

import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import * as k8s from '@kubernetes/client-node';
import { controlPlaneBinDir } from '../../tools/control-plane/bin-dir.js';

/** How long start-up may take before it fails (etcd + apiserver on 2 slow cores). */
const START_TIMEOUT_MS = Number(process.env.FERRY_CONTROL_PLANE_START_TIMEOUT_MS ?? 60_000);

export { controlPlaneBinDir, controlPlaneVersions, type ControlPlaneVersions } from '../../tools/control-plane/bin-dir.js';

export interface ControlPlane {
  /** A kubeconfig file for the admin user (O=system:masters); also usable with kubectl. */
  readonly kubeconfigPath: string;
  /** The same kubeconfig, loaded. */
  readonly kubeConfig: k8s.KubeConfig;
  /** https://127.0.0.1:<port> */
  readonly server: string;
  /** Certificate files (PEM paths): the admin's client pair, and the front proxy's CA and client pair. */
  readonly certs: {
    readonly admin: { readonly cert: string; readonly key: string };
    readonly frontProxyCa: string;
    readonly frontProxyClient: { readonly cert: string; readonly key: string };
    /** The CA of the kube-apiserver's client certificate for webhook calls (CN WEBHOOK_CLIENT_NAME), and that pair. */
    readonly webhookClientCa: string;
    readonly webhookClient: { readonly cert: string; readonly key: string };
  };
  /** The temp dir with certificates, etcd data and the processes' logs (removed by stop()). */
  readonly runDir: string;
  /**
   * A kubeconfig for a real user other than the admin: a client certificate from the cluster's
   * client CA with CN `name` and O `groups` (no system:masters unless asked for), so RBAC applies.
   */
  userKubeconfig(name: string, groups?: readonly string[]): { readonly path: string; readonly kubeConfig: k8s.KubeConfig };
  /** Creates a namespace with a unique generated name starting with `prefix-`; returns its name. */
  newNamespace(prefix?: string): Promise<string>;
  /** Stops kube-apiserver and etcd (SIGTERM, then SIGKILL) and removes runDir. Safe to call twice. */
  stop(): Promise<void>;
}

interface Proc {
  readonly name: string;
  readonly child: ChildProcess;
  readonly logFile: string;
  exited: boolean;
  exit: Promise<void>;
}

const live = new Set<Proc>();
let exitHookInstalled = false;

/** If the test process exits without stop() (a crash, a timeout), leave no server behind. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const p of live) if (!p.exited) p.child.kill('SIGKILL');
  });
}

function tail(file: string, lines = 30): string {
  try {
    const all = readFileSync(file, 'utf8').trimEnd().split('\n');
    return all.slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

function startProcess(name: string, bin: string, args: string[], runDir: string): Proc {
  const logFile = join(runDir, `${name}.log`);
  const fd = openSync(logFile, 'a');
  const child = spawn(bin, args, { stdio: ['ignore', fd, fd], cwd: runDir });
  closeSync(fd);
  const proc: Proc = { name, child, logFile, exited: false, exit: Promise.resolve() };
  proc.exit = new Promise<void>((resolve) => {
    child.once('exit', () => {
      proc.exited = true;
      live.delete(proc);
      resolve();
    });
    child.once('error', () => {
      proc.exited = true;
      live.delete(proc);
      resolve();
    });
  });
  live.add(proc);
  installExitHook();
  return proc;
}

/** Resolves true when `p` settles within `ms`, false otherwise; leaves no timer behind. */
async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)));
  try {
    return await Promise.race([p.then(() => true), timeout]);
  } finally {
    clearTimeout(timer);
  }
}

async function stopProcess(p: Proc): Promise<void> {
  if (p.exited) return;
  p.child.kill('SIGTERM');
  if (await within(p.exit, 10_000)) return;
  p.child.kill('SIGKILL');
  await within(p.exit, 5_000);
}

/** A port that was free a moment ago (listen on port 0, close). */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

async function distinctFreePorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
}

interface Pki {
  readonly dir: string;
  readonly caCrt: string;
  readonly serverCrt: string;
  readonly serverKey: string;
  readonly adminCrt: string;
  readonly adminKey: string;
  readonly saKey: string;
  readonly saPub: string;
  /** The CA of the client certificate the kube-apiserver shows admission webhooks (AdmissionConfiguration). */
  readonly webhookClientCaCrt: string;
  readonly admissionConfig: string;
  /** The front proxy's CA (--requestheader-client-ca-file) and the kube-apiserver's client cert from it. */
  readonly frontProxyCaCrt: string;
  readonly frontProxyClientCrt: string;
  readonly frontProxyClientKey: string;
}

/** The common name of the client certificate the kube-apiserver presents to admission webhooks. */
export const WEBHOOK_CLIENT_NAME = 'kube-apiserver-webhook-client';

/** The common name of the kube-apiserver's front-proxy client certificate (--requestheader-allowed-names). */
export const FRONT_PROXY_CLIENT_NAME = 'front-proxy-client';

/** A throw-away CA, the apiserver's serving cert, an admin client cert and a service-account key pair. */
function makePki(dir: string): Pki {
  const p = (f: string): string => join(dir, f);
  const openssl = (args: string[]): void => {
    execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
  };
  // ECDSA P-256 like envtest's TinyCA: key generation is instant, unlike RSA.
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', p('ca.key'), '-out', p('ca.crt'), '-days', '7', '-subj', '/CN=ferry-test-ca']);
  writeFileSync(
    p('server.ext'),
    'subjectAltName=DNS:localhost,IP:127.0.0.1,IP:10.0.0.1\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n',
  );
  openssl(['req', '-new', ...ec, '-keyout', p('apiserver.key'), '-out', p('apiserver.csr'), '-subj', '/CN=kube-apiserver']);
  openssl(['x509', '-req', '-in', p('apiserver.csr'), '-CA', p('ca.crt'), '-CAkey', p('ca.key'), '-CAcreateserial', '-days', '7', '-extfile', p('server.ext'), '-out', p('apiserver.crt')]);
  writeFileSync(p('client.ext'), 'keyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n');
  openssl(['req', '-new', ...ec, '-keyout', p('admin.key'), '-out', p('admin.csr'), '-subj', '/O=system:masters/CN=admin']);
  openssl(['x509', '-req', '-in', p('admin.csr'), '-CA', p('ca.crt'), '-CAkey', p('ca.key'), '-CAcreateserial', '-days', '7', '-extfile', p('client.ext'), '-out', p('admin.crt')]);
  openssl(['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', p('sa.key')]);
  // The aggregation layer: a CA of its own (as kubeadm's front-proxy-ca), never the client CA.
  openssl(['req', '-x509', ...ec, '-keyout', p('front-proxy-ca.key'), '-out', p('front-proxy-ca.crt'), '-days', '7', '-subj', '/CN=ferry-test-front-proxy-ca']);
  openssl(['req', '-new', ...ec, '-keyout', p('front-proxy-client.key'), '-out', p('front-proxy-client.csr'), '-subj', `/CN=${FRONT_PROXY_CLIENT_NAME}`]);
  openssl(['x509', '-req', '-in', p('front-proxy-client.csr'), '-CA', p('front-proxy-ca.crt'), '-CAkey', p('front-proxy-ca.key'), '-CAcreateserial', '-days', '7', '-extfile', p('client.ext'), '-out', p('front-proxy-client.crt')]);
  openssl(['pkey', '-in', p('sa.key'), '-pubout', '-out', p('sa.pub')]);
  // Webhook calls: a client certificate from a CA of their own, shown to every webhook ('*').
  openssl(['req', '-x509', ...ec, '-keyout', p('webhook-client-ca.key'), '-out', p('webhook-client-ca.crt'), '-days', '7', '-subj', '/CN=ferry-test-webhook-client-ca']);
  openssl(['req', '-new', ...ec, '-keyout', p('webhook-client.key'), '-out', p('webhook-client.csr'), '-subj', `/CN=${WEBHOOK_CLIENT_NAME}`]);
  openssl(['x509', '-req', '-in', p('webhook-client.csr'), '-CA', p('webhook-client-ca.crt'), '-CAkey', p('webhook-client-ca.key'), '-CAcreateserial', '-days', '7', '-extfile', p('client.ext'), '-out', p('webhook-client.crt')]);
  writeFileSync(p('webhook-kubeconfig'), `apiVersion: v1\nkind: Config\nusers:\n  - name: '*'\n    user:\n      client-certificate: ${p('webhook-client.crt')}\n      client-key: ${p('webhook-client.key')}\n`);
  const webhookPlugin = (name: string): string =>
    `  - name: ${name}\n    configuration:\n      apiVersion: apiserver.config.k8s.io/v1\n      kind: WebhookAdmissionConfiguration\n      kubeConfigFile: ${p('webhook-kubeconfig')}\n`;
  writeFileSync(p('admission.yaml'), `apiVersion: apiserver.config.k8s.io/v1\nkind: AdmissionConfiguration\nplugins:\n${webhookPlugin('MutatingAdmissionWebhook')}${webhookPlugin('ValidatingAdmissionWebhook')}`);
  return {
    webhookClientCaCrt: p('webhook-client-ca.crt'),
    admissionConfig: p('admission.yaml'),
    dir,
    caCrt: p('ca.crt'),
    serverCrt: p('apiserver.crt'),
    serverKey: p('apiserver.key'),
    adminCrt: p('admin.crt'),
    adminKey: p('admin.key'),
    saKey: p('sa.key'),
    saPub: p('sa.pub'),
    frontProxyCaCrt: p('front-proxy-ca.crt'),
    frontProxyClientCrt: p('front-proxy-client.crt'),
    frontProxyClientKey: p('front-proxy-client.key'),
  };
}

interface Probe {
  readonly status: number;
  readonly body: string;
}

function get(url: string, tls?: { ca: Buffer; cert: Buffer; key: Buffer }): Promise<Probe> {
  return new Promise((resolve, reject) => {
    const opts = { timeout: 3_000, ...(tls ?? {}) };
    const req = (url.startsWith('https:') ? httpsRequest : httpRequest)(url, opts, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end();
  });
}

class StartError extends Error {
  constructor(
    message: string,
    readonly portClash: boolean,
  ) {
    super(message);
  }
}

/** Polls `check` until it returns true, a process dies, or the deadline passes. */
async function waitFor(what: string, deadline: number, procs: Proc[], check: () => Promise<boolean>): Promise<void> {
  let last = '';
  for (;;) {
    for (const p of procs) {
      if (p.exited) {
        const log = tail(p.logFile);
        throw new StartError(
          `${p.name} exited (code ${p.child.exitCode}, signal ${p.child.signalCode}) while waiting for ${what}; last lines of ${p.logFile}:\n${log}`,
          /address already in use/i.test(log),
        );
      }
    }
    try {
      if (await check()) return;
    } catch (e) {
      last = (e as Error).message;
    }
    if (Date.now() > deadline) {
      const logs = procs.map((p) => `--- last lines of ${p.logFile}:\n${tail(p.logFile)}`).join('\n');
      throw new StartError(`timed out after ${START_TIMEOUT_MS} ms waiting for ${what}${last ? ` (last error: ${last})` : ''}\n${logs}`, false);
    }
    await sleep(250);
  }
}

function kubeconfigYaml(server: string, pki: Pki, user: { crt: string; key: string } = { crt: pki.adminCrt, key: pki.adminKey }): string {
  const b64 = (f: string): string => readFileSync(f).toString('base64');
  return [
    'apiVersion: v1',
    'kind: Config',
    'clusters:',
    '- name: ferry-test',
    '  cluster:',
    `    server: ${server}`,
    `    certificate-authority-data: ${b64(pki.caCrt)}`,
    'users:',
    '- name: admin',
    '  user:',
    `    client-certificate-data: ${b64(user.crt)}`,
    `    client-key-data: ${b64(user.key)}`,
    'contexts:',
    '- name: ferry-test',
    '  context:',
    '    cluster: ferry-test',
    '    user: admin',
    'current-context: ferry-test',
    '',
  ].join('\n');
}

function requireBinaries(): { etcd: string; apiserver: string } {
  const dir = controlPlaneBinDir();
  const etcd = join(dir, 'etcd');
  const apiserver = join(dir, 'kube-apiserver');
  const missing = [etcd, apiserver].filter((f) => !existsSync(f));
  if (missing.length > 0) {
    throw new Error(
      `cluster: control-plane binaries missing (${missing.join(', ')}). Build them with: bash scripts/build-control-plane.sh ` +
        '(scripts/setup-debian.sh runs it; the first build takes minutes).',
    );
  }
  return { etcd, apiserver };
}

async function startOnce(bins: { etcd: string; apiserver: string }): Promise<ControlPlane> {
  const runDir = mkdtempSync(join(tmpdir(), 'ferry-cp-'));
  const procs: Proc[] = [];
  const cleanup = async (): Promise<void> => {
    for (const p of [...procs].reverse()) await stopProcess(p);
    rmSync(runDir, { recursive: true, force: true });
  };
  try {
    const deadline = Date.now() + START_TIMEOUT_MS;
    const pki = makePki(mkdtempSync(join(runDir, 'pki-')));
    const [etcdPort, peerPort, apiPort] = (await distinctFreePorts(3)) as [number, number, number];
    const etcdUrl = `http://127.0.0.1:${etcdPort}`;
    const peerUrl = `http://127.0.0.1:${peerPort}`;

    const etcd = startProcess(
      'etcd',
      bins.etcd,
      [
        '--name=default',
        `--data-dir=${join(runDir, 'etcd')}`,
        `--listen-client-urls=${etcdUrl}`,
        `--advertise-client-urls=${etcdUrl}`,
        `--listen-peer-urls=${peerUrl}`,
        `--initial-advertise-peer-urls=${peerUrl}`,
        `--initial-cluster=default=${peerUrl}`,
        '--unsafe-no-fsync=true',
        '--log-level=warn',
      ],
      runDir,
    );
    procs.push(etcd);
    await waitFor('etcd /health', deadline, procs, async () => {
      const r = await get(`${etcdUrl}/health`);
      return r.status === 200 && /"health":\s*"true"/.test(r.body);
    });

    const server = `https://127.0.0.1:${apiPort}`;
    const apiserver = startProcess(
      'kube-apiserver',
      bins.apiserver,
      [
        `--etcd-servers=${etcdUrl}`,
        '--bind-address=127.0.0.1',
        `--secure-port=${apiPort}`,
        '--advertise-address=127.0.0.1',
        '--endpoint-reconciler-type=none',
        `--tls-cert-file=${pki.serverCrt}`,
        `--tls-private-key-file=${pki.serverKey}`,
        `--client-ca-file=${pki.caCrt}`,
        `--service-account-issuer=${server}`,
        `--service-account-key-file=${pki.saPub}`,
        `--service-account-signing-key-file=${pki.saKey}`,
        '--service-cluster-ip-range=10.0.0.0/24',
        '--authorization-mode=RBAC',
        // No kube-controller-manager creates the default ServiceAccount, so its admission would reject pods.
        '--disable-admission-plugins=ServiceAccount',
        `--admission-control-config-file=${pki.admissionConfig}`,
        '--allow-privileged=true',
        `--cert-dir=${join(runDir, 'apiserver-certs')}`,
        '--profiling=false',
        // The aggregation layer (front proxy): how the apiserver forwards a user to an APIService's
        // server, verifiably (the server trusts the headers only from this client certificate).
        `--requestheader-client-ca-file=${pki.frontProxyCaCrt}`,
        `--requestheader-allowed-names=${FRONT_PROXY_CLIENT_NAME}`,
        '--requestheader-username-headers=X-Remote-User',
        '--requestheader-group-headers=X-Remote-Group',
        '--requestheader-extra-headers-prefix=X-Remote-Extra-',
        `--proxy-client-cert-file=${pki.frontProxyClientCrt}`,
        `--proxy-client-key-file=${pki.frontProxyClientKey}`,
        '--v=1',
      ],
      runDir,
    );
    procs.push(apiserver);
    const tls = { ca: readFileSync(pki.caCrt), cert: readFileSync(pki.adminCrt), key: readFileSync(pki.adminKey) };
    await waitFor('kube-apiserver /readyz', deadline, procs, async () => (await get(`${server}/readyz`, tls)).status === 200);
    // What envtest does next: the default namespace exists once the bootstrap controllers ran.
    await waitFor('namespace "default"', deadline, procs, async () => (await get(`${server}/api/v1/namespaces/default`, tls)).status === 200);

    const kubeconfigPath = join(runDir, 'kubeconfig');
    writeFileSync(kubeconfigPath, kubeconfigYaml(server, pki), { mode: 0o600 });
    const kubeConfig = new k8s.KubeConfig();
    kubeConfig.loadFromFile(kubeconfigPath);
    const core = kubeConfig.makeApiClient(k8s.CoreV1Api);

    let stopped: Promise<void> | undefined;
    return {
      kubeconfigPath,
      kubeConfig,
      server,
      runDir,
      certs: {
        admin: { cert: pki.adminCrt, key: pki.adminKey },
        frontProxyCa: pki.frontProxyCaCrt,
        frontProxyClient: { cert: pki.frontProxyClientCrt, key: pki.frontProxyClientKey },
        webhookClientCa: pki.webhookClientCaCrt,
        webhookClient: { cert: join(pki.dir, 'webhook-client.crt'), key: join(pki.dir, 'webhook-client.key') },
      },
      userKubeconfig(name: string, groups: readonly string[] = []) {
        if (!/^[A-Za-z0-9:._@-]+$/.test(name) || !groups.every((g) => /^[A-Za-z0-9:._@-]+$/.test(g))) throw new Error(`cluster: user and group names must be plain (${name})`);
        const dir = mkdtempSync(join(runDir, 'user-'));
        const key = join(dir, 'user.key');
        const crt = join(dir, 'user.crt');
        const subject = [...groups.map((g) => `/O=${g}`), `/CN=${name}`].join('');
        const run = (args: string[]): void => void execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
        run(['req', '-new', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', join(dir, 'user.csr'), '-subj', subject]);
        run(['x509', '-req', '-in', join(dir, 'user.csr'), '-CA', pki.caCrt, '-CAkey', join(pki.dir, 'ca.key'), '-CAcreateserial', '-CAserial', join(dir, 'ca.srl'), '-days', '7', '-extfile', join(pki.dir, 'client.ext'), '-out', crt]);
        const path = join(dir, 'kubeconfig');
        writeFileSync(path, kubeconfigYaml(server, pki, { crt, key }), { mode: 0o600 });
        const kubeConfig = new k8s.KubeConfig();
        kubeConfig.loadFromFile(path);
        return { path, kubeConfig };
      },
      async newNamespace(prefix = 'ferry-test'): Promise<string> {
        const ns = await core.createNamespace({ body: { metadata: { generateName: `${prefix}-` } } });
        const name = ns.metadata?.name;
        if (!name) throw new Error('cluster: the apiserver returned a namespace without a name');
        return name;
      },
      stop(): Promise<void> {
        if (!process.env.FERRY_KEEP_CONTROL_PLANE) stopped ??= cleanup();
        else stopped ??= Promise.all([...procs].reverse().map(stopProcess)).then(() => undefined);
        return stopped;
      },
    };
  } catch (e) {
    await cleanup();
    throw e;
  }
}

/**
 * Starts etcd and kube-apiserver on free loopback ports and waits (at most
 * FERRY_CONTROL_PLANE_START_TIMEOUT_MS, default 60 s) until the apiserver is ready.
 * Always call stop() (e.g. in afterAll).
 */
export async function startControlPlane(): Promise<ControlPlane> {
  const bins = requireBinaries();
  // A port found free can be taken by someone else before the server binds it: try once more.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(bins);
    } catch (e) {
      if (!(e instanceof StartError && e.portClash && attempt < 3)) throw e;
    }
  }
}

/** What a kubectl run printed and how it exited. */
export interface KubectlRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Runs the cached kubectl as the user of `kubeconfig` (at most 60 s); never rejects. */
export function kubectlAs(kubeconfig: string, args: readonly string[]): Promise<KubectlRun> {
  return new Promise((resolve) => {
    execFile(join(controlPlaneBinDir(), 'kubectl'), ['--kubeconfig', kubeconfig, ...args], { encoding: 'utf8', timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}
