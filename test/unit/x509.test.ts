import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import { request } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import * as der from '../../src/pki/der.js';
import { CertUsage, createCa, issueCertificate, needsRenewal, validFor, validityOf } from '../../src/pki/x509.js';

const now = new Date();
const ca = createCa({ commonName: 'ferry-test-ca' }, validFor(now, 2));

function openssl(args: string[], input?: string): string {
  return execFileSync('openssl', args, { input, encoding: 'utf8', stdio: ['pipe', 'pipe', 'pipe'] });
}

describe('DER', () => {
  it.each([
    ['1.2.840.10045.4.3.2', '06082a8648ce3d040302'],
    ['2.5.29.17', '0603551d11'],
  ])('encodes OID %s', (dotted, hex) => expect(der.oid(dotted).toString('hex')).toBe(hex));

  it('writes minimal non-negative integers', () => {
    expect(der.smallInteger(0).toString('hex')).toBe('020100');
    expect(der.smallInteger(2).toString('hex')).toBe('020102');
    expect(der.smallInteger(128).toString('hex')).toBe('02020080');
    expect(der.unsignedInteger(Buffer.from('0000ff', 'hex')).toString('hex')).toBe('020200ff');
  });

  it('drops trailing zero bits of a named-bit string', () => {
    expect(der.namedBits([0]).toString('hex')).toBe('03020780'); // digitalSignature
    expect(der.namedBits([0, 5, 6]).toString('hex')).toBe('03020186'); // + keyCertSign, cRLSign
    expect(der.namedBits([8]).toString('hex')).toBe('0303070080');
  });

  it('uses long lengths and reads them back', () => {
    const long = der.octetString(Buffer.alloc(300, 1));
    expect(long.subarray(0, 4).toString('hex')).toBe('0482012c');
    expect(der.readElement(long).content.length).toBe(300);
    expect(() => der.readElement(long.subarray(0, 100))).toThrow('truncated');
  });

  it('writes UTCTime before 2050 and GeneralizedTime after', () => {
    expect(der.time(new Date('2026-12-01T12:34:56.789Z')).toString('latin1').slice(2)).toBe('261201123456Z');
    expect(der.time(new Date('2051-01-02T03:04:05Z')).toString('latin1').slice(2)).toBe('20510102030405Z');
  });
});

describe('certificates', () => {
  const dir = mkdtempSync(join(tmpdir(), 'ferry-x509-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const file = (name: string, text: string): string => {
    const path = join(dir, name);
    writeFileSync(path, text);
    return path;
  };

  it('makes a CA that openssl parses as a CA', () => {
    const text = openssl(['x509', '-noout', '-text'], ca.cert);
    expect(text).toContain('CA:TRUE, pathlen:0');
    expect(text).toContain('Certificate Sign, CRL Sign');
    expect(text).toContain('ecdsa-with-SHA256');
    expect(new X509Certificate(ca.cert).verify(new X509Certificate(ca.cert).publicKey)).toBe(true);
  });

  it('issues a server certificate that openssl verifies against the CA, with its names', () => {
    const leaf = issueCertificate(ca, { commonName: 'cdi-upload-disk.ns.svc', usage: CertUsage.Server, hosts: ['cdi-upload-disk.ns.svc', 'localhost', '127.0.0.1', '::1'], ...validFor(now, 1) });
    const caFile = file('ca.crt', ca.cert);
    expect(openssl(['verify', '-CAfile', caFile, '-purpose', 'sslserver', file('leaf.crt', leaf.cert)]).trim()).toMatch(/: OK$/);
    const x = new X509Certificate(leaf.cert);
    expect(x.subjectAltName).toBe('DNS:cdi-upload-disk.ns.svc, DNS:localhost, IP Address:127.0.0.1, IP Address:0:0:0:0:0:0:0:1');
    expect(x.checkHost('cdi-upload-disk.ns.svc')).toBe('cdi-upload-disk.ns.svc');
    expect(x.checkIP('::1')).toBe('::1');
    expect(x.ca).toBe(false);
    expect(x.checkIssued(new X509Certificate(ca.cert))).toBe(true);
    expect(openssl(['x509', '-noout', '-text'], leaf.cert)).toContain('TLS Web Server Authentication');
  });

  it('refuses a client certificate for server use and the other way round', () => {
    const caFile = file('ca2.crt', ca.cert);
    const client = issueCertificate(ca, { commonName: 'client.upload-server.cdi.kubevirt.io', usage: CertUsage.Client, ...validFor(now, 1) });
    const path = file('client.crt', client.cert);
    expect(openssl(['verify', '-CAfile', caFile, '-purpose', 'sslclient', path]).trim()).toMatch(/: OK$/);
    expect(() => openssl(['verify', '-CAfile', caFile, '-purpose', 'sslserver', path])).toThrow();
  });

  it('a certificate from another CA does not verify', () => {
    const other = createCa({ commonName: 'ferry-test-ca' }, validFor(now, 2));
    const leaf = issueCertificate(other, { commonName: 'x', usage: CertUsage.Server, hosts: ['localhost'], ...validFor(now, 1) });
    expect(() => openssl(['verify', '-CAfile', file('ca3.crt', ca.cert), file('other.crt', leaf.cert)])).toThrow();
    expect(new X509Certificate(leaf.cert).checkIssued(new X509Certificate(ca.cert))).toBe(false);
  });

  it('refuses nonsense requests', () => {
    expect(() => issueCertificate(ca, { commonName: 'x', usage: CertUsage.Server, ...validFor(now, 1) })).toThrow('at least one host');
    expect(() => createCa({ commonName: 'x' }, { notBefore: now, notAfter: now })).toThrow('notAfter');
    const leaf = issueCertificate(ca, { commonName: 'x', usage: CertUsage.Client, ...validFor(now, 1) });
    expect(() => issueCertificate(leaf, { commonName: 'y', usage: CertUsage.Client, ...validFor(now, 1) })).toThrow('not a CA');
  });

  it('tells when to renew', () => {
    const validity = { notBefore: new Date('2026-01-01T00:00:00Z'), notAfter: new Date('2026-01-31T00:00:00Z') };
    const leaf = issueCertificate(ca, { commonName: 'x', usage: CertUsage.Client, ...validity });
    expect(validityOf(leaf.cert)).toEqual(validity);
    expect(needsRenewal(leaf.cert, new Date('2025-12-31T23:00:00Z'))).toBe(true); // not valid yet
    expect(needsRenewal(leaf.cert, new Date('2026-01-15T00:00:00Z'))).toBe(false);
    expect(needsRenewal(leaf.cert, new Date('2026-01-22T00:00:00Z'))).toBe(true); // < 1/3 left
    expect(needsRenewal(leaf.cert, new Date('2026-02-01T00:00:00Z'))).toBe(true);
  });

  it('works for mutual TLS between Node client and server, with the client name read from the certificate', async () => {
    const serving = issueCertificate(ca, { commonName: 'server', usage: CertUsage.Server, hosts: ['127.0.0.1'], ...validFor(now, 1) });
    const client = issueCertificate(ca, { commonName: 'client.upload-server.cdi.kubevirt.io', usage: CertUsage.Client, ...validFor(now, 1) });
    const server: Server = createServer({ ...serving, ca: ca.cert, requestCert: true, rejectUnauthorized: true }, (req, res) => {
      res.end((req.socket as TLSSocket).getPeerCertificate().subject.CN);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    try {
      const body = await new Promise<string>((resolve, reject) => {
        request({ host: '127.0.0.1', port, ca: ca.cert, ...client }, (res) => {
          let text = '';
          res.on('data', (chunk: Buffer) => (text += chunk.toString()));
          res.on('end', () => resolve(text));
        })
          .on('error', reject)
          .end();
      });
      expect(body).toBe('client.upload-server.cdi.kubevirt.io');
      // Without a client certificate the handshake is refused.
      await expect(
        new Promise((resolve, reject) => request({ host: '127.0.0.1', port, ca: ca.cert }, resolve).on('error', reject).end()),
      ).rejects.toThrow();
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });
});
