/**
 * nbdkit's curl plugin as a random-access view of an HTTP(S) image, so qemu-img reads a remote
 * qcow2 (vmdk, ...) in place and writes the target once, with no scratch copy. nbdkit is used
 * rather than qemu-img's own curl driver, which hangs in about a third of runs on Debian's QEMU 7.2
 * (measured: ../shared/reference/infra.md §1–2); the retry filter rides out dropped connections.
 *
 * Bounded time: nbdkit 1.32's curl plugin has a per-request `timeout=` but no low-speed limit, and
 * its retry filter retries a failing request for minutes. The log filter (outermost, so it sees
 * what qemu-img sees) writes every read and its result to a FIFO Ferry reads; a watchdog counts
 * the bytes nbdkit reads off the network (/proc/<pid>/io) while a read is outstanding, and kills
 * nbdkit when the minimum speed is not met over the window (qemu-img then fails at once). `stop()`
 * reports a read the source failed as SOURCE_UNAVAILABLE (retryable).
 *
 * Secrets: no password on nbdkit's argv or in its environment. The HTTP and proxy passwords go
 * over inherited pipes (`password=-FD`); the URL and proxy lose any user:password part; the
 * environment is an allowlist, so the pod's IMPORTER_SECRET_KEY is not inherited; extra headers
 * come from a 0600 file in nbdkit's private directory (`header-script`).
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, constants as fsConstants, openSync } from 'node:fs';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';
import { ErrorCode, FerryError } from '../src/errors.js';
import { runTool } from '../src/io/child-process.js';
import { ioCounter } from '../src/io/proc-io.js';
import { type Credentials, formatHeaderLine, type HttpHeader } from '../src/contract/import-spec.js';
import { type MinSpeed, SpeedVerdict, SpeedWindow, tooSlowError } from './min-speed.js';
import { DEFAULT_HTTP_TIMEOUTS, type HttpTimeouts, minSpeedOf, redactUrl } from './sources/http-source.js';

export interface NbdHttpOptions {
  readonly url: string;
  readonly credentials?: Credentials;
  /**
   * Extra headers (values are secrets): written to a 0600 file nbdkit's `header-script` prints,
   * never on its argv (`header=` would be); with them, redirects are not followed (libcurl would
   * send custom headers to any host a redirect names).
   */
  readonly extraHeaders?: readonly HttpHeader[];
  /** Extra CA certificates (PEM), trusted in addition to the system roots. */
  readonly caPems?: readonly string[];
  readonly insecureTls: boolean;
  readonly proxy?: string;
  /**
   * The import's HTTP timeouts: `idleMs` becomes curl's per-request timeout, and the minimum speed
   * is watched over NBD reads. Absent: the defaults.
   */
  readonly timeouts?: HttpTimeouts;
  /** curl's per-request timeout in seconds; overrides `timeouts.idleMs` (kept for older callers). */
  readonly timeoutSeconds?: number;
  readonly startTimeoutMs?: number;
}

export interface NbdExport {
  /** What qemu-img opens: nbd+unix:///?socket=<absolute path>. */
  readonly uri: string;
  /**
   * Stops nbdkit. Rejects with SOURCE_UNAVAILABLE when the source failed the reader (a read that
   * returned an error, a read still waiting when the reader gave up, too slow, nbdkit died): the
   * real cause of the reader's failure, which the caller's own error only echoes.
   */
  stop(): Promise<void>;
}

/** Variables a child may see: nothing from the pod's spec (IMPORTER_SECRET_KEY, proxies with passwords). */
const CHILD_ENV_ALLOWED = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'LC_CTYPE', 'TZ', 'TMPDIR', 'SSL_CERT_FILE', 'SSL_CERT_DIR'] as const;

/** Pure: the environment a spawned tool gets: an allowlist of the parent's. */
export function childEnvironment(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const out: NodeJS.ProcessEnv = {};
  for (const name of CHILD_ENV_ALLOWED) if (env[name] !== undefined) out[name] = env[name];
  return out;
}

/** Pure: a URL without its user:password part, and that part. */
export function splitUserinfo(url: string): { readonly url: string; readonly username?: string; readonly password?: string } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    return { url };
  }
  if (!u.username && !u.password) return { url };
  const username = decodeURIComponent(u.username);
  const password = decodeURIComponent(u.password);
  u.username = '';
  u.password = '';
  return { url: u.toString(), ...(username ? { username } : {}), ...(password ? { password } : {}) };
}

/** One line of nbdkit's log filter, as far as reads go. */
export type NbdLogEvent =
  | { readonly kind: 'read'; readonly key: string; readonly count: number }
  | { readonly kind: 'done'; readonly key: string; readonly ok: boolean };

/**
 * Pure: parses `connection=1 Read id=7 offset=0x50000 count=0x100000 ...` and
 * `connection=1 ...Read id=7 return=0` (or `return=-1 (Input/output error)`).
 */
export function parseNbdLogLine(line: string): NbdLogEvent | undefined {
  const start = /connection=(\d+) Read id=(\d+) offset=0x[0-9a-f]+ count=0x([0-9a-f]+)/i.exec(line);
  if (start) return { kind: 'read', key: `${start[1]}:${start[2]}`, count: Number.parseInt(start[3] ?? '0', 16) };
  const done = /connection=(\d+) \.\.\.Read id=(\d+) return=(-?\d+)/.exec(line);
  if (done) return { kind: 'done', key: `${done[1]}:${done[2]}`, ok: done[3] === '0' };
  return undefined;
}

/**
 * Pure: what the reader has asked for and got. `tick` judges the minimum speed over the time
 * reads were outstanding (qemu-img busy writing, with nothing asked, does not count).
 */
export class NbdReadLedger {
  private readonly pending = new Map<string, number>();
  private delivered = 0;
  private failed = 0;
  private readonly window: SpeedWindow;

  constructor(limit: MinSpeed) {
    this.window = new SpeedWindow(limit);
  }

  get outstanding(): number {
    return this.pending.size;
  }

  get failedReads(): number {
    return this.failed;
  }

  line(text: string): void {
    const event = parseNbdLogLine(text);
    if (event?.kind === 'read') this.pending.set(event.key, event.count);
    if (event?.kind === 'done') {
      const count = this.pending.get(event.key) ?? 0;
      this.pending.delete(event.key);
      if (event.ok) this.delivered += count;
      else this.failed += 1;
    }
  }

  /**
   * `elapsedMs` since the last tick: the verdict on the speed so far. `arrived` is what came off
   * the network meanwhile (nbdkit's read counter), so a read still in progress counts; without
   * it, the bytes of reads that completed.
   */
  tick(elapsedMs: number, arrived?: number): SpeedVerdict {
    const bytes = arrived ?? this.delivered;
    const waiting = this.pending.size > 0 || this.delivered > 0;
    this.delivered = 0;
    return this.window.add(waiting ? elapsedMs : 0, bytes);
  }
}

/** A FIFO nbdkit writes its log to, read as a stream; held open for writing until `release`. */
async function openLogFifo(path: string): Promise<{ readonly socket: Socket; release(): void }> {
  await runTool('mkfifo', ['-m', '600', path], { timeoutMs: 10_000, code: ErrorCode.Internal, what: 'cannot make the nbdkit log FIFO' });
  // Reader first (a non-blocking open of a FIFO for reading never waits), then a writer of our
  // own so the reader sees no end before nbdkit opens it, and sees the end once both are closed.
  const readFd = openSync(path, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
  const holdFd = openSync(path, fsConstants.O_WRONLY | fsConstants.O_NONBLOCK);
  const socket = new Socket({ fd: readFd, readable: true, writable: false });
  let held = true;
  return {
    socket,
    release: () => {
      if (held) closeSync(holdFd);
      held = false;
    },
  };
}

function nbdkitArgs(options: NbdHttpOptions, socket: string, logFile: string, timeoutSeconds: number, secrets: { user?: string; password: boolean; proxyUser?: string; proxyPassword: boolean }): string[] {
  // The log filter first: it sees what qemu-img asked for and what it got, after retries.
  const args = ['--exit-with-parent', '--foreground', '--readonly', '--unix', socket, '--filter=log', '--filter=retry', 'curl'];
  args.push(`url=${splitUserinfo(options.url).url}`, `logfile=${logFile}`);
  args.push('user-agent=ferry-importer', `timeout=${timeoutSeconds}`, 'retries=5', 'retry-delay=1');
  if (options.insecureTls) args.push('sslverify=false');
  if (options.proxy) args.push(`proxy=${splitUserinfo(options.proxy).url}`);
  if (secrets.user !== undefined) args.push(`user=${secrets.user}`);
  if (secrets.password) args.push('password=-3');
  if (secrets.proxyUser !== undefined) args.push(`proxy-user=${secrets.proxyUser}`);
  if (secrets.proxyPassword) args.push('proxy-password=-4');
  return args;
}

export async function serveHttpOverNbd(options: NbdHttpOptions): Promise<NbdExport> {
  const timeouts = options.timeouts ?? DEFAULT_HTTP_TIMEOUTS;
  const timeoutSeconds = options.timeoutSeconds ?? Math.max(1, Math.ceil(timeouts.idleMs / 1000));
  const limit = minSpeedOf(timeouts);
  const where = redactUrl(options.url);
  const dir = await mkdtemp(join(tmpdir(), 'ferry-nbd-'));
  const socket = join(dir, 'nbd.sock');
  const logFile = join(dir, 'log.fifo');
  const fromUrl = splitUserinfo(options.url);
  const fromProxy = options.proxy ? splitUserinfo(options.proxy) : { url: '' };
  // Explicit credentials win over any in the URL (a redirect target carries none).
  const user = options.credentials?.username ?? fromUrl.username;
  const password = options.credentials?.password ?? fromUrl.password;
  const extraArgs: string[] = [];
  if (options.caPems && options.caPems.length > 0) {
    // curl's CA file replaces the default bundle: give it the system roots and the extra ones.
    const bundle = join(dir, 'ca.pem');
    await writeFile(bundle, [...rootCertificates, ...options.caPems].join('\n'), { mode: 0o600 });
    extraArgs.push(`cainfo=${bundle}`);
  }
  if (options.extraHeaders && options.extraHeaders.length > 0) {
    const headerFile = join(dir, 'headers');
    await writeFile(headerFile, options.extraHeaders.map((h) => `${formatHeaderLine(h)}\n`).join(''), { mode: 0o600 });
    extraArgs.push(`header-script=exec cat -- ${shellQuote(headerFile)}`, 'followlocation=false');
  }
  const log = await openLogFifo(logFile);
  const args = [
    ...nbdkitArgs(options, socket, logFile, timeoutSeconds, {
      ...(user ? { user } : {}),
      password: password !== undefined,
      ...(fromProxy.username ? { proxyUser: fromProxy.username } : {}),
      proxyPassword: fromProxy.password !== undefined,
    }),
    ...extraArgs,
  ];
  const child: ChildProcess = spawn('nbdkit', args, { stdio: ['ignore', 'ignore', 'pipe', 'pipe', 'pipe'], env: childEnvironment(process.env) });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (d: string) => {
    stderr = (stderr + d).slice(-2048);
  });
  // The passwords travel over inherited pipes, never on the command line.
  (child.stdio[3] as NodeJS.WritableStream | null)?.end(password !== undefined ? `${password}\n` : '');
  (child.stdio[4] as NodeJS.WritableStream | null)?.end(fromProxy.password !== undefined ? `${fromProxy.password}\n` : '');

  const ledger = new NbdReadLedger(limit);
  let partial = '';
  log.socket.setEncoding('utf8');
  log.socket.on('data', (d: string) => {
    const lines = (partial + d).split('\n');
    partial = lines.pop() ?? '';
    for (const line of lines) ledger.line(line);
  });
  const logEnded = new Promise<void>((resolve) => log.socket.once('close', () => resolve()));

  let exited = false;
  let stopping = false;
  let failure: FerryError | undefined;
  log.socket.on('error', () => undefined);
  child.once('error', (err) => {
    exited = true;
    failure ??= new FerryError(ErrorCode.SourceUnavailable, `cannot run nbdkit: ${err.message}`, { cause: err, retryable: false });
  });
  child.once('exit', () => {
    exited = true;
    if (!stopping) failure ??= new FerryError(ErrorCode.SourceUnavailable, `nbdkit serving ${where} exited: ${stderr.trim() || 'no message'}`);
  });
  let last = performance.now();
  let lastRead = ioCounter(child.pid, 'rchar');
  const watchdog = setInterval(() => {
    const now = performance.now();
    const read = ioCounter(child.pid, 'rchar');
    const verdict = ledger.tick(now - last, read !== undefined && lastRead !== undefined ? Math.max(0, read - lastRead) : undefined);
    last = now;
    lastRead = read;
    if (verdict === SpeedVerdict.Slow && !exited) {
      failure ??= tooSlowError(where, limit);
      stopping = true;
      // The reader sees its connection close and fails at once, instead of waiting on retries.
      child.kill('SIGKILL');
    }
  }, Math.min(1000, Math.max(20, Math.round(limit.windowMs / 10))));
  watchdog.unref();

  const halt = async (): Promise<void> => {
    stopping = true;
    clearInterval(watchdog);
    if (!exited) {
      child.kill('SIGTERM');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          child.kill('SIGKILL');
        }, 2000);
        child.once('exit', () => {
          clearTimeout(timer);
          resolve();
        });
        if (exited) resolve();
      });
    }
    // Every line nbdkit wrote is read before judging: the FIFO ends once both writers are gone.
    log.release();
    await Promise.race([logEnded, new Promise((r) => setTimeout(r, 1000).unref())]);
    log.socket.destroy();
    if (partial) ledger.line(partial);
    partial = '';
    await rm(dir, { recursive: true, force: true });
  };
  const stop = async (): Promise<void> => {
    const waitingOnSource = !exited && failure === undefined;
    await halt();
    if (failure) throw failure;
    if (waitingOnSource && (ledger.failedReads > 0 || ledger.outstanding > 0)) {
      const what = ledger.failedReads > 0 ? `${ledger.failedReads} read(s) failed` : 'a read was still waiting on the source when the reader gave up';
      throw new FerryError(ErrorCode.SourceUnavailable, `nbdkit could not read ${where}: ${what} (${lastLine(stderr)})`, { retryable: true });
    }
  };

  const deadline = Date.now() + (options.startTimeoutMs ?? 15_000);
  // nbdkit binds its socket 10–30 ms after the spawn here; a 5 ms poll keeps the wait near that.
  for (;;) {
    if (await stat(socket).then(() => true, () => false)) break;
    if (exited || Date.now() > deadline) {
      await halt();
      throw new FerryError(ErrorCode.SourceUnavailable, `nbdkit could not serve the image: ${stderr.trim() || 'no socket'}`);
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  return { uri: `nbd+unix:///?socket=${socket}`, stop };
}


/** Pure: a word for /bin/sh, single-quoted. */
export function shellQuote(word: string): string {
  return `'${word.replace(/'/g, `'\\''`)}'`;
}

function lastLine(text: string): string {
  return text.split('\n').filter((l) => l.trim() !== '').at(-1) ?? 'no message from nbdkit';
}
