/** What every benchmark here shares: one timed command with a cold page cache, and medians. */

import { execFileSync, spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';

export interface Sample {
  readonly seconds: number;
  readonly peakRssMiB: number;
  /** User + system CPU seconds of the command and its children (a figure load changes less than wall time). */
  readonly cpuSeconds: number;
}

export function dropCaches(): void {
  execFileSync('sync');
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3');
  } catch {
    // not root: caches stay warm, which favours every contender alike
  }
}

/**
 * Runs a shell command under /usr/bin/time after dropping the page cache, with a final `sync`
 * inside the timing; returns wall seconds and the peak RSS of the largest process. Asynchronous:
 * servers living in the benchmark's own process must keep serving meanwhile.
 */
export async function measure(command: string, env: NodeJS.ProcessEnv = {}): Promise<Sample> {
  dropCaches();
  const child = spawn('/usr/bin/time', ['-f', '%e %M %U %S', 'sh', '-c', `${command} && sync`], { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const status = await new Promise<number | null>((resolve) => child.on('close', resolve));
  if (status !== 0) throw new Error(`failed: ${command}\n${stderr}`);
  const [seconds, kb, user, system] = (stderr.trim().split('\n').at(-1) ?? '').split(' ').map(Number);
  return { seconds: seconds ?? NaN, peakRssMiB: Math.round((kb ?? 0) / 1024), cpuSeconds: (user ?? NaN) + (system ?? NaN) };
}

export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)] ?? NaN;
}
