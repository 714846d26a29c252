/**
 * The clone data plane against the physical limit (bench/README.md, "Clone: the data plane"):
 *
 * 1. A 10 GiB-virtual disk holding 1 GiB of random data in 256 extents of 4 MiB, fs → fs on the
 *    same filesystem: `ferry clone-source` → `ferry clone-target` over mutual TLS on loopback
 *    against `cp --sparse=always` of the same file, interleaved, page cache dropped before each
 *    run, `sync` inside the timing. Bytes on the wire: the stream's bytes (the source's count) and
 *    the TCP bytes through a counting relay (TLS included), against the source's allocated bytes.
 *    The target is started and healthy before the clock starts, as its pod is before the source's.
 * 2. Compression: the same extent stream sent raw or through `zstd -1` (and `zstd -d` on the far
 *    side) over plain TCP, on loopback and through bench/wan-proxy.ts at 100 ms RTT with a 3 MiB
 *    window (~31 MB/s per connection), for random data and for data like an OS image's (the files
 *    of /usr, concatenated).
 *
 * Run as root (it drops the page cache between runs):
 *   npm run build && node dist/bench/clone.js [runs] [part: 1,2]
 */

import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readdirSync, readFileSync, rmSync, lstatSync, writeFileSync, writeSync } from 'node:fs';
import { request } from 'node:https';
import { type AddressInfo, connect, createServer, type Socket } from 'node:net';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { diskStream } from '../clone/source.js';
import { openSourceDisk, sourceExtents } from '../clone/disk-extents.js';
import { cloneClientName, encodeCloneSourceEnv } from '../src/contract/clone-env.js';
import { WORKER_NODE_OPTIONS } from '../src/contract/import-spec.js';
import { CLONE_PATH } from '../src/contract/clone-stream.js';
import { decodeTermination } from '../src/contract/termination.js';
import { encodeUploadServerEnv } from '../src/contract/upload-server.js';
import { FERRY_BIN, freePort } from '../test/helpers/ferry-process.js';
import { allocatedBytes, sh, tempDir } from '../test/helpers/fixtures.js';
import { issueCert, makeCa } from '../test/helpers/tls.js';
import { dropCaches, measure, median } from './timing.js';
import { startWanProxy } from './wan-proxy.js';

const runs = Number(process.argv[2] ?? 3);
const parts = (process.argv[3] ?? '1,2').split(',');
const MiB = 1024 * 1024;
const GiB = 1024 * MiB;
const MB = 1e6;

const dir = tempDir('ferry-bench-clone-');
const f = (n: string): string => join(dir, n);

function writeAt(fd: number, offset: number, bytes: Buffer): void {
  for (let at = 0; at < bytes.length; ) at += writeSync(fd, bytes, at, bytes.length - at, offset + at);
}

/** `size` virtual, `extents` × `extentBytes` of data from `fill`, spread evenly. */
function makeDisk(path: string, size: number, extents: number, extentBytes: number, fill: (i: number) => Buffer): void {
  writeFileSync(path, '');
  sh('truncate', ['-s', String(size), path]);
  const fd = openSync(path, 'r+');
  try {
    const stride = Math.floor(size / extents / MiB) * MiB;
    for (let i = 0; i < extents; i += 1) writeAt(fd, i * stride, fill(i));
  } finally {
    closeSync(fd);
  }
}

/** Data like an OS image's: the files under /usr, concatenated, `bytes` long. */
function osLikeData(bytes: number): Buffer {
  const out = Buffer.alloc(bytes);
  let at = 0;
  const walk = (d: string): void => {
    for (const name of readdirSync(d)) {
      if (at >= bytes) return;
      const p = join(d, name);
      const st = lstatSync(p);
      if (st.isDirectory()) walk(p);
      else if (st.isFile() && st.size > 0) at += readFileSync(p).copy(out, at);
    }
  };
  walk('/usr');
  if (at < bytes) throw new Error(`/usr holds only ${at} bytes`);
  return out;
}

// ---- part 1: ferry clone vs cp --sparse=always ----

const CLIENT = cloneClientName({ namespace: 'golden', name: 'bench' }, { namespace: 'user', name: 'bench' });

function pki(): { server: { key: string; cert: string }; client: { key: string; cert: string }; serverCa: string; clientCa: string } {
  const serverCa = makeCa(dir, 'server-ca');
  const clientCa = makeCa(dir, 'client-ca');
  const write = (name: string, pem: { key: string; cert: string }): { key: string; cert: string } => {
    writeFileSync(f(`${name}.key`), pem.key);
    writeFileSync(f(`${name}.crt`), pem.cert);
    return { key: f(`${name}.key`), cert: f(`${name}.crt`) };
  };
  return {
    server: write('server', issueCert(serverCa, 'server-pem', 'target', 'server')),
    client: write('client', issueCert(clientCa, 'client-pem', CLIENT.replaceAll('/', '\\/'), 'client')),
    serverCa: serverCa.caFile,
    clientCa: clientCa.caFile,
  };
}

/**
 * FERRY_BENCH_NODE_ARGS: extra node flags for both programs (e.g. `--cpu-prof --cpu-prof-dir=DIR`);
 * FERRY_BENCH_LOGS=DIR: keep their logs; FERRY_BENCH_CPU_SPLIT=1: print each program's user and sys CPU;
 * FERRY_BENCH_NODE_OPTIONS: NODE_OPTIONS for both instead of the pods' (WORKER_NODE_OPTIONS).
 */
const nodeArgs = (process.env.FERRY_BENCH_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');

function run(args: string[], env: Record<string, string>): { done: Promise<{ code: number | null; stderr: string; peakRssMiB: number; cpuSeconds: number }> } {
  const logs = process.env.FERRY_BENCH_LOGS; // a directory: each program's log lines are appended to <program>.log there
  const stdout = logs !== undefined ? openSync(join(logs, `${args[0]}.log`), 'a') : 'ignore';
  const child = spawn('/usr/bin/time', ['-f', '%U %S %M', process.execPath, ...nodeArgs, FERRY_BIN, ...args], { env: { PATH: process.env.PATH ?? '', NODE_OPTIONS: process.env.FERRY_BENCH_NODE_OPTIONS ?? WORKER_NODE_OPTIONS, ...env }, stdio: ['ignore', stdout, 'pipe'] });
  if (typeof stdout === 'number') closeSync(stdout);
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()));
  return {
    done: new Promise((resolve) =>
      child.on('close', (code) => {
        const [user, sys, rss] = (stderr.trim().split('\n').at(-1) ?? '').split(' ').map(Number);
        if (process.env.FERRY_BENCH_CPU_SPLIT !== undefined) console.error(`${args[0]}: user ${user} s, sys ${sys} s`);
        resolve({ code, stderr, peakRssMiB: Math.round((rss ?? 0) / 1024), cpuSeconds: (user ?? 0) + (sys ?? 0) });
      }),
    ),
  };
}

async function healthy(port: number, ca: string, exited: Promise<unknown>): Promise<void> {
  let gone = false;
  void exited.then(() => (gone = true));
  for (let i = 0; i < 1200 && !gone; i += 1) {
    const ok = await new Promise<boolean>((resolve) => {
      const req = request({ host: '127.0.0.1', port, path: '/healthz', ca: readFileSync(ca), servername: 'localhost', agent: false }, (res) => {
        res.resume();
        resolve(res.statusCode === 200);
      });
      req.on('error', () => resolve(false));
      req.end();
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`the clone target did not start: ${gone ? JSON.stringify(await exited) : 'not healthy in 60 s'}`);
}

/** A TCP relay that counts the bytes from client to server. */
async function countingRelay(port: number): Promise<{ port: number; bytes: () => number; close: () => Promise<void> }> {
  let bytes = 0;
  const sockets = new Set<Socket>();
  const server = createServer((client) => {
    const upstream = connect(port, '127.0.0.1');
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.on('error', () => s.destroy());
      s.on('close', () => sockets.delete(s));
    }
    client.on('data', (d: Buffer) => (bytes += d.length));
    client.pipe(upstream);
    upstream.pipe(client);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    bytes: () => bytes,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((r) => server.close(() => r()));
    },
  };
}

interface CloneRun {
  readonly seconds: number;
  readonly streamBytes: number;
  readonly tcpBytes?: number;
  readonly sourceRss: number;
  readonly targetRss: number;
  readonly sourceCpu: number;
  readonly targetCpu: number;
}

async function ferryClone(source: string, dest: string, certs: ReturnType<typeof pki>, viaRelay: boolean): Promise<CloneRun> {
  rmSync(dest, { force: true });
  const port = await freePort();
  const targetTermination = f('target.term');
  const target = run(['clone-target'], encodeUploadServerEnv({
    target: { kind: 'file', path: dest },
    contentType: 'kubevirt',
    filesystemOverhead: 0,
    preallocation: false,
    tls: { keyFile: certs.server.key, certFile: certs.server.cert, clientCaFile: certs.clientCa },
    clientName: CLIENT,
    port,
    host: '127.0.0.1',
    terminationLog: targetTermination,
  }));
  await healthy(port, certs.serverCa, target.done);
  const relay = viaRelay ? await countingRelay(port) : undefined;
  dropCaches();
  const sourceTermination = f('source.term');
  const started = performance.now();
  const sent = await run(['clone-source'], encodeCloneSourceEnv({
    kind: 'fs',
    path: source,
    url: `https://127.0.0.1:${relay?.port ?? port}${CLONE_PATH}`,
    tls: { keyFile: certs.client.key, certFile: certs.client.cert, serverCaFile: certs.serverCa },
    terminationLog: sourceTermination,
  })).done;
  const received = await target.done;
  sh('sync', []);
  const seconds = (performance.now() - started) / 1000;
  await relay?.close();
  if (sent.code !== 0 || received.code !== 0) throw new Error(`clone failed: source ${sent.code}, target ${received.code}\n${sent.stderr}\n${received.stderr}`);
  const message = decodeTermination(readFileSync(sourceTermination, 'utf8')).message;
  const streamBytes = Number(/(\d+) on the wire/.exec(message)?.[1]);
  return { seconds, streamBytes, ...(relay ? { tcpBytes: relay.bytes() } : {}), sourceRss: sent.peakRssMiB, targetRss: received.peakRssMiB, sourceCpu: sent.cpuSeconds, targetCpu: received.cpuSeconds };
}

async function partOne(): Promise<void> {
  const source = f('golden/disk.img');
  mkdirSync(f('golden'));
  mkdirSync(f('copy'));
  console.log('making a 10 GiB-virtual disk with 1 GiB of random data (256 × 4 MiB) …');
  makeDisk(source, 10 * GiB, 256, 4 * MiB, () => randomBytes(4 * MiB));
  const allocated = allocatedBytes(source);
  const certs = pki();
  const cp: number[] = [];
  const cpCpu: number[] = [];
  const clone: CloneRun[] = [];
  for (let i = 0; i < runs; i += 1) {
    rmSync(f('copy/cp.img'), { force: true });
    const copied = await measure(`cp --sparse=always ${source} ${f('copy/cp.img')}`);
    cp.push(copied.seconds);
    cpCpu.push(copied.cpuSeconds);
    clone.push(await ferryClone(source, f('copy/disk.img'), certs, false));
    if (i === 0) {
      sh('qemu-img', ['compare', '-f', 'raw', '-F', 'raw', source, f('copy/disk.img')]); // skips holes: cmp reads 20 GiB
      console.log(`checked: identical; allocated source ${allocated}, cp ${allocatedBytes(f('copy/cp.img'))}, clone ${allocatedBytes(f('copy/disk.img'))}`);
    }
  }
  const counted = await ferryClone(source, f('copy/disk.img'), certs, true);
  const cpMedian = median(cp);
  const cloneMedian = median(clone.map((c) => c.seconds));
  const cpu = (xs: readonly number[]): string => median(xs).toFixed(2);
  console.log('\n| contender | median s (runs) | × cp | bytes sent | × allocated | peak RSS MiB (source / target) | CPU s (source / target) |');
  console.log('|---|---|---|---|---|---|---|');
  console.log(`| \`cp --sparse=always\` | ${cpMedian.toFixed(2)} (${cp.map((s) => s.toFixed(2)).join(', ')}) | 1 | — | — | — | ${cpu(cpCpu)} |`);
  console.log(`| ferry clone-source → clone-target (mTLS, loopback) | ${cloneMedian.toFixed(2)} (${clone.map((c) => c.seconds.toFixed(2)).join(', ')}) | ${(cloneMedian / cpMedian).toFixed(2)} | stream ${clone[0]?.streamBytes}; TCP ${counted.tcpBytes} | ${((clone[0]?.streamBytes ?? 0) / allocated).toFixed(4)}; ${((counted.tcpBytes ?? 0) / allocated).toFixed(4)} | ${median(clone.map((c) => c.sourceRss))} / ${median(clone.map((c) => c.targetRss))} | ${cpu(clone.map((c) => c.sourceCpu))} / ${cpu(clone.map((c) => c.targetCpu))} |`);
  console.log(`allocated bytes of the source: ${allocated}; through the counting relay the clone took ${counted.seconds.toFixed(2)} s`);
}

// ---- part 2: compression ----

/** A TCP sink: counts what arrives (optionally through `zstd -d`); resolves when the sender closes. */
async function sink(decompress: boolean): Promise<{ port: number; done: Promise<number>; close: () => void }> {
  let resolveDone!: (n: number) => void;
  const done = new Promise<number>((r) => (resolveDone = r));
  const server = createServer((socket) => {
    let bytes = 0;
    socket.on('data', (d: Buffer) => (bytes += d.length));
    if (!decompress) {
      socket.on('end', () => resolveDone(bytes));
      socket.resume();
      return;
    }
    const zstd = spawn('zstd', ['-d', '-q', '-c'], { stdio: ['pipe', 'ignore', 'inherit'] });
    socket.pipe(zstd.stdin);
    zstd.on('close', () => resolveDone(bytes));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as AddressInfo).port, done, close: () => server.close() };
}

/** Sends the disk's clone stream to `port`, raw or through `zstd -1`; seconds and bytes sent. */
async function sendStream(path: string, port: number, compress: boolean, arrived: Promise<number>): Promise<{ seconds: number; bytes: number }> {
  dropCaches();
  const started = performance.now();
  const disk = await openSourceDisk(path, 'fs');
  const socket = connect(port, '127.0.0.1');
  await new Promise<void>((r) => socket.once('connect', () => r()));
  const counters = { wireBytes: 0, dataBytes: 0 };
  const stream = diskStream(disk, await sourceExtents(disk), counters);
  if (compress) {
    const zstd = spawn('zstd', ['-1', '-q', '-c'], { stdio: ['pipe', 'pipe', 'inherit'] });
    await Promise.all([pipeline(Readable.from(stream), zstd.stdin), pipeline(zstd.stdout, socket)]);
  } else {
    await pipeline(Readable.from(stream), socket);
  }
  const bytes = await arrived;
  await disk.handle.close();
  return { seconds: (performance.now() - started) / 1000, bytes };
}

async function partTwo(): Promise<void> {
  const data = 256 * MiB;
  console.log('making two 1 GiB-virtual disks with 256 MiB of data: random, and /usr files …');
  const os = osLikeData(data);
  makeDisk(f('random.img'), GiB, 64, 4 * MiB, () => randomBytes(4 * MiB));
  makeDisk(f('os.img'), GiB, 64, 4 * MiB, (i) => os.subarray(i * 4 * MiB, (i + 1) * 4 * MiB));
  const links = { loopback: undefined, '100 ms RTT, 3 MiB window': { rttMs: 100, windowBytes: 3 * MiB } } as const;
  console.log('\n| data | link | none: median s | zstd -1: median s | bytes none → zstd |');
  console.log('|---|---|---|---|---|');
  for (const image of ['random.img', 'os.img']) {
    for (const [name, link] of Object.entries(links)) {
      const times: Record<'none' | 'zstd', number[]> = { none: [], zstd: [] };
      const bytes: Record<'none' | 'zstd', number> = { none: 0, zstd: 0 };
      for (let i = 0; i < runs; i += 1) {
        for (const mode of ['none', 'zstd'] as const) {
          const receiver = await sink(mode === 'zstd');
          const proxy = link ? await startWanProxy(receiver.port, link) : undefined;
          const r = await sendStream(f(image), proxy?.port ?? receiver.port, mode === 'zstd', receiver.done);
          await proxy?.close();
          receiver.close();
          times[mode].push(r.seconds);
          bytes[mode] = r.bytes;
        }
      }
      console.log(`| ${image === 'os.img' ? '/usr files' : 'random'} | ${name} | ${median(times.none).toFixed(2)} (${times.none.map((s) => s.toFixed(2)).join(', ')}) | ${median(times.zstd).toFixed(2)} (${times.zstd.map((s) => s.toFixed(2)).join(', ')}) | ${(bytes.none / MB).toFixed(0)} MB → ${(bytes.zstd / MB).toFixed(0)} MB |`);
    }
  }
}

try {
  if (parts.includes('1')) await partOne();
  if (parts.includes('2')) await partTwo();
} finally {
  rmSync(dir, { recursive: true, force: true });
}
