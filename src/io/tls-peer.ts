/**
 * Who is on the other end of a mutual-TLS connection: the common name of a client certificate
 * that chained to the server's CA, or undefined (no certificate, or one that did not verify).
 * Servers that pin one client name (the upload server, the clone target) compare against this.
 */

import type { Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';

export function peerCommonName(socket: Socket): string | undefined {
  const tls = socket as TLSSocket;
  if (tls.authorized !== true || typeof tls.getPeerCertificate !== 'function') return undefined;
  const cn = (tls.getPeerCertificate()?.subject as Record<string, string | string[]> | undefined)?.CN;
  return Array.isArray(cn) ? cn[0] : cn;
}
