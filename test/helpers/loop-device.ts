/** Loop devices for block-volume tests (root can attach them here; elsewhere the callers skip). */

import { execFileSync } from 'node:child_process';

/** A loop device over `file` (read-only if asked), pushed onto `attached` for detachLoops; undefined where losetup cannot attach one. */
export function attachLoop(file: string, attached: string[], readOnly = false): string | undefined {
  try {
    const device = execFileSync('losetup', [...(readOnly ? ['-r'] : []), '-f', '--show', file], { stdio: ['ignore', 'pipe', 'pipe'] }).toString().trim();
    attached.push(device);
    return device;
  } catch {
    return undefined;
  }
}

export function detachLoops(attached: string[]): void {
  for (const device of attached.splice(0)) execFileSync('losetup', ['-d', device]);
}
