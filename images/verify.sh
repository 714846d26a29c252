#!/usr/bin/env bash
# images/verify.sh [DIR]: runs the built images (DIR/ferry.oci.tar, DIR/ferry-launcher.oci.tar;
# default dist/images) with podman + runc and checks what their pods need: the image config
# (non-root user, exec-form entrypoint), every program the pods run, `ferry import` of a local
# qcow2 and of one served over HTTP (qemu-img reading it in place through nbdkit's curl plugin),
# as the image's user and as the importer pods' uid 107. Shells are hidden during every run
# (/dev/null bound over dash and bash), so a code path that needs one fails here.
# podman's storage lives in a temporary directory, inside a private mount namespace.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=$(cd "${1:-$ROOT/dist/images}" && pwd)
if [ -z "${FERRY_VERIFY_NS:-}" ]; then
  exec env FERRY_VERIFY_NS=1 unshare --mount --propagation private -- "$0" "$DIR"
fi
for tool in podman runc skopeo jq qemu-img qemu-io; do
  command -v "$tool" > /dev/null || { echo "error: $tool not found (apt-get install -y --no-install-recommends podman runc skopeo jq qemu-utils)" >&2; exit 2; }
done

# containers/image keeps a blob-info cache in /var/lib/containers/cache whatever --root says: give it
# a tmpfs in this mount namespace, or remove the directory afterwards if this run created it.
created_varlib=
if [ -d /var/lib/containers ]; then mount -t tmpfs -o size=16m tmpfs /var/lib/containers; else created_varlib=1; fi
T=$(mktemp -d "${TMPDIR:-/tmp}/ferry-verify.XXXXXX")
mkdir -p "$T/tmp" "$T/data"
P=(podman --root "$T/root" --runroot "$T/runroot" --tmpdir "$T/tmp" --cgroup-manager cgroupfs
  --events-backend file --storage-driver overlay --runtime runc)
cleanup() { "${P[@]}" rm -af > /dev/null 2>&1 || true; "${P[@]}" rmi -af > /dev/null 2>&1 || true; rm -rf "$T"; [ -z "$created_varlib" ] || { rm -f /var/lib/containers/cache/blob-info-cache-v1.boltdb; rmdir /var/lib/containers/cache /var/lib/containers 2> /dev/null || true; }; }
trap cleanup EXIT
# No network; rlimits below the hard limits (root here lacks CAP_SYS_RESOURCE: infra.md §6).
RUN=(run --rm --pull never --network none --ulimit nofile=1024:1024 --ulimit nproc=4096:4096
  -v /dev/null:/usr/bin/dash:ro -v /dev/null:/usr/bin/bash:ro)
failures=0
check() { # NAME COMMAND... : runs COMMAND, prints PASS/FAIL with its time and output tail
  local name=$1 t0 out rc; shift
  t0=$(date +%s.%N)
  set +e; out=$("$@" 2>&1); rc=$?; set -e
  local dt; dt=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.2f s", b - a }')
  if [ $rc -eq 0 ]; then echo "PASS $name ($dt): $(echo "$out" | tail -1 | cut -c1-150)"
  else echo "FAIL $name ($dt, exit $rc):"; echo "$out" | tail -15 | sed 's/^/     /'; failures=$((failures + 1)); fi
}
expect_config() { # ARCHIVE USER
  local cfg; cfg=$(skopeo inspect --config "oci-archive:$1" | jq -c '.config')
  echo "$cfg" | jq -e --arg u "$2" '.User == $u and .Entrypoint == ["/usr/bin/tini", "--", "/usr/local/bin/node", "/opt/ferry/bin/ferry.js"]' > /dev/null
  echo "$cfg"
}
fails() { # COMMAND... : succeeds when COMMAND fails
  if "$@" > /dev/null 2>&1; then echo "unexpectedly succeeded"; return 1; fi
  echo "failed, as it must"
}
load() { # ARCHIVE → prints the image name
  "${P[@]}" load -q -i "$1" | sed -n 's/^Loaded image: //p' | tail -1
}
contains() { # NEEDLE COMMAND...
  local needle=$1 out; shift
  out=$("$@" 2>&1) || { echo "$out"; return 1; }
  grep -q -- "$needle" <<< "$out" || { echo "$out"; echo "(no \"$needle\")"; return 1; }
  grep -- "$needle" <<< "$out" | head -1
}

if [ -f "$DIR/ferry.oci.tar" ]; then
  A="$DIR/ferry.oci.tar"
  echo "== ferry ($A)"
  check "config: user 65532, exec-form entrypoint" expect_config "$A" 65532:65532
  I=$(load "$A")
  check "node is the image's LTS, runs as ferry (65532)" contains "65532 ferry" "${P[@]}" "${RUN[@]}" --entrypoint /usr/local/bin/node "$I" -e 'console.log(process.version, process.getuid(), require("os").userInfo().username)'
  check "packages.txt in the image equals the build's list" bash -c "cmp <(\"\$@\") '$DIR/ferry.packages.txt' && echo same" _ \
    "${P[@]}" "${RUN[@]}" --entrypoint /usr/local/bin/node "$I" -e 'const f=require("fs");process.stdout.write(f.readFileSync("/usr/share/ferry/packages.txt","utf8")+f.readFileSync("/usr/share/ferry/node.txt","utf8"))'
  for prog in "qemu-img --version" "nbdkit --version" "nbdkit curl --version" "xz --version" "zstd --version" "bzip2 --help"; do
    set -- $prog
    check "program: $prog" "${P[@]}" "${RUN[@]}" --entrypoint "$1" "$I" "${@:2}"
  done
  check "no shell runs here (/bin/sh is hidden)" fails "${P[@]}" "${RUN[@]}" --entrypoint /bin/sh "$I" -c true
  check "ferry import --help" contains "Usage: ferry import" "${P[@]}" "${RUN[@]}" "$I" import --help
  # The app layer is the bundle (scripts/bundle.ts): no node_modules, no tsc output; FERRY_BUNDLE=1 fails if it is not what runs.
  check "/opt/ferry holds the bundle only (no node_modules, no tsc output)" contains "bin,dist,package.json,seccomp bundle" "${P[@]}" "${RUN[@]}" --entrypoint /usr/local/bin/node "$I" \
    -e 'const f=require("fs");console.log(f.readdirSync("/opt/ferry").sort().join(), f.readdirSync("/opt/ferry/dist").join())'
  check "ferry import --help from the bundle (FERRY_BUNDLE=1)" contains "Usage: ferry import" "${P[@]}" "${RUN[@]}" -e FERRY_BUNDLE=1 "$I" import --help
  # A 64 MiB qcow2 with two written ranges; the raw result must read the same.
  qemu-img create -q -f qcow2 "$T/data/in.qcow2" 64M
  qemu-io -c 'write -P 0xab 0 8M' -c 'write -P 0x5c 40M 4M' "$T/data/in.qcow2" > /dev/null
  xz -T1 -0 -k "$T/data/in.qcow2"
  cp "$ROOT/images/verify-http.mjs" "$T/data/"
  chmod 0777 "$T/data"; chmod 0644 "$T/data/"*
  V=(-v "$T/data:/data")
  check "ferry import file qcow2 as 65532" "${P[@]}" "${RUN[@]}" "${V[@]}" "$I" import --url /data/in.qcow2 --dest /data/out-file.raw --quiet
  check "  … reads the same (qemu-img compare)" qemu-img compare -q -f qcow2 -F raw "$T/data/in.qcow2" "$T/data/out-file.raw"
  check "ferry import qcow2.xz as 107 (importer pods' uid)" "${P[@]}" "${RUN[@]}" "${V[@]}" --user 107:107 "$I" import --url /data/in.qcow2.xz --dest /data/out-xz.raw --quiet
  check "  … reads the same" qemu-img compare -q -f qcow2 -F raw "$T/data/in.qcow2" "$T/data/out-xz.raw"
  check "ferry import http qcow2 in place (nbdkit curl) as 107" "${P[@]}" "${RUN[@]}" "${V[@]}" --user 107:107 --entrypoint /usr/local/bin/node "$I" /data/verify-http.mjs /data/in.qcow2 /data/out-http.raw
  check "  … reads the same" qemu-img compare -q -f qcow2 -F raw "$T/data/in.qcow2" "$T/data/out-http.raw"
  check "ferry controller --help" contains "Usage: ferry controller" "${P[@]}" "${RUN[@]}" "$I" controller --help
fi

if [ -f "$DIR/ferry-launcher.oci.tar" ]; then
  A="$DIR/ferry-launcher.oci.tar"
  echo "== ferry-launcher ($A)"
  check "config: user 107, exec-form entrypoint" expect_config "$A" 107:107
  I=$(load "$A")
  check "node runs as qemu (107)" contains "107 qemu" "${P[@]}" "${RUN[@]}" --entrypoint /usr/local/bin/node "$I" -e 'console.log(process.version, process.getuid(), require("os").userInfo().username)'
  for prog in "qemu-system-x86_64 --version" "virsh --version" "libvirtd --version" "qemu-img --version" "xorrisofs -version" "passt --version" "getent passwd qemu"; do
    set -- $prog
    check "program: $prog" "${P[@]}" "${RUN[@]}" --entrypoint "$1" "$I" "${@:2}"
  done
  check "ferry launcher --help (by name, as the launcher pod runs it)" contains "Usage: ferry launcher" "${P[@]}" "${RUN[@]}" --entrypoint ferry "$I" launcher --help
  # A real VMI: libvirtd (session mode) and QEMU under TCG as 107, booting the project's test disk
  # (scripts/make-boot-disk.sh, cached) with a cloud-init ISO made by xorrisofs; the guest prints
  # its markers on the serial console and powers off, so the launcher exits 0. The container has no
  # network (--network none: no default route for passt), so the pod network is the slirp fallback.
  disk=$(bash "$ROOT/scripts/make-boot-disk.sh")
  mkdir -p "$T/vm/volumes/rootdisk" "$T/vm/run"
  cp "$disk" "$T/vm/volumes/rootdisk/disk.img"
  cat > "$T/vm/vmi.yaml" <<'VMI'
apiVersion: kubevirt.io/v1
kind: VirtualMachineInstance
metadata: {name: verify, namespace: images, uid: 5e1f0000-0000-4000-8000-000000000001}
spec:
  domain:
    memory: {guest: 256Mi}
    devices:
      disks:
      - {name: rootdisk, bootOrder: 1, disk: {bus: virtio}}
      - {name: cloudinit, disk: {bus: sata}}
  volumes:
  - {name: rootdisk, persistentVolumeClaim: {claimName: rootdisk}}
  - name: cloudinit
    cloudInitNoCloud:
      userData: |
        #cloud-config
        ferry-marker: from-the-launcher-image
VMI
  chown -R 107:107 "$T/vm"
  check "ferry launcher boots a VMI under TCG as 107 (libvirtd, QEMU, xorrisofs)" "${P[@]}" "${RUN[@]}" -v "$T/vm:/vm" "$I" launcher \
    --vmi /vm/vmi.yaml --volumes-dir /vm/volumes --runtime-dir /vm/run --serial-log /vm/serial.log \
    --termination-log /vm/termination-log --status-port 0 --status-address 127.0.0.1 --accel tcg --pod-network slirp
  check "  … the guest booted and read its cloud-init data" grep -a -m1 "FERRY-CLOUDINIT from-the-launcher-image" "$T/vm/serial.log"
fi

echo "== $failures failure(s)"
[ "$failures" -eq 0 ]
