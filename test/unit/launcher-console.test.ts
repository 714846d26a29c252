/** The console's ring buffer: keeps the newest bytes, in order, whatever the chunk sizes. */

import { describe, expect, test } from '@jest/globals';
import { RingBuffer } from '../../launcher/console.js';

const bytes = (text: string) => Buffer.from(text);

describe('RingBuffer', () => {
  test('holds everything while under capacity', () => {
    const ring = new RingBuffer(8);
    ring.push(bytes('abc'));
    ring.push(bytes('de'));
    expect(ring.snapshot().toString()).toBe('abcde');
    expect(ring.size).toBe(5);
    expect(ring.total).toBe(5);
  });

  test.each([
    // chunks, capacity, expected snapshot
    [['abcdef', 'gh'], 8, 'abcdefgh'],
    [['abcdef', 'ghij'], 8, 'cdefghij'],
    [['abc', 'def', 'ghi', 'jkl'], 5, 'hijkl'],
    [['abcdefghijkl'], 5, 'hijkl'],
    [['ab', 'cdefghijklmn'], 4, 'klmn'],
    [['abcd', 'e', 'f', 'g', 'h', 'i'], 4, 'fghi'],
  ])('%j into %i bytes keeps %s', (chunks, capacity, expected) => {
    const ring = new RingBuffer(capacity);
    for (const c of chunks) ring.push(bytes(c));
    expect(ring.snapshot().toString()).toBe(expected);
    expect(ring.size).toBe(expected.length);
    expect(ring.total).toBe(chunks.join('').length);
  });

  test('matches a reference model over many random pushes', () => {
    const ring = new RingBuffer(97);
    let all = '';
    let seed = 7;
    for (let i = 0; i < 500; i++) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      const chunk = String.fromCharCode(97 + (i % 26)).repeat(seed % 150);
      ring.push(bytes(chunk));
      all += chunk;
      expect(ring.snapshot().toString()).toBe(all.slice(-97));
    }
  });

  test('a snapshot is a copy', () => {
    const ring = new RingBuffer(4);
    ring.push(bytes('abcd'));
    const snap = ring.snapshot();
    ring.push(bytes('xy'));
    expect(snap.toString()).toBe('abcd');
    expect(ring.snapshot().toString()).toBe('cdxy');
  });

  test('rejects a capacity that is not a positive integer', () => {
    expect(() => new RingBuffer(0)).toThrow(RangeError);
    expect(() => new RingBuffer(1.5)).toThrow(RangeError);
  });
});
