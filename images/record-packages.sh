#!/bin/sh
# mmdebstrap customize hook: the image's package set with versions, sorted, at
# /usr/share/ferry/packages.txt (the build prints it; images/compare-packages.sh compares two).
set -eu
root=$1
mkdir -p "$root/usr/share/ferry"
chroot "$root" dpkg-query -W -f '${binary:Package}=${Version}\n' | LC_ALL=C sort > "$root/usr/share/ferry/packages.txt"
