/**
 * The NoCloud ISO built by the real xorrisofs and read back by xorriso (Rock Ridge names, contents)
 * and byte for byte (volume id, Joliet descriptor), as a guest's cloud-init would find it.
 */

import { afterAll, beforeAll, describe, expect, test } from '@jest/globals';
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, readSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { isFerryError } from '../../src/errors.js';
import { API_VERSION, Kind, type VirtualMachineInstance } from '../../src/api/kubevirt.js';
import { buildNoCloudIso, NOCLOUD_VOLUME_ID, type NoCloudFiles, noCloudFiles } from '../../launcher/domain/cloud-init.js';
import { defaultVmiSpec } from '../../src/api/kubevirt-defaults.js';
import { removeDir, sh, tempDir } from '../helpers/fixtures.js';

const SECTOR = 2048;
let dir: string;

beforeAll(() => {
  dir = tempDir('ferry-cidata-');
});
afterAll(() => removeDir(dir));

function readSector(path: string, sector: number): Buffer {
  const fd = openSync(path, 'r');
  try {
    const buf = Buffer.alloc(SECTOR);
    readSync(fd, buf, 0, SECTOR, sector * SECTOR);
    return buf;
  } finally {
    closeSync(fd);
  }
}

/** Extracts the ISO with xorriso (Rock Ridge on) and returns file name → content. */
function extract(iso: string): Record<string, string> {
  const out = join(dir, `x-${Math.random().toString(36).slice(2)}`);
  sh('xorriso', ['-osirrox', 'on', '-indev', iso, '-extract', '/', out]);
  return Object.fromEntries(readdirSync(out).sort().map((name) => [name, readFileSync(join(out, name), 'utf8')]));
}

function vmi(): VirtualMachineInstance {
  const metadata = { name: 'web.example', namespace: 'demo', uid: 'u1' };
  const spec = {
    domain: { memory: { guest: '128Mi' } },
    volumes: [{ name: 'cloudinitdisk', cloudInitNoCloud: { userData: '#cloud-config\nhostname: web\n', networkData: 'version: 2\n' } }],
  };
  return { apiVersion: API_VERSION, kind: Kind.VMI, metadata, spec: defaultVmiSpec(spec, metadata) };
}

describe('buildNoCloudIso', () => {
  test('user-data, meta-data and network-config on a cidata ISO with Rock Ridge and Joliet', async () => {
    const v = vmi();
    const files = noCloudFiles(v);
    const iso = join(dir, 'noCloud.iso');
    await buildNoCloudIso(files, iso);

    expect(extract(iso)).toEqual({
      'meta-data': JSON.stringify({ 'instance-id': v.spec.domain.firmware!.uuid, 'local-hostname': 'web' }),
      'network-config': 'version: 2\n',
      'user-data': '#cloud-config\nhostname: web\n',
    });
    // Primary volume descriptor (sector 16): type 1, "CD001", volume id at 40..71 padded with blanks.
    const pvd = readSector(iso, 16);
    expect(pvd[0]).toBe(1);
    expect(pvd.subarray(1, 6).toString('latin1')).toBe('CD001');
    expect(pvd.subarray(40, 72).toString('latin1').trimEnd()).toBe(NOCLOUD_VOLUME_ID);
    // Joliet: a supplementary volume descriptor (type 2) with a UCS-2 escape sequence "%/@", "%/C" or "%/E".
    const svd = readSector(iso, 17);
    expect(svd[0]).toBe(2);
    expect(svd.subarray(88, 91).toString('latin1')).toMatch(/^%\/[@CE]$/);
    // xorriso reads the same label back.
    expect(sh('xorriso', ['-indev', iso, '-pvd_info']).toString()).toMatch(/Volume Id\s*:\s*cidata/);
    // Only the ISO is left beside it: no staging file, no data directory.
    expect(readdirSync(dir).filter((n) => n.startsWith('noCloud') || n.startsWith('.cidata-'))).toEqual(['noCloud.iso']);
  });

  test('without network data there is no network-config, and an existing ISO is replaced', async () => {
    const iso = join(dir, 'replace.iso');
    writeFileSync(iso, 'old contents');
    const files: NoCloudFiles = { 'user-data': Buffer.from('#cloud-config\n'), 'meta-data': Buffer.from('{"instance-id":"x","local-hostname":"y"}') };
    await buildNoCloudIso(files, iso);
    expect(extract(iso)).toEqual({ 'meta-data': '{"instance-id":"x","local-hostname":"y"}', 'user-data': '#cloud-config\n' });
  });

  test('a failing xorrisofs is a FerryError with its stderr, and leaves nothing behind', async () => {
    const sub = join(dir, 'fail');
    mkdirSync(sub);
    const iso = join(sub, 'noCloud.iso');
    // xorrisofs cannot write its output over a directory.
    mkdirSync(`${iso}.staging`);
    const err = await buildNoCloudIso({ 'user-data': Buffer.from('x'), 'meta-data': Buffer.from('{}') }, iso).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(isFerryError(err)).toBe(true);
    if (!isFerryError(err)) return;
    expect(err.code).toBe('INTERNAL');
    expect(err.message).toContain('cloud-init ISO');
    expect(String(err.details.stderr).length).toBeGreaterThan(0);
    expect(err.details.tool).toBe('xorrisofs');
    expect(existsSync(iso)).toBe(false);
    expect(readdirSync(sub).filter((n) => n.startsWith('.cidata-'))).toEqual([]);
  });
});
