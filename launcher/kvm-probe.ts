/**
 * Which accelerator the guest gets. `/dev/kvm` existing is not enough: on some hosts (nested
 * "pagetable" KVM such as kvm_pvm) it accepts KVM_CREATE_VM but hangs or fails on the first
 * protected-mode instruction a real guest runs. So KVM counts only when a tiny probe guest, run the
 * way the real one will be (same QEMU, same user), reaches its end under KVM within a short timeout.
 */

import { spawn } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { access, chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Accel } from '../src/contract/launch-plan.js';
import type { AccelRequest } from '../src/contract/launcher-pod.js';

export const KVM_DEVICE = '/dev/kvm';
export const KVM_PROBE_TIMEOUT_MS = 3000;


export type KvmProbeResult = { readonly usable: true } | { readonly usable: false; readonly reason: string };

export type AccelDecision =
  | { readonly ok: true; readonly accel: Accel; readonly emulation: boolean; readonly note: string }
  | { readonly ok: false; readonly message: string };

/**
 * Pure: the accelerator for a request, given the probe's answer (absent when it was not run, for
 * `tcg`). `auto` falls back to TCG only with `allowEmulation` (KubeVirt's useEmulation); `kvm` never
 * falls back; `tcg` is an explicit choice of emulation.
 */
export function decideAccel(request: AccelRequest, allowEmulation: boolean, probe: KvmProbeResult | undefined): AccelDecision {
  if (request === 'tcg') return { ok: true, accel: 'tcg', emulation: true, note: 'software emulation (TCG) requested with --accel tcg' };
  if (probe?.usable) return { ok: true, accel: 'kvm', emulation: false, note: 'KVM works' };
  const why = probe ? probe.reason : 'KVM was not probed';
  if (request === 'kvm') return { ok: false, message: `KVM was requested (--accel kvm) but is not usable: ${why}` };
  if (allowEmulation) return { ok: true, accel: 'tcg', emulation: true, note: `KVM is not usable (${why}); using software emulation (TCG)` };
  return {
    ok: false,
    message: `KVM is not usable (${why}) and emulation is not allowed; run the VM on a node with working KVM or allow emulation (--allow-emulation)`,
  };
}

/**
 * The probe guest: a 64 KiB BIOS image whose reset vector jumps to code that enters 32-bit
 * protected mode, performs an `iret` and writes 0x42 to the isa-debug-exit port, so QEMU exits with
 * status (0x42 << 1) | 1 = 133. Real mode alone works on the broken hosts; protected mode and iret
 * are where they fail. Source (GNU as, `as --32` + `ld -Ttext=0 --oformat binary`):
 *
 *     .code16
 *     _start: cli; mov $0xF000,%ax; mov %ax,%ds; lgdtl gdtr
 *             mov %cr0,%eax; or $1,%al; mov %eax,%cr0; ljmpl $0x08,$(0xF0000+pm32)
 *     .code32
 *     pm32:   mov $0x10,%ax; mov %ax,%ds; mov %ax,%es; mov %ax,%ss; mov $0x7000,%esp
 *             pushfl; pushl $0x08; pushl $(0xF0000+after); iretl
 *     after:  mov $0x42,%al; out %al,$0xf4
 *     1:      hlt; jmp 1b
 *     .p2align 3
 *     gdt:    .quad 0, 0x00CF9A000000FFFF, 0x00CF92000000FFFF
 *     gdtr:   .word 23; .long 0xF0000+gdt
 *     .org 0xFFF0
 *     .code16
 *             ljmp $0xF000,$_start
 */
const PROBE_CODE =
  'fab800f08ed8660f011658000f20c00c010f22c066ea1c000f00080066b810008ed88ec08ed0bc007000009c6a086834000f00cfb042e6f4f4ebfd' +
  '8db40000900000000000000000ffff0000009acf00ffff00000092cf00170040000f00';
const RESET_VECTOR = 'ea000000f0';
export const PROBE_EXIT_STATUS = 133;

export function probeRom(): Buffer {
  const rom = Buffer.alloc(0x10000);
  Buffer.from(PROBE_CODE, 'hex').copy(rom, 0);
  Buffer.from(RESET_VECTOR, 'hex').copy(rom, 0xfff0);
  return rom;
}

export interface ProbeOptions {
  readonly emulator: string;
  readonly accel: Accel;
  /** Run QEMU as this user (what libvirtd will run it as), when the launcher is root. */
  readonly uid?: number;
  readonly gid?: number;
  readonly timeoutMs?: number;
  readonly device?: string;
}

/** Runs the probe guest under `accel`; `tcg` checks the probe itself. Never throws. */
export async function runProbeGuest(options: ProbeOptions): Promise<KvmProbeResult> {
  const timeoutMs = options.timeoutMs ?? KVM_PROBE_TIMEOUT_MS;
  const dir = await mkdtemp(join(tmpdir(), 'ferry-kvm-probe-'));
  try {
    const rom = join(dir, 'probe.rom');
    await writeFile(rom, probeRom(), { mode: 0o644 });
    await chmod(dir, 0o755); // QEMU may run as another user
    const args = ['-accel', options.accel, '-machine', 'pc', '-nodefaults', '-display', 'none', '-m', '16', '-bios', rom, '-device', 'isa-debug-exit,iobase=0xf4,iosize=1'];
    return await new Promise<KvmProbeResult>((resolve) => {
      let stderr = '';
      const child = spawn(options.emulator, args, {
        stdio: ['ignore', 'ignore', 'pipe'],
        ...(options.uid !== undefined ? { uid: options.uid } : {}),
        ...(options.gid !== undefined ? { gid: options.gid } : {}),
      });
      child.stderr.on('data', (d: Buffer) => (stderr = (stderr + d.toString()).slice(-2000)));
      const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
      child.on('error', (err) => {
        clearTimeout(timer);
        resolve({ usable: false, reason: `cannot run ${options.emulator}: ${err.message}` });
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        if (code === PROBE_EXIT_STATUS) return resolve({ usable: true });
        const last = stderr.split('\n').map((l) => l.trim()).filter((l) => l && !l.includes('warning:')).pop();
        if (signal === 'SIGKILL') return resolve({ usable: false, reason: `a probe guest under ${options.accel} did not finish within ${timeoutMs} ms` });
        resolve({ usable: false, reason: `a probe guest under ${options.accel} failed (exit ${code ?? signal})${last ? `: ${last}` : ''}` });
      });
    });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** KVM is usable: the device exists and a probe guest runs under it. */
export async function probeKvm(options: Omit<ProbeOptions, 'accel'>): Promise<KvmProbeResult> {
  const device = options.device ?? KVM_DEVICE;
  try {
    await access(device, fsConstants.F_OK);
  } catch {
    return { usable: false, reason: `${device} does not exist` };
  }
  return runProbeGuest({ ...options, accel: 'kvm' });
}
