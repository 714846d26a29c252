/**
 * The Kubernetes API's errors as `ferry image-upload` reports them: client-node's rejections
 * classified once (401/403 → UNAUTHORIZED, 404 → SOURCE_NOT_FOUND, else SOURCE_UNAVAILABLE) with
 * the apiserver's own reason in the message.
 */

import { ErrorCode, FerryError } from '../../src/errors.js';

export const notFound = (err: unknown): boolean => (err as { code?: unknown }).code === 404;

export async function orUndefined<T>(read: Promise<T>): Promise<T | undefined> {
  try {
    return await read;
  } catch (err) {
    if (notFound(err)) return undefined;
    throw err;
  }
}

/** The apiserver's reason from a client-node error, for messages. */
function apiReason(err: unknown): string {
  const e = err as { code?: number; body?: unknown; message?: string };
  const body = typeof e.body === 'string' ? e.body : JSON.stringify(e.body ?? '');
  try {
    const status = JSON.parse(body) as { message?: string };
    if (status.message) return `${status.message} (HTTP ${e.code})`;
  } catch {
    /* not JSON */
  }
  return e.message ?? String(err);
}

export function apiError(what: string, err: unknown): FerryError {
  if (err instanceof FerryError) return err;
  const code = (err as { code?: number }).code;
  return new FerryError(code === 401 || code === 403 ? ErrorCode.Unauthorized : code === 404 ? ErrorCode.SourceNotFound : ErrorCode.SourceUnavailable, `${what}: ${apiReason(err)}`, { cause: err });
}
