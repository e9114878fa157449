#!/usr/bin/env python3
"""Stored values come back as stored (issue 12, item 1), against the real server and CLI.

Usage: test_adversarial_values.py PATH_TO_JVDB [TEST...]

A cosine database (the REST default) used to store the normalised vector: `store [1,2,3,4]` came
back as [0.18,0.37,0.55,0.73] from GET, batch-get, search results, export and backups.  Every
metric now stores the float32 values given, and cosine scores by direction whatever the length:
  - GET, batch-get, PUT, search (exact and HNSW, includeVectorData) return the stored bits, and
    scores equal the double-precision cosine, for lengths from 1e-30 to 1e15, across a restart;
  - a backup restores the same bits, and `jvdb export` / `jvdb get` print them.
The old-format (normalised, MANIFEST format 1) database is covered by tests/unit/test_stored_values.c.
The last line printed is "N passed, N failed".
"""
import json
import math
import os
import random
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jvdbtest  # noqa: E402
from jvdbtest import Server, expect, f32, f32_bits, test  # noqa: E402

DIM = 8


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def scaled_vectors(n, seed):
    """Float32-exact vectors whose lengths spread from about 1e-30 to 1e15."""
    rnd = random.Random(seed)
    centres = [[rnd.gauss(0, 1) for _ in range(DIM)] for _ in range(6)]
    out = {}
    for i in range(n):
        c = rnd.choice(centres)
        scale = 10 ** rnd.uniform(-30, 15)
        out["v%d" % i] = [f32((x + rnd.gauss(0, 0.3)) * scale) for x in c]
    return out


def check_search(c, name, vectors, q, exact):
    r = expect(c.post("/v1/databases/%s/search" % name,
                      {"queryVector": q, "topK": 10, "exact": exact, "ef": 200, "includeVectorData": True}), 200)
    assert r["count"] == 10, r.json
    ranked = sorted(((cosine(q, v), vid) for vid, v in vectors.items()), reverse=True)
    kth = ranked[9][0]
    for x in r["results"]:
        want = cosine(q, vectors[x["vectorId"]])
        assert abs(x["score"] - want) <= 2e-6, (exact, x["vectorId"], x["score"], want)
        assert f32_bits(x["vector"]["values"]) == f32_bits(vectors[x["vectorId"]]), x
        if exact:
            assert want >= kth - 2e-6, (x["vectorId"], want, kth)


def check_stored(c, name, vectors):
    ids = sorted(vectors)
    r = expect(c.post("/v1/databases/%s/vectors/batch-get" % name, {"ids": ids}), 200)
    assert r["count"] == len(ids), r.json
    for got in r["vectors"]:
        assert f32_bits(got["values"]) == f32_bits(vectors[got["id"]]), got["id"]


@test
def cosine_default_stores_what_was_given():
    """The issue's example, then every route that returns values, then scores, then a restart."""
    s = Server()
    s.args = ["--backup-repo", os.path.join(s.root, "repo")]
    try:
        s.start()
        c = s.client()
        # No distanceMetric: the REST default, cosine.
        r = expect(c.post("/v1/databases", {"name": "docs", "vectorDimension": 4}), 201)
        assert r["distanceMetric"] == "cosine", r.json
        expect(c.post("/v1/databases/docs/vectors", {"id": "a", "values": [1, 2, 3, 4]}), 201)
        r = expect(c.get("/v1/databases/docs/vectors/a"), 200)
        assert r["values"] == [1, 2, 3, 4], r.json
        expect(c.put("/v1/databases/docs/vectors/a", {"values": [10, -20, 0.5, 1e-30]}), 200)
        assert f32_bits(expect(c.get("/v1/databases/docs/vectors/a"), 200)["values"]) == f32_bits([10, -20, 0.5, 1e-30])
        expect(c.post("/v1/databases/docs/vectors", {"id": "z", "values": [0, -0.0, 0, 0]}), 400, "INVALID_ARGUMENT",
               "a zero vector has no direction")

        mk = expect(c.post("/v1/databases", {"name": "big", "vectorDimension": DIM, "distanceMetric": "cosine"}), 201)
        assert mk["distanceMetric"] == "cosine"
        vectors = scaled_vectors(400, 12)
        expect(c.post("/v1/databases/big/vectors/batch",
                      {"vectors": [{"id": k, "values": v} for k, v in vectors.items()]}), 201)
        check_stored(c, "big", vectors)
        rnd = random.Random(4)
        queries = [[rnd.gauss(0, 1) * 10 ** rnd.uniform(-20, 10) for _ in range(DIM)] for _ in range(6)]
        for q in queries:
            check_search(c, "big", vectors, q, True)
            check_search(c, "big", vectors, q, False)

        b = expect(c.post("/v1/databases/big/backups", {}), 201)["backupId"]
        expect(c.post("/v1/backups/%s/restore" % b, {"targetDatabase": "big_copy"}), 201)
        check_stored(c, "big_copy", vectors)
        check_search(c, "big_copy", vectors, queries[0], True)

        s.stop()
        s.start()
        c = s.client()
        check_stored(c, "big", vectors)
        for q in queries[:3]:
            check_search(c, "big", vectors, q, True)
            check_search(c, "big", vectors, q, False)
        s.stop()

        # The CLI reads the same bits: get and export (server stopped, it holds the directory).
        out = subprocess.run([jvdbtest.JVDB, "--data", s.data, "get", "docs", "a", "--json"],
                             capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        assert f32_bits(json.loads(out.stdout)["values"]) == f32_bits([10, -20, 0.5, 1e-30]), out.stdout
        out = subprocess.run([jvdbtest.JVDB, "--data", s.data, "export", "big", "-"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
        assert len(rows) == len(vectors)
        for row in rows:
            assert f32_bits(row["values"]) == f32_bits(vectors[row["id"]]), row["id"]
    finally:
        s.cleanup()


if __name__ == "__main__":
    sys.exit(jvdbtest.run_tests(sys.argv))
