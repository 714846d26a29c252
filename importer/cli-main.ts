/**
 * `ferry import`: the importer engine as a local command. Composition root: parses flags, builds
 * the spec, draws progress on stderr, and turns the outcome into an exit code.
 */

import { lstat, unlink } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { parseChecksum } from '../src/checksum.js';
import { ErrorCode, FerryError, toFerryError } from '../src/errors.js';
import { ContentType, type ImportSpec, ImportSource, TargetKind, validateSpec } from '../src/contract/import-spec.js';
import { createLogger } from '../src/logging.js';
import { parseQuantity } from '../src/quantity.js';
import type { ImportSuccess } from '../src/contract/termination.js';
import { DEFAULT_TUNING, runImport } from './engine.js';
import { curlInstalled } from './sources/curl-fetch.js';
import { memorySyncEveryBytesFor } from './engine/tuning.js';
import { cgroupMemoryLimit } from '../src/io/memory-limit.js';
import { DEFAULT_HTTP_TIMEOUTS, minSpeedFromFlags } from './sources/http-source.js';
import { Phase, Progress, RateMeter, throttled } from './progress.js';
import { renderProgressLine } from './progress-line.js';
import { localPathOf } from './sources/file-source.js';
import { destTargetKind, partialPathOf, type PathFacts, pathFacts } from './target.js';

/**
 * Bounds of the numeric flags, each a range beyond which a value is a typo rather than a choice:
 * - connections 1..64: gains stop at 2–8 even across 100 ms of round trip (bench/README.md) and
 *   a compressed body holds one 4 MiB chunk per connection in memory (64: 256 MiB), so more is a
 *   flood of sockets for nothing;
 * - retries 1..100: backoff is capped at 30 s, so 100 attempts already keep retrying ~50 min;
 * - idle timeout 1..3600 s: an hour without a byte is a dead connection, and larger values near
 *   2^31 ms overflow Node's timers, which then fire at once;
 * - metrics port 1..65535: TCP's range (0, "any free port", would be unknowable to a scraper).
 */
export const LIMITS = Object.freeze({
  connections: { min: 1, max: 64 },
  retries: { min: 1, max: 100 },
  idleSeconds: { min: 1, max: 3600 },
  port: { min: 1, max: 65535 },
});

/** pino's levels, the only values --log-level can take. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

/**
 * How long the first SIGINT/SIGTERM waits for the engine to stop its children and remove its
 * files: nbdkit is given 2 s before SIGKILL, qemu-img stops at once on SIGTERM; and well under the
 * 10 s `docker stop` and 30 s pod grace periods that end in SIGKILL.
 */
export const INTERRUPT_GRACE_MS = 5000;

export const IMPORT_USAGE = `Usage: ferry import --url <URL|path> --dest <file|block device|directory> [options]

Imports a disk image (raw, qcow2, vmdk, vdi, vhd, vhdx; optionally gz/xz/zst/bz2 compressed) into a
raw disk file or block device, or extracts a tar archive into a directory.

Options:
  --url <URL|path>         http(s) URL, s3://bucket/key, file:///path or local file (required unless --blank);
                           docker://host[:port]/repo:tag (or @sha256:digest): a containerDisk image's disk/
  --dest <path>            raw disk file (written as <path>.ferry-partial, renamed when complete) or
                           block device (written in place); a directory for --content-type archive;
                           character devices, FIFOs and sockets are refused
  --size <bytes|Ki|Mi|Gi>  target capacity (default: the image's virtual size)
  --blank                  create an empty raw disk of --size instead of importing
  --checksum <algo>:<hex>  verify the source bytes (md5, sha1, sha256, sha512)
  --content-type <type>    kubevirt (disk image, default) or archive (tar)
  --ca-file <pem|dir>      extra CA certificates for https
  --insecure               skip TLS verification (explicit opt-in); a docker:// registry may then be plain HTTP
  --username U --password P  basic auth for http(s); registry credentials for docker://
  --access-key-id ID --secret-access-key KEY
                           S3 keys (default: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY; none: anonymous)
  --s3-endpoint <URL>      S3-compatible store for s3:// URLs, http(s)://host:port (default: AWS)
  --region <region>        S3 region to sign for (default us-east-1)
  --scratch-dir <dir>      where compressed or remote non-raw images are staged (default: system temp)
  --preallocate            allocate the whole disk after writing
  --via-scratch            stage remote qcow2/vmdk/... in the scratch directory instead of reading
                           them in place over HTTP ranges (nbdkit)
  --retries <n>            attempts for network failures, ${LIMITS.retries.min}..${LIMITS.retries.max} (default ${DEFAULT_TUNING.attempts})
  --connections <n|auto>   ranged connections for big downloads, ${LIMITS.connections.min}..${LIMITS.connections.max} (default auto: one for a
                           server that answers within ${DEFAULT_TUNING.nearLatencyMs} ms, read in place by qemu-img through
                           nbdkit when reads through it are cheap; ${DEFAULT_TUNING.autoConnections} for one farther away)
  --idle-timeout <sec>     fail a transfer that receives nothing for this long, ${LIMITS.idleSeconds.min}..${LIMITS.idleSeconds.max} (default ${DEFAULT_TUNING.http.idleMs / 1000})
  --speed-limit <bytes>    with --speed-time: fail (or resume) a transfer slower than this many
                           bytes/s (default ${DEFAULT_HTTP_TIMEOUTS.minSpeedBytes}; 0: off)
  --speed-time <sec>       how long a transfer may stay below --speed-limit (default ${DEFAULT_HTTP_TIMEOUTS.minSpeedWindowMs / 1000})
  --metrics-port <port>    serve Prometheus metrics on this port (127.0.0.1) while importing
  --log-level <level>      JSON logs on stderr at this level: ${LOG_LEVELS.join(', ')} (default: warn)
  --quiet                  no progress output

Exit status: 0 on success; on failure one line "error <CODE>: <message>" on stderr and the code's
exit status (see README, "Error codes"). SIGINT (Ctrl-C) or SIGTERM stops the import, removes what
it wrote and exits with INTERRUPTED's status (33); a second signal exits at once.`;

interface CliIo {
  readonly argv: readonly string[];
  readonly stderr: NodeJS.WriteStream;
  readonly env: NodeJS.ProcessEnv;
}

/** The s3 parts of the spec: endpoint, region and keys (flags first, then the AWS variables). */
function s3Fields(str: (k: string) => string | undefined, s3: boolean, env: NodeJS.ProcessEnv): Partial<ImportSpec> {
  const flags = ['s3-endpoint', 'region', 'access-key-id', 'secret-access-key'].filter((k) => str(k) !== undefined);
  if (!s3) {
    if (flags.length > 0) throw new FerryError(ErrorCode.InvalidSpec, `--${flags[0]} applies to s3://bucket/key URLs only`);
    return {};
  }
  if (str('username') !== undefined || str('password') !== undefined) {
    throw new FerryError(ErrorCode.InvalidSpec, 'an s3:// URL takes --access-key-id and --secret-access-key, not --username and --password');
  }
  const keyId = str('access-key-id') ?? env.AWS_ACCESS_KEY_ID;
  const secret = str('secret-access-key') ?? env.AWS_SECRET_ACCESS_KEY;
  if ((keyId === undefined) !== (secret === undefined)) {
    throw new FerryError(ErrorCode.InvalidSpec, '--access-key-id and --secret-access-key go together');
  }
  const endpoint = str('s3-endpoint');
  const region = str('region') ?? env.AWS_REGION;
  return {
    ...(keyId !== undefined && secret !== undefined ? { credentials: { username: keyId, password: secret } } : {}),
    ...(endpoint !== undefined ? { s3Endpoint: endpoint } : {}),
    ...(region !== undefined ? { s3Region: region } : {}),
  };
}

const URL_FORMS = '--url takes http(s)://host/path, s3://bucket/key, docker://host[:port]/repo[:tag|@sha256:digest], file:///path or a local path';
const SCHEMES: Readonly<Record<string, ImportSource>> = { http: ImportSource.Http, https: ImportSource.Http, s3: ImportSource.S3, docker: ImportSource.Registry, file: ImportSource.File };

/**
 * Pure: the source a `--url` names. Anything shaped `scheme://` is a URL and its scheme must be one
 * Ferry reads (an `ftp://` URL is refused, not looked for as a file named "ftp:"); a known scheme
 * without its `//` (`https:/host`) is a typo, refused too. http(s) URLs must parse and name a host
 * and a port in 1..65535; s3:// and docker:// are checked by their own parsers when opened.
 */
export function sourceOf(url: string): { readonly source: ImportSource; readonly endpoint: string } {
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase();
  const slashes = /^[a-z][a-z0-9+.-]*:\/\//i.test(url);
  const fail = (why: string): never => {
    throw new FerryError(ErrorCode.InvalidSpec, `${why}; ${URL_FORMS}`, { details: { url } });
  };
  if (scheme === undefined || (!slashes && SCHEMES[scheme] === undefined)) return { source: ImportSource.File, endpoint: url };
  const source = SCHEMES[scheme];
  if (source === undefined) return fail(`--url scheme "${scheme}:" is not supported`);
  if (!slashes) return fail(`--url "${url}" lacks the "//" after "${scheme}:" (a local file of that name: write ./${url})`);
  if (source === ImportSource.File) return { source, endpoint: localPathOf(url) };
  if (source === ImportSource.Http) {
    // WHATWG parsing: no host, a bad IPv6 literal, spaces or a port above 65535 all throw.
    let parsed: URL;
    try {
      parsed = new URL(url);
    } catch {
      return fail(`--url "${url}" is not a valid URL`);
    }
    if (parsed.port === '0') fail(`--url "${url}": port 0 is not a port (1..65535)`);
  }
  return { source, endpoint: url };
}

/**
 * Pure: an integer flag within its bounds (or the fallback when absent); INVALID_SPEC naming the
 * range, after `alternative` ('"auto" or ') when the flag takes a word too.
 */
export function boundedInt(name: string, text: string | undefined, limits: { readonly min: number; readonly max: number }, fallback: number, alternative = ''): number {
  if (text === undefined) return fallback;
  // Decimal digits only: Number() would also take "0x10", "1e3" and "".
  const n = /^\s*\d+\s*$/.test(text) ? Number(text) : Number.NaN;
  if (!Number.isSafeInteger(n) || n < limits.min || n > limits.max) {
    throw new FerryError(ErrorCode.InvalidSpec, `${name} must be ${alternative}an integer in ${limits.min}..${limits.max}, got "${text}"`);
  }
  return n;
}

/** Pure: a positive integer flag without an upper bound of its own. */
export function positiveInt(name: string, text: string | undefined, fallback: number): number {
  return boundedInt(name, text, { min: 1, max: Number.MAX_SAFE_INTEGER }, fallback);
}

/** Pure: --connections, "auto" or an integer in LIMITS.connections. */
export function connectionsFlag(text: string | undefined): number | 'auto' {
  if (text === undefined) return DEFAULT_TUNING.connections;
  if (text.trim() === 'auto') return 'auto';
  return boundedInt('--connections', text, LIMITS.connections, 1, '"auto" or ');
}

function logLevelFlag(text: string | undefined): string {
  if (text === undefined) return 'warn';
  if (!(LOG_LEVELS as readonly string[]).includes(text)) throw new FerryError(ErrorCode.InvalidSpec, `--log-level must be one of ${LOG_LEVELS.join(', ')}, got "${text}"`);
  return text;
}

const NOTHING_THERE: PathFacts = Object.freeze({ self: 'missing', resolved: 'missing' });

/**
 * Pure: the spec the flags describe. `destNow` is what is at --dest now (pathFacts): a block
 * device is written in place, a character device, FIFO or socket refused (destTargetKind).
 */
export function buildSpec(values: Record<string, string | boolean | undefined>, env: NodeJS.ProcessEnv = {}, destNow: PathFacts = NOTHING_THERE): ImportSpec {
  const str = (k: string): string | undefined => (typeof values[k] === 'string' ? (values[k] as string) : undefined);
  const dest = str('dest');
  if (dest === undefined) throw new FerryError(ErrorCode.InvalidSpec, '--dest is required');
  const blank = values.blank === true;
  const url = str('url');
  if (!blank && url === undefined) throw new FerryError(ErrorCode.InvalidSpec, '--url is required (or --blank with --size)');
  const contentType = (str('content-type') ?? ContentType.Kubevirt) as ContentType;
  if (!Object.values(ContentType).includes(contentType)) {
    throw new FerryError(ErrorCode.InvalidSpec, `--content-type must be kubevirt or archive, got "${contentType}"`);
  }
  const { source, endpoint } = blank ? { source: ImportSource.Blank, endpoint: '' } : sourceOf(url ?? '');
  const kind = destTargetKind(contentType, destNow, resolve(dest));
  const username = str('username');
  const password = str('password');
  if ((username === undefined) !== (password === undefined)) {
    throw new FerryError(ErrorCode.InvalidSpec, '--username and --password go together');
  }
  const size = str('size');
  const capacity = size !== undefined ? parseQuantity(size) : undefined;
  if (capacity === 0) throw new FerryError(ErrorCode.InvalidSpec, '--size must be more than 0 bytes (e.g. 1048576, 512Mi, 10Gi)');
  const checksum = str('checksum');
  const ca = str('ca-file');
  return validateSpec({
    source,
    endpoint,
    contentType,
    target: { kind, path: resolve(dest) },
    ...(username !== undefined && password !== undefined ? { credentials: { username, password } } : {}),
    ...(ca !== undefined ? { caPath: resolve(ca) } : {}),
    insecureTls: values.insecure === true,
    ...(checksum !== undefined ? { checksum: parseChecksum(checksum) } : {}),
    ...(capacity !== undefined ? { capacity } : {}),
    // --size is the disk's capacity: a local file has no filesystem overhead to leave.
    filesystemOverhead: 0,
    preallocation: values.preallocate === true,
    scratchDir: resolve(str('scratch-dir') ?? tmpdir()),
    proxy: {},
    ...s3Fields(str, source === ImportSource.S3, env),
  });
}

export async function importCommand(io: CliIo): Promise<number> {
  // The AWS SDK warns on stderr that its 2027 releases will need Node 22: not for our users, and
  // stderr carries the one "error CODE: message" line. The SDK reads this variable itself.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: [...io.argv],
      options: {
        url: { type: 'string' },
        dest: { type: 'string' },
        size: { type: 'string' },
        blank: { type: 'boolean' },
        checksum: { type: 'string' },
        'content-type': { type: 'string' },
        'ca-file': { type: 'string' },
        insecure: { type: 'boolean' },
        username: { type: 'string' },
        password: { type: 'string' },
        'access-key-id': { type: 'string' },
        'secret-access-key': { type: 'string' },
        's3-endpoint': { type: 'string' },
        region: { type: 'string' },
        'scratch-dir': { type: 'string' },
        preallocate: { type: 'boolean' },
        'via-scratch': { type: 'boolean' },
        retries: { type: 'string' },
        connections: { type: 'string' },
        'idle-timeout': { type: 'string' },
        'speed-limit': { type: 'string' },
        'speed-time': { type: 'string' },
        'metrics-port': { type: 'string' },
        'log-level': { type: 'string' },
        quiet: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    io.stderr.write(`error ${ErrorCode.InvalidSpec}: ${(err as Error).message.split('\n')[0]} (see 'ferry import --help')\n`);
    return 2;
  }
  if (values.help) {
    io.stderr.write(`${IMPORT_USAGE}\n`);
    return 0;
  }
  const interrupt = interruptible(INTERRUPT_GRACE_MS);
  let spec: ImportSpec | undefined;
  let printer: ProgressPrinter | undefined;
  const fail = (error: FerryError): number => {
    printer?.close();
    io.stderr.write(`error ${error.code}: ${error.message.replace(/\s*\n\s*/g, ' ')}\n`);
    return error.exitCode;
  };
  // No progress lines once stopping: the next line on stderr is the outcome.
  interrupt.signal.addEventListener('abort', () => printer?.close(), { once: true });
  try {
    const work = async (): Promise<ImportSuccess> => {
      const dest = typeof values.dest === 'string' ? resolve(values.dest) : undefined;
      spec = buildSpec(values, io.env, dest !== undefined ? await pathFacts(dest) : undefined);
      const retries = boundedInt('--retries', values.retries as string | undefined, LIMITS.retries, DEFAULT_TUNING.attempts);
      const connections = connectionsFlag(values.connections as string | undefined);
      const idle = boundedInt('--idle-timeout', values['idle-timeout'] as string | undefined, LIMITS.idleSeconds, DEFAULT_TUNING.http.idleMs / 1000);
      const speed = minSpeedFromFlags(values['speed-limit'], values['speed-time']);
      const level = logLevelFlag(values['log-level'] as string | undefined);
      const metricsPort = values['metrics-port'] as string | undefined;
      const port = metricsPort !== undefined ? boundedInt('--metrics-port', metricsPort, LIMITS.port, 0) : undefined;
      const logger = createLogger({ level, destination: process.stderr as never });
      const progress = new Progress();
      if (!values.quiet) {
        printer = progressPrinter(io.stderr);
        progress.subscribe(printer.listener);
      }
      if (port !== undefined) {
        // prom-client only when asked for: it is a tenth of a second of start-up.
        const { createImporterMetrics, serveMetrics } = await import('./metrics.js');
        const metrics = createImporterMetrics(spec.ownerUid ?? 'local');
        progress.subscribe(metrics.listener);
        await serveMetrics(metrics.registry, port, '127.0.0.1');
      }
      if (interrupt.signal.aborted) throw interrupt.signal.reason;
      return runImport(spec, {
        logger,
        progress,
        tuning: {
          ...DEFAULT_TUNING,
          attempts: retries,
          directHttp: values['via-scratch'] !== true,
          connections,
          // The one stream is written by curl where it is installed, else by node.
          curlMinBytes: curlInstalled(io.env.PATH) ? DEFAULT_TUNING.curlMinBytes : 0,
          // Flushes that only bound memory, sized to the memory limit this runs under; none outside one.
          memorySyncEveryBytes: memorySyncEveryBytesFor(cgroupMemoryLimit()),
          http: { ...DEFAULT_TUNING.http, idleMs: idle * 1000, ...speed },
        },
        sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
        signal: interrupt.signal,
      });
    };
    // The import, or (after a first signal) the end of the grace period or a second signal.
    const outcome = await Promise.race([
      work().then(
        (result) => ({ result }),
        (error: unknown) => ({ error }),
      ),
      interrupt.stopped.then((how) => ({ stopped: how })),
    ]);
    if ('result' in outcome) {
      // Finished, even if a signal came too late to stop it: the disk is complete and in place.
      printer?.close();
      const { result } = outcome;
      io.stderr.write(`${result.message}: ${spec?.target.path}${result.diskSize !== undefined ? ` (${result.diskSize} bytes, from ${result.sourceFormat})` : ''}\n`);
      return 0;
    }
    if (!interrupt.signal.aborted) return fail(toFerryError('error' in outcome ? outcome.error : undefined));
    // Stopped: whatever the engine managed, the partial disk goes (never a link's target).
    if (spec !== undefined) await removePartial(spec);
    const reason = interrupt.signal.reason as FerryError;
    const late = 'stopped' in outcome && outcome.stopped === 'grace' ? ` (the import did not stop within ${INTERRUPT_GRACE_MS / 1000} s)` : '';
    return fail(new FerryError(ErrorCode.Interrupted, `${reason.message}${late}`));
  } finally {
    interrupt.dispose();
  }
}

interface Interrupt {
  /** Aborted, with an INTERRUPTED FerryError as its reason, at the first SIGINT or SIGTERM. */
  readonly signal: AbortSignal;
  /** Settles `graceMs` after the first signal ('grace') or at a second one ('again'). */
  readonly stopped: Promise<'grace' | 'again'>;
  dispose(): void;
}

/**
 * The first SIGINT/SIGTERM asks the engine to stop (it stops its children and removes its files,
 * then rejects); the CLI waits a bounded time for that. A second signal does not wait.
 */
function interruptible(graceMs: number): Interrupt {
  const controller = new AbortController();
  let settle: (how: 'grace' | 'again') => void = () => undefined;
  const stopped = new Promise<'grace' | 'again'>((resolve) => (settle = resolve));
  let timer: NodeJS.Timeout | undefined;
  const onSignal = (signal: NodeJS.Signals): void => {
    if (controller.signal.aborted) {
      settle('again');
      return;
    }
    controller.abort(new FerryError(ErrorCode.Interrupted, `ferry import was stopped by ${signal} before it finished`));
    timer = setTimeout(() => settle('grace'), graceMs);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  return {
    signal: controller.signal,
    stopped,
    dispose: () => {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      if (timer) clearTimeout(timer);
    },
  };
}

/** Removes `<dest>.ferry-partial` if it is a regular file (lstat: a link there is left alone). */
async function removePartial(spec: ImportSpec): Promise<void> {
  if (spec.target.kind !== TargetKind.File) return;
  const partial = partialPathOf(spec.target.path);
  const info = await lstat(partial).catch(() => undefined);
  if (info?.isFile()) await unlink(partial).catch(() => undefined);
}

interface ProgressPrinter {
  readonly listener: (s: import('./progress.js').ProgressSnapshot) => void;
  /** Stops drawing and, on a terminal, clears the bar so the last line is the outcome. */
  close(): void;
}

/** A redrawn bar on a terminal; on a pipe, a line every two seconds and at each phase change. */
function progressPrinter(out: NodeJS.WriteStream): ProgressPrinter {
  const meter = new RateMeter();
  const tty = out.isTTY === true;
  let closed = false;
  // A bar drawn on the terminal and not ended by a newline.
  let openLine = false;
  const draw = (s: import('./progress.js').ProgressSnapshot): void => {
    if (closed) return;
    const { rate, etaSeconds } = meter.sample(Date.now(), s);
    const line = renderProgressLine(s, rate, etaSeconds, tty ? 24 : 0);
    if (tty) {
      out.write(`\r\x1b[2K${line}${s.phase === Phase.Complete ? '\n' : ''}`);
      openLine = s.phase !== Phase.Complete;
    } else {
      out.write(`${line}\n`);
    }
  };
  return {
    listener: throttled(draw, tty ? 200 : 2000, Date.now),
    close: () => {
      closed = true;
      if (openLine) out.write('\r\x1b[2K');
      openLine = false;
    },
  };
}
