/** A forward proxy on loopback (plain-HTTP forwarding and CONNECT tunnels) that counts its use. */

import { createServer, request, type Server } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';

export interface TestProxy {
  readonly url: string;
  readonly seen: string[];
  /** Proxy-Authorization headers received, in order. */
  readonly authorizations: string[];
  close(): Promise<void>;
}

export interface ProxyOptions {
  /** Basic credentials every request must carry in Proxy-Authorization (else 407). */
  readonly auth?: { readonly user: string; readonly pass: string };
  /**
   * Plain-HTTP responses to URLs matching `match` go slow: `after` bytes at full speed, then
   * `bytes` every `everyMs` (a far, congested or hostile link between importer and source).
   */
  readonly trickle?: { readonly match: RegExp; readonly after: number; readonly bytes: number; readonly everyMs: number };
}

async function trickled(up: AsyncIterable<Buffer>, res: import('node:http').ServerResponse, how: NonNullable<ProxyOptions['trickle']>): Promise<void> {
  let sent = 0;
  for await (const chunk of up) {
    for (let i = 0; i < chunk.length; ) {
      if (res.destroyed) return;
      const n = sent < how.after ? Math.min(chunk.length - i, how.after - sent) : Math.min(chunk.length - i, how.bytes);
      if (sent >= how.after) await new Promise((r) => setTimeout(r, how.everyMs));
      if (res.destroyed) return;
      res.write(chunk.subarray(i, i + n));
      i += n;
      sent += n;
    }
  }
  res.end();
}

export async function startProxy(options: ProxyOptions = {}): Promise<TestProxy> {
  const seen: string[] = [];
  const authorizations: string[] = [];
  const sockets = new Set<Socket>();
  const expected = options.auth ? `Basic ${Buffer.from(`${options.auth.user}:${options.auth.pass}`).toString('base64')}` : undefined;
  const allowed = (header: string | undefined): boolean => {
    if (header !== undefined) authorizations.push(header);
    return expected === undefined || header === expected;
  };
  const server: Server = createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    if (!allowed(req.headers['proxy-authorization'])) {
      res.writeHead(407, { 'proxy-authenticate': 'Basic realm="ferry-proxy"', 'content-length': 0 });
      res.end();
      return;
    }
    const target = new URL(req.url ?? '');
    const upstream = request(
      { host: target.hostname, port: target.port, path: target.pathname + target.search, method: req.method, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        if (options.trickle && options.trickle.match.test(req.url ?? '')) {
          res.on('close', () => up.destroy());
          trickled(up, res, options.trickle).catch(() => res.destroy());
        } else {
          up.pipe(res);
        }
      },
    );
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  });
  server.on('connect', (req, client: Socket, head: Buffer) => {
    seen.push(`CONNECT ${req.url}`);
    if (!allowed(req.headers['proxy-authorization'])) {
      client.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="ferry-proxy"\r\nContent-Length: 0\r\n\r\n');
      return;
    }
    const [host, port] = (req.url ?? '').split(':');
    const upstream = connect(Number(port), host ?? '127.0.0.1', () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    authorizations,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
