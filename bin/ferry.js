#!/usr/bin/env node
// Routes `ferry <command>` to the program that owns it. Each program is its own composition root.
import { existsSync, readFileSync, statSync } from 'node:fs';

const [command, ...args] = process.argv.slice(2);

// The programs run from dist/bundle/ (scripts/bundle.ts: a few files instead of ~200, less start-up
// CPU per pod) when the bundle is there and not older than tsc's output beside it; otherwise from tsc's
// output, so a `tsc` alone still runs what it compiled. FERRY_BUNDLE=0 never uses the bundle;
// FERRY_BUNDLE=1 fails when it cannot (the tests that must exercise the bundle set it).
const DIST = new URL('../dist/', import.meta.url);
let bundle;
function program(path) {
  bundle ??= bundleState();
  if (bundle.use) return import(new URL(`bundle/${path}`, DIST));
  if (process.env.FERRY_BUNDLE === '1') throw new Error(`FERRY_BUNDLE=1 but the bundle is not used: ${bundle.why}`);
  return import(new URL(path, DIST));
}

function bundleState() {
  if (process.env.FERRY_BUNDLE === '0') return { use: false, why: 'FERRY_BUNDLE=0' };
  let manifest;
  try {
    manifest = readFileSync(new URL('bundle/manifest.json', DIST), 'utf8');
  } catch {
    return { use: false, why: 'no dist/bundle/manifest.json (npm run build makes it)' };
  }
  // An image ships only the bundle: nothing to compare with.
  if (!existsSync(new URL('src', DIST))) return { use: true };
  const built = statSync(new URL('bundle/manifest.json', DIST)).mtimeMs;
  const lock = statSync(new URL('../node_modules/.package-lock.json', DIST), { throwIfNoEntry: false });
  if (lock && lock.mtimeMs > built) return { use: false, why: 'node_modules changed after the bundle was built' };
  for (const input of JSON.parse(manifest).inputs) {
    const s = statSync(new URL(input, DIST), { throwIfNoEntry: false });
    if (s && s.mtimeMs > built) return { use: false, why: `dist/${input} is newer than the bundle (run npm run build)` };
  }
  return { use: true };
}

const USAGE = `Usage: ferry <command> [options]

Commands:
  import     import a disk image into a raw file, block device or directory (ferry import --help)
  importer   run the importer pod program (reads its spec from the environment)
  uploadserver  receive one upload over mutual TLS into a volume (the upload pod; configured by its environment)
  uploadproxy   the cluster's upload endpoint: checks the token, streams the body to the PVC's upload server
  clone-source  send a volume (disk.img, block device or directory) to a clone target over mutual TLS (the clone source pod)
  clone-target  receive one clone stream into a volume (the clone target pod; configured by its environment)
  controller run the import and VM controllers (ferry controller --help)
  apiserver  the aggregated API (upload tokens, upload.cdi.kubevirt.io) behind an APIService (ferry apiserver --help)
  vm         start, stop or restart a VirtualMachine (ferry vm --help)
  expose     create a Service that reaches a VM's guest (ferry expose --help)
  launcher   run one VirtualMachineInstance: libvirtd, the domain, its console (ferry launcher --help)
  console    attach to a guest's serial console (ferry console <vmi>, or --socket PATH locally)
  vnc        a local port for a VNC viewer to a guest's display (ferry vnc <vmi>)
  image-upload  upload a local disk image into a PVC or DataVolume, as virtctl does (ferry image-upload --help)
  version    print Ferry's version (also what the pod that binds WaitForFirstConsumer volumes runs)
`;

async function run() {
  switch (command) {
    case 'import': {
      const { importCommand } = await program('importer/cli-main.js');
      return importCommand({ argv: args, stderr: process.stderr, env: process.env });
    }
    case 'controller': {
      const { controllerCommand } = await program('controller/main.js');
      return controllerCommand(args, process.env);
    }
    case 'apiserver': {
      const { apiServerCommand } = await program('apiserver/main.js');
      return apiServerCommand(args, process.env);
    }
    case 'vm': {
      const { vmCommand } = await program('cli/vm-main.js');
      return vmCommand(args, { stdout: process.stdout, stderr: process.stderr });
    }
    case 'expose': {
      const { exposeCommand } = await program('cli/vm-main.js');
      return exposeCommand(args, { stdout: process.stdout, stderr: process.stderr });
    }
    case 'launcher': {
      const { launcherCommand } = await program('launcher/main.js');
      return launcherCommand(args, process.env, { stdout: process.stdout, stderr: process.stderr });
    }
    case 'console': {
      // With --socket: the launcher's local attach (also what runs inside the pod); else the cluster.
      if (args.some((a) => a === '--socket' || a.startsWith('--socket=') || a === '-h' || a === '--help')) {
        const { consoleCommand } = await program('launcher/main.js');
        return consoleCommand(args, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
      }
      const { clusterConsoleCommand } = await program('cli/console-main.js');
      return clusterConsoleCommand(args, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
    }
    case 'image-upload': {
      const { imageUploadCommand } = await program('cli/image-upload-main.js');
      return imageUploadCommand(args, { stdout: process.stdout, stderr: process.stderr });
    }
    case 'vnc': {
      const { vncCommand } = await program('cli/console-main.js');
      return vncCommand(args, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
    }
    case 'importer': {
      const { main } = await program('importer/main.js');
      return main(process.env);
    }
    case 'uploadserver': {
      const { uploadServerMain } = await program('importer/upload-server-main.js');
      return uploadServerMain(process.env);
    }
    case 'uploadproxy': {
      const { uploadProxyMain } = await program('uploadproxy/main.js');
      return uploadProxyMain(process.env);
    }
    case 'version':
    case '--version': {
      const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
      process.stdout.write(`ferry ${version}\n`);
      return 0;
    }
    case 'clone-source': {
      const { cloneSourceMain } = await program('clone/source-main.js');
      return cloneSourceMain(process.env);
    }
    case 'clone-target': {
      const { cloneTargetMain } = await program('clone/target-main.js');
      return cloneTargetMain(process.env);
    }
    case undefined:
    case '-h':
    case '--help':
    case 'help':
      process.stderr.write(USAGE);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`error INVALID_SPEC: unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

run().then(
  (code) => process.exit(code),
  (err) => {
    process.stderr.write(`error INTERNAL: ${err && err.stack ? err.stack : err}\n`);
    process.exit(40);
  },
);
