/**
 * Where an S3 object is: `s3://bucket/key` (AWS, by region, or a custom endpoint) or CDI's
 * `http(s)://host[:port]/bucket/key`. Pure, and kept apart from the AWS SDK so that importing the
 * engine does not load the SDK (~0.2 s of start-up) unless an S3 import runs.
 */

import { ErrorCode, FerryError } from '../../src/errors.js';

export const DEFAULT_S3_REGION = 'us-east-1';

/** Where an S3 import reads from. */
export interface S3Location {
  readonly bucket: string;
  readonly key: string;
  /** `scheme://host[:port]` of the store; undefined: AWS's own endpoint for the region. */
  readonly endpoint?: string;
  readonly region: string;
  /** `/bucket/key` addressing: what S3-compatible stores (and CDI) use. */
  readonly forcePathStyle: boolean;
}

export interface S3LocationOptions {
  /** The CLI's `--s3-endpoint` (`http(s)://host[:port]`), for an `s3://` URL. */
  readonly endpoint?: string;
  readonly region?: string;
}

// s3.amazonaws.com, s3.<region>.amazonaws.com, s3-<region>.amazonaws.com, s3.dualstack.<region>…,
// each optionally led by a bucket (virtual-hosted style).
const AWS_HOST = /^(?:(.+)\.)?s3(?:[.-](?:dualstack\.)?([a-z0-9-]+))?\.amazonaws\.com$/;

function invalid(message: string): FerryError {
  return new FerryError(ErrorCode.InvalidSpec, message);
}

function decodeSegment(text: string, url: string): string {
  try {
    return decodeURIComponent(text);
  } catch {
    throw invalid(`s3 URL ${url} has a malformed percent-encoding`);
  }
}

/** `scheme://host[:port]` of an http(s) URL; anything more is a mistake worth naming. */
function origin(endpoint: string): string {
  let u: URL;
  try {
    u = new URL(endpoint);
  } catch {
    throw invalid(`s3 endpoint "${endpoint}" is not a URL (want http(s)://host[:port])`);
  }
  if ((u.protocol !== 'http:' && u.protocol !== 'https:') || (u.pathname !== '/' && u.pathname !== '') || u.search !== '' || u.username !== '') {
    throw invalid(`s3 endpoint "${endpoint}" must be http(s)://host[:port], nothing more`);
  }
  return u.origin;
}

/**
 * Pure: reads an S3 source URL.
 * - `s3://bucket/key` (key taken literally): AWS for `region` (default us-east-1), or the
 *   S3-compatible store at `options.endpoint`, path-style.
 * - `http(s)://host[:port]/bucket/key` (CDI's annotation form; CDI takes bucket and key from the
 *   path): that host, path-style. An AWS host `s3.<region>.amazonaws.com` names the region, and a
 *   virtual-hosted one `<bucket>.s3.<region>.amazonaws.com` the bucket too.
 */
export function parseS3Location(url: string, options: S3LocationOptions = {}): S3Location {
  const region = options.region || DEFAULT_S3_REGION;
  const s3 = /^s3:\/\/([^/]+)\/(.+)$/i.exec(url);
  if (s3) {
    const [, bucket = '', key = ''] = s3;
    if (options.endpoint) return { bucket, key, endpoint: origin(options.endpoint), region, forcePathStyle: true };
    return { bucket, key, region, forcePathStyle: false };
  }
  if (/^s3:/i.test(url)) throw invalid(`s3 URL ${url} needs a bucket and a key: s3://bucket/key`);
  if (!/^https?:\/\//i.test(url)) throw invalid(`s3 source needs s3://bucket/key or http(s)://host/bucket/key, got "${url}"`);
  if (options.endpoint) throw invalid(`an s3 endpoint override applies to s3:// URLs only; ${url} names its host already`);
  const u = new URL(url);
  if (u.search !== '' || u.hash !== '') throw invalid(`s3 URL ${url} has a query or fragment (a presigned URL is an http source)`);
  const path = u.pathname.replace(/^\/+/, '');
  const aws = AWS_HOST.exec(u.hostname.toLowerCase());
  const awsRegion = aws?.[2] ?? (aws ? DEFAULT_S3_REGION : region);
  if (aws?.[1] !== undefined) {
    const key = decodeSegment(path, url);
    if (key === '') throw invalid(`s3 URL ${url} names no key`);
    return { bucket: aws[1], key, region: awsRegion, forcePathStyle: false };
  }
  const slash = path.indexOf('/');
  const bucket = decodeSegment(slash < 0 ? path : path.slice(0, slash), url);
  const key = slash < 0 ? '' : decodeSegment(path.slice(slash + 1), url);
  if (bucket === '' || key === '') throw invalid(`s3 URL ${url} needs a bucket and a key in its path: ${u.origin}/bucket/key`);
  return { bucket, key, endpoint: u.origin, region: awsRegion, forcePathStyle: true };
}

/** For messages and logs: never a credential. */
export function describeS3Location(location: S3Location): string {
  return `s3://${location.bucket}/${location.key}${location.endpoint ? ` at ${location.endpoint}` : ` (${location.region})`}`;
}
