/**
 * nbdkit's curl plugin as a random-access view of an HTTP(S) image, so qemu-img reads a remote
 * qcow2 (vmdk, ...) in place and writes the target once, with no scratch copy. nbdkit is used
 * rather than qemu-img's own curl driver, which hangs in about a third of runs on Debian's QEMU 7.2
 * (measured: ../shared/reference/infra.md §1–2); the retry filter rides out dropped connections.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { rootCertificates } from 'node:tls';
import { ErrorCode, FerryError } from '../src/errors.js';
import type { Credentials } from '../src/contract/import-spec.js';

export interface NbdHttpOptions {
  readonly url: string;
  readonly credentials?: Credentials;
  /** Extra CA certificates (PEM), trusted in addition to the system roots. */
  readonly caPems?: readonly string[];
  readonly insecureTls: boolean;
  readonly proxy?: string;
  /** curl's per-request timeout. */
  readonly timeoutSeconds: number;
  readonly startTimeoutMs?: number;
}

export interface NbdExport {
  /** What qemu-img opens: nbd+unix:///?socket=<absolute path>. */
  readonly uri: string;
  stop(): Promise<void>;
}

export async function serveHttpOverNbd(options: NbdHttpOptions): Promise<NbdExport> {
  const dir = await mkdtemp(join(tmpdir(), 'ferry-nbd-'));
  const socket = join(dir, 'nbd.sock');
  const args = ['--exit-with-parent', '--foreground', '--readonly', '--unix', socket, '--filter=retry', 'curl', `url=${options.url}`];
  args.push('user-agent=ferry-importer', `timeout=${options.timeoutSeconds}`, 'retries=5', 'retry-delay=1');
  if (options.insecureTls) args.push('sslverify=false');
  if (options.caPems && options.caPems.length > 0) {
    // curl's CA file replaces the default bundle: give it the system roots and the extra ones.
    const bundle = join(dir, 'ca.pem');
    await writeFile(bundle, [...rootCertificates, ...options.caPems].join('\n'), { mode: 0o600 });
    args.push(`cainfo=${bundle}`);
  }
  if (options.proxy) args.push(`proxy=${options.proxy}`);
  if (options.credentials) args.push(`user=${options.credentials.username}`, 'password=-3');
  const child: ChildProcess = spawn('nbdkit', args, { stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (d: string) => {
    stderr = (stderr + d).slice(-2048);
  });
  // The password travels over an inherited pipe, never on the command line.
  const passwordPipe = child.stdio[3] as NodeJS.WritableStream | null;
  if (options.credentials) passwordPipe?.end(`${options.credentials.password}\n`);
  else passwordPipe?.end();
  let exited = false;
  child.once('exit', () => {
    exited = true;
  });
  const stop = async (): Promise<void> => {
    if (!exited) {
      child.kill('SIGTERM');
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          child.kill('SIGKILL');
          resolve();
        }, 2000);
        child.once('exit', () => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    await rm(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + (options.startTimeoutMs ?? 15_000);
  for (;;) {
    if (await stat(socket).then(() => true, () => false)) break;
    if (exited || Date.now() > deadline) {
      await stop();
      throw new FerryError(ErrorCode.SourceUnavailable, `nbdkit could not serve the image: ${stderr.trim() || 'no socket'}`);
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  return { uri: `nbd+unix:///?socket=${socket}`, stop };
}
