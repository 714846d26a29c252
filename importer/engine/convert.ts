/** The paths where qemu-img converts the image: read in place, through nbdkit, or from a scratch copy. */

import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { ErrorCode, FerryError } from '../../src/errors.js';
import { TargetKind } from '../../src/contract/import-spec.js';
import type { ImportSuccess } from '../../src/contract/termination.js';
import { type NbdExport, serveHttpOverNbd } from '../nbdkit.js';
import { Phase } from '../progress.js';
import { checkInfo, qemuCheck, qemuConvert, qemuInfo, supportsDirectIo } from '../qemu-img.js';
import { writeRaw } from '../raw-writer.js';
import { loadCaBundle, proxyFor } from '../sources/http-source.js';
import { type ByteStream, capped } from '../streams.js';
import { finishDisk } from '../target.js';
import { interruption, raceAbort } from './abort.js';
import { type Attempt, closeStream, describe, fetchRanged, secretsFor, success } from './context.js';
import { memorySync } from './tuning.js';
import { fetchWithCurl } from './curl-path.js';
import type { RangedFetch, Route, Transport } from './route.js';

/** Share of overall progress the transfer takes when a conversion follows it. */
const TRANSFER_SHARE_WITH_CONVERT = 50;

/** Where qemu-img reads a non-raw image from, and how to let go of it afterwards. */
interface StagedImage {
  readonly image: string;
  readonly how: 'in-place' | 'nbd' | 'scratch';
  release(): Promise<void>;
}

export type ConvertRoute = Extract<Route, { path: 'nbd' | 'in-place' | 'scratch' | 'scratch-required' }>;

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
      await closeStream(peeled.stream);
      // The export the route's reads were timed through, if any: nbdkit is started once.
      const nbd = attempt.nbd ?? (await startExport(attempt));
      log.info({ via: 'nbdkit', timedExport: attempt.nbd !== undefined }, 'reading the remote image in place, no scratch copy');
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
          await fetchRanged(attempt, scratchFile, true, chosen.fill, memorySync(deps.tuning));
        } else if (chosen.fill.kind === 'curl') {
          await fetchWithCurl(attempt, scratchFile, chosen.bound, memorySync(deps.tuning));
        } else {
          const stream = chosen.bound !== undefined ? capped(peeled.stream, chosen.bound, 'the image file') : peeled.stream;
          await writeRaw(stream, { path: scratchFile, sparse: true, ...memorySync(deps.tuning) });
        }
      } catch (err) {
        await release();
        throw err;
      }
      return { image: scratchFile, how: 'scratch', release };
    }
  }
}

/** nbdkit serving the remote image (its first URL after redirects) as an NBD export. */
export async function startExport({ spec, deps, signal, opened }: Attempt): Promise<NbdExport> {
  if (opened.remoteUrl === undefined) throw new FerryError(ErrorCode.Internal, 'the nbd route needs a remote URL');
  const proxy = proxyFor(opened.remoteUrl, spec.proxy);
  const caPems = spec.caPath !== undefined ? await loadCaBundle(spec.caPath) : undefined;
  return raceAbort(
    signal,
    serveHttpOverNbd({
      url: opened.remoteUrl,
      insecureTls: spec.insecureTls,
      timeouts: deps.tuning.http,
      ...secretsFor(spec, opened.remoteUrl),
      ...(caPems ? { caPems } : {}),
      ...(proxy ? { proxy } : {}),
    }),
    (late) => void late.stop().catch(() => undefined),
  );
}

function isRanged(fill: Transport | RangedFetch): fill is RangedFetch {
  return !('kind' in fill);
}

export async function importConverted(attempt: Attempt, chosen: ConvertRoute): Promise<ImportSuccess> {
  const { spec, target, deps, log, signal, peeled } = attempt;
  const format = chosen.qemuFormat;
  if (chosen.path === 'scratch-required') {
    await closeStream(peeled.stream);
    log.info({ format }, 'conversion needs scratch space and none is mounted');
    return success({ message: 'scratch space required and none found', scratchSpaceRequired: true, sourceFormat: describe(peeled) });
  }
  const staged = await stageImage(attempt, chosen);
  try {
    const info = await qemuInfo(staged.image, format, undefined, signal);
    checkInfo(info, format, target.usable);
    await qemuCheck(staged.image, format, undefined, signal);
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
