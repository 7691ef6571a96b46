#!/usr/bin/env bash
# Regenerates the `replace` block of tests/cluster/go.mod from the go.mod of the chosen k8s.io/kubernetes release.
# k8s.io/kubernetes requires each staging module at v0.0.0 and maps it to ./staging/...; those replaces do not
# apply to a module that depends on it, so we pin every staging module to the matching v0.MINOR.PATCH tag.
# Usage: hack/update-replaces.sh v1.37.2   (then: go mod tidy)
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:?usage: $0 vX.Y.Z}
staging=v0.${version#v1.}
gomod=$(go mod download -json "k8s.io/kubernetes@${version}" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
[[ -f $gomod ]] || { echo "cannot download k8s.io/kubernetes@${version}" >&2; exit 1; }
go mod edit -require="k8s.io/kubernetes@${version}"
while read -r mod; do
  go mod edit -replace="${mod}=${mod}@${staging}"
done < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$gomod")
echo "pinned $(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {n++} END {print n}' "$gomod") staging modules to ${staging}"
