/**
 * `ferry clone-source`: the clone source pod's program. Composition root: reads its environment
 * (src/contract/clone-env.ts), loads the TLS files, sends the source volume (read-only, never
 * through a link) to the target, writes the termination message and exits with its code.
 * SIGTERM stops the transfer: INTERRUPTED, and the target keeps nothing.
 */

import { ErrorCode, toFerryError } from '../src/errors.js';
import { createLogger } from '../src/logging.js';
import { TERMINATION_MESSAGE_PATH, type TerminationMessage } from '../src/contract/termination.js';
import { readPemFile } from '../src/io/pem-file.js';
import { endWith } from './outcome.js';
import { CloneSourceEnv, decodeCloneSourceEnv } from '../src/contract/clone-env.js';
import { sendClone } from './source.js';

export async function cloneSourceMain(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const logger = createLogger({ name: 'ferry-clone-source', level: env.FERRY_LOG_LEVEL ?? 'info' });
  const terminationPath = env[CloneSourceEnv.TerminationLog] || TERMINATION_MESSAGE_PATH;
  let outcome: TerminationMessage;
  const controller = new AbortController();
  const onTerm = (): void => controller.abort();
  process.once('SIGTERM', onTerm);
  try {
    const config = decodeCloneSourceEnv(env);
    const tls = {
      key: readPemFile(CloneSourceEnv.ClientKeyFile, config.tls.keyFile),
      cert: readPemFile(CloneSourceEnv.ClientCertFile, config.tls.certFile),
      serverCa: readPemFile(CloneSourceEnv.ServerCaFile, config.tls.serverCaFile),
    };
    logger.info({ kind: config.kind, path: config.path, url: config.url }, 'clone source starting');
    const started = Date.now();
    const sent = await sendClone({ config, tls, signal: controller.signal });
    const seconds = (Date.now() - started) / 1000;
    logger.info({ ...sent, seconds }, 'clone sent');
    outcome = { kind: 'success', message: `Clone sent: ${sent.dataBytes} bytes of data, ${sent.wireBytes} on the wire`, scratchSpaceRequired: false, preallocationApplied: false };
  } catch (err) {
    const error = controller.signal.aborted ? toFerryError(err, ErrorCode.Interrupted) : toFerryError(err);
    const code = controller.signal.aborted ? ErrorCode.Interrupted : error.code;
    logger.error({ code }, error.message);
    outcome = { kind: 'failure', code, message: error.message, retryable: code === ErrorCode.Interrupted || error.retryable };
  } finally {
    process.removeListener('SIGTERM', onTerm);
  }
  return endWith(outcome, terminationPath, logger);
}
