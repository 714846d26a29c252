/**
 * Path resolution beneath an extraction root, done by us and not by the kernel: the semantics of
 * openat2(RESOLVE_BENEATH), which Node does not expose. A path is walked one name at a time from
 * the root as the tree stands now; a symbolic link met on the way is read and its target spliced
 * into the walk, and `..` pops one level of the walk itself, so a link cannot take the walk above
 * the root however links are chained or re-pointed. What comes back is a list of names of real
 * directories, so the one system call made with it afterwards (mkdir, open, link, symlink, unlink
 * of the last name) follows no link in its parent: nothing outside the root is looked at, created
 * or written, even transiently.
 *
 * The walk is over a `TreeView`, so the decision is tested on an in-memory tree and executed on
 * the real one (archive.ts). No concurrent writer exists: the root is a fresh 0700 staging
 * directory and the only writer is the extraction itself, so a check and the call that follows it
 * see the same tree.
 */

import { ErrorCode, FerryError } from '../errors.js';

/** What one name is, as lstat sees it: a link is never followed to answer. */
export type Node =
  | { readonly kind: 'directory' }
  | { readonly kind: 'file' }
  | { readonly kind: 'symlink'; readonly target: string }
  | { readonly kind: 'other' }
  | { readonly kind: 'missing' };

export type NodeKind = Node['kind'];

/** The tree being extracted, addressed by lists of names from the root (no links among them). */
export interface TreeView {
  look(dir: readonly string[], name: string): Promise<Node>;
  /** Creates the directory `name` in `dir` (not recursive); only the Create mode calls it. */
  mkdir(dir: readonly string[], name: string): Promise<void>;
}

/**
 * What a walk does with a name that does not exist. Create: make it a directory (an entry's parent
 * path, as tar does). Refuse: the path must exist (a hard link's target). Check: the path may be
 * dangling (a symlink's target); what follows a missing name is taken as written, except `..`,
 * which is refused: what `..` after a missing name means depends on what a later entry (or a
 * later import into the same directory) puts there, so no verdict given now could hold.
 */
export const Missing = { Create: 'create', Refuse: 'refuse', Check: 'check' } as const;
export type Missing = (typeof Missing)[keyof typeof Missing];

/** As Linux's MAXSYMLINKS: more links than this on one walk is a loop or an attack. */
export const MAX_LINKS = 40;

/**
 * Names walked on one resolution, links' targets included: a bound on the work a hostile archive
 * can ask for per entry (40 links of long targets), far above any honest path.
 */
export const MAX_STEPS = 4096;

export interface Resolved {
  /** The names of the place reached, from the root. */
  readonly at: readonly string[];
  /** What is there (Check mode: `missing` when the path dangles). */
  readonly kind: Exclude<NodeKind, 'symlink'>;
}

function unsafe(message: string): FerryError {
  return new FerryError(ErrorCode.UnsafeArchive, message);
}

/** Pure: the names of a relative path (`.` and empty names dropped), or UNSAFE_ARCHIVE if absolute. */
export function splitRelative(path: string, what: string): string[] {
  if (path === '') throw unsafe(`${what} is empty`);
  if (path.startsWith('/')) throw unsafe(`${what} is the absolute path "${path}"`);
  if (path.includes('\0')) throw unsafe(`${what} contains a NUL byte`);
  return path.split('/').filter((name) => name !== '' && name !== '.');
}

/**
 * Walks `path` from the directory `start` (names from the root), following every link, the last
 * name's included. Every name but the last must turn out to be a directory (Check mode: or be
 * missing); the last one too in Create and Refuse modes, which resolve directories.
 */
export async function resolveBeneath(tree: TreeView, start: readonly string[], path: string, mode: Missing): Promise<Resolved> {
  const at = [...start];
  const todo = splitRelative(path, `path "${path}"`);
  let links = 0;
  let steps = 0;
  let dangling = false;
  let kind: Resolved['kind'] = 'directory';
  for (let name = todo.shift(); name !== undefined; name = todo.shift()) {
    steps += 1;
    if (steps > MAX_STEPS) throw unsafe(`"${path}" takes more than ${MAX_STEPS} steps to resolve`);
    if (name === '..') {
      if (dangling) throw unsafe(`"${path}" climbs out of a path that does not exist ("${at.join('/')}")`);
      if (at.length === 0) throw unsafe(`"${path}" resolves outside the directory`);
      at.pop();
      kind = 'directory';
      continue;
    }
    if (dangling) {
      at.push(name);
      continue;
    }
    const node = await tree.look(at, name);
    switch (node.kind) {
      case 'directory':
        at.push(name);
        kind = 'directory';
        break;
      case 'symlink':
        links += 1;
        if (links > MAX_LINKS) throw unsafe(`"${path}" goes through more than ${MAX_LINKS} links`);
        // Relative to the directory holding the link, which is where the walk stands.
        todo.unshift(...splitRelative(node.target, `the link "${[...at, name].join('/')}"`));
        break;
      case 'missing':
        if (mode === Missing.Refuse) throw unsafe(`"${path}" does not exist in the archive ("${[...at, name].join('/')}")`);
        if (mode === Missing.Create) {
          await tree.mkdir(at, name);
          at.push(name);
          kind = 'directory';
        } else {
          at.push(name);
          dangling = true;
        }
        break;
      case 'file':
      case 'other':
        if (mode !== Missing.Check) throw unsafe(`"${path}" goes through "${[...at, name].join('/')}", which is not a directory`);
        at.push(name);
        // A file in the middle of a path makes it dangle (ENOTDIR), at its end it is the target.
        if (todo.length > 0) dangling = true;
        else kind = node.kind;
        break;
    }
  }
  return { at, kind: dangling ? 'missing' : kind };
}

/** The kinds of entry extracted (everything else is refused before it touches the tree). */
export const EntryKind = { Directory: 'directory', File: 'file', Symlink: 'symlink', HardLink: 'link' } as const;
export type EntryKind = (typeof EntryKind)[keyof typeof EntryKind];

/** What to do with the name an entry is extracted to, given what is there now. */
export const LeafAction = { Create: 'create', Keep: 'keep', Replace: 'replace' } as const;
export type LeafAction = (typeof LeafAction)[keyof typeof LeafAction];

/**
 * Pure: as GNU tar by default, a later entry replaces an earlier non-directory of the same name
 * (unlinked first, never written through) and a directory entry merges into an existing
 * directory. Replacing a directory is refused: its subtree was checked as it stands, and a link in
 * its place would re-point every link that goes through it.
 */
export function leafAction(entry: EntryKind, existing: NodeKind, name: string): LeafAction {
  if (existing === 'missing') return LeafAction.Create;
  if (existing === 'directory') {
    if (entry === EntryKind.Directory) return LeafAction.Keep;
    throw unsafe(`entry "${name}" would replace a directory`);
  }
  return LeafAction.Replace;
}
