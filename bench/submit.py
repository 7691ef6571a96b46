"""Submits N evaluations to lm-eval-aas over one keep-alive connection; prints their ids."""

import http.client
import json
import sys


def main():
    port, count = int(sys.argv[1]), int(sys.argv[2])
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for i in range(count):
        body = json.dumps({"model": "dummy", "tasks": ["lmeval_aas_mc"], "limit": 1, "labels": {"bench": "yes", "n": str(i)}})
        conn.request("POST", "/api/v1/evaluations", body, {"content-type": "application/json"})
        response = conn.getresponse()
        payload = response.read()
        if response.status != 202:
            sys.exit(f"submit failed: {response.status} {payload[:200]!r}")
        print(json.loads(payload)["id"])


if __name__ == "__main__":
    main()
