/**
 * The fast path for a raw image inside one zstd or xz layer: the decoder writes the target file
 * itself (sparsely: zstd `--sparse`, xz by default when its output is a regular file), so the
 * decompressed bytes never pass through node. Measured on a 512 MiB OS-like payload (zstd -3):
 * 1.2–1.4 s against 2.0 s through node and 1.0–1.1 s for `curl | zstd -dc > f`.
 */

import { spawn } from 'node:child_process';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ErrorCode, FerryError } from '../src/errors.js';
import { DEFAULT_SYNC_EVERY_BYTES } from './raw-writer.js';
import { Format } from './sniff.js';
import type { ByteStream } from './streams.js';
import { createExclusive } from './target.js';

/** How much decoded input to hand a probe decoder to learn the inner format. */
export const PROBE_INPUT_BYTES = 256 * 1024;

/** The decoder program for `format` and its arguments (output on stdout). */
export function decoder(format: Format, threads: 'one' | 'all'): [string, string[]] {
  if (format === Format.Zstd) return ['zstd', ['-dc', '-q', '--sparse']];
  if (format === Format.Xz) return ['xz', ['-dc', threads === 'one' ? '-T1' : '-T0']];
  throw new FerryError(ErrorCode.Internal, `no file decoder for ${format}`);
}

export function decodesToFile(format: Format): boolean {
  return format === Format.Zstd || format === Format.Xz;
}

/**
 * Decodes the start of a compressed stream to learn what is inside: at most `want` bytes of output,
 * or undefined if the decoder produced nothing (corrupt data; the real decode will say why).
 */
export async function probeDecoded(format: Format, compressedHead: Buffer, want: number, timeoutMs = 10_000): Promise<Buffer | undefined> {
  const [command, args] = decoder(format, 'one');
  const child = spawn(command, args.filter((a) => a !== '--sparse'), { stdio: ['pipe', 'pipe', 'ignore'] });
  const chunks: Buffer[] = [];
  let length = 0;
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer);
      child.kill('SIGKILL');
      resolve(length > 0 ? Buffer.concat(chunks).subarray(0, want) : undefined);
    };
    const timer = setTimeout(done, timeoutMs);
    child.on('error', done);
    child.stdin.on('error', () => undefined); // the decoder may stop reading once it has enough
    child.stdout.on('data', (d: Buffer) => {
      chunks.push(d);
      length += d.length;
      if (length >= want) done();
    });
    child.stdout.on('end', done);
    child.stdin.end(compressedHead);
  });
}

export interface DecodeOptions {
  /**
   * Most bytes the decoder may write: enforced by the kernel (RLIMIT_FSIZE through prlimit), so
   * the file never grows past it; more output fails TARGET_TOO_SMALL.
   */
  readonly limit?: number;
  /** Kills the decoder. */
  readonly signal?: AbortSignal;
  readonly syncEveryBytes?: number;
}

/** How a child's exit is read once it has written the file (code, signal, the tail of its stderr). */
export interface ChildExit {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  readonly stderr: string;
}

export interface ChildToFileOptions {
  /** Most bytes the child may write (RLIMIT_FSIZE through prlimit): the file never grows past it. */
  readonly limit?: number;
  /** Kills the child. */
  readonly signal?: AbortSignal;
  readonly syncEveryBytes?: number;
  /**
   * The child's stdin: a stream fed to it, bytes written once (a config), or a descriptor it
   * reads itself (the read end of a pipe another child writes).
   */
  readonly input: ByteStream | Buffer | { readonly fd: number };
  /** Told the file's size as it grows (every 100 ms). */
  readonly onSize?: (bytes: number) => void;
  /** Extra environment for the child: none but this when given. */
  readonly env?: NodeJS.ProcessEnv;
  /** The error for an exit that is not success (undefined: success). Called after the child closed. */
  readonly judge: (exit: ChildExit) => FerryError | undefined;
}

/**
 * Runs `command` with its stdout on a new file at `path` (created exclusive: never through a link),
 * so the bytes it writes never pass through node. Dirty pages are flushed every `syncEveryBytes`
 * written (64 MiB if unset, never if 0), as the streamed writer does, so a cgroup memory limit is
 * not filled with page cache. Returns the file's size; throws `judge`'s error, or
 * TARGET_TOO_SMALL when the limit stopped the file.
 */
export async function childToFile(command: string, args: readonly string[], path: string, options: ChildToFileOptions): Promise<number> {
  const { limit, signal } = options;
  const syncEveryBytes = options.syncEveryBytes ?? DEFAULT_SYNC_EVERY_BYTES;
  // prlimit sets the limit on itself and execs the program: the same process, so an abort's kill reaches it.
  const [program, argv] = limit === undefined ? [command, args] : ['prlimit', [`--fsize=${limit}`, '--', command, ...args]];
  const out = await createExclusive(path);
  let stderr = '';
  let synced = 0;
  let flushing: Promise<void> | undefined;
  const flusher = setInterval(() => {
    if (flushing) return;
    flushing = out
      .stat()
      .then(async (st) => {
        options.onSize?.(st.size);
        if (syncEveryBytes > 0 && st.size - synced >= syncEveryBytes) {
          await out.datasync();
          synced = st.size;
        }
      })
      .catch(() => undefined)
      .finally(() => {
        flushing = undefined;
      });
  }, 100);
  try {
    const { input } = options;
    const fed = isDescriptor(input);
    const child = spawn(program, argv, {
      stdio: [fed ? input.fd : 'pipe', out.fd, 'pipe'],
      ...(options.env ? { env: options.env } : {}),
      ...(signal ? { signal, killSignal: 'SIGKILL' as const } : {}),
    });
    const { stdin, stderr: errors } = child;
    if ((!fed && !stdin) || !errors) throw new FerryError(ErrorCode.Internal, `cannot talk to ${command}`);
    errors.setEncoding('utf8');
    errors.on('data', (d: string) => {
      stderr = (stderr + d).slice(-2048);
    });
    const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; error?: Error }>((resolve) => {
      child.once('error', (error) => resolve({ code: null, signal: null, error }));
      child.once('close', (code, killedBy) => resolve({ code, signal: killedBy }));
    });
    let feedError: unknown;
    try {
      if (fed || !stdin) {
        // The child reads the descriptor itself.
      } else if (Buffer.isBuffer(input)) {
        stdin.on('error', () => undefined); // a child that exits early closes its end; its exit says why
        stdin.end(input);
      } else {
        await pipeline(Readable.from(input, { objectMode: false }), stdin);
      }
    } catch (err) {
      feedError = err;
      child.kill('SIGKILL');
    }
    const { code, signal: killedBy, error } = await exited;
    if (feedError && (feedError as NodeJS.ErrnoException).code !== 'EPIPE') throw feedError;
    if (error) throw new FerryError(ErrorCode.Internal, `cannot run ${command}: ${error.message}`, { cause: error });
    if (limit !== undefined && (killedBy === 'SIGXFSZ' || /file too large/i.test(stderr))) {
      throw new FerryError(ErrorCode.TargetTooSmall, `the image is larger than ${limit} bytes, the most the target can take`, { details: { limit } });
    }
    const failure = options.judge({ code, signal: killedBy, stderr: stderr.trim() });
    if (failure) throw failure;
    if (feedError) throw feedError;
    await flushing;
    return (await out.stat()).size;
  } finally {
    clearInterval(flusher);
    await flushing;
    await out.close();
  }
}

function isDescriptor(input: ByteStream | Buffer | { readonly fd: number }): input is { readonly fd: number } {
  return !Buffer.isBuffer(input) && typeof (input as { fd?: unknown }).fd === 'number';
}

/** Pure: a decoder's exit as the importer's error (undefined: success). */
export function decoderFailure(command: string, { code, signal, stderr }: ChildExit): FerryError | undefined {
  if (code === 0) return undefined;
  if (/no space left/i.test(stderr)) return new FerryError(ErrorCode.NoSpace, `the target ran out of space while ${command} decoded the image`);
  return new FerryError(ErrorCode.InvalidImage, `${command} could not decompress the data: ${stderr || (signal ?? `exit ${code}`)}`);
}

/**
 * Feeds `source` (compressed) to the decoder, whose output is `path` (see `childToFile`). Returns
 * the decoded size.
 */
export async function decodeToFile(format: Format, source: ByteStream, path: string, options: DecodeOptions = {}): Promise<number> {
  const [command, args] = decoder(format, 'all');
  return childToFile(command, args, path, {
    input: source,
    ...(options.limit !== undefined ? { limit: options.limit } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.syncEveryBytes !== undefined ? { syncEveryBytes: options.syncEveryBytes } : {}),
    judge: (exit) => decoderFailure(command, exit),
  });
}
