/**
 * The import engine: open the source → (checksum, count) → peel compression → gather the facts →
 * `route` (pure, ./route.ts) → execute that route → a completed disk only under its final name.
 * Retryable failures start the attempt again; an abort stops everything and leaves nothing behind.
 */

import { open } from 'node:fs/promises';
import { ErrorCode, FerryError, toFerryError } from '../../src/errors.js';
import { type ImportSpec, ImportSource } from '../../src/contract/import-spec.js';
import type { ImportSuccess } from '../../src/contract/termination.js';
import { checkHeader } from '../image-header.js';
import { peel, type Peeled } from '../layers.js';
import { orderedRanges } from '../parallel-fetch.js';
import { Phase } from '../progress.js';
import type { SourceOpener } from '../sources/source.js';
import { type ByteStream, counted, exactLength, handover, verified } from '../streams.js';
import { createBlank, discardPartial, finishDisk, prepareTarget } from '../target.js';
import { isFixedVhdFooter, VHD_FOOTER_BYTES } from '../vhd-footer.js';
import type { NbdExport } from '../nbdkit.js';
import { type NbdReadTimes, timeNbdReads } from '../qemu-img.js';
import { guarded, linkedSignal, raceAbort } from './abort.js';
import { type Attempt, closeStream, describe, type EngineDeps, retryOptions, type Run, success } from './context.js';
import { DEFAULT_SYNC_EVERY_BYTES } from '../raw-writer.js';
import { importConverted, startExport } from './convert.js';
import { declaredSize } from './declared-size.js';
import { openerFor } from './opener.js';
import { importCurled, importDecoded, importRanged, importStreamed } from './raw.js';
import { nbdReadCost, type Route, route, type RouteFacts, tailMatters, wantsLatency, wantsNbdReads, wantsReuse } from './route.js';
import { autoConnectionsFor, chunkTuning, probeEnoughMs } from './tuning.js';
import { backoffMs } from '../../src/backoff.js';

export type { EngineDeps } from './context.js';

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
  const opener = openerFor(spec, deps.tuning, deps.sleep, run.log, deps.upload);
  for (let attempt = 1; ; attempt += 1) {
    try {
      const result = await importOnce(run, opener);
      deps.progress.complete();
      return result;
    } catch (err) {
      const error = signal.aborted ? interrupted() : toFerryError(err);
      await discardPartial(target).catch(() => undefined);
      if (signal.aborted || !error.retryable || attempt >= deps.tuning.attempts) throw error;
      const delay = backoffMs(attempt, deps.tuning.backoffMs, deps.tuning.maxBackoffMs);
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
    let attempt: Attempt = { ...run, opened, peeled, ...(guardedRange ? { openRange: guardedRange } : {}) };
    if (peeled.head.length === 0) throw new FerryError(ErrorCode.InvalidImage, 'the source is empty');
    log.info({ format: describe(peeled) }, 'format detected');
    checkHeader(peeled.format, peeled.head);
    const routed = await chooseRoute(attempt);
    const { chosen } = routed;
    if (routed.nbd) attempt = { ...attempt, nbd: routed.nbd };
    log.info({ route: chosen.path, memorySyncEveryBytes: deps.tuning.memorySyncEveryBytes ?? DEFAULT_SYNC_EVERY_BYTES }, 'route chosen');
    const transport = 'transport' in chosen ? chosen.transport : chosen.path === 'scratch' && 'kind' in chosen.fill ? chosen.fill : undefined;
    if (transport?.kind === 'ordered-ranges' && attempt.openRange && opened.size !== undefined) {
      // The head was read on the first connection; the rest continues over ranges from there.
      const { size } = opened;
      const ranges = attempt.openRange;
      source.takeOver((offset) => orderedRanges({ ...retryOptions(deps), openRange: ranges, size, start: offset, connections: transport.connections, chunkBytes: transport.chunkBytes }));
      log.info({ connections: transport.connections, chunkBytes: transport.chunkBytes }, 'compressed image: ranged connections, read in order');
    }
    try {
      return await execute(attempt, chosen);
    } finally {
      // The nbd route stops it when qemu-img is done; this is for a failure before it got there.
      await attempt.nbd?.stop().catch(() => undefined);
    }
  } finally {
    // Whatever path ran, end the source: closes the connection and stops any decompressor child.
    await closeStream(peeled.stream).catch(() => undefined);
  }
}

/**
 * Gathers the facts (measuring latency, reading a raw image's last bytes only where they matter,
 * timing a request on a reused connection and then reads through nbdkit where the route says nbd)
 * and routes. An export started to be timed is handed on when the route keeps nbd, stopped when
 * it does not.
 */
async function chooseRoute(attempt: Attempt): Promise<{ chosen: Route; nbd?: NbdExport }> {
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
    curl: curlApplies(attempt),
    ...withDeclaredSize(peeled),
    tuning: deps.tuning,
  };
  const { measureLatency, measureChunk } = opened;
  if (measureLatency && wantsLatency({ ...facts, canMeasure: true })) {
    const enough = probeEnoughMs(deps.tuning);
    const latencyMs = await raceAbort(signal, measureLatency(enough.latencyMs).catch(() => undefined));
    // What a request for real data costs here: decides nbd (one request at a time) and far.
    const { probeChunkBytes } = chunkTuning(deps.tuning);
    const chunkMs = latencyMs !== undefined && measureChunk ? await raceAbort(signal, measureChunk(probeChunkBytes, 1, enough.chunkMs).catch(() => undefined)) : undefined;
    // Only a server that looks far is asked whether two reads at once take no longer than one.
    const pairMs =
      latencyMs !== undefined && chunkMs !== undefined && measureChunk && autoConnectionsFor(latencyMs, deps.tuning, chunkMs) > 1
        ? await raceAbort(signal, measureChunk(probeChunkBytes, 2).catch(() => undefined))
        : undefined;
    if (latencyMs !== undefined) {
      facts = { ...facts, latencyMs, ...(chunkMs !== undefined ? { chunkMs } : {}), ...(pairMs !== undefined ? { pairMs } : {}) };
      const ms = (n: number | undefined) => (n !== undefined ? Math.round(n * 10) / 10 : undefined);
      log.info({ latencyMs: ms(latencyMs), chunkMs: ms(chunkMs), pairMs: ms(pairMs), chunkBytes: probeChunkBytes }, 'request cost measured');
    }
  }
  let chosen = route(facts);
  // The tail's ranged read, when it follows the chunk probe, goes out on a connection that just
  // carried bulk data: the request the reuse probe would time, so its time stands for that probe's.
  let tailMs: number | undefined;
  if (tailMatters(facts, chosen) && opened.size !== undefined) {
    const started = performance.now();
    const tail = await readTail(attempt, opened.size);
    if (tail !== undefined && opened.localPath === undefined && facts.chunkMs !== undefined) tailMs = performance.now() - started;
    facts = { ...facts, tail: tail !== undefined && isFixedVhdFooter(tail, opened.size - VHD_FOOTER_BYTES) ? 'fixed-vhd' : 'data' };
    if (facts.tail === 'fixed-vhd') log.info({ disk: opened.size - VHD_FOOTER_BYTES }, 'a fixed VHD: its footer is left out');
    chosen = route(facts);
  }
  if (wantsReuse(facts, chosen)) {
    const reuseMs = tailMs ?? (opened.measureReuse ? await raceAbort(signal, opened.measureReuse().catch(() => undefined)) : undefined);
    if (reuseMs !== undefined) {
      facts = { ...facts, reuseMs };
      chosen = route(facts);
      log.info({ reuseMs: Math.round(reuseMs * 10) / 10, by: tailMs !== undefined ? 'tail' : 'probe', nbd: chosen.path === 'nbd' }, 'request on a reused connection measured');
    }
  }
  if (!wantsNbdReads(facts, chosen)) return { chosen };
  const nbd = onceStopped(await startExport(attempt));
  const { probeChunkBytes, nbdProbeReads, nbdReadMaxMs } = chunkTuning(deps.tuning);
  const reads = Math.min(nbdProbeReads, Math.floor((opened.size ?? 0) / probeChunkBytes));
  let times: NbdReadTimes | undefined;
  try {
    // Stops once the cost cannot come back under the limit: the route only compares it with that.
    times = await timeNbdReads(nbd.uri, probeChunkBytes, reads, undefined, signal, nbdReadMaxMs);
  } catch (err) {
    if (signal.aborted) {
      await nbd.stop().catch(() => undefined);
      throw err;
    }
    log.warn({ err: toFerryError(err).message }, 'reads through nbdkit failed: not reading through it');
  }
  // Nothing measured counts as dear: the one stream does not depend on nbdkit.
  const nbdReadMs = times ? nbdReadCost(times.openMs, times.readsMs, reads) : Infinity;
  facts = { ...facts, nbdReadMs };
  chosen = route(facts);
  const kept = chosen.path === 'nbd';
  log.info({ nbdReadMs: Math.round(nbdReadMs * 10) / 10, openMs: times ? Math.round(times.openMs * 10) / 10 : undefined, readsMs: times?.readsMs.map((t) => Math.round(t * 10) / 10), chunkBytes: probeChunkBytes, kept }, 'reads through nbdkit measured');
  if (kept) return { chosen, nbd };
  await nbd.stop().catch(() => undefined);
  return { chosen };
}

/** The export with a `stop` that runs once: later calls get the first call's outcome. */
function onceStopped(nbd: NbdExport): NbdExport {
  let stopped: Promise<void> | undefined;
  return { uri: nbd.uri, stop: () => (stopped ??= nbd.stop()) };
}

/** A child curl can fetch the one stream: an http(s) image of known size, big enough, curl installed. */
function curlApplies({ spec, deps, opened }: Attempt): boolean {
  const { curlMinBytes } = chunkTuning(deps.tuning);
  return spec.source === ImportSource.Http && opened.remoteUrl !== undefined && opened.size !== undefined && curlMinBytes > 0 && opened.size >= curlMinBytes;
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
      return chosen.transport.kind === 'curl' ? importCurled(attempt, chosen.bound) : importStreamed(attempt, chosen.bound);
    case 'decoder':
      return importDecoded(attempt, chosen.bound, chosen.usable, chosen.transport.kind === 'curl');
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
  // tar-stream only when an archive is imported (module loading is start-up time for every import).
  const { extractArchive } = await import('../../src/io/archive.js');
  const result = await extractArchive(peeled.stream, target.path, target.usable);
  log.info(result, 'archive extracted');
  return success({ sourceFormat: describe(peeled) });
}

