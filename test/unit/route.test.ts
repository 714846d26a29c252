import { describe, expect, test } from '@jest/globals';
import { connectionsFor, type Route, route, type RouteFacts, type RouteTuning, nbdReadCost, scratchBound, tailMatters, wantsLatency, wantsNbdReads, wantsReuse } from '../../importer/engine/route.js';
import { autoConnectionsFor, probeEnoughMs } from '../../importer/engine/tuning.js';
import { warmLatencyMs } from '../../importer/sources/source.js';

const MiB = 1024 * 1024;

const TUNING: RouteTuning = {
  directHttp: true,
  connections: 1,
  nearLatencyMs: 5,
  autoConnections: 4,
  rawViaNbdMinBytes: 64 * MiB,
  parallelMinBytes: 64 * MiB,
  chunkBytes: 16 * MiB,
  streamChunkBytes: 4 * MiB,
};

/** A small raw image over http with Range support, into a 1 GiB file target with scratch space. */
const BASE: RouteFacts = {
  contentType: 'kubevirt',
  source: 'http',
  format: 'raw',
  layers: [],
  size: 8 * MiB,
  ranged: true,
  nbdReadable: true,
  localFile: false,
  checksum: false,
  targetKind: 'file',
  usable: 1024 * MiB,
  scratch: true,
  tuning: TUNING,
};

const BIG = 256 * MiB;
const SINGLE = { kind: 'single' } as const;
type Over = Omit<Partial<RouteFacts>, 'tuning'> & { readonly tuning?: Partial<RouteTuning> };
const facts = (over: Over = {}): RouteFacts => ({ ...BASE, ...over, tuning: { ...TUNING, ...over.tuning } });

describe('route: raw images', () => {
  test.each<[string, Over, Route]>([
    ['small, one connection: streamed, bounded by the target', {}, { path: 'streamed', transport: SINGLE, bound: 1024 * MiB }],
    ['no capacity given: streamed, unbounded', { usable: undefined }, { path: 'streamed', transport: SINGLE }],
    ['big, Range, whole sectors: qemu-img through nbdkit', { size: BIG }, { path: 'nbd', qemuFormat: 'raw' }],
    ['big but not whole sectors: streamed', { size: BIG + 1 }, { path: 'streamed', transport: SINGLE, bound: 1024 * MiB }],
    ['big with a checksum: streamed (every byte read in order)', { size: BIG, checksum: true }, { path: 'streamed', transport: SINGLE, bound: 1024 * MiB }],
    ['big, nbd turned off: streamed', { size: BIG, tuning: { rawViaNbdMinBytes: 0 } }, { path: 'streamed', transport: SINGLE, bound: 1024 * MiB }],
    ['big, directHttp off: streamed', { size: BIG, tuning: { directHttp: false } }, { path: 'streamed', transport: SINGLE, bound: 1024 * MiB }],
    ['big from s3: not nbd', { size: BIG, source: 's3' }, { path: 'streamed', transport: SINGLE, bound: 1024 * MiB }],
    ['big, without Range: streamed', { size: BIG, ranged: false, nbdReadable: false }, { path: 'streamed', transport: SINGLE, bound: 1024 * MiB }],
    ['big, a fixed VHD footer at the end: not nbd (qemu-img would copy it)', { size: BIG, tail: 'fixed-vhd' }, { path: 'streamed', transport: SINGLE, bound: 1024 * MiB }],
    ['big, 4 connections: ranges at offsets', { size: BIG, tuning: { connections: 4 } }, { path: 'ranged', fetch: { connections: 4, chunkBytes: 16 * MiB, length: BIG } }],
    ['big, auto, far away: ranges', { size: BIG, latencyMs: 20, tuning: { connections: 'auto' } }, { path: 'ranged', fetch: { connections: 4, chunkBytes: 16 * MiB, length: BIG } }],
    ['big, auto, close by: nbd', { size: BIG, latencyMs: 1, tuning: { connections: 'auto' } }, { path: 'nbd', qemuFormat: 'raw' }],
    ['big, ranges, footer known: the footer is not fetched', { size: BIG, tail: 'fixed-vhd', tuning: { connections: 4 } }, { path: 'ranged', fetch: { connections: 4, chunkBytes: 16 * MiB, length: BIG - 512 } }],
    ['big, ranges, footer known, checksum: all fetched (cut after)', { size: BIG, tail: 'fixed-vhd', checksum: true, tuning: { connections: 4 } }, { path: 'ranged', fetch: { connections: 4, chunkBytes: 16 * MiB, length: BIG } }],
    ['small, 4 connections: below parallelMinBytes, streamed', { tuning: { connections: 4 } }, { path: 'streamed', transport: SINGLE, bound: 1024 * MiB }],
    ['one zstd layer into a file: the decoder writes it, bound +512 for a footer', { layers: ['zstd'], fileDecoder: 'zstd' }, { path: 'decoder', decoder: 'zstd', transport: SINGLE, bound: 1024 * MiB + 512, usable: 1024 * MiB }],
    ['one xz layer, no capacity: decoder, unbounded', { layers: ['xz'], fileDecoder: 'xz', usable: undefined }, { path: 'decoder', decoder: 'xz', transport: SINGLE }],
    ['one zstd layer into a block device: streamed', { layers: ['zstd'], fileDecoder: 'zstd', targetKind: 'block' }, { path: 'streamed', transport: SINGLE, bound: 1024 * MiB }],
    ['gzip, big, 4 connections: streamed from ordered ranges', { layers: ['gzip'], size: BIG, tuning: { connections: 4 } }, { path: 'streamed', transport: { kind: 'ordered-ranges', connections: 4, chunkBytes: 4 * MiB }, bound: 1024 * MiB }],
    ['zstd, big, 4 connections: the decoder reads ordered ranges', { layers: ['zstd'], fileDecoder: 'zstd', size: BIG, tuning: { connections: 4 } }, { path: 'decoder', decoder: 'zstd', transport: { kind: 'ordered-ranges', connections: 4, chunkBytes: 4 * MiB }, bound: 1024 * MiB + 512, usable: 1024 * MiB }],
    ['a compressed image is never compared with the target by its compressed size', { layers: ['gzip'], size: 2048 * MiB }, { path: 'streamed', transport: SINGLE, bound: 1024 * MiB }],
  ])('%s', (_name, over, expected) => {
    expect(route(facts(over))).toEqual(expected);
  });

  test.each<[string, Over, number]>([
    ['larger than the target', { size: 1024 * MiB + 1 }, 1024 * MiB + 1],
    ['larger than the target even without its fixed VHD footer', { size: 1024 * MiB + 1024, tail: 'fixed-vhd' }, 1024 * MiB + 512],
  ])('%s: TARGET_TOO_SMALL before a byte is written, with the sizes', (_name, over, disk) => {
    expect(route(facts(over))).toMatchObject({ path: 'refused', code: 'TARGET_TOO_SMALL', details: { size: disk, usable: 1024 * MiB } });
  });

  test('without Range an image up to 512 bytes too large streams: a footer is looked for at the end, the bound fails it otherwise', () => {
    const far = { ranged: false, nbdReadable: false };
    expect(route(facts({ ...far, size: 1024 * MiB + 512 }))).toEqual({ path: 'streamed', transport: SINGLE, bound: 1024 * MiB });
    expect(route(facts({ ...far, size: 1024 * MiB + 513 }))).toMatchObject({ path: 'refused', code: 'TARGET_TOO_SMALL' });
  });

  test('nbd for raw needs ranged reads (to look at the last bytes first)', () => {
    expect(route(facts({ size: BIG, ranged: false }))).toEqual({ path: 'streamed', transport: SINGLE, bound: 1024 * MiB });
  });

  test('a fixed VHD footer makes an image that is 512 bytes too large fit', () => {
    expect(route(facts({ size: 1024 * MiB + 512, tail: 'fixed-vhd' }))).toEqual({ path: 'streamed', transport: SINGLE, bound: 1024 * MiB });
  });
});

describe('route: images qemu-img converts', () => {
  const qcow2 = (over: Over = {}): RouteFacts => facts({ format: 'qcow2', declaredSize: 512n * BigInt(MiB), ...over });
  test.each<[string, RouteFacts, Route]>([
    ['remote with Range: read in place through nbdkit', qcow2(), { path: 'nbd', qemuFormat: 'qcow2' }],
    ['vhd: qemu calls it vpc; staged, never read in place', facts({ format: 'vhd' }), { path: 'scratch', qemuFormat: 'vpc', fill: SINGLE, bound: scratchBound(1024 * MiB) }],
    ['vmdk with Range, near: staged (only a qcow2 is read in place)', facts({ format: 'vmdk' }), { path: 'scratch', qemuFormat: 'vmdk', fill: SINGLE, bound: scratchBound(1024 * MiB) }],
    ['a local file: in place', qcow2({ localFile: true, nbdReadable: false, ranged: false }), { path: 'in-place', qemuFormat: 'qcow2', verifyFirst: false }],
    ['a local file with a checksum: in place, read once first', qcow2({ localFile: true, checksum: true }), { path: 'in-place', qemuFormat: 'qcow2', verifyFirst: true }],
    ['a checksum: scratch, streamed in, bounded', qcow2({ checksum: true }), { path: 'scratch', qemuFormat: 'qcow2', fill: SINGLE, bound: scratchBound(512 * MiB) }],
    ['compressed: scratch', qcow2({ layers: ['gzip'] }), { path: 'scratch', qemuFormat: 'qcow2', fill: SINGLE, bound: scratchBound(512 * MiB) }],
    ['a compressed local file: scratch', qcow2({ layers: ['xz'], localFile: true }), { path: 'scratch', qemuFormat: 'qcow2', fill: SINGLE, bound: scratchBound(512 * MiB) }],
    ['no Range: scratch', qcow2({ ranged: false, nbdReadable: false }), { path: 'scratch', qemuFormat: 'qcow2', fill: SINGLE, bound: scratchBound(512 * MiB) }],
    ['no Range, no scratch: reported, nothing written', qcow2({ ranged: false, nbdReadable: false, scratch: false }), { path: 'scratch-required', qemuFormat: 'qcow2' }],
    ['no size in the header, no capacity: scratch, unbounded', facts({ format: 'vhdx', ranged: false, nbdReadable: false, usable: undefined }), { path: 'scratch', qemuFormat: 'vhdx', fill: SINGLE }],
    ['no size in the header: bounded by the target', facts({ format: 'vhdx', checksum: true }), { path: 'scratch', qemuFormat: 'vhdx', fill: SINGLE, bound: scratchBound(1024 * MiB) }],
    [
      'big, 4 connections: ranges into scratch',
      qcow2({ size: BIG, tuning: { connections: 4 } }),
      { path: 'scratch', qemuFormat: 'qcow2', fill: { connections: 4, chunkBytes: 16 * MiB, length: BIG }, bound: scratchBound(512 * MiB) },
    ],
    [
      'compressed, big, 4 connections: ordered ranges into scratch',
      qcow2({ size: BIG, layers: ['xz'], tuning: { connections: 4 } }),
      { path: 'scratch', qemuFormat: 'qcow2', fill: { kind: 'ordered-ranges', connections: 4, chunkBytes: 4 * MiB }, bound: scratchBound(512 * MiB) },
    ],
  ])('%s', (_name, f, expected) => {
    expect(route(f)).toEqual(expected);
  });

  test.each<[string, bigint, number | string]>([
    ['a header size larger than the target', 2048n * BigInt(MiB), 2048 * MiB],
    ['a header size past 2^53 (qemu-img would call it invalid)', 2n ** 60n, (2n ** 60n).toString()],
  ])('%s: TARGET_TOO_SMALL with the size, before any copy', (_name, declared, detail) => {
    for (const over of [{}, { layers: ['gzip'] as const }, { localFile: true }, { scratch: false, ranged: false }]) {
      expect(route(qcow2({ declaredSize: declared, ...over }))).toMatchObject({ path: 'refused', code: 'TARGET_TOO_SMALL', details: { virtualSize: detail, usable: 1024 * MiB } });
    }
  });

  test('a header size is not judged without a capacity (qemu-img has the last word)', () => {
    expect(route(qcow2({ declaredSize: 2n ** 60n, usable: undefined }))).toEqual({ path: 'nbd', qemuFormat: 'qcow2' });
  });

  test('a plain image file bigger than its scratch bound is refused before it is copied', () => {
    expect(route(qcow2({ checksum: true, size: scratchBound(512 * MiB) + 1 }))).toMatchObject({ path: 'refused', code: 'TARGET_TOO_SMALL' });
  });
});

describe('route: archives and refusals', () => {
  test.each<[string, RouteFacts, Partial<Route>]>([
    ['an archive of a tar stream', facts({ contentType: 'archive', format: 'tar', targetKind: 'directory' }), { path: 'archive', transport: SINGLE }],
    ['an archive of a gzip tar, big, 4 connections: ordered ranges', facts({ contentType: 'archive', format: 'tar', layers: ['gzip'], size: BIG, tuning: { ...TUNING, connections: 4 } }), { path: 'archive', transport: { kind: 'ordered-ranges', connections: 4, chunkBytes: 4 * MiB } }],
    ['an archive that is not tar', facts({ contentType: 'archive', format: 'qcow2' }), { path: 'refused', code: 'UNSUPPORTED_FORMAT' }],
    ['a tar as a disk', facts({ format: 'tar' }), { path: 'refused', code: 'UNSUPPORTED_FORMAT' }],
    ['an unsupported format', facts({ format: 'unsupported' }), { path: 'refused', code: 'UNSUPPORTED_FORMAT' }],
  ])('%s', (_name, f, expected) => {
    expect(route(f)).toMatchObject(expected);
  });
});

describe('what the engine gathers before routing', () => {
  test.each<[string, Parameters<typeof wantsLatency>[0], boolean]>([
    ['auto, big, ranged', { ...facts({ size: BIG, tuning: { connections: 'auto' } }), canMeasure: true }, true],
    ['a number of connections', { ...facts({ size: BIG, tuning: { connections: 4 } }), canMeasure: true }, false],
    ['small', { ...facts({ tuning: { connections: 'auto' } }), canMeasure: true }, false],
    ['no ranges', { ...facts({ size: BIG, ranged: false, tuning: { connections: 'auto' } }), canMeasure: true }, false],
    ['nothing to measure with', { ...facts({ size: BIG, tuning: { connections: 'auto' } }), canMeasure: false }, false],
  ])('latency: %s → %s', (_name, f, expected) => {
    expect(wantsLatency(f)).toBe(expected);
  });

  test.each<[number | 'auto', number | undefined, number]>([
    [1, undefined, 1],
    [3, 100, 3],
    ['auto', undefined, 1],
    ['auto', 1, 1],
    ['auto', 6, 4],
  ])('connections %s at latency %s: %i', (setting, latencyMs, expected) => {
    expect(connectionsFor({ ...(latencyMs !== undefined ? { latencyMs } : {}), tuning: { ...TUNING, connections: setting } })).toBe(expected);
  });

  test.each<[string, RouteFacts, boolean]>([
    ['a raw image too large by up to its footer', facts({ size: 1024 * MiB + 512 }), true],
    ['a big raw image going to nbd', facts({ size: BIG }), true],
    ['a raw image streamed (the stream finds the footer itself)', facts(), false],
    ['a local raw image too large', facts({ size: 1024 * MiB + 512, localFile: true, ranged: false, nbdReadable: false }), true],
    ['too large, no Range, not local: nothing to read ahead with', facts({ size: 1024 * MiB + 512, ranged: false, nbdReadable: false }), false],
    ['compressed', facts({ layers: ['gzip'], size: BIG }), false],
    ['already read', facts({ size: BIG, tail: 'data' }), false],
  ])('the last 512 bytes: %s → %s', (_name, f, expected) => {
    expect(tailMatters(f, route(f))).toBe(expected);
  });

  test('the scratch bound: the disk plus at least 16 MiB, or 1/32 of it for big disks', () => {
    expect(scratchBound(8 * MiB)).toBe(24 * MiB);
    expect(scratchBound(32 * 1024 * MiB)).toBe(33 * 1024 * MiB);
  });
});

describe('route: what a request costs (auto) and the one stream written by curl', () => {
  const CURL = { kind: 'curl' } as const;
  const AUTO = { connections: 'auto' as const };
  test.each<[string, Over, Route]>([
    ['raw, cheap requests (nginx-like chunk read): nbd', { size: BIG, latencyMs: 1, chunkMs: 3, tuning: AUTO }, { path: 'nbd', qemuFormat: 'raw' }],
    ['raw, dear requests (node reads 2 MiB in 20 ms), curl available: one stream by curl', { size: BIG, latencyMs: 4, chunkMs: 20, curl: true, tuning: AUTO }, { path: 'streamed', transport: CURL, bound: 1024 * MiB }],
    ['raw, dear requests, no curl: one stream through node', { size: BIG, latencyMs: 4, chunkMs: 20, tuning: AUTO }, { path: 'streamed', transport: SINGLE, bound: 1024 * MiB }],
    ['raw, cheap for node, cheap through nbdkit: nbd', { size: BIG, latencyMs: 1, chunkMs: 4, nbdReadMs: 3, curl: true, tuning: AUTO }, { path: 'nbd', qemuFormat: 'raw' }],
    ['raw, cheap for node, dear through nbdkit (the Python server\'s stall): one stream by curl', { size: BIG, latencyMs: 1, chunkMs: 4, nbdReadMs: 24, curl: true, tuning: AUTO }, { path: 'streamed', transport: CURL, bound: 1024 * MiB }],
    ['raw, node\'s chunk read dear but reads through nbdkit cheap: nbd (the export decides)', { size: BIG, latencyMs: 1, chunkMs: 40, nbdReadMs: 3, curl: true, tuning: AUTO }, { path: 'nbd', qemuFormat: 'raw' }],
    ['raw, reads through nbdkit failed (Infinity): one stream by curl', { size: BIG, latencyMs: 1, chunkMs: 4, nbdReadMs: Infinity, curl: true, tuning: AUTO }, { path: 'streamed', transport: CURL, bound: 1024 * MiB }],
    ['raw, late answer but a fast chunk (busy, not far): not ranges; nbd, as its reads through nbdkit decide', { size: BIG, latencyMs: 8, chunkMs: 12, curl: true, tuning: AUTO }, { path: 'nbd', qemuFormat: 'raw' }],
    ['raw, busy, reads through nbdkit dear: one stream by curl', { size: BIG, latencyMs: 8, chunkMs: 12, nbdReadMs: 9, curl: true, tuning: AUTO }, { path: 'streamed', transport: CURL, bound: 1024 * MiB }],
    ['raw, late answer and a slow chunk (far): ranges', { size: BIG, latencyMs: 20, chunkMs: 60, curl: true, tuning: AUTO }, { path: 'ranged', fetch: { connections: 4, chunkBytes: 16 * MiB, length: BIG } }],
    ['raw, no Range, curl: one stream by curl', { size: BIG, ranged: false, nbdReadable: false, curl: true }, { path: 'streamed', transport: CURL, bound: 1024 * MiB }],
    ['raw with a checksum: node reads every byte, never curl', { size: BIG, ranged: false, nbdReadable: false, curl: true, checksum: true }, { path: 'streamed', transport: SINGLE, bound: 1024 * MiB }],
    ['raw into a block device: node, never curl', { size: BIG, ranged: false, nbdReadable: false, curl: true, targetKind: 'block' }, { path: 'streamed', transport: SINGLE, bound: 1024 * MiB }],
    ['raw.zst with curl available: the decoder, fed by curl', { layers: ['zstd'], fileDecoder: 'zstd', curl: true }, { path: 'decoder', decoder: 'zstd', transport: CURL, bound: 1024 * MiB + 512, usable: 1024 * MiB }],
    ['raw.xz with a checksum: the decoder, fed by node (it reads every byte)', { layers: ['xz'], fileDecoder: 'xz', curl: true, checksum: true }, { path: 'decoder', decoder: 'xz', transport: SINGLE, bound: 1024 * MiB + 512, usable: 1024 * MiB }],
    ['raw.xz without curl: the decoder, fed by node', { layers: ['xz'], fileDecoder: 'xz' }, { path: 'decoder', decoder: 'xz', transport: SINGLE, bound: 1024 * MiB + 512, usable: 1024 * MiB }],
    ['raw.xz far away: the decoder, fed by node over ranged connections (not curl)', { layers: ['xz'], fileDecoder: 'xz', curl: true, size: BIG, latencyMs: 20, chunkMs: 60, tuning: AUTO }, { path: 'decoder', decoder: 'xz', transport: { kind: 'ordered-ranges', connections: 4, chunkBytes: 4 * MiB }, bound: 1024 * MiB + 512, usable: 1024 * MiB }],
    ['raw.gz with curl available: node decodes (curl only fetches plain images)', { layers: ['gzip'], curl: true }, { path: 'streamed', transport: SINGLE, bound: 1024 * MiB }],
  ])('%s', (_name, over, expected) => {
    expect(route(facts(over))).toEqual(expected);
  });

  test.each<[string, Over, Route]>([
    ['cheap requests: read in place', { latencyMs: 1, chunkMs: 4, tuning: AUTO }, { path: 'nbd', qemuFormat: 'qcow2' }],
    ['dear requests: scratch filled by curl, then converted', { latencyMs: 6, chunkMs: 20, curl: true, tuning: AUTO }, { path: 'scratch', qemuFormat: 'qcow2', fill: CURL, bound: scratchBound(512 * MiB) }],
    ['cheap for node, dear through nbdkit: scratch filled by curl', { latencyMs: 1, chunkMs: 4, nbdReadMs: 24, curl: true, tuning: AUTO }, { path: 'scratch', qemuFormat: 'qcow2', fill: CURL, bound: scratchBound(512 * MiB) }],
    ['cheap through nbdkit: read in place', { latencyMs: 1, chunkMs: 4, nbdReadMs: 4, curl: true, tuning: AUTO }, { path: 'nbd', qemuFormat: 'qcow2' }],
    ['no Range: scratch filled by curl', { ranged: false, nbdReadable: false, curl: true }, { path: 'scratch', qemuFormat: 'qcow2', fill: CURL, bound: scratchBound(512 * MiB) }],
    ['compressed: node decodes into scratch', { layers: ['gzip'], curl: true }, { path: 'scratch', qemuFormat: 'qcow2', fill: SINGLE, bound: scratchBound(512 * MiB) }],
  ])('qcow2, %s', (_name, over, expected) => {
    expect(route(facts({ format: 'qcow2', declaredSize: 512n * BigInt(MiB), ...over }))).toEqual(expected);
  });

  test('the thresholds are the tuning\'s: a chunk read at exactly nbdMaxChunkMs still reads in place', () => {
    expect(route(facts({ size: BIG, latencyMs: 1, chunkMs: 6, tuning: { ...AUTO, nbdMaxChunkMs: 6 } }))).toEqual({ path: 'nbd', qemuFormat: 'raw' });
    expect(route(facts({ size: BIG, latencyMs: 1, chunkMs: 6.1, curl: true, tuning: { ...AUTO, nbdMaxChunkMs: 6 } }))).toEqual({ path: 'streamed', transport: CURL, bound: 1024 * MiB });
  });
});

describe('wantsNbdReads: reads through the export are timed only where the route says nbd on measured costs', () => {
  const AUTO = { connections: 'auto' as const };
  test.each<[string, Over, boolean]>([
    ['nbd on measured costs', { size: BIG, latencyMs: 1, chunkMs: 4, tuning: AUTO }, true],
    ['nbd, already timed', { size: BIG, latencyMs: 1, chunkMs: 4, nbdReadMs: 3, tuning: AUTO }, false],
    ['nbd with --connections 1 (nothing measured): the user chose it', { size: BIG }, false],
    ['nbd, timing turned off (nbdProbeReads 0)', { size: BIG, latencyMs: 1, chunkMs: 4, tuning: { ...AUTO, nbdProbeReads: 0 } }, false],
    ['not nbd (far: ranges)', { size: BIG, latencyMs: 20, chunkMs: 60, tuning: AUTO }, false],
  ])('%s', (_name, over, expected) => {
    const f = facts(over);
    expect(wantsNbdReads(f, route(f))).toBe(expected);
  });

  test('the export\'s threshold is the tuning\'s nbdReadMaxMs', () => {
    expect(route(facts({ size: BIG, latencyMs: 1, chunkMs: 4, nbdReadMs: 6, tuning: { connections: 'auto', nbdReadMaxMs: 6 } }))).toEqual({ path: 'nbd', qemuFormat: 'raw' });
    expect(route(facts({ size: BIG, latencyMs: 1, chunkMs: 4, nbdReadMs: 6.1, tuning: { connections: 'auto', nbdReadMaxMs: 6 } }))).toMatchObject({ path: 'streamed' });
  });
});

describe('a request on a reused connection, timed before nbdkit is started', () => {
  const AUTO = { connections: 'auto' as const };
  // Measured with node's keep-alive agent after a one-byte and a 2 MiB request (bench/README.md, "Seventh pass").
  test.each<[string, Over, Route['path']]>([
    ['the Python Range server (41–50 ms): no nbd, the one stream', { size: BIG, latencyMs: 3, chunkMs: 7, reuseMs: 47.6, curl: true, tuning: AUTO }, 'streamed'],
    ['nginx (0.4–3 ms): nbd, the export still to be timed', { size: BIG, latencyMs: 1, chunkMs: 4, reuseMs: 0.5, curl: true, tuning: AUTO }, 'nbd'],
    ['just over reuseStallMs', { size: BIG, latencyMs: 1, chunkMs: 4, reuseMs: 20.1, curl: true, tuning: AUTO }, 'streamed'],
    ['at reuseStallMs', { size: BIG, latencyMs: 1, chunkMs: 4, reuseMs: 20, curl: true, tuning: AUTO }, 'nbd'],
    ['a qcow2 from the Python Range server: scratch', { size: BIG, format: 'qcow2' as RouteFacts['format'], declaredSize: BigInt(BIG), scratch: true, latencyMs: 3, chunkMs: 7, reuseMs: 45, curl: true, tuning: AUTO }, 'scratch'],
  ])('%s', (_name, over, path) => {
    expect(route(facts(over)).path).toBe(path);
  });
  test.each<[string, Over, boolean]>([
    ['nbd on measured costs, not timed yet', { size: BIG, latencyMs: 1, chunkMs: 4, tuning: AUTO }, true],
    ['already timed', { size: BIG, latencyMs: 1, chunkMs: 4, reuseMs: 1, tuning: AUTO }, false],
    ['nbd by --connections 1 (nothing measured)', { size: BIG }, false],
    ['not nbd (far: ranges)', { size: BIG, latencyMs: 20, chunkMs: 60, tuning: AUTO }, false],
  ])('wantsReuse: %s', (_name, over, expected) => {
    const f = facts(over);
    expect(wantsReuse(f, route(f))).toBe(expected);
  });
  test('a stalled reuse means no reads through nbdkit are timed', () => {
    const f = facts({ size: BIG, latencyMs: 3, chunkMs: 7, reuseMs: 47.6, curl: true, tuning: AUTO });
    expect(wantsNbdReads(f, route(f))).toBe(false);
  });
});

describe('nbdReadCost: the reads through the export, the opening one included', () => {
  // Measured through nbdkit 1.32 with qemu-io (bench/README.md, "Seventh pass"): the opening 4 KiB read, then 2 MiB reads.
  test.each<[string, number, number[], number, number, boolean]>([
    ['the Python Range server, four fast reads after the stalled opening one: dropped', 41.8, [3.8, 2.0, 1.9, 1.7], 4, 12.8, false],
    ['the Python Range server, a stall among the reads too', 42.1, [43.6, 2.5, 3.5, 2.9], 4, 23.65, false],
    ['nginx: kept', 0.3, [3.0, 1.9, 1.8, 1.5], 4, 2.125, true],
    ['nginx, a loaded machine: kept', 1.2, [5.4, 2.6, 2.8, 5.1], 4, 4.275, true],
    ['stopped after the opening read (the budget ran out): over the limit', 41.8, [], 4, 10.45, false],
    ['no full read asked for (an image under one chunk): the opening read alone', 2, [], 0, 2, true],
  ])('%s', (_name, openMs, readsMs, count, cost, kept) => {
    expect(nbdReadCost(openMs, readsMs, count)).toBeCloseTo(cost, 6);
    const nbdReadMs = nbdReadCost(openMs, readsMs, count);
    expect(route(facts({ size: BIG, latencyMs: 1, chunkMs: 4, nbdReadMs, tuning: { connections: 'auto' } })).path === 'nbd').toBe(kept);
  });
});

describe('route: a late, slow server that two reads at once only slow down', () => {
  test('one stream (curl), not ranges', () => {
    expect(route(facts({ size: BIG, latencyMs: 60, chunkMs: 120, pairMs: 230, curl: true, tuning: { connections: 'auto' } }))).toEqual({ path: 'streamed', transport: { kind: 'curl' }, bound: 1024 * MiB });
    expect(route(facts({ size: BIG, latencyMs: 60, chunkMs: 120, pairMs: 130, curl: true, tuning: { connections: 'auto' } }))).toMatchObject({ path: 'ranged' });
  });
});

describe('probeEnoughMs: a probe that stops at its first run within the bound decides as the fastest of three would', () => {
  const AUTO = { connections: 'auto' as const };
  const enough = probeEnoughMs({ ...TUNING, ...AUTO });
  test('the bounds are the near latency and the lower of the nbd and far chunk thresholds', () => {
    expect(enough).toEqual({ latencyMs: 5, chunkMs: 15 });
    expect(probeEnoughMs({ ...TUNING, nearLatencyMs: 2, nbdMaxChunkMs: 40, farChunkMs: 30 })).toEqual({ latencyMs: 2, chunkMs: 30 });
  });
  // A first run at the bound (or under it), against lower runs the full probe might have seen.
  const firsts = [0.5, enough.latencyMs / 2, enough.latencyMs];
  const chunkFirsts = [1, enough.chunkMs / 2, enough.chunkMs];
  const images: Over[] = [
    { size: BIG, curl: true },
    { size: BIG },
    { format: 'qcow2', declaredSize: 512n * BigInt(MiB), size: BIG, curl: true },
    { layers: ['gzip'], size: BIG },
    { layers: ['xz'], fileDecoder: 'xz', size: BIG, curl: true },
  ];
  test.each(images.map((image, i) => [i, image] as const))('image %i: route, nbd timing and the pair probe unchanged', (_i, image) => {
    for (const latency of firsts) {
      for (const chunk of chunkFirsts) {
        for (const lower of [0, 0.5]) {
          const stopped = facts({ ...image, latencyMs: latency, chunkMs: chunk, tuning: AUTO });
          const full = facts({ ...image, latencyMs: latency * lower, chunkMs: chunk * lower, tuning: AUTO });
          expect(route(stopped)).toEqual(route(full));
          expect(wantsNbdReads(stopped, route(stopped))).toBe(wantsNbdReads(full, route(full)));
          expect(autoConnectionsFor(latency, stopped.tuning, chunk)).toBe(autoConnectionsFor(latency * lower, full.tuning, chunk * lower));
        }
      }
    }
  });
  test('warmLatencyMs stops at the first run within enoughMs, else keeps the fastest of its runs', async () => {
    // performance.now() is real; a probe that waits its time is what a request is.
    const waiting = (times: number[]) => {
      let i = 0;
      return {
        probe: () => new Promise<void>((resolve) => setTimeout(resolve, times[i++] ?? 0)),
        count: () => i,
      };
    };
    const quick = waiting([1, 60, 60]);
    expect(await warmLatencyMs(quick.probe, 3, 30)).toBeLessThan(30);
    expect(quick.count()).toBe(1);
    const slow = waiting([80, 45, 70]);
    const best = await warmLatencyMs(slow.probe, 3, 30);
    expect(slow.count()).toBe(3);
    expect(best).toBeGreaterThanOrEqual(44);
    expect(best).toBeLessThan(70);
    const unbounded = waiting([0, 0, 0]);
    await warmLatencyMs(unbounded.probe, 3);
    expect(unbounded.count()).toBe(3);
  });

  test('a latency past the bound is not within it: the probe goes on (a far server may still get ranges)', () => {
    const far = facts({ size: BIG, latencyMs: enough.latencyMs + 15, chunkMs: 60, curl: true, tuning: AUTO });
    expect(route(far)).toMatchObject({ path: 'ranged' });
  });
});
