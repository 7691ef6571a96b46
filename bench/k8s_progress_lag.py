"""How far an Evaluation's status.progress trails what its driver published: polls the run record ConfigMap
(progress the driver writes every 2 s while it changes) and the Evaluation object (the controller's status) every
POLL seconds until the evaluation ends. For each new `completed` count the record shows, the lag is the time until
the object's status shows at least that count.

    k8s_progress_lag.py NAMESPACE ID TIMEOUT
    -> "<record updates> <lag p50 s> <lag max s> <final state>"""

import json
import sys
import time
import uuid

import k8s_api

POLL = 0.1


def main():
    namespace, evaluation_id, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3])
    name = f"lmeval-{uuid.UUID(evaluation_id).hex}"
    api = k8s_api.apiserver()
    record_path = f"/api/v1/namespaces/{namespace}/configmaps/{name}"
    object_path = f"/apis/lm-eval-aas.io/v1alpha1/namespaces/{namespace}/evaluations/{name}"
    published = {}  # completed count -> when the record first showed it
    shown = []  # (when, completed) as the object's status first showed each count
    start, state = time.monotonic(), None
    while time.monotonic() - start < timeout:
        now = time.monotonic()
        status, payload, _ = k8s_api.call(api, "GET", record_path, headers=k8s_api.admin_headers())
        if status == 200:
            progress = (json.loads(payload).get("data") or {}).get("progress")
            if progress:
                published.setdefault(json.loads(progress)["completed"], now)
        status, payload, _ = k8s_api.call(api, "GET", object_path, headers=k8s_api.admin_headers())
        if status == 200:
            evaluation = json.loads(payload).get("status") or {}
            state = evaluation.get("state")
            completed = (evaluation.get("progress") or {}).get("completed")
            if completed is not None and (not shown or completed > shown[-1][1]):
                shown.append((now, completed))
            if state in ("succeeded", "failed", "cancelled"):
                break
        time.sleep(POLL)
    lags = []
    for completed, at in sorted(published.items()):
        seen = next((when for when, count in shown if count >= completed), None)
        if seen is not None:
            lags.append(max(0.0, seen - at))
    if not lags:
        raise SystemExit(f"no progress seen: record {published}, object {shown}, state {state}")
    lags.sort()
    print(len(lags), f"{k8s_api.percentile(lags, 50):.2f}", f"{lags[-1]:.2f}", state)


if __name__ == "__main__":
    main()
