#!/usr/bin/env bash
# Sets up a Debian 12 machine (as root) to build, run and test Ferry: the system tools the importer
# drives, then the npm dependencies and the TypeScript build. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null || ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
  echo "setup: Ferry needs Node.js >= 20 with npm (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi

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

npm ci --no-audit --no-fund
npm run build

# kube-apiserver + etcd for test/integration/ and kube-controller-manager, kube-scheduler, kubelet,
# kube-proxy for test/node/, built (one go build) from the Go module proxy into a cache outside
# the repo (a no-op when already built; the first build takes minutes: tools/control-plane/README.md).
bash scripts/build-control-plane.sh
