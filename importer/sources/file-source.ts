/** A local file as a source: the CLI's `--url /path/disk.qcow2`. */

import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ErrorCode, FerryError } from '../../src/errors.js';
import type { OpenedSource } from './source.js';

/**
 * Pure: the absolute path a local endpoint names: a path as it is, or a `file://` URL decoded
 * (percent escapes included). A file URL with a host other than localhost is refused, not read
 * from the local disk under another name.
 */
export function localPathOf(endpoint: string): string {
  if (!/^file:/i.test(endpoint)) return resolve(endpoint);
  try {
    return fileURLToPath(new URL(endpoint));
  } catch (err) {
    throw new FerryError(ErrorCode.InvalidSpec, `"${endpoint}" is not a local file URL (want file:///absolute/path): ${(err as Error).message}`, { cause: err });
  }
}

export async function openFile(path: string): Promise<OpenedSource> {
  const absolute = localPathOf(path);
  const info = await stat(absolute).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') throw new FerryError(ErrorCode.SourceNotFound, `no such file: ${absolute}`);
    if (err.code === 'EACCES') throw new FerryError(ErrorCode.Unauthorized, `cannot read ${absolute}: permission denied`);
    throw new FerryError(ErrorCode.SourceUnavailable, `cannot read ${absolute}: ${err.message}`, { cause: err });
  });
  if (!info.isFile()) throw new FerryError(ErrorCode.InvalidSpec, `not a regular file: ${absolute}`);
  return {
    stream: createReadStream(absolute, { highWaterMark: 1 << 20 }),
    size: info.size,
    localPath: absolute,
    acceptsRanges: true,
    description: absolute,
  };
}
