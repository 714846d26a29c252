/** pino, configured once: JSON to a destination, secrets redacted wherever they appear. */

import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger } from 'pino';

const REDACT = [
  'password',
  'secretKey',
  'credentials.password',
  'spec.credentials.password',
  'spec.credentials',
  'headers.authorization',
  '*.password',
];

export function createLogger(options: { level?: string; name?: string; destination?: DestinationStream } = {}): Logger {
  return pino(
    {
      name: options.name ?? 'ferry',
      level: options.level ?? 'info',
      redact: { paths: REDACT, censor: '[redacted]' },
      base: undefined,
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    options.destination,
  );
}

/** A logger that drops everything, for library callers and tests that do not care. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
