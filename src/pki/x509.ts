/**
 * Ferry's own certificates: a CA and the leaf certificates it signs, made in-process with
 * node:crypto (which parses X.509 but cannot write it) and the DER of src/pki/der.ts. The images
 * then need no openssl, and every component that needs a certificate (the upload CA, the token API's
 * serving certificate, clone streams) makes it the same way.
 *
 * Keys are ECDSA P-256 and signatures ecdsa-with-SHA256: accepted by Go's crypto/tls (the
 * apiserver calling a webhook or an aggregated API), Node and curl. Leaves carry subjectAltName
 * (Go ignores the common name), extendedKeyUsage, and key identifiers. The clock is a parameter.
 */

import { createHash, generateKeyPairSync, type KeyObject, createPrivateKey, randomBytes, sign, X509Certificate } from 'node:crypto';
import * as der from './der.js';

const OID = {
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
  commonName: '2.5.4.3',
  organization: '2.5.4.10',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
} as const;

/** KeyUsage bit numbers (RFC 5280 §4.2.1.3). */
const KeyUsageBit = { digitalSignature: 0, keyCertSign: 5, cRLSign: 6 } as const;

export const CertUsage = { Server: 'server', Client: 'client', ServerAndClient: 'server+client' } as const;
export type CertUsage = (typeof CertUsage)[keyof typeof CertUsage];

/** A private key and its certificate, both PEM. */
export interface KeyAndCert {
  readonly key: string;
  readonly cert: string;
}

export interface Subject {
  readonly commonName: string;
  readonly organizations?: readonly string[];
}

export interface Validity {
  readonly notBefore: Date;
  readonly notAfter: Date;
}

export interface LeafRequest extends Subject, Validity {
  readonly usage: CertUsage;
  /** DNS names and IP addresses (v4 or v6) for subjectAltName; a server needs at least one. */
  readonly hosts?: readonly string[];
}

function name(subject: Subject): Buffer {
  const rdn = (type: string, value: string): Buffer => der.set(der.sequence(der.oid(type), der.utf8String(value)));
  return der.sequence(...(subject.organizations ?? []).map((o) => rdn(OID.organization, o)), rdn(OID.commonName, subject.commonName));
}

function extension(type: string, critical: boolean, value: Buffer): Buffer {
  return der.sequence(der.oid(type), ...(critical ? [der.boolean(true)] : []), der.octetString(value));
}

/** 4 or 6 for an IP address literal, 0 for a host name (node:net's isIP, without the I/O module). */
function isIP(host: string): 0 | 4 | 6 {
  if (/^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/.test(host)) return 4;
  if (host.includes(':') && /^[0-9a-fA-F:]+$/.test(host) && host.split('::').length <= 2) return 6;
  return 0;
}

function ipBytes(ip: string): Buffer {
  if (isIP(ip) === 4) return Buffer.from(ip.split('.').map(Number));
  // IPv6: expand "::" and write 8 groups of 16 bits.
  const [head = '', tail] = ip.split('::');
  const groups = (text: string): string[] => (text ? text.split(':') : []);
  const front = groups(head);
  const back = tail === undefined ? [] : groups(tail);
  const all = [...front, ...Array<string>(8 - front.length - back.length).fill('0'), ...back];
  return Buffer.concat(all.map((g) => Buffer.from(g.padStart(4, '0'), 'hex')));
}

function subjectAltName(hosts: readonly string[]): Buffer {
  // GeneralName: dNSName [2] IMPLICIT IA5String, iPAddress [7] IMPLICIT OCTET STRING.
  return der.sequence(...hosts.map((host) => (isIP(host) ? der.tlv(0x87, ipBytes(host)) : der.tlv(0x82, Buffer.from(host, 'ascii')))));
}

/** RFC 7093 method 1: the leftmost 160 bits of the SHA-256 of the subjectPublicKey BIT STRING's value. */
function keyIdentifier(publicKey: KeyObject): Buffer {
  const spki = der.children(der.readElement(publicKey.export({ type: 'spki', format: 'der' })).content);
  const bits = spki[1]!.content.subarray(1);
  return createHash('sha256').update(bits).digest().subarray(0, 20);
}

function checkValidity(validity: Validity): void {
  if (!(validity.notAfter.getTime() > validity.notBefore.getTime())) throw new Error('certificate validity: notAfter must be after notBefore');
}

function signed(tbs: Buffer, issuerKey: KeyObject): string {
  const signature = sign('sha256', tbs, issuerKey); // DER ECDSA-Sig-Value, as X.509 wants
  const cert = der.sequence(tbs, der.sequence(der.oid(OID.ecdsaWithSha256)), der.bitStringBytes(signature));
  const base64 = cert.toString('base64').replace(/.{64}/g, '$&\n');
  return `-----BEGIN CERTIFICATE-----\n${base64}${base64.endsWith('\n') ? '' : '\n'}-----END CERTIFICATE-----\n`;
}

function tbsCertificate(issuer: Buffer, subject: Buffer, validity: Validity, publicKey: KeyObject, extensions: Buffer[]): Buffer {
  const serial = randomBytes(16);
  serial[0]! &= 0x7f; // positive, ≤ 20 octets (RFC 5280 §4.1.2.2)
  return der.sequence(
    der.tlv(0xa0, der.smallInteger(2)), // version v3
    der.unsignedInteger(serial),
    der.sequence(der.oid(OID.ecdsaWithSha256)),
    issuer,
    der.sequence(der.time(validity.notBefore), der.time(validity.notAfter)),
    subject,
    publicKey.export({ type: 'spki', format: 'der' }),
    der.tlv(0xa3, der.sequence(...extensions)),
  );
}

function newKey(): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
}

const pemOf = (key: KeyObject): string => key.export({ type: 'pkcs8', format: 'pem' }).toString();

/** A self-signed CA certificate (basicConstraints cA, pathLen 0: it signs leaves only). */
export function createCa(subject: Subject, validity: Validity): KeyAndCert {
  checkValidity(validity);
  const { privateKey, publicKey } = newKey();
  const id = keyIdentifier(publicKey);
  const tbs = tbsCertificate(name(subject), name(subject), validity, publicKey, [
    extension(OID.basicConstraints, true, der.sequence(der.boolean(true), der.smallInteger(0))),
    extension(OID.keyUsage, true, der.namedBits([KeyUsageBit.digitalSignature, KeyUsageBit.keyCertSign, KeyUsageBit.cRLSign])),
    extension(OID.subjectKeyIdentifier, false, der.octetString(id)),
  ]);
  return { key: pemOf(privateKey), cert: signed(tbs, privateKey) };
}

/** The subject Name of a certificate, as its DER bytes (a leaf's issuer must be these exact bytes). */
function subjectDer(certPem: string): Buffer {
  const cert = der.readElement(new X509Certificate(certPem).raw);
  const tbs = der.children(der.children(cert.content)[0]!.content);
  // version [0], serial, signature, issuer, validity, subject
  const offset = tbs[0]!.tag === 0xa0 ? 1 : 0;
  return tbs[offset + 4]!.raw;
}

/** A leaf certificate signed by `ca`, with a new key. */
export function issueCertificate(ca: KeyAndCert, request: LeafRequest): KeyAndCert {
  checkValidity(request);
  const hosts = request.hosts ?? [];
  if (request.usage !== CertUsage.Client && hosts.length === 0) throw new Error(`certificate "${request.commonName}": a server certificate needs at least one host name or address`);
  const caCert = new X509Certificate(ca.cert);
  if (!caCert.ca) throw new Error('issueCertificate: the issuer is not a CA certificate');
  const { privateKey, publicKey } = newKey();
  const purposes = request.usage === CertUsage.Server ? [OID.serverAuth] : request.usage === CertUsage.Client ? [OID.clientAuth] : [OID.serverAuth, OID.clientAuth];
  const extensions = [
    extension(OID.basicConstraints, true, der.sequence()),
    extension(OID.keyUsage, true, der.namedBits([KeyUsageBit.digitalSignature])),
    extension(OID.extKeyUsage, false, der.sequence(...purposes.map((p) => der.oid(p)))),
    extension(OID.subjectKeyIdentifier, false, der.octetString(keyIdentifier(publicKey))),
    extension(OID.authorityKeyIdentifier, false, der.sequence(der.tlv(0x80, keyIdentifier(caCert.publicKey)))),
    ...(hosts.length ? [extension(OID.subjectAltName, false, subjectAltName(hosts))] : []),
  ];
  const tbs = tbsCertificate(subjectDer(ca.cert), name(request), request, publicKey, extensions);
  return { key: pemOf(privateKey), cert: signed(tbs, createPrivateKey(ca.key)) };
}

/** notBefore/notAfter of a PEM certificate. */
export function validityOf(certPem: string): Validity {
  const cert = new X509Certificate(certPem);
  return { notBefore: new Date(cert.validFrom), notAfter: new Date(cert.validTo) };
}

/**
 * True when a certificate should be replaced at `now`: it is not valid yet, has expired, or less
 * than `remainingFraction` of its lifetime is left (cert-manager's and kubelet's rule of thumb: renew
 * at two thirds, i.e. remainingFraction 1/3).
 */
export function needsRenewal(certPem: string, now: Date, remainingFraction = 1 / 3): boolean {
  const { notBefore, notAfter } = validityOf(certPem);
  const lifetime = notAfter.getTime() - notBefore.getTime();
  if (now.getTime() < notBefore.getTime()) return true;
  return notAfter.getTime() - now.getTime() < lifetime * remainingFraction;
}

/** Validity from `now` (backdated 5 minutes for clock skew between nodes) for `days`. */
export function validFor(now: Date, days: number): Validity {
  return { notBefore: new Date(now.getTime() - 5 * 60_000), notAfter: new Date(now.getTime() + days * 86_400_000) };
}
