/** Opens the source an import spec names, afresh for each attempt. */

import { ErrorCode, FerryError } from '../../src/errors.js';
import { ContentType, type ImportSpec, ImportSource } from '../../src/contract/import-spec.js';
import type { Logger } from '../../src/logging.js';
import { openFile } from '../sources/file-source.js';
import { openHttp, type ResumePolicy } from '../sources/http-source.js';
import { parseS3Location } from '../sources/s3-location.js';
import type { SourceOpener } from '../sources/source.js';
import type { ImportTuning } from './tuning.js';

export function openerFor(spec: ImportSpec, tuning: ImportTuning, sleep: (ms: number) => Promise<void>, log?: Logger, upload?: SourceOpener): SourceOpener {
  const resume: ResumePolicy = {
    attempts: tuning.resumeAttempts,
    backoffMs: Math.min(tuning.backoffMs, 1000),
    sleep,
    onResume: (offset, attempt, cause) => log?.warn({ offset, attempt, code: cause.code }, `transfer broke, resuming at byte ${offset}: ${cause.message}`),
  };
  switch (spec.source) {
    case ImportSource.Http:
      if (!/^https?:\/\//i.test(spec.endpoint)) {
        throw new FerryError(ErrorCode.InvalidSpec, `http source needs an http:// or https:// URL, got "${spec.endpoint}"`);
      }
      return () =>
        openHttp(
          {
            url: spec.endpoint,
            insecureTls: spec.insecureTls,
            proxy: spec.proxy,
            timeouts: tuning.http,
            ...(spec.credentials ? { credentials: spec.credentials } : {}),
            ...(spec.caPath !== undefined ? { caPath: spec.caPath } : {}),
            ...(spec.extraHeaders?.length ? { extraHeaders: spec.extraHeaders } : {}),
          },
          resume,
        );
    case ImportSource.S3: {
      const location = parseS3Location(spec.endpoint, { ...(spec.s3Endpoint ? { endpoint: spec.s3Endpoint } : {}), ...(spec.s3Region ? { region: spec.s3Region } : {}) });
      // The AWS SDK is loaded only when an S3 import runs.
      return async () =>
        (await import('../sources/s3-source.js')).openS3(
          {
            location,
            insecureTls: spec.insecureTls,
            timeouts: tuning.http,
            ...(spec.credentials ? { credentials: spec.credentials } : {}),
            ...(spec.caPath !== undefined ? { caPath: spec.caPath } : {}),
          },
          resume,
        );
    }
    case ImportSource.Registry:
      // As in CDI: a registry holds disk images (containerDisks), never archives.
      if (spec.contentType !== ContentType.Kubevirt) {
        throw new FerryError(ErrorCode.InvalidSpec, `the registry source imports disk images only (content type kubevirt), not ${spec.contentType}`);
      }
      return async () =>
        (await import('../sources/registry-source.js')).openRegistry({
          endpoint: spec.endpoint,
          insecureTls: spec.insecureTls,
          proxy: spec.proxy,
          timeouts: tuning.http,
          resume,
          ...(spec.credentials ? { credentials: spec.credentials } : {}),
          ...(spec.caPath !== undefined ? { caPath: spec.caPath } : {}),
        });
    case ImportSource.File:
      return () => openFile(spec.endpoint);
    case ImportSource.Upload:
      // The body arrives with the request (importer/upload-server.ts); only that server has one.
      if (!upload) throw new FerryError(ErrorCode.InvalidSpec, 'the upload source is served by `ferry uploadserver`, not read from a spec');
      return upload;
    default:
      throw new FerryError(ErrorCode.InvalidSpec, `source "${spec.source}" is not supported by this importer yet`);
  }
}
