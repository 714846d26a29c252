/**
 * Where scripts/build-control-plane.sh puts the Kubernetes binaries, and at which versions: shared by
 * the test control plane (test/helpers/cluster.ts) and the one-node cluster (tools/node-cluster/),
 * which `npm run demo` also uses, so neither scripts/ nor tools/ import anything from test/.
 */

import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));

/** The repo root, whether this runs as tools/control-plane/bin-dir.ts or dist/tools/control-plane/bin-dir.js. */
export function repoRoot(): string {
  for (let dir = HERE; ; dir = dirname(dir)) {
    if (existsSync(join(dir, 'tools', 'control-plane', 'versions.env')) && existsSync(join(dir, 'package.json'))) return dir;
    if (dirname(dir) === dir) throw new Error(`control-plane: tools/control-plane/versions.env not found above ${HERE}`);
  }
}

export interface ControlPlaneVersions {
  readonly kubernetes: string;
  readonly etcd: string;
}

/** The versions from tools/control-plane/versions.env (the one place they are named). */
export function controlPlaneVersions(): ControlPlaneVersions {
  const text = readFileSync(join(repoRoot(), 'tools', 'control-plane', 'versions.env'), 'utf8');
  const vars = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z0-9_]+)=(\S+)\s*$/.exec(line);
    if (m) vars.set(m[1]!, m[2]!.replace(/^["']|["']$/g, ''));
  }
  const kubernetes = vars.get('KUBERNETES_VERSION');
  const etcd = vars.get('ETCD_VERSION');
  if (!kubernetes || !etcd) throw new Error('control-plane: versions.env lacks KUBERNETES_VERSION or ETCD_VERSION');
  return { kubernetes, etcd };
}

/**
 * Where scripts/build-control-plane.sh puts the binaries (same logic as cp_bin_dir in
 * tools/control-plane/common.sh): ${FERRY_CACHE_DIR:-$HOME/.cache/ferry}/control-plane/k8s-<ver>_etcd-<ver>/bin
 */
export function controlPlaneBinDir(env: NodeJS.ProcessEnv = process.env): string {
  const v = controlPlaneVersions();
  const cache = env.FERRY_CACHE_DIR || join(env.HOME || homedir(), '.cache', 'ferry');
  return join(cache, 'control-plane', `k8s-${v.kubernetes}_etcd-${v.etcd}`, 'bin');
}
