"""Client side of scripts/bench-hostile: each subcommand plays one hostile client and prints its figures."""

import http.client
import json
import socket
import statistics
import sys
import threading
import time


def read_all(port, path):
    """Reads a response body to the end; returns (seconds, bytes)."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", path)
    response = conn.getresponse()
    total = 0
    while True:
        chunk = response.read(1 << 20)
        if not chunk:
            break
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


def logread(port, path, readers):
    """`readers` concurrent reads of `path` while /healthz is probed; prints max read s, bytes, healthz p99 ms."""
    stop, latencies, results = threading.Event(), [], []
    prober = threading.Thread(target=healthz_latencies, args=(port, stop, latencies))
    prober.start()
    threads = [threading.Thread(target=lambda: results.append(read_all(port, path))) for _ in range(readers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    prober.join()
    latencies.sort()
    p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
    print(f"{max(s for s, _ in results):.2f} {min(b for _, b in results)} {p99:.1f} {len(latencies)}")


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
    elif command == "segments":
        segments(port, int(sys.argv[3]), int(sys.argv[4]))
    elif command == "idle":
        hold(port, int(sys.argv[3]), float(sys.argv[4]))
    elif command == "followers":
        hold(port, int(sys.argv[3]), float(sys.argv[4]), sys.argv[5])
