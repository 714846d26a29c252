/**
 * SSH into a throwaway guest: a key pair made on the spot and the OpenSSH client options that go
 * with it. Used by the node tests, `npm run demo` (scripts/ may not import test/) and, through
 * test/helpers/netns-guest.ts, the component tests and bench/.
 */

import { execFileSync } from 'node:child_process';
import { chmodSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

/** An ed25519 key pair made by ssh-keygen: `{ key, publicKey }` (the private key's path, the public line). */
export function sshKeyPair(dir: string): { key: string; publicKey: string } {
  const key = join(dir, 'id_ed25519');
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'ferry-test', '-f', key]);
  chmodSync(key, 0o600);
  return { key, publicKey: readFileSync(`${key}.pub`, 'utf8').trim() };
}

/** OpenSSH client options for a throwaway guest: its key only, no host-key memory, bounded waits. */
export function sshArgs(key: string, port: number, host: string, command: string): string[] {
  return [
    '-i', key,
    '-p', String(port),
    '-o', 'BatchMode=yes',
    '-o', 'IdentitiesOnly=yes',
    '-o', 'StrictHostKeyChecking=no',
    '-o', 'UserKnownHostsFile=/dev/null',
    '-o', 'LogLevel=ERROR',
    '-o', 'ConnectTimeout=20',
    `root@${host}`,
    command,
  ];
}
