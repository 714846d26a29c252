/**
 * Content type `archive`: a tar stream extracted into a directory. Entries go to a staging
 * directory first and move into place only when the whole archive (and its checksum) checked out,
 * so a failed import leaves nothing behind.
 *
 * Confinement (issue #12). The archive is the adversary, and links are its lever: an earlier entry
 * can make a path that looks harmless lead anywhere, through chains of links that each look
 * harmless on their own. So the kernel is never asked to follow a link: every entry's parent path
 * is resolved by `resolveBeneath` (archive-resolve.ts) against the tree as extracted so far,
 * lstat by lstat from the staging root, links spliced in and `..` popped by us, never above the
 * root. Only then is the last name created: directories one mkdir at a time, files with
 * O_CREAT|O_EXCL|O_NOFOLLOW after an existing non-directory of that name is unlinked, hard links
 * only to regular files already extracted (a hard link to a symlink would move a relative target
 * to another directory, where it means something else), symlinks only if their target resolves
 * beneath the root from the link's own directory.
 *
 * Symlinks are created as they come rather than deferred to the end, because real archives write
 * through them (`lib -> usr/lib`, then `lib/x`), and writing through them is safe: each use is
 * resolved again by us, against the tree as it is then. A link's verdict at creation can be undone
 * by a later entry (a link it goes through re-pointed), so that check only refuses early; the
 * verdict that counts is the last pass over the finished staging tree, before anything moves into
 * place, which checks every symlink in it. The result: nothing outside the root is created or
 * written at any time, and the tree that is committed holds no link resolving outside it.
 */

import { constants } from 'node:fs';
import { link, lstat, mkdir, open, readdir, readlink, realpath, rename, rm, symlink, unlink } from 'node:fs/promises';
import { join, posix } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import tar from 'tar-stream';
import { ErrorCode, FerryError, toFerryError } from '../errors.js';
import { EntryKind, leafAction, LeafAction, Missing, type Node, type NodeKind, resolveBeneath, type TreeView } from './archive-resolve.js';
/** Bytes as the engine streams them. */
type ByteStream = AsyncIterable<Buffer>;

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

/**
 * Pure, a first gate before the tree is consulted: a symlink target must be relative and must not
 * climb above the root even read as plain text from where the entry's name puts it.
 */
export function checkLinkTarget(entry: string, target: string): void {
  if (target === '' || target.startsWith('/')) throw unsafe(`link "${entry}" points to the absolute path "${target}"`);
  if (target.includes('\0')) throw unsafe(`link "${entry}" has a target with a NUL byte`);
  const resolved = posix.normalize(posix.join(posix.dirname(entry), target));
  if (resolved === '..' || resolved.startsWith('../')) throw unsafe(`link "${entry}" points outside the directory ("${target}")`);
}

/** Pure: the kind of a tar entry type, or UNSAFE_ARCHIVE for devices, fifos and anything else. */
export function entryKind(type: string | null | undefined, name: string): EntryKind {
  switch (type) {
    case 'directory':
      return EntryKind.Directory;
    case 'file':
    case 'contiguous-file':
      return EntryKind.File;
    case 'symlink':
      return EntryKind.Symlink;
    case 'link':
      return EntryKind.HardLink;
    default:
      throw unsafe(`entry "${name}" is a ${String(type)}; only files, directories and links are extracted`);
  }
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

/** The real tree under `root` (a real path, trusted), seen through lstat only. */
function diskTree(root: string): TreeView & { path(at: readonly string[]): string } {
  const path = (at: readonly string[]): string => join(root, ...at);
  return {
    path,
    async look(dir, name) {
      const p = path([...dir, name]);
      const st = await lstat(p).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT') return undefined;
        throw err;
      });
      if (st === undefined) return { kind: 'missing' } satisfies Node;
      if (st.isDirectory()) return { kind: 'directory' };
      if (st.isFile()) return { kind: 'file' };
      if (st.isSymbolicLink()) return { kind: 'symlink', target: await readlink(p) };
      return { kind: 'other' };
    },
    async mkdir(dir, name) {
      await mkdir(path([...dir, name]), { mode: 0o755 });
    },
  };
}

type DiskTree = ReturnType<typeof diskTree>;

interface Leaf {
  /** The real directory that holds the entry (names from the root, no links among them). */
  readonly dir: readonly string[];
  readonly path: string;
  readonly action: LeafAction;
}

/** Resolves the entry's parent beneath the root (creating missing directories) and decides its name's fate. */
async function leafFor(tree: DiskTree, rel: string, kind: EntryKind): Promise<Leaf> {
  const parent = posix.dirname(rel);
  const name = posix.basename(rel);
  const dir = parent === '.' ? [] : (await resolveBeneath(tree, [], parent, Missing.Create)).at;
  const existing: NodeKind = (await tree.look(dir, name)).kind;
  return { dir, path: tree.path([...dir, name]), action: leafAction(kind, existing, rel) };
}

async function clear(leaf: Leaf): Promise<void> {
  if (leaf.action === LeafAction.Replace) await unlink(leaf.path);
}

async function extractInto(source: ByteStream, root: string, limit: number | undefined): Promise<ExtractResult> {
  const tree = diskTree(await realpath(root));
  const extract = tar.extract();
  const feeding = pipeline(Readable.from(source, { objectMode: false }), extract).catch((err: unknown) => err);
  // An archive cut short inside a file fails the feed but leaves that file's entry stream open:
  // without this, writing the entry would wait for bytes that never come.
  const fed = new AbortController();
  void feeding.then((err) => err && fed.abort(err));
  let files = 0;
  let bytes = 0;
  try {
    for await (const entry of extract) {
      const { header } = entry;
      const kind = entryKind(header.type, header.name);
      const rel = safeEntryPath(header.name);
      if (rel === '') {
        if (kind !== EntryKind.Directory) throw unsafe(`a ${kind} entry has an empty name`);
        entry.resume();
        continue;
      }
      switch (kind) {
        case EntryKind.Directory: {
          const leaf = await leafFor(tree, rel, kind);
          await clear(leaf);
          if (leaf.action !== LeafAction.Keep) await mkdir(leaf.path, { mode: dirMode(header.mode) });
          break;
        }
        case EntryKind.File: {
          bytes += header.size ?? 0;
          if (limit !== undefined && bytes > limit) {
            throw new FerryError(ErrorCode.TargetTooSmall, `archive content exceeds the usable target capacity of ${limit} bytes`);
          }
          const leaf = await leafFor(tree, rel, kind);
          await clear(leaf);
          const mode = fileMode(header.mode);
          const file = await open(leaf.path, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, mode);
          try {
            await file.chmod(mode); // fchmod: the archive's mode without the umask, on the file just made
            await pipeline(entry, file.createWriteStream(), { signal: fed.signal }); // closes the file when done
          } finally {
            await file.close(); // no-op once the stream closed it; closes it if chmod failed
          }
          files += 1;
          continue; // the entry stream is consumed
        }
        case EntryKind.Symlink: {
          const target = header.linkname ?? '';
          checkLinkTarget(rel, target);
          const leaf = await leafFor(tree, rel, kind);
          await resolveBeneath(tree, leaf.dir, target, Missing.Check);
          await clear(leaf);
          await symlink(target, leaf.path);
          break;
        }
        case EntryKind.HardLink: {
          const from = await hardLinkSource(tree, header.linkname ?? '', rel);
          const leaf = await leafFor(tree, rel, kind);
          if (leaf.path === from) break; // a link to itself: already there
          await clear(leaf);
          await link(from, leaf.path);
          break;
        }
      }
      entry.resume();
    }
    const err = await feeding;
    if (err) throw err;
    await checkAllLinks(tree);
  } catch (err) {
    extract.destroy();
    const feedError = await feeding;
    // A source failure (network, checksum) is the real cause of a half-read archive.
    if (feedError instanceof FerryError) throw feedError;
    if (err instanceof FerryError) throw err;
    // Destroying the parser ends the feed with "premature close": that is our doing, not the archive's,
    // and the error that made us stop (a full volume: NO_SPACE) is the one to report.
    const ours = (feedError as NodeJS.ErrnoException | undefined)?.code === 'ERR_STREAM_PREMATURE_CLOSE';
    if (feedError && !ours) throw new FerryError(ErrorCode.InvalidImage, `not a valid tar archive: ${(feedError as Error).message}`, { cause: feedError });
    throw toFerryError(err, ErrorCode.TargetError);
  }
  return { files, bytes };
}

/** The real path of a hard link's target: a regular file already extracted, reached beneath the root. */
async function hardLinkSource(tree: DiskTree, linkname: string, entry: string): Promise<string> {
  const from = safeEntryPath(linkname);
  if (from === '') throw unsafe(`hard link "${entry}" has no target`);
  const parent = posix.dirname(from);
  const dir = parent === '.' ? [] : (await resolveBeneath(tree, [], parent, Missing.Refuse)).at;
  const name = posix.basename(from);
  const node = await tree.look(dir, name);
  if (node.kind !== 'file') throw unsafe(`hard link "${entry}" points to "${linkname}", which is not a file extracted before it (${node.kind})`);
  return tree.path([...dir, name]);
}

/**
 * The verdict that counts: every symlink in the finished staging tree, resolved from its own
 * directory against the tree as it will be committed, stays beneath the root.
 */
async function checkAllLinks(tree: DiskTree): Promise<void> {
  const pending: string[][] = [[]];
  for (let dir = pending.pop(); dir !== undefined; dir = pending.pop()) {
    for (const name of await readdir(tree.path(dir))) {
      const node = await tree.look(dir, name); // lstat, not d_type, which some filesystems leave unknown
      if (node.kind === 'directory') pending.push([...dir, name]);
      else if (node.kind === 'symlink') await resolveBeneath(tree, dir, node.target, Missing.Check);
    }
  }
}

function fileMode(mode: number | undefined): number {
  return (mode ?? 0o644) & 0o777; // no setuid/setgid/sticky from an untrusted archive
}

function dirMode(mode: number | undefined): number {
  return ((mode ?? 0o755) & 0o777) | 0o700;
}

/** Moves the staged top-level entries into the target, replacing what was there under those names. */
async function commit(staging: string, target: string): Promise<void> {
  for (const name of await readdir(staging)) {
    const dest = join(target, name);
    await rm(dest, { recursive: true, force: true });
    await rename(join(staging, name), dest);
  }
}
