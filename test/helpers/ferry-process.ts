/** Runs the real `ferry` executable as a child process, as a user or the kubelet would. */

import { spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';
import { dirname, join } from 'node:path';

// dist/test/helpers → repository root
export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const FERRY_BIN = join(REPO_ROOT, 'bin', 'ferry.js');

export interface ProcessResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

export interface RunningProcess {
  readonly done: Promise<ProcessResult>;
  kill(signal?: NodeJS.Signals): void;
}

export function startFerry(args: readonly string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000): RunningProcess {
  const child = spawn(process.execPath, [FERRY_BIN, ...args], { env: { PATH: process.env.PATH, HOME: process.env.HOME, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const done = new Promise<ProcessResult>((resolve) => {
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
  return { done, kill: (signal: NodeJS.Signals = 'SIGKILL') => child.kill(signal) };
}

export function runFerry(args: readonly string[], env: NodeJS.ProcessEnv = {}): Promise<ProcessResult> {
  return startFerry(args, env).done;
}

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
