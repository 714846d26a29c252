/**
 * `ferry uploadserver`: the upload server pod's program. Composition root: reads the configuration
 * from the environment (src/contract/upload-server.ts), loads the TLS files, serves one upload,
 * writes the termination message and exits 0 after success, as CDI's server does. SIGTERM stops a
 * running import (its partial disk removed) and exits INTERRUPTED; a `DEADLINE` that passes with no
 * upload done exits the same way, so the controller replaces the pod (and its certificate).
 */

import { readFileSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { ErrorCode, ERROR_TABLE, FerryError, toFerryError } from '../src/errors.js';
import { createLogger } from '../src/logging.js';
import { encodeTermination, type TerminationMessage } from '../src/contract/termination.js';
import { decodeUploadServerEnv, UploadServerEnv } from '../src/contract/upload-server.js';
import { TERMINATION_MESSAGE_PATH } from '../src/contract/termination.js';
import { tuningFromEnv } from './main.js';
import { Progress, throttled } from './progress.js';
import { createUploadServer } from './upload-server.js';

function readPem(name: string, path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (err) {
    throw new FerryError(ErrorCode.InvalidSpec, `${name}: cannot read ${path}: ${(err as Error).message}`, { cause: err });
  }
}

export async function uploadServerMain(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const logger = createLogger({ name: 'ferry-uploadserver', level: env.FERRY_LOG_LEVEL ?? 'info' });
  const terminationPath = env[UploadServerEnv.TerminationLog] || TERMINATION_MESSAGE_PATH;
  const write = (outcome: TerminationMessage): Promise<void> =>
    writeFile(terminationPath, encodeTermination(outcome)).catch((err: unknown) => logger.warn({ path: terminationPath, err: (err as Error).message }, 'cannot write the termination message'));
  let outcome: TerminationMessage;
  try {
    const config = decodeUploadServerEnv(env);
    const tls = {
      key: readPem(UploadServerEnv.TlsKeyFile, config.tls.keyFile),
      cert: readPem(UploadServerEnv.TlsCertFile, config.tls.certFile),
      clientCa: readPem(UploadServerEnv.ClientCaFile, config.tls.clientCaFile),
    };
    const progress = new Progress();
    progress.subscribe(throttled((s) => logger.info({ phase: s.phase, bytes: s.bytes, total: s.total, percent: Number(s.percent.toFixed(2)) }, 'progress'), 5000, Date.now));
    const upload = createUploadServer({ config, tls, logger, tuning: tuningFromEnv(env), progress });
    const stopped = new Promise<TerminationMessage>((resolve) => {
      const stop = (message: string): void => {
        // A resumable upload's bytes so far are made durable first (at most 10 s): the next server resumes there.
        let timer: NodeJS.Timeout | undefined;
        void Promise.race([upload.flush(), new Promise<void>((r) => (timer = setTimeout(r, 10_000)))]).finally(() => {
          clearTimeout(timer);
          upload.abort();
          resolve({ kind: 'failure', code: ErrorCode.Interrupted, message, retryable: true });
        });
      };
      process.once('SIGTERM', () => stop('the upload server was stopped before an upload finished'));
      if (config.deadline !== undefined) {
        setTimeout(() => stop('deadlinePassed: no upload finished before the deadline'), Math.max(0, config.deadline - Date.now())).unref();
      }
    });
    await upload.ready;
    await new Promise<void>((resolve, reject) => {
      upload.server.once('error', reject);
      upload.server.listen(config.port, config.host, () => resolve());
    });
    const address = upload.server.address();
    logger.info({ port: typeof address === 'object' && address ? address.port : config.port, target: config.target, contentType: config.contentType, capacity: config.capacity }, 'upload server listening');
    outcome = await Promise.race([upload.finished, stopped]);
    upload.server.close();
    upload.server.closeAllConnections();
  } catch (err) {
    const error = toFerryError(err);
    logger.error({ code: error.code }, error.message);
    outcome = { kind: 'failure', code: error.code, message: error.message, retryable: error.retryable };
  }
  await write(outcome);
  if (outcome.kind === 'success') logger.info({ ...outcome }, outcome.message);
  return outcome.kind === 'success' ? 0 : ERROR_TABLE[outcome.code].exitCode;
}
