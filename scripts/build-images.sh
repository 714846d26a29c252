#!/usr/bin/env bash
# npm run images [-- ferry|ferry-launcher ...]: the two OCI images, from Debian packages
# (mmdebstrap), the Node.js binary the npm registry ships and this checkout's build output, into
# dist/images/<name>.oci.tar. No Docker engine, no registry but Debian's mirror and npm's.
# Why these tools and what was measured: docs/adr/0007-images.md.
#
# Environment (all optional):
#   FERRY_IMAGES_CACHE   downloads kept between builds (default ~/.cache/ferry/images)
#   FERRY_IMAGES_OUT     output directory (default dist/images)
#   FERRY_IMAGE_REPO     repository part of the names in the archives (default localhost)
#   FERRY_IMAGE_TAG      tag (default: the commit, short, with -dirty for uncommitted changes)
#   FERRY_SKIP_TSC=1     use dist/ (and its bundle, which must be newer than tsc's output) as it is
#                        instead of running `npm run build`
#   FERRY_DEBIAN_MIRROR, FERRY_DEBIAN_SECURITY, FERRY_DEBIAN_SUITE (default deb.debian.org, bookworm)
set -euo pipefail

FERRY_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export FERRY_ROOT
: "${FERRY_IMAGES_CACHE:=$HOME/.cache/ferry/images}"
: "${FERRY_IMAGES_OUT:=$FERRY_ROOT/dist/images}"
: "${FERRY_IMAGE_REPO:=localhost}"
: "${FERRY_DEBIAN_MIRROR:=http://deb.debian.org/debian}"
: "${FERRY_DEBIAN_SECURITY:=http://deb.debian.org/debian-security}"
: "${FERRY_DEBIAN_SUITE:=bookworm}"
# shellcheck source=../images/node.env
. "$FERRY_ROOT/images/node.env"
# shellcheck source=../images/lib.sh
. "$FERRY_ROOT/images/lib.sh"

images=("$@")
[ ${#images[@]} -gt 0 ] || images=(ferry ferry-launcher)
for name in "${images[@]}"; do
  case $name in ferry) ;; ferry-launcher) ;; *) echo "error: unknown image \"$name\" (ferry, ferry-launcher)" >&2; exit 2 ;; esac
done
for tool in mmdebstrap umoci jq npm openssl cpio; do
  command -v "$tool" > /dev/null || { echo "error: $tool not found; on Debian: apt-get install -y --no-install-recommends mmdebstrap umoci jq cpio" >&2; exit 2; }
done
[ "$(id -u)" = 0 ] || { echo "error: mmdebstrap --mode=root needs root (see docs/adr/0007-images.md)" >&2; exit 2; }

cd "$FERRY_ROOT"
FERRY_REVISION=$(git rev-parse HEAD)
SOURCE_DATE_EPOCH=$(git log -1 --format=%ct)
# The Debian and Node layers change only with their recipe (or the mirror): their files carry the
# time of the last commit to it, so their bytes, and a registry's copy, stay the same across commits.
FERRY_BASE_EPOCH=$(git log -1 --format=%ct -- images/lib.sh images/node.env images/users.sh \
  images/record-packages.sh 'images/*.packages' scripts/build-images.sh)
: "${FERRY_BASE_EPOCH:=$SOURCE_DATE_EPOCH}"
FERRY_VERSION=$(jq -r .version package.json)
dirty=$(git diff --quiet HEAD -- && echo "" || echo "-dirty")
: "${FERRY_IMAGE_TAG:=$(git rev-parse --short=12 HEAD)$dirty}"
export SOURCE_DATE_EPOCH FERRY_REVISION FERRY_VERSION FERRY_IMAGE_TAG FERRY_IMAGE_REPO FERRY_IMAGES_CACHE
export FERRY_DEBIAN_MIRROR FERRY_DEBIAN_SECURITY FERRY_DEBIAN_SUITE

WORK=$(mktemp -d "${TMPDIR:-/tmp}/ferry-images.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$FERRY_IMAGES_OUT" "$FERRY_IMAGES_CACHE"

now() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f s", b - a }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }

t0=$(now)
if [ "${FERRY_SKIP_TSC:-}" != 1 ]; then
  echo "== npm run build"
  npm run build --silent
fi
# The images run the bundle (dist/bundle/, scripts/bundle.ts); one older than tsc's output is not shipped.
if ! FERRY_BUNDLE=1 node bin/ferry.js import --help > /dev/null 2> "$WORK/bundle-check.txt"; then
  cat "$WORK/bundle-check.txt" >&2
  echo "error: dist/bundle is missing or older than dist/ (npm run build makes it)" >&2
  exit 1
fi
echo "== shared layers: node $NODE_VERSION ($NODE_PACKAGE), /opt/ferry"
mkdir -p "$WORK/node" "$WORK/app"
fetch_node "$WORK/node"
mkdir -p "$WORK/node/usr/share/ferry"
echo "$NODE_PACKAGE=$NODE_VERSION $NODE_INTEGRITY" > "$WORK/node/usr/share/ferry/node.txt"
chmod -R u=rwX,go=rX "$WORK/node"
SOURCE_DATE_EPOCH=$FERRY_BASE_EPOCH det_tar "$WORK/node" "$WORK/node.tar"
stage_app "$WORK/app"
det_tar "$WORK/app" "$WORK/app.tar"
echo "   $(took "$t0")"

summary=()
for name in "${images[@]}"; do
  t=$(now)
  case $name in ferry) user=65532:65532 ;; ferry-launcher) user=107:107 ;; esac
  echo "== $name: Debian $FERRY_DEBIAN_SUITE rootfs (images/$name.packages)"
  if ! SOURCE_DATE_EPOCH=$FERRY_BASE_EPOCH build_rootfs "$name" "images/$name.packages" "$WORK/$name-debian.tar" > "$WORK/$name-mmdebstrap.log" 2>&1; then
    tail -40 "$WORK/$name-mmdebstrap.log" >&2
    echo "error: mmdebstrap failed for $name (log above)" >&2
    exit 1
  fi
  tr=$(took "$t")
  out="$FERRY_IMAGES_OUT/$name.oci.tar"
  assemble_oci "$name" "$user" "$out.tmp" "$WORK/$name-debian.tar" "$WORK/node.tar" "$WORK/app.tar"
  mv "$out.tmp" "$out"
  tar -xOf "$WORK/$name-debian.tar" ./usr/share/ferry/packages.txt > "$WORK/$name.packages.txt"
  cat "$WORK/node/usr/share/ferry/node.txt" >> "$WORK/$name.packages.txt"
  echo "-- $name packages ($(wc -l < "$WORK/$name.packages.txt")), also in the image at /usr/share/ferry/packages.txt and node.txt:"
  sed 's/^/   /' "$WORK/$name.packages.txt"
  previous="$FERRY_IMAGES_OUT/$name.packages.txt"
  if [ -f "$previous" ]; then
    if cmp -s "$previous" "$WORK/$name.packages.txt"; then echo "-- same package set as the previous build"
    else echo "-- package set changed since the previous build:"; diff "$previous" "$WORK/$name.packages.txt" | grep '^[<>]' | sed 's/^/   /' || true
    fi
  fi
  cp "$WORK/$name.packages.txt" "$previous"
  unpacked=$(( $(stat -c %s "$WORK/$name-debian.tar") + $(stat -c %s "$WORK/node.tar") + $(stat -c %s "$WORK/app.tar") ))
  digest=$(tar -xOf "$out" index.json | jq -r '.manifests[0].digest')
  line="$name: $out $(mib "$(stat -c %s "$out")") compressed, $(mib "$unpacked") unpacked (debian $(mib "$(stat -c %s "$WORK/$name-debian.tar")"), node $(mib "$(stat -c %s "$WORK/node.tar")"), app $(mib "$(stat -c %s "$WORK/app.tar")")); rootfs $tr, total $(took "$t"); $FERRY_IMAGE_REPO/$name:$FERRY_IMAGE_TAG@$digest"
  summary+=("$line")
  rm -f "$WORK/$name-debian.tar"
done
echo "== images ($(took "$t0") in all)"
printf '   %s\n' "${summary[@]}"
