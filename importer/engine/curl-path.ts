/**
 * The one stream fetched by a child curl into a file (the raw target, or the scratch copy), then
 * the same checks the node stream makes: the announced length, and the first bytes equal to the
 * ones the format was detected and checked from (the file is a second request: a server that
 * answers it with another image is caught here, before qemu-img or anyone reads it). A transfer
 * that breaks after it began continues from the bytes in the file over ranged requests (node,
 * validated: 206, same start, same validator), when the source serves them.
 */

import { constants as fsConstants } from 'node:fs';
import { open, stat } from 'node:fs/promises';
import { ErrorCode, FerryError } from '../../src/errors.js';
import { interruption } from './abort.js';
import { fetchRange } from '../parallel-fetch.js';
import { writeAll } from '../raw-writer.js';
import { decoder, decoderFailure } from '../decode-to-file.js';
import { type CurlFetchOptions, curlThroughDecoder, curlToFile, isBrokenTransfer } from '../sources/curl-fetch.js';
import { loadCaBundle, proxyFor } from '../sources/http-source.js';
import { type Attempt, closeStream, retryOptions, secretsFor } from './context.js';

/**
 * Fills the new file `path` with the whole source; returns its size. At most `limit` bytes.
 * `flush`: how often its dirty pages are flushed (`memorySync`: only for a memory limit).
 */
export async function fetchWithCurl(attempt: Attempt, path: string, limit: number | undefined, flush: { readonly syncEveryBytes?: number }): Promise<number> {
  const { spec, deps, log, signal, opened, peeled, openRange } = attempt;
  const url = opened.remoteUrl;
  const size = opened.size;
  if (url === undefined || size === undefined) throw new FerryError(ErrorCode.Internal, 'the curl route needs a remote URL of known size');
  if (limit !== undefined && size > limit) {
    throw new FerryError(ErrorCode.TargetTooSmall, `the image has ${size} bytes, more than the ${limit} the target can take`, { details: { size, limit } });
  }
  await closeStream(peeled.stream);
  const reach = await curlReach(attempt, url);
  log.info({ via: 'curl' }, 'one stream, written by curl');
  let written: number;
  try {
    written = await curlToFile(path, {
      ...reach,
      ...(limit !== undefined ? { limit } : {}),
      ...flush,
      signal,
      onSize: (n) => deps.progress.bytes(n),
    });
  } catch (err) {
    if (!isBrokenTransfer(err) || !openRange || deps.tuning.resumeAttempts <= 0) throw err;
    const at = (await stat(path)).size;
    log.warn({ offset: at, code: (err as FerryError).code }, `transfer broke, resuming at byte ${at}: ${(err as Error).message}`);
    await continueFile(path, at, size, attempt);
    if (signal.aborted) throw interruption();
    written = size;
  }
  if (written !== size) {
    throw new FerryError(ErrorCode.Truncated, `source sent ${written} bytes but announced ${size}`, { details: { received: written, expected: size } });
  }
  await sameHead(path, peeled.head);
  return written;
}

/**
 * A raw image in one zstd or xz layer: curl fetches the compressed stream and its decoder writes
 * the file (`curlThroughDecoder`): neither the compressed nor the decoded bytes pass through node.
 * The same checks as the plain path: the announced length (of the compressed body), and the file
 * starting with the decoded bytes the format was detected and checked from. A break is not
 * continued here (the decoder has read what curl passed on): it fails the attempt as TRUNCATED,
 * retryable, and the engine starts again. At most `limit` decoded bytes. Returns the decoded size.
 */
export async function decodeWithCurl(attempt: Attempt, path: string, limit: number | undefined): Promise<number> {
  const { spec, deps, log, signal, opened, peeled } = attempt;
  const url = opened.remoteUrl;
  const size = opened.size;
  const compressed = peeled.compressed;
  if (url === undefined || size === undefined || !compressed) throw new FerryError(ErrorCode.Internal, 'the curl decoder route needs a compressed remote image of known size');
  // The first response's body is not read on: curl makes its own request.
  await closeStream(compressed.stream);
  const reach = await curlReach(attempt, url);
  const [command, args] = decoder(compressed.format, 'all');
  log.info({ via: 'curl', decoder: command }, 'one stream, fetched by curl into the decoder');
  const decoded = await curlThroughDecoder(path, {
    ...reach,
    ...(limit !== undefined ? { limit } : {}),
    signal,
    decoder: [command, args],
    judgeDecoder: (exit) => decoderFailure(command, exit),
    expectedBytes: size,
    onFetched: (n) => deps.progress.bytes(Math.min(n, size)),
  });
  await sameHead(path, peeled.head);
  return decoded;
}

/** How curl reaches `url` for this import: the trust, the timeouts, the secrets, the proxy. */
async function curlReach({ spec, deps }: Attempt, url: string): Promise<Pick<CurlFetchOptions, 'url' | 'insecureTls' | 'timeouts' | 'credentials' | 'extraHeaders' | 'caPems' | 'proxy'>> {
  const proxy = proxyFor(url, spec.proxy);
  const caPems = spec.caPath !== undefined ? await loadCaBundle(spec.caPath) : undefined;
  return { url, insecureTls: spec.insecureTls, timeouts: deps.tuning.http, ...secretsFor(spec, url), ...(caPems ? { caPems } : {}), ...(proxy ? { proxy } : {}) };
}

/** Bytes [at, size) over ranged requests, written at their offsets, each break continued. */
async function continueFile(path: string, at: number, size: number, attempt: Attempt): Promise<void> {
  const { deps, openRange } = attempt;
  if (!openRange || at >= size) return;
  const handle = await open(path, fsConstants.O_RDWR | fsConstants.O_NOFOLLOW);
  try {
    await fetchRange(at, size - 1, { ...retryOptions(deps), openRange }, async (data: Buffer, position: number) => {
      await writeAll(handle, data, position);
      deps.progress.bytes(position + data.length);
    }, () => attempt.signal.aborted);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** The file must start with the bytes the format was detected from. */
async function sameHead(path: string, head: Buffer): Promise<void> {
  const handle = await open(path, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW);
  try {
    const buffer = Buffer.alloc(head.length);
    const { bytesRead } = await handle.read(buffer, 0, head.length, 0);
    if (bytesRead !== head.length || !buffer.equals(head)) {
      throw new FerryError(ErrorCode.SourceUnavailable, 'the source served other bytes on a second request than on the first (the image changed?)', { retryable: true });
    }
  } finally {
    await handle.close();
  }
}
