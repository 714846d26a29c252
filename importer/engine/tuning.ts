/** The importer's tuning knobs, their defaults, and the connections setting's parser. */

import { ErrorCode, FerryError } from '../../src/errors.js';
import { DEFAULT_HTTP_TIMEOUTS, type HttpTimeouts } from '../sources/http-source.js';

export interface ImportTuning {
  /** Attempts for retryable failures (network, truncation), the first included. */
  readonly attempts: number;
  /** First backoff; doubles per attempt up to `maxBackoffMs`. */
  readonly backoffMs: number;
  readonly maxBackoffMs: number;
  /** Times a broken HTTP transfer may continue from where it stopped (needs Range support). */
  readonly resumeAttempts: number;
  /** Let qemu-img read remote non-raw images in place through nbdkit (no scratch copy). */
  readonly directHttp: boolean;
  /**
   * Connections for a remote image with Range support: a number (1: one stream, or qemu-img
   * reading in place through nbdkit), or 'auto': one when the server answers a request within
   * `nearLatencyMs` (nbdkit's curl plugin sends one request at a time, so it only pays off close
   * by), else `autoConnections` ranged connections. See bench/README.md, "Importer across a network".
   */
  readonly connections: number | 'auto';
  readonly nearLatencyMs: number;
  readonly autoConnections: number;
  /**
   * Smallest remote raw image that qemu-img copies itself through nbdkit (C from socket to disk,
   * zeros skipped) instead of the streamed JavaScript path; 0 turns it off.
   */
  readonly rawViaNbdMinBytes: number;
  /** Smallest download worth splitting, and the size of each ranged request. */
  readonly parallelMinBytes: number;
  readonly chunkBytes: number;
  /**
   * Ranged request size when a compressed image is fetched over several connections and read in
   * order (each connection holds one whole chunk in memory).
   */
  readonly streamChunkBytes: number;
  readonly http: HttpTimeouts;
}

export const DEFAULT_TUNING: ImportTuning = Object.freeze({
  attempts: 5,
  backoffMs: 1000,
  maxBackoffMs: 30_000,
  resumeAttempts: 10,
  directHttp: true,
  rawViaNbdMinBytes: 64 * 1024 * 1024,
  connections: 'auto',
  nearLatencyMs: 5,
  autoConnections: 4,
  parallelMinBytes: 64 * 1024 * 1024,
  chunkBytes: 16 * 1024 * 1024,
  streamChunkBytes: 4 * 1024 * 1024,
  http: DEFAULT_HTTP_TIMEOUTS,
});

/** Parses a connections setting: "auto" or a positive integer. */
export function parseConnections(text: string, what: string): number | 'auto' {
  if (text.trim() === 'auto') return 'auto';
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) throw new FerryError(ErrorCode.InvalidSpec, `${what} must be "auto" or a positive integer, got "${text}"`);
  return n;
}

/** Pure: connections for a request latency under 'auto' (unknown latency: one). */
export function autoConnectionsFor(latencyMs: number | undefined, tuning: Pick<ImportTuning, 'nearLatencyMs' | 'autoConnections'>): number {
  return latencyMs !== undefined && latencyMs > tuning.nearLatencyMs ? Math.max(1, tuning.autoConnections) : 1;
}
