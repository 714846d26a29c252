/**
 * The launcher pod's memory overhead: what the pod needs on top of the guest's memory. Same shape as
 * KubeVirt's GetMemoryOverhead (fixed part + guest/512 + per vCPU + video), but the numbers are
 * Ferry's own, measured (docs/vm-overhead.md): one pod runs one Node launcher, one libvirtd and QEMU,
 * with no virt-launcher-monitor, virtqemud or virtlogd.
 *
 * Measured on the project machine (QEMU 7.2 under TCG, libvirt 9.0, Node 20; tiny busybox guest,
 * RSS from /proc/<pid>/smaps with the guest-RAM and translation-cache mappings counted apart):
 *   QEMU without guest RAM and translation cache: 46 MiB (128Mi, 1 vCPU, no VNC), 48 MiB (128Mi or
 *     256Mi, 1 vCPU, VNC), 50 MiB (128Mi, 2 vCPUs, VNC): ~2 MiB per extra vCPU, ~2 MiB for a text-mode
 *     VGA, independent of guest size.
 *   TCG translation cache: 48 MiB touched by that one boot alone; QEMU 7.2 reserves 1 GiB by default
 *     and only flushes when it is full, so a long-running guest grows towards it. Ferry caps it with
 *     libvirt's <tb-cache> (TCG_TB_CACHE_BYTES, used by domain-xml.ts) and counts the whole cap.
 *   libvirtd: 32 MiB after 15 domain lifecycles (VmHWM, capability probing included).
 *   Node with the launcher's modules and pino: 51 MiB.
 */

import type { VmiSpec } from './kubevirt.js';
import { guestMemoryBytes, vcpuCount } from './kubevirt-defaults.js';

const MiB = 1024 * 1024;

/** The TCG translation-block cache size Ferry gives QEMU (`<features><tcg><tb-cache>`). */
export const TCG_TB_CACHE_BYTES = 128 * MiB;

/** The formula's parts, in bytes; each is the measured value rounded up with headroom (see above). */
export const OverheadPart = Object.freeze({
  /** QEMU's own memory (46–50 MiB measured). */
  qemu: 56 * MiB,
  /** libvirtd (32 MiB measured). */
  libvirtd: 40 * MiB,
  /** The Node launcher (51 MiB measured) plus its short-lived virsh and xorrisofs children. */
  launcher: 80 * MiB,
  /** Per vCPU: thread stacks and TCG's per-vCPU softmmu TLB, which grows with the guest's working set. */
  perVcpu: 8 * MiB,
  /** VGA memory (vgamem 16 MiB), all of it touched by a graphical guest. */
  video: 16 * MiB,
  /** The capped TCG translation cache. */
  tcgCache: TCG_TB_CACHE_BYTES,
});

/**
 * Bytes the launcher pod needs beyond the guest's memory: fixed part (QEMU, libvirtd, launcher) +
 * guest/512 (page tables) + 8 MiB per vCPU + 16 MiB for video when graphics are attached + the TCG
 * translation cache when the guest is emulated.
 */
export function memoryOverheadBytes(spec: VmiSpec, options: { emulation: boolean }): number {
  const guest = guestMemoryBytes(spec) ?? 0;
  const graphics = spec.domain.devices?.autoattachGraphicsDevice !== false;
  return (
    OverheadPart.qemu +
    OverheadPart.libvirtd +
    OverheadPart.launcher +
    Math.ceil(guest / 512) +
    OverheadPart.perVcpu * vcpuCount(spec) +
    (graphics ? OverheadPart.video : 0) +
    (options.emulation ? OverheadPart.tcgCache : 0)
  );
}
