import { describe, expect, test } from '@jest/globals';
import type { VmiSpec } from '../../src/api/kubevirt.js';
import { defaultVmiSpec } from '../../src/api/kubevirt-defaults.js';
import { memoryOverheadBytes, OverheadPart, TCG_TB_CACHE_BYTES } from '../../src/api/vm-overhead.js';

const MiB = 1024 * 1024;
const KiB = 1024;

function spec(domain: VmiSpec['domain']): VmiSpec {
  return defaultVmiSpec({ domain }, { name: 'vm', namespace: 'ns' });
}

describe('memoryOverheadBytes', () => {
  test('the parts are the measured values (docs/vm-overhead.md)', () => {
    expect(OverheadPart).toEqual({
      qemu: 56 * MiB,
      libvirtd: 40 * MiB,
      launcher: 80 * MiB,
      perVcpu: 8 * MiB,
      video: 16 * MiB,
      tcgCache: 128 * MiB,
    });
    expect(TCG_TB_CACHE_BYTES).toBe(128 * MiB);
  });

  test.each<[string, VmiSpec['domain'], boolean, number]>([
    // fixed 176Mi + guest/512 + 8Mi/vCPU + 16Mi video + 128Mi TCG cache
    ['128Mi, 1 vCPU, graphics, TCG', { memory: { guest: '128Mi' } }, true, 176 * MiB + 256 * KiB + 8 * MiB + 16 * MiB + 128 * MiB],
    ['128Mi, 1 vCPU, graphics, KVM', { memory: { guest: '128Mi' } }, false, 176 * MiB + 256 * KiB + 8 * MiB + 16 * MiB],
    ['256Mi, 2 vCPUs, no graphics, TCG', { memory: { guest: '256Mi' }, cpu: { cores: 2 }, devices: { autoattachGraphicsDevice: false } }, true, 176 * MiB + 512 * KiB + 16 * MiB + 128 * MiB],
    ['4Gi, 2x2x2 vCPUs, graphics, KVM', { memory: { guest: '4Gi' }, cpu: { sockets: 2, cores: 2, threads: 2 } }, false, 176 * MiB + 8 * MiB + 64 * MiB + 16 * MiB],
    ['guest from requests.memory', { resources: { requests: { memory: '1Gi' } } }, false, 176 * MiB + 2 * MiB + 8 * MiB + 16 * MiB],
    ['vCPUs from the CPU request (defaulted sockets)', { memory: { guest: '512Mi' }, resources: { requests: { cpu: '3' } } }, false, 176 * MiB + 1 * MiB + 24 * MiB + 16 * MiB],
  ])('%s', (_what, domain, emulation, expected) => {
    expect(memoryOverheadBytes(spec(domain), { emulation })).toBe(expected);
  });

  test('page tables round up to a whole byte', () => {
    expect(memoryOverheadBytes(spec({ memory: { guest: '1000' } }), { emulation: false })).toBe(176 * MiB + 2 + 8 * MiB + 16 * MiB);
  });

  test('an undefaulted spec counts one vCPU and graphics', () => {
    expect(memoryOverheadBytes({ domain: { memory: { guest: '128Mi' } } }, { emulation: false })).toBe(176 * MiB + 256 * KiB + 8 * MiB + 16 * MiB);
  });
});
