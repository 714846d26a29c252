/**
 * The one way Ferry runs a short-lived tool (virsh, xorrisofs, qemu-img create, blockdev): an
 * argument array, never a shell; a time limit after which the child is killed; the output buffered up
 * to a bound; and a failure turned into a FerryError that says whether the tool is missing, timed out
 * or failed, with the tail of its stderr. Long-running children with streamed I/O (qemu-img convert,
 * nbdkit, decoders) are spawned by their owners.
 */

import { execFile } from 'node:child_process';
import { ErrorCode, FerryError } from '../errors.js';

export interface RunToolOptions {
  readonly timeoutMs: number;
  /** Bytes of stdout or stderr kept; past it the child fails (default 4 MiB). */
  readonly maxBuffer?: number;
  /** What the caller was doing, first in the message: `virsh define`, `cannot build the cloud-init ISO`. */
  readonly what?: string;
  /** The code of the FerryError thrown on failure (default INTERNAL). */
  readonly code?: ErrorCode;
  readonly signal?: AbortSignal;
}

export interface ToolOutput {
  readonly stdout: string;
  readonly stderr: string;
}

/** The last non-empty lines of a tool's stderr, bounded, for an error message. */
export function stderrTail(text: string, lines = 5, chars = 1000): string {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .slice(-lines)
    .join('\n')
    .slice(-chars);
}

/** Why a tool run failed, in words: missing, timed out, or its stderr's tail (else its exit status). */
export function toolFailureReason(file: string, err: NodeJS.ErrnoException & { killed?: boolean; signal?: string | null }, stderr: string, timeoutMs: number): string {
  if (err.code === 'ENOENT') return `${file} is not installed`;
  if (err.killed && err.signal === 'SIGKILL') return `${file} did not finish within ${timeoutMs} ms`;
  return stderrTail(stderr) || err.message;
}

export function runTool(file: string, args: readonly string[], options: RunToolOptions): Promise<ToolOutput> {
  return new Promise((resolve, reject) => {
    execFile(
      file,
      args,
      { timeout: options.timeoutMs, killSignal: 'SIGKILL', maxBuffer: options.maxBuffer ?? 4 * 1024 * 1024, encoding: 'utf8', ...(options.signal ? { signal: options.signal } : {}) },
      (err, stdout, stderr) => {
        if (!err) return resolve({ stdout, stderr });
        const e = err as NodeJS.ErrnoException & { killed?: boolean; signal?: string | null; code?: number | string };
        const why = toolFailureReason(file, e, stderr, options.timeoutMs);
        const details: Record<string, string | number> = { tool: file };
        if (typeof e.code === 'number') details.exitCode = e.code;
        const tail = stderrTail(stderr);
        if (tail) details.stderr = tail;
        reject(new FerryError(options.code ?? ErrorCode.Internal, `${options.what ?? `${file} ${args[0] ?? ''}`.trim()}: ${why}`, { cause: err, details }));
      },
    );
  });
}
