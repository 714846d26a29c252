/**
 * The launcher's HTTP endpoint: `GET /readyz` is 200 while the domain runs (the pod's readiness
 * probe), `GET /healthz` 200 while the process serves, `GET /status` the launcher's status as JSON
 * (the VM controller reads `accel` from it). Paths and body: src/contract/launcher-{pod,status}.ts.
 */

import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { LauncherHttpPath } from '../src/contract/launcher-pod.js';
import { encodeLauncherStatusBody, type LauncherStatusBody } from '../src/contract/launcher-status.js';

export interface StatusSource {
  ready(): boolean;
  status(): LauncherStatusBody;
}

export interface StatusServer {
  readonly port: number;
  close(): Promise<void>;
}

export async function startStatusServer(source: StatusSource, port: number, host: string): Promise<StatusServer> {
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
    } else if (path === LauncherHttpPath.Ready) {
      const ready = source.ready();
      res.writeHead(ready ? 200 : 503, { 'content-type': 'text/plain' }).end(ready ? 'ok\n' : 'the domain is not running\n');
    } else if (path === LauncherHttpPath.Health) {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
    } else if (path === LauncherHttpPath.Status) {
      res.writeHead(200, { 'content-type': 'application/json' }).end(encodeLauncherStatusBody(source.status()));
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
