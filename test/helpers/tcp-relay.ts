/**
 * A loopback TCP relay in front of a server (e.g. the apiserver: TLS passes through untouched).
 * `freeze()` makes it a server that accepts and never answers: bytes stop flowing both ways on open
 * connections and new ones are accepted and left silent — what a client sees of a hung apiserver.
 */

import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';

export interface TcpRelay {
  /** 127.0.0.1:<port> */
  readonly port: number;
  freeze(): void;
  close(): Promise<void>;
}

export async function startTcpRelay(targetHost: string, targetPort: number): Promise<TcpRelay> {
  const sockets = new Set<Socket>();
  let frozen = false;
  const pairs: Array<[Socket, Socket]> = [];
  const track = (s: Socket): void => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
  };
  const server: Server = createServer((client) => {
    track(client);
    if (frozen) return;
    const upstream = connect(targetPort, targetHost);
    track(upstream);
    client.pipe(upstream);
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
    pairs.push([client, upstream]);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    freeze(): void {
      frozen = true;
      for (const [client, upstream] of pairs) {
        client.unpipe(upstream);
        upstream.unpipe(client);
        client.pause();
        upstream.pause();
      }
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
