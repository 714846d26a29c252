/**
 * S3 source on the AWS SDK v3: AWS (`s3://bucket/key`, region from an option) or any S3-compatible
 * store by endpoint, path-style as CDI does; static keys from the import secret, a custom CA, and
 * timeouts per phase. A body that breaks mid-object continues with a ranged GetObject pinned to the
 * first response's ETag, so a replaced object fails instead of mixing two versions.
 */

import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import type { Readable } from 'node:stream';
import { rootCertificates } from 'node:tls';
import { GetObjectCommand, type GetObjectCommandOutput, S3Client, type S3ClientConfig } from '@aws-sdk/client-s3';
import { ErrorCode, FerryError, isFerryError } from '../../src/errors.js';
import type { Credentials } from '../../src/contract/import-spec.js';
import type { ByteStream } from '../streams.js';
import { type BodyPart, type BodyReading, classifyHttpError, contentRangeStart, type HttpTimeouts, loadCaBundle, minSpeedOf, type ResumePolicy, resumingBody } from './http-source.js';
import { type OpenedSource, warmLatencyMs } from './source.js';

export { DEFAULT_S3_REGION, describeS3Location, parseS3Location, type S3Location, type S3LocationOptions } from './s3-location.js';
import { describeS3Location, type S3Location } from './s3-location.js';

const NOT_FOUND = new Set(['NoSuchKey', 'NoSuchBucket', 'NoSuchVersion', 'NotFound']);
const DENIED = new Set(['AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', 'AuthorizationHeaderMalformed', 'InvalidToken', 'ExpiredToken', 'AllAccessDisabled']);

/** Maps an S3 service error (or a network, TLS or timeout error) to a FerryError. */
export function classifyS3Error(err: unknown, where: string): FerryError {
  if (isFerryError(err)) return err;
  const e = err as { name?: string; message?: string; $metadata?: { httpStatusCode?: number } };
  const status = e.$metadata?.httpStatusCode;
  // The SDK also puts $metadata (without a status) on network errors: those go the HTTP way.
  if (status === undefined) return classifyHttpError(err, where);
  const name = e.name ?? 'Unknown';
  const details = { status, s3Code: name };
  if (NOT_FOUND.has(name) || status === 404) return new FerryError(ErrorCode.SourceNotFound, `${where}: ${name} (${status})`, { details });
  if (DENIED.has(name) || status === 401 || status === 403) {
    return new FerryError(ErrorCode.Unauthorized, `${where}: ${name} (${status}): check the access key and secret`, { details });
  }
  if (status === 412) {
    return new FerryError(ErrorCode.SourceUnavailable, `${where}: the object changed since the transfer began (${name})`, { details, retryable: true });
  }
  if (name === 'PermanentRedirect' || status === 301) {
    return new FerryError(ErrorCode.SourceUnavailable, `${where}: the bucket is in another region; give its region`, { details, retryable: false });
  }
  const retryable = status >= 500 || status === 408 || status === 429 || name === 'RequestTimeout' || name === 'SlowDown';
  return new FerryError(ErrorCode.SourceUnavailable, `${where}: ${name} (${status})${e.message && e.message !== name ? `: ${e.message}` : ''}`, { details, retryable });
}

export interface S3SourceOptions {
  readonly location: S3Location;
  /** username = access key id, password = secret key; none: unsigned (anonymous) requests. */
  readonly credentials?: Credentials;
  readonly caPath?: string;
  readonly insecureTls: boolean;
  readonly timeouts: HttpTimeouts;
}

/** Unsigned requests, for public objects: the SigV4 scheme with a signer that signs nothing. */
const ANONYMOUS: S3ClientConfig['httpAuthSchemes'] = [
  { schemeId: 'aws.auth#sigv4', identityProvider: () => async () => ({}), signer: { sign: async (request) => request } },
];

async function createClient(options: S3SourceOptions): Promise<S3Client> {
  const { location, credentials, timeouts } = options;
  const ca = options.caPath !== undefined ? [...rootCertificates, ...(await loadCaBundle(options.caPath))] : undefined;
  return new S3Client({
    region: location.region,
    ...(location.endpoint ? { endpoint: location.endpoint } : { followRegionRedirects: true }),
    forcePathStyle: location.forcePathStyle,
    ...(credentials ? { credentials: { accessKeyId: credentials.username, secretAccessKey: credentials.password } } : { httpAuthSchemes: ANONYMOUS }),
    // The engine retries whole attempts and the body resumes itself; SDK retries would hide both.
    maxAttempts: 1,
    // A validating wrapper around the body would stand between a broken socket and the resumption.
    responseChecksumValidation: 'WHEN_REQUIRED',
    requestHandler: {
      // No idle keep-alive sockets: nothing outlives the import, and there is no client to destroy.
      httpAgent: new HttpAgent({ keepAlive: false }),
      httpsAgent: new HttpsAgent({ keepAlive: false, rejectUnauthorized: !options.insecureTls, ...(ca ? { ca } : {}) }),
      connectionTimeout: timeouts.connectMs,
      requestTimeout: timeouts.firstByteMs,
      throwOnRequestTimeout: true,
      socketTimeout: timeouts.idleMs,
    },
  });
}

function bodyOf(output: GetObjectCommandOutput): BodyPart {
  // On Node the body is the http.IncomingMessage itself: reading it pulls from the socket.
  const body = output.Body as unknown as Readable;
  return { body, close: () => body.destroy() };
}

/**
 * Opens the object with GetObject. The size comes from ContentLength; a broken body resumes with
 * `Range: bytes=N-` and `If-Match: <ETag>` (and the version id on a versioned bucket).
 */
export async function openS3(options: S3SourceOptions, resume?: ResumePolicy): Promise<OpenedSource> {
  const { bucket, key } = options.location;
  const where = describeS3Location(options.location);
  const classify = (err: unknown): FerryError => classifyS3Error(err, where);
  const reading: BodyReading = { classify, minSpeed: minSpeedOf(options.timeouts), where };
  const client = await createClient(options);
  const get = async (extra: { Range?: string; IfMatch?: string; VersionId?: string } = {}): Promise<GetObjectCommandOutput> => {
    try {
      return await client.send(new GetObjectCommand({ Bucket: bucket, Key: key, ...extra }));
    } catch (err) {
      throw classify(err);
    }
  };

  const first = await get();
  const size = first.ContentLength;
  const etag = first.ETag;
  const pinned = { ...(etag ? { IfMatch: etag } : {}), ...(first.VersionId && first.VersionId !== 'null' ? { VersionId: first.VersionId } : {}) };
  const ranged = etag !== undefined && size !== undefined;

  async function range(start: number, end: number | undefined): Promise<BodyPart> {
    const wanted = `bytes=${start}-${end ?? ''}`;
    const part = await get({ Range: wanted, ...pinned });
    if (contentRangeStart(part.ContentRange) !== start) {
      bodyOf(part).close();
      throw new FerryError(ErrorCode.SourceUnavailable, `${where} did not serve ${wanted} (Content-Range ${part.ContentRange ?? 'missing'})`);
    }
    return bodyOf(part);
  }

  const resumable = resume !== undefined && resume.attempts > 0 && ranged;
  return {
    stream: resumingBody(bodyOf(first), resumable ? { ...reading, resume: { policy: resume, reopen: (offset) => range(offset, undefined) } } : reading),
    ...(size !== undefined ? { size } : {}),
    ...(ranged ? { openRange: async (start: number, end: number): Promise<ByteStream> => resumingBody(await range(start, end), reading) } : {}),
    acceptsRanges: ranged,
    description: where,
    ...(ranged
      ? {
          measureLatency: (enoughMs?: number) =>
            warmLatencyMs(async () => {
              for await (const chunk of (await range(0, 0)).body) void chunk;
            }, 3, enoughMs),
        }
      : {}),
  };
}
