// Run inside the ferry image by images/verify.sh: serves FILE over HTTP on loopback (with Range, as
// nbdkit's curl plugin needs) and imports it with `ferry import`, which must read it in place
// through nbdkit. Exit status: ferry's, or 1 if the log does not show the nbdkit path.
import { spawn } from 'node:child_process';
import { createReadStream, statSync } from 'node:fs';
import { createServer } from 'node:http';

const [file, dest] = process.argv.slice(2);
const size = statSync(file).size;
const server = createServer((req, res) => {
  const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '');
  const start = m ? Number(m[1]) : 0;
  const end = m && m[2] !== '' ? Math.min(Number(m[2]), size - 1) : size - 1;
  res.writeHead(m ? 206 : 200, {
    'accept-ranges': 'bytes',
    'content-length': end - start + 1,
    ...(m ? { 'content-range': `bytes ${start}-${end}/${size}` } : {}),
  });
  if (req.method === 'HEAD') return void res.end();
  createReadStream(file, { start, end }).pipe(res);
});
server.listen(0, '127.0.0.1', () => {
  const url = `http://127.0.0.1:${server.address().port}/disk.qcow2`;
  const child = spawn('/usr/local/bin/node', ['/opt/ferry/bin/ferry.js', 'import', '--url', url, '--dest', dest, '--connections', '1', '--log-level', 'info', '--quiet'], { stdio: ['ignore', 'inherit', 'pipe'] });
  let log = '';
  child.stderr.on('data', (chunk) => { log += chunk; process.stderr.write(chunk); });
  child.on('exit', (code) => {
    server.close();
    const viaNbdkit = /"via":"nbdkit"/.test(log);
    console.log(viaNbdkit ? 'imported through nbdkit' : 'the log does not show the nbdkit path');
    process.exit(code !== 0 ? code : viaNbdkit ? 0 : 1);
  });
});
