/**
 * qemu-img as a child process: argument arrays only, the format always given (`-f`, never probed),
 * a timeout on `info`, progress parsed from `-p`, and the tail of stderr kept for the error message.
 * Before `qemu-img info` opens an image with its format driver, the structures that can name other
 * files are read as plain bytes and checked (image-header.ts `checkLayout`).
 */

import { spawn } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { dirname, isAbsolute, join } from 'node:path';
import { ErrorCode, FerryError } from '../src/errors.js';
import { checkLayout, type ReadAt } from './image-header.js';
import { formatOfQemuName, QEMU_INPUT_FORMATS } from './sniff.js';

export interface ImageInfo {
  readonly format: string;
  readonly virtualSize: number;
  readonly backingFilename?: string;
  readonly dataFile?: string;
  /** Files a VMDK reads its extents from. */
  readonly extentFiles: readonly string[];
  /** A VMDK's parent CID; 0xffffffff (or absent) means it has no parent. */
  readonly parentCid?: number;
  readonly filename: string;
}

interface RunResult {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
  readonly timedOut: boolean;
}

interface RunOptions {
  readonly timeoutMs?: number;
  readonly onStdout?: (text: string) => void;
  readonly signal?: AbortSignal;
}

const STDERR_TAIL = 4096;

function run(args: readonly string[], options: RunOptions = {}, program: 'qemu-img' | 'qemu-io' = 'qemu-img'): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'], ...(options.signal ? { signal: options.signal } : {}) });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      if (options.onStdout) options.onStdout(d);
      else stdout += d;
    });
    child.stderr.on('data', (d: string) => {
      stderr = (stderr + d).slice(-STDERR_TAIL);
    });
    const timer = options.timeoutMs === undefined ? undefined : setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, options.timeoutMs);
    child.once('error', (err) => {
      if (timer) clearTimeout(timer);
      reject(new FerryError(ErrorCode.Internal, `cannot run ${program}: ${err.message}`, { cause: err }));
    });
    child.once('close', (code) => {
      if (timer) clearTimeout(timer);
      resolve({ code, stdout, stderr: stderr.trim(), timedOut });
    });
  });
}

/**
 * Paths handed to qemu-img must be absolute so no name can be read as `json:` or `proto:`; the one
 * URI allowed is the NBD socket Ferry itself started (nbd+unix:///?socket=/abs/path).
 */
function safePath(path: string): string {
  if (isAbsolute(path)) return path;
  if (/^nbd\+unix:\/\/\/\?socket=\/[^&?#]+$/.test(path)) return path;
  throw new FerryError(ErrorCode.Internal, `qemu-img path must be absolute: ${path}`);
}

/**
 * The image argument for the commands that read guest data (check, convert). A qcow2 is opened as
 * `json:{"driver":"qcow2","backing":null,…}`: qemu then never opens a backing file, whatever the
 * header it reads says. The header was checked before, but through nbdkit every read is a new HTTP
 * request, and a server can answer qemu-img's reads with other bytes than Ferry's own check saw.
 */
export function dataImageArg(path: string, format: string): { readonly args: readonly string[] } {
  const image = safePath(path);
  if (formatArg(format) !== 'qcow2') return { args: ['-f', format, image] };
  const socket = /^nbd\+unix:\/\/\/\?socket=(.+)$/.exec(image)?.[1];
  const file = socket !== undefined ? { driver: 'nbd', server: { type: 'unix', path: socket } } : { driver: 'file', filename: image };
  return { args: [`json:${JSON.stringify({ driver: 'qcow2', backing: null, file })}`] };
}

/** The `-f` argument: only a format Ferry reads, so qemu-img never probes and never sees another driver. */
function formatArg(format: string): string {
  if (!QEMU_INPUT_FORMATS.has(format)) throw new FerryError(ErrorCode.Internal, `qemu-img is not given format "${format}"`);
  return format;
}

/**
 * `qemu-img info` on an untrusted image, with the format forced (no probing) and a time limit.
 * First the parts of the image that can name other files beyond the sniffed head are read as
 * plain bytes and checked, so a refused image is never opened by qemu's format driver.
 */
export async function qemuInfo(path: string, format: string, timeoutMs = 30_000, signal?: AbortSignal): Promise<ImageInfo> {
  const known = formatOfQemuName(formatArg(format));
  const image = safePath(path);
  if (known !== undefined) await withReader(image, timeoutMs, (read) => checkLayout(known, read));
  const result = await run(['info', '--output=json', '-f', format, image], { timeoutMs, ...(signal ? { signal } : {}) });
  if (result.timedOut) throw new FerryError(ErrorCode.InvalidImage, `qemu-img info did not finish within ${timeoutMs} ms`);
  if (result.code !== 0) {
    throw new FerryError(ErrorCode.InvalidImage, `not a valid ${format} image: ${result.stderr || `qemu-img exit ${result.code}`}`);
  }
  return parseInfo(result.stdout);
}

/**
 * `qemu-img check` for the formats that have one: a truncated or damaged qcow2 otherwise converts
 * "successfully" into zeros. Leaked clusters (exit 3) are harmless; exit 63 means no check exists.
 */
export async function qemuCheck(path: string, format: string, timeoutMs = 120_000, signal?: AbortSignal): Promise<void> {
  const result = await run(['check', '--output=json', ...dataImageArg(path, format).args], { timeoutMs, ...(signal ? { signal } : {}) });
  if (result.timedOut) throw new FerryError(ErrorCode.InvalidImage, `qemu-img check did not finish within ${timeoutMs} ms`);
  if (result.code === 0 || result.code === 3 || result.code === 63) return;
  let corruptions = 'unknown';
  try {
    corruptions = String((JSON.parse(result.stdout) as { corruptions?: number }).corruptions ?? 'unknown');
  } catch {
    // check failed before it could report
  }
  throw new FerryError(ErrorCode.InvalidImage, `the ${format} image is corrupt or truncated (qemu-img check: ${corruptions} corruptions; ${lastLine(result.stderr)})`);
}

function lastLine(text: string): string {
  return text.split('\n').filter((l) => l.trim() !== '').at(-1) ?? 'no detail';
}

/**
 * Runs `fn` with random access to the staged image as plain bytes: a local file through node, the
 * NBD export Ferry started through `qemu-io -f raw` (the raw driver reads bytes and opens nothing
 * else). A read past the end of an NBD export fails, and the image is then INVALID_IMAGE.
 */
async function withReader<T>(image: string, timeoutMs: number, fn: (read: ReadAt) => Promise<T>): Promise<T> {
  if (isAbsolute(image)) {
    const handle = await open(image, 'r');
    try {
      return await fn(async (offset, length) => {
        const buffer = Buffer.alloc(length);
        const { bytesRead } = await handle.read(buffer, 0, length, offset);
        return buffer.subarray(0, bytesRead);
      });
    } finally {
      await handle.close();
    }
  }
  return fn(async (offset, length) => {
    const result = await run(['-r', '-f', 'raw', '-c', `read -v ${offset} ${length}`, image], { timeoutMs }, 'qemu-io');
    if (result.timedOut) throw new FerryError(ErrorCode.InvalidImage, `reading the image header did not finish within ${timeoutMs} ms`);
    if (result.code !== 0 || /^read failed/m.test(`${result.stderr}\n${result.stdout}`)) {
      throw new FerryError(ErrorCode.InvalidImage, `cannot read ${length} bytes at ${offset} of the image (truncated?): ${lastLine(result.stderr || result.stdout)}`);
    }
    return parseHexDump(result.stdout, offset, length);
  });
}

/** What `timeNbdReads` measured, in milliseconds. */
export interface NbdReadTimes {
  /** The 4 KiB read that opens the connection: nbdkit's second request to the server, after its size request. */
  readonly openMs: number;
  /** Each read of `chunkBytes`, in order; fewer than asked when the budget ran out. */
  readonly readsMs: number[];
}

/**
 * Times `count` reads of `chunkBytes`, one after another from offset 0, through the NBD export
 * Ferry started (qemu-io, raw driver, read-only), after one 4 KiB read that opens the connection:
 * what each of qemu-img's requests will cost through nbdkit.
 *
 * qemu-io runs interactively, one command at a time, so the timing stops once the reads so far,
 * the opening one included, take more than `count × maxMeanMs`: `nbdReadCost` is then past
 * `maxMeanMs` whatever the rest would take (bench/README.md, "Sixth pass" and "Seventh pass").
 */
export async function timeNbdReads(uri: string, chunkBytes: number, count: number, timeoutMs = 10_000, signal?: AbortSignal, maxMeanMs = Infinity): Promise<NbdReadTimes> {
  const image = safePath(uri);
  const commands = ['read 0 4096', ...Array.from({ length: count }, (_, i) => `read ${i * chunkBytes} ${chunkBytes}`)];
  const child = spawn('qemu-io', ['-r', '-f', 'raw', image], { stdio: ['pipe', 'pipe', 'pipe'], ...(signal ? { signal } : {}) });
  child.stdin.on('error', () => undefined); // a qemu-io that exits early closes its end; its exit says why
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8');
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (d: string) => {
    stderr = (stderr + d).slice(-STDERR_TAIL);
  });
  const times: number[] = [];
  let openMs: number | undefined;
  const outcome = new Promise<'done' | 'exited' | 'timeout'>((resolve, reject) => {
    const timer = setTimeout(() => resolve('timeout'), timeoutMs);
    let sent = 0;
    const next = (): void => {
      const budget = count * maxMeanMs;
      if (sent >= commands.length || (openMs !== undefined && times.reduce((a, b) => a + b, openMs) > budget)) {
        clearTimeout(timer);
        resolve('done');
        return;
      }
      child.stdin.write(`${commands[sent]}\n`);
      sent += 1;
    };
    child.stdout.on('data', (d: string) => {
      stdout += d;
      // Each command's report ends with the next prompt.
      for (let at = stdout.indexOf(PROMPT); at >= 0; at = stdout.indexOf(PROMPT)) {
        const report = stdout.slice(0, at);
        stdout = stdout.slice(at + PROMPT.length);
        if (/^read failed/m.test(report)) {
          clearTimeout(timer);
          reject(new FerryError(ErrorCode.SourceUnavailable, `cannot read through nbdkit: ${lastLine(report)}`));
          return;
        }
        // The first prompt comes before any command.
        if (sent > 0) {
          const measured = parseReadTimes(report);
          if (measured.length !== 1) {
            clearTimeout(timer);
            reject(new FerryError(ErrorCode.Internal, `qemu-io's report of a read is not understood: ${lastLine(report)}`));
            return;
          }
          if (sent > 1) times.push(...measured);
          else openMs = measured[0];
        }
        next();
      }
    });
    child.once('error', (err) => {
      clearTimeout(timer);
      reject(new FerryError(ErrorCode.Internal, `cannot run qemu-io: ${err.message}`, { cause: err }));
    });
    child.once('close', () => {
      clearTimeout(timer);
      resolve('exited');
    });
  });
  const exited = new Promise<void>((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('close', () => resolve())));
  try {
    const how = await outcome;
    if (how === 'timeout') throw new FerryError(ErrorCode.SourceUnavailable, `${count} reads through nbdkit did not finish within ${timeoutMs} ms`);
    if (how === 'exited') throw new FerryError(ErrorCode.SourceUnavailable, `cannot read through nbdkit: ${lastLine(stderr || stdout) || 'qemu-io exited'}`);
    if (openMs === undefined) throw new FerryError(ErrorCode.Internal, 'qemu-io reported no read');
    return { openMs, readsMs: times };
  } finally {
    child.stdin.end('quit\n');
    const killer = setTimeout(() => child.kill('SIGKILL'), 2000);
    await exited;
    clearTimeout(killer);
  }
}

/** What qemu-io prints when it waits for the next command. */
const PROMPT = 'qemu-io> ';

/**
 * Pure: each read's milliseconds from qemu-io's reports ("2 MiB, 1 ops; 00.00 sec (435.222 MiB/sec
 * and 217.6109 ops/sec)"): the ops/sec figure, since the seconds are printed to 10 ms only.
 */
export function parseReadTimes(text: string): number[] {
  const times: number[] = [];
  for (const m of text.matchAll(/^\S+ \S+, (\d+) ops; [\d:.]+ sec \([\d.]+ \S+ and ([\d.]+|inf) ops\/sec\)$/gm)) {
    const ops = Number(m[1]);
    const rate = m[2] === 'inf' ? Infinity : Number(m[2]);
    times.push(rate > 0 ? (1000 * ops) / rate : Infinity);
  }
  return times;
}

/**
 * Pure: the bytes of a `qemu-io -c 'read -v OFFSET LENGTH'` dump ("0000c000:  4b 44 … 00  KD…"),
 * checked to start at `offset`, run on without gaps and hold exactly `length` bytes.
 */
export function parseHexDump(text: string, offset: number, length: number): Buffer {
  const bytes: number[] = [];
  for (const line of text.split('\n')) {
    const m = /^([0-9a-f]{8,16}):  ((?:[0-9a-f]{2} ){1,16}) /.exec(line);
    if (!m) continue;
    if (parseInt(m[1] ?? '', 16) !== offset + bytes.length) throw new FerryError(ErrorCode.Internal, 'qemu-io dump is out of order');
    for (const pair of (m[2] ?? '').trim().split(' ')) bytes.push(parseInt(pair, 16));
  }
  if (bytes.length !== length) throw new FerryError(ErrorCode.Internal, `qemu-io dumped ${bytes.length} bytes, not ${length}`);
  return Buffer.from(bytes);
}

/** Pure: qemu-img's JSON to the fields Ferry checks. */
export function parseInfo(json: string): ImageInfo {
  const o = JSON.parse(json) as Record<string, unknown>;
  const specific = (o['format-specific'] as { data?: Record<string, unknown> } | undefined)?.data ?? {};
  const extents = Array.isArray(specific.extents) ? (specific.extents as Array<{ filename?: unknown }>) : [];
  const backing = o['backing-filename'] ?? o['full-backing-filename'];
  const dataFile = specific['data-file'];
  const parentCid = specific['parent-cid'];
  return {
    format: String(o.format ?? ''),
    virtualSize: Number(o['virtual-size'] ?? 0),
    filename: String(o.filename ?? ''),
    extentFiles: extents.map((e) => String(e.filename ?? '')),
    ...(typeof backing === 'string' ? { backingFilename: backing } : {}),
    ...(typeof dataFile === 'string' ? { dataFile } : {}),
    ...(typeof parentCid === 'number' ? { parentCid } : {}),
  };
}

/** A VMDK parent CID meaning "no parent". */
const NO_PARENT_CID = 0xffffffff;

/**
 * Pure: refuses images that refer to other files or do not fit. `usable` undefined means the
 * target takes the image's own size.
 */
export function checkInfo(info: ImageInfo, expectedFormat: string, usable: number | undefined): void {
  if (info.format !== expectedFormat) {
    throw new FerryError(ErrorCode.InvalidImage, `the header says ${expectedFormat} but qemu-img reads ${info.format || 'nothing'}`);
  }
  if (info.backingFilename !== undefined) {
    throw new FerryError(ErrorCode.BackingFile, `the image has a backing file (${truncate(info.backingFilename)}); only self-contained images are imported`);
  }
  if (info.dataFile !== undefined) {
    throw new FerryError(ErrorCode.BackingFile, `the image keeps its data in an external file (${truncate(info.dataFile)})`);
  }
  if (info.parentCid !== undefined && info.parentCid !== NO_PARENT_CID) {
    throw new FerryError(ErrorCode.BackingFile, `the VMDK is a child disk (parent CID ${info.parentCid.toString(16)}); only self-contained images are imported`);
  }
  const foreign = info.extentFiles.find((f) => f !== info.filename);
  if (foreign !== undefined) {
    throw new FerryError(ErrorCode.BackingFile, `the VMDK reads an extent from another file (${truncate(foreign)})`);
  }
  if (!Number.isSafeInteger(info.virtualSize) || info.virtualSize <= 0) {
    throw new FerryError(ErrorCode.InvalidImage, `the image reports an invalid virtual size (${info.virtualSize})`);
  }
  if (usable !== undefined && info.virtualSize > usable) {
    throw new FerryError(
      ErrorCode.TargetTooSmall,
      `virtual size ${info.virtualSize} is larger than the usable target capacity ${usable}; a larger volume is required`,
      { details: { virtualSize: info.virtualSize, usable } },
    );
  }
}

function truncate(text: string): string {
  return text.length > 200 ? `${text.slice(0, 200)}…` : text;
}

/** Pure: the last percentage in a chunk of `qemu-img convert -p` output, e.g. "(42.17/100%)". */
export function parseConvertProgress(text: string): number | undefined {
  let last: number | undefined;
  for (const m of text.matchAll(/\((\d{1,3}(?:\.\d+)?)\/100%\)/g)) last = Number(m[1]);
  return last;
}

/**
 * Whether writes to `target` can bypass the page cache (O_DIRECT). qemu-img then writes with
 * `-t none`, so converting a large image does not fill the pod's memory with dirty pages; tmpfs
 * and some network filesystems refuse O_DIRECT, and those keep `-t writeback`.
 */
export async function supportsDirectIo(target: string, isDevice: boolean): Promise<boolean> {
  const probe = isDevice ? target : join(dirname(target), `.ferry-odirect-${process.pid}`);
  try {
    // O_EXCL|O_NOFOLLOW: a link planted at the probe's name is never followed.
    const flags = fsConstants.O_DIRECT | (isDevice ? fsConstants.O_RDONLY : fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW | fsConstants.O_WRONLY);
    const handle = await open(probe, flags, 0o600);
    await handle.close();
    return true;
  } catch {
    return false;
  } finally {
    if (!isDevice) await rm(probe, { force: true });
  }
}

export interface ConvertOptions {
  readonly source: string;
  readonly sourceFormat: string;
  readonly target: string;
  /** The target exists and must not be recreated (a block device). */
  readonly targetExists: boolean;
  /** qemu-img's cache mode for the target: `none` (O_DIRECT) or `writeback`. */
  readonly cacheMode?: 'none' | 'writeback';
  readonly onProgress?: (percent: number) => void;
  readonly signal?: AbortSignal;
}

export async function qemuConvert(options: ConvertOptions): Promise<void> {
  const args = ['convert', '-p', '-t', options.cacheMode ?? 'writeback', '-O', 'raw'];
  if (options.targetExists) args.push('-n');
  args.push(...dataImageArg(options.source, options.sourceFormat).args, safePath(options.target));
  let pending = '';
  const result = await run(args, {
    ...(options.signal ? { signal: options.signal } : {}),
    onStdout: (text) => {
      pending = (pending + text).slice(-64);
      const percent = parseConvertProgress(pending);
      if (percent !== undefined) options.onProgress?.(percent);
    },
  });
  if (result.code !== 0) {
    const code = /No space left on device/i.test(result.stderr) ? ErrorCode.NoSpace : ErrorCode.ConvertFailed;
    throw new FerryError(code, `qemu-img convert failed: ${result.stderr || `exit ${result.code}`}`);
  }
}
