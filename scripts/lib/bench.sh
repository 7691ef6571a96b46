# shellcheck shell=bash
# Sourced by scripts/bench-local and scripts/bench-k8s: the load generator and small measuring helpers.
# wrk_paths reads the caller's $work (scratch dir), $connections and $duration.

command -v wrk >/dev/null || { echo "installing wrk" >&2; apt-get install -y -qq wrk >/dev/null; }

# shellcheck source=scripts/lib/net.sh
source "$(dirname "${BASH_SOURCE[0]}")/net.sh"
peak_rss_mb() { awk '/VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

# wrk (one thread) with a Lua script that reads paths from a file and cycles through them; wrk's own output
# is kept in $work/wrk.out.
wrk_paths() { # url paths_file [bearer_token] -> "reqs_per_s p50_ms p99_ms errors"
    local lua="$work/paths.lua" headers="{}"
    [[ -n ${3:-} ]] && headers="{[\"Authorization\"] = \"Bearer $3\"}"
    cat >"$lua" <<LUA
local paths = {}
for line in io.lines("$2") do paths[#paths + 1] = line end
local i = 0
local headers = $headers
request = function() i = i % #paths + 1; return wrk.format("GET", paths[i], headers) end
done = function(summary, latency, requests)
  io.write(string.format("RESULT %.0f %.2f %.2f %d\n", summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
LUA
    ${WRK_PREFIX:-} wrk -t1 -c"$connections" -d"${duration}s" --latency -s "$lua" "$1" | tee "$work/wrk.out" | awk '/^RESULT/ {print $2, $3, $4, $5}'
}
