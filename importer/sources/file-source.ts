/** A local file as a source: the CLI's `--url /path/disk.qcow2`. */

import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { ErrorCode, FerryError } from '../../src/errors.js';
import type { OpenedSource } from './source.js';

export async function openFile(path: string): Promise<OpenedSource> {
  const absolute = resolve(path.startsWith('file://') ? new URL(path).pathname : path);
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
