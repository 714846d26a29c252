/**
 * The upload certificates (controller/certs/upload-certs.ts) as Secrets on a real apiserver, with
 * the clock moved by the test: made at install, kept, rotated at two thirds with both CAs in the
 * bundles, the previous CA signing through the grace, then the new one; a Node mTLS handshake
 * between a server certificate and the proxy's client certificate across a rotation.
 */

import { afterAll, beforeAll, expect, test } from '@jest/globals';
import { X509Certificate } from 'node:crypto';
import { createServer } from 'node:https';
import { connect, type TLSSocket } from 'node:tls';
import { CoreV1Api } from '@kubernetes/client-node';
import { silentLogger } from '../../src/logging.js';
import { UploadCertificates, UploadSecret } from '../../controller/certs/upload-certs.js';
import { startControlPlane, type ControlPlane } from '../helpers/cluster.js';

const DAY = 86_400_000;
const settings = { caLifetimeMs: 30 * DAY, leafLifetimeMs: 7 * DAY };
const T0 = Date.now();
let cp: ControlPlane;
let core: CoreV1Api;

beforeAll(async () => {
  cp = await startControlPlane();
  core = cp.kubeConfig.makeApiClient(CoreV1Api);
}, 120_000);

afterAll(async () => {
  await cp?.stop();
});

async function data(namespace: string, name: string): Promise<Record<string, string>> {
  const secret = await core.readNamespacedSecret({ namespace, name });
  return Object.fromEntries(Object.entries(secret.data ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64').toString('utf8')]));
}

const issuedBy = (leaf: string | undefined, ca: string | undefined): boolean => new X509Certificate(leaf ?? '').verify(new X509Certificate(ca ?? '').publicKey);
const certsIn = (bundle: string | undefined): number => (bundle ?? '').split('BEGIN CERTIFICATE').length - 1;

/** A TLS handshake as proxy (client) and upload server; true when the server accepted the client's chain. */
async function handshake(server: { key: string; cert: string; clientCaBundle: string }, client: { key: string; cert: string; ca: string }, servername: string): Promise<boolean> {
  const https = createServer({ key: server.key, cert: server.cert, ca: server.clientCaBundle, requestCert: true, rejectUnauthorized: false }, (req, res) => res.end(String((req.socket as TLSSocket).authorized)));
  await new Promise<void>((r) => https.listen(0, '127.0.0.1', () => r()));
  const port = (https.address() as { port: number }).port;
  try {
    return await new Promise<boolean>((resolve, reject) => {
      const socket = connect({ host: '127.0.0.1', port, servername, key: client.key, cert: client.cert, ca: client.ca }, () => {
        socket.write(`GET / HTTP/1.1\r\nHost: ${servername}\r\nConnection: close\r\n\r\n`);
      });
      let text = '';
      socket.on('data', (d: Buffer) => (text += d.toString()));
      socket.on('end', () => resolve(text.endsWith('true')));
      socket.on('error', reject);
    });
  } finally {
    https.close();
  }
}

test('CAs and the proxy certificates: made, kept, rotated with overlap, the new CA signing after the grace', async () => {
  const ns = await cp.newNamespace('ferry');
  let now = T0;
  const certs = new UploadCertificates(core, ns, settings, silentLogger(), () => new Date(now));
  await certs.ensure();
  const ca0 = await data(ns, UploadSecret.ClientCa);
  const client0 = await data(ns, UploadSecret.ProxyClient);
  const serving0 = await data(ns, UploadSecret.ProxyServing);
  expect(new X509Certificate(client0['tls.crt'] ?? '').subject).toContain('CN=client.upload-server.cdi.kubevirt.io');
  expect(new X509Certificate(serving0['tls.crt'] ?? '').subjectAltName).toContain(`DNS:ferry-uploadproxy.${ns}.svc`);
  expect(client0['ca.crt']).toBe((await data(ns, UploadSecret.ServerCa))['ca-bundle.crt']);
  expect(issuedBy(client0['tls.crt'], ca0['tls.crt'])).toBe(true);

  // A day later nothing changes (same resourceVersion).
  const rv = (await core.readNamespacedSecret({ namespace: ns, name: UploadSecret.ClientCa })).metadata?.resourceVersion;
  now = T0 + DAY;
  await certs.ensure();
  expect((await core.readNamespacedSecret({ namespace: ns, name: UploadSecret.ClientCa })).metadata?.resourceVersion).toBe(rv);

  // Past two thirds: a new CA, both in the bundle; the proxy's client certificate (renewed: past its own two thirds) still from the old CA.
  now = T0 + 21 * DAY;
  await certs.ensure();
  const ca1 = await data(ns, UploadSecret.ClientCa);
  expect(ca1['tls.crt']).not.toBe(ca0['tls.crt']);
  expect(ca1['previous.crt']).toBe(ca0['tls.crt']);
  expect(certsIn(ca1['ca-bundle.crt'])).toBe(2);
  const client1 = await data(ns, UploadSecret.ProxyClient);
  expect(issuedBy(client1['tls.crt'], ca0['tls.crt'])).toBe(true);
  // An upload server made now trusts both CAs: the proxy's certificate from the old CA is accepted.
  const server1 = certs.serverCertificate(['cdi-upload-disk.vms.svc'], 'cdi-upload-disk.vms.svc');
  expect(certsIn(server1.clientCaBundle)).toBe(2);
  // (The handshake runs at the real clock: certificates valid now.)
  now = T0;
  const serverNow = certs.serverCertificate(['cdi-upload-disk.vms.svc'], 'cdi-upload-disk.vms.svc');
  const serverCa = (await data(ns, UploadSecret.ServerCa))['ca-bundle.crt'] ?? '';
  expect(await handshake(serverNow, { key: client0['tls.key'] ?? '', cert: client0['tls.crt'] ?? '', ca: serverCa }, 'cdi-upload-disk.vms.svc')).toBe(true);

  // After one leaf lifetime of grace: the client certificate is re-issued by the new CA.
  now = T0 + 28.5 * DAY;
  await certs.ensure();
  const client2 = await data(ns, UploadSecret.ProxyClient);
  expect(issuedBy(client2['tls.crt'], ca1['tls.crt'])).toBe(true);
  // The old CA expires: dropped from the bundle.
  now = T0 + 30.5 * DAY;
  await certs.ensure();
  const ca3 = await data(ns, UploadSecret.ClientCa);
  expect(ca3['previous.crt']).toBeUndefined();
  expect(certsIn(ca3['ca-bundle.crt'])).toBe(1);
}, 60_000);
