/**
 * The node cluster's DNS answers (tools/node-cluster/cluster-dns.ts): the pure parts, table-driven.
 * The process itself answers pods on the real node in test/node/ (golden.test.ts, seed-demo.test.ts).
 */

import { describe, expect, it } from '@jest/globals';
import type { V1Service } from '@kubernetes/client-node';
import { answer, parseQuestion, serviceNames } from '../../tools/node-cluster/cluster-dns.js';

/** A standard query (RD set) for `name` of `type`, as glibc sends it. */
function query(name: string, type: number, id = 0x1234, flags = 0x0100): Buffer {
  const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  const head = Buffer.alloc(12);
  head.writeUInt16BE(id, 0);
  head.writeUInt16BE(flags, 2);
  head.writeUInt16BE(1, 4);
  const tail = Buffer.alloc(5);
  tail.writeUInt16BE(type, 1);
  tail.writeUInt16BE(1, 3);
  return Buffer.concat([head, ...labels, tail]);
}

const NAMES = new Map([['disk-server.seed-demo.svc.cluster.local', '10.96.12.34']]);
const A = 1;
const AAAA = 28;

describe('cluster DNS answers', () => {
  it.each([
    // name, type, rcode, authoritative, answers
    ['disk-server.seed-demo.svc.cluster.local', A, 0, true, ['10.96.12.34']],
    ['Disk-Server.Seed-Demo.SVC.cluster.local', A, 0, true, ['10.96.12.34']],
    ['disk-server.seed-demo.svc.cluster.local', AAAA, 0, true, []],
    ['disk-server.seed-demo.svc.cluster.local.seed-demo.svc.cluster.local', A, 3, true, []],
    ['other.seed-demo.svc.cluster.local', A, 3, true, []],
    ['deb.debian.org', A, 3, false, []],
  ] as const)('%s type %d → rcode %d, AA %s, answers %j', (name, type, rcode, aa, answers) => {
    const reply = answer(query(name, type), NAMES);
    expect(reply.readUInt16BE(0)).toBe(0x1234);
    const flags = reply.readUInt16BE(2);
    expect(flags & 0x8000).toBe(0x8000); // a response
    expect(flags & 0x0100).toBe(0x0100); // RD echoed
    expect((flags & 0x0400) !== 0).toBe(aa);
    expect(flags & 0x000f).toBe(rcode);
    expect(reply.readUInt16BE(4)).toBe(1); // the question echoed
    expect(reply.readUInt16BE(6)).toBe(answers.length);
    expect(parseQuestion(reply)?.name).toBe(name.toLowerCase());
    if (answers.length > 0) {
      const rdata = reply.subarray(reply.length - 4);
      expect([...rdata].join('.')).toBe(answers[0]);
      // A pointer to the question's name, type A, class IN, TTL 5, 4 bytes of data.
      expect([...reply.subarray(reply.length - 16, reply.length - 4)]).toEqual([0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 5, 0, 4]);
    }
  });

  it('answers a truncated message FORMERR and another opcode NOTIMP, with the query id', () => {
    const short = query('a.b', A).subarray(0, 14);
    expect(answer(short, NAMES).readUInt16BE(2) & 0x000f).toBe(1);
    const inverse = answer(query('disk-server.seed-demo.svc.cluster.local', A, 7, 0x0900), NAMES);
    expect(inverse.readUInt16BE(0)).toBe(7);
    expect(inverse.readUInt16BE(2) & 0x000f).toBe(4);
    expect(inverse).toHaveLength(12);
  });

  it('rejects a label length that runs past the message', () => {
    const q = query('abc.def', A);
    q[12] = 60;
    expect(parseQuestion(q)).toBeUndefined();
  });

  it('names every Service with an IPv4 ClusterIP, not headless ones', () => {
    const svc = (name: string, namespace: string, clusterIP?: string): V1Service => ({ metadata: { name, namespace }, spec: { clusterIP } });
    expect(serviceNames([svc('kubernetes', 'default', '10.96.0.1'), svc('headless', 'a', 'None'), svc('v6', 'a', 'fd00::1'), svc('pending', 'a')])).toEqual(
      new Map([['kubernetes.default.svc.cluster.local', '10.96.0.1']]),
    );
  });
});
