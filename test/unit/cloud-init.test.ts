import { describe, expect, test } from '@jest/globals';
import { API_VERSION, type CloudInitNoCloud, Kind, type VirtualMachineInstance } from '../../src/api/kubevirt.js';
import { guestHostname, type NoCloudSecrets, noCloudFiles } from '../../launcher/domain/cloud-init.js';
import { defaultVmiSpec, firmwareUuid } from '../../src/api/kubevirt-defaults.js';
import { codeOf } from './helpers.js';

function vmi(source: CloudInitNoCloud | undefined, extra: { name?: string; hostname?: string; defaulted?: boolean } = {}): VirtualMachineInstance {
  const metadata = { name: extra.name ?? 'web', namespace: 'demo', uid: 'u1' };
  const spec = {
    domain: { memory: { guest: '128Mi' } },
    ...(extra.hostname !== undefined ? { hostname: extra.hostname } : {}),
    volumes: [{ name: 'rootdisk', persistentVolumeClaim: { claimName: 'r' } }, ...(source ? [{ name: 'cloudinitdisk', cloudInitNoCloud: source }] : [])],
  };
  return { apiVersion: API_VERSION, kind: Kind.VMI, metadata, spec: extra.defaulted === false ? spec : defaultVmiSpec(spec, metadata) };
}

const text = (b: Buffer | undefined) => b?.toString('utf8');
const USER = '#cloud-config\nusers: [{name: ferry}]\n';
const NET = 'version: 2\nethernets: {eth0: {dhcp4: true}}\n';

describe('noCloudFiles: user data', () => {
  test.each<[string, CloudInitNoCloud, NoCloudSecrets]>([
    ['inline userData', { userData: USER }, {}],
    ['userDataBase64', { userDataBase64: Buffer.from(USER).toString('base64') }, {}],
    ['userDataBase64 wrapped over lines', { userDataBase64: Buffer.from(USER).toString('base64').replace(/(.{16})/g, '$1\n') }, {}],
    ['secretRef, key userdata', { secretRef: { name: 's' } }, { userData: { userdata: USER } }],
    ['secretRef, key userData', { secretRef: { name: 's' } }, { userData: { userData: Buffer.from(USER) } }],
  ])('%s', (_what, source, secrets) => {
    const files = noCloudFiles(vmi(source), secrets);
    expect(text(files['user-data'])).toBe(USER);
    expect(files['network-config']).toBeUndefined();
  });

  test('binary user data (gzip) survives base64 byte for byte', () => {
    const bytes = Buffer.from([0x1f, 0x8b, 0x08, 0x00, 0xff, 0x00, 0x80]);
    expect(noCloudFiles(vmi({ userDataBase64: bytes.toString('base64') }))['user-data']).toEqual(bytes);
  });

  test('inline data larger than KubeVirt\'s 2048-byte cap is accepted', () => {
    const big = `#cloud-config\n# ${'x'.repeat(10_000)}\n`;
    expect(text(noCloudFiles(vmi({ userData: big }))['user-data'])).toBe(big);
  });
});

describe('noCloudFiles: network data', () => {
  test.each<[string, CloudInitNoCloud, NoCloudSecrets]>([
    ['inline networkData', { userData: USER, networkData: NET }, {}],
    ['networkDataBase64', { userData: USER, networkDataBase64: Buffer.from(NET).toString('base64') }, {}],
    ['networkDataSecretRef, key networkdata', { userData: USER, networkDataSecretRef: { name: 'n' } }, { networkData: { networkdata: NET } }],
    ['networkDataSecretRef, key networkData', { userData: USER, networkDataSecretRef: { name: 'n' } }, { networkData: { networkData: NET } }],
  ])('%s → network-config', (_what, source, secrets) => {
    expect(text(noCloudFiles(vmi(source), secrets)['network-config'])).toBe(NET);
  });

  test('network data alone: an empty user-data file is still written', () => {
    const files = noCloudFiles(vmi({ networkData: NET }));
    expect(files['user-data']).toEqual(Buffer.alloc(0));
    expect(text(files['network-config'])).toBe(NET);
  });
});

describe('noCloudFiles: meta-data', () => {
  test('JSON with the firmware UUID as instance-id and the VMI name as hostname', () => {
    const v = vmi({ userData: USER });
    const meta = text(noCloudFiles(v)['meta-data']);
    expect(meta).toBe(JSON.stringify({ 'instance-id': v.spec.domain.firmware!.uuid, 'local-hostname': 'web' }));
    expect(JSON.parse(meta!)['instance-id']).toBe(firmwareUuid('demo', 'web'));
  });

  test('an undefaulted VMI still gets the stable firmware UUID', () => {
    const meta = JSON.parse(text(noCloudFiles(vmi({ userData: USER }, { defaulted: false }))['meta-data'])!);
    expect(meta['instance-id']).toBe(firmwareUuid('demo', 'web'));
  });

  test.each<[string | undefined, string | undefined, string]>([
    ['web', undefined, 'web'],
    ['web.example.com', undefined, 'web'],
    ['web', 'myhost', 'myhost'],
    ['a'.repeat(70), undefined, 'a'.repeat(63)],
  ])('name %s, hostname %s → local-hostname %s', (name, hostname, expected) => {
    const v = vmi({ userData: USER }, { name, ...(hostname !== undefined ? { hostname } : {}) });
    expect(guestHostname(v)).toBe(expected);
    expect(JSON.parse(text(noCloudFiles(v)['meta-data'])!)['local-hostname']).toBe(expected);
  });
});

describe('noCloudFiles: errors (INVALID_SPEC)', () => {
  test.each<[string, CloudInitNoCloud | undefined, NoCloudSecrets]>([
    ['no cloudInitNoCloud volume', undefined, {}],
    ['neither user nor network data', {}, {}],
    ['both empty', { userData: '', networkData: '' }, {}],
    ['userDataBase64 not base64', { userDataBase64: 'not base64!' }, {}],
    ['userDataBase64 with a bad length', { userDataBase64: 'abcde' }, {}],
    ['networkDataBase64 not base64', { userData: USER, networkDataBase64: '%%%%' }, {}],
    ['secretRef but no secret read', { secretRef: { name: 's' } }, {}],
    ['secretRef without a userdata key', { secretRef: { name: 's' } }, { userData: { other: 'x' } }],
    ['networkDataSecretRef without a networkdata key', { userData: USER, networkDataSecretRef: { name: 'n' } }, { networkData: { userdata: 'x' } }],
  ])('%s', (_what, source, secrets) => {
    expect(codeOf(() => noCloudFiles(vmi(source), secrets))).toBe('INVALID_SPEC');
  });
});
