/**
 * `ferry clone-target`: the clone target pod's program. Composition root: reads the upload
 * server's environment (src/contract/clone-env.ts: CLIENT_NAME required), loads the TLS files,
 * takes one clone, writes the termination message and exits with its code, as the importer does.
 * While it runs it serves its progress (`FERRY_METRICS_PORT`, clone/progress.ts) as an importer does.
 * SIGTERM (or a DEADLINE passed with no clone) stops it with INTERRUPTED; no disk is left.
 */

import { ErrorCode, toFerryError } from '../src/errors.js';
import { createLogger } from '../src/logging.js';
import { TERMINATION_MESSAGE_PATH, type TerminationMessage } from '../src/contract/termination.js';
import { readPemFile } from '../src/io/pem-file.js';
import { endWith } from './outcome.js';
import { UploadServerEnv } from '../src/contract/upload-server.js';
import { decodeCloneTargetEnv, decodeCloneTargetProgress } from '../src/contract/clone-env.js';
import { createCloneProgressMetrics, serveProgress } from './progress.js';
import { createCloneTarget } from './target.js';

export async function cloneTargetMain(env: NodeJS.ProcessEnv = process.env): Promise<number> {
  const logger = createLogger({ name: 'ferry-clone-target', level: env.FERRY_LOG_LEVEL ?? 'info' });
  const terminationPath = env[UploadServerEnv.TerminationLog] || TERMINATION_MESSAGE_PATH;
  let outcome: TerminationMessage;
  try {
    const config = decodeCloneTargetEnv(env);
    const tls = {
      key: readPemFile(UploadServerEnv.TlsKeyFile, config.tls.keyFile),
      cert: readPemFile(UploadServerEnv.TlsCertFile, config.tls.certFile),
      clientCa: readPemFile(UploadServerEnv.ClientCaFile, config.tls.clientCaFile),
    };
    const progress = decodeCloneTargetProgress(env, config.port);
    const metrics = createCloneProgressMetrics(progress.ownerUid);
    // Progress is best effort: a port that cannot be had costs the percentage, not the clone.
    if (progress.metricsPort !== 0) await serveProgress(metrics.registry, progress.metricsPort, config.host).catch((err: unknown) => logger.warn({ port: progress.metricsPort, err: String(err) }, 'no progress endpoint'));
    const target = createCloneTarget({ config, tls, logger, onProgress: (percent) => metrics.report(percent) });
    const stopped = new Promise<TerminationMessage>((resolve) => {
      const stop = (message: string): void => {
        target.abort();
        resolve({ kind: 'failure', code: ErrorCode.Interrupted, message, retryable: true });
      };
      process.once('SIGTERM', () => stop('the clone target was stopped before a clone finished'));
      if (config.deadline !== undefined) setTimeout(() => stop('deadlinePassed: no clone finished before the deadline'), Math.max(0, config.deadline - Date.now())).unref();
    });
    await new Promise<void>((resolve, reject) => {
      target.server.once('error', reject);
      target.server.listen(config.port, config.host, () => resolve());
    });
    const address = target.server.address();
    logger.info({ port: typeof address === 'object' && address ? address.port : config.port, target: config.target, capacity: config.capacity }, 'clone target listening');
    outcome = await Promise.race([target.finished, stopped]);
    // A stopped transfer settles too, once its partial disk is gone.
    if (target.busy()) await Promise.race([target.finished, new Promise((r) => setTimeout(r, 10_000).unref())]);
    target.server.close();
    target.server.closeAllConnections();
  } catch (err) {
    const error = toFerryError(err);
    logger.error({ code: error.code }, error.message);
    outcome = { kind: 'failure', code: error.code, message: error.message, retryable: error.retryable };
  }
  return endWith(outcome, terminationPath, logger);
}
