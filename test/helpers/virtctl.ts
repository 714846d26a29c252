/**
 * The real virtctl (kubevirt.io/kubevirt cmd/virtctl v1.8.4) for the tests: found in the cache
 * scripts/build-virtctl.sh fills (outside the repo), or built there once (about 3 min on an idle
 * two-core machine with a cold Go cache, 7 min on a loaded one; give the caller's hook that long).
 */

import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const VIRTCTL_VERSION = 'v1.8.4';
/** How long a cold build may take before the helper gives up. */
export const VIRTCTL_BUILD_TIMEOUT_MS = 20 * 60 * 1000;

/** Where scripts/build-virtctl.sh puts the binary (same logic as BIN_DIR there). */
export function virtctlPath(env: NodeJS.ProcessEnv = process.env): string {
  const cache = env.FERRY_CACHE_DIR || join(env.HOME || homedir(), '.cache', 'ferry');
  return join(cache, `virtctl-${VIRTCTL_VERSION}`, 'virtctl');
}

function repoRoot(): string {
  for (let dir = dirname(fileURLToPath(import.meta.url)); ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'scripts', 'build-virtctl.sh'))) return dir;
    if (dirname(dir) === dir) throw new Error('virtctl: scripts/build-virtctl.sh not found above this file');
  }
}

/** The binary's path, building it first if the cache has none. */
export function buildOrFindVirtctl(): string {
  const path = virtctlPath();
  if (existsSync(path)) return path;
  execFileSync('bash', [join(repoRoot(), 'scripts', 'build-virtctl.sh')], { stdio: ['ignore', 'inherit', 'inherit'], timeout: VIRTCTL_BUILD_TIMEOUT_MS });
  if (!existsSync(path)) throw new Error(`virtctl: scripts/build-virtctl.sh ran but ${path} is missing`);
  return path;
}
