/** How `ferry image-upload` reaches the proxy: URL or port-forward, the pod chosen, the forward's messages. */

import { describe, expect, test } from '@jest/globals';
import { ErrorCode } from '../../src/errors.js';
import { UPLOAD_PROXY_TLS_NAME, UploadProxyCaBundle, UploadProxyService } from '../../src/contract/upload-api.js';
import { CertKey } from '../../controller/certs/rotation.js';
import { serviceHosts, UploadSecret } from '../../controller/certs/upload-certs.js';
import { portForwardHint } from '../../cli/upload/plan.js';
import { type EndpointSliceLike, forwardTarget, type PodLike, portForwardNotice, proxyRoute, proxyTrust, type ServiceLike } from '../../cli/upload/proxy-route.js';
import { dataMessage, portForwardUrl, splitForwardMessage } from '../../cli/upload/port-forward.js';
import { codeOf, ferryErrorOf } from './helpers.js';

describe('the route to the proxy', () => {
  test('--uploadproxy-url is used as given; unreachable, it fails with the hint (unchanged)', () => {
    expect(proxyRoute({ flagUrl: 'https://p:443' })).toEqual({ via: 'url', url: 'https://p:443' });
    const e = ferryErrorOf(() => proxyRoute({ flagUrl: 'https://127.0.0.1:9', configUrl: 'https://c', unreachable: 'ECONNREFUSED' }));
    expect(e.code).toBe(ErrorCode.SourceUnavailable);
    expect(e.message).toBe(`cannot reach the upload proxy at https://127.0.0.1:9 (ECONNREFUSED);\n${portForwardHint()}`);
  });

  test('no URL configured, or a configured one that does not answer: a port-forward, saying why', () => {
    expect(proxyRoute({})).toEqual({ via: 'port-forward', why: 'no upload proxy URL is configured (CDIConfig config)' });
    expect(proxyRoute({ configUrl: 'https://10.96.0.7', unreachable: 'no connection within 3 s' })).toEqual({ via: 'port-forward', why: 'the configured upload proxy https://10.96.0.7 does not answer (no connection within 3 s)' });
    expect(proxyRoute({ configUrl: 'https://up.example' })).toEqual({ via: 'url', url: 'https://up.example' });
  });
});

const service = (targetPort: number | string = 8443, extra: object = {}): ServiceLike => ({
  spec: { selector: { app: 'up' }, ports: [{ name: 'metrics', port: 9090, targetPort: 9090 }, { name: 'https', port: 443, targetPort, ...extra }] },
});
const pod = (name: string, o: { ready?: boolean; phase?: string; labels?: Record<string, string>; deleting?: boolean } = {}): PodLike => ({
  metadata: { name, labels: o.labels ?? { app: 'up' }, ...(o.deleting ? { deletionTimestamp: '2026-12-01T00:00:00Z' } : {}) },
  spec: { containers: [{ ports: [{ name: 'https', containerPort: 8443 }, { name: 'alt', containerPort: 9443 }] }] },
  status: { phase: o.phase ?? 'Running', conditions: [{ type: 'Ready', status: o.ready === false ? 'False' : 'True' }] },
});
const slice = (port: number, endpoints: { pod: string; ready?: boolean; terminating?: boolean }[], portName = 'https'): EndpointSliceLike => ({
  addressType: 'IPv4',
  ports: [{ name: portName, port, protocol: 'TCP' }],
  endpoints: endpoints.map((e) => ({ conditions: { ...(e.ready !== undefined ? { ready: e.ready } : {}), ...(e.terminating ? { terminating: true } : {}) }, targetRef: { kind: 'Pod', name: e.pod, namespace: 'ferry-system' } })),
});
const NS = UploadProxyService.namespace;

describe('the pod to forward to', () => {
  test('from the EndpointSlices: ready endpoints of the Service port (443, not the first), on the slice\'s port; the first by name', () => {
    const slices = [slice(8443, [{ pod: 'up-b' }, { pod: 'up-a', ready: true }, { pod: 'up-0', ready: false }]), slice(9090, [{ pod: 'aaa' }], 'metrics')];
    expect(forwardTarget(service(), slices, [pod('up-a'), pod('up-b'), pod('up-0', { ready: false })])).toEqual({ namespace: NS, pod: 'up-a', port: 8443 });
    // The slice's port is the resolved targetPort, whatever the Service says.
    expect(forwardTarget(service('https'), [slice(9443, [{ pod: 'up-z' }])], undefined)).toEqual({ namespace: NS, pod: 'up-z', port: 9443 });
  });

  test('a terminating endpoint, or one whose pod the pod list shows not ready or gone, is skipped', () => {
    const slices = [slice(8443, [{ pod: 'up-a', terminating: true }, { pod: 'up-b' }, { pod: 'up-c' }, { pod: 'up-d' }])];
    expect(forwardTarget(service(), slices, [pod('up-b', { ready: false }), pod('up-c', { deleting: true }), pod('up-d')])).toEqual({ namespace: NS, pod: 'up-d', port: 8443 });
  });

  test('no usable slice (not readable, not written yet): the selector and targetPort on the pods; a named targetPort from the container', () => {
    const pods = [pod('up-2'), pod('other', { labels: { app: 'else' } }), pod('up-1', { phase: 'Pending' }), pod('up-3')];
    expect(forwardTarget(service(), undefined, pods)).toEqual({ namespace: NS, pod: 'up-2', port: 8443 });
    expect(forwardTarget(service('alt'), [], pods)).toEqual({ namespace: NS, pod: 'up-2', port: 9443 });
    expect(forwardTarget(service('8443'), [], pods)).toEqual({ namespace: NS, pod: 'up-2', port: 8443 });
    // A name no container has: no pod can serve it.
    expect(codeOf(() => forwardTarget(service('nosuch'), [], pods))).toBe(ErrorCode.SourceUnavailable);
  });

  test('impossible: no Service, no ready pod, nothing readable: stable codes, and the hint as the text', () => {
    const missing = ferryErrorOf(() => forwardTarget(undefined, [], []));
    expect(missing.code).toBe(ErrorCode.SourceNotFound);
    expect(missing.message).toBe(`cannot port-forward to the upload proxy: Service ferry-system/ferry-uploadproxy not found (is Ferry installed?);\n${portForwardHint()}`);
    expect(missing.details).toEqual({ route: 'port-forward' });
    const none = ferryErrorOf(() => forwardTarget(service(), [slice(8443, [{ pod: 'up-a', ready: false }])], [pod('up-a', { ready: false })]));
    expect(none.code).toBe(ErrorCode.SourceUnavailable);
    expect(none.message).toContain('no ready pod behind Service ferry-system/ferry-uploadproxy;\n');
    expect(codeOf(() => forwardTarget(service(), undefined, undefined))).toBe(ErrorCode.Unauthorized);
    expect(codeOf(() => forwardTarget({ spec: { ports: [{ port: 53, protocol: 'UDP' }] } }, [], []))).toBe(ErrorCode.SourceUnavailable);
  });

  test('the notice names the reason, the pod, its port and the local address', () => {
    expect(portForwardNotice('no upload proxy URL is configured (CDIConfig config)', { namespace: NS, pod: 'up-a', port: 8443 }, 'https://127.0.0.1:40001')).toBe(
      'no upload proxy URL is configured (CDIConfig config): uploading through a port-forward over the Kubernetes API to pod ferry-system/up-a port 8443 (local https://127.0.0.1:40001)',
    );
  });
});

describe('the port-forward protocol (v4.channel.k8s.io)', () => {
  test('a channel\'s first message carries the port (2 bytes) before its data; later ones only the channel byte', () => {
    const first = Buffer.from([0, 0xfb, 0x20, 7, 8]);
    expect(splitForwardMessage(first, true)).toEqual({ channel: 0, payload: Buffer.from([7, 8]) });
    expect(splitForwardMessage(Buffer.from([0, 0xfb, 0x20]), true).payload.length).toBe(0);
    expect(splitForwardMessage(Buffer.from([1, 65, 66]), false)).toEqual({ channel: 1, payload: Buffer.from('AB') });
    expect(splitForwardMessage(Buffer.from([0, 1]), true).payload.length).toBe(0);
    expect(splitForwardMessage(Buffer.alloc(0), false).channel).toBe(-1);
    expect(dataMessage(Buffer.from('hi'))).toEqual(Buffer.from([0, 104, 105]));
  });

  test('the subresource URL: ws(s), the server\'s path prefix kept, names escaped', () => {
    expect(portForwardUrl('https://10.0.0.1:6443/', { namespace: NS, pod: 'up-a', port: 8443 })).toBe('wss://10.0.0.1:6443/api/v1/namespaces/ferry-system/pods/up-a/portforward?ports=8443');
    expect(portForwardUrl('http://rancher/k8s/clusters/c-1', { namespace: 'a b', pod: 'p', port: 1 })).toBe('ws://rancher/k8s/clusters/c-1/api/v1/namespaces/a%20b/pods/p/portforward?ports=1');
  });
});

describe('TLS through the forward: names shared with the controller', () => {
  test('the CA bundle the client reads is the one controller/certs writes; the name checked is one the serving certificate holds', () => {
    expect(UploadProxyCaBundle.secret).toBe(UploadSecret.ProxyCa);
    expect(UploadProxyCaBundle.key).toBe(CertKey.Bundle);
    expect(serviceHosts(UploadProxyService.name, UploadProxyService.namespace)).toContain(UPLOAD_PROXY_TLS_NAME);
  });
});

describe("what the proxy's certificate is checked against", () => {
  const ferry = Buffer.from('ferry CA');
  const roots = ['root A', 'root B'];
  test("a URL: Ferry's bundle beside the system's roots, or beside SSL_CERT_FILE's bundle (which replaces them); nothing read, the default", () => {
    expect(proxyTrust('url', ferry, undefined, roots)).toEqual([ferry, 'root A', 'root B']);
    expect(proxyTrust('url', ferry, 'mine', roots)).toEqual([ferry, 'mine']);
    expect(proxyTrust('url', undefined, undefined, roots)).toBeUndefined();
    expect(proxyTrust('url', undefined, 'mine', roots)).toBeUndefined();
  });
  test("a port-forward: Ferry's bundle and the user's only; with neither it stops with TLS_ERROR and names the ConfigMap", () => {
    expect(proxyTrust('port-forward', ferry, undefined, roots)).toEqual([ferry]);
    expect(proxyTrust('port-forward', ferry, 'mine', roots)).toEqual([ferry, 'mine']);
    expect(proxyTrust('port-forward', undefined, 'mine', roots)).toEqual(['mine']);
    const e = ferryErrorOf(() => proxyTrust('port-forward', undefined, undefined, roots));
    expect(e.code).toBe(ErrorCode.TlsError);
    expect(e.message).toContain(`ConfigMap ${UploadProxyCaBundle.namespace}/${UploadProxyCaBundle.configMap}, key ${UploadProxyCaBundle.configMapKey}`);
    expect(e.details).toEqual({ route: 'port-forward' });
  });
});
