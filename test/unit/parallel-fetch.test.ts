import { describe, expect, test } from '@jest/globals';
import { fetchParallel, planChunks } from '../../importer/parallel-fetch.js';
import { contentRangeStart } from '../../importer/sources/http-source.js';
import { FerryError } from '../../src/errors.js';

describe('planChunks', () => {
  test.each<[number, number, Array<[number, number]>]>([
    [10, 4, [[0, 3], [4, 7], [8, 9]]],
    [8, 4, [[0, 3], [4, 7]]],
    [3, 4, [[0, 2]]],
    [0, 4, []],
  ])('%d bytes in chunks of %d', (size, chunk, expected) => {
    expect(planChunks(size, chunk)).toEqual(expected);
  });
});

describe('contentRangeStart', () => {
  test.each<[string | undefined, number | undefined]>([
    ['bytes 100-199/1000', 100],
    ['bytes 0-0/*', 0],
    ['bytes */1000', undefined],
    ['items 1-2/3', undefined],
    [undefined, undefined],
  ])('%j → %j', (header, start) => {
    expect(contentRangeStart(header)).toBe(start);
  });
});

describe('fetchParallel (in memory)', () => {
  const source = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251));

  function rangeOpener(failFirstAt?: number) {
    let failed = false;
    return async (start: number, end: number) =>
      (async function* () {
        for (let p = start; p <= end; p += 64) {
          if (failFirstAt !== undefined && !failed && p >= failFirstAt) {
            failed = true;
            throw new FerryError('TRUNCATED', 'cut');
          }
          yield source.subarray(p, Math.min(end + 1, p + 64));
        }
      })();
  }

  test('writes every byte at its offset with bounded connections, resuming a broken chunk', async () => {
    const out = Buffer.alloc(1000);
    let inFlight = 0;
    let maxInFlight = 0;
    const opener = rangeOpener(300);
    await fetchParallel({
      size: 1000,
      connections: 3,
      chunkBytes: 128,
      openRange: async (s, e) => {
        inFlight += 1;
        maxInFlight = Math.max(maxInFlight, inFlight);
        const it = await opener(s, e);
        return (async function* () {
          try {
            yield* it;
          } finally {
            inFlight -= 1;
          }
        })();
      },
      write: async (data, position) => void data.copy(out, position),
      attempts: 3,
      backoffMs: 0,
      sleep: async () => undefined,
    });
    expect(out.equals(source)).toBe(true);
    expect(maxInFlight).toBeLessThanOrEqual(3);
  });

  test('a permanent failure stops the download', async () => {
    await expect(
      fetchParallel({
        size: 1000,
        connections: 2,
        chunkBytes: 100,
        openRange: async () => {
          throw new FerryError('SOURCE_NOT_FOUND', 'gone');
        },
        write: async () => undefined,
        attempts: 5,
        backoffMs: 0,
        sleep: async () => undefined,
      }),
    ).rejects.toMatchObject({ code: 'SOURCE_NOT_FOUND' });
  });
});
