/**
 * The memory limit this process runs under: the lowest `memory.max` (cgroup v2) or
 * `memory.limit_in_bytes` (v1) from its own cgroup up to the root. A container's limit is what the
 * kernel holds its page cache to; outside any limit the kernel's own dirty-page limits apply.
 * Read once at start-up by a composition root; the parsing is pure.
 */

import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** v1 writes "no limit" as the largest page-aligned signed 64-bit number; anything near it is none. */
const NO_LIMIT_FROM = 2 ** 60;

/** Pure: a limit file's text as bytes; undefined for none ("max", v1's unlimited, or unreadable text). */
export function parseMemoryLimit(text: string): number | undefined {
  const value = text.trim();
  if (!/^\d+$/.test(value)) return undefined;
  const bytes = Number(value);
  return bytes > 0 && bytes < NO_LIMIT_FROM ? bytes : undefined;
}

/** Which cgroup (path from the hierarchy's root) a `/proc/self/cgroup` text puts this process in, per version. */
export function ownCgroups(procSelfCgroup: string): { readonly v2?: string; readonly v1?: string } {
  let v2: string | undefined;
  let v1: string | undefined;
  for (const line of procSelfCgroup.split('\n')) {
    const m = /^(\d+):([^:]*):(\/.*)$/.exec(line.trim());
    if (!m) continue;
    const [, id, controllers, path] = m as unknown as [string, string, string, string];
    if (id === '0' && controllers === '') v2 = path;
    else if (controllers.split(',').includes('memory')) v1 = path;
  }
  return { ...(v2 !== undefined ? { v2 } : {}), ...(v1 !== undefined ? { v1 } : {}) };
}

/** Pure: `path` and each of its ancestors up to '/', the deepest first. */
export function selfAndAncestors(path: string): string[] {
  const parts = path.split('/').filter((p) => p !== '');
  return Array.from({ length: parts.length + 1 }, (_, i) => `/${parts.slice(0, parts.length - i).join('/')}`);
}

/**
 * The lowest limit on the way from `path` up, reading `file` in each folder under `mount` that
 * exists. In a container with its own cgroup namespace the path is '/' and the mount is its cgroup;
 * without one, its own folder is mounted at the root, and the root's file (read last) is its limit.
 */
function lowestLimit(mount: string, path: string, file: string, read: (p: string) => string | undefined): number | undefined {
  let lowest: number | undefined;
  for (const dir of selfAndAncestors(path)) {
    const text = read(join(mount, dir, file));
    const limit = text === undefined ? undefined : parseMemoryLimit(text);
    if (limit !== undefined) lowest = lowest === undefined ? limit : Math.min(lowest, limit);
  }
  return lowest;
}

function readOrUndefined(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    return undefined;
  }
}

/**
 * This process's memory limit in bytes, undefined when there is none (or no cgroup file says so).
 * `root`: where the cgroup hierarchies are mounted (tests point it elsewhere).
 */
export function cgroupMemoryLimit(root = '/sys/fs/cgroup', read: (path: string) => string | undefined = readOrUndefined): number | undefined {
  const own = ownCgroups(read('/proc/self/cgroup') ?? '');
  const limits: number[] = [];
  // v2: the unified hierarchy at the root (or at unified/ beside v1's).
  for (const mount of [root, join(root, 'unified')]) {
    const limit = lowestLimit(mount, own.v2 ?? '/', 'memory.max', read);
    if (limit !== undefined) limits.push(limit);
  }
  const v1 = lowestLimit(join(root, 'memory'), own.v1 ?? '/', 'memory.limit_in_bytes', read);
  if (v1 !== undefined) limits.push(v1);
  return limits.length > 0 ? Math.min(...limits) : undefined;
}
