/**
 * Test images generated on the spot with the real tools (qemu-img, qemu-io, gzip, xz, zstd,
 * bzip2, tar, tar-stream). Nothing is downloaded or committed.
 */

import { execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, lstatSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import tar from 'tar-stream';

export const MiB = 1024 * 1024;

export function sh(command: string, args: readonly string[], options: { cwd?: string; input?: Buffer } = {}): Buffer {
  return execFileSync(command, args, { cwd: options.cwd, input: options.input, stdio: ['pipe', 'pipe', 'pipe'], maxBuffer: 256 * MiB });
}

export function tempDir(prefix = 'ferry-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export function removeDir(dir: string): void {
  rmSync(dir, { recursive: true, force: true });
}

export function sha256File(path: string): string {
  return createHash('sha256').update(readFileSync(path)).digest('hex');
}

/** Size of the file and the blocks it really uses (to check sparseness). */
export function allocatedBytes(path: string): number {
  return Number(sh('stat', ['-c', '%b*%B', path]).toString().trim().split('*').reduce((a, b) => String(Number(a) * Number(b))));
}

/**
 * A small raw disk with recognisable content: a pattern at 0, random data at 3 MiB, and zeros
 * (holes) elsewhere, `size` bytes long.
 */
export function makeRawDisk(path: string, size = 8 * MiB): void {
  writeFileSync(path, '');
  sh('truncate', ['-s', String(size), path]);
  const fd = openSync(path, 'r+');
  try {
    writeSync(fd, Buffer.alloc(MiB, 0xab), 0, MiB, 0);
    writeSync(fd, randomBytes(MiB), 0, MiB, 3 * MiB);
    writeSync(fd, Buffer.from('FERRY-END-MARKER'), 0, 16, size - 512);
  } finally {
    closeSync(fd);
  }
}

/** `qemu-img convert -O <format>` of a raw file (format as qemu-img names it: vpc for VHD). */
export function convertImage(raw: string, format: string, out: string, options: string[] = []): void {
  sh('qemu-img', ['convert', '-f', 'raw', '-O', format, ...options, raw, out]);
}

export function compress(tool: 'gzip' | 'xz' | 'zstd' | 'bzip2', input: string, out: string): void {
  writeFileSync(out, sh(tool, tool === 'zstd' ? ['-c', '-q', input] : ['-c', input]));
}

/** A tar archive built entry by entry, so tests can write names no honest tar tool would. */
export async function makeTar(
  out: string,
  entries: ReadonlyArray<{ name: string; type?: 'file' | 'directory' | 'symlink' | 'link' | 'character-device' | 'fifo'; content?: string; linkname?: string; mode?: number }>,
): Promise<void> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  pack.on('data', (c: unknown) => chunks.push(c as Buffer));
  const done = new Promise<void>((resolve, reject) => {
    pack.on('end', resolve);
    pack.on('error', reject);
  });
  for (const e of entries) {
    const type = e.type ?? 'file';
    await new Promise<void>((resolve, reject) => {
      const header = {
        name: e.name,
        type,
        mode: e.mode ?? (type === 'directory' ? 0o755 : 0o644),
        ...(e.linkname !== undefined ? { linkname: e.linkname } : {}),
      };
      if (type === 'file') pack.entry(header, e.content ?? '', (err) => (err ? reject(err) : resolve()));
      else pack.entry(header, (err) => (err ? reject(err) : resolve()));
    });
  }
  pack.finalize();
  await done;
  writeFileSync(out, Buffer.concat(chunks));
}

/** The raw disk a test compares output against, padded with zeros to `size`. */
export function expectSameDisk(actualPath: string, expectedRaw: string, size?: number): boolean {
  const actual = readFileSync(actualPath);
  const expected = readFileSync(expectedRaw);
  if (size !== undefined && actual.length !== size) return false;
  if (actual.length < expected.length) return false;
  if (!actual.subarray(0, expected.length).equals(expected)) return false;
  return actual.subarray(expected.length).every((b) => b === 0);
}

/** Every name under `root` but `skip`, with what lstat says of it (and a file's bytes): any change outside `skip` shows here. */
export function treeSnapshot(root: string, skip: string): string[] {
  const out: string[] = [];
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir).sort()) {
      const p = join(dir, name);
      if (p === skip) continue;
      const st = lstatSync(p);
      const what = st.isSymbolicLink() ? `-> ${readlinkSync(p)}` : st.isFile() ? `file ${readFileSync(p, 'hex')}` : st.isDirectory() ? 'dir' : 'other';
      out.push(`${relative(root, p)} ${what} ${st.mode} ${st.nlink} ${st.mtimeMs} ${st.ino}`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(root);
  return out;
}
