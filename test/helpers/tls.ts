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
