/**
 * `npm run demo` (scripts/demo.ts) end to end, as a newcomer runs it: the compiled entry point on
 * the embedded one-node cluster, without a terminal — the talk's seed demo. Asserted: the exit
 * status, the commands printed as a presenter runs them, the importer's progress as printed, the
 * `qemu-img compare` verdict, the VMI Running and Ready, the guest's SSH banner and what the command
 * run over `ssh -p 30000` printed in the guest, and that nothing of the cluster is left afterwards
 * (its network namespace, its work dir, any process using it); with --keep, the printed KUBECONFIG
 * works until Ctrl-C (SIGINT), which then tears everything down.
 *
 * Needs root, the binaries of scripts/build-control-plane.sh and dist/images/ferry.oci.tar
 * (`--no-build`: a test never builds them behind the runner's back).
 */

import { spawn } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from '@jest/globals';
import { Annotation } from '../../src/api/cdi.js';
import { controlPlaneBinDir } from '../../tools/control-plane/bin-dir.js';
import { REPO_ROOT } from '../../tools/node-cluster/node-cluster.js';

const DEMO = join(REPO_ROOT, 'dist', 'scripts', 'demo.js');
const RUN_TIMEOUT_MS = 900_000;

interface DemoRun {
  readonly code: number | null;
  readonly out: string;
}

/** Runs the demo; `onLine` sees each output line and may signal the child. Killed (SIGKILL) after RUN_TIMEOUT_MS. */
function runDemo(args: readonly string[], onLine: (line: string, signal: (s: NodeJS.Signals) => void) => void = () => undefined): Promise<DemoRun> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [DEMO, '--no-build', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let partial = '';
    const take = (d: Buffer): void => {
      out += d.toString();
      partial += d.toString();
      const lines = partial.split('\n');
      partial = lines.pop() ?? '';
      for (const l of lines) onLine(l, (s) => child.kill(s));
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    const timer = setTimeout(() => child.kill('SIGKILL'), RUN_TIMEOUT_MS);
    child.once('close', (code) => {
      clearTimeout(timer);
      resolve({ code, out });
    });
  });
}

/** Nothing of the cluster the demo printed is left: netns, work dir, a process with it in its command line. */
function expectTornDown(out: string): void {
  const netns = /node Ready \((ferry-node-[0-9a-f]+),/.exec(out)?.[1];
  const work = /work dir (\/\S+)/.exec(out)?.[1];
  expect(netns).toBeDefined();
  expect(work).toBeDefined();
  expect(out).toContain(`node-cluster ${netns} stopped`);
  expect(existsSync(`/run/netns/${netns}`)).toBe(false);
  expect(existsSync(work!)).toBe(false);
  const users = readdirSync('/proc').filter((p) => /^\d+$/.test(p)).filter((p) => {
    try {
      return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes(work!);
    } catch {
      return false;
    }
  });
  expect(users).toEqual([]);
}

describe('npm run demo on the embedded one-node cluster', () => {
  it('runs the seed demo: the PVC imported by a real importer pod (progress shown, the PV holds the same disk), the VMI Running and Ready, ssh into the guest through the NodePort; leaves nothing behind (exit 0)', async () => {
    const t0 = Date.now();
    const run = await runDemo([]);
    process.stderr.write(`demo test: npm run demo took ${((Date.now() - t0) / 1000).toFixed(1)} s\n${run.out.split('\n').filter((l) => !/^ferry demo: \+|^ {6}/.test(l)).slice(-40).join('\n')}\n`);
    expect(run.code).toBe(0);
    // The presenter's commands, in order, as printed.
    const commands = [...run.out.matchAll(/^ferry demo: \$ (.*)$/gm)].map((m) => m[1]!.replace(/\s+#.*$/, ''));
    expect(commands).toEqual([
      'kubectl -n seed-demo apply -f examples/demo/disk-server.yaml',
      'kubectl -n seed-demo apply -f examples/seed-demo/pvc.yaml',
      'kubectl -n seed-demo apply -f examples/seed-demo/vmi.yaml',
      'kubectl -n seed-demo apply -f examples/seed-demo/service.yaml',
      expect.stringMatching(/^ssh -p 30000 -i \/\S+\/id_ed25519 root@10\.77\.0\.10 'uname -sr; /),
    ]);
    // What the importer reported on the PVC, as it ran: the pod, the phases, the final state and event.
    expect(run.out).toMatch(new RegExp(`${Annotation.ImportPodName}: importer-seed-disk`));
    expect(run.out).toMatch(new RegExp(`${Annotation.PodPhase}: Running`));
    expect(run.out).toMatch(new RegExp(`${Annotation.PodPhase}: Succeeded`));
    expect(run.out).toMatch(/event Normal ImportSucceeded \(PersistentVolumeClaim\/seed-disk\)/);
    expect(run.out).toMatch(/^ferry demo: Images are identical\. \(qemu-img compare of the source and the imported disk, exit 0\)$/m);
    // The VMI's phases as they came, then Running and Ready.
    expect(run.out).toMatch(/^ferry demo: \+ *[\d.]+ s {2}VMI seed Running, Ready$/m);
    expect(run.out).toMatch(/^ferry demo: VMI seed Running and Ready [\d.]+ s after kubectl apply \(launcher pod virt-launcher-seed-\S+:/m);
    // The ssh step: dropbear's banner through NodePort 30000, then the command's output in the guest.
    expect(run.out).toMatch(/^ferry demo: SSH-2\.0-dropbear\S* answered [\d.]+ s after the VMI was applied; the guest says:$/m);
    expect(run.out).toMatch(/^ {4}guest> Linux \S+$/m);
    expect(run.out).toMatch(/^ {4}guest> hello from the guest: \d+ vCPU, up [\d.]+ s$/m);
    expectTornDown(run.out);
  }, RUN_TIMEOUT_MS + 60_000);

  it('--keep: after the ssh step the printed KUBECONFIG reaches the cluster (the PVC Succeeded, the VMI Running) until Ctrl-C, which stops and removes it (exit 0)', async () => {
    let kubeconfig: string | undefined;
    let seen: string | undefined;
    const run = await runDemo(['--keep'], (line, signal) => {
      const m = /^\s+export KUBECONFIG=(\S+)$/.exec(line);
      if (m) kubeconfig = m[1];
      if (line.startsWith('Stop it with Ctrl-C') && kubeconfig) {
        const kubectl = spawn(join(controlPlaneBinDir(), 'kubectl'), ['--kubeconfig', kubeconfig, '-n', 'seed-demo', 'get', 'pvc,vmi', '-o', `jsonpath={range .items[*]}{.metadata.annotations.${Annotation.PodPhase.replace(/\./g, '\\.')}}{.status.phase} {end}`], { stdio: ['ignore', 'pipe', 'pipe'] });
        let o = '';
        kubectl.stdout.on('data', (d: Buffer) => (o += d.toString()));
        kubectl.stderr.on('data', (d: Buffer) => (o += d.toString()));
        kubectl.once('close', () => {
          seen = o;
          signal('SIGINT');
        });
      }
    });
    expect(run.code).toBe(0);
    expect(run.out).toMatch(/^ {4}guest> Linux \S+$/m);
    expect(seen).toBe('SucceededBound Running ');
    expect(run.out).toContain('ferry demo: SIGINT: stopping');
    expect(existsSync(kubeconfig!)).toBe(false);
    expectTornDown(run.out);
  }, RUN_TIMEOUT_MS + 60_000);
});
