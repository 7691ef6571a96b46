"""POST /api/v1/evaluations next to a bare Job create against the same API server, interleaved one for one so
both see the same cluster load. Each side uses one keep-alive http.client connection (plain HTTP to the service,
TLS to the API server with the admin token).

The bare Job is the Job the service made for TEMPLATE_ID (read back from the API server, server-set fields
dropped), with a fresh UUID substituted everywhere the id appears, created in BARE_NAMESPACE: same size, same
admission (Pod Security), same unschedulable node selector.

    k8s_post_vs_job.py PORT NAMESPACE TEMPLATE_ID BARE_NAMESPACE COUNT
    -> "<service p50> <service p99> <bare p50> <bare p99>" (ms)"""

import json
import sys
import uuid

import k8s_api

BODY = json.dumps({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 2})
WARMUP = 10
SERVER_SET_LABELS = {"controller-uid", "job-name", "batch.kubernetes.io/controller-uid", "batch.kubernetes.io/job-name"}


def bare_template(api, namespace, template_id):
    name = f"lmeval-{uuid.UUID(template_id).hex}"
    job = k8s_api.api_get(api, f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}")
    meta = job["metadata"]
    spec = job["spec"]
    spec.pop("selector", None)
    template_labels = spec["template"].get("metadata", {}).get("labels", {})
    for label in SERVER_SET_LABELS:
        template_labels.pop(label, None)
    body = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": meta["name"], "labels": meta.get("labels", {}), "annotations": meta.get("annotations", {})},
        "spec": spec,
    }
    return json.dumps(body)


def main():
    port, namespace, template_id, bare_namespace, count = sys.argv[1:6]
    count = int(count)
    api, service = k8s_api.apiserver(), k8s_api.service(port)
    template = bare_template(api, namespace, template_id)
    old = uuid.UUID(template_id)
    jobs_path = f"/apis/batch/v1/namespaces/{bare_namespace}/jobs"
    ours, bare = [], []
    for i in range(WARMUP + count):
        status, payload, ours_ms = k8s_api.call(service, "POST", "/api/v1/evaluations", BODY)
        if status != 202:
            raise SystemExit(f"POST /api/v1/evaluations: {status} {payload[:300]!r}")
        new = uuid.uuid4()
        body = template.replace(str(old), str(new)).replace(old.hex, new.hex)
        status, payload, bare_ms = k8s_api.call(api, "POST", jobs_path, body, k8s_api.admin_headers())
        if status != 201:
            raise SystemExit(f"POST {jobs_path}: {status} {payload[:300]!r}")
        if i >= WARMUP:
            ours.append(ours_ms)
            bare.append(bare_ms)
    ours.sort()
    bare.sort()
    p = k8s_api.percentile
    print(f"{p(ours, 50):.2f} {p(ours, 99):.2f} {p(bare, 50):.2f} {p(bare, 99):.2f}")


if __name__ == "__main__":
    main()
