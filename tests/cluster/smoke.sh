#!/usr/bin/env bash
# The cluster's own acceptance test: build, `scripts/cluster up`, run tests/cluster/smoke (go test, build tag
# clustersmoke), print the component logs on failure, always `scripts/cluster down`, then check that no
# process and no listening port of the cluster is left. Exit status is non-zero on any failure.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cluster="$repo/scripts/cluster"
export LMEVAL_CLUSTER_DIR=${LMEVAL_CLUSTER_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/lm-eval-aas-cluster-smoke.XXXXXX")}
go=$(command -v go || echo /usr/local/go/bin/go)

pids=()
ports=()
status=0
logs_printed=0

print_logs() {
  [[ $logs_printed == 1 ]] && return
  logs_printed=1
  echo "===== component logs ($LMEVAL_CLUSTER_DIR/logs) ====="
  LOG_LINES=${LOG_LINES:-150} "$cluster" logs || true
}

finish() {
  local rc=$?
  [[ $status == 0 ]] && status=$rc
  trap - EXIT INT TERM
  if [[ $status != 0 ]]; then print_logs; fi
  # Remember what is ours before `down` deletes the PID files.
  if [[ -d $LMEVAL_CLUSTER_DIR/pids ]]; then
    for f in "$LMEVAL_CLUSTER_DIR"/pids/*.pid; do [[ -f $f ]] && pids+=("$(awk '{print $1}' "$f")"); done
  fi
  if [[ -f $LMEVAL_CLUSTER_DIR/env ]]; then
    IFS=, read -r -a ports <<<"$(sed -n 's/^LMEVAL_CLUSTER_PORTS=//p' "$LMEVAL_CLUSTER_DIR/env")"
  fi
  local t=$SECONDS
  if ! "$cluster" down; then echo "smoke: FAIL: scripts/cluster down failed"; status=1; fi
  echo "smoke: down took $((SECONDS - t))s"
  for pid in "${pids[@]}"; do
    if [[ -e /proc/$pid ]] && ! grep -q '^State:.*[ZX]' "/proc/$pid/status" 2>/dev/null; then
      echo "smoke: FAIL: process $pid is still running after down"; status=1
    fi
  done
  for port in "${ports[@]}"; do
    if ss -Htln "sport = :$port" | grep -q .; then
      echo "smoke: FAIL: port $port is still listening after down"; status=1
    fi
  done
  [[ -n ${extra_path:-} ]] && rm -rf "$extra_path"
  if [[ -e $LMEVAL_CLUSTER_DIR ]]; then echo "smoke: FAIL: $LMEVAL_CLUSTER_DIR still exists"; status=1; fi
  if [[ $status == 0 ]]; then
    echo "smoke: PASS (build ${build_s:-?}s, up ${up_s:-?}s, tests ${test_s:-?}s, total ${SECONDS}s)"
  else
    echo "smoke: FAIL (exit $status)"
  fi
  exit "$status"
}
trap finish EXIT
trap 'status=130; exit 130' INT TERM

t=$SECONDS
"$cluster" build
build_s=$((SECONDS - t))
echo "smoke: build took ${build_s}s"

# What the project's tests do: put their own commands on the containers' PATH.
extra_path=$(mktemp -d "${TMPDIR:-/tmp}/lm-eval-aas-smoke-path.XXXXXX")
printf '#!/bin/sh\necho "hello from the extra path: $*"\n' >"$extra_path/lmeval-smoke-hello"
chmod +x "$extra_path/lmeval-smoke-hello"
export LMEVAL_CLUSTER_EXTRA_PATH=$extra_path

t=$SECONDS
"$cluster" up
up_s=$((SECONDS - t))
echo "smoke: up took ${up_s}s (including the build check)"

set -a
# shellcheck disable=SC1090,SC1091
source <("$cluster" env)
set +a

t=$SECONDS
(cd "$repo/tests/cluster" && "$go" test -trimpath -buildvcs=false -tags clustersmoke -count=1 -v -timeout 10m ./smoke/) || status=$?
test_s=$((SECONDS - t))
echo "smoke: tests took ${test_s}s"
exit "$status"
