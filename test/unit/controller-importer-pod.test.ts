import { describe, expect, test } from '@jest/globals';
import type { V1Container, V1EnvVar, V1PersistentVolumeClaim, V1Pod } from '@kubernetes/client-node';
import { DEFAULT_CONFIG } from '../../controller/config.js';
import { boundedName, buildImporterPod, buildScratchPvc, importerPodName, scratchBytes, scratchPvcName } from '../../controller/import/importer-pod.js';
import { type CdiSettings, resolveSettings } from '../../src/api/cdiconfig.js';
import { decodeImportEnv, WORKER_NODE_OPTIONS } from '../../src/contract/import-spec.js';
import { MiB } from '../../src/quantity.js';
import type { ImportRequest } from '../../src/api/import-request.js';
import { parseChecksum } from '../../src/checksum.js';

const GiB = 2 ** 30;
const PVC_UID = '11111111-2222-4333-8444-555555555555';
const DV_UID = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee';
/** A DNS-1123 subdomain (what pod and PVC names must be); with the 63-character bound checked separately. */
const DNS_NAME = /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/;

interface PvcOptions {
  readonly name?: string;
  readonly block?: boolean;
  readonly size?: string;
  readonly storageClass?: string;
  readonly owners?: string[];
}

function makePvc(o: PvcOptions = {}): V1PersistentVolumeClaim {
  return {
    apiVersion: 'v1',
    kind: 'PersistentVolumeClaim',
    metadata: {
      name: o.name ?? 'disk',
      namespace: 'vms',
      uid: PVC_UID,
      ...(o.owners ? { ownerReferences: o.owners.map((uid, i) => ({ apiVersion: 'cdi.kubevirt.io/v1beta1', kind: 'DataVolume', name: `dv${i}`, uid })) } : {}),
    },
    spec: {
      accessModes: ['ReadWriteOnce'],
      volumeMode: o.block ? 'Block' : 'Filesystem',
      resources: { requests: { storage: o.size ?? '10Gi' } },
      ...(o.storageClass ? { storageClassName: o.storageClass } : {}),
    },
  };
}

function makeRequest(o: Partial<ImportRequest> = {}): ImportRequest {
  return {
    source: 'http',
    endpoint: 'https://images.example.com/disk.qcow2',
    contentType: 'kubevirt',
    insecureTls: false,
    retainPod: false,
    preallocation: false,
    ...o,
  };
}

function container(pod: V1Pod): V1Container {
  const c = pod.spec?.containers[0];
  if (!c) throw new Error('pod has no container');
  return c;
}

function envVar(pod: V1Pod, name: string): V1EnvVar | undefined {
  return container(pod).env?.find((e) => e.name === name);
}

function env(pod: V1Pod, name: string): string | undefined {
  return envVar(pod, name)?.value;
}

const ALLOWED_VOLUME_TYPES = new Set(['configMap', 'persistentVolumeClaim', 'secret', 'emptyDir', 'projected', 'downwardAPI', 'ephemeral', 'csi']);

/** The "restricted" Pod Security Standard (as of v1.25+), returning the violations found. */
function restrictedViolations(pod: V1Pod): string[] {
  const out: string[] = [];
  const spec = pod.spec;
  if (!spec) return ['no spec'];
  const podSc = spec.securityContext ?? {};
  if (spec.hostNetwork) out.push('hostNetwork');
  if (spec.hostPID) out.push('hostPID');
  if (spec.hostIPC) out.push('hostIPC');
  for (const v of spec.volumes ?? []) {
    const types = Object.keys(v).filter((k) => k !== 'name' && (v as unknown as Record<string, unknown>)[k] !== undefined);
    if (types.length !== 1) out.push(`volume ${v.name} has types ${types.join(',')}`);
    for (const t of types) if (!ALLOWED_VOLUME_TYPES.has(t)) out.push(`volume ${v.name} uses ${t}`);
  }
  if (podSc.runAsUser === 0) out.push('pod runAsUser 0');
  const podSeccomp = podSc.seccompProfile?.type;
  if (podSeccomp !== undefined && podSeccomp !== 'RuntimeDefault' && podSeccomp !== 'Localhost') out.push(`pod seccomp ${podSeccomp}`);
  const all = [...spec.containers, ...(spec.initContainers ?? [])];
  for (const c of all) {
    const sc = c.securityContext ?? {};
    if (sc.privileged) out.push(`${c.name} privileged`);
    if (sc.allowPrivilegeEscalation !== false) out.push(`${c.name} allowPrivilegeEscalation`);
    if (!(sc.capabilities?.drop ?? []).includes('ALL')) out.push(`${c.name} does not drop ALL`);
    const adds = (sc.capabilities?.add ?? []).filter((a) => a !== 'NET_BIND_SERVICE');
    if (adds.length > 0) out.push(`${c.name} adds ${adds.join(',')}`);
    const nonRoot = sc.runAsNonRoot ?? podSc.runAsNonRoot;
    if (nonRoot !== true) out.push(`${c.name} runAsNonRoot not true`);
    if (sc.runAsUser === 0) out.push(`${c.name} runAsUser 0`);
    const seccomp = sc.seccompProfile?.type ?? podSeccomp;
    if (seccomp !== 'RuntimeDefault' && seccomp !== 'Localhost') out.push(`${c.name} seccomp ${seccomp}`);
    for (const p of c.ports ?? []) if (p.hostPort) out.push(`${c.name} hostPort`);
  }
  return out;
}

describe('restrictedViolations (the checker itself)', () => {
  test('flags a privileged, root, hostPath pod', () => {
    const pod: V1Pod = {
      spec: {
        hostNetwork: true,
        volumes: [{ name: 'h', hostPath: { path: '/' } }],
        containers: [{ name: 'c', securityContext: { privileged: true, capabilities: { add: ['SYS_ADMIN'] } } }],
      },
    };
    const v = restrictedViolations(pod);
    expect(v).toEqual(
      expect.arrayContaining(['hostNetwork', 'volume h uses hostPath', 'c privileged', 'c allowPrivilegeEscalation', 'c does not drop ALL', 'c adds SYS_ADMIN', 'c runAsNonRoot not true']),
    );
  });
});

describe('importerPodName / scratchPvcName', () => {
  const long = 'a'.repeat(253);
  const long2 = `${'a'.repeat(252)}b`;
  const dotted = `${'x'.repeat(44)}.${'y'.repeat(100)}`;

  test('short names are kept as they are', () => {
    expect(importerPodName('disk')).toBe('importer-disk');
    expect(scratchPvcName('disk')).toBe('disk-scratch');
  });

  test.each<[string, (n: string) => string]>([
    ['importerPodName', importerPodName],
    ['scratchPvcName', scratchPvcName],
    ['boundedName("", n)', (n) => boundedName('', n)],
  ])('%s is deterministic, at most 63 characters and a valid name', (_name, fn) => {
    for (const n of [long, long2, dotted, 'a'.repeat(54), 'a'.repeat(55), 'b'.repeat(63), 'c'.repeat(64), 'd-'.repeat(40)]) {
      const out = fn(n);
      expect(out).toBe(fn(n));
      expect(out.length).toBeLessThanOrEqual(63);
      expect(out).toMatch(DNS_NAME);
      expect(out).not.toMatch(/\.-|-\./);
    }
    expect(fn(long)).not.toBe(fn(long2));
  });

  test('the prefix and suffix survive shortening', () => {
    expect(importerPodName(long).startsWith('importer-aaaa')).toBe(true);
    expect(scratchPvcName(long).endsWith('-scratch')).toBe(true);
  });

  test('a name exactly at the limit is not hashed', () => {
    const n = 'e'.repeat(63 - 'importer-'.length);
    expect(importerPodName(n)).toBe(`importer-${n}`);
    expect(importerPodName(`${n}e`)).not.toBe(`importer-${n}e`);
  });
});

const HEADERS: Partial<ImportRequest> = {
  extraHeaders: [
    { name: 'X-Api-Key', value: 'k-1' },
    { name: 'Accept', value: '*/*' },
  ],
  secretExtraHeaders: ['tokens', 'more-tokens'],
};

describe('buildImporterPod', () => {
  interface Variant {
    readonly pvc: V1PersistentVolumeClaim;
    readonly request: ImportRequest;
    readonly withScratch: boolean;
  }
  const variants: Array<[string, Variant]> = [
    ['filesystem http', { pvc: makePvc(), request: makeRequest(), withScratch: false }],
    ['block', { pvc: makePvc({ block: true }), request: makeRequest(), withScratch: false }],
    ['archive', { pvc: makePvc(), request: makeRequest({ contentType: 'archive', endpoint: 'https://x.example.com/a.tar' }), withScratch: false }],
    ['s3 with secret', { pvc: makePvc(), request: makeRequest({ source: 's3', endpoint: 's3://b/k', secretName: 'creds' }), withScratch: false }],
    ['certs', { pvc: makePvc(), request: makeRequest({ certConfigMap: 'ca' }), withScratch: false }],
    ['scratch', { pvc: makePvc(), request: makeRequest(), withScratch: true }],
    [
      'everything on block',
      {
        pvc: makePvc({ block: true, owners: [DV_UID], name: 'z'.repeat(200) }),
        request: makeRequest({ secretName: 's', certConfigMap: 'c', checksum: parseChecksum(`sha256:${'ab'.repeat(32)}`), preallocation: true, insecureTls: true }),
        withScratch: true,
      },
    ],
    ['blank', { pvc: makePvc(), request: makeRequest({ source: 'blank', endpoint: '' }), withScratch: false }],
    ['extra headers and their Secrets', { pvc: makePvc(), request: makeRequest(HEADERS), withScratch: true }],
  ];

  test.each(variants)('%s: passes the restricted Pod Security Standard', (_name, v) => {
    const pod = buildImporterPod(v.pvc, v.request, DEFAULT_CONFIG, { withScratch: v.withScratch });
    expect(restrictedViolations(pod)).toEqual([]);
    expect(pod.spec?.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: 'RuntimeDefault' } });
    expect(container(pod).securityContext).toMatchObject({ allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } });
    expect(container(pod).securityContext?.capabilities?.add).toBeUndefined();
  });

  test.each(variants)('%s: labels, owner, restart policy, image', (_name, v) => {
    const pod = buildImporterPod(v.pvc, v.request, DEFAULT_CONFIG, { withScratch: v.withScratch });
    const name = v.pvc.metadata?.name ?? '';
    expect(pod.metadata?.name).toBe(importerPodName(name));
    expect(pod.metadata?.namespace).toBe('vms');
    expect(pod.metadata?.labels).toMatchObject({ app: 'containerized-data-importer', 'cdi.kubevirt.io': 'importer' });
    for (const value of Object.values(pod.metadata?.labels ?? {})) expect(value.length).toBeLessThanOrEqual(63);
    expect(pod.metadata?.ownerReferences).toEqual([expect.objectContaining({ kind: 'PersistentVolumeClaim', name, uid: PVC_UID, controller: true })]);
    expect(pod.spec?.restartPolicy).toBe('Never');
    expect(container(pod).name).toBe('importer');
    expect(container(pod).image).toBe(DEFAULT_CONFIG.importerImage);
    expect(container(pod).imagePullPolicy).toBe(DEFAULT_CONFIG.importerPullPolicy);
    expect(pod.spec?.volumes?.find((vol) => vol.name === 'data')?.persistentVolumeClaim?.claimName).toBe(name);
    // Every mount and device refers to a declared volume.
    const declared = new Set((pod.spec?.volumes ?? []).map((vol) => vol.name));
    for (const m of [...(container(pod).volumeMounts ?? []), ...(container(pod).volumeDevices ?? [])]) expect(declared.has(m.name)).toBe(true);
    // Env names are unique.
    const names = (container(pod).env ?? []).map((e) => e.name);
    expect(new Set(names).size).toBe(names.length);
  });

  test('filesystem PVC: /data mount, file target, size in bytes, overhead from config, PVC uid', () => {
    const pod = buildImporterPod(makePvc(), makeRequest(), DEFAULT_CONFIG, { withScratch: false });
    expect(container(pod).volumeMounts).toEqual([{ name: 'data', mountPath: '/data' }]);
    expect(container(pod).volumeDevices).toBeUndefined();
    expect(env(pod, 'IMPORTER_SOURCE')).toBe('http');
    expect(env(pod, 'IMPORTER_ENDPOINT')).toBe('https://images.example.com/disk.qcow2');
    expect(env(pod, 'IMPORTER_CONTENTTYPE')).toBe('kubevirt');
    expect(env(pod, 'IMPORTER_TARGET_KIND')).toBe('file');
    expect(env(pod, 'IMPORTER_TARGET_PATH')).toBe('/data/disk.img');
    expect(env(pod, 'IMPORTER_IMAGE_SIZE')).toBe(String(10 * GiB));
    expect(env(pod, 'FILESYSTEM_OVERHEAD')).toBe(String(DEFAULT_CONFIG.filesystemOverhead));
    expect(env(pod, 'OWNER_UID')).toBe(PVC_UID);
    expect(env(pod, 'INSECURE_TLS')).toBe('false');
    expect(env(pod, 'PREALLOCATION')).toBe('false');
    // V8's heap is capped as the data-path pods' contract says (bench/README.md #16).
    expect(env(pod, 'NODE_OPTIONS')).toBe(WORKER_NODE_OPTIONS);
    expect(WORKER_NODE_OPTIONS).toMatch(/--max-old-space-size=\d+/);
    expect(envVar(pod, 'IMPORTER_SCRATCH_DIR')).toBeUndefined();
    expect(envVar(pod, 'IMPORTER_CERT_DIR')).toBeUndefined();
    expect(envVar(pod, 'IMPORTER_ACCESS_KEY_ID')).toBeUndefined();
    expect(envVar(pod, 'IMPORTER_CHECKSUM')).toBeUndefined();
  });

  test('the overhead comes from the config', () => {
    const pod = buildImporterPod(makePvc(), makeRequest(), { ...DEFAULT_CONFIG, filesystemOverhead: 0.1 }, { withScratch: false });
    expect(env(pod, 'FILESYSTEM_OVERHEAD')).toBe('0.1');
  });

  test.each<[string, string[] | undefined, string]>([
    ['no owner → PVC uid', undefined, PVC_UID],
    ['one owner → owner uid', [DV_UID], DV_UID],
    ['two owners → PVC uid', [DV_UID, 'other'], PVC_UID],
  ])('OWNER_UID: %s', (_name, owners, expected) => {
    const pod = buildImporterPod(makePvc(owners ? { owners } : {}), makeRequest(), DEFAULT_CONFIG, { withScratch: false });
    expect(env(pod, 'OWNER_UID')).toBe(expected);
  });

  test('Block PVC: device at /dev/cdi-block-volume, no /data mount, overhead 0, block target', () => {
    const pod = buildImporterPod(makePvc({ block: true }), makeRequest(), DEFAULT_CONFIG, { withScratch: false });
    expect(container(pod).volumeDevices).toEqual([{ name: 'data', devicePath: '/dev/cdi-block-volume' }]);
    expect((container(pod).volumeMounts ?? []).some((m) => m.mountPath === '/data')).toBe(false);
    expect(env(pod, 'IMPORTER_TARGET_KIND')).toBe('block');
    expect(env(pod, 'IMPORTER_TARGET_PATH')).toBe('/dev/cdi-block-volume');
    expect(env(pod, 'FILESYSTEM_OVERHEAD')).toBe('0');
    expect(env(pod, 'IMPORTER_IMAGE_SIZE')).toBe(String(10 * GiB));
  });

  test('archive content: directory target at /data', () => {
    const pod = buildImporterPod(makePvc(), makeRequest({ contentType: 'archive' }), DEFAULT_CONFIG, { withScratch: false });
    expect(env(pod, 'IMPORTER_TARGET_KIND')).toBe('directory');
    expect(env(pod, 'IMPORTER_TARGET_PATH')).toBe('/data');
    expect(env(pod, 'IMPORTER_CONTENTTYPE')).toBe('archive');
    expect(container(pod).volumeMounts).toContainEqual({ name: 'data', mountPath: '/data' });
  });

  test('secretName: credentials are secret references, never values', () => {
    const request = makeRequest({ source: 's3', endpoint: 's3://bucket/disk.img', secretName: 'my-creds' });
    const pod = buildImporterPod(makePvc(), request, DEFAULT_CONFIG, { withScratch: false });
    expect(envVar(pod, 'IMPORTER_ACCESS_KEY_ID')).toEqual({
      name: 'IMPORTER_ACCESS_KEY_ID',
      valueFrom: { secretKeyRef: expect.objectContaining({ name: 'my-creds', key: 'accessKeyId' }) },
    });
    expect(envVar(pod, 'IMPORTER_SECRET_KEY')).toEqual({
      name: 'IMPORTER_SECRET_KEY',
      valueFrom: { secretKeyRef: expect.objectContaining({ name: 'my-creds', key: 'secretKey' }) },
    });
    for (const e of container(pod).env ?? []) {
      if (e.name === 'IMPORTER_ACCESS_KEY_ID' || e.name === 'IMPORTER_SECRET_KEY') expect(e.value).toBeUndefined();
    }
    // The pod never carries a secret's data; the secret is only named.
    const json = JSON.stringify(pod);
    expect(json).not.toMatch(/"(password|username|stringData)"/);
    expect(json.match(/"(accessKeyId|secretKey)"/g)).toEqual(['"accessKeyId"', '"secretKey"']); // only as the keys referenced
    expect(pod.spec?.volumes?.some((v) => v.secret !== undefined)).toBe(false);
  });

  test('certConfigMap: configMap volume at /certs, IMPORTER_CERT_DIR=/certs', () => {
    const pod = buildImporterPod(makePvc(), makeRequest({ certConfigMap: 'ca-bundle' }), DEFAULT_CONFIG, { withScratch: false });
    const vol = pod.spec?.volumes?.find((v) => v.configMap !== undefined);
    expect(vol?.configMap?.name).toBe('ca-bundle');
    expect(container(pod).volumeMounts).toContainEqual(expect.objectContaining({ name: vol?.name, mountPath: '/certs' }));
    expect(env(pod, 'IMPORTER_CERT_DIR')).toBe('/certs');
  });

  test('scratch: scratch PVC volume at /scratch, IMPORTER_SCRATCH_DIR', () => {
    const pod = buildImporterPod(makePvc(), makeRequest(), DEFAULT_CONFIG, { withScratch: true });
    const vol = pod.spec?.volumes?.find((v) => v.persistentVolumeClaim?.claimName === 'disk-scratch');
    expect(vol).toBeDefined();
    expect(container(pod).volumeMounts).toContainEqual(expect.objectContaining({ name: vol?.name, mountPath: '/scratch' }));
    expect(env(pod, 'IMPORTER_SCRATCH_DIR')).toBe('/scratch');
  });

  test('scratch on a long PVC name uses the bounded scratch name', () => {
    const name = 'q'.repeat(240);
    const pod = buildImporterPod(makePvc({ name }), makeRequest(), DEFAULT_CONFIG, { withScratch: true });
    expect(pod.spec?.volumes?.some((v) => v.persistentVolumeClaim?.claimName === scratchPvcName(name))).toBe(true);
    expect(pod.metadata?.name).toBe(importerPodName(name));
  });

  test('checksum, preallocation and insecure TLS reach the environment', () => {
    const checksum = `sha256:${'AB'.repeat(32)}`;
    const pod = buildImporterPod(makePvc(), makeRequest({ checksum: parseChecksum(checksum), preallocation: true, insecureTls: true }), DEFAULT_CONFIG, { withScratch: false });
    expect(env(pod, 'IMPORTER_CHECKSUM')).toBe(checksum.toLowerCase());
    expect(env(pod, 'PREALLOCATION')).toBe('true');
    expect(env(pod, 'INSECURE_TLS')).toBe('true');
  });

  test('extra headers: CDI\'s IMPORTER_EXTRA_HEADER_<n>; each Secret read-only at /extraheaders/<n>, named, never copied', () => {
    const pod = buildImporterPod(makePvc(), makeRequest(HEADERS), DEFAULT_CONFIG, { withScratch: false });
    expect(env(pod, 'IMPORTER_EXTRA_HEADER_0')).toBe('X-Api-Key: k-1');
    expect(env(pod, 'IMPORTER_EXTRA_HEADER_1')).toBe('Accept: */*');
    expect(env(pod, 'IMPORTER_SECRET_EXTRA_HEADERS_DIR')).toBe('/extraheaders');
    expect(pod.spec?.volumes).toEqual(expect.arrayContaining([
      { name: 'extra-headers-0', secret: { secretName: 'tokens', defaultMode: 0o440 } },
      { name: 'extra-headers-1', secret: { secretName: 'more-tokens', defaultMode: 0o440 } },
    ]));
    expect(container(pod).volumeMounts).toEqual(expect.arrayContaining([
      { name: 'extra-headers-0', mountPath: '/extraheaders/0', readOnly: true },
      { name: 'extra-headers-1', mountPath: '/extraheaders/1', readOnly: true },
    ]));
    // What the importer decodes from this environment: the literal headers, the directory of the rest.
    const plain = Object.fromEntries((container(pod).env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, e.value]));
    expect(decodeImportEnv({ ...plain, IMPORTER_TARGET_PATH: '/data/disk.img' })).toMatchObject({ extraHeaders: HEADERS.extraHeaders, secretHeadersDir: '/extraheaders' });
  });

  test('no extra headers: no variable, no Secret volume', () => {
    const pod = buildImporterPod(makePvc(), makeRequest(), DEFAULT_CONFIG, { withScratch: false });
    expect((container(pod).env ?? []).filter((e) => e.name.startsWith('IMPORTER_EXTRA_HEADER_') || e.name === 'IMPORTER_SECRET_EXTRA_HEADERS_DIR')).toEqual([]);
    expect(pod.spec?.volumes?.some((v) => v.secret !== undefined)).toBe(false);
  });

  test('the metrics port comes from the config', () => {
    const pod = buildImporterPod(makePvc(), makeRequest(), { ...DEFAULT_CONFIG, importerMetricsPort: 9999 }, { withScratch: false });
    expect(env(pod, 'FERRY_METRICS_PORT')).toBe('9999');
    expect(container(pod).ports).toEqual([expect.objectContaining({ containerPort: 9999 })]);
  });
});

describe('buildScratchPvc', () => {
  const settings = (o: { global?: number; perClass?: Record<string, number>; scratchClass?: string } = {}): CdiSettings =>
    resolveSettings(
      { ...(o.scratchClass ? { scratchSpaceStorageClass: o.scratchClass } : {}), filesystemOverhead: { global: String(o.global ?? 0.06), storageClass: Object.fromEntries(Object.entries(o.perClass ?? {}).map(([k, v]) => [k, String(v)])) } },
      { filesystemOverhead: 0.06, podResourceRequirements: {} },
    );

  test.each<[string, PvcOptions]>([
    ['with a storage class', { size: '20Gi', storageClass: 'fast' }],
    ['without a storage class', { size: '5G' }],
    ['for a block PVC', { size: '7Gi', block: true, storageClass: 'rbd' }],
    ['for a long name', { name: 'n'.repeat(253), size: '1Gi' }],
  ])('%s: named, owned, Filesystem, the target\'s class', (_name, o) => {
    const pvc = makePvc(o);
    const scratch = buildScratchPvc(pvc, settings());
    const name = pvc.metadata?.name ?? '';
    expect(scratch.metadata?.name).toBe(scratchPvcName(name));
    expect(scratch.metadata?.namespace).toBe('vms');
    expect(scratch.spec?.volumeMode).toBe('Filesystem');
    expect(scratch.spec?.accessModes).toEqual(['ReadWriteOnce']);
    if (o.storageClass) expect(scratch.spec?.storageClassName).toBe(o.storageClass);
    else expect(scratch.spec?.storageClassName).toBeUndefined();
    expect(scratch.metadata?.ownerReferences).toEqual([expect.objectContaining({ kind: 'PersistentVolumeClaim', name, uid: PVC_UID, controller: true })]);
  });

  // Worked by hand from CDI's formula: usable = floor(ceil((1 - t) * request) / MiB) MiB;
  // scratch = ceil(ceil(usable / (1 - s)) / MiB) MiB.
  test.each<[string, number, number, number, number]>([
    ['10Gi, both 6 %: the usable 9625 MiB grows back to 10Gi', 10 * GiB, 0.06, 0.06, 10240],
    ['10Gi Block target (0 %), scratch 6 %: all 10Gi usable, grown', 10 * GiB, 0, 0.06, 10894],
    ['10Gi, target 6 %, scratch 0 %: only the usable part', 10 * GiB, 0.06, 0, 9625],
    ['1Gi, target 6 %, scratch 10 %', GiB, 0.06, 0.1, 1069],
    ['5G (not a MiB multiple), no overheads: rounded down to a MiB', 5e9, 0, 0, 4768],
  ])('scratchBytes: %s', (_name, request, target, scratch, mib) => {
    expect(scratchBytes(request, target, scratch)).toBe(mib * MiB);
  });

  test.each<[string, PvcOptions, Parameters<typeof settings>[0], number]>([
    ['the global overhead for both', { size: '10Gi' }, {}, 10240],
    ['a Block target has none; scratch the global', { size: '10Gi', block: true }, {}, 10894],
    ['the target class\'s and the scratch class\'s own', { size: '1Gi', storageClass: 'fast' }, { perClass: { fast: 0.06, scratchy: 0.1 }, scratchClass: 'scratchy' }, 1069],
    ['scratchSpaceStorageClass with no overhead of its own: the global', { size: '10Gi', storageClass: 'thin' }, { global: 0.06, perClass: { thin: 0 }, scratchClass: 'scratchy' }, 10894],
  ])('the size from CDIConfig: %s', (_name, o, s, mib) => {
    const scratch = buildScratchPvc(makePvc(o), settings(s));
    expect(scratch.spec?.resources?.requests?.storage).toBe(`${mib}Mi`);
    if (s?.scratchClass) expect(scratch.spec?.storageClassName).toBe(s.scratchClass);
  });
});
