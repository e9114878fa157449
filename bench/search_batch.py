#!/usr/bin/env python3
"""POST .../search/batch against the same queries sent one request each, over HTTP (issue 12).

Usage: search_batch.py PATH_TO_JVDB [N_VECTORS] [DIM] [QUERIES] [BATCH]

Starts `jvdb serve` in a temporary directory, loads N random vectors with a small metadata
object into an HNSW database, then times QUERIES searches (topK 10, metadata included, the
default) sent one per request and in batches of BATCH, and groupBy doc (topK 10 groups).
Prints medians of 3 rounds, each mode timed within the same round.
"""
import os
import random
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "e2e"))
import jvdbtest  # noqa: E402
from jvdbtest import Server, expect  # noqa: E402


def main():
    jvdbtest.JVDB = os.path.abspath(sys.argv[1])
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 20000
    dim = int(sys.argv[3]) if len(sys.argv) > 3 else 128
    nq = int(sys.argv[4]) if len(sys.argv) > 4 else 500
    batch = int(sys.argv[5]) if len(sys.argv) > 5 else 100
    rnd = random.Random(1)
    with Server() as s:
        c = s.client()
        expect(c.post("/v1/databases", {"name": "b", "vectorDimension": dim, "sync": "never"}), 201)
        for lo in range(0, n, 1000):
            vs = [{"id": "v%d" % i, "values": [rnd.uniform(-1, 1) for _ in range(dim)],
                   "metadata": {"doc": "d%d" % (i // 8), "page": i % 8}} for i in range(lo, min(n, lo + 1000))]
            expect(c.post("/v1/databases/b/vectors/batch", {"vectors": vs}), 201)
        qs = [[rnd.uniform(-1, 1) for _ in range(dim)] for _ in range(nq)]
        expect(c.post("/v1/databases/b/search", {"queryVector": qs[0]}), 200)   # attach the index
        while c.get("/readyz").status != 200:
            time.sleep(0.2)
        rounds = {"single": [], "batch": [], "groupBy": []}
        for _ in range(3):
            t = time.perf_counter()
            for q in qs:
                expect(c.post("/v1/databases/b/search", {"queryVector": q, "topK": 10}), 200)
            rounds["single"].append(nq / (time.perf_counter() - t))
            t = time.perf_counter()
            for lo in range(0, nq, batch):
                expect(c.post("/v1/databases/b/search/batch",
                              {"queries": [{"queryVector": q, "topK": 10} for q in qs[lo:lo + batch]]}), 200)
            rounds["batch"].append(nq / (time.perf_counter() - t))
            t = time.perf_counter()
            for q in qs:
                expect(c.post("/v1/databases/b/search", {"queryVector": q, "topK": 10, "groupBy": "doc"}), 200)
            rounds["groupBy"].append(nq / (time.perf_counter() - t))
        for k, v in rounds.items():
            print("%-8s %8.0f queries/s (median of 3: %s)" % (k, statistics.median(v), ", ".join("%.0f" % x for x in v)))
        print("batch / single = %.2fx; load average %s" % (statistics.median(rounds["batch"]) /
                                                          statistics.median(rounds["single"]), os.getloadavg()))


if __name__ == "__main__":
    main()
