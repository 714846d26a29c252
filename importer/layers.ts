/** Peels compression layers off a stream until a disk or archive format shows. */

import { createGunzip } from 'node:zlib';
import { ErrorCode, FerryError } from '../src/errors.js';
import { detectFormat, Format, isCompression, SNIFF_BYTES } from './sniff.js';
import { decodesToFile, PROBE_INPUT_BYTES, probeDecoded } from './decode-to-file.js';
import { type ByteStream, peek, spawnFilter, throughDuplex } from './streams.js';

/** How deep compression may nest (qcow2.gz.xz is silly, but bounded is what matters). */
const MAX_LAYERS = 3;

export interface Peeled {
  readonly format: Format;
  /** Compression layers removed, outermost first. */
  readonly layers: readonly Format[];
  /** The first bytes of the innermost layer, for header checks. */
  readonly head: Buffer;
  readonly stream: ByteStream;
  /**
   * Set when exactly one zstd or xz layer wraps a non-compressed format: the compressed bytes, for
   * a decoder that writes the target itself. Iterate either this or `stream`, never both (`stream`
   * starts its decoder only when first read).
   */
  readonly compressed?: { readonly format: Format; readonly stream: ByteStream };
}

function decompress(format: Format, source: ByteStream, signal?: AbortSignal): ByteStream {
  switch (format) {
    case Format.Gzip:
      // Node's zlib decodes gzip as fast as pigz here; xz, zstd and bzip2 need their programs.
      return gunzip(source);
    case Format.Xz:
      return spawnFilter(source, 'xz', ['-dc', '-T0'], signal);
    case Format.Zstd:
      return spawnFilter(source, 'zstd', ['-dc', '-q'], signal);
    case Format.Bzip2:
      return spawnFilter(source, 'bzip2', ['-dc'], signal);
    default:
      throw new FerryError(ErrorCode.Internal, `no decompressor for ${format}`);
  }
}

async function* gunzip(source: ByteStream): ByteStream {
  try {
    yield* throughDuplex(source, createGunzip({ chunkSize: 1 << 20 }));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (typeof code === 'string' && code.startsWith('Z_')) {
      throw new FerryError(ErrorCode.InvalidImage, `gzip data is corrupt: ${(err as Error).message}`, { cause: err });
    }
    throw err;
  }
}

export interface PeelOptions {
  /** Stops the decompressors it starts. */
  readonly signal?: AbortSignal;
}

export async function peel(source: ByteStream, options: PeelOptions = {}): Promise<Peeled> {
  const { signal } = options;
  const layers: Format[] = [];
  let stream = source;
  for (;;) {
    const { head, stream: replay } = await peek(stream, SNIFF_BYTES);
    const format = detectFormat(head);
    if (!isCompression(format)) return { format, layers, head, stream: replay };
    if (layers.length >= MAX_LAYERS) {
      throw new FerryError(ErrorCode.UnsupportedFormat, `more than ${MAX_LAYERS} nested compression layers (${[...layers, format].join(' > ')})`);
    }
    if (layers.length === 0 && decodesToFile(format)) {
      // Learn the inner format from a probe decode of the first bytes, so the real decoder can
      // still be chosen: into node, or straight into the target file.
      const { head: compressedHead, stream: compressed } = await peek(replay, PROBE_INPUT_BYTES);
      const inner = await probeDecoded(format, compressedHead, SNIFF_BYTES);
      const complete = inner !== undefined && (inner.length >= SNIFF_BYTES || compressedHead.length < PROBE_INPUT_BYTES);
      if (inner && complete && !isCompression(detectFormat(inner))) {
        return { format: detectFormat(inner), layers: [format], head: inner, stream: decompress(format, compressed, signal), compressed: { format, stream: compressed } };
      }
      layers.push(format);
      stream = decompress(format, compressed, signal);
      continue;
    }
    layers.push(format);
    stream = decompress(format, replay, signal);
  }
}
