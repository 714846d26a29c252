import { describe, expect, test } from '@jest/globals';
import { peek } from '../../importer/streams.js';
import { peel } from '../../importer/layers.js';

/** A source of `chunks` buffers that records whether it was closed before its end. */
function source(chunks: number, size = 4096): { stream: AsyncIterable<Buffer>; state: { read: number; closed: boolean } } {
  const state = { read: 0, closed: false };
  async function* gen(): AsyncGenerator<Buffer> {
    try {
      for (let i = 0; i < chunks; i += 1) {
        state.read += 1;
        yield Buffer.alloc(size, i % 251);
      }
    } finally {
      state.closed = true;
    }
  }
  return { stream: gen(), state };
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
