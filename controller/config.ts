/** The controller's configuration: parsed once at start-up into a frozen object. */

import type { V1ResourceRequirements } from '@kubernetes/client-node';
import { DEFAULT_FILESYSTEM_OVERHEAD } from '../src/contract/import-spec.js';
import { DEFAULT_IMPORTER_METRICS_PORT } from '../src/contract/import-progress.js';
import { DEFAULT_LAUNCHER_STATUS_PORT } from '../src/contract/launcher-pod.js';

const DAY_MS = 86_400_000;

/** The controllers `ferry controller` can run (`--controllers`). */
export const CONTROLLER_NAMES = ['import', 'vm', 'datavolume', 'upload', 'clone', 'datasource'] as const;
export type ControllerName = (typeof CONTROLLER_NAMES)[number];

export interface ControllerConfig {
  /** Image that runs `ferry importer`. */
  readonly importerImage: string;
  readonly importerPullPolicy: 'Always' | 'IfNotPresent' | 'Never';
  readonly importerResources: V1ResourceRequirements;
  /** Port the importer serves its progress metric on (and the controller scrapes). */
  readonly importerMetricsPort: number;
  /** Namespaces to watch; empty means all. */
  readonly namespaces: readonly string[];
  /** Importer pods started again after a retryable failure, at most. */
  readonly maxRetries: number;
  readonly retryBackoffMs: number;
  readonly retryBackoffMaxMs: number;
  /** Reconciles running at once. */
  readonly concurrency: number;
  readonly filesystemOverhead: number;
  /** How often a running import's progress is scraped. */
  readonly progressIntervalMs: number;
  /** Which controllers run in this process. */
  readonly controllers: readonly ControllerName[];
  /** Image that runs `ferry launcher` in VM launcher pods. */
  readonly launcherImage: string;
  readonly launcherPullPolicy: 'Always' | 'IfNotPresent' | 'Never';
  /** Cluster setting (KubeVirt's useEmulation): guests may run under TCG where KVM does not work. */
  readonly allowEmulation: boolean;
  readonly launcherStatusPort: number;
  /** First delay before a VM restarts after a failed run; doubled per consecutive failure. */
  readonly startBackoffMs: number;
  readonly maxStartBackoffMs: number;
  /** Ferry's own namespace: where the upload CAs and the upload proxy's certificate Secrets live. */
  readonly ferryNamespace: string;
  /** Lifetime of the upload CAs (renewed at two thirds) and of the certificates they sign (at most a third of it). */
  readonly uploadCaLifetimeMs: number;
  readonly uploadCertLifetimeMs: number;
  /** An upload server with no finished upload exits after this long (at most two thirds of a certificate's lifetime). */
  readonly uploadDeadlineMs: number;
  /** How often the upload certificates are checked for rotation. */
  readonly certCheckIntervalMs: number;
}

export const DEFAULT_CONFIG: ControllerConfig = Object.freeze({
  importerImage: 'ghcr.io/ferry-dev/ferry:latest',
  importerPullPolicy: 'IfNotPresent',
  importerResources: Object.freeze({
    requests: { cpu: '100m', memory: '64Mi' },
    limits: { cpu: '1', memory: '512Mi' },
  }),
  importerMetricsPort: DEFAULT_IMPORTER_METRICS_PORT,
  namespaces: [],
  maxRetries: 5,
  retryBackoffMs: 10_000,
  retryBackoffMaxMs: 300_000,
  concurrency: 8,
  filesystemOverhead: DEFAULT_FILESYSTEM_OVERHEAD,
  progressIntervalMs: 2_000,
  controllers: Object.freeze([...CONTROLLER_NAMES]),
  launcherImage: 'ghcr.io/ferry-dev/ferry-launcher:latest',
  launcherPullPolicy: 'IfNotPresent',
  allowEmulation: false,
  launcherStatusPort: DEFAULT_LAUNCHER_STATUS_PORT,
  startBackoffMs: 10_000,
  maxStartBackoffMs: 300_000,
  ferryNamespace: 'ferry-system',
  uploadCaLifetimeMs: 30 * DAY_MS,
  uploadCertLifetimeMs: 7 * DAY_MS,
  uploadDeadlineMs: 4 * DAY_MS,
  certCheckIntervalMs: 10 * 60_000,
}) as ControllerConfig;
