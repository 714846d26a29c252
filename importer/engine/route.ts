/**
 * The import's one decision, as a pure function: from what is known about the source, the image
 * and the target (facts) to the path the bytes take (a route) with its parameters. No I/O, no
 * clock, no logger; the engine gathers the facts, calls `route` and executes what it returns.
 * See test/unit/route.test.ts for the table.
 */

import { ErrorCode } from '../../src/errors.js';
import { ContentType, ImportSource, TargetKind } from '../../src/contract/import-spec.js';
import { Format, needsConversion, qemuFormatName } from '../sniff.js';
import { VHD_FOOTER_BYTES } from '../vhd-footer.js';
import { autoConnectionsFor, chunkTuning, type ImportTuning } from './tuning.js';

const MiB = 1024 * 1024;

/** What the engine knows once the source is open and the image's first bytes are decoded. */
export interface RouteFacts {
  readonly contentType: ContentType;
  readonly source: ImportSource;
  /** The innermost format, and the compression layers around it (outermost first). */
  readonly format: Format;
  readonly layers: readonly Format[];
  /** Set when one zstd or xz layer wraps the image: that decoder can write the target file itself. */
  readonly fileDecoder?: Format;
  /** Bytes the source announced (the compressed size when there are layers). */
  readonly size?: number;
  /** The source serves ranges of one version of the image (Range, a validator and a size). */
  readonly ranged: boolean;
  /** An http(s) URL with Range support that nbdkit can read. */
  readonly nbdReadable: boolean;
  /** A local file qemu-img can open in place. */
  readonly localFile: boolean;
  /** Measured time to first byte of a ranged request, when measured (see `wantsLatency`). */
  readonly latencyMs?: number;
  /** Measured time of one ranged read of `probeChunkBytes`, to its last byte, when measured. */
  readonly chunkMs?: number;
  /** Measured time of two such reads at once, when the server looked far (`chunkMs` and latency). */
  readonly pairMs?: number;
  /**
   * Measured time of a small request on a reused connection (a raw image's tail read, or else the
   * one-byte `measureReuse`), once the route said nbd on measured costs (see `wantsReuse`): over
   * `reuseStallMs`, nbdkit is not tried.
   */
  readonly reuseMs?: number;
  /**
   * Cost per read of such reads through the nbdkit export itself, the opening one included
   * (`nbdReadCost`), measured once the route said nbd (see `wantsNbdReads`); it then decides
   * alone whether qemu-img reads through nbdkit.
   */
  readonly nbdReadMs?: number;
  /**
   * The one stream can be fetched by a child curl into a file (an http(s) source of known size,
   * at least `curlMinBytes`, curl installed); the engine sets it, the route decides where it applies.
   */
  readonly curl?: boolean;
  readonly checksum: boolean;
  readonly targetKind: TargetKind;
  /** Bytes the disk may take; undefined: the image's own size. */
  readonly usable?: number;
  readonly scratch: boolean;
  /** The virtual size the image's header declares (qcow2, vmdk, vdi, vhd). */
  readonly declaredSize?: bigint;
  /**
   * For a plain raw image of known size: what its last 512 bytes are, when they could be read
   * ahead ('fixed-vhd': a fixed VHD footer declaring the bytes before it as the disk).
   */
  readonly tail?: 'fixed-vhd' | 'data';
  readonly tuning: RouteTuning;
}

export type RouteTuning = Pick<
  ImportTuning,
  'directHttp' | 'connections' | 'nearLatencyMs' | 'autoConnections' | 'rawViaNbdMinBytes' | 'parallelMinBytes' | 'chunkBytes' | 'streamChunkBytes' | 'nbdMaxChunkMs' | 'nbdProbeReads' | 'nbdReadMaxMs' | 'farChunkMs' | 'serverBoundRatio' | 'reuseStallMs'
>;

/** How a route that reads the stream gets its bytes. */
export type Transport =
  | { readonly kind: 'single' }
  /** One stream written into the file by a child curl (plain images into a file), or into the decoder that writes it (one zstd/xz layer). */
  | { readonly kind: 'curl' }
  /** A compressed body fetched over several ranged connections, handed on in order. */
  | { readonly kind: 'ordered-ranges'; readonly connections: number; readonly chunkBytes: number };

/** Several connections writing ranges at their offsets. */
export interface RangedFetch {
  readonly connections: number;
  readonly chunkBytes: number;
  /** Bytes to fetch from offset 0. */
  readonly length: number;
}

export type Refusal = {
  readonly path: 'refused';
  readonly code: ErrorCode;
  readonly message: string;
  readonly details?: Readonly<Record<string, string | number>>;
};

export type Route =
  | Refusal
  | { readonly path: 'archive'; readonly transport: Transport }
  /**
   * Raw bytes streamed through node into the target: at most `bound` bytes of disk (the last 512
   * bytes held back and dropped when they are a fixed VHD footer).
   */
  | { readonly path: 'streamed'; readonly transport: Transport; readonly bound?: number }
  /** A raw image in one zstd/xz layer: the decoder writes the file, at most `bound` bytes. */
  | { readonly path: 'decoder'; readonly decoder: Format; readonly transport: Transport; readonly bound?: number; readonly usable?: number }
  /** A plain raw image fetched over several connections straight into the target. */
  | { readonly path: 'ranged'; readonly fetch: RangedFetch }
  /** qemu-img reads the remote image at random through nbdkit and converts it into the target. */
  | { readonly path: 'nbd'; readonly qemuFormat: string }
  /** qemu-img reads a local file where it is; the checksum, if any, is verified by reading it first. */
  | { readonly path: 'in-place'; readonly qemuFormat: string; readonly verifyFirst: boolean }
  /** The image is copied to the scratch directory (at most `bound` bytes), then converted. */
  | { readonly path: 'scratch'; readonly qemuFormat: string; readonly fill: Transport | RangedFetch; readonly bound?: number }
  /** Conversion needs scratch space and none is mounted: reported, nothing written. */
  | { readonly path: 'scratch-required'; readonly qemuFormat: string };

export type RoutePath = Route['path'];

/**
 * What a scratch copy may grow to beyond the disk it holds: an image file carries metadata (qcow2
 * L1/L2 and refcount tables, vmdk grain tables: well under 1/32 of the disk at default cluster
 * sizes), never the disk twice.
 */
export function scratchBound(disk: number): number {
  return disk + Math.max(16 * MiB, Math.ceil(disk / 32));
}

/** Whether the engine should measure the request latency before routing (only 'auto' needs it). */
export function wantsLatency(facts: Pick<RouteFacts, 'ranged' | 'size' | 'tuning'> & { readonly canMeasure: boolean }): boolean {
  return facts.tuning.connections === 'auto' && facts.canMeasure && facts.ranged && facts.size !== undefined && facts.size >= facts.tuning.parallelMinBytes;
}

/**
 * Whether a plain raw image's last 512 bytes could change `first` (a fixed VHD's footer is not
 * disk): when it was refused as too large, or goes to nbd, where qemu-img would copy the footer.
 * The other paths find the footer themselves at the end of what they wrote.
 */
export function tailMatters(facts: RouteFacts, first: Route): boolean {
  const candidate =
    facts.tail === undefined && facts.format === Format.Raw && facts.layers.length === 0 && facts.size !== undefined &&
    facts.size >= 2 * VHD_FOOTER_BYTES && (facts.localFile || facts.ranged);
  return candidate && (first.path === 'nbd' || (first.path === 'refused' && first.code === ErrorCode.TargetTooSmall));
}

/** Connections for this import: the setting, or 'auto' resolved from the measured latency. */
export function connectionsFor(facts: Pick<RouteFacts, 'latencyMs' | 'chunkMs' | 'pairMs' | 'tuning'>): number {
  const { connections } = facts.tuning;
  return connections === 'auto' ? autoConnectionsFor(facts.latencyMs, facts.tuning, facts.chunkMs, facts.pairMs) : Math.max(1, connections);
}

/**
 * Whether qemu-img may read in place through nbdkit as far as the server's cost goes: nbdkit's curl
 * plugin sends one request at a time, so a server that is slow to answer each one makes every one
 * of them wait. The reads through the export decide where they were measured; before that, node's
 * chunk read rules out a server too slow to be worth trying. Unmeasured: yes.
 */
function cheapRequests(facts: Pick<RouteFacts, 'chunkMs' | 'reuseMs' | 'nbdReadMs' | 'tuning'>): boolean {
  const knobs = chunkTuning(facts.tuning);
  // A server that stalls every request after the first on a connection stalls nbdkit's.
  if (facts.reuseMs !== undefined && facts.reuseMs > knobs.reuseStallMs) return false;
  if (facts.nbdReadMs !== undefined) return facts.nbdReadMs <= knobs.nbdReadMaxMs;
  return facts.chunkMs === undefined || facts.chunkMs <= knobs.nbdMaxChunkMs;
}

/**
 * Pure: the cost per read that the reads through the export say, in milliseconds: their time, the
 * opening 4 KiB read included, over the `count` reads asked for. The opening read is nbdkit's
 * second request on its connection, where a server that writes its headers and body apart first
 * waits for the client's delayed ACK (the Python server: 41–43 ms, every time, where its 2 MiB
 * reads may come out fast four times running; nginx: 0.2–1.2 ms; bench/README.md, "Seventh pass").
 * Stopped early (fewer reads than `count`), it is already past the limit that stopped it.
 */
export function nbdReadCost(openMs: number, readsMs: readonly number[], count: number): number {
  return readsMs.reduce((a, b) => a + b, openMs) / Math.max(1, count);
}

/**
 * Whether to time a request on a reused connection (the tail read's, or `measureReuse`) before
 * starting nbdkit: the route says nbd on measured costs, and it is not timed yet. It costs a
 * millisecond or two where the server is fine, and saves nbdkit's and qemu-io's start (about
 * 0.14 s) where it stalls.
 */
export function wantsReuse(facts: Pick<RouteFacts, 'chunkMs' | 'reuseMs' | 'nbdReadMs' | 'tuning'>, chosen: Route): boolean {
  return chosen.path === 'nbd' && facts.chunkMs !== undefined && facts.reuseMs === undefined && facts.nbdReadMs === undefined;
}

/**
 * Whether to time reads through the nbdkit export before qemu-img reads from it: the route says
 * nbd, and says so on measured costs (under 'auto'; a set `--connections 1` is the user's choice).
 * A server can answer node's reads quickly and nbdkit's slowly (bench/README.md, "Fourth pass").
 */
export function wantsNbdReads(facts: Pick<RouteFacts, 'chunkMs' | 'nbdReadMs' | 'tuning'>, chosen: Route): boolean {
  return chosen.path === 'nbd' && facts.chunkMs !== undefined && facts.nbdReadMs === undefined && chunkTuning(facts.tuning).nbdProbeReads > 0;
}

function toDetail(n: bigint): number | string {
  return n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n.toString();
}

function describe(facts: Pick<RouteFacts, 'format' | 'layers'>): string {
  return [facts.format, ...facts.layers.slice().reverse()].join('+');
}

export function route(facts: RouteFacts): Route {
  const connections = connectionsFor(facts);
  const plain = facts.layers.length === 0;
  const big = facts.ranged && facts.size !== undefined && facts.size >= facts.tuning.parallelMinBytes;
  // A compressed image cannot be written at offsets as it arrives; its bytes still can be fetched
  // over several connections and handed on in order.
  const transport: Transport =
    !plain && connections > 1 && big ? { kind: 'ordered-ranges', connections, chunkBytes: facts.tuning.streamChunkBytes } : { kind: 'single' };
  const ranged = (length: number): RangedFetch => ({ connections, chunkBytes: facts.tuning.chunkBytes, length });
  const parallel = plain && connections > 1 && big;
  // nbdkit's curl plugin sends one request at a time: only for one connection, and a checksum
  // needs every byte read in order.
  const inPlaceRemote =
    facts.tuning.directHttp && facts.source === ImportSource.Http && facts.nbdReadable && facts.size !== undefined && plain && !facts.checksum && connections <= 1 && cheapRequests(facts);
  // The one stream of a plain image into a file: curl writes it where the engine can use curl;
  // for one zstd/xz layer curl feeds the decoder that writes the file.
  const curl = plain && !facts.checksum && facts.curl === true;
  const curlDecoder = facts.fileDecoder !== undefined && facts.layers.length === 1 && !facts.checksum && facts.curl === true && transport.kind === 'single';
  const CURL: Transport = { kind: 'curl' };

  if (facts.contentType === ContentType.Archive) {
    if (facts.format !== Format.Tar) {
      return { path: 'refused', code: ErrorCode.UnsupportedFormat, message: `content type archive needs a tar stream, got ${describe(facts)}` };
    }
    return { path: 'archive', transport };
  }

  if (facts.format === Format.Raw) {
    const footer = facts.tail === 'fixed-vhd';
    const disk = plain && facts.size !== undefined ? facts.size - (footer ? VHD_FOOTER_BYTES : 0) : undefined;
    // Where the last bytes cannot be read ahead, an image up to a footer too large still streams:
    // the streamed path finds a footer at the end, and its bound fails the image if there is none.
    const slack = facts.tail === undefined && !facts.localFile && !facts.ranged ? VHD_FOOTER_BYTES : 0;
    if (facts.usable !== undefined && disk !== undefined && disk - slack > facts.usable) {
      // Known too large before a byte is written.
      return {
        path: 'refused',
        code: ErrorCode.TargetTooSmall,
        message: `the raw image has ${disk} bytes; the usable target capacity is ${facts.usable}`,
        details: { size: disk, usable: facts.usable },
      };
    }
    // A big remote raw image is copied by qemu-img through nbdkit like a qcow2 is: measured 2 GiB
    // random raw in 4.4–4.8 s against 6.9–7.6 s streamed through node. Only whole sectors (the NBD
    // client rounds sizes), and only where the last bytes can be read first: a footer is left out.
    const size = facts.size ?? 0;
    if (inPlaceRemote && facts.ranged && !footer && facts.tuning.rawViaNbdMinBytes > 0 && size >= facts.tuning.rawViaNbdMinBytes && size % 512 === 0) {
      return { path: 'nbd', qemuFormat: 'raw' };
    }
    if (facts.fileDecoder !== undefined && facts.targetKind === TargetKind.File) {
      // The decoder cannot hold bytes back: it may write a fixed VHD's footer, dropped afterwards.
      const bound = facts.usable === undefined ? undefined : facts.usable + VHD_FOOTER_BYTES;
      return { path: 'decoder', decoder: facts.fileDecoder, transport: curlDecoder ? CURL : transport, ...(bound !== undefined ? { bound, usable: facts.usable as number } : {}) };
    }
    // Ranges copy every byte and a fixed VHD's footer is cut afterwards; a footer already known is
    // not fetched at all, unless the checksum (read back from what was written) needs it.
    if (parallel && facts.size !== undefined && disk !== undefined) return { path: 'ranged', fetch: ranged(footer && !facts.checksum ? disk : facts.size) };
    if (curl && facts.targetKind === TargetKind.File) return { path: 'streamed', transport: CURL, ...(facts.usable !== undefined ? { bound: facts.usable } : {}) };
    return { path: 'streamed', transport, ...(facts.usable !== undefined ? { bound: facts.usable } : {}) };
  }

  if (needsConversion(facts.format)) {
    const qemuFormat = qemuFormatName(facts.format);
    if (facts.usable !== undefined && facts.declaredSize !== undefined && facts.declaredSize > BigInt(facts.usable)) {
      // Before qemu-img (which calls sizes past 2^53 invalid) and before any scratch copy.
      return {
        path: 'refused',
        code: ErrorCode.TargetTooSmall,
        message: `virtual size ${facts.declaredSize} is larger than the usable target capacity ${facts.usable}; a larger volume is required`,
        details: { virtualSize: toDetail(facts.declaredSize), usable: facts.usable },
      };
    }
    if (facts.localFile && plain) return { path: 'in-place', qemuFormat, verifyFirst: facts.checksum };
    // Read in place only where qemu's driver opens nothing but the image: a qcow2 with its backing
    // switched off (qemu-img.ts). Through nbdkit each read is a new request, so a server could show
    // qemu-img other bytes than Ferry checked; a vmdk, vhdx, vdi or vhd is staged first, and qemu
    // then reads the very bytes that were checked.
    if (inPlaceRemote && facts.format === Format.Qcow2) return { path: 'nbd', qemuFormat };
    if (!facts.scratch) return { path: 'scratch-required', qemuFormat };
    const disk = facts.declaredSize !== undefined ? Math.min(Number(facts.declaredSize), facts.usable ?? Infinity) : facts.usable;
    const bound = disk === undefined ? undefined : scratchBound(disk);
    if (bound !== undefined && plain && facts.size !== undefined && facts.size > bound) {
      return {
        path: 'refused',
        code: ErrorCode.TargetTooSmall,
        message: `the ${facts.format} file has ${facts.size} bytes, more than a disk of ${disk} bytes needs`,
        details: { size: facts.size, limit: bound },
      };
    }
    const fill = parallel && facts.size !== undefined ? ranged(facts.size) : curl ? CURL : transport;
    return { path: 'scratch', qemuFormat, fill, ...(bound !== undefined ? { bound } : {}) };
  }

  if (facts.format === Format.Tar) {
    return { path: 'refused', code: ErrorCode.UnsupportedFormat, message: 'the source is a tar archive; import it with content type archive' };
  }
  return { path: 'refused', code: ErrorCode.UnsupportedFormat, message: `the image format is not supported (${describe(facts)})` };
}
