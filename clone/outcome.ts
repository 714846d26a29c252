/** How both clone programs end: the termination message written (as the importer's), and the exit status. */

import { writeFile } from 'node:fs/promises';
import { ERROR_TABLE } from '../src/errors.js';
import type { Logger } from '../src/logging.js';
import { encodeTermination, type TerminationMessage } from '../src/contract/termination.js';

export async function endWith(outcome: TerminationMessage, path: string, logger: Logger): Promise<number> {
  await writeFile(path, encodeTermination(outcome)).catch((err: unknown) => logger.warn({ path, err: (err as Error).message }, 'cannot write the termination message'));
  return outcome.kind === 'success' ? 0 : ERROR_TABLE[outcome.code].exitCode;
}
