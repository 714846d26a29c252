# Functions of scripts/build-images.sh (sourced). Why these tools: docs/adr/0007-images.md.
# Every output is a function of the commit, the Debian archive's state and images/*.env: files
# in layers carry SOURCE_DATE_EPOCH (the commit's time), owners 0 or the image user, sorted names.

# Debian packages named in a list file (comments and blank lines dropped), comma-separated.
package_list() {
  sed -e 's/#.*//' -e 's/[[:space:]]//g' "$1" | grep -v '^$' | paste -sd, -
}

# A tar whose bytes depend only on the tree's content, names and modes.
det_tar() { # SRC_DIR OUT_TAR [ENTRY...] (default: ".")
  local src=$1 out=$2; shift 2
  [ $# -gt 0 ] || set -- .
  tar --sort=name --mtime="@${SOURCE_DATE_EPOCH}" --owner=0 --group=0 --numeric-owner \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    -cf "$out" -C "$src" "$@"
}

# Debian rootfs as a tarball: mmdebstrap, Essential set + the list, no Recommends, no docs but
# copyright files, merged /usr without the usrmerge package. .debs are kept in CACHE/debs/NAME
# (synced in before, replaced after), so a rebuild downloads only what changed on the mirror.
# The image's users are written before the packages install, so no package can take their ids.
build_rootfs() { # NAME PACKAGES_FILE OUT_TAR
  local name=$1 list=$2 out=$3 debs="$FERRY_IMAGES_CACHE/debs/$1"
  mkdir -p "$debs"
  mmdebstrap --quiet --mode=root --variant=essential --format=tar \
    --include="$(package_list "$list")" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --skip=essential/unlink \
    --aptopt='Acquire::Languages "none"' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives' \
    --setup-hook="sync-in '$debs' /var/cache/apt/archives/" \
    --essential-hook="'$FERRY_ROOT/images/users.sh' \"\$1\" '$name'" \
    --customize-hook="rm -rf '$debs' && mkdir -p '$debs'" \
    --customize-hook="sync-out /var/cache/apt/archives '$debs'" \
    --customize-hook="'$FERRY_ROOT/images/record-packages.sh' \"\$1\"" \
    "$FERRY_DEBIAN_SUITE" "$out" \
    "deb $FERRY_DEBIAN_MIRROR $FERRY_DEBIAN_SUITE main" \
    "deb $FERRY_DEBIAN_MIRROR $FERRY_DEBIAN_SUITE-updates main" \
    "deb $FERRY_DEBIAN_SECURITY $FERRY_DEBIAN_SUITE-security main"
}

# The Node.js binary from the npm registry (images/node.env), checked against its pinned integrity.
fetch_node() { # OUT_DIR (gets usr/local/bin/node and its licence)
  local dir="$FERRY_IMAGES_CACHE/node" tgz="$FERRY_IMAGES_CACHE/node/$NODE_PACKAGE-$NODE_VERSION.tgz"
  mkdir -p "$dir"
  if [ ! -f "$tgz" ]; then
    (cd "$dir" && npm pack --silent "$NODE_PACKAGE@$NODE_VERSION" > /dev/null)
  fi
  local got="sha512-$(openssl dgst -sha512 -binary "$tgz" | base64 -w0)"
  if [ "$got" != "$NODE_INTEGRITY" ]; then
    echo "error: $tgz has integrity $got, images/node.env pins $NODE_INTEGRITY" >&2
    return 1
  fi
  mkdir -p "$1/usr/local/bin" "$1/usr/local/share/doc/node"
  tar -xzf "$tgz" -C "$1/usr/local/bin" --strip-components=2 package/bin/node
  tar -xzf "$tgz" -C "$1/usr/local/share/doc/node" --strip-components=1 package/LICENSE
}

# /opt/ferry: the bin script, the bundle of every program bin/ferry.js runs (dist/bundle/, made by
# `npm run build`: scripts/bundle.ts; no source maps), its licence file and manifest, package.json;
# /usr/local/bin/ferry for pods that run `ferry` by name. The bundle holds every npm dependency, so the
# image has no node_modules and no tsc output (bin/ferry.js uses the bundle when dist/src is absent).
stage_app() { # OUT_DIR
  local app="$1/opt/ferry" bundle="$FERRY_ROOT/dist/bundle"
  [ -f "$bundle/manifest.json" ] || { echo "error: no $bundle/manifest.json: run npm run build" >&2; return 1; }
  mkdir -p "$app/bin" "$app/dist/bundle" "$1/usr/local/bin"
  cp "$FERRY_ROOT/package.json" "$app/"
  cp "$FERRY_ROOT/bin/ferry.js" "$app/bin/"
  # The launcher's Localhost seccomp profile, which manifests/seccomp-profile.yaml installs on every node (ADR 0011).
  install -D -m 0644 "$FERRY_ROOT/launcher/seccomp-launcher.json" "$app/seccomp/launcher.json"
  (cd "$bundle" && find . \( -name '*.js' -o -name manifest.json -o -name THIRD-PARTY-LICENSES.txt \) -print0 | cpio --quiet -0 -pdm "$app/dist/bundle")
  ln -s /opt/ferry/bin/ferry.js "$1/usr/local/bin/ferry"
  chmod -R u=rwX,go=rX "$1"
  chmod 0755 "$app/bin/ferry.js"
}

# An OCI archive (oci-layout + index.json + blobs, as `skopeo copy … oci-archive:` writes it) from
# layer tarballs. umoci writes the layout; the index gets the names containerd and podman read.
# The entrypoint is tini, then node with the bin script: a process whose parent exits (QEMU, which
# libvirtd daemonizes) is re-parented to PID 1, and node as PID 1 never reaps it; libvirt then
# waits ~30 s on every such zombie it kills, long enough for the launcher's virsh calls to time out.
assemble_oci() { # NAME USER OUT_ARCHIVE LAYER_TAR...
  local name=$1 user=$2 out=$3; shift 3
  local layout="$WORK/$name-layout" created ref
  created=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y-%m-%dT%H:%M:%SZ)
  ref="$FERRY_IMAGE_REPO/$name:$FERRY_IMAGE_TAG"
  rm -rf "$layout"
  umoci init --layout "$layout"
  umoci new --image "$layout:$name"
  for layer in "$@"; do
    umoci raw add-layer --image "$layout:$name" --history.created "$created" \
      --history.created_by "ferry build-images: $(basename "$layer" .tar)" "$layer"
  done
  umoci config --image "$layout:$name" --no-history --created "$created" \
    --config.user "$user" \
    --config.entrypoint /usr/bin/tini --config.entrypoint -- \
    --config.entrypoint /usr/local/bin/node --config.entrypoint /opt/ferry/bin/ferry.js \
    --config.env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --config.env NODE_ENV=production \
    --config.workingdir / \
    --config.label "org.opencontainers.image.title=$name" \
    --config.label "org.opencontainers.image.version=$FERRY_VERSION" \
    --config.label "org.opencontainers.image.revision=$FERRY_REVISION" \
    --config.label "org.opencontainers.image.created=$created" \
    --config.label "org.opencontainers.image.licenses=Apache-2.0" \
    --config.label "dev.ferry.node-version=$NODE_VERSION"
  umoci gc --layout "$layout"
  jq --arg ref "$ref" \
    '.manifests |= map(.platform = {architecture: "amd64", os: "linux"}
      | .annotations = {"io.containerd.image.name": $ref, "org.opencontainers.image.ref.name": $ref})' \
    "$layout/index.json" > "$layout/index.json.new"
  mv "$layout/index.json.new" "$layout/index.json"
  chmod -R u=rwX,go=rX "$layout"
  det_tar "$layout" "$out" oci-layout index.json blobs
}
