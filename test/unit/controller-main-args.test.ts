import { describe, expect, test } from '@jest/globals';
import { DEFAULT_CONFIG } from '../../controller/config.js';
import { parseControllerArgs, readiness } from '../../controller/main.js';
import { codeOf } from './helpers.js';

describe('parseControllerArgs', () => {
  test('no flags → DEFAULT_CONFIG', () => {
    const { config, values } = parseControllerArgs([]);
    expect(config).toEqual(DEFAULT_CONFIG);
    expect(Object.isFrozen(config)).toBe(true);
    expect(values.help).toBeUndefined();
  });

  test('--help and -h', () => {
    expect(parseControllerArgs(['--help']).values.help).toBe(true);
    expect(parseControllerArgs(['-h']).values.help).toBe(true);
  });

  test('repeated --namespace', () => {
    const { config } = parseControllerArgs(['--namespace', 'a', '--namespace=b', '--namespace', 'c']);
    expect(config.namespaces).toEqual(['a', 'b', 'c']);
    expect(Object.isFrozen(config.namespaces)).toBe(true);
  });

  test('every config flag is read', () => {
    const { config } = parseControllerArgs([
      '--importer-image',
      'registry.local/ferry:1.2',
      '--importer-pull-policy',
      'Always',
      '--max-retries',
      '3',
      '--retry-backoff-ms',
      '500',
      '--concurrency',
      '2',
      '--importer-metrics-port',
      '9100',
      '--filesystem-overhead',
      '0.1',
    ]);
    expect(config).toEqual({
      ...DEFAULT_CONFIG,
      importerImage: 'registry.local/ferry:1.2',
      importerPullPolicy: 'Always',
      maxRetries: 3,
      retryBackoffMs: 500,
      concurrency: 2,
      importerMetricsPort: 9100,
      filesystemOverhead: 0.1,
    });
  });

  test('non-config flags are passed through in values', () => {
    const { values } = parseControllerArgs(['--kubeconfig', '/k', '--health-port', '0', '--leader-elect', 'false', '--lease-namespace', 'x', '--id', 'me', '--log-level', 'debug']);
    expect(values).toMatchObject({ kubeconfig: '/k', 'health-port': '0', 'leader-elect': 'false', 'lease-namespace': 'x', id: 'me', 'log-level': 'debug' });
  });

  test.each<[string[], Partial<typeof DEFAULT_CONFIG>]>([
    [['--max-retries', '0'], { maxRetries: 0 }],
    [['--concurrency', '1'], { concurrency: 1 }],
    [['--filesystem-overhead', '0'], { filesystemOverhead: 0 }],
    [['--filesystem-overhead', '0.999'], { filesystemOverhead: 0.999 }],
    [['--importer-pull-policy', 'Never'], { importerPullPolicy: 'Never' }],
    [['--importer-pull-policy', 'IfNotPresent'], { importerPullPolicy: 'IfNotPresent' }],
    [['--retry-backoff-ms', '0'], { retryBackoffMs: 0, retryBackoffMaxMs: DEFAULT_CONFIG.retryBackoffMaxMs }],
    // A first delay above the default cap raises the cap with it.
    [['--retry-backoff-ms', '600000'], { retryBackoffMs: 600_000, retryBackoffMaxMs: 600_000 }],
  ])('%j accepted', (argv, expected) => {
    expect(parseControllerArgs(argv).config).toMatchObject(expected);
  });

  test.each<[string[]]>([
    [['--concurrency', '0']],
    [['--concurrency=-1']],
    [['--concurrency', '1.5']],
    [['--concurrency', 'many']],
    [['--max-retries=-1']],
    [['--max-retries', '2.5']],
    [['--max-retries', 'three']],
    [['--retry-backoff-ms=-1']],
    [['--importer-metrics-port', '0']],
    [['--importer-pull-policy', 'always']],
    [['--importer-pull-policy', 'Sometimes']],
    [['--filesystem-overhead', '1']],
    [['--filesystem-overhead=-0.1']],
    [['--filesystem-overhead', 'lots']],
    [['--filesystem-overhead', 'NaN']],
  ])('%j → INVALID_SPEC', (argv) => {
    expect(codeOf(() => parseControllerArgs(argv))).toBe('INVALID_SPEC');
  });

  test.each<[string[]]>([[['--no-such-flag']], [['--namespace']], [['positional']], [['--help=yes']]])('%j throws', (argv) => {
    expect(() => parseControllerArgs(argv)).toThrow();
  });
});

/* Empty values, out-of-range ports and empty images are refused, never read as 0 or "". */
describe('parseControllerArgs: strict validation', () => {
  // Was a bug: `int()` does `Number(text)`, and Number('') === 0, so an empty value is read as 0 instead
  // of being rejected. Input `--max-retries=` → expected INVALID_SPEC, actual config.maxRetries === 0
  // (retries silently disabled). Same for `--retry-backoff-ms=` → actual retryBackoffMs === 0
  // (retries with no backoff at all).
  test.each<[string]>([['--max-retries='], ['--retry-backoff-ms=']])(
    '%s (empty integer value) → INVALID_SPEC',
    (arg) => {
      expect(codeOf(() => parseControllerArgs([arg]))).toBe('INVALID_SPEC');
    },
  );

  // Was a bug: the overhead check is `Number(value)` then `0 <= n < 1`; Number('') === 0 passes.
  // Input `--filesystem-overhead=` → expected INVALID_SPEC, actual filesystemOverhead === 0
  // (the importer's own env decoder treats an empty FILESYSTEM_OVERHEAD as the 0.06 default, so
  // the two disagree).
  test('--filesystem-overhead= (empty) → INVALID_SPEC', () => {
    expect(codeOf(() => parseControllerArgs(['--filesystem-overhead=']))).toBe('INVALID_SPEC');
  });

  // Was a bug: `--importer-metrics-port` is only checked for >= 1, not <= 65535. Input
  // `--importer-metrics-port 70000` → expected INVALID_SPEC, actual importerMetricsPort === 70000;
  // every importer pod then carries containerPort 70000, which the apiserver rejects, so no import
  // can ever start.
  test('--importer-metrics-port 70000 → INVALID_SPEC', () => {
    expect(codeOf(() => parseControllerArgs(['--importer-metrics-port', '70000']))).toBe('INVALID_SPEC');
  });

  // Was a bug: `values['importer-image'] ?? DEFAULT` keeps an empty string. Input `--importer-image=` →
  // expected INVALID_SPEC (or the default image), actual importerImage === '' (pods with no image,
  // rejected by the apiserver).
  test('--importer-image= (empty) is rejected or falls back to the default', () => {
    let image: string | undefined;
    try {
      image = parseControllerArgs(['--importer-image=']).config.importerImage;
    } catch {
      image = undefined; // rejected: fine
    }
    expect(image === undefined || image === DEFAULT_CONFIG.importerImage).toBe(true);
  });
});

describe('readiness', () => {
  const problem = 'the Lease namespace "x" does not exist: …';
  test.each<[string, Parameters<typeof readiness>[0], boolean, ReturnType<typeof readiness>]>([
    ['no election, caches filled', undefined, true, { ready: true }],
    ['no election, caches not filled', undefined, false, { ready: false, why: 'the caches are not filled yet' }],
    ['standby (another replica leads)', { isLeader: false, problem: undefined }, false, { ready: true }],
    ['leader, caches filled', { isLeader: true, problem: undefined }, true, { ready: true }],
    ['leader, caches not filled', { isLeader: true, problem: undefined }, false, { ready: false, why: 'the caches are not filled yet' }],
    ['the Lease cannot be used', { isLeader: false, problem }, true, { ready: false, why: problem }],
  ])('%s', (_name, elector, controllerReady, expected) => {
    expect(readiness(elector, controllerReady)).toEqual(expected);
  });
});
