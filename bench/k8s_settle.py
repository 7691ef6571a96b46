"""Waits until the cluster and the service agree on N evaluations: the API server holds N managed Jobs and N
pods, every pod marked unschedulable by the scheduler, and the service lists N evaluations. Prints
"<jobs> <pods> <listed> <seconds waited>"."""

import json
import sys
import time

import k8s_api

SELECTOR = "app.kubernetes.io%2Fmanaged-by%3Dlm-eval-aas"


def listed(conn):
    count, token = 0, None
    while True:
        path = "/api/v1/evaluations?page_size=500" + (f"&page_token={token}" if token else "")
        status, payload, _ = k8s_api.call(conn, "GET", path)
        if status != 200:
            raise SystemExit(f"GET {path}: {status} {payload[:300]!r}")
        page = json.loads(payload)
        count += len(page["items"])
        token = page.get("next_page_token")
        if not token:
            return count


def unschedulable(pod):
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "PodScheduled" and c["status"] == "False" for c in conditions)


def main():
    port, namespace, want, timeout = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    service, api = k8s_api.service(port), k8s_api.apiserver()
    start = time.monotonic()
    while True:
        jobs = k8s_api.api_get(api, f"/apis/batch/v1/namespaces/{namespace}/jobs?labelSelector={SELECTOR}")["items"]
        pods = k8s_api.api_get(api, f"/api/v1/namespaces/{namespace}/pods?labelSelector={SELECTOR}")["items"]
        waiting = sum(1 for p in pods if unschedulable(p))
        count = listed(service)
        if len(jobs) >= want and waiting >= want and count >= want:
            print(len(jobs), len(pods), count, f"{time.monotonic() - start:.0f}")
            return
        if time.monotonic() - start > timeout:
            raise SystemExit(f"not settled after {timeout:.0f}s: {len(jobs)} jobs, {len(pods)} pods "
                             f"({waiting} unschedulable), {count} listed by the service; want {want}")
        time.sleep(2)


if __name__ == "__main__":
    main()
