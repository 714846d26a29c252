/**
 * `ferry import`: the importer engine as a local command. Composition root: parses flags, builds
 * the spec, draws progress on stderr, and turns the outcome into an exit code.
 */

import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { parseChecksum } from '../src/checksum.js';
import { ErrorCode, FerryError, toFerryError } from '../src/errors.js';
import { ContentType, type ImportSpec, ImportSource, TargetKind, validateSpec } from '../src/contract/import-spec.js';
import { createLogger } from '../src/logging.js';
import { parseQuantity } from '../src/quantity.js';
import { DEFAULT_TUNING, parseConnections, runImport } from './engine.js';
import { DEFAULT_HTTP_TIMEOUTS, minSpeedFromFlags } from './sources/http-source.js';
import { Phase, Progress, RateMeter, throttled } from './progress.js';
import { renderProgressLine } from './progress-line.js';

export const IMPORT_USAGE = `Usage: ferry import --url <URL|path> --dest <file|block device|directory> [options]

Imports a disk image (raw, qcow2, vmdk, vdi, vhd, vhdx; optionally gz/xz/zst/bz2 compressed) into a
raw disk file or block device, or extracts a tar archive into a directory.

Options:
  --url <URL|path>         http(s) URL, s3://bucket/key or local file (required unless --blank);
                           docker://host[:port]/repo:tag (or @sha256:digest): a containerDisk image's disk/
  --dest <path>            raw disk file or block device to write; a directory for --content-type archive
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
  --retries <n>            attempts for network failures (default ${DEFAULT_TUNING.attempts})
  --connections <n|auto>   ranged connections for big downloads (default auto: one for a
                           server that answers within ${DEFAULT_TUNING.nearLatencyMs} ms, read in place by qemu-img through
                           nbdkit; ${DEFAULT_TUNING.autoConnections} for one farther away)
  --idle-timeout <sec>     fail a transfer that receives nothing for this long (default ${DEFAULT_TUNING.http.idleMs / 1000})
  --speed-limit <bytes>    with --speed-time: fail (or resume) a transfer slower than this many
                           bytes/s (default ${DEFAULT_HTTP_TIMEOUTS.minSpeedBytes}; 0: off)
  --speed-time <sec>       how long a transfer may stay below --speed-limit (default ${DEFAULT_HTTP_TIMEOUTS.minSpeedWindowMs / 1000})
  --metrics-port <port>    serve Prometheus metrics on this port while importing
  --log-level <level>      JSON logs on stderr at this level (default: warn)
  --quiet                  no progress output

Exit status: 0 on success; on failure one line "error <CODE>: <message>" on stderr and the code's
exit status (see README, "Error codes").`;

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

export function buildSpec(values: Record<string, string | boolean | undefined>, env: NodeJS.ProcessEnv = {}): ImportSpec {
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
  const source = blank
    ? ImportSource.Blank
    : /^https?:\/\//i.test(url ?? '')
      ? ImportSource.Http
      : /^s3:\/\//i.test(url ?? '')
        ? ImportSource.S3
        : /^docker:\/\//i.test(url ?? '')
          ? ImportSource.Registry
          : ImportSource.File;
  const username = str('username');
  const password = str('password');
  if ((username === undefined) !== (password === undefined)) {
    throw new FerryError(ErrorCode.InvalidSpec, '--username and --password go together');
  }
  const size = str('size');
  const checksum = str('checksum');
  const ca = str('ca-file');
  return validateSpec({
    source,
    endpoint: blank ? '' : (url ?? ''),
    contentType,
    target: { kind: contentType === ContentType.Archive ? TargetKind.Directory : TargetKind.File, path: resolve(dest) },
    ...(username !== undefined && password !== undefined ? { credentials: { username, password } } : {}),
    ...(ca !== undefined ? { caPath: resolve(ca) } : {}),
    insecureTls: values.insecure === true,
    ...(checksum !== undefined ? { checksum: parseChecksum(checksum) } : {}),
    ...(size !== undefined ? { capacity: parseQuantity(size) } : {}),
    // --size is the disk's capacity: a local file has no filesystem overhead to leave.
    filesystemOverhead: 0,
    preallocation: values.preallocate === true,
    scratchDir: resolve(str('scratch-dir') ?? tmpdir()),
    proxy: {},
    ...s3Fields(str, source === ImportSource.S3, env),
  });
}

function positiveInt(name: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0) throw new FerryError(ErrorCode.InvalidSpec, `${name} must be a positive integer, got "${text}"`);
  return n;
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
  try {
    const spec = buildSpec(values, io.env);
    const retries = positiveInt('--retries', values.retries as string | undefined, DEFAULT_TUNING.attempts);
    const connections = values.connections === undefined ? DEFAULT_TUNING.connections : parseConnections(String(values.connections), '--connections');
    const idle = positiveInt('--idle-timeout', values['idle-timeout'] as string | undefined, DEFAULT_TUNING.http.idleMs / 1000);
    const logger = createLogger({ level: (values['log-level'] as string | undefined) ?? 'warn', destination: process.stderr as never });
    const progress = new Progress();
    if (!values.quiet) progress.subscribe(progressPrinter(io.stderr));
    const metricsPort = values['metrics-port'] as string | undefined;
    if (metricsPort !== undefined) {
      // prom-client only when asked for: it is a tenth of a second of start-up.
      const { createImporterMetrics, serveMetrics } = await import('./metrics.js');
      const metrics = createImporterMetrics(spec.ownerUid ?? 'local');
      progress.subscribe(metrics.listener);
      await serveMetrics(metrics.registry, positiveInt('--metrics-port', metricsPort, 0), '127.0.0.1');
    }
    const result = await runImport(spec, {
      logger,
      progress,
      tuning: { ...DEFAULT_TUNING, attempts: retries, directHttp: values['via-scratch'] !== true, connections, http: { ...DEFAULT_TUNING.http, idleMs: idle * 1000, ...minSpeedFromFlags(values['speed-limit'], values['speed-time']) } },
      sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
    });
    io.stderr.write(`${result.message}: ${spec.target.path}${result.diskSize !== undefined ? ` (${result.diskSize} bytes, from ${result.sourceFormat})` : ''}\n`);
    return 0;
  } catch (err) {
    const error = toFerryError(err);
    io.stderr.write(`error ${error.code}: ${error.message.replace(/\s*\n\s*/g, ' ')}\n`);
    return error.exitCode;
  }
}

/** A redrawn bar on a terminal; on a pipe, a line every two seconds and at each phase change. */
function progressPrinter(out: NodeJS.WriteStream): (s: import('./progress.js').ProgressSnapshot) => void {
  const meter = new RateMeter();
  const tty = out.isTTY === true;
  const draw = (s: import('./progress.js').ProgressSnapshot): void => {
    const { rate, etaSeconds } = meter.sample(Date.now(), s);
    const line = renderProgressLine(s, rate, etaSeconds, tty ? 24 : 0);
    if (tty) out.write(`\r\x1b[2K${line}${s.phase === Phase.Complete ? '\n' : ''}`);
    else out.write(`${line}\n`);
  };
  return throttled(draw, tty ? 200 : 2000, Date.now);
}
