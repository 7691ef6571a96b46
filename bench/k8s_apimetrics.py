"""The API server's own request counter (apiserver_request_total).

    k8s_apimetrics.py scrape FILE          save GET /metrics (admin) to FILE
    k8s_apimetrics.py diff BEFORE AFTER    print "<service-style reads> <all requests>", then one line per
                                           changed (verb resource/subresource code) series, largest first
    k8s_apimetrics.py service PORT         print the lm-eval-aas replica's own get/list requests of evaluations,
                                           jobs, pods and configmaps so far (its lmeval_kube_api_requests_total)
    k8s_apimetrics.py reviews PORT         print the replica's TokenReview and SubjectAccessReview requests so far
    k8s_apimetrics.py quiet SECONDS LIMIT  wait until no client has sent a service-style read for SECONDS (at most
                                           LIMIT s); print the seconds waited. The cluster's own controllers read
                                           new objects' owners for a while (the garbage collector GETs an
                                           Evaluation it has not seen yet), which is not the service's doing.

"Service-style reads" are GET and LIST of evaluations, jobs, pods and configmaps: what the service would send if it answered
reads from the API server instead of its watch caches. WATCH requests are counted when they end."""

import re
import sys
import time
from collections import Counter

import k8s_api

SERIES = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
SERVICE_SERIES = re.compile(
    r'^lmeval_kube_api_requests_total\{verb="(?P<verb>[^"]*)",resource="(?P<resource>[^"]*)"\} (?P<value>\S+)$')
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


def scrape(conn):
    status, payload, _ = k8s_api.call(conn, "GET", "/metrics", headers=k8s_api.admin_headers() | {"accept": "text/plain"})
    if status != 200:
        raise SystemExit(f"GET /metrics: {status} {payload[:300]!r}")
    return payload


def service_style_reads(payload):
    reads = 0
    for line in payload.decode().splitlines():
        match = SERIES.match(line.strip())
        if match:
            labels = dict(LABEL.findall(match["labels"]))
            if labels.get("verb") in READ_VERBS and labels.get("resource") in CACHED_RESOURCES:
                reads += float(match["value"])
    return reads


def main():
    if sys.argv[1] == "scrape":
        with open(sys.argv[2], "wb") as f:
            f.write(scrape(k8s_api.apiserver()))
        return
    if sys.argv[1] in ("service", "reviews"):
        status, payload, _ = k8s_api.call(k8s_api.service(sys.argv[2]), "GET", "/metrics")
        if status != 200:
            raise SystemExit(f"GET /metrics of the service: {status}")
        counted = 0
        for line in payload.decode().splitlines():
            match = SERVICE_SERIES.match(line.strip())
            if not match:
                continue
            if sys.argv[1] == "service" and match["verb"] in ("get", "list") and match["resource"] in CACHED_RESOURCES:
                counted += int(float(match["value"]))
            if sys.argv[1] == "reviews" and match["resource"] in ("tokenreviews", "subjectaccessreviews"):
                counted += int(float(match["value"]))
        print(counted)
        return
    if sys.argv[1] == "quiet":
        quiet, limit = float(sys.argv[2]), float(sys.argv[3])
        conn, start = k8s_api.apiserver(), time.monotonic()
        last, since = service_style_reads(scrape(conn)), time.monotonic()
        while time.monotonic() - since < quiet and time.monotonic() - start < limit:
            time.sleep(0.5)
            now = service_style_reads(scrape(conn))
            if now != last:
                last, since = now, time.monotonic()
        print(f"{time.monotonic() - start:.0f}")
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
