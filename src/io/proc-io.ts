/** A process's I/O counters from /proc/<pid>/io, for progress and minimum-speed checks on children. */

import { readFileSync } from 'node:fs';

/**
 * Bytes the process has read (`rchar`: its sockets and files, TLS included) or written (`wchar`)
 * so far; undefined where /proc does not tell (no such process, not readable).
 */
export function ioCounter(pid: number | undefined, field: 'rchar' | 'wchar'): number | undefined {
  if (pid === undefined) return undefined;
  try {
    const m = new RegExp(`^${field}:\\s*(\\d+)$`, 'm').exec(readFileSync(`/proc/${pid}/io`, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}
