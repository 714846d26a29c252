#!/usr/bin/env bash
# Builds the real virtctl (kubevirt.io/kubevirt cmd/virtctl v1.8.4) from the Go module proxy, through
# the wrapper module in tools/virtctl/, for the tests that run `virtctl image-upload` against Ferry.
#
# Output: ${FERRY_CACHE_DIR:-$HOME/.cache/ferry}/virtctl-v1.8.4/virtctl, outside the repo (never
# commit the binary). A binary already there is not rebuilt. -mod=readonly against the committed
# go.sum: the build never writes into the repo. v1.8.4 because v1.9.0 needs
# kubevirt.io/virt-template-* v0.2.0, which the module proxy here does not serve
# (shared/reference/virtctl-upload.md §5). Cold: about 3 min on two cores, ~1 GB peak RSS.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=v1.8.4
if ! grep -Eq "^[[:space:]]*kubevirt.io/kubevirt $VERSION( |$)" tools/virtctl/go.mod; then
  echo "build-virtctl: tools/virtctl/go.mod does not require kubevirt.io/kubevirt $VERSION" >&2
  exit 1
fi
if [ -n "${GO:-}" ] && [ -x "$GO" ]; then :
elif [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go
elif command -v go >/dev/null 2>&1; then GO="$(command -v go)"
else echo "build-virtctl: no Go toolchain found (looked at \$GO, /usr/local/go/bin/go and PATH)" >&2; exit 1
fi
export GOTOOLCHAIN=local CGO_ENABLED=0
export GOFLAGS="-mod=readonly -buildvcs=false -trimpath"
BIN_DIR="${FERRY_CACHE_DIR:-$HOME/.cache/ferry}/virtctl-$VERSION"
BIN="$BIN_DIR/virtctl"
if [ -x "$BIN" ]; then
  echo "build-virtctl: present: $BIN"
else
  mkdir -p "$BIN_DIR"
  tmp="$BIN_DIR/.virtctl.tmp.$$"
  t0=$(date +%s)
  echo "build-virtctl: building virtctl $VERSION ($("$GO" env GOVERSION); minutes on a cold cache)..."
  # Stamped: an unstamped virtctl prefixes every error with a semver parse failure.
  (cd tools/virtctl && "$GO" build -ldflags "-s -w -X kubevirt.io/client-go/version.gitVersion=$VERSION -X kubevirt.io/client-go/version.gitTreeState=clean" \
    -o "$tmp" kubevirt.io/kubevirt/cmd/virtctl) || { rm -f "$tmp"; exit 1; }
  mv -f "$tmp" "$BIN"   # atomic: a half-written binary is never taken as present
  echo "build-virtctl: built in $(( $(date +%s) - t0 )) s"
fi
"$BIN" version --client
