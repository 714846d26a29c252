/**
 * The node cluster's DNS (docs/adr/0015-node-cluster-dns.md): a small authoritative server for the
 * `cluster.local` zone that the harness (node-cluster.ts) runs inside the cluster's network
 * namespace on the kubelet's `clusterDNS` address, so pods resolve `<svc>.<ns>.svc.cluster.local`
 * (and, through their resolv.conf search list, `<svc>.<ns>.svc` and `<svc>`) as CoreDNS's
 * `kubernetes` plugin answers them: an A record with the Service's ClusterIP.
 *
 *   node cluster-dns.js <kubeconfig> <listen address>
 *
 * Services come from the apiserver (a list every second, and again on a miss at most every 250 ms,
 * so a Service created just before a pod asks is found). A name under cluster.local that is not a
 * Service is NXDOMAIN; an existing name asked for another type (AAAA) is NOERROR without answers;
 * everything else is NXDOMAIN (no upstream: the namespace has no way out). UDP only, one question.
 * Prints `cluster-dns: serving <address>:53` once it has listed the Services and bound the port.
 */

import { createSocket } from 'node:dgram';
import * as k8s from '@kubernetes/client-node';

const ZONE = 'cluster.local';
const TTL_SECONDS = 5;
const RELIST_MS = 1000;
const MISS_RELIST_MS = 250;

/** DNS header flags and codes (RFC 1035 §4.1.1). */
const Dns = { QR: 0x8000, AA: 0x0400, RD: 0x0100, NOERROR: 0, FORMERR: 1, NXDOMAIN: 3, NOTIMP: 4, TypeA: 1, ClassIN: 1 } as const;

interface Question {
  readonly name: string;
  readonly type: number;
  /** The question section as received (echoed in the answer). */
  readonly raw: Buffer;
}

/** The first question of a query, or undefined for a malformed one (no compression in questions). */
export function parseQuestion(msg: Buffer): Question | undefined {
  if (msg.length < 17 || msg.readUInt16BE(4) < 1) return undefined;
  const labels: string[] = [];
  let i = 12;
  while (i < msg.length && msg[i] !== 0) {
    const len = msg[i]!;
    if (len > 63 || i + 1 + len >= msg.length) return undefined;
    labels.push(msg.subarray(i + 1, i + 1 + len).toString('latin1'));
    i += len + 1;
  }
  if (i + 5 > msg.length) return undefined;
  return { name: labels.join('.').toLowerCase(), type: msg.readUInt16BE(i + 1), raw: msg.subarray(12, i + 5) };
}

/** The answer to `query` given the names known (FQDN without the trailing dot → IPv4). */
export function answer(query: Buffer, names: ReadonlyMap<string, string>): Buffer {
  const head = Buffer.alloc(12);
  query.copy(head, 0, 0, 2);
  const rd = query.length >= 4 ? query.readUInt16BE(2) & Dns.RD : 0;
  if (((query.length >= 4 ? query.readUInt16BE(2) : 0) & 0x7800) !== 0) {
    head.writeUInt16BE(Dns.QR | rd | Dns.NOTIMP, 2); // not a standard query
    return head;
  }
  const q = parseQuestion(query);
  if (!q) {
    head.writeUInt16BE(Dns.QR | rd | Dns.FORMERR, 2);
    return head;
  }
  const ip = names.get(q.name);
  const inZone = q.name === ZONE || q.name.endsWith(`.${ZONE}`);
  head.writeUInt16BE(Dns.QR | (inZone ? Dns.AA : 0) | rd | (ip ? Dns.NOERROR : Dns.NXDOMAIN), 2);
  head.writeUInt16BE(1, 4);
  const record = ip && q.type === Dns.TypeA
    ? Buffer.concat([Buffer.from([0xc0, 0x0c, 0, Dns.TypeA, 0, Dns.ClassIN, 0, 0, 0, TTL_SECONDS, 0, 4]), Buffer.from(ip.split('.').map(Number))])
    : Buffer.alloc(0);
  head.writeUInt16BE(record.length > 0 ? 1 : 0, 6);
  return Buffer.concat([head, q.raw, record]);
}

/** `<svc>.<ns>.svc.cluster.local` → ClusterIP for every Service with an IPv4 ClusterIP (headless ones have none). */
export function serviceNames(services: readonly k8s.V1Service[]): Map<string, string> {
  const names = new Map<string, string>();
  for (const svc of services) {
    const ip = svc.spec?.clusterIP;
    if (!ip || ip === 'None' || !/^\d+\.\d+\.\d+\.\d+$/.test(ip)) continue;
    names.set(`${svc.metadata?.name}.${svc.metadata?.namespace}.svc.${ZONE}`, ip);
  }
  return names;
}

async function main(kubeconfig: string, address: string): Promise<void> {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(kubeconfig);
  const core = kc.makeApiClient(k8s.CoreV1Api);
  let names = new Map<string, string>();
  let listedAt = 0;
  let listing: Promise<void> | undefined;
  const relist = (): Promise<void> =>
    (listing ??= core.listServiceForAllNamespaces({})
      .then((l) => {
        names = serviceNames(l.items);
        listedAt = Date.now();
      })
      .catch((e: unknown) => void process.stderr.write(`cluster-dns: listing Services failed: ${String(e)}\n`))
      .finally(() => (listing = undefined)));
  for (let i = 0; i < 60 && listedAt === 0; i++) {
    await relist();
    if (listedAt === 0) await new Promise((r) => setTimeout(r, 1000));
  }
  if (listedAt === 0) throw new Error('cluster-dns: could not list Services for a minute');
  setInterval(() => void relist(), RELIST_MS).unref();

  const sock = createSocket('udp4');
  sock.on('message', (query, peer) => {
    const q = parseQuestion(query);
    const miss = q !== undefined && !names.has(q.name) && q.name.endsWith(`.svc.${ZONE}`) && Date.now() - listedAt > MISS_RELIST_MS;
    const reply = (): void => sock.send(answer(query, names), peer.port, peer.address);
    if (miss) void relist().then(reply);
    else reply();
  });
  await new Promise<void>((resolve, reject) => {
    sock.once('error', reject);
    sock.bind(53, address, () => resolve());
  });
  process.stdout.write(`cluster-dns: serving ${address}:53 (${names.size} Services)\n`);
  for (const s of ['SIGTERM', 'SIGINT'] as const) process.once(s, () => sock.close(() => process.exit(0)));
}

const [kubeconfigArg, addressArg] = process.argv.slice(2);
if (process.argv[1]?.endsWith('cluster-dns.js') && kubeconfigArg && addressArg) {
  main(kubeconfigArg, addressArg).catch((e: unknown) => {
    process.stderr.write(`${e instanceof Error ? e.message : String(e)}\n`);
    process.exit(1);
  });
}
