/**
 * The Kubernetes error map and its one-line description, from real client-node ApiExceptions: the
 * Status bodies below are what kube-apiserver answered (captured from the test control plane).
 */

import { describe, expect, test } from '@jest/globals';
import { ApiException } from '@kubernetes/client-node';
import { describeApiError, errorLine, isKube, KubeApiError, KubeError, kubeCall, kubeErrorOf } from '../../controller/runtime/errors.js';
import { tolerate } from '../../controller/runtime/writer.js';

const HEADERS = {"audit-id": "3cea7383-d92b-4367-b1d7-9dd055b7e3bd", "cache-control": "no-cache, private", "connection": "close", "content-length": "188", "content-type": "application/json", "date": "Tue, 01 Dec 2026 09:55:17 GMT", "x-kubernetes-pf-flowschema-uid": "d3805237-c3de-4d6a-a6e2-4aa877b5e154", "x-kubernetes-pf-prioritylevel-uid": "eb9b0dc3-9631-44d6-bae8-c726c2e10292"};

/** What client-node throws for a non-2xx answer: the body as text. */
function apiException(code: number, body: string | undefined, message = 'Unknown API Status Code!'): ApiException<unknown> {
  return new ApiException(code, message, body, HEADERS);
}

const namespaceMissing = apiException(404, "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"namespaces \\\"nope\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"nope\",\"kind\":\"namespaces\"},\"code\":404}\n");
const podMissing = apiException(404, "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"pods \\\"nope\\\" not found\",\"reason\":\"NotFound\",\"details\":{\"name\":\"nope\",\"kind\":\"pods\"},\"code\":404}\n");
const alreadyExists = apiException(409, "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"persistentvolumeclaims \\\"p\\\" already exists\",\"reason\":\"AlreadyExists\",\"details\":{\"name\":\"p\",\"kind\":\"persistentvolumeclaims\"},\"code\":409}\n");
const conflict = apiException(409, "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"Operation cannot be fulfilled on persistentvolumeclaims \\\"p\\\": the object has been modified; please apply your changes to the latest version and try again\",\"reason\":\"Conflict\",\"details\":{\"name\":\"p\",\"kind\":\"persistentvolumeclaims\"},\"code\":409}\n");
const invalid = apiException(422, "{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"PersistentVolumeClaim \\\"Bad_Name\\\" is invalid: metadata.name: Invalid value: \\\"Bad_Name\\\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')\",\"reason\":\"Invalid\",\"details\":{\"name\":\"Bad_Name\",\"kind\":\"PersistentVolumeClaim\",\"causes\":[{\"reason\":\"FieldValueInvalid\",\"message\":\"Invalid value: \\\"Bad_Name\\\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')\",\"field\":\"metadata.name\"}]},\"code\":422}\n");
const forbidden = apiException(
  403,
  JSON.stringify({
    kind: 'Status',
    apiVersion: 'v1',
    metadata: {},
    status: 'Failure',
    message: 'leases.coordination.k8s.io "ferry-controller" is forbidden: User "system:serviceaccount:ferry-system:ferry" cannot get resource "leases" in API group "coordination.k8s.io" in the namespace "ferry-system"',
    reason: 'Forbidden',
    details: { name: 'ferry-controller', group: 'coordination.k8s.io', kind: 'leases' },
    code: 403,
  }),
);
/** client-node's 401: no body, the message "Unauthorized". */
const unauthorized = apiException(401, undefined, 'Unauthorized');
/** No answer at all: node-fetch's FetchError (no HTTP status). */
const refused = Object.assign(new Error('request to https://127.0.0.1:1/api/v1/namespaces/a/pods/b failed, reason: connect ECONNREFUSED 127.0.0.1:1'), {
  name: 'FetchError',
  code: 'ECONNREFUSED',
  errno: 'ECONNREFUSED',
  type: 'system',
});

describe('kubeErrorOf', () => {
  test.each<[string, unknown, KubeError, number | undefined, string | undefined, string]>([
    ['namespace missing', namespaceMissing, KubeError.NotFound, 404, 'NotFound', 'namespaces "nope" not found'],
    ['pod missing', podMissing, KubeError.NotFound, 404, 'NotFound', 'pods "nope" not found'],
    ['already exists', alreadyExists, KubeError.AlreadyExists, 409, 'AlreadyExists', 'persistentvolumeclaims "p" already exists'],
    ['conflict', conflict, KubeError.Conflict, 409, 'Conflict', 'Operation cannot be fulfilled on persistentvolumeclaims "p": the object has been modified; please apply your changes to the latest version and try again'],
    ['forbidden', forbidden, KubeError.Forbidden, 403, 'Forbidden', expect.stringContaining('cannot get resource "leases"') as unknown as string],
    ['invalid', invalid, KubeError.Invalid, 422, 'Invalid', expect.stringContaining('PersistentVolumeClaim "Bad_Name" is invalid') as unknown as string],
    ['401 without a body', unauthorized, KubeError.Unauthorized, 401, undefined, 'Unauthorized'],
    ['no answer', refused, KubeError.Other, undefined, undefined, expect.stringContaining('connect ECONNREFUSED 127.0.0.1:1') as unknown as string],
    ['a body already parsed', Object.assign(new Error('x'), { code: 404, body: { reason: 'NotFound', message: 'gone' } }), KubeError.NotFound, 404, 'NotFound', 'gone'],
    ['a status without a Status body', Object.assign(new Error('HTTP-Code: 500\nMessage: Unknown API Status Code!\nBody: "oops"\nHeaders: {}'), { code: 500, body: 'oops' }), KubeError.Other, 500, undefined, 'Unknown API Status Code!'],
  ])('%s', (_name, err, kind, status, reason, message) => {
    const info = kubeErrorOf(err);
    expect(info.kind).toBe(kind);
    expect(info.status).toBe(status);
    expect(info.reason).toBe(reason);
    expect(info.message).toEqual(message);
  });

  test('a 409 is AlreadyExists or Conflict by its reason', () => {
    expect(isKube(alreadyExists, KubeError.AlreadyExists)).toBe(true);
    expect(isKube(alreadyExists, KubeError.Conflict)).toBe(false);
    expect(isKube(conflict, KubeError.Conflict)).toBe(true);
    expect(isKube(conflict, KubeError.AlreadyExists)).toBe(false);
  });
});

describe('describeApiError', () => {
  test.each<[string, unknown, Parameters<typeof describeApiError>[1], string]>([
    ['create in a missing namespace', namespaceMissing, { verb: 'create', resource: 'leases', namespace: 'nope', name: 'ferry-controller' }, 'create leases nope/ferry-controller: 404 NotFound: namespaces "nope" not found'],
    ['get a missing pod', podMissing, { verb: 'get', resource: 'pods', namespace: 'default', name: 'nope' }, 'get pods default/nope: 404 NotFound: pods "nope" not found'],
    ['create what exists', alreadyExists, { verb: 'create', resource: 'persistentvolumeclaims', namespace: 'ns', name: 'p' }, 'create persistentvolumeclaims ns/p: 409 AlreadyExists: persistentvolumeclaims "p" already exists'],
    ['a cluster-wide list', unauthorized, { verb: 'list', resource: 'virtualmachineinstances.kubevirt.io' }, 'list virtualmachineinstances.kubevirt.io: 401: Unauthorized'],
    ['no answer', refused, { verb: 'get', resource: 'leases', namespace: 'ferry-system', name: 'ferry-controller' }, 'get leases ferry-system/ferry-controller: no response: request to https://127.0.0.1:1/api/v1/namespaces/a/pods/b failed, reason: connect ECONNREFUSED 127.0.0.1:1'],
    ['without the operation', forbidden, undefined, expect.stringMatching(/^403 Forbidden: leases\.coordination\.k8s\.io "ferry-controller" is forbidden: /) as unknown as string],
  ])('%s', (_name, err, op, line) => {
    expect(describeApiError(err, op)).toEqual(line);
  });

  test.each([namespaceMissing, podMissing, alreadyExists, conflict, forbidden, invalid, unauthorized, refused])('one line, no headers, no raw dump (%#)', (err) => {
    const line = describeApiError(err, { verb: 'get', resource: 'pods', namespace: 'a', name: 'b' });
    expect(line).not.toContain('\n');
    expect(line).not.toContain('HTTP-Code');
    expect(line).not.toContain('Headers');
    expect(line).not.toContain('audit-id');
    expect(line).not.toContain('"kind":"Status"');
  });
});

describe('kubeCall and KubeApiError', () => {
  test('a failure is rethrown naming the operation; the original is its cause', async () => {
    const op = { verb: 'create', resource: 'pods', namespace: 'ns', name: 'importer-x' };
    const thrown = await kubeCall(op, () => Promise.reject(alreadyExists)).catch((e: unknown) => e);
    expect(thrown).toBeInstanceOf(KubeApiError);
    const e = thrown as KubeApiError;
    expect(e.message).toBe('create pods ns/importer-x: 409 AlreadyExists: persistentvolumeclaims "p" already exists');
    expect(e.info.kind).toBe(KubeError.AlreadyExists);
    expect(e.op).toEqual(op);
    expect(e.cause).toBe(alreadyExists);
    expect(errorLine(e)).toBe(e.message);
    expect(describeApiError(e)).toBe(e.message);
    expect(kubeErrorOf(e)).toEqual(e.info);
  });

  test('a KubeApiError passes through a second kubeCall unchanged', async () => {
    const inner = new KubeApiError(podMissing, { verb: 'get', resource: 'pods', namespace: 'a', name: 'b' });
    await expect(kubeCall({ verb: 'other', resource: 'x' }, () => Promise.reject(inner))).rejects.toBe(inner);
  });

  test('errorLine: an API error in one line, any other error its first line', () => {
    expect(errorLine(podMissing)).toBe('404 NotFound: pods "nope" not found');
    expect(errorLine(new Error('first\nsecond'))).toBe('first');
    expect(errorLine('text')).toBe('text');
  });
});

describe('tolerate', () => {
  test.each<[string, unknown, KubeError[], boolean]>([
    ['AlreadyExists on a create is done', alreadyExists, [KubeError.AlreadyExists], true],
    ['a Conflict is not AlreadyExists', conflict, [KubeError.AlreadyExists], false],
    ['NotFound on a delete is done', podMissing, [KubeError.NotFound], true],
    ['Forbidden is not NotFound', forbidden, [KubeError.NotFound], false],
    ['through kubeCall', new KubeApiError(alreadyExists, { verb: 'create', resource: 'pods' }), [KubeError.AlreadyExists], true],
    ['no answer is never done', refused, [KubeError.NotFound, KubeError.AlreadyExists], false],
  ])('%s', async (_name, err, done, ok) => {
    const result = tolerate(Promise.reject(err), ...done);
    if (ok) await expect(result).resolves.toBeUndefined();
    else await expect(result).rejects.toBe(err);
  });
});
