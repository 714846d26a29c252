#!/usr/bin/env bash
# images/compare-packages.sh A B: whether two builds have the same package set. A and B are OCI
# archives (the lists are read from the image: /usr/share/ferry/packages.txt and node.txt) or the
# packages.txt files the build writes beside them. Exit 0 when equal; else the difference, exit 1.
set -euo pipefail
[ $# -eq 2 ] || { echo "usage: $0 A.oci.tar|A.packages.txt B.oci.tar|B.packages.txt" >&2; exit 2; }

# The package list inside an OCI archive: walk index → manifest → layers, print the two files.
packages_of() {
  case $1 in *.txt) cat "$1"; return ;; esac
  local manifest layer
  manifest=$(tar -xOf "$1" index.json | jq -r '.manifests[0].digest | sub("sha256:"; "")')
  for layer in $(tar -xOf "$1" "blobs/sha256/$manifest" | jq -r '.layers[].digest | sub("sha256:"; "")'); do
    tar -xOf "$1" "blobs/sha256/$layer" | tar -xzOf - ./usr/share/ferry/packages.txt 2> /dev/null || true
  done
  for layer in $(tar -xOf "$1" "blobs/sha256/$manifest" | jq -r '.layers[].digest | sub("sha256:"; "")'); do
    tar -xOf "$1" "blobs/sha256/$layer" | tar -xzOf - ./usr/share/ferry/node.txt 2> /dev/null || true
  done
}

a=$(packages_of "$1"); b=$(packages_of "$2")
[ -n "$a" ] && [ -n "$b" ] || { echo "error: no package list found in $( [ -n "$a" ] && echo "$2" || echo "$1")" >&2; exit 2; }
if [ "$a" = "$b" ]; then
  echo "same package set ($(wc -l <<< "$a") entries): $1 = $2"
else
  echo "package sets differ ($1 < > $2):"
  diff <(echo "$a") <(echo "$b") | grep '^[<>]' || true
  exit 1
fi
