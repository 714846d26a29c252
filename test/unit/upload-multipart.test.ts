/** The streaming multipart reader of the upload server's form paths, fed in every chunking. */

import { describe, expect, test } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { ErrorCode, FerryError } from '../../src/errors.js';
import { boundaryOf, formField, partNameOf } from '../../importer/upload-server-multipart.js';
import { contentLengthOf, uploadBody } from '../../importer/sources/upload-source.js';
import { failureAnswer } from '../../importer/upload-server.js';
import { targetAnswer, tokenAnswer } from '../../uploadproxy/proxy.js';
import { TokenError } from '../../src/contract/upload-token.js';

async function* chunks(data: Buffer, size: number): AsyncGenerator<Buffer> {
  for (let i = 0; i < data.length; i += size) yield data.subarray(i, i + size);
}

async function collect(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c);
  return Buffer.concat(parts);
}

async function codeOfAsync(run: () => Promise<unknown>): Promise<string> {
  try {
    await run();
  } catch (err) {
    return err instanceof FerryError ? err.code : `not a FerryError: ${String(err)}`;
  }
  return 'no error';
}

const B = 'XyZ-boundary';
// A payload that contains the boundary text (never after CRLF, as RFC 2046 requires), CRLFs of
// its own, and ends in a partial delimiter.
const file = Buffer.concat([randomBytes(5000), Buffer.from(`A--${B}\r\nA--${B}\r\n\r\n`), randomBytes(3000), Buffer.from('\r\n-')]);
const form = (parts: string[], payload: Buffer): Buffer =>
  Buffer.concat([
    Buffer.from(`preamble\r\n`),
    ...parts.map((p) => Buffer.from(`--${B}\r\n${p}\r\n`)),
    Buffer.from(`--${B}\r\nContent-Disposition: form-data; name="file"; filename="d.img"\r\nContent-Type: application/octet-stream\r\n\r\n`),
    payload,
    Buffer.from(`\r\n--${B}\r\nContent-Disposition: form-data; name="after"\r\n\r\nx\r\n--${B}--\r\nepilogue`),
  ]);

describe('formField', () => {
  test.each([1, 2, 7, 13, 64, 1000, 4096, 1 << 20])('yields exactly the file part, chunks of %d bytes', async (size) => {
    const body = form(['Content-Disposition: form-data; name="note"\r\n\r\nhello'], file);
    expect((await collect(formField(chunks(body, size), B, 'file'))).equals(file)).toBe(true);
  });

  test('an empty file part is an empty stream', async () => {
    expect((await collect(formField(chunks(form([], Buffer.alloc(0)), 5), B, 'file'))).length).toBe(0);
  });

  test.each<[string, string]>([
    ['no file field', `--${B}\r\nContent-Disposition: form-data; name="x"\r\n\r\nabc\r\n--${B}--\r\n`],
    ['no boundary at all', 'just bytes'],
    ['ends inside the file part', `--${B}\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc`],
    ['ends inside the headers', `--${B}\r\nContent-Disposition: form-data; name="file"`],
    ['headers too long', `--${B}\r\nX: ${'a'.repeat(20_000)}\r\n\r\n`],
  ])('refuses %s (INVALID_SPEC: a 400)', async (_what, body) => {
    expect(await codeOfAsync(() => collect(formField(chunks(Buffer.from(body), 100), B, 'file')))).toBe(ErrorCode.InvalidSpec);
  });

  test.each<[string | undefined, string | undefined]>([
    ['multipart/form-data; boundary=abc', 'abc'],
    ['multipart/form-data; boundary="a b:c"', 'a b:c'],
    ['Multipart/Form-Data;charset=utf-8; BOUNDARY=x1', 'x1'],
    ['multipart/mixed; boundary=abc', undefined],
    ['multipart/form-data', undefined],
    ['application/octet-stream', undefined],
    [undefined, undefined],
  ])('boundaryOf(%j) = %j', (header, boundary) => expect(boundaryOf(header)).toBe(boundary));

  test.each<[string, string | undefined]>([
    ['Content-Disposition: form-data; name="file"; filename="x"', 'file'],
    ['content-disposition: form-data; name=file', 'file'],
    ['Content-Disposition: form-data; filename="file"; name="other"', 'other'],
    ['Content-Disposition: form-data; name="a\\"b"', 'a"b'],
    ['Content-Type: text/plain', undefined],
  ])('partNameOf(%j) = %j', (headers, name) => expect(partNameOf(headers)).toBe(name));
});

describe('the upload source', () => {
  test('opens once with the Content-Length as size, no ranges; a second open fails, not retryable', async () => {
    const body = uploadBody(chunks(Buffer.from('abcdef'), 2), 6, 'upload /v1beta1/upload');
    const opened = await body.opener();
    expect(opened).toMatchObject({ size: 6, acceptsRanges: false });
    expect(opened.localPath).toBeUndefined();
    expect(opened.remoteUrl).toBeUndefined();
    expect((await collect(opened.stream)).toString()).toBe('abcdef');
    await body.received;
    const again = await body.opener().catch((e: FerryError) => e);
    expect(again).toBeInstanceOf(FerryError);
    expect((again as FerryError).retryable).toBe(false);
  });

  test.each<[string | undefined, number | undefined]>([
    ['0', 0],
    ['1073741824', 1073741824],
    [undefined, undefined],
    ['-1', undefined],
    ['12x', undefined],
    ['99999999999999999999', undefined],
  ])('contentLengthOf(%j) = %j', (header, size) => expect(contentLengthOf(header)).toBe(size));
});

describe('answers', () => {
  test.each<[string, string]>([
    [ErrorCode.TargetTooSmall, 'TooBig'],
    [ErrorCode.NoSpace, 'TooBig'],
    [ErrorCode.InvalidSpec, 'BadRequest'],
    [ErrorCode.InvalidImage, 'Failed'],
    [ErrorCode.Truncated, 'Failed'],
  ])('server: %s → %s', (code, answer) => {
    const result = failureAnswer(new FerryError(code as ErrorCode, 'why'));
    expect(result.answer).toBe(answer);
    expect(result.body).toMatch(answer === 'TooBig' ? /^Saving stream failed: effective image size is larger than the reported available storage: why$/ : /^Saving stream failed: why$/);
  });

  test.each<[TokenError, string]>([
    [TokenError.BadSignature, 'BadToken'],
    [TokenError.Expired, 'BadToken'],
    [TokenError.NotYetValid, 'BadToken'],
    [TokenError.WrongAlgorithm, 'BadToken'],
    [TokenError.WrongIssuer, 'BadToken'],
    [TokenError.Malformed, 'BadToken'],
    [TokenError.WrongTarget, 'BadToken'],
    [TokenError.WrongOperation, 'BadClaims'],
    [TokenError.WrongResource, 'BadClaims'],
    [TokenError.MissingTarget, 'BadClaims'],
  ])('proxy: token %s → %s', (code, answer) => expect(tokenAnswer(code)).toBe(answer));

  test('proxy: every target state that is not ready is CDI\'s 503, naming the PVC', () => {
    for (const kind of ['missing', 'not-upload-target', 'succeeded', 'not-ready'] as const) {
      const { answer, reason } = targetAnswer({ kind }, 'ns', 'pvc');
      expect(answer).toBe('TargetUnavailable');
      expect(reason).toContain('ns/pvc');
    }
    expect(targetAnswer({ kind: 'succeeded' }, 'ns', 'pvc').reason).toBe('rejecting Upload Request for PVC ns/pvc that already finished uploading');
  });
});
