/**
 * The import engine: open the source → (checksum, count) → peel compression → gather the facts →
 * `route` (pure, ./route.ts) → execute that route → a completed disk only under its final name.
 * Retryable failures start the attempt again; an abort stops everything and leaves nothing behind.
 */

import { randomBytes } from 'node:crypto';
import { mkdir, open, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ErrorCode, FerryError, toFerryError } from '../../src/errors.js';
import { type ImportSpec, ImportSource, TargetKind } from '../../src/contract/import-spec.js';
import type { Logger } from '../../src/logging.js';
import type { ImportSuccess } from '../../src/contract/termination.js';
import { extractArchive } from '../archive.js';
import { checkHeader } from '../image-header.js';
import { peel, type Peeled } from '../layers.js';
import { Phase, type Progress } from '../progress.js';
import { checkInfo, qemuCheck, qemuConvert, qemuInfo, supportsDirectIo } from '../qemu-img.js';
import { writeAll, writeRaw } from '../raw-writer.js';
import { loadCaBundle, proxyFor, sameOrigin } from '../sources/http-source.js';
import { serveHttpOverNbd } from '../nbdkit.js';
import { decodeToFile } from '../decode-to-file.js';
import { fetchParallelToFile, orderedRanges } from '../parallel-fetch.js';
import type { OpenedSource, SourceOpener } from '../sources/source.js';
import { type ByteStream, capped, counted, exactLength, handover, heldBackTail, verified } from '../streams.js';
import { createBlank, discardPartial, finishDisk, type PreparedTarget, prepareTarget } from '../target.js';
import { isFixedVhdFooter, VHD_FOOTER_BYTES } from '../vhd-footer.js';
import { guarded, interruption, linkedSignal, raceAbort } from './abort.js';
import { declaredSize } from './declared-size.js';
import { openerFor } from './opener.js';
import { type RangedFetch, type Route, route, type RouteFacts, tailMatters, type Transport, wantsLatency } from './route.js';
import type { ImportTuning } from './tuning.js';

export interface EngineDeps {
  readonly logger: Logger;
  readonly progress: Progress;
  readonly tuning: ImportTuning;
  readonly sleep: (ms: number) => Promise<void>;
  /**
   * Stops the import: children are killed, requests closed, every file the import made removed,
   * and runImport rejects with INTERRUPTED.
   */
  readonly signal?: AbortSignal;
}

/** Share of overall progress the transfer takes when a conversion follows it. */
const TRANSFER_SHARE_WITH_CONVERT = 50;

/** What every step of one import needs: passed as one value instead of six parameters. */
interface Run {
  readonly spec: ImportSpec;
  readonly target: PreparedTarget;
  readonly deps: EngineDeps;
  readonly log: Logger;
  readonly signal: AbortSignal;
}

/** One attempt, once the source is open and its format known. */
interface Attempt extends Run {
  readonly opened: OpenedSource;
  readonly peeled: Peeled;
  /** Ranged reads of the source, each failing INTERRUPTED on abort. */
  readonly openRange?: (start: number, end: number) => Promise<ByteStream>;
}

export async function runImport(spec: ImportSpec, deps: EngineDeps): Promise<ImportSuccess> {
  if (deps.signal?.aborted) throw interrupted();
  const linked = linkedSignal(deps.signal);
  try {
    return await importWith(spec, deps, linked.signal);
  } finally {
    linked.dispose();
  }
}

async function importWith(spec: ImportSpec, deps: EngineDeps, signal: AbortSignal): Promise<ImportSuccess> {
  const target = await prepareTarget(spec);
  const run: Run = { spec, target, deps, signal, log: deps.logger.child({ source: spec.source, target: target.path }) };
  if (spec.source === ImportSource.Blank) return importBlank(run);
  const opener = openerFor(spec, deps.tuning, deps.sleep, run.log);
  for (let attempt = 1; ; attempt += 1) {
    try {
      const result = await importOnce(run, opener);
      deps.progress.complete();
      return result;
    } catch (err) {
      const error = signal.aborted ? interrupted() : toFerryError(err);
      await discardPartial(target).catch(() => undefined);
      if (signal.aborted || !error.retryable || attempt >= deps.tuning.attempts) throw error;
      const delay = Math.min(deps.tuning.maxBackoffMs, deps.tuning.backoffMs * 2 ** (attempt - 1));
      run.log.warn({ code: error.code, attempt, retryInMs: delay }, `attempt failed, retrying: ${error.message}`);
      await raceAbort(signal, deps.sleep(delay)).catch(() => {
        throw interrupted();
      });
    }
  }
}

/** What runImport reports after an abort: the table's INTERRUPTED (retryable for the controller). */
function interrupted(): FerryError {
  return new FerryError(ErrorCode.Interrupted, 'the import was interrupted before it finished');
}

async function importBlank({ spec, target, deps }: Run): Promise<ImportSuccess> {
  try {
    await createBlank(target);
    const done = await finishDisk(target, { written: 0, preallocate: spec.preallocation });
    deps.progress.complete();
    return success({ preallocationApplied: done.preallocationApplied, diskSize: done.size, sourceFormat: 'blank' });
  } catch (err) {
    await discardPartial(target).catch(() => undefined);
    throw toFerryError(err);
  }
}

function success(fields: Partial<Omit<ImportSuccess, 'kind'>>): ImportSuccess {
  return {
    kind: 'success',
    message: 'Import Complete',
    scratchSpaceRequired: false,
    preallocationApplied: false,
    ...fields,
  };
}

function describe(peeled: Peeled): string {
  return [peeled.format, ...peeled.layers.slice().reverse()].join('+');
}

const closeStream = async (stream: ByteStream): Promise<void> => {
  await stream[Symbol.asyncIterator]().return?.();
};

async function importOnce(run: Run, opener: SourceOpener): Promise<ImportSuccess> {
  const { spec, deps, log, signal } = run;
  const opened = await raceAbort(signal, opener(), (late) => void closeStream(late.stream).catch(() => undefined));
  log.info({ from: opened.description, size: opened.size, ranges: opened.acceptsRanges }, 'source opened');
  const openRange = opened.openRange;
  const guardedRange = openRange ? async (start: number, end: number) => guarded(await raceAbort(signal, openRange(start, end), (s) => void closeStream(s).catch(() => undefined)), signal) : undefined;
  const counter = { bytes: 0 };
  const source = handover(guarded(opened.stream, signal));
  let wire: ByteStream = exactLength(source.stream, opened.size);
  if (spec.checksum) wire = verified(wire, spec.checksum);
  wire = counted(wire, counter, (n) => deps.progress.bytes(n));
  const peeled = await peel(wire, { signal });
  try {
    const attempt: Attempt = { ...run, opened, peeled, ...(guardedRange ? { openRange: guardedRange } : {}) };
    if (peeled.head.length === 0) throw new FerryError(ErrorCode.InvalidImage, 'the source is empty');
    log.info({ format: describe(peeled) }, 'format detected');
    checkHeader(peeled.format, peeled.head);
    const chosen = await chooseRoute(attempt);
    log.info({ route: chosen.path }, 'route chosen');
    const transport = 'transport' in chosen ? chosen.transport : chosen.path === 'scratch' && 'kind' in chosen.fill ? chosen.fill : undefined;
    if (transport?.kind === 'ordered-ranges' && attempt.openRange && opened.size !== undefined) {
      // The head was read on the first connection; the rest continues over ranges from there.
      const { size } = opened;
      const ranges = attempt.openRange;
      source.takeOver((offset) => orderedRanges({ ...retryOptions(deps), openRange: ranges, size, start: offset, connections: transport.connections, chunkBytes: transport.chunkBytes }));
      log.info({ connections: transport.connections, chunkBytes: transport.chunkBytes }, 'compressed image: ranged connections, read in order');
    }
    return await execute(attempt, chosen);
  } finally {
    // Whatever path ran, end the source: closes the connection and stops any decompressor child.
    await closeStream(peeled.stream).catch(() => undefined);
  }
}

/** Gathers the facts (measuring latency, reading a raw image's last bytes only where they matter) and routes. */
async function chooseRoute(attempt: Attempt): Promise<Route> {
  const { spec, target, deps, log, signal, opened, peeled } = attempt;
  const compressed = peeled.compressed;
  let facts: RouteFacts = {
    contentType: spec.contentType,
    source: spec.source,
    format: peeled.format,
    layers: peeled.layers,
    ...(compressed ? { fileDecoder: compressed.format } : {}),
    ...(opened.size !== undefined ? { size: opened.size } : {}),
    ranged: attempt.openRange !== undefined,
    nbdReadable: opened.remoteUrl !== undefined && opened.acceptsRanges,
    localFile: opened.localPath !== undefined,
    checksum: spec.checksum !== undefined,
    targetKind: target.kind,
    ...(target.usable !== undefined ? { usable: target.usable } : {}),
    scratch: spec.scratchDir !== undefined,
    ...withDeclaredSize(peeled),
    tuning: deps.tuning,
  };
  if (opened.measureLatency && wantsLatency({ ...facts, canMeasure: true })) {
    const latencyMs = await raceAbort(signal, opened.measureLatency().catch(() => undefined));
    if (latencyMs !== undefined) {
      facts = { ...facts, latencyMs };
      log.info({ latencyMs: Math.round(latencyMs * 10) / 10 }, 'request latency measured');
    }
  }
  let chosen = route(facts);
  if (tailMatters(facts, chosen) && opened.size !== undefined) {
    const tail = await readTail(attempt, opened.size);
    facts = { ...facts, tail: tail !== undefined && isFixedVhdFooter(tail, opened.size - VHD_FOOTER_BYTES) ? 'fixed-vhd' : 'data' };
    if (facts.tail === 'fixed-vhd') log.info({ disk: opened.size - VHD_FOOTER_BYTES }, 'a fixed VHD: its footer is left out');
    chosen = route(facts);
  }
  return chosen;
}

function withDeclaredSize(peeled: Peeled): { declaredSize?: bigint } {
  const size = declaredSize(peeled.format, peeled.head);
  return size !== undefined ? { declaredSize: size } : {};
}

/** The last 512 bytes of a plain source of known size: read in place, or with one ranged request. */
async function readTail({ opened, openRange }: Attempt, size: number): Promise<Buffer | undefined> {
  const start = size - VHD_FOOTER_BYTES;
  if (opened.localPath !== undefined) {
    const handle = await open(opened.localPath, 'r');
    try {
      const buffer = Buffer.alloc(VHD_FOOTER_BYTES);
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, start);
      return bytesRead === buffer.length ? buffer : undefined;
    } finally {
      await handle.close();
    }
  }
  if (!openRange) return undefined;
  const chunks: Buffer[] = [];
  for await (const chunk of await openRange(start, size - 1)) chunks.push(chunk);
  return Buffer.concat(chunks);
}

function execute(attempt: Attempt, chosen: Route): Promise<ImportSuccess> {
  switch (chosen.path) {
    case 'refused':
      throw new FerryError(chosen.code, chosen.message, chosen.details ? { details: chosen.details } : {});
    case 'archive':
      return importArchive(attempt);
    case 'streamed':
      return importStreamed(attempt, chosen.bound);
    case 'decoder':
      return importDecoded(attempt, chosen.bound, chosen.usable);
    case 'ranged':
      return importRanged(attempt, chosen.fetch);
    case 'nbd':
    case 'in-place':
    case 'scratch':
    case 'scratch-required':
      return importConverted(attempt, chosen);
  }
}

async function importArchive({ target, deps, log, opened, peeled }: Attempt): Promise<ImportSuccess> {
  deps.progress.begin(Phase.Transfer, 0, 100, opened.size);
  const result = await extractArchive(peeled.stream, target.path, target.usable);
  log.info(result, 'archive extracted');
  return success({ sourceFormat: describe(peeled) });
}

/** Drops the last 512 bytes when they are a fixed VHD's footer after the disk. */
const withoutVhdFooter = (stream: ByteStream): ByteStream => heldBackTail(stream, VHD_FOOTER_BYTES, isFixedVhdFooter);

async function finishRaw({ spec, target, deps, peeled }: Attempt, written: number, via?: 'decoder'): Promise<ImportSuccess> {
  deps.progress.begin(Phase.Resize, 100, 100);
  const done = await finishDisk(target, { written, preallocate: spec.preallocation });
  return success({ sourceFormat: describe(peeled), diskSize: done.size, preallocationApplied: done.preallocationApplied, ...(via ? { via } : {}) });
}

async function importStreamed(attempt: Attempt, bound: number | undefined): Promise<ImportSuccess> {
  const { target, deps, opened, peeled } = attempt;
  deps.progress.begin(Phase.Transfer, 0, 100, opened.size);
  const disk = withoutVhdFooter(peeled.stream);
  const stream = bound !== undefined ? capped(disk, bound, 'the raw image') : disk;
  const written = await writeRaw(stream, { path: target.writePath, sparse: target.kind === TargetKind.File });
  return finishRaw(attempt, written);
}

async function importDecoded(attempt: Attempt, bound: number | undefined, usable: number | undefined): Promise<ImportSuccess> {
  const { target, deps, opened, peeled, signal } = attempt;
  const compressed = peeled.compressed;
  if (!compressed) throw new FerryError(ErrorCode.Internal, 'the decoder route needs a compressed image');
  deps.progress.begin(Phase.Transfer, 0, 100, opened.size);
  const decoded = await decodeToFile(compressed.format, compressed.stream, target.writePath, { signal, ...(bound !== undefined ? { limit: bound } : {}) });
  const written = await dropVhdFooter(target, decoded);
  if (usable !== undefined && written > usable) {
    throw new FerryError(ErrorCode.TargetTooSmall, `the raw image has ${written} bytes; the usable target capacity is ${usable}`, { details: { size: written, usable } });
  }
  return finishRaw(attempt, written, 'decoder');
}

/**
 * For paths that copy every byte as it comes (a decoder, ranges): when the last 512 of the
 * `written` bytes are a fixed VHD's footer, they are cut from a file or zeroed on a device.
 * Returns the disk's size.
 */
async function dropVhdFooter(target: PreparedTarget, written: number): Promise<number> {
  if (written < 2 * VHD_FOOTER_BYTES) return written;
  const disk = written - VHD_FOOTER_BYTES;
  const handle = await open(target.writePath, 'r+');
  try {
    const tail = Buffer.alloc(VHD_FOOTER_BYTES);
    const { bytesRead } = await handle.read(tail, 0, tail.length, disk);
    if (bytesRead !== tail.length || !isFixedVhdFooter(tail, disk)) return written;
    if (target.kind === TargetKind.File) await handle.truncate(disk);
    else await writeAll(handle, Buffer.alloc(VHD_FOOTER_BYTES), disk);
    return disk;
  } finally {
    await handle.close();
  }
}

function retryOptions(deps: EngineDeps) {
  return {
    attempts: deps.tuning.resumeAttempts + 1,
    backoffMs: Math.min(deps.tuning.backoffMs, 1000),
    sleep: deps.sleep,
  };
}

/** Fills `path` from several ranged connections (the plain stream is closed first). */
async function fetchRanged({ spec, deps, peeled, openRange }: Attempt, path: string, sparse: boolean, fetch: RangedFetch): Promise<void> {
  if (!openRange) throw new FerryError(ErrorCode.Internal, 'a ranged route needs a source that serves ranges');
  await closeStream(peeled.stream);
  await fetchParallelToFile(path, sparse, spec.checksum, {
    ...retryOptions(deps),
    size: fetch.length,
    connections: fetch.connections,
    chunkBytes: fetch.chunkBytes,
    openRange,
    onBytes: (n: number) => deps.progress.bytes(n),
  });
}

async function importRanged(attempt: Attempt, fetch: RangedFetch): Promise<ImportSuccess> {
  const { target, deps, opened } = attempt;
  deps.progress.begin(Phase.Transfer, 0, 100, opened.size);
  await fetchRanged(attempt, target.writePath, target.kind === TargetKind.File, fetch);
  return finishRaw(attempt, await dropVhdFooter(target, fetch.length));
}

/** Where qemu-img reads a non-raw image from, and how to let go of it afterwards. */
interface StagedImage {
  readonly image: string;
  readonly how: 'in-place' | 'nbd' | 'scratch';
  release(): Promise<void>;
}

type ConvertRoute = Extract<Route, { path: 'nbd' | 'in-place' | 'scratch' | 'scratch-required' }>;

/** Gives qemu-img random access to the image the way the route says. */
async function stageImage(attempt: Attempt, chosen: Exclude<ConvertRoute, { path: 'scratch-required' }>): Promise<StagedImage> {
  const { spec, deps, log, signal, opened, peeled } = attempt;
  const none = async (): Promise<void> => undefined;
  switch (chosen.path) {
    case 'in-place': {
      if (opened.localPath === undefined) throw new FerryError(ErrorCode.Internal, 'the in-place route needs a local file');
      if (chosen.verifyFirst) {
        deps.progress.begin(Phase.Verify, 0, TRANSFER_SHARE_WITH_CONVERT, opened.size);
        await drain(peeled.stream);
      } else {
        await closeStream(peeled.stream);
      }
      return { image: opened.localPath, how: 'in-place', release: none };
    }
    case 'nbd': {
      if (opened.remoteUrl === undefined) throw new FerryError(ErrorCode.Internal, 'the nbd route needs a remote URL');
      await closeStream(peeled.stream);
      const proxy = proxyFor(opened.remoteUrl, spec.proxy);
      const caPems = spec.caPath !== undefined ? await loadCaBundle(spec.caPath) : undefined;
      const nbd = await raceAbort(
        signal,
        serveHttpOverNbd({
          url: opened.remoteUrl,
          insecureTls: spec.insecureTls,
          timeoutSeconds: Math.max(1, Math.ceil(deps.tuning.http.idleMs / 1000)),
          // Credentials only for the origin they were given for, not for where a redirect led.
          ...(spec.credentials && sameOrigin(opened.remoteUrl, spec.endpoint) ? { credentials: spec.credentials } : {}),
          ...(caPems ? { caPems } : {}),
          ...(proxy ? { proxy } : {}),
        }),
        (late) => void late.stop(),
      );
      log.info({ via: 'nbdkit' }, 'reading the remote image in place, no scratch copy');
      return { image: nbd.uri, how: 'nbd', release: () => nbd.stop() };
    }
    case 'scratch': {
      const scratchDir = spec.scratchDir;
      if (scratchDir === undefined) throw new FerryError(ErrorCode.Internal, 'the scratch route needs a scratch directory');
      await mkdir(scratchDir, { recursive: true });
      const scratchFile = join(resolve(scratchDir), `tmpimage-${randomBytes(4).toString('hex')}`);
      const release = (): Promise<void> => rm(scratchFile, { force: true });
      try {
        deps.progress.begin(Phase.Transfer, 0, TRANSFER_SHARE_WITH_CONVERT, opened.size);
        if (isRanged(chosen.fill)) {
          await fetchRanged(attempt, scratchFile, true, chosen.fill);
        } else {
          const stream = chosen.bound !== undefined ? capped(peeled.stream, chosen.bound, 'the image file') : peeled.stream;
          await writeRaw(stream, { path: scratchFile, sparse: true });
        }
      } catch (err) {
        await release();
        throw err;
      }
      return { image: scratchFile, how: 'scratch', release };
    }
  }
}

function isRanged(fill: Transport | RangedFetch): fill is RangedFetch {
  return !('kind' in fill);
}

async function importConverted(attempt: Attempt, chosen: ConvertRoute): Promise<ImportSuccess> {
  const { spec, target, deps, log, signal, peeled } = attempt;
  const format = chosen.qemuFormat;
  if (chosen.path === 'scratch-required') {
    await closeStream(peeled.stream);
    log.info({ format }, 'conversion needs scratch space and none is mounted');
    return success({ message: 'scratch space required and none found', scratchSpaceRequired: true, sourceFormat: describe(peeled) });
  }
  const staged = await stageImage(attempt, chosen);
  try {
    const info = await qemuInfo(staged.image, format);
    checkInfo(info, format, target.usable);
    await qemuCheck(staged.image, format);
    if (signal.aborted) throw interruption();
    log.info({ format, virtualSize: info.virtualSize, via: staged.how }, 'image checked, converting');
    deps.progress.begin(Phase.Convert, staged.how === 'scratch' ? TRANSFER_SHARE_WITH_CONVERT : 0, 100, info.virtualSize);
    const isDevice = target.kind === TargetKind.Block;
    await qemuConvert({
      source: staged.image,
      sourceFormat: format,
      target: target.writePath,
      targetExists: isDevice,
      cacheMode: (await supportsDirectIo(target.writePath, isDevice)) ? 'none' : 'writeback',
      onProgress: (percent) => deps.progress.percent(percent),
      signal,
    });
    deps.progress.begin(Phase.Resize, 100, 100);
    const done = await finishDisk(target, { written: info.virtualSize, preallocate: spec.preallocation });
    return success({ sourceFormat: describe(peeled), diskSize: done.size, preallocationApplied: done.preallocationApplied, via: staged.how });
  } finally {
    await staged.release();
  }
}

async function drain(stream: ByteStream): Promise<void> {
  for await (const chunk of stream) void chunk;
}

