#!/usr/bin/env bash
# Builds the real Kubernetes control plane used by the integration tests (test/integration/):
# kube-apiserver, etcd and kubectl, and for the node tests (test/node/) kube-controller-manager,
# kube-scheduler, kubelet and kube-proxy, from the Go module proxy, at the versions in
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

# Each binary lands under its final name by an atomic rename from a temp dir in the same filesystem,
# so a half-written binary is never taken as present; one that is present is not built again, and a
# cache holding only some of them (an older checkout built only etcd, kube-apiserver and kubectl) is
# completed rather than trusted.
build() { # build MODULE_DIR LDFLAGS PACKAGE... : ONE `go build` for every package whose binary is missing
  local dir=$1 ldflags=$2; shift 2
  local missing=() pkg name t0 tmp
  for pkg in "$@"; do
    name="${pkg##*/}"
    [ "$name" = v3 ] && name=etcd   # go.etcd.io/etcd/server/v3 builds the etcd server
    if [ -x "$BIN/$name" ]; then
      echo "build-control-plane: $name present: $BIN/$name"
    else
      missing+=("$pkg")
    fi
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  t0=$(date +%s)
  tmp="$(mktemp -d "$BIN/.build.XXXXXX")"
  echo "build-control-plane: building ${missing[*]##*/} in one go build ($("$GO" env GOVERSION), minutes on a cold cache)..."
  if [ ${#missing[@]} -eq 1 ]; then
    # `go build -o DIR/` names the binary after the package's last element (v3 for etcd): name it.
    name="${missing[0]##*/}"; [ "$name" = v3 ] && name=etcd
    (cd "$dir" && "$GO" build -ldflags "$ldflags" -o "$tmp/$name" "${missing[0]}") || { rm -rf "$tmp"; return 1; }
  else
    (cd "$dir" && "$GO" build -ldflags "$ldflags" -o "$tmp/" "${missing[@]}") || { rm -rf "$tmp"; return 1; }
  fi
  for pkg in "${missing[@]}"; do
    name="${pkg##*/}"; [ "$name" = v3 ] && name=etcd
    [ -x "$tmp/$name" ] || { echo "build-control-plane: go build made no $name" >&2; rm -rf "$tmp"; return 1; }
    mv -f "$tmp/$name" "$BIN/$name"
    built+=("$name")
  done
  rmdir "$tmp"
  echo "build-control-plane: built ${missing[*]##*/} in $(( $(date +%s) - t0 )) s"
}

minor="${K8S#v1.}"; minor="${minor%%.*}"
vpkg=k8s.io/component-base/version
build "$TOOLS/etcd" "-s -w" go.etcd.io/etcd/server/v3
k8s_ldflags="-s -w -X $vpkg.gitVersion=$K8S -X $vpkg.gitMajor=1 -X $vpkg.gitMinor=$minor -X $vpkg.gitTreeState=clean"
# One wrapper module (its staging modules pinned there), one `go build` for all of them: the packages
# they share are compiled once. kube-apiserver and kubectl serve the integration tests (test/helpers/
# cluster.ts); the controller-manager, scheduler, kubelet and kube-proxy make the real one-node cluster
# of the node tests (tools/node-cluster/node-cluster.ts).
build "$TOOLS/kube-apiserver" "$k8s_ldflags" \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl \
  k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler \
  k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy

"$BIN/etcd" --version | sed -n 1p
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy; do "$BIN/$b" --version; done
"$BIN/kubectl" version --client | sed -n 1p
echo "build-control-plane: ${#built[@]} binaries built in $(( $(date +%s) - start )) s; bin dir: $BIN"
