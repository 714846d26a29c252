#!/bin/sh
# mmdebstrap essential hook: the image's users, written before its packages install so none of
# them takes these ids. ferry (65532, as distroless' nonroot) runs the controller; qemu (107, as in
# KubeVirt's launcher) runs importer and launcher pods.
set -eu
root=$1 image=$2
add() { # NAME UID HOME
  echo "$1:x:$2:$2:$1:$3:/usr/sbin/nologin" >> "$root/etc/passwd"
  echo "$1:x:$2:" >> "$root/etc/group"
  echo "$1:*:19000:0:99999:7:::" >> "$root/etc/shadow"
  mkdir -p "$root$3" && chown "$2:$2" "$root$3" && chmod 0750 "$root$3"
}
add qemu 107 /home/qemu
[ "$image" = ferry ] && add ferry 65532 /home/ferry
exit 0
