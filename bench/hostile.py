"""Client side of scripts/bench-hostile: each subcommand plays one hostile client and prints its figures."""

import http.client
import json
import socket
import statistics
import sys
import threading
import time


def read_all(port, path, accept=None):
    """Reads a response body to the end; returns (seconds, bytes)."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    conn.request("GET", path, headers={"accept": accept} if accept else {})
    response = conn.getresponse()
    total = 0
    while chunk := response.read(1 << 20):
        total += len(chunk)
    return time.monotonic() - started, total


def healthz_latencies(port, stop, out):
    while not stop.is_set():
        started = time.monotonic()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/healthz")
        conn.getresponse().read()
        conn.close()
        out.append((time.monotonic() - started) * 1000)
        time.sleep(0.01)


def concurrently(port, reads):
    """Runs every one of `reads` (each returning (seconds, bytes)) at once while /healthz is probed; returns their
    results in order and the /healthz latencies in ms, sorted."""
    stop, latencies, results = threading.Event(), [], [None] * len(reads)
    prober = threading.Thread(target=healthz_latencies, args=(port, stop, latencies))
    prober.start()

    def run(i, read):
        results[i] = read()

    threads = [threading.Thread(target=run, args=(i, read)) for i, read in enumerate(reads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    prober.join()
    latencies.sort()
    return results, latencies


def p99(latencies):
    return latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]


def logread(port, path, readers):
    """`readers` concurrent reads of `path` while /healthz is probed; prints max read s, bytes, healthz p99 ms."""
    results, latencies = concurrently(port, [lambda: read_all(port, path)] * int(readers))
    print(f"{max(s for s, _ in results):.2f} {min(b for _, b in results)} {p99(latencies):.1f} {len(latencies)}")


def reads(port, paths):
    """Reads every `(accept, path)` at once while /healthz is probed; prints slowest read s, healthz p99 ms, healthz
    max ms, probes, and each read's bytes (comma-separated)."""
    split = [p.split(" ", 1) for p in paths]
    results, latencies = concurrently(port, [lambda a=a, p=p: read_all(port, p, a) for a, p in split])
    sizes = ",".join(str(b) for _, b in results)
    print(f"{max(s for s, _ in results):.2f} {p99(latencies):.1f} {latencies[-1]:.1f} {len(latencies)} {sizes}")


def submit_huge(port, tasks):
    """Submits an evaluation whose task code writes, once, a samples file of task lmeval_aas_huge with a 64 MiB
    record (32 Mi numbers) between two small ones, and 100 MiB of `x` without a newline on standard error;
    prints its id."""
    import base64
    import urllib.request

    numbers = 32 * 1024 * 1024 - 64  # a record just under 64 MiB: the largest the old reader parsed whole
    script = (
        "mkdir output/.once 2>/dev/null || exit 0; mkdir -p output/m; "
        """{ printf '{"doc_id": 0, "metrics": ["acc"], "acc": 0.0}\\n{"doc_id": 1, "metrics": ["acc"], "resps": ['; """
        f"yes 0, | tr -d '\\n' | head -c {2 * (numbers - 1)}; "
        """printf '0], "acc": 1.0}\\n{"doc_id": 2, "metrics": ["acc"], "acc": 1}\\n'; } """
        "> output/m/samples_lmeval_aas_huge_2026-01-01T00-00-00.000001.jsonl; "
        "head -c 104857600 /dev/zero | tr '\\0' x >&2"
    )
    encoded = base64.b64encode(script.encode()).decode()
    popen = f"cycler.__init__.__globals__.os.popen('echo {encoded} | base64 -d | /bin/sh').read()"
    task = (
        f"include: {tasks}/lmeval_aas/lmeval_aas_mc.yaml\ntask: lmeval_aas_hostile\n"
        f'doc_to_text: "{{{{ {popen} }}}}Question: {{{{country}}}}?"\n'
    )
    body = {
        "model": "dummy",
        "tasks": ["lmeval_aas_hostile"],
        "limit": 2,
        "log_samples": True,
        "inline_tasks": {"hostile.yaml": task},
    }
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/evaluations", json.dumps(body).encode(), {"content-type": "application/json"}
    )
    print(json.load(urllib.request.urlopen(request))["id"])


def segments(port, clients, count):
    """`clients` connections each send a dry-run body of `count` bytes one byte per segment; prints 2xx count."""
    body = json.dumps({"model": "dummy", "tasks": ["lmeval_aas_mc"], "labels": {"n": "1"}}).encode()
    body = body + b" " * max(0, count - len(body))
    ok = []

    def one():
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.sendall(
            b"POST /api/v1/evaluations?dry_run=true HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
            + f"content-length: {len(body)}\r\nconnection: close\r\n\r\n".encode()
        )
        for i in range(len(body)):
            s.send(body[i : i + 1])
            time.sleep(0.0005)
        response = s.recv(65536)
        ok.append(response.startswith(b"HTTP/1.1 200"))
        s.close()

    threads = [threading.Thread(target=one) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(sum(ok))


def hold(port, count, seconds, path=None):
    """Opens `count` connections (idle, or following `path`) and holds them `seconds`; prints how many opened."""
    sockets = []
    for _ in range(count):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=10)
            if path:
                s.sendall(f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode())
                if not s.recv(4096).startswith(b"HTTP/1.1 200"):
                    s.close()
                    continue
            sockets.append(s)
        except OSError:
            pass
    print(len(sockets), flush=True)
    time.sleep(seconds)
    for s in sockets:
        s.close()


if __name__ == "__main__":
    command, port = sys.argv[1], int(sys.argv[2])
    if command == "logread":
        logread(port, sys.argv[3], int(sys.argv[4]))
    elif command == "reads":
        reads(port, sys.argv[3:])
    elif command == "submit-huge":
        submit_huge(port, sys.argv[3])
    elif command == "segments":
        segments(port, int(sys.argv[3]), int(sys.argv[4]))
    elif command == "idle":
        hold(port, int(sys.argv[3]), float(sys.argv[4]))
    elif command == "followers":
        hold(port, int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
