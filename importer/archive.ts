/**
 * Content type `archive`: a tar stream extracted into a directory. Entries go to a staging
 * directory first and move into place only when the whole archive (and its checksum) checked out,
 * so a failed import leaves nothing behind.
 */

import { createWriteStream } from 'node:fs';
import { chmod, link, lstat, mkdir, readdir, realpath, rename, rm, symlink, unlink } from 'node:fs/promises';
import { dirname, join, posix, relative, sep } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { ErrorCode, FerryError, toFerryError } from '../src/errors.js';
import type { ByteStream } from './streams.js';

function unsafe(message: string): FerryError {
  return new FerryError(ErrorCode.UnsafeArchive, message);
}

/** Pure: the entry's path relative to the extraction root, or an UNSAFE_ARCHIVE error. */
export function safeEntryPath(name: string): string {
  if (name.includes('\0')) throw unsafe(`entry name contains a NUL byte`);
  if (name.startsWith('/')) throw unsafe(`entry "${name}" has an absolute path`);
  if (name.split('/').includes('..')) throw unsafe(`entry "${name}" contains ".."`);
  const normal = posix.normalize(name).replace(/\/+$/, '');
  return normal === '.' ? '' : normal;
}

/** Pure: whether a symlink at `entry` pointing to `target` stays inside the root. */
export function checkLinkTarget(entry: string, target: string): void {
  if (target === '' || target.startsWith('/')) throw unsafe(`link "${entry}" points to the absolute path "${target}"`);
  const resolved = posix.normalize(posix.join(posix.dirname(entry), target));
  if (resolved === '..' || resolved.startsWith('../')) throw unsafe(`link "${entry}" points outside the directory ("${target}")`);
}

export interface ExtractResult {
  readonly files: number;
  readonly bytes: number;
}

/** Extracts `source` into `target` (created if missing). `limit` caps the bytes of file content. */
export async function extractArchive(source: ByteStream, target: string, limit?: number): Promise<ExtractResult> {
  await mkdir(target, { recursive: true });
  const staging = join(target, `.ferry-staging-${process.pid}-${Date.now()}`);
  await mkdir(staging, { mode: 0o700 });
  try {
    const result = await extractInto(source, staging, limit);
    await commit(staging, target);
    return result;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

async function extractInto(source: ByteStream, root: string, limit: number | undefined): Promise<ExtractResult> {
  const realRoot = await realpath(root);
  const extract = tar.extract();
  const feeding = pipeline(Readable.from(source, { objectMode: false }), extract).catch((err: unknown) => err);
  let files = 0;
  let bytes = 0;
  try {
    for await (const entry of extract) {
      const { header } = entry;
      const rel = safeEntryPath(header.name);
      const dest = join(root, rel);
      switch (header.type) {
        case 'directory':
          if (rel !== '') await mkdir(dest, { recursive: true, mode: dirMode(header.mode) });
          break;
        case 'file':
        case 'contiguous-file': {
          if (rel === '') throw unsafe('a file entry has an empty name');
          await ensureParent(realRoot, dest);
          await unlink(dest).catch(() => undefined);
          bytes += header.size ?? 0;
          if (limit !== undefined && bytes > limit) {
            throw new FerryError(ErrorCode.TargetTooSmall, `archive content exceeds the usable target capacity of ${limit} bytes`);
          }
          await pipeline(entry, createWriteStream(dest, { flags: 'wx', mode: fileMode(header.mode) }));
          await chmod(dest, fileMode(header.mode));
          files += 1;
          continue; // the entry stream is consumed
        }
        case 'symlink':
          checkLinkTarget(rel, header.linkname ?? '');
          await ensureParent(realRoot, dest);
          await unlink(dest).catch(() => undefined);
          await symlink(header.linkname ?? '', dest);
          break;
        case 'link': {
          const from = safeEntryPath(header.linkname ?? '');
          if (from === '') throw unsafe(`hard link "${header.name}" has no target`);
          await ensureParent(realRoot, dest);
          const source = join(root, from);
          await ensureInside(realRoot, await realpath(source).catch(() => source));
          await link(source, dest);
          break;
        }
        default:
          throw unsafe(`entry "${header.name}" is a ${header.type}; only files, directories and links are extracted`);
      }
      entry.resume();
    }
    const err = await feeding;
    if (err) throw err;
  } catch (err) {
    extract.destroy();
    const feedError = await feeding;
    // A source failure (network, checksum) is the real cause of a half-read archive.
    if (feedError instanceof FerryError) throw feedError;
    if (err instanceof FerryError) throw err;
    if (feedError) throw new FerryError(ErrorCode.InvalidImage, `not a valid tar archive: ${(feedError as Error).message}`, { cause: feedError });
    throw toFerryError(err, ErrorCode.TargetError);
  }
  return { files, bytes };
}

function fileMode(mode: number | undefined): number {
  return (mode ?? 0o644) & 0o777; // no setuid/setgid/sticky from an untrusted archive
}

function dirMode(mode: number | undefined): number {
  return ((mode ?? 0o755) & 0o777) | 0o700;
}

async function ensureInside(realRoot: string, path: string): Promise<void> {
  const rel = relative(realRoot, path);
  if (rel === '..' || rel.startsWith(`..${sep}`) || rel.startsWith(sep)) throw unsafe(`entry resolves outside the directory: ${path}`);
}

/** Creates the parent directory and checks, after following any links in it, that it stays inside. */
async function ensureParent(realRoot: string, dest: string): Promise<void> {
  const parent = dirname(dest);
  await mkdir(parent, { recursive: true });
  await ensureInside(realRoot, await realpath(parent));
  const existing = await lstat(dest).catch(() => undefined);
  if (existing?.isDirectory()) throw unsafe(`entry ${dest} would replace a directory`);
}

/** Moves the staged top-level entries into the target, replacing what was there under those names. */
async function commit(staging: string, target: string): Promise<void> {
  for (const name of await readdir(staging)) {
    const dest = join(target, name);
    await rm(dest, { recursive: true, force: true });
    await rename(join(staging, name), dest);
  }
}
