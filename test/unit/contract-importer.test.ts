/**
 * The importer pod's contracts beside the spec (import-spec.test.ts has that): its settings
 * ($FERRY_METRICS_PORT, $FERRY_TERMINATION_LOG), and the progress metric, which the importer's real
 * prom-client registry writes and the import controller's decoder reads back.
 */

import { describe, expect, test } from '@jest/globals';
import type { V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { DEFAULT_CONFIG } from '../../controller/config.js';
import { buildImporterPod } from '../../controller/import/importer-pod.js';
import { createImporterMetrics } from '../../importer/metrics.js';
import { Phase } from '../../importer/progress.js';
import { ErrorCode } from '../../src/errors.js';
import { decodeProgress, DEFAULT_IMPORTER_METRICS_PORT, ProgressMetric } from '../../src/contract/import-progress.js';
import { decodeImportEnv, decodeMetricsPort, decodeTerminationLog, encodeImporterSettings, ImportEnv, type ImporterSettings } from '../../src/contract/import-spec.js';
import { TERMINATION_MESSAGE_PATH } from '../../src/contract/termination.js';
import { codeOf } from './helpers.js';

const UID = '6f1c1f5e-0000-4000-8000-000000000001';

async function pageAfter(percents: readonly number[], uid = UID): Promise<string> {
  const metrics = createImporterMetrics(uid);
  for (const percent of percents) metrics.listener({ phase: Phase.Transfer, bytes: percent * 1000, percent });
  return metrics.registry.metrics();
}

describe('the progress metric', () => {
  test.each([[[0.01]], [[12.5]], [[10, 20, 45.25]], [[99.99]], [[30, 100]]])('the controller reads what the importer serves: %j', async (percents) => {
    expect(decodeProgress(await pageAfter(percents), UID)).toBeCloseTo(percents.at(-1)!, 9);
  });

  test('before any progress there is no sample: the controller sees none', async () => {
    expect(decodeProgress(await pageAfter([0]), UID)).toBeUndefined();
  });

  test('an import under another owner is not this one', async () => {
    const page = await pageAfter([40], 'someone-else');
    expect(decodeProgress(page, UID)).toBeUndefined();
    expect(decodeProgress(page, 'someone-else')).toBe(40);
  });

  test("the page carries CDI's name, type and label", async () => {
    const page = await pageAfter([5]);
    expect(page).toContain(`# TYPE ${ProgressMetric.name} counter`);
    expect(page).toContain(`${ProgressMetric.name}{${ProgressMetric.ownerLabel}="${UID}"} 5`);
    expect(ProgressMetric.name).toBe('kubevirt_cdi_import_progress_total');
  });
});

describe('the importer settings', () => {
  test.each<[string, Partial<ImporterSettings>]>([
    ['both', { metricsPort: 9100, terminationLog: '/tmp/term' }],
    ['metrics off', { metricsPort: 0 }],
    ['the highest port', { metricsPort: 65535 }],
    ['nothing: the defaults', {}],
  ])('round-trip: %s', (_, settings) => {
    const env = encodeImporterSettings(settings);
    expect(decodeMetricsPort(env)).toBe(settings.metricsPort ?? DEFAULT_IMPORTER_METRICS_PORT);
    expect(decodeTerminationLog(env)).toBe(settings.terminationLog ?? TERMINATION_MESSAGE_PATH);
  });

  test.each(['x', '-1', '70000', '1.5', '0x50'])(`${ImportEnv.MetricsPort}=%s is INVALID_SPEC naming the variable`, (text) => {
    expect(codeOf(() => decodeMetricsPort({ [ImportEnv.MetricsPort]: text }))).toBe(ErrorCode.InvalidSpec);
    expect(() => decodeMetricsPort({ [ImportEnv.MetricsPort]: text })).toThrow(ImportEnv.MetricsPort);
  });

  test('an unusable port is not encoded', () => {
    expect(codeOf(() => encodeImporterSettings({ metricsPort: 65536 }))).toBe(ErrorCode.InvalidSpec);
  });
});

describe('the importer pod as the importer reads it', () => {
  const pvc: V1PersistentVolumeClaim = {
    metadata: { name: 'disk', namespace: 'vms', uid: UID },
    spec: { volumeMode: 'Filesystem', resources: { requests: { storage: '1Gi' } } },
  };
  const pod = buildImporterPod(pvc, { source: 'http', endpoint: 'https://x/disk.img', contentType: 'kubevirt', insecureTls: false, retainPod: false, preallocation: false }, { ...DEFAULT_CONFIG, importerMetricsPort: 9100 }, { withScratch: false });
  const container = pod.spec!.containers[0]!;
  const env = Object.fromEntries((container.env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, e.value!]));

  test("the controller's default metrics port is the importer's", () => {
    expect(DEFAULT_CONFIG.importerMetricsPort).toBe(DEFAULT_IMPORTER_METRICS_PORT);
  });

  test('the importer serves progress on the port the controller opened and scrapes', () => {
    expect(decodeMetricsPort(env)).toBe(9100);
    expect(container.ports).toContainEqual(expect.objectContaining({ containerPort: 9100 }));
  });

  test('the importer writes its termination message where the kubelet reads it', () => {
    expect(decodeTerminationLog(env)).toBe(container.terminationMessagePath);
  });

  test('the progress label is the owner the spec carries', () => {
    expect(decodeImportEnv(env).ownerUid).toBe(UID);
  });
});
