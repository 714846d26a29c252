/**
 * The README's main job on an embedded default: generate a qcow2 disk, serve it over HTTP on
 * loopback (with Range support, like a real image server), and import it with `ferry import`,
 * showing progress. Then check the result against the source with `qemu-img compare`.
 */

import { spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { sh, tempDir, removeDir } from '../test/helpers/fixtures.js';
import { startServer } from '../test/helpers/http-server.js';
import { FERRY_BIN } from '../test/helpers/ferry-process.js';

async function main(): Promise<number> {
  const dir = tempDir('ferry-demo-');
  const image = join(dir, 'demo.qcow2');
  const dest = join(dir, 'volume', 'disk.img');
  console.error(`ferry demo: building a 1 GiB qcow2 with 256 MiB of data in ${dir}`);
  sh('qemu-img', ['create', '-q', '-f', 'qcow2', image, '1G']);
  sh('dd', ['if=/dev/urandom', `of=${join(dir, 'random.bin')}`, 'bs=1M', 'count=128', 'status=none']);
  sh('qemu-io', ['-c', 'write -P 0xab 0 128M', '-c', `write -s ${join(dir, 'random.bin')} 512M 128M`, image]);
  const server = await startServer();
  server.route('/images/demo.qcow2', { file: image });
  const url = `${server.url}/images/demo.qcow2`;
  console.error(`ferry demo: serving ${url}`);
  console.error(`ferry demo: ferry import --url ${url} --dest ${dest} --size 2Gi\n`);
  const code = await new Promise<number>((resolve) => {
    const child = spawn(process.execPath, [FERRY_BIN, 'import', '--url', url, '--dest', dest, '--size', '2Gi', '--scratch-dir', join(dir, 'scratch')], { stdio: 'inherit' });
    child.on('close', (c) => resolve(c ?? 1));
  });
  await server.close();
  if (code === 0) {
    // The imported disk is the qcow2's content, grown to the 2 GiB capacity.
    const cmp = spawnSync('qemu-img', ['compare', '-f', 'qcow2', '-F', 'raw', image, dest], { encoding: 'utf8' });
    const info = spawnSync('qemu-img', ['info', '-f', 'raw', dest], { encoding: 'utf8' });
    // compare warns that the sizes differ: the import grew the disk to the 2 GiB capacity on purpose.
    const verdict = cmp.stdout.split('\n').filter((l) => l !== '' && !l.startsWith('Warning')).join(' ');
    console.error(`\nferry demo: ${verdict} (qemu-img compare of the source and the imported disk, exit ${cmp.status})`);
    console.error(info.stdout.split('\n').filter((l) => /virtual size|disk size/.test(l)).map((l) => `  ${l}`).join('\n'));
    removeDir(dir);
    return cmp.status === 0 ? 0 : 1;
  }
  removeDir(dir);
  return code;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    process.exit(1);
  },
);

