/** The controller's configuration: parsed once at start-up into a frozen object. */

import type { V1ResourceRequirements } from '@kubernetes/client-node';
import { DEFAULT_FILESYSTEM_OVERHEAD } from '../src/import-spec.js';

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
}

export const DEFAULT_CONFIG: ControllerConfig = Object.freeze({
  importerImage: 'ghcr.io/ferry-dev/ferry:latest',
  importerPullPolicy: 'IfNotPresent',
  importerResources: Object.freeze({
    requests: { cpu: '100m', memory: '64Mi' },
    limits: { cpu: '1', memory: '512Mi' },
  }),
  importerMetricsPort: 8443,
  namespaces: [],
  maxRetries: 5,
  retryBackoffMs: 10_000,
  retryBackoffMaxMs: 300_000,
  concurrency: 8,
  filesystemOverhead: DEFAULT_FILESYSTEM_OVERHEAD,
  progressIntervalMs: 2_000,
}) as ControllerConfig;
