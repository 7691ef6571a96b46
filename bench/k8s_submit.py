"""Submits N evaluations to lm-eval-aas from C concurrent clients (one keep-alive connection each).
Prints the ids on stdout, then "SUBMIT <evaluations/s> <p50 ms> <p99 ms>" on stderr."""

import json
import sys
import threading
import time

import k8s_api

BODY = json.dumps({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 2})


def main():
    port, count, clients = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    ids, samples, errors = [], [], []
    lock = threading.Lock()
    remaining = iter(range(count))

    def client():
        conn = k8s_api.service(port)
        while True:
            with lock:
                if errors or next(remaining, None) is None:
                    return
            status, payload, ms = k8s_api.call(conn, "POST", "/api/v1/evaluations", BODY)
            with lock:
                if status != 202:
                    errors.append(f"POST /api/v1/evaluations: {status} {payload[:300]!r}")
                    return
                ids.append(json.loads(payload)["id"])
                samples.append(ms)

    start = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if errors:
        sys.exit(errors[0])
    print("\n".join(ids))
    samples.sort()
    print(f"SUBMIT {len(ids) / elapsed:.0f} {k8s_api.percentile(samples, 50):.1f} {k8s_api.percentile(samples, 99):.1f}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
