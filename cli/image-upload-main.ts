/**
 * `ferry image-upload pvc|dv NAME --image-path FILE ...`: virtctl's image-upload, resumable where
 * the proxy offers it. Composition root: flags, the kubeconfig, the clock, the exit status (the
 * error table's exit code, with the reason on stderr), Ctrl-C.
 */

import { readFileSync } from 'node:fs';
import { KubeConfig } from '@kubernetes/client-node';
import { ERROR_TABLE, ErrorCode, FerryError, toFerryError } from '../src/errors.js';
import { IMAGE_UPLOAD_USAGE, parseImageUploadArgs } from './upload/plan.js';
import { imageUpload } from './upload/run.js';

interface Io {
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream & { readonly isTTY?: boolean };
}

export async function imageUploadCommand(argv: readonly string[], io: Io, env: NodeJS.ProcessEnv = process.env): Promise<number> {
  try {
    const options = parseImageUploadArgs(argv);
    if (options === 'help') {
      io.stdout.write(`${IMAGE_UPLOAD_USAGE}\n`);
      return 0;
    }
    const kc = new KubeConfig();
    if (options.kubeconfig) kc.loadFromFile(options.kubeconfig);
    else kc.loadFromDefault();
    // As Go's default transport (virtctl without --insecure): SSL_CERT_FILE names extra trust.
    const caFile = env.SSL_CERT_FILE;
    // Ctrl-C or SIGTERM ends the command at once, closing a port-forward's listener and streams first.
    const interrupt = new AbortController();
    const interrupted = new Promise<never>((_resolve, reject) => {
      interrupt.signal.addEventListener('abort', () => reject(new FerryError(ErrorCode.Interrupted, `interrupted (${String(interrupt.signal.reason)})`)), { once: true });
    });
    const onSignal = (signal: NodeJS.Signals): void => interrupt.abort(signal);
    process.once('SIGINT', onSignal);
    process.once('SIGTERM', onSignal);
    try {
      await Promise.race([
        imageUpload(options, {
          kc,
          say: (line) => io.stdout.write(`${line}\n`),
          warn: (line) => io.stderr.write(`${line}\n`),
          progressOut: io.stderr,
          now: Date.now,
          sleep: (ms) => new Promise<void>((resolve) => setTimeout(resolve, ms)),
          signal: interrupt.signal,
          ...(caFile ? { ca: readFileSync(caFile) } : {}),
        }),
        interrupted,
      ]);
    } finally {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      interrupted.catch(() => undefined);
    }
    return 0;
  } catch (err) {
    const error = toFerryError(err);
    io.stderr.write(`error: ${error.message} [${error.code}]\n`);
    return ERROR_TABLE[error.code].exitCode;
  }
}
