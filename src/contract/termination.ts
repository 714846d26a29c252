/**
 * The importer's termination message (`/dev/termination-log`): one JSON object of at most 4096
 * bytes, the kubelet's limit. Success carries the facts the controller acts on (CDI's field names:
 * scratchSpaceRequired, preallocationApplied, message); failure carries a stable code.
 */

import { type ErrorCode, ERROR_TABLE, isErrorCode } from '../errors.js';

export const TERMINATION_MESSAGE_LIMIT = 4096;
export const TERMINATION_MESSAGE_PATH = '/dev/termination-log';

export interface ImportSuccess {
  readonly kind: 'success';
  readonly message: string;
  readonly scratchSpaceRequired: boolean;
  readonly preallocationApplied: boolean;
  /** Format found in the source, after any compression layers ("qcow2", "raw", "tar", ...). */
  readonly sourceFormat?: string;
  /** Size of the written disk in bytes (kubevirt content). */
  readonly diskSize?: number;
  /** How the image was read: in place (local file), over nbdkit (remote), from scratch, or decoded by zstd/xz straight into the target. */
  readonly via?: 'in-place' | 'nbd' | 'scratch' | 'decoder';
}

export interface ImportFailure {
  readonly kind: 'failure';
  readonly code: ErrorCode;
  readonly message: string;
  readonly retryable: boolean;
}

export type TerminationMessage = ImportSuccess | ImportFailure;

function fit(object: Record<string, unknown>, messageKey: string): string {
  const text = JSON.stringify(object);
  if (Buffer.byteLength(text) <= TERMINATION_MESSAGE_LIMIT) return text;
  // Shorten the message (the only unbounded field) to the longest prefix whose encoding fits;
  // measured in encoded bytes, since multi-byte and escaped characters take more than one.
  const chars = Array.from(String(object[messageKey] ?? ''));
  const encode = (keep: number): string => JSON.stringify({ ...object, [messageKey]: `${chars.slice(0, keep).join('')}…` });
  let low = 0;
  let high = chars.length;
  while (low < high) {
    const mid = Math.ceil((low + high) / 2);
    if (Buffer.byteLength(encode(mid)) <= TERMINATION_MESSAGE_LIMIT) low = mid;
    else high = mid - 1;
  }
  return encode(low);
}

export function encodeTermination(msg: TerminationMessage): string {
  if (msg.kind === 'failure') {
    return fit({ code: msg.code, message: msg.message, retryable: msg.retryable }, 'message');
  }
  const body: Record<string, unknown> = {
    message: msg.message,
    scratchSpaceRequired: msg.scratchSpaceRequired,
    preallocationApplied: msg.preallocationApplied,
  };
  if (msg.sourceFormat !== undefined) body.sourceFormat = msg.sourceFormat;
  if (msg.diskSize !== undefined) body.diskSize = msg.diskSize;
  if (msg.via !== undefined) body.via = msg.via;
  return fit(body, 'message');
}

/**
 * Reads a termination message. Anything that is not one of our JSON shapes (a crash's stack trace
 * via FallbackToLogsOnError, an old importer) is a failure with code INTERNAL and the text kept.
 */
export function decodeTermination(text: string): TerminationMessage {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return { kind: 'failure', code: 'INTERNAL', message: text.trim().slice(0, 1024), retryable: true };
  }
  if (typeof value === 'object' && value !== null) {
    const o = value as Record<string, unknown>;
    if (typeof o.code === 'string' && isErrorCode(o.code)) {
      return {
        kind: 'failure',
        code: o.code,
        message: typeof o.message === 'string' ? o.message : '',
        retryable: typeof o.retryable === 'boolean' ? o.retryable : ERROR_TABLE[o.code].retryable,
      };
    }
    if (typeof o.message === 'string' && o.code === undefined) {
      return {
        kind: 'success',
        message: o.message,
        scratchSpaceRequired: o.scratchSpaceRequired === true,
        preallocationApplied: o.preallocationApplied === true,
        ...(typeof o.sourceFormat === 'string' ? { sourceFormat: o.sourceFormat } : {}),
        ...(typeof o.diskSize === 'number' ? { diskSize: o.diskSize } : {}),
        ...(o.via === 'in-place' || o.via === 'nbd' || o.via === 'scratch' || o.via === 'decoder' ? { via: o.via } : {}),
      };
    }
  }
  return { kind: 'failure', code: 'INTERNAL', message: text.trim().slice(0, 1024), retryable: true };
}
