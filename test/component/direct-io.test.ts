/**
 * O_DIRECT without a native addon (src/io/direct-io.ts), on the test machine's real filesystem
 * (the temporary directory: ext4 here and in CI) and on tmpfs (/dev/shm).
 */

import { afterAll, describe, expect, test } from '@jest/globals';
import { constants, existsSync, mkdtempSync, readFileSync, renameSync, statSync, writeFileSync } from 'node:fs';
import { type FileHandle, open } from 'node:fs/promises';
import { join } from 'node:path';
import { DIRECT_ALIGN, openDirect, readDirect, writeDirect } from '../../src/io/direct-io.js';
import { removeDir, tempDir } from '../helpers/fixtures.js';

const dir = tempDir('ferry-direct-io-');
afterAll(() => removeDir(dir));

const MiB = 1024 * 1024;

/** A new sparse file of `size` bytes, open read-write. */
async function freshFile(path: string, size: number): Promise<FileHandle> {
  const handle = await open(path, constants.O_RDWR | constants.O_CREAT | constants.O_EXCL, 0o600);
  await handle.truncate(size);
  return handle;
}

describe('direct I/O on the temporary directory\'s filesystem', () => {
  test('the buffers found are the aligned windows: a write from one works, from 16 bytes further it is EINVAL', async () => {
    const path = join(dir, 'aligned.img');
    const buffered = await freshFile(path, 8 * MiB);
    const direct = await openDirect(buffered, 2, MiB, { writeFile: join(dir, 'aligned.probe') }, true);
    expect(direct).toBeDefined();
    if (direct === undefined) return;
    expect(direct.buffers.map((b) => b.length)).toEqual([MiB, MiB]);
    expect(existsSync(join(dir, 'aligned.probe'))).toBe(false); // the probe file is gone
    const [first] = direct.buffers as [Buffer];
    first.fill(0xab);
    await expect(direct.handle.write(first, 0, DIRECT_ALIGN, 0)).resolves.toMatchObject({ bytesWritten: DIRECT_ALIGN });
    const raw = Buffer.from(first.buffer, first.byteOffset + 16, DIRECT_ALIGN + 16);
    await expect(direct.handle.write(raw, 0, DIRECT_ALIGN, DIRECT_ALIGN)).rejects.toMatchObject({ code: 'EINVAL' });
    await direct.handle.close();
    await buffered.close();
  });

  test('writeDirect writes the aligned prefix and leaves the tail; an unaligned position is left whole', async () => {
    const path = join(dir, 'prefix.img');
    const buffered = await freshFile(path, MiB);
    const direct = await openDirect(buffered, 1, 64 * 1024, { writeFile: join(dir, 'prefix.probe') }, true);
    if (direct === undefined) throw new Error('no O_DIRECT on the temporary directory');
    const buf = direct.buffers[0] as Buffer;
    for (let i = 0; i < buf.length; i += 1) buf[i] = i % 251;
    const data = buf.subarray(0, 3 * DIRECT_ALIGN + 100);
    expect(await writeDirect(direct.handle, data, 2 * DIRECT_ALIGN)).toBe(3 * DIRECT_ALIGN);
    expect(await writeDirect(direct.handle, data, 2 * DIRECT_ALIGN + 512)).toBe(0);
    await direct.handle.close();
    await buffered.close();
    const back = readFileSync(path).subarray(2 * DIRECT_ALIGN, 5 * DIRECT_ALIGN + 100);
    expect(back.subarray(0, 3 * DIRECT_ALIGN).equals(data.subarray(0, 3 * DIRECT_ALIGN))).toBe(true);
    expect(back.subarray(3 * DIRECT_ALIGN).every((b) => b === 0)).toBe(true); // the tail was not written
  });

  test('readDirect reads a file whose size is not aligned to its end, and reports what there was', async () => {
    const path = join(dir, 'odd.img');
    const content = Buffer.alloc(3 * DIRECT_ALIGN + 1234);
    for (let i = 0; i < content.length; i += 1) content[i] = (i * 7) % 256;
    writeFileSync(path, content);
    const buffered = await open(path, 'r');
    const direct = await openDirect(buffered, 1, 4 * DIRECT_ALIGN, { readAt: 0 }, false);
    if (direct === undefined) throw new Error('no O_DIRECT on the temporary directory');
    const into = direct.buffers[0] as Buffer;
    expect(await readDirect(direct.handle, into, content.length, 0)).toBe(content.length);
    expect(into.subarray(0, content.length).equals(content)).toBe(true);
    expect(await readDirect(direct.handle, into, 100, DIRECT_ALIGN + 1)).toBeUndefined(); // unaligned: the caller reads buffered
    expect(await readDirect(direct.handle, into, DIRECT_ALIGN, 3 * DIRECT_ALIGN)).toBe(1234); // the end of the file
    await direct.handle.close();
    await buffered.close();
  });

  test('the reopened handle is the same file, whatever its name says now', async () => {
    const path = join(dir, 'renamed.img');
    const buffered = await freshFile(path, MiB);
    writeFileSync(join(dir, 'other.img'), Buffer.alloc(MiB));
    renameSync(join(dir, 'other.img'), path); // the name now points at another file
    const direct = await openDirect(buffered, 1, DIRECT_ALIGN, { writeFile: join(dir, 'renamed.probe') }, true);
    if (direct === undefined) throw new Error('no O_DIRECT on the temporary directory');
    expect((await direct.handle.stat()).ino).toBe((await buffered.stat()).ino);
    expect((await direct.handle.stat()).ino).not.toBe(statSync(path).ino);
    await direct.handle.close();
    await buffered.close();
  });

  test('a probe name that exists is not overwritten: the open fails and nothing is opened', async () => {
    const path = join(dir, 'taken.img');
    const buffered = await freshFile(path, MiB);
    writeFileSync(join(dir, 'taken.probe'), 'mine');
    await expect(openDirect(buffered, 1, DIRECT_ALIGN, { writeFile: join(dir, 'taken.probe') }, true)).rejects.toMatchObject({ code: 'EEXIST' });
    expect(readFileSync(join(dir, 'taken.probe'), 'utf8')).toBe('mine');
    await buffered.close();
  });

  test('buffer sizes that are not a multiple of the alignment are refused', async () => {
    const buffered = await freshFile(join(dir, 'size.img'), 0);
    await expect(openDirect(buffered, 1, 1000, { readAt: 0 }, false)).rejects.toThrow(RangeError);
    await buffered.close();
  });
});

describe('tmpfs', () => {
  test('a file on /dev/shm: either direct buffers that work or none, never an error', async () => {
    const shm = tempDirIn('/dev/shm');
    try {
      const path = join(shm, 'disk.img');
      const buffered = await freshFile(path, MiB);
      const direct = await openDirect(buffered, 1, DIRECT_ALIGN, { writeFile: join(shm, 'disk.probe') }, true);
      if (direct !== undefined) {
        (direct.buffers[0] as Buffer).fill(1);
        expect(await writeDirect(direct.handle, direct.buffers[0] as Buffer, 0)).toBe(DIRECT_ALIGN);
        await direct.handle.close();
        expect(readFileSync(path).subarray(0, DIRECT_ALIGN).every((b) => b === 1)).toBe(true);
      }
      await buffered.close();
      expect(existsSync(join(shm, 'disk.probe'))).toBe(false);
    } finally {
      removeDir(shm);
    }
  });
});

function tempDirIn(parent: string): string {
  return mkdtempSync(join(parent, 'ferry-direct-io-'));
}
