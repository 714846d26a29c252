#!/usr/bin/env node
// Routes `ferry <command>` to the program that owns it. Each program is its own composition root.
const [command, ...args] = process.argv.slice(2);

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
      const { importCommand } = await import('../dist/importer/cli-main.js');
      return importCommand({ argv: args, stderr: process.stderr, env: process.env });
    }
    case 'controller': {
      const { controllerCommand } = await import('../dist/controller/main.js');
      return controllerCommand(args, process.env);
    }
    case 'apiserver': {
      const { apiServerCommand } = await import('../dist/apiserver/main.js');
      return apiServerCommand(args, process.env);
    }
    case 'vm': {
      const { vmCommand } = await import('../dist/cli/vm-main.js');
      return vmCommand(args, { stdout: process.stdout, stderr: process.stderr });
    }
    case 'expose': {
      const { exposeCommand } = await import('../dist/cli/vm-main.js');
      return exposeCommand(args, { stdout: process.stdout, stderr: process.stderr });
    }
    case 'launcher': {
      const { launcherCommand } = await import('../dist/launcher/main.js');
      return launcherCommand(args, process.env, { stdout: process.stdout, stderr: process.stderr });
    }
    case 'console': {
      // With --socket: the launcher's local attach (also what runs inside the pod); else the cluster.
      if (args.some((a) => a === '--socket' || a.startsWith('--socket=') || a === '-h' || a === '--help')) {
        const { consoleCommand } = await import('../dist/launcher/main.js');
        return consoleCommand(args, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
      }
      const { clusterConsoleCommand } = await import('../dist/cli/console-main.js');
      return clusterConsoleCommand(args, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
    }
    case 'image-upload': {
      const { imageUploadCommand } = await import('../dist/cli/image-upload-main.js');
      return imageUploadCommand(args, { stdout: process.stdout, stderr: process.stderr });
    }
    case 'vnc': {
      const { vncCommand } = await import('../dist/cli/console-main.js');
      return vncCommand(args, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
    }
    case 'importer': {
      const { main } = await import('../dist/importer/main.js');
      return main(process.env);
    }
    case 'uploadserver': {
      const { uploadServerMain } = await import('../dist/importer/upload-server-main.js');
      return uploadServerMain(process.env);
    }
    case 'uploadproxy': {
      const { uploadProxyMain } = await import('../dist/uploadproxy/main.js');
      return uploadProxyMain(process.env);
    }
    case 'version':
    case '--version': {
      const { readFileSync } = await import('node:fs');
      const { version } = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8'));
      process.stdout.write(`ferry ${version}\n`);
      return 0;
    }
    case 'clone-source': {
      const { cloneSourceMain } = await import('../dist/clone/source-main.js');
      return cloneSourceMain(process.env);
    }
    case 'clone-target': {
      const { cloneTargetMain } = await import('../dist/clone/target-main.js');
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
