"""Sequential latency of one GET (p50/p99 in ms over N requests, keep-alive)."""

import http.client
import statistics
import sys
import time


def main():
    port, path, count = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    conn = http.client.HTTPConnection("127.0.0.1", port)
    samples = []
    for _ in range(count):
        start = time.perf_counter()
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        samples.append((time.perf_counter() - start) * 1000)
        if response.status != 200:
            sys.exit(f"GET {path}: {response.status}")
    samples.sort()
    print(f"{statistics.median(samples):.2f} {samples[int(len(samples) * 0.99) - 1]:.2f}")


if __name__ == "__main__":
    main()
