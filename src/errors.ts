/**
 * One error type for the whole project. Every failure that reaches a user carries a stable `code`
 * (grep-able in the README), a `retryable` flag the controller acts on, and an exit code for the
 * importer and CLI processes. Classify once at the boundary, throw FerryError inside.
 */

export const ErrorCode = {
  InvalidSpec: 'INVALID_SPEC',
  SourceNotFound: 'SOURCE_NOT_FOUND',
  Unauthorized: 'UNAUTHORIZED',
  TlsError: 'TLS_ERROR',
  SourceUnavailable: 'SOURCE_UNAVAILABLE',
  Truncated: 'TRUNCATED',
  InvalidImage: 'INVALID_IMAGE',
  UnsupportedFormat: 'UNSUPPORTED_FORMAT',
  BackingFile: 'BACKING_FILE',
  TargetTooSmall: 'TARGET_TOO_SMALL',
  ChecksumMismatch: 'CHECKSUM_MISMATCH',
  UnsafeArchive: 'UNSAFE_ARCHIVE',
  ConvertFailed: 'CONVERT_FAILED',
  NoSpace: 'NO_SPACE',
  TargetError: 'TARGET_ERROR',
  Interrupted: 'INTERRUPTED',
  Internal: 'INTERNAL',
} as const;

export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode];

interface CodeInfo {
  readonly exitCode: number;
  readonly retryable: boolean;
  readonly summary: string;
}

/**
 * The one table: exit code, default retryability and a one-line meaning per code. Exit codes are
 * distinct so a shell script can tell failures apart without parsing text; 1 is left for crashes.
 */
export const ERROR_TABLE: Readonly<Record<ErrorCode, CodeInfo>> = Object.freeze({
  INVALID_SPEC: { exitCode: 2, retryable: false, summary: 'the import request is invalid' },
  SOURCE_NOT_FOUND: { exitCode: 10, retryable: false, summary: 'the source does not exist (HTTP 404, missing file)' },
  UNAUTHORIZED: { exitCode: 11, retryable: false, summary: 'the source refused the credentials (HTTP 401/403)' },
  TLS_ERROR: { exitCode: 12, retryable: false, summary: 'the TLS certificate of the source could not be verified' },
  SOURCE_UNAVAILABLE: { exitCode: 13, retryable: true, summary: 'the source failed or timed out (5xx, refused, stalled)' },
  TRUNCATED: { exitCode: 14, retryable: true, summary: 'the source ended before the announced length' },
  INVALID_IMAGE: { exitCode: 20, retryable: false, summary: 'the image is corrupt or not what its header says' },
  UNSUPPORTED_FORMAT: { exitCode: 21, retryable: false, summary: 'the image format is not supported for this content type' },
  BACKING_FILE: { exitCode: 22, retryable: false, summary: 'the image refers to other files (backing file, data file, json: name)' },
  TARGET_TOO_SMALL: { exitCode: 23, retryable: false, summary: 'the image is larger than the usable target capacity' },
  CHECKSUM_MISMATCH: { exitCode: 24, retryable: false, summary: 'the downloaded bytes do not match the expected checksum' },
  UNSAFE_ARCHIVE: { exitCode: 25, retryable: false, summary: 'the archive has absolute paths, "..", escaping links or device nodes' },
  CONVERT_FAILED: { exitCode: 30, retryable: false, summary: 'qemu-img could not convert the image' },
  NO_SPACE: { exitCode: 31, retryable: false, summary: 'the target volume ran out of space' },
  TARGET_ERROR: { exitCode: 32, retryable: false, summary: 'the target could not be written' },
  INTERRUPTED: { exitCode: 33, retryable: true, summary: 'the importer was stopped (SIGTERM) before it finished' },
  INTERNAL: { exitCode: 40, retryable: false, summary: 'an unexpected internal error' },
});

export interface FerryErrorOptions {
  readonly cause?: unknown;
  readonly retryable?: boolean;
  readonly details?: Readonly<Record<string, string | number | boolean>>;
}

export class FerryError extends Error {
  readonly code: ErrorCode;
  readonly retryable: boolean;
  readonly details: Readonly<Record<string, string | number | boolean>>;

  constructor(code: ErrorCode, message: string, options: FerryErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'FerryError';
    this.code = code;
    this.retryable = options.retryable ?? ERROR_TABLE[code].retryable;
    this.details = options.details ?? {};
  }

  get exitCode(): number {
    return ERROR_TABLE[this.code].exitCode;
  }
}

export function isFerryError(err: unknown): err is FerryError {
  return err instanceof FerryError;
}

/** Wraps anything thrown into a FerryError, classifying filesystem errno values on the way. */
export function toFerryError(err: unknown, fallback: ErrorCode = ErrorCode.Internal): FerryError {
  if (err instanceof FerryError) return err;
  const errno = (err as NodeJS.ErrnoException | undefined)?.code;
  const message = err instanceof Error ? err.message : String(err);
  if (errno === 'ENOSPC' || errno === 'EDQUOT') {
    return new FerryError(ErrorCode.NoSpace, `target volume is full: ${message}`, { cause: err });
  }
  return new FerryError(fallback, message, { cause: err });
}

export function isErrorCode(value: string): value is ErrorCode {
  return Object.prototype.hasOwnProperty.call(ERROR_TABLE, value);
}
