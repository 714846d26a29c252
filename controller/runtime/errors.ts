/**
 * Kubernetes API errors, classified once. client-node throws an `ApiException` whose message is
 * "HTTP-Code: … Message: … Body: … Headers: …" in one string; logs and events get one line from
 * `describeApiError` instead, and writers test the kind (`isKube(err, KubeError.NotFound)`), never
 * a bare status number.
 */

/** The failures controllers act on; everything else is `Other`. */
export const KubeError = {
  Conflict: 'Conflict',
  NotFound: 'NotFound',
  Forbidden: 'Forbidden',
  AlreadyExists: 'AlreadyExists',
  Unauthorized: 'Unauthorized',
  Invalid: 'Invalid',
  Other: 'Other',
} as const;
export type KubeError = (typeof KubeError)[keyof typeof KubeError];

/** What the apiserver said, from its Status body where there is one. */
export interface KubeErrorInfo {
  readonly kind: KubeError;
  /** HTTP status; undefined when the request never got an answer (connection refused, timeout). */
  readonly status?: number;
  /** The Status reason (NotFound, AlreadyExists, Forbidden, …), if the body had one. */
  readonly reason?: string;
  readonly message: string;
}

/** The operation an error happened in: `create pods ns/name`. */
export interface KubeOp {
  readonly verb: string;
  /** Plural resource (pods, persistentvolumeclaims, leases, virtualmachineinstances). */
  readonly resource: string;
  readonly namespace?: string;
  readonly name?: string;
}

interface StatusBody {
  readonly reason?: unknown;
  readonly message?: unknown;
  readonly code?: unknown;
}

function statusBody(body: unknown): StatusBody | undefined {
  if (typeof body === 'string') {
    try {
      const parsed: unknown = JSON.parse(body);
      return parsed !== null && typeof parsed === 'object' ? (parsed as StatusBody) : undefined;
    } catch {
      return undefined;
    }
  }
  return body !== null && typeof body === 'object' ? (body as StatusBody) : undefined;
}

/** The HTTP status an error carries (client-node's ApiException `code`, or `statusCode`). */
export function statusOf(err: unknown): number | undefined {
  const e = err as { code?: unknown; statusCode?: unknown } | null | undefined;
  if (typeof e?.code === 'number') return e.code;
  if (typeof e?.statusCode === 'number') return e.statusCode;
  return undefined;
}

function kindOf(status: number | undefined, reason: string | undefined): KubeError {
  if (reason === 'AlreadyExists') return KubeError.AlreadyExists;
  if (reason === 'Conflict' || status === 409) return KubeError.Conflict;
  if (reason === 'NotFound' || status === 404) return KubeError.NotFound;
  if (reason === 'Forbidden' || status === 403) return KubeError.Forbidden;
  if (reason === 'Unauthorized' || status === 401) return KubeError.Unauthorized;
  if (reason === 'Invalid' || status === 422) return KubeError.Invalid;
  return KubeError.Other;
}

/** The first line of a raw error message, without client-node's "HTTP-Code:" dump. */
function firstLine(text: string): string {
  return text.split('\n')[0]?.trim() ?? '';
}

/** Classifies any error thrown by a client-node call (or by the network under it). */
export function kubeErrorOf(err: unknown): KubeErrorInfo {
  if (err instanceof KubeApiError) return err.info;
  const status = statusOf(err);
  const body = statusBody((err as { body?: unknown } | null | undefined)?.body);
  const reason = typeof body?.reason === 'string' && body.reason !== '' ? body.reason : undefined;
  let message: string;
  if (typeof body?.message === 'string' && body.message !== '') message = body.message;
  else if (status !== undefined) {
    // ApiException: "HTTP-Code: 401\nMessage: Unauthorized\nBody: …"; keep the Message line.
    const raw = (err as Error | undefined)?.message ?? '';
    message = /^Message: (.*)$/m.exec(raw)?.[1]?.trim() ?? firstLine(raw);
  } else {
    const e = err as (Error & { cause?: unknown; code?: unknown }) | undefined;
    const cause = e?.cause as { code?: unknown; message?: unknown } | undefined;
    const code = typeof cause?.code === 'string' ? cause.code : typeof e?.code === 'string' ? e.code : undefined;
    const text = firstLine(typeof e?.message === 'string' ? e.message : String(err));
    message = code && !text.includes(code) ? `${text} (${code})` : text;
  }
  return { kind: kindOf(status, reason), ...(status !== undefined ? { status } : {}), ...(reason ? { reason } : {}), message };
}

/** True when `err` is a Kubernetes API error of `kind`. */
export function isKube(err: unknown, kind: KubeError): boolean {
  return kubeErrorOf(err).kind === kind;
}

function target(op: KubeOp): string {
  const where = [op.namespace, op.name].filter((p) => p !== undefined && p !== '').join('/');
  return where ? `${op.resource} ${where}` : op.resource;
}

/**
 * One line: `create pods ns/importer-x: 409 AlreadyExists: pods "importer-x" already exists`.
 * Without an answer from the apiserver: `get leases ns/x: no response: connect ECONNREFUSED …`.
 */
export function describeApiError(err: unknown, op?: KubeOp): string {
  if (err instanceof KubeApiError) return err.message;
  const info = kubeErrorOf(err);
  const head = info.status === undefined ? 'no response' : info.reason ? `${info.status} ${info.reason}` : String(info.status);
  return `${op ? `${op.verb} ${target(op)}: ` : ''}${head}: ${info.message}`.replace(/\s*\n\s*/g, ' ');
}

/**
 * An API error with its operation: `message` is `describeApiError`'s one line, `info` the
 * classification, `cause` the original exception (its headers and raw body stay out of logs).
 */
export class KubeApiError extends Error {
  readonly info: KubeErrorInfo;
  readonly op: KubeOp;

  constructor(err: unknown, op: KubeOp) {
    super(describeApiError(err, op), { cause: err });
    this.name = 'KubeApiError';
    this.info = kubeErrorOf(err);
    this.op = op;
  }
}

/** Runs one API call; a failure is rethrown as a `KubeApiError` naming `op`. */
export async function kubeCall<T>(op: KubeOp, call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw err instanceof KubeApiError ? err : new KubeApiError(err, op);
  }
}

/** A read through `kubeCall` where NotFound is an answer, not a failure: undefined. */
export async function kubeGet<T>(op: KubeOp, call: () => Promise<T>): Promise<T | undefined> {
  try {
    return await kubeCall(op, call);
  } catch (err) {
    if (isKube(err, KubeError.NotFound)) return undefined;
    throw err;
  }
}

/** For logs: an API error's one line, any other error's message (first line). */
export function errorLine(err: unknown): string {
  if (err instanceof KubeApiError) return err.message;
  if (statusOf(err) !== undefined) return describeApiError(err);
  return firstLine(err instanceof Error ? err.message : String(err));
}
