"""POST /api/v1/evaluations next to a bare create of the same Evaluation object against the same API server,
interleaved one for one so both see the same cluster load. Each side uses one keep-alive http.client connection
(plain HTTP to the service, TLS to the API server with the admin token).

The bare object is the Evaluation the service made for TEMPLATE_ID (read back from the API server, server-set
fields and status dropped), with a fresh UUID substituted everywhere the id appears, created in BARE_NAMESPACE,
where no service reconciles it: the same size, the same CRD validation.

    k8s_post_vs_bare.py PORT NAMESPACE TEMPLATE_ID BARE_NAMESPACE COUNT
    -> "<service p50> <service p99> <bare p50> <bare p99>" (ms)"""

import json
import sys
import uuid

import k8s_api

BODY = json.dumps({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 2})
WARMUP = 10
EVALUATIONS = "/apis/lm-eval-aas.io/v1alpha1/namespaces/{}/evaluations"


def bare_template(api, namespace, template_id):
    name = f"lmeval-{uuid.UUID(template_id).hex}"
    made = k8s_api.api_get(api, f"{EVALUATIONS.format(namespace)}/{name}")
    meta = made["metadata"]
    body = {
        "apiVersion": made["apiVersion"],
        "kind": made["kind"],
        "metadata": {"name": meta["name"], "labels": meta.get("labels", {}), "annotations": meta.get("annotations", {})},
        "spec": made["spec"],
    }
    return json.dumps(body)


def main():
    port, namespace, template_id, bare_namespace, count = sys.argv[1:6]
    count = int(count)
    api, service = k8s_api.apiserver(), k8s_api.service(port)
    template = bare_template(api, namespace, template_id)
    old = uuid.UUID(template_id)
    path = EVALUATIONS.format(bare_namespace)
    ours, bare = [], []
    for i in range(WARMUP + count):
        status, payload, ours_ms = k8s_api.call(service, "POST", "/api/v1/evaluations", BODY)
        if status != 202:
            raise SystemExit(f"POST /api/v1/evaluations: {status} {payload[:300]!r}")
        new = uuid.uuid4()
        body = template.replace(str(old), str(new)).replace(old.hex, new.hex)
        status, payload, bare_ms = k8s_api.call(api, "POST", path, body, k8s_api.admin_headers())
        if status != 201:
            raise SystemExit(f"POST {path}: {status} {payload[:300]!r}")
        if i >= WARMUP:
            ours.append(ours_ms)
            bare.append(bare_ms)
    ours.sort()
    bare.sort()
    p = k8s_api.percentile
    print(f"{p(ours, 50):.2f} {p(ours, 99):.2f} {p(bare, 50):.2f} {p(bare, 99):.2f}")


if __name__ == "__main__":
    main()
