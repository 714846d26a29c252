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

function decoder(format: Format, threads: 'one' | 'all'): [string, string[]] {
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

/**
 * Feeds `source` (compressed) to the decoder, whose output is `path`. Dirty pages are flushed every
 * 64 MiB written, as the streamed writer does, so a cgroup memory limit is not filled with page cache.
 * Returns the decoded size.
 */
export async function decodeToFile(format: Format, source: ByteStream, path: string, options: DecodeOptions = {}): Promise<number> {
  const [decoderCommand, decoderArgs] = decoder(format, 'all');
  const { limit, signal } = options;
  const syncEveryBytes = options.syncEveryBytes ?? DEFAULT_SYNC_EVERY_BYTES;
  // prlimit sets the limit on itself and execs the decoder: the same process, so an abort's kill reaches it.
  const [command, args] = limit === undefined ? [decoderCommand, decoderArgs] : ['prlimit', [`--fsize=${limit}`, '--', decoderCommand, ...decoderArgs]];
  // A new file, never through a link or onto another name (the partial was cleared before).
  const out = await createExclusive(path);
  let stderr = '';
  let synced = 0;
  let flushing: Promise<void> | undefined;
  const flusher = setInterval(() => {
    if (flushing) return;
    flushing = out
      .stat()
      .then(async (st) => {
        if (st.size - synced >= syncEveryBytes) {
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
    const child = spawn(command, args, { stdio: ['pipe', out.fd, 'pipe'], ...(signal ? { signal, killSignal: 'SIGKILL' as const } : {}) });
    const { stdin, stderr: errors } = child;
    if (!stdin || !errors) throw new FerryError(ErrorCode.Internal, `cannot talk to ${decoderCommand}`);
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
      await pipeline(Readable.from(source, { objectMode: false }), stdin);
    } catch (err) {
      feedError = err;
      child.kill('SIGKILL');
    }
    const { code, signal: killedBy, error } = await exited;
    if (feedError && (feedError as NodeJS.ErrnoException).code !== 'EPIPE') throw feedError;
    if (error) throw new FerryError(ErrorCode.Internal, `cannot run ${decoderCommand}: ${error.message}`, { cause: error });
    if (limit !== undefined && (killedBy === 'SIGXFSZ' || /file too large/i.test(stderr))) {
      throw new FerryError(ErrorCode.TargetTooSmall, `the decompressed image is larger than ${limit} bytes, the most the target can take`, { details: { limit } });
    }
    if (code !== 0) {
      if (/no space left/i.test(stderr)) throw new FerryError(ErrorCode.NoSpace, `the target ran out of space while ${decoderCommand} decoded the image`);
      throw new FerryError(ErrorCode.InvalidImage, `${decoderCommand} could not decompress the data: ${stderr.trim() || (killedBy ?? `exit ${code}`)}`);
    }
    if (feedError) throw feedError;
    await flushing;
    return (await out.stat()).size;
  } finally {
    clearInterval(flusher);
    await flushing;
    await out.close();
  }
}
