/** The upload API's paths and answer table, and the upload server's environment codec. */

import { describe, expect, test } from '@jest/globals';
import { ErrorCode } from '../../src/errors.js';
import {
  bearerTokenOf,
  isProxyUploadPath,
  UploadAnswer,
  UploadPath,
  uploadModeOf,
  uploadServiceHost,
  uploadServiceName,
} from '../../src/contract/upload-api.js';
import { decodeUploadServerEnv, encodeUploadServerEnv, type UploadServerConfig, UploadServerEnv } from '../../src/contract/upload-server.js';
import { codeOf } from './helpers.js';

describe('upload paths', () => {
  test.each<[string, { form: boolean; async: boolean } | undefined, boolean]>([
    ['/v1beta1/upload', { form: false, async: false }, true],
    ['/v1beta1/upload-async', { form: false, async: true }, true],
    ['/v1beta1/upload-form', { form: true, async: false }, true],
    ['/v1beta1/upload-form-async', { form: true, async: true }, true],
    ['/v1alpha1/upload', { form: false, async: false }, true],
    ['/v1alpha1/upload-async', { form: false, async: true }, true],
    ['/v1alpha1/upload-form', { form: true, async: false }, true],
    ['/v1alpha1/upload-form-async', { form: true, async: true }, true],
    ['/v1beta1/upload-archive', { form: false, async: false }, false],
    ['/v1beta1/upload?x=1', { form: false, async: false }, true],
    ['/v1beta1/uploadx', undefined, false],
    ['/healthz', undefined, false],
    ['/', undefined, false],
    ['/__proto__', undefined, false],
  ])('%s', (path, mode, proxied) => {
    expect(uploadModeOf(path)).toEqual(mode);
    expect(isProxyUploadPath(path)).toBe(proxied);
  });

  test('every path constant has a distinct value, and healthz is not an upload path', () => {
    const values = Object.values(UploadPath);
    expect(new Set(values).size).toBe(values.length);
    expect(uploadModeOf(UploadPath.Healthz)).toBeUndefined();
  });
});

describe('the answer table (cdi.md §3.1b)', () => {
  test.each<[UploadAnswer, number]>([
    ['NoBearer', 400],
    ['BadToken', 401],
    ['BadClaims', 400],
    ['TargetUnavailable', 503],
    ['NotFound', 404],
    ['ClientRefused', 401],
    ['Busy', 503],
    ['AlreadyDone', 409],
    ['TooBig', 400],
    ['Failed', 500],
    ['Ok', 200],
  ])('%s → %d', (answer, status) => expect(UploadAnswer[answer].status).toBe(status));
});

describe('bearer tokens (CDI pattern)', () => {
  test.each<[string | undefined, string | undefined]>([
    [undefined, undefined],
    ['', undefined],
    ['Bearer ', undefined],
    ['Bearer', undefined],
    ['Basic abc', undefined],
    ['Bearer a.b.c', 'a.b.c'],
    ['bearer   a-b_c~d+e/f', 'a-b_c~d+e/f'],
    ['Bearer a b', undefined],
    ['Bearer a=', undefined],
  ])('%j → %j', (header, token) => expect(bearerTokenOf(header)).toBe(token));
});

test('the per-PVC Service is CDI\'s cdi-upload-<pvc>, a DNS label', () => {
  expect(uploadServiceHost('ns', 'disk')).toBe('cdi-upload-disk.ns.svc');
  expect(uploadServiceName('x'.repeat(80)).length).toBe(63);
});

describe('upload server environment', () => {
  const config: UploadServerConfig = {
    target: { kind: 'file', path: '/data/disk.img' },
    contentType: 'kubevirt',
    capacity: 1 << 30,
    filesystemOverhead: 0.055,
    preallocation: true,
    scratchDir: '/scratch',
    tls: { keyFile: '/tls/key', certFile: '/tls/crt', clientCaFile: '/client/ca' },
    clientName: 'client.upload-server.cdi.kubevirt.io',
    port: 8443,
    host: '127.0.0.1',
    deadline: Date.UTC(2026, 11, 1, 13, 0, 0),
    terminationLog: '/tmp/term',
  };

  test('round trip', () => expect(decodeUploadServerEnv(encodeUploadServerEnv(config))).toEqual(config));
  test('round trip without the optional fields', () => {
    const { capacity: _c, scratchDir: _s, host: _h, deadline: _d, ...rest } = config;
    expect(decodeUploadServerEnv(encodeUploadServerEnv(rest))).toEqual(rest);
  });

  test('CDI defaults: /data/disk.img, port 8443, the proxy client name; block for /dev/cdi-block-volume', () => {
    const tls = { [UploadServerEnv.TlsKeyFile]: 'k', [UploadServerEnv.TlsCertFile]: 'c', [UploadServerEnv.ClientCaFile]: 'ca' };
    const d = decodeUploadServerEnv(tls);
    expect(d).toMatchObject({ target: { kind: 'file', path: '/data/disk.img' }, port: 8443, clientName: 'client.upload-server.cdi.kubevirt.io', filesystemOverhead: 0.06 });
    expect(decodeUploadServerEnv({ ...tls, DESTINATION: '/dev/cdi-block-volume' }).target.kind).toBe('block');
    expect(decodeUploadServerEnv({ ...tls, UPLOAD_CONTENT_TYPE: 'archive' }).target).toEqual({ kind: 'directory', path: '/data' });
    expect(decodeUploadServerEnv({ ...tls, UPLOAD_IMAGE_SIZE: '1Gi' }).capacity).toBe(1 << 30);
  });

  test.each<[string, Record<string, string>]>([
    ['no TLS key', { TLS_CERT_FILE: 'c', CLIENT_CERT_FILE: 'ca' }],
    ['no client CA', { TLS_KEY_FILE: 'k', TLS_CERT_FILE: 'c' }],
    ['bad port', { TLS_KEY_FILE: 'k', TLS_CERT_FILE: 'c', CLIENT_CERT_FILE: 'ca', UPLOAD_PORT: 'x' }],
    ['bad deadline', { TLS_KEY_FILE: 'k', TLS_CERT_FILE: 'c', CLIENT_CERT_FILE: 'ca', DEADLINE: 'soon' }],
    ['archive to a file', { TLS_KEY_FILE: 'k', TLS_CERT_FILE: 'c', CLIENT_CERT_FILE: 'ca', UPLOAD_CONTENT_TYPE: 'archive', UPLOAD_TARGET_KIND: 'file' }],
    ['bad overhead', { TLS_KEY_FILE: 'k', TLS_CERT_FILE: 'c', CLIENT_CERT_FILE: 'ca', FILESYSTEM_OVERHEAD: '2' }],
  ])('refuses %s with INVALID_SPEC', (_what, env) => expect(codeOf(() => decodeUploadServerEnv(env))).toBe(ErrorCode.InvalidSpec));
});
