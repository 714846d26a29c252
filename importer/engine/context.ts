/** What the steps of one import share: the context they are given, and small helpers. */

import { ErrorCode, FerryError } from '../../src/errors.js';
import type { Credentials, HttpHeader, ImportSpec } from '../../src/contract/import-spec.js';
import type { Logger } from '../../src/logging.js';
import type { ImportSuccess } from '../../src/contract/termination.js';
import type { Peeled } from '../layers.js';
import type { NbdExport } from '../nbdkit.js';
import { fetchParallelToFile } from '../parallel-fetch.js';
import type { Progress } from '../progress.js';
import type { OpenedSource, SourceOpener } from '../sources/source.js';
import type { ByteStream } from '../streams.js';
import type { PreparedTarget } from '../target.js';
import { sameOrigin } from '../sources/http-source.js';
import type { RangedFetch } from './route.js';
import type { ImportTuning } from './tuning.js';

export interface EngineDeps {
  readonly logger: Logger;
  readonly progress: Progress;
  readonly tuning: ImportTuning;
  readonly sleep: (ms: number) => Promise<void>;
  /**
   * Stops the import: children are killed, requests closed, every file the import made removed,
   * and runImport rejects with INTERRUPTED.
   */
  readonly signal?: AbortSignal;
  /** The source of an `upload` import: the request body the upload server received (read once). */
  readonly upload?: SourceOpener;
}

/** What every step of one import needs: passed as one value instead of six parameters. */
export interface Run {
  readonly spec: ImportSpec;
  readonly target: PreparedTarget;
  readonly deps: EngineDeps;
  readonly log: Logger;
  readonly signal: AbortSignal;
}

/** One attempt, once the source is open and its format known. */
export interface Attempt extends Run {
  readonly opened: OpenedSource;
  readonly peeled: Peeled;
  /** Ranged reads of the source, each failing INTERRUPTED on abort. */
  readonly openRange?: (start: number, end: number) => Promise<ByteStream>;
  /** nbdkit already serving the source, started while routing to time reads through it (nbd route only). */
  readonly nbd?: NbdExport;
}

export function success(fields: Partial<Omit<ImportSuccess, 'kind'>>): ImportSuccess {
  return {
    kind: 'success',
    message: 'Import Complete',
    scratchSpaceRequired: false,
    preallocationApplied: false,
    ...fields,
  };
}

export function describe(peeled: Peeled): string {
  return [peeled.format, ...peeled.layers.slice().reverse()].join('+');
}

export const closeStream = async (stream: ByteStream): Promise<void> => {
  await stream[Symbol.asyncIterator]().return?.();
};

/**
 * What a child (curl, nbdkit) may send to `url`, where the first request ended up: the
 * credentials and extra headers only when it is the origin they were given for, never where a
 * redirect to another origin led.
 */
export function secretsFor(spec: ImportSpec, url: string): { credentials?: Credentials; extraHeaders?: readonly HttpHeader[] } {
  if (!sameOrigin(url, spec.endpoint)) return {};
  return { ...(spec.credentials ? { credentials: spec.credentials } : {}), ...(spec.extraHeaders?.length ? { extraHeaders: spec.extraHeaders } : {}) };
}

export function retryOptions(deps: EngineDeps) {
  return {
    attempts: deps.tuning.resumeAttempts + 1,
    backoffMs: Math.min(deps.tuning.backoffMs, 1000),
    sleep: deps.sleep,
  };
}

/**
 * Fills `path` from several ranged connections (the plain stream is closed first). `flush`: how
 * often its dirty pages are flushed (the writers' default if unset; `memorySync` for a scratch copy).
 */
export async function fetchRanged({ spec, deps, peeled, openRange }: Attempt, path: string, sparse: boolean, fetch: RangedFetch, flush: { readonly syncEveryBytes?: number } = {}): Promise<void> {
  if (!openRange) throw new FerryError(ErrorCode.Internal, 'a ranged route needs a source that serves ranges');
  await closeStream(peeled.stream);
  await fetchParallelToFile(path, sparse, spec.checksum, {
    ...retryOptions(deps),
    size: fetch.length,
    connections: fetch.connections,
    chunkBytes: fetch.chunkBytes,
    openRange,
    onBytes: (n: number) => deps.progress.bytes(n),
    ...flush,
  });
}
