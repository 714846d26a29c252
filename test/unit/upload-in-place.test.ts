/**
 * ADR 0010, "Raw uploads in place" and "Which file is resumed": the pure decisions (where a
 * resumable upload's bytes go, whether a request may go on with what is staged), the record's
 * codec with its mode and fingerprint, the Upload-Metadata codec and the client's fingerprint.
 */

import { afterAll, describe, expect, test } from '@jest/globals';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { encodeUploadMetadata, fingerprintOf } from '../../src/contract/upload-api.js';
import { inPlaceVerdict } from '../../importer/upload-server-in-place.js';
import { decodeStageRecord, encodeStageRecord, sameUpload } from '../../importer/upload-server-resumable.js';
import { fileFingerprint, fingerprintFrom, FINGERPRINT_SAMPLE_BYTES } from '../../cli/upload/client.js';
import { removeDir, tempDir } from '../helpers/fixtures.js';

const dir = tempDir('ferry-upload-in-place-');
afterAll(() => removeDir(dir));

const MiB = 1024 * 1024;
const rawHead = Buffer.alloc(512, 0xab);
const qcow2Head = Buffer.concat([Buffer.from('QFI\xfb', 'latin1'), Buffer.from([0, 0, 0, 3]), Buffer.alloc(504)]);
const xzHead = Buffer.concat([Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]), Buffer.alloc(506)]);
const tarHead = Buffer.alloc(512);
tarHead.write('ustar', 257, 'latin1');

describe('inPlaceVerdict: where a resumable upload\'s bytes go', () => {
  test.each<[string, Parameters<typeof inPlaceVerdict>[0], string]>([
    ['a raw image into a disk: in place', { contentType: 'kubevirt', head: rawHead, length: 8 * MiB, usable: 8 * MiB }, 'in-place'],
    ['raw, no capacity known: in place', { contentType: 'kubevirt', head: rawHead, length: 8 * MiB }, 'in-place'],
    ['raw, one fixed-VHD footer too large: in place (the footer is cut at the end, the size checked again)', { contentType: 'kubevirt', head: rawHead, length: 8 * MiB + 512, usable: 8 * MiB }, 'in-place'],
    ['raw, larger than the volume: refused before a byte is written', { contentType: 'kubevirt', head: rawHead, length: 8 * MiB + 513, usable: 8 * MiB }, 'refused'],
    ['qcow2: staged (converted)', { contentType: 'kubevirt', head: qcow2Head, length: 8 * MiB, usable: MiB }, 'staged'],
    ['xz: staged (decoded)', { contentType: 'kubevirt', head: xzHead, length: 8 * MiB }, 'staged'],
    ['a tar into a disk: staged (the engine refuses it)', { contentType: 'kubevirt', head: tarHead, length: 8 * MiB }, 'staged'],
    ['an archive target: staged (extracted)', { contentType: 'archive', head: rawHead, length: 8 * MiB }, 'staged'],
  ])('%s', (_what, facts, kind) => {
    expect(inPlaceVerdict(facts).kind).toBe(kind);
  });

  test('the refusal is TARGET_TOO_SMALL with sizes (the server answers CDI\'s 400 from it)', () => {
    const verdict = inPlaceVerdict({ contentType: 'kubevirt', head: rawHead, length: 20 * MiB, usable: 8 * MiB });
    expect(verdict).toMatchObject({ kind: 'refused', error: { code: 'TARGET_TOO_SMALL', details: { size: 20 * MiB, usable: 8 * MiB } } });
  });
});

describe('the durable-offset record with its mode and fingerprint', () => {
  test.each([
    [{ offset: 6, length: 20 }],
    [{ offset: 6, length: 20, mode: 'in-place' as const }],
    [{ offset: 20, length: 20, mode: 'in-place' as const, fingerprint: 'v1:20:abc' }],
    [{ offset: 0, length: 20, fingerprint: 'v1:20:abc' }],
  ])('round trip %j', (record) => {
    expect(decodeStageRecord(encodeStageRecord(record))).toEqual(record);
  });

  test.each(['{"offset":6,"length":20,"mode":"elsewhere"}', '{"offset":6,"length":20,"fingerprint":7}'])('refused: %s', (text) => {
    expect(decodeStageRecord(text)).toBeUndefined();
  });
});

describe('sameUpload: a staged upload goes on only with the fingerprint it started with', () => {
  test.each<[string, Parameters<typeof sameUpload>[0], string | undefined, boolean]>([
    ['nothing staged: anyone starts', { kind: 'empty' }, 'v1:1:a', true],
    ['the same file', { kind: 'staging', offset: 4, length: 10, writing: false, fingerprint: 'v1:10:a' }, 'v1:10:a', true],
    ['another file of the same length', { kind: 'staging', offset: 4, length: 10, writing: false, fingerprint: 'v1:10:a' }, 'v1:10:b', false],
    ['a client that sends none, for an upload that has one', { kind: 'staging', offset: 4, length: 10, writing: false, fingerprint: 'v1:10:a' }, undefined, false],
    ['one that sends one, for an upload started without', { kind: 'staging', offset: 4, length: 10, writing: false }, 'v1:10:a', false],
    ['neither has one (another tus client)', { kind: 'staging', offset: 4, length: 10, writing: false }, undefined, true],
    ['staged whole, another file', { kind: 'staged', length: 10, fingerprint: 'v1:10:a' }, 'v1:10:b', false],
  ])('%s', (_what, state, fingerprint, same) => {
    expect(sameUpload(state, fingerprint)).toBe(same);
  });
});

describe('Upload-Metadata: the fingerprint travels as tus metadata', () => {
  test('round trip, among other keys', () => {
    expect(fingerprintOf(encodeUploadMetadata({ fingerprint: 'v1:10:abcdef' }))).toBe('v1:10:abcdef');
    expect(fingerprintOf(`filename ${Buffer.from('a.img').toString('base64')},${encodeUploadMetadata({ fingerprint: 'v1:10:ab' })}`)).toBe('v1:10:ab');
  });
  test.each([
    ['absent', undefined],
    ['no fingerprint key', encodeUploadMetadata({ filename: 'a.img' })],
    ['not base64', 'fingerprint !!!'],
    ['not printable once decoded', `fingerprint ${Buffer.from('a b\n').toString('base64')}`],
    ['too long', encodeUploadMetadata({ fingerprint: 'x'.repeat(201) })],
    ['repeated header', ['fingerprint YQ==', 'fingerprint Yg==']],
  ])('%s → none', (_what, header) => {
    expect(fingerprintOf(header)).toBeUndefined();
  });
});

describe('the client\'s fingerprint of a file: its size and its first and last MiB', () => {
  test('equal files agree; a change at either end or in the size differs; the middle is not read', async () => {
    const size = 3 * FINGERPRINT_SAMPLE_BYTES;
    const base = randomBytes(size);
    const write = (name: string, bytes: Buffer): string => {
      const path = join(dir, name);
      writeFileSync(path, bytes);
      return path;
    };
    const a = await fileFingerprint(write('a', base), size);
    expect(await fileFingerprint(write('a2', Buffer.from(base)), size)).toBe(a);
    expect(a).toMatch(/^v1:3145728:[0-9a-f]{64}$/);
    const head = Buffer.from(base);
    head.writeUInt8(head.readUInt8(10) ^ 1, 10);
    expect(await fileFingerprint(write('head', head), size)).not.toBe(a);
    const tail = Buffer.from(base);
    tail.writeUInt8(tail.readUInt8(size - 10) ^ 1, size - 10);
    expect(await fileFingerprint(write('tail', tail), size)).not.toBe(a);
    const middle = Buffer.from(base);
    middle.writeUInt8(middle.readUInt8(size / 2) ^ 1, size / 2);
    expect(await fileFingerprint(write('middle', middle), size)).toBe(a);
    expect(fingerprintOf(encodeUploadMetadata({ fingerprint: a }))).toBe(a);
  });

  test('a file smaller than the two samples is hashed once, whole', async () => {
    const bytes = randomBytes(1000);
    const path = join(dir, 'small');
    writeFileSync(path, bytes);
    expect(await fileFingerprint(path, 1000)).toBe(fingerprintFrom(1000, bytes, Buffer.alloc(0)));
  });
});
