#!/usr/bin/env python3
"""Payload indexes over REST and the CLI (issue 12).

Usage: test_payload_indexes.py PATH_TO_JVDB [TEST...]

PUT/GET/DELETE /v1/databases/{id}/payload-indexes[/{field}] declare, list and drop indexes; every
bad request is refused with a reason and changes nothing; filtered searches and counts give the same
answers with and without indexes (metadata as the original client writes it: numbers as strings,
lists, nested objects), before and after a restart, which keeps the declarations; the CLI lists what
REST declared.
The last line printed is "N passed, N failed".
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jvdbtest  # noqa: E402
from jvdbtest import Server, expect, test  # noqa: E402

N = 400


def meta(i):
    return {"doc": "d%d" % (i // 10), "tags": ["t%d" % (i % 3), "all"], "m": {"lang": "en" if i % 2 else "fr"},
            "year": str(1990 + i % 30), "score": i % 100, "rare": "yes" if i % 97 == 0 else "no"}


FILTERS = [
    {"doc": "d7"},
    {"rare": "yes"},
    {"tags": "t1"},
    {"tags": {"$in": ["t0", "t2"]}, "m.lang": "fr"},
    {"year": {"$gte": 2010}},
    {"year": 2010},
    {"year": "2010"},
    {"score": {"$lt": 10}},
    {"score": 42},
    {"score": {"$in": [1, 2, 3]}, "m.lang": {"$ne": "en"}},
    {"$or": [{"doc": "d3"}, {"score": {"$gt": 97}}]},
    {"$not": {"tags": "t0"}},
    {"m.lang": {"$exists": False}},
    {"doc": {"$nin": ["d1", "d2"]}, "year": {"$lte": 1995.5}},
]


def answers(c):
    """Exact search ids, graph search ids and counts for every filter."""
    out = []
    for f in FILTERS:
        ex = expect(c.post("/v1/databases/docs/search", {"queryVector": [0, 0, 0, 1], "topK": N, "filters": f,
                                                         "exact": True}), 200)
        hn = expect(c.post("/v1/databases/docs/search", {"queryVector": [0, 0, 0, 1], "topK": 5, "filters": f}), 200)
        n = expect(c.post("/v1/databases/docs/vectors/count", {"filters": f}), 200)["count"]
        out.append((sorted(x["vectorId"] for x in ex["results"]), [x["vectorId"] for x in hn["results"]], n))
    return out


def check_same(plain, indexed):
    for f, (a, b) in zip(FILTERS, zip(plain, indexed)):
        assert a[0] == b[0], ("exact answers differ", f, a[0], b[0])
        assert a[2] == b[2] == len(a[0]), ("counts differ", f, a[2], b[2])
        assert len(b[1]) == min(5, len(a[0])) and set(b[1]) <= set(a[0]), ("graph answer", f, b[1])


@test
def declare_list_drop():
    """Declarations answer with what was declared, list sorted, drop once, survive a restart."""
    with Server() as s:
        c = s.client()
        expect(c.post("/v1/databases", {"name": "docs", "vectorDimension": 4, "distanceMetric": "l2"}), 201)
        r = expect(c.put("/v1/databases/docs/payload-indexes/year", {"type": "numeric"}), 200)
        assert r.json == {"field": "year", "type": "numeric"}, r.json
        r = expect(c.put("/v1/databases/docs/payload-indexes/m.lang", {"type": "Keyword"}), 200)
        assert r.json == {"field": "m.lang", "type": "keyword"}, r.json
        expect(c.put("/v1/databases/docs/payload-indexes/m.lang", {"type": "keyword"}), 200)
        r = expect(c.get("/v1/databases/docs/payload-indexes"), 200)
        assert r.json == {"payloadIndexes": [{"field": "m.lang", "type": "keyword"},
                                             {"field": "year", "type": "numeric"}]}, r.json
        # Refused, nothing changed.
        for path, body, words in [
                ("year", {"type": "text"}, "use keyword or numeric"),
                ("year", {}, "'type' is required"),
                ("year", {"type": 1}, "'type' must be a string"),
                ("year", {"type": "numeric", "schema": 1}, "schema"),
                ("a..b", {"type": "keyword"}, "has an empty part"),
                ("%24or", {"type": "keyword"}, "starts with '$'")]:
            expect(c.put("/v1/databases/docs/payload-indexes/" + path, body), 400, "INVALID_ARGUMENT", words)
        expect(c.put("/v1/databases/nodb/payload-indexes/year", {"type": "numeric"}), 404)
        expect(c.get("/v1/databases/nodb/payload-indexes"), 404)
        expect(c.delete("/v1/databases/docs/payload-indexes/nope"), 404, None, "no payload index on 'nope'")
        r = expect(c.get("/v1/databases/docs/payload-indexes"), 200)
        assert len(r["payloadIndexes"]) == 2, r.json
        s.stop()
        s.start()
        c = s.client()
        r = expect(c.get("/v1/databases/docs/payload-indexes"), 200)
        assert [x["field"] for x in r["payloadIndexes"]] == ["m.lang", "year"], r.json
        r = expect(c.delete("/v1/databases/docs/payload-indexes/year"), 200)
        assert r.json == {"field": "year", "deleted": True}, r.json
        expect(c.delete("/v1/databases/docs/payload-indexes/year"), 404)
        s.stop()
        # The CLI reads the same declarations from the data directory.
        out = subprocess.run([jvdbtest.JVDB, "--data", s.data, "index", "payload", "list", "docs", "--json"],
                             capture_output=True, text=True, check=True).stdout
        want = [{"field": "m.lang", "type": "keyword"}]
        assert json.loads(out) == {"database": "docs", "payloadIndexes": want, "payload_indexes": want}, out
        s.start()


@test
def same_answers_with_indexes():
    """Every filter answers the same with indexes, through writes and a restart (rebuilt at open)."""
    with Server() as s:
        c = s.client()
        expect(c.post("/v1/databases", {"name": "docs", "vectorDimension": 4, "distanceMetric": "l2"}), 201)
        vecs = [{"id": "v%d" % i, "values": [i, i % 7, i % 11, 1], "metadata": meta(i)} for i in range(N)]
        expect(c.post("/v1/databases/docs/vectors/batch", {"vectors": vecs}), 201)
        plain = answers(c)
        for field, t in [("doc", "keyword"), ("tags", "keyword"), ("m.lang", "keyword"), ("year", "numeric"),
                         ("score", "numeric"), ("rare", "keyword")]:
            expect(c.put("/v1/databases/docs/payload-indexes/" + field, {"type": t}), 200)
        check_same(plain, answers(c))
        # Writes after the declarations: the indexes follow them.
        for i in range(0, N, 7):
            expect(c.request("PATCH", "/v1/databases/docs/vectors/v%d" % i, {"metadata": {"score": 42, "doc": "d7"}}), 200)
        expect(c.post("/v1/databases/docs/vectors/delete", {"ids": ["v%d" % i for i in range(1, N, 13)]}), 200)
        indexed = answers(c)
        for field in ["doc", "tags", "m.lang", "year", "score", "rare"]:
            expect(c.delete("/v1/databases/docs/payload-indexes/" + field), 200)
        check_same(answers(c), indexed)
        for field, t in [("doc", "keyword"), ("score", "numeric"), ("year", "numeric")]:
            expect(c.put("/v1/databases/docs/payload-indexes/" + field, {"type": t}), 200)
        s.stop()
        s.start()
        c = s.client()
        check_same(indexed, answers(c))



@test
def restore_keeps_indexes():
    """A backup carries the declarations; the restored database rebuilds the indexes from its records."""
    repo = tempfile.mkdtemp(prefix="jvdb-e2e-repo-")
    try:
        with Server(args=["--backup-repo", repo]) as s:
            c = s.client()
            expect(c.post("/v1/databases", {"name": "docs", "vectorDimension": 4, "distanceMetric": "l2"}), 201)
            vecs = [{"id": "v%d" % i, "values": [i, i % 7, i % 11, 1], "metadata": meta(i)} for i in range(N)]
            expect(c.post("/v1/databases/docs/vectors/batch", {"vectors": vecs}), 201)
            expect(c.put("/v1/databases/docs/payload-indexes/score", {"type": "numeric"}), 200)
            want = answers(c)
            bid = expect(c.post("/v1/databases/docs/backups", {}), 201)["backupId"]
            expect(c.post("/v1/backups/%s/restore" % bid, {"targetDatabase": "copy"}), 201)
            r = expect(c.get("/v1/databases/copy/payload-indexes"), 200)
            assert r.json == {"payloadIndexes": [{"field": "score", "type": "numeric"}]}, r.json
            # A graph search attaches the copy's index (and its payload indexes, built from the records).
            expect(c.post("/v1/databases/copy/search", {"queryVector": [0, 0, 0, 1], "filters": {"score": 3}}), 200)
            for f, w in zip(FILTERS, want):
                ex = expect(c.post("/v1/databases/copy/search", {"queryVector": [0, 0, 0, 1], "topK": N, "filters": f,
                                                                 "exact": True}), 200)
                assert sorted(x["vectorId"] for x in ex["results"]) == w[0], f
    finally:
        shutil.rmtree(repo, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(jvdbtest.run_tests(sys.argv))
