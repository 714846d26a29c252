/** The accelerator decision and the probe guest's image. */

import { describe, expect, test } from '@jest/globals';
import { decideAccel, probeRom } from '../../launcher/kvm-probe.js';

const works = { usable: true } as const;
const broken = { usable: false, reason: 'a probe guest under kvm did not finish within 3000 ms' } as const;

describe('decideAccel', () => {
  test.each([
    // request, allowEmulation, probe, accel (undefined: refused)
    ['auto', false, works, 'kvm'],
    ['auto', true, works, 'kvm'],
    ['auto', true, broken, 'tcg'],
    ['auto', false, broken, undefined],
    ['kvm', true, works, 'kvm'],
    ['kvm', true, broken, undefined],
    ['tcg', false, undefined, 'tcg'],
    ['tcg', true, works, 'tcg'],
  ] as const)('%s, emulation allowed %s, probe %j → %s', (request, allow, probe, accel) => {
    const d = decideAccel(request, allow, probe);
    if (accel === undefined) {
      expect(d.ok).toBe(false);
    } else {
      expect(d).toMatchObject({ ok: true, accel, emulation: accel === 'tcg' });
    }
  });

  test('a refusal says why KVM failed and what to do', () => {
    const d = decideAccel('auto', false, broken);
    expect(d.ok).toBe(false);
    if (!d.ok) {
      expect(d.message).toContain('did not finish within 3000 ms');
      expect(d.message).toContain('--allow-emulation');
    }
    const k = decideAccel('kvm', true, { usable: false, reason: '/dev/kvm does not exist' });
    expect(!k.ok && k.message).toContain('/dev/kvm does not exist');
  });

  test('the TCG fallback names the reason', () => {
    const d = decideAccel('auto', true, broken);
    expect(d.ok && d.note).toContain('did not finish');
  });
});

describe('probeRom', () => {
  test('is a 64 KiB BIOS image with a far jump at the reset vector and the exit code at the end of the code', () => {
    const rom = probeRom();
    expect(rom.length).toBe(0x10000);
    expect([...rom.subarray(0xfff0, 0xfff5)]).toEqual([0xea, 0x00, 0x00, 0x00, 0xf0]);
    // mov $0x42,%al; out %al,$0xf4
    expect(rom.indexOf(Buffer.from([0xb0, 0x42, 0xe6, 0xf4]))).toBeGreaterThan(0);
    // the GDT's flat 32-bit code descriptor
    expect(rom.indexOf(Buffer.from('ffff0000009acf00', 'hex'))).toBeGreaterThan(0);
  });
});
