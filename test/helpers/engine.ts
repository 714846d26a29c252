/** Runs the real engine with test-sized tuning and records progress. */

import { ErrorCode, FerryError } from '../../src/errors.js';
import { type ImportSpec, validateSpec } from '../../src/contract/import-spec.js';
import { createLogger } from '../../src/logging.js';
import type { ImportSuccess } from '../../src/contract/termination.js';
import { DEFAULT_TUNING, type ImportTuning, runImport } from '../../importer/engine.js';
import { Progress, type ProgressSnapshot } from '../../importer/progress.js';

export const FAST_TUNING: ImportTuning = {
  attempts: 3,
  backoffMs: 10,
  maxBackoffMs: 50,
  resumeAttempts: 5,
  directHttp: true,
  // Test images are small: they take the streamed raw path unless a test asks for nbd.
  rawViaNbdMinBytes: 64 * 1024 * 1024,
  connections: 1,
  nearLatencyMs: 1,
  autoConnections: 4,
  parallelMinBytes: 1024 * 1024,
  chunkBytes: 512 * 1024,
  streamChunkBytes: 256 * 1024,
  http: { connectMs: 2000, firstByteMs: 2000, idleMs: 1000 },
};

export function spec(fields: Partial<ImportSpec> & Pick<ImportSpec, 'endpoint' | 'target'>): ImportSpec {
  return validateSpec({
    source: 'http',
    contentType: 'kubevirt',
    insecureTls: false,
    filesystemOverhead: 0,
    preallocation: false,
    proxy: {},
    ...fields,
  });
}

export interface RunOutcome {
  readonly result?: ImportSuccess;
  readonly error?: FerryError;
  readonly snapshots: ProgressSnapshot[];
  /** What the engine logged (info and up), one object per line. */
  readonly logs: Array<Record<string, unknown>>;
}

export interface RunOptions {
  /** Aborts the import (EngineDeps.signal). */
  readonly signal?: AbortSignal;
}

/** A backoff that ends early on abort, so an aborted test leaves no timer behind. */
function sleep(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      resolve();
    }, { once: true });
  });
}

export async function runEngine(s: ImportSpec, tuning: Partial<ImportTuning> = {}, options: RunOptions = {}): Promise<RunOutcome> {
  const progress = new Progress();
  const snapshots: ProgressSnapshot[] = [];
  progress.subscribe((x) => snapshots.push(x));
  const logs: Array<Record<string, unknown>> = [];
  const logger = createLogger({ level: 'info', destination: { write: (line: string) => void logs.push(JSON.parse(line) as Record<string, unknown>) } });
  try {
    const result = await runImport(s, { logger, progress, tuning: { ...DEFAULT_TUNING, ...FAST_TUNING, ...tuning }, sleep: (ms) => sleep(ms, options.signal), ...(options.signal ? { signal: options.signal } : {}) });
    return { result, snapshots, logs };
  } catch (err) {
    if (err instanceof FerryError) return { error: err, snapshots, logs };
    return { error: new FerryError(ErrorCode.Internal, String(err)), snapshots, logs };
  }
}
