/** The clone target's push decoding of a request body (clone/body-events.ts), fed by a real Readable. */

import { describe, expect, test } from '@jest/globals';
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { BodyEvents, PAUSE_BYTES } from '../../clone/body-events.js';
import { type CloneEvent, CloneStreamEncoder, CloneStreamFault } from '../../src/contract/clone-stream.js';

const MiB = 1024 * 1024;

function stream(dataBytes: number): Buffer {
  const size = 16 * MiB;
  const e = new CloneStreamEncoder({ kind: 'fs', size, blockSize: 4096 });
  const data = Buffer.alloc(dataBytes, 0x5a);
  return Buffer.concat([...e.start(), ...e.data(0, data), ...e.hole(dataBytes, size - dataBytes), ...e.end()]);
}

/** A body that hands out `bytes` in 16 KiB chunks as it is read. */
function body(bytes: Buffer, end = true): Readable {
  let at = 0;
  return new Readable({
    highWaterMark: 16 * 1024,
    read() {
      if (at >= bytes.length) {
        if (end) this.push(null);
        return;
      }
      this.push(bytes.subarray(at, at + 16 * 1024));
      at += 16 * 1024;
    },
  });
}

const asRequest = (r: Readable): IncomingMessage => r as unknown as IncomingMessage;

async function drain(events: BodyEvents): Promise<CloneEvent[]> {
  const out: CloneEvent[] = [];
  for (;;) {
    const ev = events.poll() ?? (await events.next().then((n) => (n.done ? undefined : n.value)));
    if (ev === undefined) return out;
    out.push(ev);
  }
}

describe('BodyEvents', () => {
  test('a whole stream decodes to its events, in order, and then is done', async () => {
    const seen: string[] = [];
    const events = new BodyEvents(asRequest(body(stream(MiB))), new AbortController().signal, (ev) => seen.push(ev.type));
    const out = await drain(events);
    expect(out[0]?.type).toBe('header');
    expect(out.filter((e) => e.type === 'data').reduce((n, e) => n + (e.type === 'data' ? e.bytes.length : 0), 0)).toBe(MiB);
    expect(out.at(-2)?.type).toBe('hole');
    expect(out.at(-1)).toMatchObject({ type: 'end', dataBytes: MiB });
    expect(seen).toEqual(out.map((e) => e.type));
    expect(await events.next()).toEqual({ done: true, value: undefined });
  });

  test('more than PAUSE_BYTES queued pauses the body; taking the events down to half resumes it', async () => {
    const req = body(stream(4 * PAUSE_BYTES));
    const events = new BodyEvents(asRequest(req), new AbortController().signal);
    // Nobody takes events: the body flows until the queue is over the mark, then stops.
    for (let i = 0; i < 50 && !req.isPaused(); i += 1) await new Promise((r) => setImmediate(r));
    expect(req.isPaused()).toBe(true);
    let queued = 0;
    for (let ev = events.poll(); ev !== undefined; ev = events.poll()) {
      if (ev.type === 'data') queued += ev.bytes.length;
      if (!req.isPaused()) break;
    }
    expect(queued).toBeGreaterThan(PAUSE_BYTES / 2 - 16 * 1024);
    expect(req.isPaused()).toBe(false);
    const rest = await drain(events);
    expect(rest.at(-1)).toMatchObject({ type: 'end', dataBytes: 4 * PAUSE_BYTES });
  });

  test('a body that ends before the end record: the events decoded first, then TRUNCATED', async () => {
    const whole = stream(MiB);
    const events = new BodyEvents(asRequest(body(whole.subarray(0, 600 * 1024))), new AbortController().signal);
    const out: CloneEvent[] = [];
    await expect(
      (async () => {
        for (;;) {
          const n = await events.next();
          if (n.done) return;
          out.push(n.value);
        }
      })(),
    ).rejects.toMatchObject({ code: 'TRUNCATED' });
    expect(out[0]?.type).toBe('header');
    expect(out.some((e) => e.type === 'data')).toBe(true);
    expect(await events.next()).toEqual({ done: true, value: undefined }); // the fault is handed out once
  });

  test('a connection that breaks is TRUNCATED; one stopped by the signal is INTERRUPTED', async () => {
    const broken = body(stream(MiB), false);
    const a = new BodyEvents(asRequest(broken), new AbortController().signal);
    await a.next();
    broken.destroy(new Error('socket hang up'));
    await expect(drain(a)).rejects.toMatchObject({ code: 'TRUNCATED', fault: CloneStreamFault.Truncated });

    const stopped = body(stream(MiB), false);
    const controller = new AbortController();
    const b = new BodyEvents(asRequest(stopped), controller.signal);
    await b.next();
    controller.abort();
    await expect(drain(b)).rejects.toMatchObject({ code: 'INTERRUPTED' });
    expect(stopped.destroyed).toBe(true);
  });

  test('a changed byte is CHECKSUM_MISMATCH after the data before it', async () => {
    const bad = Buffer.from(stream(64 * 1024));
    bad[bad.length - 1] = (bad[bad.length - 1] as number) ^ 1;
    const events = new BodyEvents(asRequest(body(bad)), new AbortController().signal);
    await expect(drain(events)).rejects.toMatchObject({ code: 'CHECKSUM_MISMATCH' });
  });

  test('return lets go of the body without destroying it, paused or not, so it can be drained', async () => {
    const req = body(stream(4 * PAUSE_BYTES));
    const events = new BodyEvents(asRequest(req), new AbortController().signal);
    for (let i = 0; i < 50 && !req.isPaused(); i += 1) await new Promise((r) => setImmediate(r));
    await events.return();
    expect(req.destroyed).toBe(false);
    expect(req.listenerCount('data')).toBe(0);
    let rest = 0;
    req.on('data', (c: Buffer) => (rest += c.length));
    await new Promise((r) => req.once('end', r));
    expect(rest).toBeGreaterThan(0);
    expect(events.poll()).toBeUndefined();
  });
});
