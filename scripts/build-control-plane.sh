#!/usr/bin/env bash
# Builds the real Kubernetes control plane used by the integration tests (test/integration/):
# kube-apiserver, etcd and kubectl, from the Go module proxy, at the versions in
# tools/control-plane/versions.env, through the wrapper modules in tools/control-plane/.
#
# Output: ${FERRY_CACHE_DIR:-$HOME/.cache/ferry}/control-plane/k8s-<ver>_etcd-<ver>/bin/, outside the
# repo. A binary that is already there is not built again, so a re-run takes seconds. The build
# never writes into the repo: modules are read-only (-mod=readonly) against the committed go.sum.
# A cold build on 2 cores takes minutes (see tools/control-plane/README.md for the measured time).
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/control-plane/common.sh
cp_find_go

K8S="$KUBERNETES_VERSION"
ETCD="$ETCD_VERSION"
BIN="$(cp_bin_dir)"
TOOLS="$CP_TOOLS_DIR"

# The committed wrapper modules must match versions.env (the one place versions are named).
if ! grep -q "^[[:space:]]*k8s.io/kubernetes $K8S\b" "$TOOLS/kube-apiserver/go.mod" ||
   ! grep -q "^[[:space:]]*go.etcd.io/etcd/server/v3 $ETCD\b" "$TOOLS/etcd/go.mod"; then
  echo "build-control-plane: tools/control-plane/*/go.mod do not match versions.env" \
       "(k8s $K8S, etcd $ETCD); run: bash tools/control-plane/regen.sh" >&2
  exit 1
fi

# -mod=readonly: fail rather than touch the committed go.mod/go.sum. -trimpath: no local paths.
export GOFLAGS="-mod=readonly -buildvcs=false -trimpath"

start=$(date +%s)
built=()
mkdir -p "$BIN"

build() { # build NAME MODULE_DIR PACKAGE LDFLAGS
  local name=$1 dir=$2 pkg=$3 ldflags=$4
  if [ -x "$BIN/$name" ]; then
    echo "build-control-plane: $name present: $BIN/$name"
    return 0
  fi
  local t0 tmp
  t0=$(date +%s)
  tmp="$BIN/.$name.tmp.$$"
  echo "build-control-plane: building $name ($("$GO" env GOVERSION), this takes minutes on a cold cache)..."
  (cd "$dir" && "$GO" build -ldflags "$ldflags" -o "$tmp" "$pkg") || { rm -f "$tmp"; return 1; }
  mv -f "$tmp" "$BIN/$name"   # atomic: a half-written binary is never taken as present
  echo "build-control-plane: built $name in $(( $(date +%s) - t0 )) s"
  built+=("$name")
}

minor="${K8S#v1.}"; minor="${minor%%.*}"
vpkg=k8s.io/component-base/version
build etcd "$TOOLS/etcd" go.etcd.io/etcd/server/v3 "-s -w"
k8s_ldflags="-s -w -X $vpkg.gitVersion=$K8S -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean"
build kube-apiserver "$TOOLS/kube-apiserver" k8s.io/kubernetes/cmd/kube-apiserver "$k8s_ldflags"
# kubectl: same wrapper module (its staging modules are pinned there), for the tests that check what
# `kubectl get` prints and what `kubectl explain` reads from the CRDs' schemas.
build kubectl "$TOOLS/kube-apiserver" k8s.io/kubernetes/cmd/kubectl "$k8s_ldflags"

"$BIN/etcd" --version | sed -n 1p
"$BIN/kube-apiserver" --version
"$BIN/kubectl" version --client | sed -n 1p
echo "build-control-plane: ${#built[@]} binaries built in $(( $(date +%s) - start )) s; bin dir: $BIN"
