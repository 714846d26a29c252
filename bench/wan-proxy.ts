/**
 * A TCP proxy on loopback that makes a connection behave like one across a wide-area network, for
 * benchmarks only. This kernel has no netem (CONFIG_NET_SCH_NETEM is off), so latency is emulated
 * here, in user space:
 * - every byte is delivered half a round trip after it arrived, in both directions, so a request
 *   and its first response byte are one round trip apart;
 * - each direction of each connection keeps at most `windowBytes` unacknowledged (an
 *   acknowledgement takes another half round trip), so one connection moves at most
 *   windowBytes / rtt, as a TCP connection limited by its window does;
 * - optionally, a per-connection rate cap (what object stores and CDNs apply per connection) and a
 *   link rate shared by all connections.
 * It is an emulation: no loss, no slow start, no congestion control. What it shows is how the
 * importer's strategies behave when each request costs a round trip and one connection cannot fill
 * the link.
 */

import { createServer, connect, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';

export interface WanOptions {
  readonly rttMs: number;
  /** Unacknowledged bytes per direction per connection. */
  readonly windowBytes: number;
  /** Per-connection cap, bytes/s, each direction (undefined: none). */
  readonly perConnectionBytesPerSec?: number;
  /** Shared by all connections, server → client direction (undefined: none). */
  readonly linkBytesPerSec?: number;
}

export interface WanProxy {
  readonly port: number;
  /** Connections accepted so far. */
  readonly connections: () => number;
  close(): Promise<void>;
}

/** A token bucket refilled continuously; `take` says how long to wait before `n` bytes may pass. */
class Bucket {
  private tokens: number;
  private last = performance.now();
  constructor(private readonly rate: number, private readonly burst: number) {
    this.tokens = burst;
  }
  /** Milliseconds until `n` bytes may pass (0: taken now). */
  take(n: number): number {
    const now = performance.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.last) / 1000) * this.rate);
    this.last = now;
    if (this.tokens >= Math.min(n, this.burst)) {
      this.tokens -= n;
      return 0;
    }
    return Math.max(1, ((Math.min(n, this.burst) - this.tokens) / this.rate) * 1000);
  }
}

interface Pending {
  readonly data: Buffer;
  readonly due: number;
}

/** One direction of one connection: delay, window, rate. */
function channel(from: Socket, to: Socket, options: WanOptions, link: Bucket | undefined): void {
  const half = options.rttMs / 2;
  const own = options.perConnectionBytesPerSec ? new Bucket(options.perConnectionBytesPerSec, 256 * 1024) : undefined;
  const queue: Pending[] = [];
  let unacked = 0;
  let timer: NodeJS.Timeout | NodeJS.Immediate | undefined;
  let ended = false;

  const pump = (): void => {
    timer = undefined;
    const now = performance.now();
    while (queue.length > 0) {
      // The receiver's own backpressure: a reader that stops reading stops the flow, as TCP does.
      if (to.writableNeedDrain) return;
      const head = queue[0] as Pending;
      if (head.due > now) return schedule(head.due - now);
      const wait = Math.max(own?.take(head.data.length) ?? 0, link?.take(head.data.length) ?? 0);
      if (wait > 0) return schedule(wait);
      queue.shift();
      if (!to.destroyed) to.write(head.data);
      // The acknowledgement reaches the sender half a round trip after delivery.
      const acknowledge = (): void => {
        unacked -= head.data.length;
        if (unacked < options.windowBytes && from.isPaused()) from.resume();
      };
      if (half > 0) setTimeout(acknowledge, half).unref();
      else acknowledge();
    }
    if (ended && !to.destroyed) to.end();
  };
  // setTimeout cannot wait less than a millisecond; "now" goes through setImmediate.
  const schedule = (ms: number): void => {
    if (!timer) timer = ms > 0 ? setTimeout(pump, ms) : setImmediate(pump);
  };

  to.on('drain', () => schedule(0));
  from.on('data', (data: Buffer) => {
    queue.push({ data, due: performance.now() + half });
    unacked += data.length;
    if (unacked >= options.windowBytes) from.pause();
    schedule(queue.length === 1 ? half : 0);
  });
  from.on('end', () => {
    ended = true;
    schedule(0);
  });
  from.on('error', () => to.destroy());
  from.on('close', () => {
    if (!ended) to.destroy();
  });
}

/** Starts the proxy in front of `targetPort` on 127.0.0.1. */
export async function startWanProxy(targetPort: number, options: WanOptions): Promise<WanProxy> {
  const link = options.linkBytesPerSec ? new Bucket(options.linkBytesPerSec, 256 * 1024) : undefined;
  const sockets = new Set<Socket>();
  let accepted = 0;
  const server: Server = createServer((client) => {
    accepted += 1;
    const upstream = connect(targetPort, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
    }
    channel(client, upstream, options, undefined);
    channel(upstream, client, options, link);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    connections: () => accepted,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
