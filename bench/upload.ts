/**
 * Upload throughput and memory (issue #14, bench/README.md "Upload"): a 2 GiB raw image and its
 * qcow2 through `ferry image-upload` and `virtctl image-upload` → `ferry uploadproxy` →
 * `ferry uploadserver` (the whole stack of test/helpers/upload-stack.ts on a real control plane),
 * against `curl -T` of the same files to a plain HTTPS file sink on the same machine, in the same
 * run, interleaved (curl, ferry, virtctl for each file, then again). Each timing starts with a
 * dropped page cache and ends with `sync` (bench/timing.ts); the target PVC is made and its server
 * ready before the clock starts (`--no-create`), so a row is the token, the upload and the wait for
 * processing (both clients poll the PVC every 2 s).
 * Peak RSS: the server's VmHWM sampled every 100 ms by the kubelet loop; the proxy's VmHWM, reset
 * (`/proc/<pid>/clear_refs` 5) before each row, and its VmRSS just before (idle).
 * The proxy runs as its pod does, in-cluster (its ServiceAccount's token). With
 * FERRY_BENCH_PROXY_ACCESS=both a second proxy reaching the API through a kubeconfig (which loads
 * client-node, as every proxy did before bench/README.md's "The proxy's memory") takes each
 * client's upload too, in the same run, interleaved.
 * CPU and disk (load does not change them): per row, the change in this process's
 * `/proc/self/stat` utime+stime+cutime+cstime and `/proc/self/io` write_bytes, read once the
 * row's processes have exited and been reaped (a reaped child's CPU and I/O are added to its
 * parent's, recursively): the client and the upload server with its qemu-img for a ferry/virtctl
 * row, curl and the sink for a curl row. The proxy (alive throughout) is read from its own /proc.
 *
 *   npm run build && node dist/bench/upload.js [runs=2] [GiB=2]     # as root
 */

import { execFileSync } from 'node:child_process';
import { createWriteStream, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Annotation } from '../src/api/cdi.js';
import { UploadAnnotation } from '../src/contract/upload-api.js';
import { FERRY_BIN } from '../test/helpers/ferry-process.js';
import { convertImage, tempDir } from '../test/helpers/fixtures.js';
import { waitFor } from '../test/helpers/kubelet.js';
import { issueCert, makeCa } from '../test/helpers/tls.js';
import { startUploadStack } from '../test/helpers/upload-stack.js';
import { buildOrFindVirtctl } from '../test/helpers/virtctl.js';
import { measure, median } from './timing.js';

const GiB = 1024 ** 3;
const runs = Number(process.argv[2] ?? 2);
const size = Math.round(Number(process.argv[3] ?? 2) * GiB);
const compareAccess = process.env.FERRY_BENCH_PROXY_ACCESS === 'both';
const dir = tempDir('ferry-bench-upload-');
const f = (n: string): string => join(dir, n);

/** A plain HTTPS sink: the body to a file, 201 once it is all written. */
async function startSink(): Promise<{ port: number; close(): void }> {
  const ca = makeCa(dir, 'sink-ca');
  const leaf = issueCert(ca, 'sink', '127.0.0.1', 'server');
  const server = createServer({ key: leaf.key, cert: leaf.cert }, (req, res) => {
    const out = createWriteStream(f('sink.out'));
    req.pipe(out);
    out.on('finish', () => {
      res.writeHead(201);
      res.end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as AddressInfo).port, close: () => server.close() };
}

/** The PID listening on `port`, once one does. */
function pidListening(port: number): Promise<number> {
  return waitFor(`a listener on ${port}`, async () => Number(/pid=(\d+)/.exec(execFileSync('ss', ['-ltnpH', `sport = :${port}`]).toString())?.[1]) || undefined, 30_000, 200);
}

const statusKb = (pid: number, field: 'VmHWM' | 'VmRSS'): number => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) * 1024;
const vmHwm = (pid: number): number => statusKb(pid, 'VmHWM');
const resetHwm = (pid: number): void => writeFileSync(`/proc/${pid}/clear_refs`, '5');
const mib = (bytes: number | undefined): number => Math.round((bytes ?? 0) / 1024 ** 2);
const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

/** CPU seconds and bytes written to storage: `pid`'s own, or with `children` those of its reaped children too. */
function usage(pid: number | 'self', children: boolean): { readonly cpu: number; readonly written: number } {
  // Fields after the command's closing parenthesis: utime is the 12th, stime, cutime, cstime follow.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ').map(Number);
  const ticks = (fields[11] ?? 0) + (fields[12] ?? 0) + (children ? (fields[13] ?? 0) + (fields[14] ?? 0) : 0);
  const written = Number(/write_bytes:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1] ?? 0);
  return { cpu: ticks / CLK_TCK, written };
}
const since = (before: { cpu: number; written: number }, after: { cpu: number; written: number }) => ({ cpu: after.cpu - before.cpu, written: after.written - before.written });

interface Row {
  readonly label: string;
  readonly seconds: number[];
  readonly serverRss: number[];
  readonly proxyRss: number[];
  /** The proxy's VmRSS just before the row. */
  readonly proxyIdleRss: number[];
  /** CPU seconds of the client and server processes (curl and sink for curl), and of the proxy. */
  readonly cpu: number[];
  readonly proxyCpu: number[];
  /** Bytes written to storage by those processes. */
  readonly written: number[];
}

interface Cost {
  readonly cpu: number;
  readonly written: number;
  readonly proxyCpu?: number;
}

async function main(): Promise<void> {
  const virtctl = buildOrFindVirtctl();
  console.error(`images: ${size} bytes of random data, and its qcow2 …`);
  execFileSync('sh', ['-c', `head -c ${size} /dev/urandom > ${f('disk.raw')}`]);
  convertImage(f('disk.raw'), 'qcow2', f('disk.qcow2'));
  const stack = await startUploadStack(dir, { serverTimeoutMs: 3_600_000, logLevel: 'warn', kubeconfigProxy: compareAccess });
  const sink = await startSink();
  const rows = new Map<string, Row>();
  const add = (label: string, seconds: number, cost: Cost, serverRss?: number, proxyRss?: { readonly idle: number; readonly peak: number }): void => {
    const row = rows.get(label) ?? { label, seconds: [], serverRss: [], proxyRss: [], proxyIdleRss: [], cpu: [], proxyCpu: [], written: [] };
    row.seconds.push(seconds);
    row.cpu.push(cost.cpu);
    row.written.push(cost.written);
    if (cost.proxyCpu !== undefined) row.proxyCpu.push(cost.proxyCpu);
    if (serverRss !== undefined) row.serverRss.push(mib(serverRss));
    if (proxyRss !== undefined) row.proxyRss.push(mib(proxyRss.peak));
    if (proxyRss !== undefined) row.proxyIdleRss.push(mib(proxyRss.idle));
    rows.set(label, row);
    console.error(
      `${label}: ${seconds.toFixed(2)} s, ${(size / GiB / seconds * 1024).toFixed(0)} MiB/s, CPU ${cost.cpu.toFixed(2)} s${cost.proxyCpu !== undefined ? ` + proxy ${cost.proxyCpu.toFixed(2)} s` : ''}, written ${mib(cost.written)} MiB${serverRss !== undefined ? `, server ${mib(serverRss)} MiB, proxy ${mib(proxyRss?.idle)} → ${mib(proxyRss?.peak)} MiB` : ''}`,
    );
  };
  let serial = 0;
  try {
    // Inside the try: whatever fails from here, the stack's processes are stopped.
    const proxies = [{ label: '', url: stack.proxyUrl, pid: await pidListening(stack.proxyPort) }];
    if (stack.kubeconfigProxy) proxies.push({ label: ' (proxy via kubeconfig)', url: stack.kubeconfigProxy.url, pid: await pidListening(stack.kubeconfigProxy.port) });
    for (const p of proxies) console.error(`proxy${p.label || ' (in-cluster)'}: ${mib(statusKb(p.pid, 'VmRSS'))} MiB RSS after start (peak ${mib(vmHwm(p.pid))} MiB)`);
    const ns = await stack.cp.newNamespace('bench');
    for (let run = 1; run <= runs; run += 1) {
      for (const format of ['raw', 'qcow2'] as const) {
        const image = f(`disk.${format}`);
        const bytes = statSync(image).size;
        const curlBefore = usage('self', true);
        const curl = await measure(`curl -sS --fail -k -T ${image} https://127.0.0.1:${sink.port}/sink -o /dev/null`);
        add(`curl -T ${format} (${bytes} B) → HTTPS file sink`, curl.seconds, since(curlBefore, usage('self', true)));
        rmSync(f('sink.out'), { force: true });
        for (const client of ['ferry', 'virtctl'] as const) for (const proxy of proxies) {
          const name = `${client}-${format}-${(serial += 1)}`;
          // The target as each client would make it: ferry's asks for a resumable upload (scratch from the start).
          await stack.core.createNamespacedPersistentVolumeClaim({
            namespace: ns,
            body: {
              metadata: { name, annotations: { [UploadAnnotation.UploadTarget]: '', [Annotation.ContentType]: 'kubevirt', ...(client === 'ferry' ? { [UploadAnnotation.Resumable]: 'true' } : {}) } },
              spec: { accessModes: ['ReadWriteOnce'], resources: { requests: { storage: `${Math.ceil((size * 1.3) / GiB)}Gi` } } },
            },
          });
          await waitFor(`${name} ready`, async () => ((await stack.core.readNamespacedPersistentVolumeClaim({ namespace: ns, name })).metadata?.annotations?.[UploadAnnotation.PodReady] === 'true' ? true : undefined), 120_000, 200);
          const proxyIdle = statusKb(proxy.pid, 'VmRSS');
          resetHwm(proxy.pid);
          const before = usage('self', true);
          const proxyBefore = usage(proxy.pid, false);
          const args = `pvc ${name} --no-create --image-path ${image} --uploadproxy-url ${proxy.url} --insecure -n ${ns} --wait-secs 600 --kubeconfig ${stack.cp.kubeconfigPath}`;
          const command = client === 'ferry' ? `${process.execPath} ${FERRY_BIN} image-upload ${args} > /dev/null 2>&1` : `${virtctl} image-upload ${args} > /dev/null 2>&1`;
          const sample = await measure(command);
          const proxyRss = { idle: proxyIdle, peak: vmHwm(proxy.pid) };
          await waitFor(`${name} Succeeded`, async () => ((await stack.core.readNamespacedPersistentVolumeClaim({ namespace: ns, name })).metadata?.annotations?.[Annotation.PodPhase] === 'Succeeded' ? true : undefined), 600_000, 500);
          // The server has exited once no signal reaches it (SIGCONT changes nothing), and the kubelet loop has reaped it.
          await waitFor(`${name} server exited`, async () => (stack.kubelet.kill(ns, name, 'SIGCONT') ? undefined : true), 120_000, 200);
          const cost = { ...since(before, usage('self', true)), proxyCpu: since(proxyBefore, usage(proxy.pid, false)).cpu };
          add(`${client} image-upload ${format} → proxy → server${proxy.label}`, sample.seconds, cost, stack.kubelet.peakRssOf(ns, name), proxyRss);
          rmSync(stack.kubelet.volumesOf(ns, name) ?? f('none'), { recursive: true, force: true });
        }
      }
    }
  } finally {
    sink.close();
    await stack.stop();
    rmSync(dir, { recursive: true, force: true });
  }
  console.log(`\n${runs} runs, ${size} bytes, medians (runs):\n`);
  console.log('| contender | median s (runs) | MiB/s | vs curl | CPU s (client+server; curl+sink) | proxy CPU s | written to disk MiB | server peak RSS MiB | proxy RSS before → peak MiB |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const format of ['raw', 'qcow2']) {
    const curl = [...rows.values()].find((r) => r.label.startsWith(`curl -T ${format}`));
    const curlMedian = median(curl?.seconds ?? []);
    for (const row of [...rows.values()].filter((r) => r.label.includes(` ${format}`))) {
      const s = median(row.seconds);
      console.log(
        `| ${row.label} | ${s.toFixed(2)} (${row.seconds.map((x) => x.toFixed(2)).join(', ')}) | ${((size / 1024 ** 2) / s).toFixed(0)} | ${(curlMedian / s).toFixed(2)}× | ${median(row.cpu).toFixed(2)} | ${row.proxyCpu.length ? median(row.proxyCpu).toFixed(2) : '—'} | ${mib(median(row.written))} | ${row.serverRss.length ? `${Math.max(...row.serverRss)}` : '—'} | ${row.proxyRss.length ? `${Math.max(...row.proxyIdleRss)} → ${Math.max(...row.proxyRss)}` : '—'} |`,
      );
    }
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
