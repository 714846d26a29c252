/**
 * cli/upload/port-forward.ts against a stand-in for the apiserver's portforward subresource on
 * loopback: a WebSocket server that speaks the kubelet's v4.channel.k8s.io (the port on each
 * channel's first message, data on 0, errors on 1) and dials a TCP backend on 127.0.0.1, as the
 * kubelet dials the pod's port. The real apiserver/kubelet/containerd path is test/node/upload.test.ts.
 */

import { createHash, randomBytes } from 'node:crypto';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { connect, createServer, type Server, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { KubeConfig } from '@kubernetes/client-node';
import { WebSocketServer, type WebSocket } from 'ws';
import { ErrorCode, FerryError } from '../../src/errors.js';
import { openPortForward, PORT_FORWARD_PROTOCOL } from '../../cli/upload/port-forward.js';

let api: HttpServer;
let wss: WebSocketServer;
let backend: Server;
let backendPort: number;
const seen: { url: string; protocol: string; auth: string }[] = [];
const live = new Set<WebSocket>();
let refuse: number | undefined;
let failDial = false;

const portBytes = (port: number): Buffer => Buffer.from([port & 0xff, port >> 8]);

/** The backend: sends the sha256 of everything it received once the client ends, then the bytes "bye". */
function startBackend(): Promise<void> {
  backend = createServer((s: Socket) => {
    const hash = createHash('sha256');
    s.on('data', (c: Buffer) => {
      hash.update(c);
      if (c.includes('BIG\n')) s.write(Buffer.alloc(8 * 1024 * 1024, 7));
      if (c.includes('END\n')) s.end(`${hash.digest('hex')}\n`);
    });
  });
  return new Promise((resolve) => backend.listen(0, '127.0.0.1', () => {
    backendPort = (backend.address() as AddressInfo).port;
    resolve();
  }));
}

beforeAll(async () => {
  await startBackend();
  api = createHttpServer();
  wss = new WebSocketServer({ noServer: true, handleProtocols: (protocols) => (protocols.has(PORT_FORWARD_PROTOCOL) ? PORT_FORWARD_PROTOCOL : false) });
  api.on('upgrade', (req, socket, head) => {
    seen.push({ url: req.url ?? '', protocol: String(req.headers['sec-websocket-protocol']), auth: String(req.headers.authorization) });
    if (refuse !== undefined) {
      const body = JSON.stringify({ kind: 'Status', message: 'pods "up-a" is forbidden: User "u" cannot create resource "pods/portforward"' });
      socket.end(`HTTP/1.1 ${refuse} Forbidden\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      live.add(ws);
      ws.on('close', () => live.delete(ws));
      const port = Number(new URL(req.url ?? '', 'http://x').searchParams.get('ports'));
      ws.send(Buffer.concat([Buffer.from([0]), portBytes(port)]));
      ws.send(Buffer.concat([Buffer.from([1]), portBytes(port)]));
      if (failDial) {
        ws.send(Buffer.concat([Buffer.from([1]), Buffer.from(`error forwarding port ${port} to pod up-a: connection refused`)]));
        ws.close(1000);
        return;
      }
      const pod = connect({ host: '127.0.0.1', port: backendPort });
      ws.on('message', (data: Buffer) => {
        if (data[0] === 0) pod.write(data.subarray(1));
      });
      pod.on('data', (c: Buffer) => ws.send(Buffer.concat([Buffer.from([0]), c])));
      pod.on('end', () => ws.close(1000));
      ws.on('close', () => pod.destroy());
    });
  });
  await new Promise<void>((resolve) => api.listen(0, '127.0.0.1', resolve));
});

afterAll(async () => {
  for (const ws of live) ws.terminate();
  await new Promise<void>((resolve) => wss.close(() => resolve()));
  await new Promise<void>((resolve) => api.close(() => resolve()));
  await new Promise<void>((resolve) => backend.close(() => resolve()));
});

function kubeConfig(): KubeConfig {
  const kc = new KubeConfig();
  kc.loadFromOptions({
    // Plain HTTP on loopback: client-node allows it only with skipTLSVerify.
    clusters: [{ name: 'c', server: `http://127.0.0.1:${(api.address() as AddressInfo).port}`, skipTLSVerify: true }],
    users: [{ name: 'u', token: 'secret-token' }],
    contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
    currentContext: 'x',
  });
  return kc;
}

/** One connection through the forward: sends `body` then END, returns what came back. */
function exchange(port: number, body: Buffer, big = false): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port });
    const chunks: Buffer[] = [];
    s.on('data', (c: Buffer) => chunks.push(c));
    s.on('end', () => resolve(Buffer.concat(chunks)));
    s.on('error', reject);
    s.write(body);
    s.write(big ? 'BIG\nEND\n' : 'END\n');
  });
}

describe('port-forward through a v4.channel.k8s.io server', () => {
  test('bytes both ways, one stream per connection, the kubeconfig\'s credentials, then close() ends everything', async () => {
    seen.length = 0;
    const forward = await openPortForward(kubeConfig(), { namespace: 'ferry-system', pod: 'up-a', port: backendPort });
    expect(forward.url).toBe(`https://127.0.0.1:${forward.localPort}`);
    const body = randomBytes(6 * 1024 * 1024);
    const [a, b] = await Promise.all([exchange(forward.localPort, body), exchange(forward.localPort, Buffer.from('small'), true)]);
    const expected = createHash('sha256').update(Buffer.concat([body, Buffer.from('END\n')])).digest('hex');
    expect(a.toString().trim()).toBe(expected);
    expect(b.length).toBe(8 * 1024 * 1024 + 65);
    // The probe, then one per connection.
    expect(seen.map((s) => s.url)).toEqual(Array(3).fill(`/api/v1/namespaces/ferry-system/pods/up-a/portforward?ports=${backendPort}`));
    expect(seen.every((s) => s.protocol.includes(PORT_FORWARD_PROTOCOL) && s.auth === 'Bearer secret-token')).toBe(true);
    expect(forward.streams()).toBe(2);
    // A connection left open is cut by close(), and the listener is gone.
    const open = connect({ host: '127.0.0.1', port: forward.localPort });
    await new Promise((resolve) => open.once('connect', resolve));
    await new Promise((resolve) => setTimeout(resolve, 200));
    const ended = new Promise((resolve) => open.once('close', resolve));
    await forward.close();
    await ended;
    const refused = await new Promise<string>((resolve) => connect({ host: '127.0.0.1', port: forward.localPort }).once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? '')).once('connect', () => resolve('connected')));
    expect(refused).toBe('ECONNREFUSED');
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect(live.size).toBe(0);
  }, 30_000);

  test('the kubelet\'s error channel is reported and the connection cut', async () => {
    const errors: string[] = [];
    const forward = await openPortForward(kubeConfig(), { namespace: 'ferry-system', pod: 'up-a', port: backendPort }, (m) => errors.push(m));
    failDial = true;
    try {
      const got = await exchange(forward.localPort, Buffer.from('x')).catch((e: NodeJS.ErrnoException) => e.code);
      expect(got === 'ECONNRESET' || (got instanceof Buffer && got.length === 0)).toBe(true);
      for (let i = 0; i < 50 && errors.length === 0; i++) await new Promise((resolve) => setTimeout(resolve, 20));
      expect(errors).toEqual([`error forwarding port ${backendPort} to pod up-a: connection refused`]);
    } finally {
      failDial = false;
      await forward.close();
    }
  });

  test('refused at the upgrade (no RBAC): UNAUTHORIZED with the apiserver\'s reason, before any listener', async () => {
    refuse = 403;
    try {
      const err = await openPortForward(kubeConfig(), { namespace: 'ferry-system', pod: 'up-a', port: backendPort }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(FerryError);
      expect((err as FerryError).code).toBe(ErrorCode.Unauthorized);
      expect((err as FerryError).message).toBe(`port-forward to pod ferry-system/up-a port ${backendPort} refused (HTTP 403): pods "up-a" is forbidden: User "u" cannot create resource "pods/portforward"`);
    } finally {
      refuse = undefined;
    }
  });
});
