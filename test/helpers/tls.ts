/** A throw-away CA and a server certificate for 127.0.0.1, made with the openssl CLI. */

import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { sh } from './fixtures.js';

export interface TestPki {
  readonly caFile: string;
  readonly key: string;
  readonly cert: string;
}

export function makePki(dir: string): TestPki {
  const p = (name: string): string => join(dir, name);
  sh('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=Ferry Test CA', '-keyout', p('ca.key'), '-out', p('ca.crt')]);
  sh('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', p('server.key'), '-out', p('server.csr')]);
  writeFileSync(p('ext.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\n');
  sh('openssl', ['x509', '-req', '-in', p('server.csr'), '-CA', p('ca.crt'), '-CAkey', p('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', p('ext.cnf'), '-out', p('server.crt')]);
  return { caFile: p('ca.crt'), key: readFileSync(p('server.key'), 'utf8'), cert: readFileSync(p('server.crt'), 'utf8') };
}

export interface TestCa {
  readonly dir: string;
  readonly name: string;
  readonly caFile: string;
  /** PEM of the CA certificate. */
  readonly cert: string;
}

/** A throw-away CA named `name` (files `<name>.crt`/`<name>.key` in `dir`). */
export function makeCa(dir: string, name: string, cn = `Ferry Test ${name}`): TestCa {
  const caFile = join(dir, `${name}.crt`);
  sh('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', `/CN=${cn}`, '-keyout', join(dir, `${name}.key`), '-out', caFile]);
  return { dir, name, caFile, cert: readFileSync(caFile, 'utf8') };
}

/**
 * A key and certificate signed by `ca`: common name `cn`, for a server (SANs 127.0.0.1 and
 * localhost) or a TLS client (extendedKeyUsage clientAuth).
 */
export function issueCert(ca: TestCa, file: string, cn: string, usage: 'server' | 'client'): { readonly key: string; readonly cert: string } {
  const p = (ext: string): string => join(ca.dir, `${file}.${ext}`);
  sh('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-keyout', p('key'), '-out', p('csr')]);
  writeFileSync(p('cnf'), usage === 'server' ? 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' : 'extendedKeyUsage=clientAuth\n');
  sh('openssl', ['x509', '-req', '-in', p('csr'), '-CA', ca.caFile, '-CAkey', join(ca.dir, `${ca.name}.key`), '-CAcreateserial', '-days', '2', '-extfile', p('cnf'), '-out', p('crt')]);
  return { key: readFileSync(p('key'), 'utf8'), cert: readFileSync(p('crt'), 'utf8') };
}
