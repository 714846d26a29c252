/**
 * The pod network for real (docs/adr/0011): `ferry launcher` in a network namespace the test creates
 * (the pod's stand-in, test/helpers/netns-guest.ts) boots the test disk under TCG with a VMI that
 * declares no interfaces and no ports, as the talk's seed demo does. passt, started by the launcher
 * as QEMU's unprivileged user, forwards the pod's ports: OpenSSH logs in to the guest's dropbear on
 * port 22 with the key given through cloud-init and runs a command, and the guest's port 8080 answers
 * too. Neither port is declared anywhere. The slirp fallback, by contrast, forwards only what is declared.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { execFileSync } from 'node:child_process';
import { chmodSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../helpers/ferry-process.js';
import { removeDir, tempDir } from '../helpers/fixtures.js';
import { guestVmi, launchInNetns, Netns, POD_IP, serialMarker, sshArgs, sshKeyPair, stopLauncher, tcpRead } from '../helpers/netns-guest.js';

const TIMEOUT = 300_000;
const isRoot = process.getuid?.() === 0;

let dir: string;
let disk: string;
let key: { key: string; publicKey: string };

beforeAll(async () => {
  if (!isRoot) return;
  disk = execFileSync('bash', [join(REPO_ROOT, 'scripts', 'make-boot-disk.sh')], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] }).trim();
  dir = tempDir('fn-');
  chmodSync(dir, 0o755);
  key = sshKeyPair(dir);
}, 300_000);

afterAll(() => {
  if (dir) removeDir(dir);
});

/** The passt process the launcher logged, as /proc shows it. */
function passtProcess(output: string): { pid: number; uid: number; capEff: string; args: string[] } {
  const line = output.split('\n').find((l) => l.includes('"passt started"'));
  if (!line) throw new Error(`no "passt started" in the launcher's log:\n${output.slice(-2000)}`);
  const { pid, args } = JSON.parse(line) as { pid: number; args: string[] };
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return { pid, uid: Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]), capEff: /^CapEff:\s+(\S+)/m.exec(status)?.[1] ?? '', args };
}

describe('a VMI with no interfaces or ports is reachable on every port of its pod (passt)', () => {
  test('ssh -p 22 to the pod address logs in with the cloud-init key and runs a command; port 8080 answers too', async () => {
    if (!isRoot) return; // unshare --net needs root
    const ns = await Netns.create();
    const userData = `#cloud-config\nssh_authorized_keys:\n  - ${key.publicKey}`;
    const run = launchInNetns(ns, join(dir, 'ssh'), disk, guestVmi('ssh', userData), ['--pod-network', 'passt']);
    try {
      const serial = await serialMarker(run, 'FERRY-SSH-OK');
      expect(serial).toContain('FERRY-NET-OK listening on 10.0.2.2/24:8080'); // KubeVirt's masquerade address

      // passt runs as QEMU's unprivileged user with no effective capabilities.
      const passt = passtProcess(run.output());
      expect(passt.uid).not.toBe(0);
      expect(passt.capEff).toBe('0000000000000000');
      expect(passt.args).toEqual(expect.arrayContaining(['--tcp-ports', '--address', '10.0.2.2']));

      const said = await ns.exec('ssh', sshArgs(key.key, 22, POD_IP, 'echo "guest says $(cat /proc/sys/kernel/hostname) $((6 * 7))"; ip -4 -o addr show eth0'), 90_000);
      expect(said).toMatch(/^guest says \S+ 42$/m);
      expect(said).toContain('inet 10.0.2.2/24');

      // A second undeclared port: the guest's busybox nc on 8080, over the same pod address.
      expect((await tcpRead(ns, POD_IP, 8080)).trim()).toBe('FERRY-NET-OK');

      run.child.kill('SIGTERM');
      const result = await run.done;
      expect(result.code).toBe(0);
      expect(readFileSync(run.serialLog, 'latin1')).toContain('FERRY-ACPI-POWER-BUTTON');
      // passt went with the guest.
      expect(() => readFileSync(`/proc/${passt.pid}/status`)).toThrow();
    } finally {
      await stopLauncher(run);
      ns.close();
    }
  }, TIMEOUT);
});

describe('the slirp fallback (--pod-network slirp) forwards declared ports only', () => {
  test('declared 8080 answers, undeclared 22 is refused', async () => {
    if (!isRoot) return;
    const ns = await Netns.create();
    const userData = `#cloud-config\nssh_authorized_keys:\n  - ${key.publicKey}`;
    const declared = '      interfaces:\n      - name: default\n        masquerade: {}\n        ports:\n        - port: 8080\n';
    const vmi = guestVmi('slirp', userData, declared).replace('  volumes:\n', '  networks:\n  - name: default\n    pod: {}\n  volumes:\n');
    const run = launchInNetns(ns, join(dir, 'slirp'), disk, vmi, ['--pod-network', 'slirp']);
    try {
      await serialMarker(run, 'FERRY-SSH-OK');
      expect(run.output()).not.toContain('"passt started"');
      expect((await tcpRead(ns, POD_IP, 8080)).trim()).toBe('FERRY-NET-OK');
      await expect(ns.exec('ssh', sshArgs(key.key, 22, POD_IP, 'true'), 60_000)).rejects.toThrow(/Connection refused/);
      run.child.kill('SIGTERM');
      expect((await run.done).code).toBe(0);
    } finally {
      await stopLauncher(run);
      ns.close();
    }
  }, TIMEOUT);
});
