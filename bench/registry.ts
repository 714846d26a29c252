/**
 * Registry import benchmark (see bench/README.md, "Registry import"): a containerDisk with a 1 GiB
 * virtual qcow2 (512 MiB of random data) in a gzip layer, on the local docker-registry, imported
 * by `ferry import` against skopeo + tar + qemu-img doing the same job, in the same run.
 * Run as root (it drops the page cache between runs): npm run build && node dist/bench/registry.js [runs]
 */

import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { FERRY_BIN } from '../test/helpers/ferry-process.js';
import { sh, tempDir } from '../test/helpers/fixtures.js';
import { pushImage, startRegistry, writeOciLayout } from '../test/helpers/registry.js';
import { measure, median as mid } from './timing.js';

const runs = Number(process.argv[2] ?? 3);
const dir = tempDir('ferry-bench-registry-');
const f = (n: string): string => join(dir, n);

interface Row {
  readonly label: string;
  readonly seconds: number[];
  readonly rssMiB: number[];
}

async function main(): Promise<void> {
  console.error('fixtures: qcow2 (1 GiB virtual, 512 MiB random) in a gzip layer...');
  sh('dd', ['if=/dev/urandom', `of=${f('rand512')}`, 'bs=4M', 'count=128', 'status=none']);
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', f('disk.qcow2'), '1G']);
  sh('qemu-io', ['-c', `write -s ${f('rand512')} 256M 512M`, f('disk.qcow2')]);
  sh('qemu-img', ['convert', '-O', 'raw', f('disk.qcow2'), f('expected.img')]);
  rmSync(f('rand512'));
  const written = await writeOciLayout(f('layout'), 'v1', {
    layers: [{ compression: 'gzip', gzipLevel: 1, entries: [{ name: 'disk/', type: 'directory' }, { name: 'disk/disk.qcow2', file: f('disk.qcow2') }] }],
  });
  const layer = written.layers.get('linux/amd64')?.[0]?.digest.replace('sha256:', '') ?? '';
  const registry = await startRegistry(f('registry'));
  try {
    await pushImage(f('layout'), 'v1', registry, 'bench/containerdisk');
    rmSync(f('layout'), { recursive: true });
    const image = `docker://${registry.host}/bench/containerdisk:v1`;
    const clean = (): void => ['out.img', 'scratch', 'pulled', 'extracted'].forEach((n) => rmSync(f(n), { recursive: true, force: true }));
    const contenders: Array<{ label: string; command: string }> = [
      { label: '**ferry import** (stream the layer, disk to scratch, convert)', command: `node ${FERRY_BIN} import --quiet --insecure --url ${image} --dest ${f('out.img')} --scratch-dir ${f('scratch')}` },
      {
        label: '`skopeo copy` to oci: + `tar -xzf` + `qemu-img convert -O raw`',
        command:
          `skopeo --insecure-policy copy --quiet --src-tls-verify=false ${image} oci:${f('pulled')}:v1 && mkdir ${f('extracted')} && ` +
          `tar -xzf ${f('pulled')}/blobs/sha256/${layer} -C ${f('extracted')} disk/disk.qcow2 && qemu-img convert -O raw ${f('extracted')}/disk/disk.qcow2 ${f('out.img')}`,
      },
      { label: '`qemu-img convert -O raw` of the local qcow2 (floor)', command: `qemu-img convert -O raw ${f('disk.qcow2')} ${f('out.img')}` },
    ];
    const rows: Row[] = contenders.map((c) => ({ label: c.label, seconds: [], rssMiB: [] }));
    // Interleaved, so drift on the shared machine hits every contender alike.
    for (let run = 0; run < runs; run += 1) {
      for (const [i, c] of contenders.entries()) {
        const sample = await measure(c.command);
        if (run === 0) sh('qemu-img', ['compare', '-q', '-f', 'raw', '-F', 'raw', f('out.img'), f('expected.img')]);
        rows[i]?.seconds.push(sample.seconds);
        rows[i]?.rssMiB.push(sample.peakRssMiB);
        console.error(`${c.label}: ${sample.seconds.toFixed(2)} s, peak RSS ${sample.peakRssMiB} MiB`);
        clean();
      }
    }
    console.log('| contender | median s (runs) | peak RSS MiB (median) |');
    console.log('|---|---|---|');
    for (const r of rows) console.log(`| ${r.label} | ${mid(r.seconds).toFixed(2)} (${r.seconds.map((s) => s.toFixed(2)).join(', ')}) | ${mid(r.rssMiB)} |`);
  } finally {
    await registry.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
