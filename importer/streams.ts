/**
 * Pull-based stream stages. Each stage is an async iterable of Buffers, so backpressure comes for
 * free (nothing is read until the consumer asks) and errors travel to whoever is iterating.
 */

import { spawn } from 'node:child_process';
import { createHash, type Hash } from 'node:crypto';
import { Readable, type Duplex } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { ErrorCode, FerryError } from '../src/errors.js';
import type { Checksum } from '../src/checksum.js';

export type ByteStream = AsyncIterable<Buffer>;

export interface Peeked {
  /** The first bytes (fewer only if the stream is shorter). */
  readonly head: Buffer;
  /** The whole stream again, head included. */
  readonly stream: ByteStream;
}

/** Reads at least `n` bytes (or to the end) and hands back a stream that replays them. */
export async function peek(source: ByteStream, n: number): Promise<Peeked> {
  const iterator = source[Symbol.asyncIterator]();
  const chunks: Buffer[] = [];
  let length = 0;
  let done = false;
  while (length < n) {
    const next = await iterator.next();
    if (next.done) {
      done = true;
      break;
    }
    chunks.push(next.value);
    length += next.value.length;
  }
  const buffered = Buffer.concat(chunks);
  let closed = done;
  const close = async (): Promise<void> => {
    if (closed) return;
    closed = true;
    await iterator.return?.();
  };
  async function* replay(): AsyncGenerator<Buffer, void, undefined> {
    try {
      if (buffered.length > 0) yield buffered;
      if (done) return;
      for (;;) {
        const next = await iterator.next();
        if (next.done) {
          closed = true;
          return;
        }
        yield next.value;
      }
    } finally {
      await close();
    }
  }
  return { head: buffered.subarray(0, n), stream: closingEarly(replay(), close) };
}

/**
 * A generator whose `return()` also runs `close` when it comes before the first `next()`: a
 * generator that never started skips its own `finally`, which would leave the source it wraps (an
 * open HTTP response, a decompressor) running until the process ends.
 */
function closingEarly(generator: AsyncGenerator<Buffer, void, undefined>, close: () => Promise<void>): AsyncIterableIterator<Buffer> {
  return {
    [Symbol.asyncIterator]() {
      return this;
    },
    next: () => generator.next(),
    return: async () => {
      const result = await generator.return(undefined);
      await close();
      return result;
    },
    throw: (err?: unknown) => generator.throw(err),
  };
}

export interface Handover {
  readonly stream: ByteStream;
  /**
   * From the next byte on, the stream continues with `next(offset)`, `offset` being the count of
   * bytes handed on so far; the first source is closed. Call it between reads.
   */
  takeOver(next: (offset: number) => ByteStream): void;
}

/** A stream that starts as `first` and can be switched to another source of the same bytes. */
export function handover(first: ByteStream): Handover {
  let replacement: ((offset: number) => ByteStream) | undefined;
  async function* run(): AsyncGenerator<Buffer, void, undefined> {
    let offset = 0;
    const iterator = first[Symbol.asyncIterator]();
    let ended = false;
    try {
      while (replacement === undefined) {
        const next = await iterator.next();
        if (next.done) {
          ended = true;
          return;
        }
        offset += next.value.length;
        yield next.value;
      }
    } finally {
      if (!ended) await iterator.return?.();
    }
    yield* replacement(offset);
  }
  const stream = run();
  return {
    stream: closingEarly(stream, async () => {
      await first[Symbol.asyncIterator]().return?.();
    }),
    takeOver: (next) => {
      replacement = next;
    },
  };
}

/** Runs a Node duplex (zlib, ...) as a stage; errors on either side reach the consumer. */
export async function* throughDuplex(source: ByteStream, duplex: Duplex): ByteStream {
  const feeding = pipeline(Readable.from(source, { objectMode: false }), duplex).catch((err: unknown) => err);
  try {
    for await (const chunk of duplex) yield chunk as Buffer;
    const err = await feeding;
    if (err) throw err;
  } finally {
    duplex.destroy();
  }
}

/**
 * Runs a filter program (`xz -dc`, ...) as a stage. An error of the source wins over the
 * program's complaint about its truncated input, because it names the real cause.
 */
export async function* spawnFilter(source: ByteStream, command: string, args: readonly string[], signal?: AbortSignal): ByteStream {
  // An abort kills the program at once; the consumer then sees the error of whatever stopped.
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], ...(signal ? { signal, killSignal: 'SIGKILL' as const } : {}) });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d: string) => {
    stderr = (stderr + d).slice(-2048);
  });
  const exited = new Promise<{ code: number | null; error?: Error }>((resolve) => {
    child.once('error', (error) => resolve({ code: null, error }));
    child.once('close', (code) => resolve({ code }));
  });
  const feeding = pipeline(Readable.from(source, { objectMode: false }), child.stdin).then(
    () => undefined,
    (err: unknown) => err,
  );
  let finished = false;
  try {
    for await (const chunk of child.stdout) yield chunk as Buffer;
    const feedError = await feeding;
    const { code, error } = await exited;
    if (feedError && !isPipeError(feedError)) throw feedError;
    if (error) throw new FerryError(ErrorCode.Internal, `cannot run ${command}: ${error.message}`, { cause: error });
    if (code !== 0) {
      throw new FerryError(ErrorCode.InvalidImage, `${command} could not decompress the data: ${stderr.trim() || `exit ${code}`}`);
    }
    finished = true;
  } finally {
    if (!finished) child.kill('SIGKILL');
  }
}

function isPipeError(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'EPIPE' || code === 'ERR_STREAM_PREMATURE_CLOSE';
}

export interface Counter {
  bytes: number;
}

/** Counts bytes as they pass; `onChunk` lets progress reporting watch without owning the stream. */
export async function* counted(source: ByteStream, counter: Counter, onChunk?: (total: number) => void): ByteStream {
  for await (const chunk of source) {
    counter.bytes += chunk.length;
    onChunk?.(counter.bytes);
    yield chunk;
  }
}

/** Hashes the bytes as they pass and fails at the end if they do not match. */
export async function* verified(source: ByteStream, checksum: Checksum): ByteStream {
  const hash: Hash = createHash(checksum.algorithm);
  for await (const chunk of source) {
    hash.update(chunk);
    yield chunk;
  }
  const actual = hash.digest('hex');
  if (actual !== checksum.hex) {
    throw new FerryError(ErrorCode.ChecksumMismatch, `checksum mismatch: expected ${checksum.algorithm}:${checksum.hex}, got ${checksum.algorithm}:${actual}`, {
      details: { expected: checksum.hex, actual },
    });
  }
}

/** Fails as soon as more than `limit` bytes pass: an image may not outgrow its target. */
export async function* capped(source: ByteStream, limit: number, what: string): ByteStream {
  let total = 0;
  for await (const chunk of source) {
    total += chunk.length;
    if (total > limit) {
      throw new FerryError(ErrorCode.TargetTooSmall, `${what} is larger than the usable target capacity of ${limit} bytes`, {
        details: { limit },
      });
    }
    yield chunk;
  }
}

/**
 * Holds the last `n` bytes back until the end, then hands them on unless `drop(tail, before)` says
 * they are not data (a fixed VHD's footer after `before` bytes of disk). A stream shorter than `n`
 * bytes passes whole.
 */
export async function* heldBackTail(source: ByteStream, n: number, drop: (tail: Buffer, before: number) => boolean): ByteStream {
  // The previous chunk is held, not copied: one chunk out per chunk in, no copy of the bulk (each
  // extra yield and copy is paid per chunk on the streamed path). This relies on what every Ferry
  // source does: a chunk's bytes are not reused by its producer once handed on (sockets, zlib,
  // child pipes and file streams all hand over fresh buffers).
  let held: Buffer | undefined;
  let passed = 0;
  for await (const chunk of source) {
    if (chunk.length === 0) continue;
    if (held !== undefined && held.length + chunk.length > n && chunk.length < n) {
      // The tail would straddle two chunks: keep only the last n bytes together.
      const all = Buffer.concat([held, chunk]);
      const out = all.subarray(0, all.length - n);
      held = all.subarray(all.length - n);
      passed += out.length;
      yield out;
      continue;
    }
    if (held !== undefined) {
      if (held.length + chunk.length <= n) {
        held = Buffer.concat([held, chunk]);
        continue;
      }
      passed += held.length;
      yield held;
    }
    held = chunk;
  }
  if (held === undefined) return;
  if (held.length > n) {
    const out = held.subarray(0, held.length - n);
    passed += out.length;
    yield out;
    held = held.subarray(held.length - n);
  }
  if (!(held.length === n && drop(held, passed))) yield held;
}

/** Fails if a source that announced its length ends short of it. */
export async function* exactLength(source: ByteStream, expected: number | undefined): ByteStream {
  let total = 0;
  for await (const chunk of source) {
    total += chunk.length;
    yield chunk;
  }
  if (expected !== undefined && total !== expected) {
    throw new FerryError(ErrorCode.Truncated, `source sent ${total} bytes but announced ${expected}`, {
      details: { received: total, expected },
    });
  }
}
