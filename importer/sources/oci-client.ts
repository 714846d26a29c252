/**
 * A small OCI distribution client: the parts of the registry API an image pull needs (manifests
 * and blobs of one repository), with anonymous, basic and bearer-token auth (the
 * `WWW-Authenticate: Bearer realm=…,service=…,scope=…` challenge), a custom CA or an explicit
 * insecure opt-in, and every blob checked against its digest while it streams.
 *
 * HTTPS is tried first; plain HTTP only when TLS is explicitly insecure and the server does not
 * speak TLS (CDI's "insecure registry"). Manifests and tokens are small requests on got; blobs go
 * through the HTTP source (openHttp), so a broken blob transfer resumes with Range like any
 * download.
 */

import { createHash } from 'node:crypto';
import type { Agent as HttpAgent, IncomingHttpHeaders } from 'node:http';
import type { Agent as HttpsAgent } from 'node:https';
import { rootCertificates } from 'node:tls';
import got, { type Response } from 'got';
import { HttpProxyAgent } from 'http-proxy-agent';
import { HttpsProxyAgent } from 'https-proxy-agent';
import { ErrorCode, FerryError, isFerryError } from '../../src/errors.js';
import type { Credentials, ProxySettings } from '../../src/contract/import-spec.js';
import type { ByteStream } from '../streams.js';
import { guardSpeed } from '../min-speed.js';
import { classifyHttpError, type HttpTimeouts, loadCaBundle, minSpeedOf, openHttp, proxyFor, redactUrl, type ResumePolicy } from './http-source.js';
import { type BlobDescriptor, MANIFEST_ACCEPT, MAX_MANIFEST_BYTES, type Manifest, parseManifest } from './oci-manifest.js';
import { formatImageReference, type ImageReference } from './oci-reference.js';

export interface RegistryClientOptions {
  readonly reference: ImageReference;
  readonly credentials?: Credentials;
  /** A PEM file or a directory of them, trusted on top of the system roots. */
  readonly caPath?: string;
  /** Skip TLS verification, and allow a registry that speaks plain HTTP. */
  readonly insecureTls: boolean;
  readonly proxy: ProxySettings;
  readonly timeouts: HttpTimeouts;
  /** How a broken blob transfer is resumed (see openHttp). */
  readonly resume?: ResumePolicy;
}

export interface Challenge {
  /** Lower-case scheme: basic, bearer, ... */
  readonly scheme: string;
  readonly params: Readonly<Record<string, string>>;
}

/** Pure: the first challenge of a WWW-Authenticate header (`Bearer realm="…",service="…"`). */
export function parseChallenge(header: string | undefined): Challenge | undefined {
  const m = /^\s*([A-Za-z][\w-]*)\s*(.*)$/s.exec(header ?? '');
  if (!m || m[1] === undefined) return undefined;
  const params: Record<string, string> = {};
  const re = /([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^,\s]*))\s*,?/gy;
  re.lastIndex = 0;
  const rest = m[2] ?? '';
  for (let p = re.exec(rest); p !== null; p = re.exec(rest)) {
    params[(p[1] ?? '').toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : (p[3] ?? '');
    if (re.lastIndex >= rest.length) break;
  }
  return { scheme: m[1].toLowerCase(), params };
}

/** The registry's own error codes in a body, for messages: `MANIFEST_UNKNOWN: manifest unknown`. */
function registryErrors(body: Buffer): string {
  try {
    const json = JSON.parse(body.toString('utf8')) as { errors?: Array<{ code?: string; message?: string }> };
    return (json.errors ?? []).map((e) => [e.code, e.message].filter(Boolean).join(': ')).join('; ');
  } catch {
    return '';
  }
}

interface SmallResponse {
  readonly status: number;
  readonly headers: IncomingHttpHeaders;
  readonly body: Buffer;
}

/** A blob being read: bytes checked against the descriptor as they pass. */
export interface CheckedBlob {
  readonly stream: ByteStream;
  /**
   * Called with an error raised while decoding the blob (gunzip, tar): reads the rest of the blob
   * through the digest, and returns the digest mismatch when there is one (the real cause),
   * otherwise the error it was given.
   */
  explain(err: unknown): Promise<unknown>;
  /** Ends the transfer (idempotent). */
  close(): Promise<void>;
}

/** Token and manifest answers are small; anything bigger is not what we asked for. */
const MAX_TOKEN_BYTES = 1024 * 1024;

/**
 * How much of a blob that failed to decode is still read to see whether its digest is the cause:
 * enough for any layer above a disk, without making a bad multi-GB layer fail slowly.
 */
const MAX_EXPLAIN_BYTES = 512 * 1024 * 1024;

function basicAuth(creds: Credentials): string {
  return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
}

/** Node's complaint when TLS meets a plain-HTTP server. */
function isPlainHttpAnswer(err: unknown): boolean {
  const e = err as { code?: string; message?: string };
  return e.code === 'EPROTO' || e.code === 'ERR_SSL_WRONG_VERSION_NUMBER' || /wrong version number|packet length too long/i.test(e.message ?? '');
}

/** Hashes and counts a blob as it streams; see CheckedBlob. */
export function checkBlob(source: ByteStream, expected: BlobDescriptor, where: string): CheckedBlob {
  const hash = createHash('sha256');
  const iterator = source[Symbol.asyncIterator]();
  let received = 0;
  let ended = false;
  let closed = false;
  const take = async (): Promise<Buffer | undefined> => {
    const next = await iterator.next();
    if (next.done) {
      ended = true;
      return undefined;
    }
    received += next.value.length;
    if (received > expected.size) {
      throw new FerryError(ErrorCode.ChecksumMismatch, `blob ${expected.digest} of ${where} is longer than the ${expected.size} bytes its manifest says`);
    }
    hash.update(next.value);
    return next.value;
  };
  // Decided once, at the end of the bytes (a hash can be digested only once).
  let decided: { readonly error?: FerryError } | undefined;
  const verdict = (): FerryError | undefined => {
    decided ??= { error: judge() };
    return decided.error;
  };
  const judge = (): FerryError | undefined => {
    if (received !== expected.size) {
      return new FerryError(ErrorCode.Truncated, `blob ${expected.digest} of ${where} ended after ${received} of ${expected.size} bytes`, {
        details: { received, expected: expected.size },
      });
    }
    const actual = `sha256:${hash.digest('hex')}`;
    if (actual === expected.digest) return undefined;
    return new FerryError(ErrorCode.ChecksumMismatch, `blob of ${where} does not match its digest: expected ${expected.digest}, got ${actual}`, {
      details: { expected: expected.digest, actual },
    });
  };
  async function* stream(): ByteStream {
    for (let chunk = await take(); chunk !== undefined; chunk = await take()) yield chunk;
    const error = verdict();
    if (error) throw error;
  }
  return {
    stream: stream(),
    async explain(err: unknown): Promise<unknown> {
      if (ended) return verdict() ?? err;
      if (closed) return err;
      const stop = received + MAX_EXPLAIN_BYTES;
      try {
        while (received < stop && (await take()) !== undefined);
      } catch (drainError) {
        return isFerryError(drainError) && drainError.code === ErrorCode.ChecksumMismatch ? drainError : err;
      }
      return ended ? (verdict() ?? err) : err;
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      await iterator.return?.();
    },
  };
}

/** One repository on one registry, with the auth state of this pull. */
export class RegistryClient {
  private base: string;
  /** Whether a response has settled http vs https. */
  private schemeSettled = false;
  private authorization: string | undefined;
  private bearer: Challenge | undefined;
  private readonly where: string;

  private constructor(
    private readonly options: RegistryClientOptions,
    private readonly ca: string[] | undefined,
  ) {
    this.base = `https://${options.reference.apiHost}`;
    this.where = formatImageReference(options.reference);
  }

  static async connect(options: RegistryClientOptions): Promise<RegistryClient> {
    const ca = options.caPath !== undefined ? [...rootCertificates, ...(await loadCaBundle(options.caPath))] : undefined;
    return new RegistryClient(options, ca);
  }

  private get repository(): string {
    return this.options.reference.repository;
  }

  /** GET of a small document, with no status check; network errors are classified. */
  private async fetchSmall(url: string, headers: Record<string, string>, limit: number): Promise<SmallResponse> {
    const through = proxyFor(url, this.options.proxy);
    const agent: { http?: HttpAgent; https?: HttpsAgent } = !through
      ? {}
      : url.startsWith('https:')
        ? { https: new HttpsProxyAgent(through) as unknown as HttpsAgent }
        : { http: new HttpProxyAgent(through) };
    const t = this.options.timeouts;
    const request = got.stream(url, {
      retry: { limit: 0 },
      throwHttpErrors: false,
      followRedirect: true,
      maxRedirects: 10,
      headers: { 'user-agent': 'ferry-importer', ...headers },
      timeout: { connect: t.connectMs, secureConnect: t.connectMs, response: t.firstByteMs, socket: t.idleMs },
      https: { rejectUnauthorized: !this.options.insecureTls, ...(this.ca ? { certificateAuthority: this.ca } : {}) },
      agent,
    });
    request.on('error', () => undefined);
    try {
      const response = await new Promise<Response>((resolve, reject) => {
        request.once('response', resolve);
        request.once('error', reject);
      });
      const chunks: Buffer[] = [];
      let length = 0;
      // A manifest or token trickled a byte at a time would never trip the idle timeout.
      for await (const chunk of guardSpeed(request, minSpeedOf(t), redactUrl(url))) {
        length += (chunk as Buffer).length;
        if (length > limit) throw new FerryError(ErrorCode.InvalidImage, `${url} sent more than ${limit} bytes where a small JSON document was expected`);
        chunks.push(chunk as Buffer);
      }
      return { status: response.statusCode, headers: response.headers, body: Buffer.concat(chunks) };
    } finally {
      request.destroy();
    }
  }

  /** A request to the registry itself: settles http vs https on the first answer. */
  private async registryGet(path: string, headers: Record<string, string>, limit: number): Promise<SmallResponse> {
    const auth: Record<string, string> = this.authorization ? { authorization: this.authorization } : {};
    try {
      const response = await this.fetchSmall(`${this.base}${path}`, { ...headers, ...auth }, limit);
      this.schemeSettled = true;
      return response;
    } catch (err) {
      if (!this.schemeSettled && this.options.insecureTls && this.base.startsWith('https:') && isPlainHttpAnswer(err)) {
        // An insecure registry that speaks plain HTTP, as containers/image falls back to.
        this.base = `http://${this.options.reference.apiHost}`;
        return this.registryGet(path, headers, limit);
      }
      if (isPlainHttpAnswer(err)) {
        throw new FerryError(ErrorCode.TlsError, `${this.options.reference.apiHost} does not speak TLS; a plain-HTTP registry needs the explicit insecure opt-in`, { cause: err });
      }
      throw classifyHttpError(err, `${this.base}${path}`);
    }
  }

  /** GET with auth: a 401 answers with a challenge; meet it once and ask again. */
  private async authorizedGet(path: string, headers: Record<string, string>, limit: number): Promise<SmallResponse> {
    let response = await this.registryGet(path, headers, limit);
    if (response.status === 401 && (await this.meet(parseChallenge(response.headers['www-authenticate'] as string | undefined)))) {
      response = await this.registryGet(path, headers, limit);
    }
    return response;
  }

  /** Sets up auth for a challenge; false when there is nothing new to try. */
  private async meet(challenge: Challenge | undefined): Promise<boolean> {
    const creds = this.options.credentials;
    if (challenge?.scheme === 'bearer' && challenge.params.realm) {
      // A first challenge, or a token that expired: either way a new token, and one more try.
      this.bearer = challenge;
      await this.fetchToken();
      return true;
    }
    if (challenge?.scheme === 'basic' && creds && !this.authorization?.startsWith('Basic ')) {
      this.authorization = basicAuth(creds);
      return true;
    }
    return false;
  }

  /** The token protocol: GET <realm>?service=…&scope=…, with basic credentials when given. */
  private async fetchToken(): Promise<void> {
    const challenge = this.bearer;
    const realm = challenge?.params.realm;
    if (!challenge || !realm) throw new FerryError(ErrorCode.Internal, 'no bearer challenge to answer');
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new FerryError(ErrorCode.SourceUnavailable, `${this.where}: the registry names an invalid token realm "${realm}"`, { retryable: false });
    }
    if (challenge.params.service) url.searchParams.set('service', challenge.params.service);
    url.searchParams.set('scope', challenge.params.scope || `repository:${this.repository}:pull`);
    const creds = this.options.credentials;
    const headers: Record<string, string> = creds ? { authorization: basicAuth(creds) } : {};
    let response: SmallResponse;
    try {
      response = await this.fetchSmall(url.toString(), headers, MAX_TOKEN_BYTES);
    } catch (err) {
      throw classifyHttpError(err, url.toString());
    }
    if (response.status === 401 || response.status === 403) {
      throw new FerryError(
        ErrorCode.Unauthorized,
        creds ? `the token service ${url.origin}${url.pathname} refused the credentials for ${this.where}` : `the token service ${url.origin}${url.pathname} wants credentials for ${this.where}`,
        { details: { status: response.status } },
      );
    }
    if (response.status !== 200) throw this.statusError(response, `token service ${url.origin}${url.pathname}`);
    let token: unknown;
    try {
      const json = JSON.parse(response.body.toString('utf8')) as { token?: unknown; access_token?: unknown };
      token = json.token ?? json.access_token;
    } catch {
      token = undefined;
    }
    if (typeof token !== 'string' || token === '') {
      throw new FerryError(ErrorCode.SourceUnavailable, `the token service ${url.origin}${url.pathname} answered without a token`, { retryable: false });
    }
    this.authorization = `Bearer ${token}`;
  }

  /** A non-success answer as a FerryError with the registry's own words. */
  private statusError(response: SmallResponse, what: string): FerryError {
    const said = registryErrors(response.body);
    const status = response.status;
    if (status === 401 || status === 403) {
      const creds = this.options.credentials !== undefined;
      return new FerryError(
        ErrorCode.Unauthorized,
        `${what} answered ${status}: ${creds ? 'the credentials were refused' : 'credentials are required'}${said ? ` (${said})` : ''}`,
        { details: { status } },
      );
    }
    const base = classifyHttpError({ name: 'HTTPError', message: `status ${status}`, response: { statusCode: status } }, this.base);
    const notFound = status === 404 ? (/NAME_UNKNOWN/.test(said) ? 'no such repository' : 'not found') : `answered ${status}`;
    return new FerryError(base.code, `${what}: ${notFound}${said ? ` (${said})` : ''}`, { retryable: base.retryable, details: { status } });
  }

  /**
   * The manifest at a tag or digest. A manifest pulled by digest is checked against it (a tag has
   * nothing to check against: like containers/image, the Docker-Content-Digest header is not trusted
   * either way, as registries that convert manifests send the stored one's).
   */
  async manifest(tagOrDigest: string): Promise<{ readonly manifest: Manifest; readonly digest: string }> {
    const what = tagOrDigest.startsWith('sha256:') ? `${this.where.replace(/@sha256:.*$/, '')}@${tagOrDigest}` : this.where;
    const response = await this.authorizedGet(`/v2/${this.repository}/manifests/${tagOrDigest}`, { accept: MANIFEST_ACCEPT }, MAX_MANIFEST_BYTES);
    if (response.status !== 200) throw this.statusError(response, `the manifest of ${what}`);
    const digest = `sha256:${createHash('sha256').update(response.body).digest('hex')}`;
    const expected = tagOrDigest.startsWith('sha256:') ? tagOrDigest : digest;
    if (expected !== digest) {
      throw new FerryError(ErrorCode.ChecksumMismatch, `the manifest of ${what} does not match its digest: expected ${expected}, got ${digest}`, {
        details: { expected, actual: digest },
      });
    }
    const contentType = response.headers['content-type'];
    return { manifest: parseManifest(response.body, contentType, what), digest };
  }

  /** Opens a blob, streamed and checked against its digest and size as it arrives. */
  async openBlob(blob: BlobDescriptor): Promise<CheckedBlob> {
    // Settle scheme and auth on a small request first: openHttp classifies a 401 without the challenge.
    if (!this.schemeSettled) await this.probe();
    const open = () =>
      openHttp(
        {
          url: `${this.base}/v2/${this.repository}/blobs/${blob.digest}`,
          insecureTls: this.options.insecureTls,
          proxy: this.options.proxy,
          timeouts: this.options.timeouts,
          ...(this.options.caPath !== undefined ? { caPath: this.options.caPath } : {}),
          ...(this.authorization ? { headers: { authorization: this.authorization } } : {}),
        },
        this.options.resume,
      );
    let opened;
    try {
      opened = await open();
    } catch (err) {
      // A bearer token may have expired between two layers: fetch a new one, once.
      if (!(isFerryError(err) && err.code === ErrorCode.Unauthorized && this.bearer)) throw this.blobError(err, blob);
      await this.fetchToken();
      opened = await open().catch((again: unknown) => {
        throw this.blobError(again, blob);
      });
    }
    return checkBlob(opened.stream, blob, this.where);
  }

  private blobError(err: unknown, blob: BlobDescriptor): unknown {
    if (isFerryError(err) && err.code === ErrorCode.SourceNotFound) {
      return new FerryError(ErrorCode.SourceNotFound, `${this.where}: the registry has no blob ${blob.digest}`, { cause: err });
    }
    return err;
  }

  /** Until a manifest was fetched: GET /v2/ once to learn the scheme and meet any challenge. */
  private async probe(): Promise<void> {
    await this.authorizedGet('/v2/', {}, MAX_TOKEN_BYTES);
  }
}
