#!/usr/bin/env bash
# Builds the tiny bootable test disk (32 MiB raw, MBR + FAT16 + SYSLINUX + Debian's kernel + a
# busybox initramfs) from Debian packages only, without root mounts, and prints its path.
#
#   scripts/make-boot-disk.sh [--cache-dir DIR]      # default ~/.cache/ferry/boot-disk
#
# The result lives in <cache-dir>/<recipe-hash>/disk.raw (+ disk.raw.sha256). The hash covers this
# script and the versions of the packages that go into the disk, so a second run with the same
# recipe prints the cached path at once; concurrent runs serialise on a lock.
#
# What the guest does (its /init, written below), each step announced on the serial console ttyS0:
#   FERRY-BOOT-OK ...            as soon as userspace runs
#   FERRY-CLOUDINIT <value>      the value of a `ferry-marker: <value>` line in the user-data of an
#                                ISO9660 (cidata) disk; `FERRY-CLOUDINIT none` when no such disk
#                                appears, `FERRY-CLOUDINIT nomarker` when it has no such line
#   FERRY-NET-OK ...             with `ferry-net: wait` or SSH keys: DHCP on eth0, then serves
#                                `FERRY-NET-OK` on TCP 8080 until powered off (ACPI)
#   FERRY-SSH-OK ...             with keys in the user-data's `ssh_authorized_keys:` list (top level or
#                                under `users:`): dropbear on TCP 22 takes those keys for root, no
#                                passwords, until powered off (ACPI)
#   FERRY-HOLD ...               only with `ferry-hold: yes` (wait until the ACPI power button,
#                                then power off: a graceful shutdown) or `ferry-hold: ignore-acpi`
#                                (never power off by itself: the host has to destroy it)
#   FERRY-POWEROFF               then `poweroff -f`
# The kernel has no iso9660, sata/ahci, virtio-blk or ACPI-button driver built in, so the needed
# modules are copied from the same kernel package with a modules.dep made by busybox depmod.
# dropbear (dropbear-bin) and the shared libraries it links come from their Debian packages, libc's
# loader resolving them inside the extracted tree; their versions are in the recipe hash.
set -euo pipefail

cache_root="${HOME:-/root}/.cache/ferry/boot-disk"
while [ $# -gt 0 ]; do
  case "$1" in
    --cache-dir) cache_root="$2"; shift 2 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "make-boot-disk: unknown argument $1" >&2; exit 2 ;;
  esac
done

for tool in apt-get apt-cache dpkg dpkg-query busybox cpio gzip mformat mcopy syslinux sfdisk sha256sum flock; do
  command -v "$tool" >/dev/null || { echo "make-boot-disk: $tool is missing (scripts/setup-debian.sh installs it)" >&2; exit 1; }
done
MBR_BIN=/usr/lib/syslinux/mbr/mbr.bin
[ -f "$MBR_BIN" ] || { echo "make-boot-disk: $MBR_BIN is missing (package syslinux-common)" >&2; exit 1; }

# The kernel linux-image-amd64 points at, e.g. linux-image-6.1.0-56-amd64, and its version.
kpkg_name=$(apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[0-9].*\)$/\1/p' | head -n1)
[ -n "$kpkg_name" ] || { echo "make-boot-disk: cannot resolve the kernel package of linux-image-amd64 (apt-get update?)" >&2; exit 1; }
candidate() { apt-cache policy "$1" | sed -n 's/^ *Candidate: //p'; }
kpkg_version=$(candidate "$kpkg_name")
# The SSH server and everything its loader needs (checked below: nothing may come from the host).
ssh_pkgs="dropbear-bin libc6 libcrypt1 libgmp10 libtomcrypt1 libtommath1 zlib1g"
ssh_versions=""
for p in $ssh_pkgs; do
  v=$(candidate "$p"); [ -n "$v" ] && [ "$v" != "(none)" ] || { echo "make-boot-disk: no candidate for $p (apt-get update?)" >&2; exit 1; }
  ssh_versions="$ssh_versions $p=$v"
done
recipe_hash=$( { cat "$0"; echo "$kpkg_name=$kpkg_version"; echo "$ssh_versions"; dpkg-query -W busybox-static syslinux syslinux-common; } | sha256sum | cut -c1-16)

out_dir="$cache_root/$recipe_hash"
mkdir -p "$cache_root"
exec 9>"$cache_root/.lock"
flock 9
if [ -f "$out_dir/disk.raw" ] && [ -f "$out_dir/disk.raw.sha256" ]; then
  echo "$out_dir/disk.raw"
  exit 0
fi

work=$(mktemp -d "$cache_root/.build-XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
echo "make-boot-disk: building $kpkg_name $kpkg_version into $out_dir" >&2

apt-get download -q "$kpkg_name=$kpkg_version" >/dev/null 2>&1 || apt-get download "$kpkg_name"
dpkg -x ./"$kpkg_name"_*.deb kpkg
kver=${kpkg_name#linux-image-}
cp kpkg/boot/vmlinuz-"$kver" vmlinuz

# --- modules: the closure of what the init loads, with a modules.dep for busybox modprobe
wanted="ahci ata_piix sd_mod sr_mod isofs virtio_blk virtio_pci virtio_net button evdev"
mods=kpkg/lib/modules/$kver
busybox depmod -b kpkg "$kver"
mkdir -p initramfs/{bin,dev,proc,sys,mnt,etc,tmp,lib/modules/"$kver"}
closure=""
for m in $wanted; do
  line=$(grep -E "(^|/)$m\.ko:" "$mods/modules.dep") || { echo "make-boot-disk: module $m not in $kpkg_name" >&2; exit 1; }
  closure="$closure ${line%%:*} ${line#*:}"
done
for f in $(printf '%s\n' $closure | sort -u); do
  mkdir -p "initramfs/lib/modules/$kver/$(dirname "$f")"
  cp "$mods/$f" "initramfs/lib/modules/$kver/$f"
done
busybox depmod -b initramfs "$kver"

cp "$(command -v busybox)" initramfs/bin/busybox

# --- dropbear: the binary, its libraries (as libc's loader resolves them in the extracted tree) and the loader
mkdir -p sshdebs sshpkg initramfs/usr/sbin initramfs/lib64 initramfs/lib/x86_64-linux-gnu
for pv in $ssh_versions; do (cd sshdebs && apt-get download -q "$pv" >/dev/null 2>&1) || { echo "make-boot-disk: cannot download $pv" >&2; exit 1; }; done
for deb in sshdebs/*.deb; do dpkg -x "$deb" sshpkg; done
loader=sshpkg/lib64/ld-linux-x86-64.so.2
cp sshpkg/usr/sbin/dropbear initramfs/usr/sbin/dropbear
cp "$(readlink -f "$loader")" initramfs/lib64/ld-linux-x86-64.so.2
libs=$("$loader" --library-path sshpkg/lib/x86_64-linux-gnu:sshpkg/usr/lib/x86_64-linux-gnu --list sshpkg/usr/sbin/dropbear)
echo "$libs" | grep -q 'not found' && { echo "make-boot-disk: dropbear needs a library no package here has:" >&2; echo "$libs" >&2; exit 1; }
for lib in $(echo "$libs" | sed -n 's/^[[:space:]]*\(lib[^ ]*\) => \([^ ]*\) .*/\1=\2/p'); do
  path=${lib#*=}
  case "$path" in sshpkg/*) cp "$(readlink -f "$path")" "initramfs/lib/x86_64-linux-gnu/${lib%%=*}" ;;
    *) echo "make-boot-disk: dropbear's ${lib%%=*} would come from the host ($path)" >&2; exit 1 ;; esac
done
printf 'root:x:0:0:root:/root:/bin/sh\n' > initramfs/etc/passwd
printf 'root:x:0:\n' > initramfs/etc/group
printf 'passwd: files\ngroup: files\nshadow: files\n' > initramfs/etc/nsswitch.conf
# udhcpc calls a script to configure the lease; busybox ships none.
cat > initramfs/etc/udhcpc.script <<'EOF'
#!/bin/sh
[ "$1" = bound ] || [ "$1" = renew ] || exit 0
ip addr add "$ip/${mask:-24}" dev "$interface"
[ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
exit 0
EOF
chmod +x initramfs/etc/udhcpc.script

cat > initramfs/init <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev 2>/dev/null
echo "FERRY-BOOT-OK kernel=$(uname -r) uptime=$(cut -d' ' -f1 /proc/uptime)s"
for m in ahci ata_piix sd_mod sr_mod isofs virtio_pci virtio_blk button evdev; do modprobe -q "$m"; done

# cidata: an ISO9660 block device ("CD001" at byte 32769). Stop at the first one, or once the set
# of block devices has not changed for about a second (no cidata disk), at most ~6 s.
iso=""; last=""; same=0; i=0
while [ $i -lt 24 ] && [ -z "$iso" ]; do
  devs=$(ls /sys/block 2>/dev/null | grep -E '^(sd|sr|vd)' | tr '\n' ' ')
  for d in $devs; do
    [ "$(dd if=/dev/$d bs=1 skip=32769 count=5 2>/dev/null)" = CD001 ] && { iso=/dev/$d; break; }
  done
  if [ -n "$devs" ] && [ "$devs" = "$last" ]; then same=$((same+1)); else same=0; fi
  [ $same -ge 4 ] && break
  last=$devs; i=$((i+1)); sleep 0.25
done
userdata=""
if [ -n "$iso" ] && mount -t iso9660 -o ro "$iso" /mnt 2>/dev/null && [ -f /mnt/user-data ]; then
  userdata=/mnt/user-data
  value=$(sed -n 's/^ferry-marker: *//p' $userdata | head -n1 | tr -d '\r')
  echo "FERRY-CLOUDINIT ${value:-nomarker}"
else
  echo "FERRY-CLOUDINIT none"; echo "FERRY-SCAN uptime=$(cut -d" " -f1 /proc/uptime)s"
fi
setting() { [ -n "$userdata" ] && sed -n "s/^$1: *//p" $userdata | head -n1 | tr -d '\r'; }
# The list items below each `ssh_authorized_keys:` (cloud-config's, at any indentation), unquoted.
ssh_keys() {
  [ -n "$userdata" ] && tr -d '\r' < $userdata | awk '
    /^[ \t]*ssh_authorized_keys:[ \t]*$/ { k = 1; next }
    k && /^[ \t]*- / { sub(/^[ \t]*- */, ""); gsub(/^["\047]|["\047]$/, ""); print; next }
    { k = 0 }'
}
keys=$(ssh_keys)

# The ACPI power button arrives as an input event: any read from an event device ends the wait.
wait_power_button() {
  for e in /dev/input/event*; do
    ( dd if="$e" bs=24 count=1 >/dev/null 2>&1 && { echo "FERRY-ACPI-POWER-BUTTON $e"; echo > /tmp/power; } ) &
  done
  while [ ! -f /tmp/power ]; do sleep 0.2; done
}

if [ "$(setting ferry-net)" = wait ] || [ -n "$keys" ]; then
  modprobe -q virtio_net
  ip link set lo up; ip link set eth0 up
  if udhcpc -i eth0 -s /etc/udhcpc.script -q -n -t 10 -T 1 >/dev/null 2>&1; then
    nc -ll -p 8080 -e echo FERRY-NET-OK &
    echo "FERRY-NET-OK listening on $(ip -4 -o addr show eth0 | awk '{print $4}'):8080"
    if [ -n "$keys" ]; then
      mkdir -p /root/.ssh /etc/dropbear /dev/pts; mount -t devpts devpts /dev/pts
      echo "$keys" > /root/.ssh/authorized_keys
      chmod 700 /root /root/.ssh; chmod 600 /root/.ssh/authorized_keys
      # -R: the host key is made on the first connection; -s: keys only; -E: log to stderr.
      dropbear -R -s -E -p 22 -P /tmp/dropbear.pid 2>/tmp/dropbear.log
      echo "FERRY-SSH-OK dropbear on :22, $(echo "$keys" | wc -l) key(s)"
    fi
  else
    echo "FERRY-NET-FAILED no DHCP lease"
  fi
  wait_power_button
fi
case "$(setting ferry-hold)" in
  yes) echo "FERRY-HOLD waiting for the ACPI power button"; wait_power_button ;;
  ignore-acpi) echo "FERRY-HOLD ignoring ACPI"; while true; do sleep 3600; done ;;
esac
[ -n "$userdata" ] && umount /mnt
echo "FERRY-POWEROFF uptime=$(cut -d" " -f1 /proc/uptime)s"
sync
poweroff -f
EOF
chmod +x initramfs/init
(cd initramfs && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -9n > ../initrd.gz)

# FAT16 partition image + SYSLINUX through mtools, then the MBR disk around it.
truncate -s $((63488 * 512)) part.img
mformat -i part.img -v FERRYBOOT -T 63488 -h 64 -s 32 -H 2048 ::
syslinux --install part.img
printf 'SERIAL 0 115200\nDEFAULT linux\nPROMPT 0\nTIMEOUT 0\nLABEL linux\n  KERNEL /vmlinuz\n  APPEND initrd=/initrd.gz console=ttyS0 quiet panic=-1\n' > syslinux.cfg
mcopy -i part.img vmlinuz initrd.gz syslinux.cfg ::/
truncate -s 32M disk.raw
printf 'label: dos\nstart=2048, size=63488, type=6, bootable\n' | sfdisk -q disk.raw
dd if=part.img of=disk.raw bs=1M seek=1 conv=notrunc status=none
dd if="$MBR_BIN" of=disk.raw bs=440 count=1 conv=notrunc status=none
sha256sum disk.raw | cut -d' ' -f1 > disk.raw.sha256

mkdir -p "$out_dir.tmp"
mv disk.raw disk.raw.sha256 "$out_dir.tmp/"
rm -rf "$out_dir"
mv "$out_dir.tmp" "$out_dir"
echo "$out_dir/disk.raw"
