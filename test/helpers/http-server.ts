/**
 * A real HTTP(S) file server on loopback for component tests, with Range support and the ways
 * servers misbehave in practice: 404, auth, 503-then-200, early close, a lying Content-Length,
 * stalls and redirects. Every request is recorded so tests can assert what the importer did.
 */

import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo, Socket } from 'node:net';

export type Route =
  | {
      readonly file: string;
      readonly ranges?: boolean;
      readonly auth?: { user: string; pass: string };
      readonly require?: Readonly<Record<string, string>>;
      /**
       * The answer to a request whose Range header matches `range` waits `ms` first (a stall one
       * request meets); `reused`: only a request that is not the first on its connection.
       */
      readonly delay?: { readonly range: RegExp; readonly ms: number; readonly reused?: boolean };
    }
  | { readonly status: number }
  | { readonly file: string; readonly failFirst: number; readonly failStatus?: number }
  | { readonly file: string; readonly closeAfter: number; readonly times?: number; readonly ranges?: boolean }
  | { readonly file: string; readonly lieExtra: number }
  | { readonly file: string; readonly stallAfter: number }
  | { readonly redirect: string }
  | { readonly file: string; readonly slow: { readonly chunk: number; readonly delayMs: number } }
  | { readonly file: string; readonly trickle: Trickle; readonly auth?: { user: string; pass: string }; readonly require?: Readonly<Record<string, string>> };

/**
 * A body that goes slow: `after` bytes at full speed, then `bytes` every `everyMs` (one byte per
 * 200 ms never trips an idle timeout), or nothing more at all (`stall`). `ranged` limits it to
 * requests with a Range header (what nbdkit sends), so a first plain GET is served normally.
 */
export interface Trickle {
  readonly after?: number;
  readonly bytes?: number;
  readonly everyMs?: number;
  readonly stall?: boolean;
  readonly ranged?: boolean;
}

export interface RecordedRequest {
  readonly method: string;
  readonly path: string;
  readonly range?: string;
  readonly authorization?: string;
  /** Every header of the request. */
  readonly headers: Readonly<Record<string, string | string[] | undefined>>;
}

export interface TestServer {
  readonly url: string;
  readonly requests: RecordedRequest[];
  /** Body bytes sent per path, all requests together. */
  readonly sent: Map<string, number>;
  route(path: string, route: Route): void;
  close(): Promise<void>;
}

export interface ServerOptions {
  readonly tls?: { readonly key: string; readonly cert: string };
}

function parseRange(header: string | undefined, size: number): { start: number; end: number } | undefined {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header ?? '');
  if (!m) return undefined;
  const start = m[1] === '' ? size - Number(m[2]) : Number(m[1]);
  const end = m[1] === '' || m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  return start <= end && start < size ? { start, end } : undefined;
}

export async function startServer(options: ServerOptions = {}): Promise<TestServer> {
  const routes = new Map<string, Route>();
  const hits = new Map<string, number>();
  const requests: RecordedRequest[] = [];
  const sent = new Map<string, number>();
  const sockets = new Set<Socket>();

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    requests.push({
      method: req.method ?? 'GET',
      path,
      ...(req.headers.range ? { range: req.headers.range } : {}),
      ...(req.headers.authorization ? { authorization: req.headers.authorization } : {}),
      headers: { ...req.headers },
    });
    const hit = (hits.get(path) ?? 0) + 1;
    hits.set(path, hit);
    const route = routes.get(path);
    const write = res.write.bind(res) as (chunk: unknown, ...rest: unknown[]) => boolean;
    res.write = ((chunk: unknown, ...rest: unknown[]) => {
      sent.set(path, (sent.get(path) ?? 0) + ((chunk as Buffer).length ?? 0));
      return write(chunk, ...rest);
    }) as typeof res.write;
    serve(route, req, res, hit).catch(() => res.destroy());
  };

  const server: Server = options.tls ? createHttpsServer({ key: options.tls.key, cert: options.tls.cert }, handler) : createHttpServer(handler);
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `${options.tls ? 'https' : 'http'}://127.0.0.1:${port}`,
    requests,
    sent,
    route: (path, route) => routes.set(path, route),
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Requests seen per connection, this one included. */
const served = new WeakMap<Socket, number>();

async function serve(route: Route | undefined, req: IncomingMessage, res: ServerResponse, hit: number): Promise<void> {
  served.set(req.socket, (served.get(req.socket) ?? 0) + 1);
  if (!route) return end(res, 404);
  if ('status' in route) return end(res, route.status);
  if ('redirect' in route) {
    res.writeHead(302, { location: route.redirect });
    res.end();
    return;
  }
  if ('auth' in route && route.auth) {
    const expected = `Basic ${Buffer.from(`${route.auth.user}:${route.auth.pass}`).toString('base64')}`;
    if (req.headers.authorization !== expected) {
      res.writeHead(401, { 'www-authenticate': 'Basic realm="ferry-test"' });
      res.end();
      return;
    }
  }
  // Headers the request must carry (an API key, a bearer token): else 401, as such servers answer.
  if ('require' in route && route.require && Object.entries(route.require).some(([name, value]) => req.headers[name.toLowerCase()] !== value)) return end(res, 401);
  if ('failFirst' in route && hit <= route.failFirst) return end(res, route.failStatus ?? 503);
  if ('delay' in route && route.delay && route.delay.range.test(req.headers.range ?? '') && (!route.delay.reused || (served.get(req.socket) ?? 0) > 1)) {
    await new Promise((r) => setTimeout(r, route.delay?.ms));
  }
  const info = await stat(route.file);
  const size = info.size;
  const ranges = !('ranges' in route) || route.ranges !== false;
  const range = ranges ? parseRange(req.headers.range, size) : undefined;
  const start = range?.start ?? 0;
  const last = range?.end ?? size - 1;
  const headers: Record<string, string | number> = { 'content-type': 'application/octet-stream' };
  if (ranges) {
    headers['accept-ranges'] = 'bytes';
    headers.etag = `"${size.toString(16)}-${Math.floor(info.mtimeMs).toString(16)}"`;
    headers['last-modified'] = info.mtime.toUTCString();
  }
  let length = last - start + 1;
  if ('lieExtra' in route) length += route.lieExtra;
  headers['content-length'] = length;
  if (range) headers['content-range'] = `bytes ${start}-${last}/${size}`;
  res.writeHead(range ? 206 : 200, headers);
  if (req.method === 'HEAD') return void res.end();

  if ('closeAfter' in route && hit <= (route.times ?? Infinity)) {
    return streamThen(route.file, start, Math.min(last, start + route.closeAfter - 1), res, () => res.destroy());
  }
  if ('trickle' in route && (!route.trickle.ranged || range !== undefined)) {
    return trickle(route.file, start, last, res, route.trickle);
  }
  if ('stallAfter' in route) {
    // Send part of the body, then keep the connection open and silent.
    return streamThen(route.file, start, Math.min(last, start + route.stallAfter - 1), res, () => undefined);
  }
  if ('slow' in route) {
    const { open } = await import('node:fs/promises');
    const handle = await open(route.file, 'r');
    try {
      for (let pos = start; pos <= last && !res.destroyed; pos += route.slow.chunk) {
        const buf = Buffer.alloc(Math.min(route.slow.chunk, last - pos + 1));
        await handle.read(buf, 0, buf.length, pos);
        res.write(buf);
        await new Promise((r) => setTimeout(r, route.slow.delayMs));
      }
    } finally {
      await handle.close();
    }
    res.end();
    return;
  }
  if ('lieExtra' in route) {
    return streamThen(route.file, start, last, res, () => res.destroy());
  }
  await streamThen(route.file, start, last, res, () => res.end());
}

async function trickle(file: string, start: number, last: number, res: ServerResponse, how: Trickle): Promise<void> {
  const fast = Math.min(last, start + (how.after ?? 0) - 1);
  await streamThen(file, start, fast, res, () => undefined);
  // Stalled: the connection stays open and silent until the client goes (or the server closes).
  if (how.stall) return;
  const { open } = await import('node:fs/promises');
  const handle = await open(file, 'r');
  try {
    const step = Math.max(1, how.bytes ?? 1);
    for (let pos = fast + 1; pos <= last && !res.destroyed; pos += step) {
      await new Promise((r) => setTimeout(r, how.everyMs ?? 200));
      const buf = Buffer.alloc(Math.min(step, last - pos + 1));
      await handle.read(buf, 0, buf.length, pos);
      if (!res.destroyed) res.write(buf);
    }
  } finally {
    await handle.close();
  }
  res.end();
}

function streamThen(file: string, start: number, end: number, res: ServerResponse, then: () => void): Promise<void> {
  return new Promise((resolve, reject) => {
    if (end < start) {
      then();
      resolve();
      return;
    }
    const input = createReadStream(file, { start, end });
    input.on('error', reject);
    input.on('data', (chunk) => {
      if (!res.write(chunk)) {
        input.pause();
        res.once('drain', () => input.resume());
      }
    });
    input.on('end', () => {
      then();
      resolve();
    });
    res.on('close', () => input.destroy());
  });
}

function end(res: ServerResponse, status: number): void {
  res.writeHead(status, { 'content-length': 0 });
  res.end();
}
