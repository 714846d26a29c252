/**
 * The importer pod's program. Composition root: reads the spec from the environment, serves the
 * progress metric, runs the engine, writes the termination message and exits with the code's status.
 */

import { writeFileSync } from 'node:fs';
import { chmod, writeFile } from 'node:fs/promises';
import { ErrorCode, FerryError, toFerryError } from '../src/errors.js';
import { decodeImportEnv, decodeMetricsPort, decodeTerminationLog, ImportEnv, TargetKind } from '../src/contract/import-spec.js';
import { createLogger } from '../src/logging.js';
import { encodeTermination, type TerminationMessage } from '../src/contract/termination.js';
import { DEFAULT_TUNING, type ImportTuning, parseConnections, runImport } from './engine.js';
import { createImporterMetrics, serveMetrics } from './metrics.js';
import { Progress, throttled } from './progress.js';
import { curlInstalled } from './sources/curl-fetch.js';
import { withSecretHeaders } from './sources/header-files.js';
import { DEFAULT_HTTP_TIMEOUTS } from './sources/http-source.js';
import { memorySyncEveryBytesFor } from './engine/tuning.js';
import { cgroupMemoryLimit } from '../src/io/memory-limit.js';

function envInt(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const text = env[name];
  if (text === undefined || text === '') return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new FerryError(ErrorCode.InvalidSpec, `${name} must be a non-negative integer, got "${text}"`);
  return n;
}

/**
 * Removes the import secret (and the extra headers) from this process's environment once the spec holds it, so no child
 * (nbdkit, qemu-img, xz, ...) inherits it: /proc/<child>/environ shows what a child was given.
 * A proxy variable with user:password goes too (the spec keeps its own copy; nothing here reads
 * proxies from the environment).
 */
export function scrubSecrets(env: NodeJS.ProcessEnv): void {
  delete env[ImportEnv.SecretKey];
  for (const name of Object.keys(env)) if (name.startsWith(ImportEnv.ExtraHeaderPrefix)) delete env[name];
  for (const name of [ImportEnv.HttpProxy, ImportEnv.HttpsProxy, 'HTTP_PROXY', 'HTTPS_PROXY']) {
    if (/\/\/[^/]*@/.test(env[name] ?? '')) delete env[name];
  }
}

/** The engine's tuning from the pod's environment (FERRY_* variables); defaults where unset. */
export function tuningFromEnv(env: NodeJS.ProcessEnv): ImportTuning {
  return Object.freeze({
    attempts: Math.max(1, envInt(env, 'FERRY_IMPORT_ATTEMPTS', DEFAULT_TUNING.attempts)),
    backoffMs: envInt(env, 'FERRY_IMPORT_BACKOFF_MS', DEFAULT_TUNING.backoffMs),
    maxBackoffMs: DEFAULT_TUNING.maxBackoffMs,
    resumeAttempts: envInt(env, 'FERRY_HTTP_RESUME_ATTEMPTS', DEFAULT_TUNING.resumeAttempts),
    directHttp: env.FERRY_DIRECT_HTTP !== 'false',
    rawViaNbdMinBytes: DEFAULT_TUNING.rawViaNbdMinBytes,
    connections: env.FERRY_HTTP_CONNECTIONS ? parseConnections(env.FERRY_HTTP_CONNECTIONS, 'FERRY_HTTP_CONNECTIONS') : DEFAULT_TUNING.connections,
    nearLatencyMs: DEFAULT_TUNING.nearLatencyMs,
    autoConnections: DEFAULT_TUNING.autoConnections,
    parallelMinBytes: DEFAULT_TUNING.parallelMinBytes,
    chunkBytes: DEFAULT_TUNING.chunkBytes,
    streamChunkBytes: DEFAULT_TUNING.streamChunkBytes,
    // The one stream is written by curl where it is installed (the image has it), else by node.
    curlMinBytes: curlInstalled(env.PATH) ? DEFAULT_TUNING.curlMinBytes : 0,
    http: {
      connectMs: envInt(env, 'FERRY_HTTP_CONNECT_TIMEOUT_MS', DEFAULT_TUNING.http.connectMs),
      firstByteMs: envInt(env, 'FERRY_HTTP_FIRST_BYTE_TIMEOUT_MS', DEFAULT_TUNING.http.firstByteMs),
      idleMs: envInt(env, 'FERRY_HTTP_IDLE_TIMEOUT_MS', DEFAULT_TUNING.http.idleMs),
      // curl's --speed-limit (bytes/s) and --speed-time; 0 turns the check off.
      minSpeedBytes: envInt(env, 'FERRY_HTTP_MIN_SPEED_BYTES', DEFAULT_HTTP_TIMEOUTS.minSpeedBytes),
      minSpeedWindowMs: envInt(env, 'FERRY_HTTP_MIN_SPEED_WINDOW_MS', DEFAULT_HTTP_TIMEOUTS.minSpeedWindowMs),
    },
  });
}

export async function main(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const logger = createLogger({ name: 'ferry-importer', level: env.FERRY_LOG_LEVEL ?? 'info' });
  // The AWS SDK's "needs Node 22 from 2027" notice is not for pod logs (the SDK reads this itself).
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const terminationPath = decodeTerminationLog(env);
  // Stopped mid-import (pod deleted, node drained): say so, retryably. The disk was never renamed
  // into place, so nothing half-written looks complete.
  process.once('SIGTERM', () => {
    const error = new FerryError(ErrorCode.Interrupted, 'the importer was stopped before it finished');
    logger.warn({ code: error.code }, error.message);
    try {
      writeFileSync(terminationPath, encodeTermination({ kind: 'failure', code: error.code, message: error.message, retryable: true }));
    } finally {
      process.exit(error.exitCode);
    }
  });
  let outcome: TerminationMessage;
  let status: number;
  try {
    const decoded = decodeImportEnv(env);
    scrubSecrets(process.env);
    const spec = await withSecretHeaders(decoded);
    // Flushes that only bound memory, sized to the pod's memory limit (none outside one).
    const tuning: ImportTuning = Object.freeze({ ...tuningFromEnv(env), memorySyncEveryBytes: memorySyncEveryBytesFor(cgroupMemoryLimit()) });
    const progress = new Progress();
    const metrics = createImporterMetrics(spec.ownerUid ?? '');
    progress.subscribe(metrics.listener);
    progress.subscribe(
      throttled((s) => logger.info({ phase: s.phase, bytes: s.bytes, total: s.total, percent: Number(s.percent.toFixed(2)) }, 'progress'), 5000, Date.now),
    );
    const metricsPort = decodeMetricsPort(env);
    if (metricsPort > 0) await serveMetrics(metrics.registry, metricsPort);
    logger.info({ source: spec.source, contentType: spec.contentType, target: spec.target, capacity: spec.capacity }, 'import starting');
    const result = await runImport(spec, { logger, progress, tuning, sleep: (ms) => new Promise((r) => setTimeout(r, ms)) });
    // The VM launcher's QEMU runs as another user of the pod's fsGroup: let the group read and write.
    if (spec.target.kind === TargetKind.File && !result.scratchSpaceRequired) await chmod(spec.target.path, 0o660).catch(() => undefined);
    logger.info({ ...result }, result.message);
    outcome = result;
    status = 0;
  } catch (err) {
    const error = toFerryError(err);
    logger.error({ code: error.code, retryable: error.retryable }, error.message);
    outcome = { kind: 'failure', code: error.code, message: error.message, retryable: error.retryable };
    status = error.exitCode;
  }
  await writeFile(terminationPath, encodeTermination(outcome)).catch((err: unknown) => {
    logger.warn({ path: terminationPath, err: (err as Error).message }, 'cannot write the termination message');
  });
  return status;
}
