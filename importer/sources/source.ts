/** What every source hands the engine: a byte stream and what is known about it up front. */

import type { ByteStream } from '../streams.js';

export interface OpenedSource {
  readonly stream: ByteStream;
  /** Length in bytes when the source announced it (Content-Length, file size). */
  readonly size?: number;
  /** A local path the bytes come from: qemu-img may read it in place, with no scratch copy. */
  readonly localPath?: string;
  /** Whether the source serves byte ranges (for resumable and random-access reads). */
  readonly acceptsRanges: boolean;
  /** For logs: where the bytes finally came from (after redirects), credentials removed. */
  readonly description: string;
  /** The URL the bytes finally came from (after redirects), for readers that fetch ranges themselves. */
  readonly remoteUrl?: string;
  /**
   * Opens bytes [start, end] of the same version of the source, where the source can (Range
   * support and a strong validator): what a parallel download uses.
   */
  readonly openRange?: (start: number, end: number) => Promise<ByteStream>;
}

/** Opens the source afresh; the engine calls it again for each attempt. */
export type SourceOpener = () => Promise<OpenedSource>;
