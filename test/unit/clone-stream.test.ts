/** The clone stream codec: round trips, and every malformed stream refused with its fault and code. */

import { describe, expect, test } from '@jest/globals';
import { createHash } from 'node:crypto';
import { crc32 } from 'node:zlib';
import {
  CloneStreamDecoder,
  CloneStreamEncoder,
  CloneStreamError,
  CloneStreamFault,
  type CloneEvent,
  type CloneHeader,
  decodeCloneStream,
  decodeHeader,
  encodeHeader,
  HEADER_BYTES,
  MAX_DATA_RECORD,
} from '../../src/contract/clone-stream.js';
import { cloneClientName, decodeCloneSourceEnv, decodeCloneTargetEnv, encodeCloneSourceEnv, sourceOf } from '../../src/contract/clone-env.js';
import { parseQemuImgMap, splitZeros } from '../../clone/disk-extents.js';
import { ReadBuffers } from '../../clone/source.js';
import { checkFits, checkKinds } from '../../clone/target-writer.js';

const disk: CloneHeader = { kind: 'fs', size: 1 << 20, blockSize: 4096 };

async function* chunks(buffers: readonly Buffer[], pieceSize?: number): AsyncGenerator<Buffer> {
  const all = Buffer.concat(buffers);
  const step = pieceSize ?? all.length;
  for (let at = 0; at < all.length; at += step) yield all.subarray(at, at + step);
}

async function decodeAll(buffers: readonly Buffer[], pieceSize?: number): Promise<CloneEvent[]> {
  const out: CloneEvent[] = [];
  for await (const ev of decodeCloneStream(chunks(buffers, pieceSize))) out.push(ev);
  return out;
}

async function faultOf(buffers: readonly Buffer[]): Promise<{ fault: string; code: string }> {
  try {
    await decodeAll(buffers);
  } catch (err) {
    expect(err).toBeInstanceOf(CloneStreamError);
    return { fault: (err as CloneStreamError).fault, code: (err as CloneStreamError).code };
  }
  throw new Error('the stream was accepted');
}

/** The logical disk a decoded stream describes. */
function assemble(events: readonly CloneEvent[], size: number): Buffer {
  const out = Buffer.alloc(size);
  for (const ev of events) if (ev.type === 'data') ev.bytes.copy(out, ev.offset);
  return out;
}

function sample(): { buffers: Buffer[]; content: Buffer } {
  const content = Buffer.alloc(disk.size);
  const a = Buffer.alloc(8192, 0xab);
  const b = createHash('sha512').update('x').digest();
  a.copy(content, 4096);
  b.copy(content, 65536);
  const e = new CloneStreamEncoder(disk);
  const buffers = [...e.start(), ...e.hole(0, 4096), ...e.data(4096, a), ...e.hole(12288, 65536 - 12288), ...e.data(65536, b), ...e.hole(65536 + b.length, 1000), ...e.hole(65536 + b.length + 1000, disk.size - 65536 - b.length - 1000), ...e.end()];
  return { buffers, content };
}

describe('round trip', () => {
  test('header fields survive encoding', () => {
    for (const h of [disk, { kind: 'block', size: 10 * 2 ** 30, blockSize: 512 }, { kind: 'archive', size: 0, blockSize: 1 }] as CloneHeader[]) {
      expect(decodeHeader(encodeHeader(h))).toEqual(h);
    }
  });

  test.each([undefined, 1, 7, 4096])('a disk with data and holes, read in pieces of %p bytes', async (piece) => {
    const { buffers, content } = sample();
    const events = await decodeAll(buffers, piece);
    expect(events[0]).toEqual({ type: 'header', header: disk });
    expect(events.at(-1)).toEqual({ type: 'end', dataBytes: 8192 + 64 });
    expect(assemble(events, disk.size).equals(content)).toBe(true);
    // Consecutive holes are merged into one record.
    expect(events.filter((e) => e.type === 'hole').map((e) => (e as { length: number }).length)).toEqual([4096, 65536 - 12288, disk.size - 65536 - 64]);
  });

  test('data bigger than a record is split, and the pieces reassemble', async () => {
    const size = MAX_DATA_RECORD * 2 + 100;
    const bytes = Buffer.alloc(size);
    for (let i = 0; i < size; i += 4096) bytes[i] = (i / 4096) & 0xff;
    const e = new CloneStreamEncoder({ kind: 'block', size, blockSize: 512 });
    const buffers = [...e.start(), ...e.data(0, bytes), ...e.end()];
    expect(buffers.length).toBe(1 + 3 * 2 + 2);
    const events = await decodeAll(buffers, 65536);
    expect(assemble(events, size).equals(bytes)).toBe(true);
  });

  test('an archive stream is data only, unbounded by its content size', async () => {
    const e = new CloneStreamEncoder({ kind: 'archive', size: 3, blockSize: 1 });
    const events = await decodeAll([...e.start(), ...e.data(0, Buffer.from('hello ')), ...e.data(6, Buffer.from('world')), ...e.end()]);
    expect(Buffer.concat(events.flatMap((ev) => (ev.type === 'data' ? [ev.bytes] : []))).toString()).toBe('hello world');
  });

  test('an empty disk is a header and an end record', async () => {
    const e = new CloneStreamEncoder({ kind: 'fs', size: 0, blockSize: 4096 });
    expect((await decodeAll([...e.start(), ...e.end()])).map((ev) => ev.type)).toEqual(['header', 'end']);
  });
});

describe('the encoder refuses what a target would refuse', () => {
  test.each<[string, (e: CloneStreamEncoder) => unknown, string]>([
    ['overlap', (e) => [e.data(0, Buffer.alloc(10, 1)), e.data(5, Buffer.alloc(10, 1))], CloneStreamFault.Overlap],
    ['gap', (e) => e.data(10, Buffer.alloc(10, 1)), CloneStreamFault.Gap],
    ['beyond the size', (e) => e.data(0, Buffer.alloc(disk.size + 1, 1)), CloneStreamFault.BeyondSize],
    ['ending short', (e) => [e.data(0, Buffer.alloc(10, 1)), e.end()], CloneStreamFault.Incomplete],
    ['an empty data extent', (e) => e.data(0, Buffer.alloc(0)), CloneStreamFault.BadLength],
  ])('%s', (_name, act, fault) => {
    const e = new CloneStreamEncoder(disk);
    e.start();
    expect(() => act(e)).toThrow(expect.objectContaining({ fault }) as unknown as Error);
  });
});

/** Raw records, to build streams no encoder would write. */
const data = (offset: number, bytes: Buffer): Buffer => {
  const h = Buffer.alloc(13);
  h.writeUInt8(0x44, 0);
  h.writeBigUInt64BE(BigInt(offset), 1);
  h.writeUInt32BE(bytes.length, 9);
  return Buffer.concat([h, bytes]);
};
const hole = (offset: number, length: number | bigint): Buffer => {
  const h = Buffer.alloc(17);
  h.writeUInt8(0x48, 0);
  h.writeBigUInt64BE(BigInt(offset), 1);
  h.writeBigUInt64BE(BigInt(length), 9);
  return h;
};
/** A correct end record for `body` (header and records). */
const end = (body: readonly Buffer[], dataBytes: number): Buffer => {
  const tail = Buffer.alloc(9);
  tail.writeUInt8(0x45, 0);
  tail.writeBigUInt64BE(BigInt(dataBytes), 1);
  const check = Buffer.alloc(4);
  check.writeUInt32BE(crc32(Buffer.concat([...body, tail])), 0);
  return Buffer.concat([tail, check]);
};
const small: CloneHeader = { kind: 'fs', size: 100, blockSize: 4096 };
const withEnd = (records: Buffer[], dataBytes: number): Buffer[] => {
  const body = [encodeHeader(small), ...records];
  return [...body, end(body, dataBytes)];
};

describe('malformed streams: a stable fault and code each', () => {
  const x = Buffer.alloc(50, 7);
  test.each<[string, () => Buffer[], string, string]>([
    ['bad magic', () => [Buffer.from('NOTCLONE'), Buffer.alloc(16)], CloneStreamFault.BadMagic, 'INVALID_IMAGE'],
    ['version 1 (sha256 end record)', () => [Buffer.concat([encodeHeader(small).subarray(0, 8), Buffer.from([1]), encodeHeader(small).subarray(9)])], CloneStreamFault.BadVersion, 'INVALID_IMAGE'],
    ['unknown kind', () => [Buffer.concat([encodeHeader(small).subarray(0, 9), Buffer.from([9]), encodeHeader(small).subarray(10)])], CloneStreamFault.BadHeader, 'INVALID_IMAGE'],
    ['block size not a power of two', () => {
      const h = encodeHeader(small);
      h.writeUInt32BE(3000, 12);
      return [h];
    }, CloneStreamFault.BadHeader, 'INVALID_IMAGE'],
    ['overlapping extents', () => withEnd([data(0, x), data(40, x)], 100), CloneStreamFault.Overlap, 'INVALID_IMAGE'],
    ['a gap between extents', () => withEnd([data(0, x), data(60, x)], 100), CloneStreamFault.Gap, 'INVALID_IMAGE'],
    ['an extent out of range', () => withEnd([data(0, x), data(50, x), data(100, x)], 150), CloneStreamFault.BeyondSize, 'INVALID_IMAGE'],
    ['a hole beyond the virtual size', () => withEnd([data(0, x), hole(50, 51)], 50), CloneStreamFault.BeyondSize, 'INVALID_IMAGE'],
    ['a hole of 2^64-1 bytes', () => withEnd([hole(0, 2n ** 64n - 1n)], 0), CloneStreamFault.BeyondSize, 'INVALID_IMAGE'],
    ['a data record over the limit', () => {
      const h = Buffer.alloc(13);
      h.writeUInt8(0x44, 0);
      h.writeUInt32BE(MAX_DATA_RECORD + 1, 9);
      return [encodeHeader(small), h];
    }, CloneStreamFault.BadLength, 'INVALID_IMAGE'],
    ['a zero-length hole', () => withEnd([hole(0, 0)], 0), CloneStreamFault.BadLength, 'INVALID_IMAGE'],
    ['extents short of the virtual size', () => withEnd([data(0, x)], 50), CloneStreamFault.Incomplete, 'INVALID_IMAGE'],
    ['an unknown record', () => [encodeHeader(small), Buffer.from([0x58])], CloneStreamFault.UnknownRecord, 'INVALID_IMAGE'],
    ['a wrong data count', () => withEnd([data(0, x), hole(50, 50)], 99), CloneStreamFault.CountMismatch, 'INVALID_IMAGE'],
    ['bytes after the end', () => [...withEnd([data(0, x), hole(50, 50)], 50), Buffer.from([0])], CloneStreamFault.TrailingBytes, 'INVALID_IMAGE'],
    ['a changed byte', () => {
      const s = withEnd([data(0, x), hole(50, 50)], 50);
      const changed = Buffer.concat(s);
      changed.writeUInt8(changed.readUInt8(HEADER_BYTES + 20) ^ 1, HEADER_BYTES + 20);
      return [changed];
    }, CloneStreamFault.ChecksumMismatch, 'CHECKSUM_MISMATCH'],
    ['a hole in an archive', () => {
      const h = encodeHeader({ kind: 'archive', size: 0, blockSize: 1 });
      return [h, hole(0, 10)];
    }, CloneStreamFault.HoleInArchive, 'INVALID_IMAGE'],
  ])('%s', async (_name, build, fault, code) => {
    expect(await faultOf(build())).toEqual({ fault, code });
  });

  test('a stream cut anywhere before its last byte is TRUNCATED (retryable), never complete', async () => {
    const whole = Buffer.concat(withEnd([data(0, x), hole(50, 50)], 50));
    for (let cut = 0; cut < whole.length; cut += 1) {
      const events: CloneEvent[] = [];
      let error: unknown;
      try {
        for await (const ev of decodeCloneStream(chunks([whole.subarray(0, cut)]))) events.push(ev);
      } catch (err) {
        error = err;
      }
      expect(events.some((e) => e.type === 'end')).toBe(false);
      expect(error).toMatchObject({ fault: CloneStreamFault.Truncated, code: 'TRUNCATED', retryable: true });
    }
    expect((await decodeAll([whole])).at(-1)?.type).toBe('end');
  });
});

describe('source extents', () => {
  test('qemu-img map rows become contiguous extents, neighbours of a kind merged', () => {
    const json = JSON.stringify([
      { start: 0, length: 4096, data: false, zero: true },
      { start: 4096, length: 8192, data: true, zero: false },
      { start: 12288, length: 4096, data: true, zero: false },
      { start: 16384, length: 1000, data: false, zero: true },
    ]);
    expect(parseQemuImgMap(json, 17384)).toEqual([
      { offset: 0, length: 4096, data: false },
      { offset: 4096, length: 12288, data: true },
      { offset: 16384, length: 1000, data: false },
    ]);
    expect(() => parseQemuImgMap(json, 20000)).toThrow('covers 17384 bytes of 20000');
    expect(() => parseQemuImgMap('[{"start":5,"length":1}]', 6)).toThrow('unexpected row');
  });

  test('zero runs are found per granule, aligned to the disk', () => {
    const buf = Buffer.alloc(40);
    buf[1] = 1; // granule [0,8) at disk offset 8..16 relative: the buffer starts at disk offset 4
    buf[30] = 1;
    const pieces = splitZeros(buf, 4, 8).map((p) => ({ offset: p.offset, length: p.bytes.length, zero: p.zero }));
    expect(pieces).toEqual([
      { offset: 4, length: 4, zero: false },
      { offset: 8, length: 24, zero: true },
      { offset: 32, length: 8, zero: false },
      { offset: 40, length: 4, zero: true },
    ]);
  });
});

describe('target checks', () => {
  test('TARGET_TOO_SMALL when the source is larger than the usable capacity', () => {
    expect(() => checkFits({ kind: 'fs', size: 101, blockSize: 4096 }, 100)).toThrow(expect.objectContaining({ code: 'TARGET_TOO_SMALL' }) as unknown as Error);
    expect(() => checkFits({ kind: 'fs', size: 100, blockSize: 4096 }, 100)).not.toThrow();
    expect(() => checkFits({ kind: 'fs', size: 100, blockSize: 4096 }, undefined)).not.toThrow();
  });

  test('archive only to a directory, disks to a file or device either way', () => {
    expect(() => checkKinds('archive', 'file')).toThrow(expect.objectContaining({ code: 'INVALID_SPEC' }) as unknown as Error);
    expect(() => checkKinds('fs', 'directory')).toThrow(expect.objectContaining({ code: 'INVALID_SPEC' }) as unknown as Error);
    for (const [s, t] of [['fs', 'block'], ['block', 'file'], ['fs', 'file'], ['block', 'block'], ['archive', 'directory']] as const) expect(() => checkKinds(s, t)).not.toThrow();
  });
});

describe('the pods environments', () => {
  const tls = { CLONE_CLIENT_KEY_FILE: '/tls/key', CLONE_CLIENT_CERT_FILE: '/tls/crt', CLONE_SERVER_CA_FILE: '/tls/ca' };

  test('the source round-trips, with CDI defaults for its mounts', () => {
    const config = decodeCloneSourceEnv({ ...tls, UPLOAD_URL: 'https://cdi-upload-t.ns.svc:8443' });
    expect(config).toMatchObject({ kind: 'fs', path: '/var/run/cdi/clone/source/disk.img', url: 'https://cdi-upload-t.ns.svc:8443/v1beta1/clone' });
    expect(decodeCloneSourceEnv(encodeCloneSourceEnv(config))).toEqual(config);
    const block = decodeCloneSourceEnv({ ...tls, UPLOAD_URL: 'https://t:8443/v1beta1/clone', VOLUME_MODE: 'block' });
    expect(block).toMatchObject({ kind: 'block', path: '/dev/cdi-block-volume' });
    expect(decodeCloneSourceEnv(encodeCloneSourceEnv(block))).toEqual(block);
    const archive = decodeCloneSourceEnv({ ...tls, UPLOAD_URL: 'https://t/v1beta1/clone', CLONE_CONTENT_TYPE: 'archive', MOUNT_POINT: '/src/' });
    expect(archive).toMatchObject({ kind: 'archive', path: '/src' });
    expect(decodeCloneSourceEnv(encodeCloneSourceEnv(archive))).toEqual(archive);
  });

  test.each<[string, Record<string, string>, string]>([
    ['no URL', { ...tls }, 'UPLOAD_URL is not set'],
    ['plain http', { ...tls, UPLOAD_URL: 'http://t/' }, 'must be https'],
    ['credentials in the URL', { ...tls, UPLOAD_URL: 'https://u:p@t/' }, 'must not carry credentials'],
    ['no client key', { UPLOAD_URL: 'https://t/', CLONE_CLIENT_CERT_FILE: 'c', CLONE_SERVER_CA_FILE: 'a' }, 'CLONE_CLIENT_KEY_FILE is not set'],
    ['a bad volume mode', { ...tls, UPLOAD_URL: 'https://t/', VOLUME_MODE: 'tape' }, 'VOLUME_MODE must be one of'],
    ['archive from a device', { ...tls, UPLOAD_URL: 'https://t/', VOLUME_MODE: 'block', CLONE_CONTENT_TYPE: 'archive' }, 'needs a filesystem volume'],
  ])('the source refuses %s (INVALID_SPEC)', (_name, env, message) => {
    expect(() => decodeCloneSourceEnv(env)).toThrow(expect.objectContaining({ code: 'INVALID_SPEC', message: expect.stringContaining(message) }) as unknown as Error);
  });

  test('the target needs its client name; CDI spells it source-target', () => {
    const env = { TLS_KEY_FILE: 'k', TLS_CERT_FILE: 'c', CLIENT_CERT_FILE: 'a' };
    expect(() => decodeCloneTargetEnv(env)).toThrow(expect.objectContaining({ code: 'INVALID_SPEC', message: expect.stringContaining('CLIENT_NAME') }) as unknown as Error);
    const name = cloneClientName({ namespace: 'golden', name: 'fedora' }, { namespace: 'alice', name: 'vm-disk' });
    expect(name).toBe('golden/fedora-alice/vm-disk');
    expect(decodeCloneTargetEnv({ ...env, CLIENT_NAME: name })).toMatchObject({ clientName: name, target: { kind: 'file', path: '/data/disk.img' } });
  });

  test('sourceOf: the disk file is disk.img in the mount', () => {
    expect(sourceOf('filesystem', 'kubevirt', '/')).toEqual({ kind: 'fs', path: '/disk.img' });
  });
});

describe('the push decoder', () => {
  test('events come as the bytes arrive; `end` only once the input has ended', () => {
    const { buffers, content } = sample();
    const whole = Buffer.concat(buffers);
    const events: CloneEvent[] = [];
    const decoder = new CloneStreamDecoder((ev) => events.push(ev));
    decoder.push(whole.subarray(0, HEADER_BYTES - 1));
    expect(events).toEqual([]);
    decoder.push(whole.subarray(HEADER_BYTES - 1, HEADER_BYTES + 17 + 13 + 100));
    expect(events.map((e) => e.type)).toEqual(['header', 'hole', 'data']);
    expect(events[2]).toMatchObject({ type: 'data', offset: 4096 });
    expect((events[2] as { bytes: Buffer }).bytes.length).toBe(100);
    decoder.push(whole.subarray(HEADER_BYTES + 17 + 13 + 100));
    expect(events.some((e) => e.type === 'end')).toBe(false);
    decoder.end();
    expect(events.at(-1)).toEqual({ type: 'end', dataBytes: 8192 + 64 });
    expect(assemble(events, disk.size).equals(content)).toBe(true);
  });

  test('a byte after the end record, in a later chunk, is TRAILING_BYTES', () => {
    const decoder = new CloneStreamDecoder(() => undefined);
    decoder.push(Buffer.concat(sample().buffers));
    expect(() => decoder.push(Buffer.from([0]))).toThrow(expect.objectContaining({ fault: CloneStreamFault.TrailingBytes }) as unknown as Error);
  });

  test('the iterator hands out what was decoded before a fault in the same chunk, then the fault', async () => {
    const x = Buffer.alloc(50, 7);
    const e = new CloneStreamEncoder(small);
    const good = Buffer.concat([...e.start(), ...e.data(0, x)]);
    const events: string[] = [];
    await expect((async () => {
      for await (const ev of decodeCloneStream(chunks([good, data(40, x)]))) events.push(ev.type);
    })()).rejects.toMatchObject({ fault: CloneStreamFault.Overlap });
    expect(events).toEqual(['header', 'data']);
  });
});

describe('the source\'s read buffers', () => {
  test('a buffer is handed out again only when the reader and every queued piece have let go', async () => {
    const pool = new ReadBuffers(2, 16);
    const a = await pool.take();
    const b = await pool.take();
    const pieces = [a.subarray(0, 4), a.subarray(8, 12)];
    for (const p of pieces) pool.hold(p);
    pool.release(a); // the reader is done with a; two pieces of it are still queued
    let third: Buffer | undefined;
    const waiting = pool.take().then((buf) => (third = buf));
    await Promise.resolve();
    pool.release(pieces[0] as Buffer);
    await Promise.resolve();
    expect(third).toBeUndefined();
    pool.release(pieces[1] as Buffer);
    await waiting;
    expect(third?.buffer).toBe(a.buffer);
    pool.hold(Buffer.alloc(4)); // not a pool buffer: ignored
    pool.release(b);
    expect((await pool.take()).buffer).toBe(b.buffer);
  });

  test('a failed connection wakes a reader waiting for a buffer', async () => {
    const pool = new ReadBuffers(1, 16);
    await pool.take();
    const waiting = pool.take();
    pool.fail(new Error('connection closed'));
    await expect(waiting).rejects.toThrow('connection closed');
    await expect(pool.take()).rejects.toThrow('connection closed');
  });
});
