import { describe, expect, test } from '@jest/globals';
import { autoConnectionsFor, DEFAULT_TUNING, parseConnections } from '../../importer/engine.js';

describe('connections setting', () => {
  test('"auto" or a positive integer; anything else is INVALID_SPEC naming the setting', () => {
    expect(parseConnections('auto', '--connections')).toBe('auto');
    expect(parseConnections('4', '--connections')).toBe(4);
    for (const bad of ['0', '-1', '2.5', 'many', '']) {
      expect(() => parseConnections(bad, 'FERRY_HTTP_CONNECTIONS')).toThrow(expect.objectContaining({ code: 'INVALID_SPEC', message: expect.stringContaining('FERRY_HTTP_CONNECTIONS') }));
    }
  });

  test('auto is the default', () => {
    expect(DEFAULT_TUNING.connections).toBe('auto');
  });

  test.each<[number | undefined, number]>([
    [undefined, 1],
    [0.4, 1],
    [DEFAULT_TUNING.nearLatencyMs, 1],
    [DEFAULT_TUNING.nearLatencyMs + 0.1, DEFAULT_TUNING.autoConnections],
    [100, DEFAULT_TUNING.autoConnections],
  ])('a request latency of %s ms gets %i connection(s)', (latency, expected) => {
    expect(autoConnectionsFor(latency, DEFAULT_TUNING)).toBe(expected);
  });
});

describe('auto connections weigh a chunk read too', () => {
  test.each<[number, number | undefined, number]>([
    [20, undefined, DEFAULT_TUNING.autoConnections],
    [20, (DEFAULT_TUNING.farChunkMs ?? 0) + 1, DEFAULT_TUNING.autoConnections],
    [20, DEFAULT_TUNING.farChunkMs ?? 0, 1],
    [8, 10, 1],
    [1, 100, 1],
  ])('latency %s ms, chunk %s ms: %i connection(s)', (latency, chunk, expected) => {
    expect(autoConnectionsFor(latency, DEFAULT_TUNING, chunk)).toBe(expected);
  });
});

describe('auto connections: a server bound by itself is not far', () => {
  test.each<[number, number, number | undefined, number]>([
    [100, 170, 175, DEFAULT_TUNING.autoConnections],
    [100, 170, undefined, DEFAULT_TUNING.autoConnections],
    [60, 120, 240, 1],
    [60, 120, 180, 1],
    [60, 120, 179, DEFAULT_TUNING.autoConnections],
  ])('latency %s ms, chunk %s ms, two at once %s ms: %i connection(s)', (latency, chunk, pair, expected) => {
    expect(autoConnectionsFor(latency, DEFAULT_TUNING, chunk, pair)).toBe(expected);
  });
});
