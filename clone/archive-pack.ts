/**
 * Archive content: the source directory as a tar stream, under the rules the importer extracts by
 * (src/io/archive.ts): directories, regular files, symbolic links whose target is relative and
 * stays beneath the root, hard links (a file met again by device and inode is sent as a link to
 * its first name); a device node, FIFO or socket is UNSAFE_ARCHIVE, as the extractor would say.
 * `lost+found` at the root is left out, as CDI's cloner does. Nothing is followed: the tree is
 * walked with lstat and each file opened O_RDONLY|O_NOFOLLOW and checked to be the file walked.
 * The tree is walked once before a byte is sent, so a refusal sends nothing and the header can
 * carry the bytes of file content the target must hold.
 */

import { constants, type Stats } from 'node:fs';
import { lstat, open, readdir, readlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { ErrorCode, FerryError } from '../src/errors.js';
import { checkLinkTarget } from '../src/io/archive.js';

export type PackEntry =
  | { readonly type: 'directory'; readonly name: string; readonly stats: Stats }
  | { readonly type: 'file'; readonly name: string; readonly stats: Stats }
  | { readonly type: 'symlink'; readonly name: string; readonly stats: Stats; readonly target: string }
  | { readonly type: 'link'; readonly name: string; readonly stats: Stats; readonly target: string };

export interface PackPlan {
  readonly entries: readonly PackEntry[];
  /** Bytes of regular-file content (hard links counted once). */
  readonly contentBytes: number;
}

function unsafe(message: string): FerryError {
  return new FerryError(ErrorCode.UnsafeArchive, message);
}

/** Walks `root` (depth first, names sorted) into the entries to send. */
export async function planArchive(root: string): Promise<PackPlan> {
  const rootStats = await lstat(root).catch((err: NodeJS.ErrnoException) => {
    throw new FerryError(err.code === 'ENOENT' ? ErrorCode.SourceNotFound : ErrorCode.SourceUnavailable, `the clone source ${root}: ${err.message}`, { cause: err });
  });
  if (!rootStats.isDirectory()) throw new FerryError(ErrorCode.InvalidSpec, `the clone source ${root} is not a directory`);
  const entries: PackEntry[] = [];
  const seen = new Map<string, string>();
  let contentBytes = 0;
  const walk = async (rel: string): Promise<void> => {
    const names = (await readdir(join(root, rel))).sort();
    for (const name of names) {
      if (rel === '' && name === 'lost+found') continue;
      const entryName = rel === '' ? name : posix.join(rel, name);
      const stats = await lstat(join(root, entryName));
      if (stats.isDirectory()) {
        entries.push({ type: 'directory', name: entryName, stats });
        await walk(entryName);
      } else if (stats.isSymbolicLink()) {
        const target = await readlink(join(root, entryName));
        checkLinkTarget(entryName, target);
        entries.push({ type: 'symlink', name: entryName, stats, target });
      } else if (stats.isFile()) {
        const key = `${stats.dev}:${stats.ino}`;
        const first = stats.nlink > 1 ? seen.get(key) : undefined;
        if (first !== undefined) {
          entries.push({ type: 'link', name: entryName, stats, target: first });
        } else {
          if (stats.nlink > 1) seen.set(key, entryName);
          entries.push({ type: 'file', name: entryName, stats });
          contentBytes += stats.size;
        }
      } else {
        throw unsafe(`${entryName} in the clone source is a device node, FIFO or socket; archive content holds files, directories and links only`);
      }
    }
  };
  await walk('');
  return { entries, contentBytes };
}

type EntryHeader = Parameters<ReturnType<typeof tar.pack>['entry']>[0];

function headerOf(entry: PackEntry): EntryHeader {
  const base = { name: entry.name, mode: entry.stats.mode & 0o7777, mtime: entry.stats.mtime, uid: entry.stats.uid, gid: entry.stats.gid };
  switch (entry.type) {
    case 'directory':
      return { ...base, type: 'directory' };
    case 'file':
      return { ...base, type: 'file', size: entry.stats.size };
    case 'symlink':
      return { ...base, type: 'symlink', linkname: entry.target };
    case 'link':
      return { ...base, type: 'link', linkname: entry.target };
  }
}

/** The tar stream of a planned tree. A file that changed since it was walked fails the stream. */
export function packArchive(root: string, plan: PackPlan): AsyncIterable<Buffer> {
  const pack = tar.pack();
  const feed = async (): Promise<void> => {
    for (const entry of plan.entries) {
      if (entry.type !== 'file') {
        await new Promise<void>((resolve, reject) => pack.entry(headerOf(entry), (err) => (err ? reject(err) : resolve())));
        continue;
      }
      const handle = await open(join(root, entry.name), constants.O_RDONLY | constants.O_NOFOLLOW);
      try {
        const now = await handle.stat();
        if (!now.isFile() || now.ino !== entry.stats.ino || now.size !== entry.stats.size) {
          throw new FerryError(ErrorCode.SourceUnavailable, `${entry.name} changed while the clone read it; the source must not be written during a clone`);
        }
        const sink = pack.entry(headerOf(entry));
        await pipeline(handle.createReadStream({ autoClose: false }), sink);
      } finally {
        await handle.close();
      }
    }
    pack.finalize();
  };
  feed().catch((err: unknown) => pack.destroy(err as Error));
  return pack as AsyncIterable<Buffer>;
}
