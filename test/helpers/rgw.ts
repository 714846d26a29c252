/**
 * A real S3 server for tests: Ceph radosgw (Debian `radosgw`) on a one-node cluster (1 mon, 1
 * memstore OSD, no mgr, auth none), as in the infra probe's start-rgw.sh, but with every port free
 * and every file under a temp dir, so several test files can each run their own. The daemons run
 * in the foreground as children of the test process and are stopped by PID.
 */

import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { closeSync, mkdirSync, openSync, readFileSync, writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { CreateBucketCommand, DeleteObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { freePort } from './ferry-process.js';
import { removeDir, tempDir } from './fixtures.js';

const run = promisify(execFile);

/** Cold start takes ~14 s on two cores (the first RGW start creates its pools); allow for load. */
const START_TIMEOUT_MS = 90_000;

export interface RgwOptions {
  /** Also serve https (beast's ssl_endpoint) with this PEM certificate and key. */
  readonly tls?: { readonly cert: string; readonly key: string };
}

export interface Rgw {
  /** http://127.0.0.1:<port> */
  readonly url: string;
  /** https://127.0.0.1:<port>, when started with `tls`. */
  readonly httpsUrl?: string;
  readonly accessKeyId: string;
  readonly secretKey: string;
  /** How long the cold start took, for the record. */
  readonly startMs: number;
  /** A client for test set-up (buckets, objects) with the user's keys. */
  readonly client: S3Client;
  createBucket(bucket: string): Promise<void>;
  put(bucket: string, key: string, body: Buffer | string): Promise<string>;
  putFile(bucket: string, key: string, path: string): Promise<string>;
  remove(bucket: string, key: string): Promise<void>;
  /** Stops radosgw, the OSD and the mon by PID, and removes the temp dir. Safe to call twice. */
  stop(): Promise<void>;
}

interface Daemon {
  readonly name: string;
  readonly child: ChildProcess;
  exited: boolean;
  readonly exit: Promise<void>;
}

const live = new Set<Daemon>();
let exitHookInstalled = false;

/** If the test process ends without stop(), leave no daemon behind. */
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once('exit', () => {
    for (const d of live) if (!d.exited && d.child.pid !== undefined) process.kill(d.child.pid, 'SIGKILL');
  });
}

function startDaemon(name: string, bin: string, args: string[], dir: string): Daemon {
  const fd = openSync(join(dir, 'log', `${name}.out`), 'a');
  // -f: stay in the foreground (no fork), so the PID we hold is the daemon's.
  const child = spawn(bin, [...args, '-f'], { stdio: ['ignore', fd, fd], cwd: dir });
  closeSync(fd);
  let markExited = (): void => undefined;
  const exit = new Promise<void>((resolve) => {
    markExited = resolve;
  });
  const daemon: Daemon = { name, child, exited: false, exit };
  const done = (): void => {
    daemon.exited = true;
    live.delete(daemon);
    markExited();
  };
  child.once('exit', done);
  child.once('error', done);
  live.add(daemon);
  return daemon;
}

async function stopDaemon(d: Daemon): Promise<void> {
  if (d.exited || d.child.pid === undefined) return;
  d.child.kill('SIGTERM');
  const killed = await Promise.race([d.exit.then(() => true), sleep(5000, undefined, { ref: false }).then(() => false)]);
  if (!killed && !d.exited) {
    d.child.kill('SIGKILL');
    await d.exit;
  }
}

function tail(file: string, lines = 20): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

async function until(what: string, deadline: number, probe: () => Promise<boolean>): Promise<void> {
  while (Date.now() < deadline) {
    if (await probe().catch(() => false)) return;
    await sleep(200);
  }
  throw new Error(`rgw: timed out waiting for ${what}`);
}

function answers(url: string): Promise<boolean> {
  return new Promise((resolve) => {
    const req = request(url, { timeout: 2000 }, (res) => {
      res.resume();
      resolve(true);
    });
    req.on('error', () => resolve(false));
    req.on('timeout', () => req.destroy());
    req.end();
  });
}

function cephConf(dir: string, fsid: string, monPort: number, frontends: string): string {
  return `[global]
fsid = ${fsid}
mon host = v2:127.0.0.1:${monPort}
public addr = 127.0.0.1
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc secure
auth allow insecure global id reclaim = true
run dir = ${dir}/run
admin socket = ${dir}/run/$name.asok
log file = ${dir}/log/$name.log
keyring = ${dir}/keyring
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail warn = 1
mon data avail crit = 0
[mon]
mon data = ${dir}/mon/$cluster-$id
[osd]
osd data = ${dir}/osd/$cluster-$id
osd objectstore = memstore
memstore device bytes = ${1024 * 1024 * 1024}
osd max object name len = 460
osd max object namespace len = 64
[client.rgw.a]
rgw frontends = ${frontends}
`;
}

/** Starts a one-node Ceph cluster and radosgw with a user `ferry`; call stop() in afterAll. */
export async function startRgw(options: RgwOptions = {}): Promise<Rgw> {
  installExitHook();
  // The SDK's "Node 22 from 2027" notice says nothing about the code under test.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const started = Date.now();
  const deadline = started + START_TIMEOUT_MS;
  const dir = tempDir('ferry-rgw-');
  const daemons: Daemon[] = [];
  const stop = async (): Promise<void> => {
    // radosgw first, then the OSD, then the mon that both talk to.
    for (const d of daemons.slice().reverse()) await stopDaemon(d);
    daemons.length = 0;
    removeDir(dir);
  };
  try {
    for (const sub of ['mon', 'osd/ceph-0', 'run', 'log']) mkdirSync(join(dir, sub), { recursive: true });
    const [monPort, httpPort, httpsPort] = [await freePort(), await freePort(), await freePort()];
    let frontends = `beast endpoint=127.0.0.1:${httpPort}`;
    if (options.tls) {
      writeFileSync(join(dir, 'rgw.crt'), options.tls.cert);
      writeFileSync(join(dir, 'rgw.key'), options.tls.key, { mode: 0o600 });
      frontends += ` ssl_endpoint=127.0.0.1:${httpsPort} ssl_certificate=${join(dir, 'rgw.crt')} ssl_private_key=${join(dir, 'rgw.key')}`;
    }
    const fsid = randomUUID();
    const conf = join(dir, 'ceph.conf');
    writeFileSync(conf, cephConf(dir, fsid, monPort, frontends));
    const c = ['-c', conf];
    await run('ceph-authtool', ['--create-keyring', join(dir, 'keyring'), '--gen-key', '-n', 'mon.', '--cap', 'mon', 'allow *']);
    await run('monmaptool', ['--create', '--addv', 'a', `[v2:127.0.0.1:${monPort}]`, '--fsid', fsid, join(dir, 'monmap')]);
    await run('ceph-mon', [...c, '--mkfs', '-i', 'a', '--monmap', join(dir, 'monmap'), '--keyring', join(dir, 'keyring')]);
    daemons.push(startDaemon('mon', 'ceph-mon', [...c, '-i', 'a'], dir));
    const ceph = (...args: string[]): Promise<{ stdout: string }> => run('ceph', [...c, '--connect-timeout', '20', ...args], { timeout: 30_000 });
    await ceph('osd', 'create');
    await run('ceph-osd', [...c, '-i', '0', '--mkfs']);
    await ceph('osd', 'crush', 'add', 'osd.0', '1.0', 'host=localhost', 'root=default');
    daemons.push(startDaemon('osd', 'ceph-osd', [...c, '-i', '0'], dir));
    await until('the OSD', deadline, async () => / 1 up/.test((await ceph('osd', 'stat')).stdout));
    daemons.push(startDaemon('rgw', 'radosgw', [...c, '-n', 'client.rgw.a'], dir));
    const url = `http://127.0.0.1:${httpPort}`;
    await until('radosgw', deadline, () => answers(url));
    const accessKeyId = 'FERRYTESTACCESSKEY';
    const secretKey = 'ferry-test-secret-key-0123456789';
    await run('radosgw-admin', [...c, '-n', 'client.rgw.a', 'user', 'create', '--uid=ferry', '--display-name=ferry', `--access-key=${accessKeyId}`, `--secret-key=${secretKey}`]);
    const client = new S3Client({
      endpoint: url,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId, secretAccessKey: secretKey },
      // Pacific predates the SDK's default trailing checksums on uploads.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
    });
    const put = async (bucket: string, key: string, body: Buffer | string): Promise<string> =>
      (await client.send(new PutObjectCommand({ Bucket: bucket, Key: key, Body: body }))).ETag ?? '';
    return {
      url,
      ...(options.tls ? { httpsUrl: `https://127.0.0.1:${httpsPort}` } : {}),
      accessKeyId,
      secretKey,
      startMs: Date.now() - started,
      client,
      createBucket: async (bucket) => {
        await client.send(new CreateBucketCommand({ Bucket: bucket }));
      },
      put,
      putFile: async (bucket, key, path) => put(bucket, key, await readFile(path)),
      remove: async (bucket, key) => {
        await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: key }));
      },
      stop: async () => {
        client.destroy();
        await stop();
      },
    };
  } catch (err) {
    const logs = ['mon.a', 'osd.0', 'client.rgw.a'].map((n) => `--- ${n}\n${tail(join(dir, 'log', `${n}.log`))}`).join('\n');
    await stop();
    throw new Error(`rgw: start failed: ${(err as Error).message}\n${logs}`);
  }
}
