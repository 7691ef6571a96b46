"""The API server's own request counter (apiserver_request_total).

    k8s_apimetrics.py scrape FILE          save GET /metrics (admin) to FILE
    k8s_apimetrics.py diff BEFORE AFTER    print "<service-style reads> <all requests>", then one line per
                                           changed (verb resource/subresource code) series, largest first

"Service-style reads" are GET and LIST of evaluations, jobs, pods and configmaps: what the service would send if it answered
reads from the API server instead of its watch caches. WATCH requests are counted when they end."""

import re
import sys
from collections import Counter

import k8s_api

SERIES = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
READ_VERBS = {"GET", "LIST"}
CACHED_RESOURCES = {"evaluations", "jobs", "pods", "configmaps"}


def parse(path):
    counts = Counter()
    with open(path) as f:
        for line in f:
            match = SERIES.match(line.strip())
            if match:
                labels = dict(LABEL.findall(match["labels"]))
                key = (labels.get("verb", ""), labels.get("resource", ""), labels.get("subresource", ""),
                       labels.get("code", ""))
                counts[key] += float(match["value"])
    return counts


def main():
    if sys.argv[1] == "scrape":
        conn = k8s_api.apiserver()
        status, payload, _ = k8s_api.call(conn, "GET", "/metrics", headers=k8s_api.admin_headers() | {"accept": "text/plain"})
        if status != 200:
            raise SystemExit(f"GET /metrics: {status} {payload[:300]!r}")
        with open(sys.argv[2], "wb") as f:
            f.write(payload)
        return
    before, after = parse(sys.argv[2]), parse(sys.argv[3])
    delta = {key: after[key] - before.get(key, 0) for key in after}
    delta = {key: int(value) for key, value in delta.items() if value}
    reads = sum(v for (verb, resource, _, _), v in delta.items() if verb in READ_VERBS and resource in CACHED_RESOURCES)
    print(reads, sum(delta.values()))
    for (verb, resource, subresource, code), value in sorted(delta.items(), key=lambda kv: -kv[1]):
        what = resource + (f"/{subresource}" if subresource else "") if resource else "(non-resource URL)"
        print(f"{verb} {what} {code}: {value}")


if __name__ == "__main__":
    main()
