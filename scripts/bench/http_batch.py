"""End-to-end throughput of a running smsgate: HTTP batch submission to `delivered` on the simulated network.

Usage: python3 scripts/bench/http_batch.py URL API_KEY BATCHES PER_BATCH
  e.g. SMSGATE_ADMIN_KEY=sk_bench_key_0123456789 target/release/smsgate serve --data-dir /tmp/bench &
       python3 scripts/bench/http_batch.py http://127.0.0.1:8080 sk_bench_key_0123456789 20 1000

Posts BATCHES batches of PER_BATCH messages, four requests at a time, to numbers clear of the simulator's magic
endings, then polls /metrics until every message is delivered. Prints the acceptance rate (every message
committed before its 2xx) and the end-to-end rate. Standard library only. Loopback only: point it at a server on
this machine.
"""
import concurrent.futures
import json
import sys
import time
import urllib.request


def main():
    base, key, n_batches, per = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])

    def post(b):
        msgs = [
            {"to": "+4477009%05d" % (((b * per + i) % 9000) * 10 + 5), "from": "Bench", "body": "benchmark message"}
            for i in range(per)
        ]
        req = urllib.request.Request(
            base + "/v1/messages/batch",
            data=json.dumps({"messages": msgs}).encode(),
            headers={"Authorization": "Bearer " + key, "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=120) as r:
            return len(json.load(r)["data"])

    def delivered():
        text = urllib.request.urlopen(base + "/metrics", timeout=30).read().decode()
        for line in text.splitlines():
            if line.startswith('smsgate_status_changes_total{status="delivered"}'):
                return int(float(line.rsplit(" ", 1)[1]))
        return 0

    before = delivered()
    t0 = time.time()
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        total = sum(ex.map(post, range(n_batches)))
    t1 = time.time()
    deadline = t0 + 600
    while delivered() - before < total:
        if time.time() > deadline:
            sys.exit("not all delivered within 10 minutes")
        time.sleep(0.1)
    t2 = time.time()
    print(f"accepted {total} in {t1 - t0:.2f}s ({total / (t1 - t0):.0f}/s); "
          f"all delivered after {t2 - t0:.2f}s ({total / (t2 - t0):.0f}/s end to end)")


if __name__ == "__main__":
    main()
