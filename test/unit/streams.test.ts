import { describe, expect, test } from '@jest/globals';
import { handover, heldBackTail, peek } from '../../importer/streams.js';
import { peel } from '../../importer/layers.js';

/**
 * A source of `chunks` buffers that records whether it was closed before its end (as an HTTP body
 * is: `return()` closes it whether or not reading began).
 */
function source(chunks: number, size = 4096): { stream: AsyncIterable<Buffer>; state: { read: number; closed: boolean } } {
  const state = { read: 0, closed: false };
  const iterator: AsyncIterableIterator<Buffer> = {
    [Symbol.asyncIterator]() {
      return this;
    },
    async next() {
      if (state.closed || state.read >= chunks) return { done: true, value: undefined };
      state.read += 1;
      return { done: false, value: Buffer.alloc(size, (state.read - 1) % 251) };
    },
    async return() {
      state.closed = true;
      return { done: true, value: undefined };
    },
  };
  return { stream: iterator, state };
}

async function collect(stream: AsyncIterable<Buffer>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(c);
  return Buffer.concat(parts);
}

describe('peek', () => {
  test('replays the head, then the rest, byte for byte', async () => {
    const { stream } = source(5, 1000);
    const { head, stream: all } = await peek(stream, 1500);
    expect(head.length).toBe(1500);
    const bytes = await collect(all);
    expect(bytes.length).toBe(5000);
    expect(bytes.subarray(0, 1500)).toEqual(head);
    expect(bytes[4999]).toBe(4);
  });

  test('closing the replay before reading it closes the source (the connection is not left open)', async () => {
    const { stream, state } = source(1000);
    const peeked = await peek(stream, 100);
    expect(state.closed).toBe(false);
    await peeked.stream[Symbol.asyncIterator]().return?.(undefined);
    expect(state.closed).toBe(true);
    expect(state.read).toBe(1);
  });

  test('closing the replay half-way closes the source', async () => {
    const { stream, state } = source(1000);
    const it = (await peek(stream, 100)).stream[Symbol.asyncIterator]();
    await it.next();
    await it.next();
    await it.return?.(undefined);
    expect(state.closed).toBe(true);
    expect(state.read).toBe(2);
  });

  test('a peeled image, dropped unread for another path (nbdkit, parallel ranges), closes its source', async () => {
    const { stream, state } = source(1000, 64 * 1024);
    const peeled = await peel(stream);
    expect(peeled.format).toBe('raw');
    await peeled.stream[Symbol.asyncIterator]().return?.(undefined);
    expect(state.closed).toBe(true);
    expect(state.read).toBeLessThan(10);
  });
});

describe('handover', () => {
  test('continues from the exact byte reached with the new source and closes the first', async () => {
    const { stream, state } = source(100, 1000);
    const h = handover(stream);
    const it = h.stream[Symbol.asyncIterator]();
    await it.next();
    await it.next();
    const offsets: number[] = [];
    h.takeOver((offset) => {
      offsets.push(offset);
      return (async function* () {
        yield Buffer.from('rest');
      })();
    });
    const rest = await collect({ [Symbol.asyncIterator]: () => it });
    expect(offsets).toEqual([2000]);
    expect(rest.toString()).toBe('rest');
    expect(state.closed).toBe(true);
    expect(state.read).toBeLessThanOrEqual(3);
  });

  test('without a takeover it is the first source, byte for byte', async () => {
    const { stream } = source(3, 10);
    expect((await collect(handover(stream).stream)).length).toBe(30);
  });

  test('closing it before reading closes the first source', async () => {
    const { stream, state } = source(100);
    await handover(stream).stream[Symbol.asyncIterator]().return?.(undefined);
    expect(state.closed).toBe(true);
  });
});

describe('heldBackTail', () => {
  const chunked = async function* (data: Buffer, sizes: readonly number[]): AsyncGenerator<Buffer> {
    let at = 0;
    for (let i = 0; at < data.length; i += 1) {
      const n = sizes[i % sizes.length] as number;
      yield data.subarray(at, at + n);
      at += n;
    }
  };
  const data = Buffer.from(Array.from({ length: 5000 }, (_, i) => i % 251));

  test.each<[string, readonly number[]]>([
    ['big chunks', [4096]],
    ['tiny chunks', [7]],
    ['chunks of exactly the tail', [512]],
    ['mixed', [1, 600, 3, 512, 2000]],
  ])('%s: everything passes when the tail is data, and the tail is judged with the bytes before it', async (_name, sizes) => {
    const seen: Array<[number, number]> = [];
    const kept = await collect(heldBackTail(chunked(data, sizes), 512, (tail, before) => (seen.push([tail.length, before]), false)));
    expect(kept.equals(data)).toBe(true);
    expect(seen).toEqual([[512, 5000 - 512]]);
    const dropped = await collect(heldBackTail(chunked(data, sizes), 512, () => true));
    expect(dropped.equals(data.subarray(0, 5000 - 512))).toBe(true);
  });

  test('a stream shorter than the tail passes whole, never judged', async () => {
    const kept = await collect(heldBackTail(chunked(data.subarray(0, 300), [100]), 512, () => true));
    expect(kept.length).toBe(300);
  });
});
