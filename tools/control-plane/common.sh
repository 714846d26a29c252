# Shared by scripts/build-control-plane.sh and tools/control-plane/regen.sh (sourced, not run).
# Loads the versions, finds the Go toolchain and sets a Go environment that never switches
# toolchains and never rewrites the committed go.mod/go.sum while building.

CP_TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=tools/control-plane/versions.env
. "$CP_TOOLS_DIR/versions.env"

# PATH in CI may lack Go; the machine image installs it at /usr/local/go.
cp_find_go() {
  if [ -n "${GO:-}" ] && [ -x "$GO" ]; then
    return 0
  fi
  if [ -x /usr/local/go/bin/go ]; then
    GO=/usr/local/go/bin/go
  elif command -v go >/dev/null 2>&1; then
    GO="$(command -v go)"
  else
    echo "control-plane: no Go toolchain found (looked at /usr/local/go/bin/go and PATH)" >&2
    return 1
  fi
}

# Same path logic as controlPlaneBinDir() in test/helpers/cluster.ts.
cp_bin_dir() {
  echo "${FERRY_CACHE_DIR:-$HOME/.cache/ferry}/control-plane/k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}/bin"
}

export GOTOOLCHAIN=local
export CGO_ENABLED=0
