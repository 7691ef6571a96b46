"""Shared by the bench/k8s_*.py helpers: keep-alive HTTP clients for the service and for the test cluster's
API server (admin token and CA from the env file of `scripts/cluster env`)."""

import http.client
import json
import math
import os
import ssl
import time
from urllib.parse import urlsplit


def service(port):
    return http.client.HTTPConnection("127.0.0.1", int(port), timeout=60)


def apiserver():
    """Admin connection to the cluster's API server: LMEVAL_CLUSTER_APISERVER, _CA, _TOKEN."""
    url = urlsplit(os.environ["LMEVAL_CLUSTER_APISERVER"])
    context = ssl.create_default_context(cafile=os.environ["LMEVAL_CLUSTER_CA"])
    return http.client.HTTPSConnection(url.hostname, url.port, context=context, timeout=60)


def admin_headers():
    return {"authorization": f"Bearer {os.environ['LMEVAL_CLUSTER_TOKEN']}", "accept": "application/json",
            "content-type": "application/json"}


def call(conn, method, path, body=None, headers=None):
    """One request on a keep-alive connection: (status, payload bytes, milliseconds)."""
    start = time.perf_counter()
    conn.request(method, path, body, headers or {"content-type": "application/json"})
    response = conn.getresponse()
    payload = response.read()
    return response.status, payload, (time.perf_counter() - start) * 1000


def api_get(conn, path):
    status, payload, _ = call(conn, "GET", path, headers=admin_headers())
    if status != 200:
        raise SystemExit(f"GET {path}: {status} {payload[:300]!r}")
    return json.loads(payload)


def percentile(sorted_samples, p):
    """Nearest-rank percentile of an ascending list."""
    index = math.ceil(p / 100 * len(sorted_samples)) - 1
    return sorted_samples[max(0, min(len(sorted_samples) - 1, index))]
