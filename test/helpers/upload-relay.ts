/** A cutting TCP relay for upload tests (component and integration): the Wi-Fi that drops. */

import { type AddressInfo, connect, createServer as createTcpServer, type Socket } from 'node:net';

/**
 * A loopback TCP relay in front of the proxy that cuts every open connection (client and proxy side)
 * when the bytes it has carried towards the proxy first pass each of `cutsAt` (fractions of
 * `of`): a laptop's Wi-Fi dropping twice. TLS passes through it untouched. `onCut` runs after each
 * cut (a test may kill the upload server there); with `cut` false the marks only call it.
 */
export async function startCuttingRelay(targetPort: number, of: number, cutsAt: readonly number[], holdMs = 0, onCut?: (cut: number) => void, cut = true): Promise<{ port: number; forwarded: () => number; cuts: () => number; close(): Promise<void> }> {
  const sockets = new Set<Socket>();
  const pending = cutsAt.map((fraction) => Math.floor(fraction * of));
  let forwarded = 0;
  let cuts = 0;
  let heldUntil = 0;
  const server = createTcpServer((client) => {
    // For `holdMs` after a cut, new connections wait (the Wi-Fi takes a while to come back).
    const upstream = connect(targetPort, '127.0.0.1');
    const wait = heldUntil - Date.now();
    if (wait > 0) {
      client.pause();
      upstream.pause();
      setTimeout(() => {
        client.resume();
        upstream.resume();
      }, wait).unref();
    }
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => s.destroy());
    }
    client.on('data', (chunk: Buffer) => {
      forwarded += chunk.length;
      if (!upstream.write(chunk)) {
        client.pause();
        upstream.once('drain', () => client.resume());
      }
      if (pending.length > 0 && forwarded >= (pending[0] as number)) {
        pending.shift();
        cuts += 1;
        heldUntil = Date.now() + holdMs;
        if (cut) for (const s of [...sockets]) s.destroy();
        onCut?.(cuts);
      }
    });
    upstream.pipe(client);
    client.on('close', () => upstream.destroy());
    upstream.on('close', () => client.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    forwarded: () => forwarded,
    cuts: () => cuts,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
