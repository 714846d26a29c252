/** What every source hands the engine: a byte stream and what is known about it up front. */

import type { ByteStream } from '../streams.js';

export interface OpenedSource {
  readonly stream: ByteStream;
  /** Length in bytes when the source announced it (Content-Length, file size). */
  readonly size?: number;
  /** A local path the bytes come from: qemu-img may read it in place, with no scratch copy. */
  readonly localPath?: string;
  /** Whether the source serves byte ranges (for resumable and random-access reads). */
  readonly acceptsRanges: boolean;
  /** For logs: where the bytes finally came from (after redirects), credentials removed. */
  readonly description: string;
  /** The URL the bytes finally came from (after redirects), for readers that fetch ranges themselves. */
  readonly remoteUrl?: string;
  /**
   * Opens bytes [start, end] of the same version of the source, where the source can (Range
   * support and a strong validator): what a parallel download uses.
   */
  readonly openRange?: (start: number, end: number) => Promise<ByteStream>;
  /**
   * Measures what one more ranged request costs before its first byte arrives, on a warm
   * connection (a round trip plus the server's own time): what reading in place pays per request.
   * Stops at the first run within `enoughMs` (see `warmLatencyMs`).
   */
  readonly measureLatency?: (enoughMs?: number) => Promise<number>;
  /**
   * Measures a ranged read of `bytes` from the start, to its last byte, on a warm connection (the
   * fastest of three, or the first within `enoughMs`): what one request for real data costs on
   * this server. With `together`, that many such reads at once (the faster of two rounds):
   * whether more connections get more.
   */
  readonly measureChunk?: (bytes: number, together?: number, enoughMs?: number) => Promise<number>;
  /**
   * Times one more one-byte ranged request on the connection the probes before it left open: a
   * server that writes headers and body apart answers it only after the client's delayed ACK
   * (40–50 ms on the Python server, every time; nginx 0.4–3 ms), and so would every request
   * nbdkit sends on its one connection (bench/README.md, "Seventh pass").
   */
  readonly measureReuse?: () => Promise<number>;
}

/** Opens the source afresh; the engine calls it again for each attempt. */
export type SourceOpener = () => Promise<OpenedSource>;

/**
 * The fastest of three runs of `probe` (one small request, read to its end), in milliseconds: the
 * first may pay for a new connection, the others reuse it; the minimum ignores a busy moment.
 * A run within `enoughMs` ends it: more runs could only go lower, and a caller that compares the
 * result with thresholds at or above `enoughMs` decides the same. Each run is a request, and on
 * some servers every request after the first on a connection waits 40 ms for a delayed ACK
 * (bench/README.md, "Sixth pass").
 */
export async function warmLatencyMs(probe: () => Promise<void>, times = 3, enoughMs = 0): Promise<number> {
  let best = Infinity;
  for (let i = 0; i < times && best > enoughMs; i += 1) {
    const started = performance.now();
    await probe();
    best = Math.min(best, performance.now() - started);
  }
  return best;
}
