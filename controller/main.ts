/**
 * `ferry controller`: the PVC-annotation import, upload and clone, DataVolume and VM controllers. Composition root: flags and
 * environment, Kubernetes clients, the health/metrics server, leader election and signals.
 */

import { createServer, type Server } from 'node:http';
import { hostname } from 'node:os';
import { parseArgs } from 'node:util';
import { CoordinationV1Api, CustomObjectsApi, KubeConfig } from '@kubernetes/client-node';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { ErrorCode, FerryError, toFerryError } from '../src/errors.js';
import { createLogger, type Logger } from '../src/logging.js';
import type { CdiConfigDefaults } from '../src/api/cdiconfig.js';
import { CONTROLLER_NAMES, type ControllerConfig, type ControllerName, DEFAULT_CONFIG } from './config.js';
import { CdiConfigController } from './cdiconfig/cdiconfig-controller.js';
import { CloneController } from './clone/clone-controller.js';
import { DataSourceController } from './datasource/datasource-controller.js';
import { DataVolumeController } from './datavolume/datavolume-controller.js';
import { ImportController } from './import/import-controller.js';
import { CdiSettingsCache, flagDefaults } from './runtime/cdi-settings.js';
import { combine, type Runnable } from './runtime/controller.js';
import { errorLine } from './runtime/errors.js';
import { InformerFactory } from './runtime/informers.js';
import { LeaderElector } from './runtime/leader-election.js';
import { UploadController } from './upload/upload-controller.js';
import { VmController } from './vm/vm-controller.js';

export const CONTROLLER_USAGE = `Usage: ferry controller [--kubeconfig FILE] [options]

Watches PersistentVolumeClaims annotated for import (cdi.kubevirt.io/storage.import.*) and runs
importer pods for them; creates the PVCs of cdi.kubevirt.io/v1beta1 DataVolumes; runs kubevirt.io/v1
VirtualMachines (creating the DataVolumes of their dataVolumeTemplates) and VirtualMachineInstances
in launcher pods; runs an upload server pod, Service and certificate for each PVC annotated
cdi.kubevirt.io/storage.upload.target (and DataVolumes with source.upload); copies PVCs annotated
k8s.io/CloneRequest with a clone token the clone webhook signed (and DataVolumes with source.pvc or sourceRef).
CDIConfig "config" (cdi.kubevirt.io) overrides the worker pod resources, filesystem overhead, scratch class,
importer proxy and upload proxy URL where its spec sets them; the flags are the defaults.

Options:
  --kubeconfig FILE         cluster to use (default: in-cluster, then $KUBECONFIG / ~/.kube/config)
  --importer-image IMAGE    image that runs "ferry importer" (default ${DEFAULT_CONFIG.importerImage})
  --importer-pull-policy P  Always, IfNotPresent or Never (default ${DEFAULT_CONFIG.importerPullPolicy})
  --namespace NS            watch only this namespace (repeatable; default: all)
  --max-retries N           importer restarts after retryable failures (default ${DEFAULT_CONFIG.maxRetries})
  --retry-backoff-ms MS     first retry delay, doubled per retry (default ${DEFAULT_CONFIG.retryBackoffMs})
  --concurrency N           reconciles at once (default ${DEFAULT_CONFIG.concurrency})
  --importer-metrics-port P port importers serve progress on (default ${DEFAULT_CONFIG.importerMetricsPort})
  --filesystem-overhead F   fraction of filesystem volumes kept free (default ${DEFAULT_CONFIG.filesystemOverhead})
  --controllers LIST        any of import,vm,datavolume,upload,clone,datasource (default all; datavolume also keeps CDIConfig "config")
  --upload-proxy-url URL    the upload proxy's URL for users (https://…), published in CDIConfig status.uploadProxyURL
  --launcher-image IMAGE    image that runs "ferry launcher" (default ${DEFAULT_CONFIG.launcherImage})
  --allow-emulation         let guests run under QEMU TCG where the node has no working KVM
  --start-backoff-ms MS     first delay before restarting a failed VM, doubled per failure (default ${DEFAULT_CONFIG.startBackoffMs})
  --health-port PORT        /healthz, /readyz and /metrics (default 8080; 0 disables)
  --leader-elect BOOL       take a Lease before acting (default true)
  --lease-namespace NS      namespace of the Lease (default $POD_NAMESPACE or ferry-system)
  --ferry-namespace NS      namespace of the upload CA and upload proxy certificate Secrets (default $POD_NAMESPACE or ferry-system)
  --id NAME                 this replica's identity (default $POD_NAME or hostname-pid)
  --log-level LEVEL         pino level (default info)`;

function int(name: string, text: string | undefined, fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER): number {
  if (text === undefined) return fallback;
  const n = /^\d+$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    throw new FerryError(ErrorCode.InvalidSpec, `--${name} must be an integer from ${min} to ${max}, got "${text}"`);
  }
  return n;
}

function nonEmpty(name: string, text: string | undefined, fallback: string): string {
  if (text === undefined) return fallback;
  if (text.trim() === '') throw new FerryError(ErrorCode.InvalidSpec, `--${name} must not be empty`);
  return text.trim();
}

export function parseControllerArgs(argv: readonly string[]): { config: ControllerConfig; values: Record<string, string | string[] | boolean | undefined> } {
  const { values } = parseArgs({
    args: [...argv],
    options: {
      kubeconfig: { type: 'string' },
      'importer-image': { type: 'string' },
      'importer-pull-policy': { type: 'string' },
      namespace: { type: 'string', multiple: true },
      'max-retries': { type: 'string' },
      'retry-backoff-ms': { type: 'string' },
      concurrency: { type: 'string' },
      'importer-metrics-port': { type: 'string' },
      'filesystem-overhead': { type: 'string' },
      'health-port': { type: 'string' },
      controllers: { type: 'string' },
      'upload-proxy-url': { type: 'string' },
      'launcher-image': { type: 'string' },
      'allow-emulation': { type: 'boolean' },
      'start-backoff-ms': { type: 'string' },
      'leader-elect': { type: 'string' },
      'lease-namespace': { type: 'string' },
      'ferry-namespace': { type: 'string' },
      id: { type: 'string' },
      'log-level': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
  });
  const pull = (values['importer-pull-policy'] ?? DEFAULT_CONFIG.importerPullPolicy) as ControllerConfig['importerPullPolicy'];
  if (!['Always', 'IfNotPresent', 'Never'].includes(pull)) throw new FerryError(ErrorCode.InvalidSpec, `--importer-pull-policy must be Always, IfNotPresent or Never`);
  const overheadText = values['filesystem-overhead'];
  const overhead = overheadText === undefined ? DEFAULT_CONFIG.filesystemOverhead : /^\d*\.?\d+$/.test(overheadText) ? Number(overheadText) : Number.NaN;
  if (!(overhead >= 0 && overhead < 1)) throw new FerryError(ErrorCode.InvalidSpec, `--filesystem-overhead must be a fraction in [0, 1), got "${overheadText}"`);
  const backoff = int('retry-backoff-ms', values['retry-backoff-ms'], DEFAULT_CONFIG.retryBackoffMs);
  const controllers = (values.controllers ?? CONTROLLER_NAMES.join(',')).split(',').map((c) => c.trim()).filter((c) => c !== '');
  for (const c of controllers) {
    if (!(CONTROLLER_NAMES as readonly string[]).includes(c)) throw new FerryError(ErrorCode.InvalidSpec, `--controllers takes ${CONTROLLER_NAMES.join(', ')}, got "${c}"`);
  }
  if (controllers.length === 0) throw new FerryError(ErrorCode.InvalidSpec, '--controllers must name at least one controller');
  const startBackoff = int('start-backoff-ms', values['start-backoff-ms'], DEFAULT_CONFIG.startBackoffMs);
  const config: ControllerConfig = Object.freeze({
    ...DEFAULT_CONFIG,
    importerImage: nonEmpty('importer-image', values['importer-image'], DEFAULT_CONFIG.importerImage),
    importerPullPolicy: pull,
    namespaces: Object.freeze([...(values.namespace ?? [])]),
    maxRetries: int('max-retries', values['max-retries'], DEFAULT_CONFIG.maxRetries),
    retryBackoffMs: backoff,
    retryBackoffMaxMs: Math.max(backoff, DEFAULT_CONFIG.retryBackoffMaxMs),
    concurrency: int('concurrency', values.concurrency, DEFAULT_CONFIG.concurrency, 1),
    importerMetricsPort: int('importer-metrics-port', values['importer-metrics-port'], DEFAULT_CONFIG.importerMetricsPort, 1, 65535),
    filesystemOverhead: overhead,
    controllers: Object.freeze(controllers as ControllerName[]),
    launcherImage: nonEmpty('launcher-image', values['launcher-image'], DEFAULT_CONFIG.launcherImage),
    allowEmulation: values['allow-emulation'] === true,
    startBackoffMs: startBackoff,
    maxStartBackoffMs: Math.max(startBackoff, DEFAULT_CONFIG.maxStartBackoffMs),
  });
  return { config, values };
}

/** CDIConfig's fallbacks: the controller's own flags. */
function cdiConfigDefaults(config: ControllerConfig, uploadProxyUrl: unknown): CdiConfigDefaults {
  const url = typeof uploadProxyUrl === 'string' && uploadProxyUrl.trim() !== '' ? uploadProxyUrl.trim() : undefined;
  if (url !== undefined && !/^https?:\/\/[^/\s]+/.test(url)) throw new FerryError(ErrorCode.InvalidSpec, `--upload-proxy-url must be an http(s):// URL (virtctl cannot use host:port), got "${url}"`);
  return flagDefaults(config, url);
}

/** Shutdown takes at most this long, whatever the apiserver does (the kubelet's grace is 30 s). */
export const SHUTDOWN_GRACE_MS = 5000;

interface Readiness {
  readonly ready: boolean;
  /** Why not, in one line (the body of a 503). */
  readonly why?: string;
}

function serveHealth(port: number, registry: Registry, readiness: () => Readiness): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.url === '/healthz') return void res.writeHead(200).end('ok');
    if (req.url === '/readyz') {
      const r = readiness();
      return void (r.ready ? res.writeHead(200).end('ok') : res.writeHead(503, { 'content-type': 'text/plain' }).end(`not ready: ${r.why ?? 'starting'}\n`));
    }
    if (req.url === '/metrics') {
      registry.metrics().then((text) => res.writeHead(200, { 'content-type': registry.contentType }).end(text), () => res.writeHead(500).end());
      return;
    }
    res.writeHead(404).end();
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, () => resolve(server));
  });
}

/**
 * Pure: is this replica ready? A standby is (it serves health though it does not act), unless the
 * Lease itself cannot be used — then no replica will ever act, and readiness says why.
 */
export function readiness(elector: { readonly isLeader: boolean; readonly problem: string | undefined } | undefined, controllerReady: boolean): Readiness {
  if (elector?.problem) return { ready: false, why: elector.problem };
  if (elector && !elector.isLeader) return { ready: true };
  return controllerReady ? { ready: true } : { ready: false, why: 'the caches are not filled yet' };
}

export async function controllerCommand(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): Promise<number> {
  let parsed: ReturnType<typeof parseControllerArgs>;
  try {
    parsed = parseControllerArgs(argv);
  } catch (err) {
    process.stderr.write(`error ${ErrorCode.InvalidSpec}: ${(err as Error).message.split('\n')[0]} (see 'ferry controller --help')\n`);
    return 2;
  }
  const { values } = parsed;
  // Where the upload CAs and the proxy's certificates live: the flag, else the pod's own namespace.
  const config: ControllerConfig = Object.freeze({ ...parsed.config, ferryNamespace: (values['ferry-namespace'] as string | undefined) ?? env.POD_NAMESPACE ?? parsed.config.ferryNamespace });
  if (values.help) {
    process.stderr.write(`${CONTROLLER_USAGE}\n`);
    return 0;
  }
  const logger = createLogger({ name: 'ferry-controller', level: (values['log-level'] as string | undefined) ?? 'info' });
  try {
    const kc = new KubeConfig();
    if (typeof values.kubeconfig === 'string') kc.loadFromFile(values.kubeconfig);
    else kc.loadFromDefault();
    const registry = new Registry();
    collectDefaultMetrics({ register: registry });
    // One set of caches for every controller: one PVC and one DataVolume list+watch, not one per controller.
    const informers = new InformerFactory(kc, config.namespaces, logger);
    const defaults = cdiConfigDefaults(config, values['upload-proxy-url']);
    // CDIConfig `config` over the flags, read by every controller on every reconcile.
    const settings = new CdiSettingsCache(informers, kc.makeApiClient(CustomObjectsApi), defaults, logger.child({ controller: 'cdiconfig' }));
    const controller = combine(
      [
        settings,
        ...(config.controllers.includes('import') ? [new ImportController({ kubeConfig: kc, config, logger, registry, informers, settings })] : []),
        ...(config.controllers.includes('vm') ? [new VmController({ kubeConfig: kc, config, logger: logger.child({ controller: 'vm' }), informers })] : []),
        ...(config.controllers.includes('upload') ? [new UploadController({ kubeConfig: kc, config, logger: logger.child({ controller: 'upload' }), informers, settings })] : []),
        ...(config.controllers.includes('clone') ? [new CloneController({ kubeConfig: kc, config, logger: logger.child({ controller: 'clone' }), informers, settings })] : []),
        ...(config.controllers.includes('datavolume') ? [new DataVolumeController({ kubeConfig: kc, config, logger: logger.child({ controller: 'datavolume' }), informers, settings })] : []),
        ...(config.controllers.includes('datasource') ? [new DataSourceController({ kubeConfig: kc, config, logger: logger.child({ controller: 'datasource' }), informers })] : []),
        ...(config.controllers.includes('datavolume') ? [new CdiConfigController({ kubeConfig: kc, logger: logger.child({ controller: 'cdiconfig' }), defaults })] : []),
      ],
      () => informers.stop(),
    );
    const elect = values['leader-elect'] !== 'false';
    const elector = elect
      ? new LeaderElector(
          kc.makeApiClient(CoordinationV1Api),
          {
            namespace: (values['lease-namespace'] as string | undefined) ?? env.POD_NAMESPACE ?? 'ferry-system',
            name: 'ferry-controller',
            identity: (values.id as string | undefined) ?? env.POD_NAME ?? `${hostname()}-${process.pid}`,
            leaseDurationSeconds: 15,
            renewIntervalMs: 5000,
          },
          logger,
        )
      : undefined;
    const healthPort = int('health-port', values['health-port'] as string | undefined, 8080, 0, 65535);
    const health = healthPort > 0 ? await serveHealth(healthPort, registry, () => readiness(elector, controller.ready)) : undefined;
    return await runUntilSignal(controller, elector, health, logger, config);
  } catch (err) {
    const error = toFerryError(err);
    logger.error({ code: error.code }, errorLine(err));
    return error.exitCode;
  }
}

function runUntilSignal(controller: Runnable, elector: LeaderElector | undefined, health: Server | undefined, logger: Logger, config: ControllerConfig): Promise<number> {
  return new Promise((resolve) => {
    let exiting = false;
    const shutdown = async (code: number, why: string): Promise<void> => {
      if (exiting) return;
      exiting = true;
      logger.info({ why }, 'shutting down');
      // Reconciles in flight finish first (the Lease is still held meanwhile), then the Lease is
      // handed over; each wait is bounded, so a hung apiserver cannot hold the exit.
      const deadline = Date.now() + SHUTDOWN_GRACE_MS;
      const drained = await within(controller.stop(), (SHUTDOWN_GRACE_MS * 3) / 5);
      const released = elector ? await within(elector.stop(), deadline - Date.now()) : true;
      if (!drained || !released) {
        logger.warn({ graceMs: SHUTDOWN_GRACE_MS, drained, leaseReleased: released }, 'the apiserver did not answer in time; exiting anyway');
      }
      health?.close();
      resolve(code);
    };
    process.once('SIGTERM', () => void shutdown(0, 'SIGTERM'));
    process.once('SIGINT', () => void shutdown(0, 'SIGINT'));
    const begin = (): void => {
      logger.info({ namespaces: config.namespaces.length > 0 ? config.namespaces : 'all', image: config.importerImage }, 'controller starting');
      controller.start().then(
        () => logger.info('caches synced; reconciling'),
        (err: unknown) => void shutdown(1, `start failed: ${errorLine(err)}`),
      );
    };
    // Losing the lease ends the process: the replacement starts from a clean slate.
    if (elector) void elector.run(begin, () => void shutdown(1, 'lost leadership'));
    else begin();
  });
}

/** Waits for `op` at most `ms`; true when it settled in time (its failure is the caller's to log). */
function within(op: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), Math.max(0, ms))));
  return Promise.race([op.then(() => true, () => true), late]).finally(() => clearTimeout(timer));
}
