/**
 * A port-forward through the Kubernetes API, as `kubectl port-forward` does, for one pod port: a
 * listener on 127.0.0.1 (an ephemeral port) and, per accepted connection, one WebSocket to the
 * apiserver's `pods/<pod>/portforward?ports=<port>` with the kubeconfig's credentials (the
 * apiserver passes it to the kubelet, which dials the port inside the pod).
 *
 * The protocol is the kubelet's `v4.channel.k8s.io` (docs/adr/0016): binary messages whose first
 * byte is the channel, 0 the data and 1 the errors of the (only) port; the first message of each
 * channel from the server starts with the port number (2 bytes, little-endian). The client writes
 * channel 0 only. v4 has no half-close: a connection that ends on either side ends the stream.
 *
 * Bytes are piped both ways with backpressure: the local socket is paused while the WebSocket has
 * more than STREAM_HIGH_WATER bytes unsent, and the WebSocket's socket is paused while the local
 * socket's write buffer is full. (client-node's PortForward writes without either.)
 */

import { createServer, type Server, type Socket } from 'node:net';
import type { RequestOptions } from 'node:https';
import type { KubeConfig } from '@kubernetes/client-node';
import WebSocket from 'ws';
import { ErrorCode, FerryError } from '../../src/errors.js';
import type { ForwardTarget } from './proxy-route.js';

export const PORT_FORWARD_PROTOCOL = 'v4.channel.k8s.io';
export const PortForwardChannel = { Data: 0, Error: 1 } as const;
/** Unsent bytes on a stream above which the local socket stops being read. */
export const STREAM_HIGH_WATER = 1 << 20;
/** How long opening one stream (the WebSocket handshake through the apiserver) may take. */
export const STREAM_OPEN_TIMEOUT_MS = 30_000;

/**
 * Pure: one message from the server: its channel and payload, the port prefix removed from the
 * channel's first message (`first`). A message too short for what it must hold is empty.
 */
export function splitForwardMessage(data: Buffer, first: boolean): { readonly channel: number; readonly payload: Buffer } {
  if (data.length === 0) return { channel: -1, payload: Buffer.alloc(0) };
  const skip = first ? 3 : 1;
  return { channel: data[0]!, payload: data.subarray(Math.min(skip, data.length)) };
}

/** Pure: the client's message carrying `chunk` on the data channel. */
export function dataMessage(chunk: Buffer): Buffer {
  const message = Buffer.allocUnsafe(chunk.length + 1);
  message[0] = PortForwardChannel.Data;
  chunk.copy(message, 1);
  return message;
}

/** Pure: the WebSocket URL of a pod's portforward subresource on `server` (a path prefix kept). */
export function portForwardUrl(server: string, target: ForwardTarget): string {
  const base = server.replace(/\/+$/, '').replace(/^http(s?):\/\//i, (_m, s: string) => `ws${s}://`);
  return `${base}/api/v1/namespaces/${encodeURIComponent(target.namespace)}/pods/${encodeURIComponent(target.pod)}/portforward?ports=${target.port}`;
}

interface Stream {
  readonly ws: WebSocket;
  /** Messages that came before anyone listened (the port prefixes come with the handshake's answer). */
  readonly early: { readonly data: Buffer; readonly isBinary: boolean }[];
  readonly stopBuffering: () => void;
}

/** Opens one stream; resolves once the apiserver (and the kubelet behind it) accepted the upgrade. */
async function openStream(kc: KubeConfig, target: ForwardTarget): Promise<Stream> {
  const server = kc.getCurrentCluster()?.server;
  if (!server) throw new FerryError(ErrorCode.InvalidSpec, 'the kubeconfig names no cluster server');
  const options: RequestOptions = {};
  await kc.applyToHTTPSOptions(options);
  const ws = new WebSocket(portForwardUrl(server, target), [PORT_FORWARD_PROTOCOL], { ...(options as WebSocket.ClientOptions), perMessageDeflate: false, handshakeTimeout: STREAM_OPEN_TIMEOUT_MS });
  const early: { data: Buffer; isBinary: boolean }[] = [];
  const buffer = (data: Buffer, isBinary: boolean): void => void early.push({ data, isBinary });
  ws.on('message', buffer);
  const stream: Stream = { ws, early, stopBuffering: () => ws.off('message', buffer) };
  return new Promise<Stream>((resolve, reject) => {
    const what = `port-forward to pod ${target.namespace}/${target.pod} port ${target.port}`;
    ws.once('open', () => resolve(stream));
    ws.once('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.length < 16 && chunks.push(c));
      res.on('end', () => {
        const body = Buffer.concat(chunks).toString('utf8');
        let reason = body.trim().slice(0, 500);
        try {
          reason = (JSON.parse(body) as { message?: string }).message ?? reason;
        } catch {
          /* not a Status */
        }
        const status = res.statusCode ?? 0;
        ws.terminate();
        reject(new FerryError(status === 401 || status === 403 ? ErrorCode.Unauthorized : status === 404 ? ErrorCode.SourceNotFound : ErrorCode.SourceUnavailable, `${what} refused (HTTP ${status}): ${reason || res.statusMessage}`, { retryable: false, details: { status } }));
      });
    });
    ws.once('error', (err) => reject(new FerryError(ErrorCode.SourceUnavailable, `${what}: ${err.message}`, { cause: err })));
  });
}

/** Pipes one accepted local connection through one stream; both end together. */
function pipeStream(local: Socket, stream: Stream, onError: (message: string) => void): void {
  const { ws } = stream;
  const first = [true, true];
  let errorText = '';
  const onMessage = (data: Buffer, isBinary: boolean): void => {
    if (!isBinary) return;
    const channel = data[0];
    const { payload } = splitForwardMessage(data, channel !== undefined && first[channel] === true);
    if (channel === PortForwardChannel.Data || channel === PortForwardChannel.Error) first[channel] = false;
    if (payload.length === 0) return;
    if (channel === PortForwardChannel.Data) {
      if (!local.write(payload)) ws.pause();
    } else if (channel === PortForwardChannel.Error) {
      errorText += payload.toString('utf8');
    }
  };
  stream.stopBuffering();
  for (const m of stream.early.splice(0)) onMessage(m.data, m.isBinary);
  ws.on('message', onMessage);
  local.on('drain', () => ws.resume());
  local.on('data', (chunk: Buffer) => {
    // A send that fails (the stream closing) is followed by the stream's close, which ends local.
    ws.send(dataMessage(chunk), { binary: true }, (err) => {
      if (!err && local.isPaused() && ws.bufferedAmount < STREAM_HIGH_WATER / 2) local.resume();
    });
    if (ws.bufferedAmount >= STREAM_HIGH_WATER) local.pause();
  });
  const closeWs = (): void => {
    if (ws.readyState === WebSocket.OPEN) ws.close(1000);
    else if (ws.readyState === WebSocket.CONNECTING) ws.terminate();
  };
  local.on('end', closeWs);
  local.on('close', closeWs);
  local.on('error', closeWs);
  ws.on('close', () => {
    if (errorText !== '') {
      onError(errorText.trim());
      local.destroy();
    } else {
      local.end();
    }
  });
  ws.on('error', () => local.destroy());
  local.resume();
}

export interface PortForward {
  /** `https://127.0.0.1:<port>`: the proxy as reached through the forward. */
  readonly url: string;
  readonly localPort: number;
  /** Streams opened so far (one per accepted connection). */
  readonly streams: () => number;
  /** Closes the listener and every stream; safe to call again. */
  close(): Promise<void>;
}

/**
 * Checks the forward can be opened (one stream, closed again: RBAC, the pod, the kubelet), then
 * listens on 127.0.0.1. `onError` hears what the kubelet reports on a stream's error channel (the
 * pod port refused, say).
 */
export async function openPortForward(kc: KubeConfig, target: ForwardTarget, onError: (message: string) => void = () => undefined): Promise<PortForward> {
  const probe = await openStream(kc, target);
  probe.ws.close(1000);
  const sockets = new Set<Socket>();
  const streams = new Set<WebSocket>();
  let opened = 0;
  const server: Server = createServer({ pauseOnConnect: true }, (local) => {
    sockets.add(local);
    local.once('close', () => sockets.delete(local));
    openStream(kc, target).then(
      (stream) => {
        const { ws } = stream;
        opened += 1;
        streams.add(ws);
        ws.once('close', () => streams.delete(ws));
        if (local.destroyed) ws.terminate();
        else pipeStream(local, stream, onError);
      },
      (err: Error) => {
        onError(err.message);
        local.destroy();
      },
    );
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const localPort = (server.address() as { port: number }).port;
  let closing: Promise<void> | undefined;
  return {
    url: `https://127.0.0.1:${localPort}`,
    localPort,
    streams: () => opened,
    close: () => {
      closing ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        for (const ws of streams) ws.terminate();
        for (const s of sockets) s.destroy();
      });
      return closing;
    },
  };
}
