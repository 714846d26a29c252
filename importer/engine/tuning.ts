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
  /**
   * Smallest image whose one stream a child `curl` writes into the file itself (the raw target or
   * the scratch copy), the bytes never passing through node; 0: never. Absent: the default.
   */
  readonly curlMinBytes?: number;
  /**
   * Under 'auto', a ranged read of this size is timed too (what qemu-img asks nbdkit for at once):
   * what a request costs on this server for real data, not only its latency.
   */
  readonly probeChunkBytes?: number;
  /**
   * Slowest such read (through node) for which nbdkit is worth trying at all; the export itself
   * then decides (`nbdReadMaxMs`).
   */
  readonly nbdMaxChunkMs?: number;
  /**
   * Reads of `probeChunkBytes` timed through the nbdkit export itself before qemu-img reads from
   * it (0: none, node's measure decides alone): a server can answer node's reads fast and nbdkit's
   * curl plugin slowly (the Python server's delayed-ACK stall on every other request).
   */
  readonly nbdProbeReads?: number;
  /** Highest cost per read of those (the opening read included, `nbdReadCost`) that keeps the export for qemu-img; dearer: the one stream. */
  readonly nbdReadMaxMs?: number;
  /** Fastest such read of a server that answers later than `nearLatencyMs` and still gets ranged connections. */
  readonly farChunkMs?: number;
  /** Two such reads at once taking this many times one read: the server is the limit, not the path. */
  readonly serverBoundRatio?: number;
  /**
   * Slowest answer to a one-byte request on a reused connection (`measureReuse`) from a server
   * nbdkit may read: slower, the server stalls each request after the first on a connection.
   */
  readonly reuseStallMs?: number;
  /**
   * Bytes between flushes for the writers whose flushes only keep a memory limit from filling
   * (`memorySyncEveryBytesFor`): a scratch copy (deleted after the convert) and curl writing a
   * plain image into the target (faster than the disk: each flush's barrier only slows it). 0:
   * never. Absent: 64 MiB, as the other target writers flush (a decoder or node, slower than the
   * disk: their flushes do the final sync's writing beside the transfer).
   */
  readonly memorySyncEveryBytes?: number;
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
  curlMinBytes: 16 * 1024 * 1024,
  probeChunkBytes: 2 * 1024 * 1024,
  nbdMaxChunkMs: 15,
  nbdProbeReads: 4,
  nbdReadMaxMs: 6,
  farChunkMs: 25,
  reuseStallMs: 20,
});

const MiB = 1024 * 1024;

/**
 * Pure: the dirty bytes a writer that needs no flushes of its own (`memorySyncEveryBytes`) may
 * leave to the kernel, for a process under `memoryLimit` bytes: a quarter of the limit (16 MiB to
 * 1 GiB), so the kernel's buffering of a large image never fills a pod's limit (cgroup v1 does not
 * throttle writers per cgroup). Without a limit, 0: the kernel's own dirty limits bound it.
 * Measured (bench/README.md, "Seventh pass"): a 512 MiB qcow2 from a Python server 1.22 → 0.94 s
 * (its scratch copy no longer written to disk before it is deleted), a 2 GiB raw fetched by curl
 * 3.53 → 2.89 s (`curl -o` + `sync`: 3.14 s).
 */
export function memorySyncEveryBytesFor(memoryLimit: number | undefined): number {
  if (memoryLimit === undefined) return 0;
  return Math.min(1024 * MiB, Math.max(16 * MiB, Math.floor(memoryLimit / 4)));
}

/** The writer option for `tuning.memorySyncEveryBytes`: nothing where it is unset (the writers' default applies). */
export function memorySync(tuning: Pick<ImportTuning, 'memorySyncEveryBytes'>): { syncEveryBytes?: number } {
  return tuning.memorySyncEveryBytes !== undefined ? { syncEveryBytes: tuning.memorySyncEveryBytes } : {};
}

/** The optional knobs with their defaults filled in. */
type ChunkKnobs = 'curlMinBytes' | 'probeChunkBytes' | 'nbdMaxChunkMs' | 'nbdProbeReads' | 'nbdReadMaxMs' | 'farChunkMs' | 'reuseStallMs';

export function chunkTuning(tuning: Pick<ImportTuning, ChunkKnobs>): Required<Pick<ImportTuning, ChunkKnobs>> {
  return {
    curlMinBytes: tuning.curlMinBytes ?? (DEFAULT_TUNING.curlMinBytes as number),
    probeChunkBytes: tuning.probeChunkBytes ?? (DEFAULT_TUNING.probeChunkBytes as number),
    nbdMaxChunkMs: tuning.nbdMaxChunkMs ?? (DEFAULT_TUNING.nbdMaxChunkMs as number),
    nbdProbeReads: tuning.nbdProbeReads ?? (DEFAULT_TUNING.nbdProbeReads as number),
    nbdReadMaxMs: tuning.nbdReadMaxMs ?? (DEFAULT_TUNING.nbdReadMaxMs as number),
    farChunkMs: tuning.farChunkMs ?? (DEFAULT_TUNING.farChunkMs as number),
    reuseStallMs: tuning.reuseStallMs ?? (DEFAULT_TUNING.reuseStallMs as number),
  };
}

/**
 * Pure: when a probe may stop at its first run (`warmLatencyMs`): a latency within `nearLatencyMs`
 * and a chunk read within both `nbdMaxChunkMs` and `farChunkMs` already decide the route as the
 * fastest of three would (test/unit/route.test.ts checks it), so the other runs are not sent.
 */
export function probeEnoughMs(tuning: Pick<ImportTuning, 'nearLatencyMs' | ChunkKnobs>): { readonly latencyMs: number; readonly chunkMs: number } {
  const knobs = chunkTuning(tuning);
  return { latencyMs: tuning.nearLatencyMs, chunkMs: Math.min(knobs.nbdMaxChunkMs, knobs.farChunkMs) };
}

/** Parses a connections setting: "auto" or a positive integer. */
export function parseConnections(text: string, what: string): number | 'auto' {
  if (text.trim() === 'auto') return 'auto';
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) throw new FerryError(ErrorCode.InvalidSpec, `${what} must be "auto" or a positive integer, got "${text}"`);
  return n;
}


/**
 * Pure: connections for a request latency under 'auto' (unknown latency: one). A server that
 * answers late but delivers a probe chunk within `farChunkMs` is busy, not far; one whose two reads
 * at once (`pairMs`) take 1.5× one read or more is bound by itself (a CPU-starved Python server),
 * and more connections only load it more: one stream either way.
 */
export function autoConnectionsFor(
  latencyMs: number | undefined,
  tuning: Pick<ImportTuning, 'nearLatencyMs' | 'autoConnections' | 'farChunkMs' | 'serverBoundRatio'>,
  chunkMs?: number,
  pairMs?: number,
): number {
  const late = latencyMs !== undefined && latencyMs > tuning.nearLatencyMs && (chunkMs === undefined || chunkMs > chunkTuning(tuning).farChunkMs);
  const serverBound = chunkMs !== undefined && pairMs !== undefined && pairMs >= (tuning.serverBoundRatio ?? 1.5) * chunkMs;
  return late && !serverBound ? Math.max(1, tuning.autoConnections) : 1;
}
