#!/usr/bin/env python3
"""Filters on real metadata, bulk operations and scroll over REST (issue 12).

Usage: test_adversarial_bulk.py PATH_TO_JVDB [TEST...]

Metadata as the original JadeVectorDB client writes it (lists, nested objects, numbers as strings)
is matched by search, count and delete with the documented filter rules; bulk deletes are one batch
whose count says what happened; PATCH merges where PUT replaces; scroll returns every vector that
exists throughout exactly once while others are written; every new route refuses unknown fields and
bad filters with 400 and changes nothing.
The last line printed is "N passed, N failed".
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jvdbtest  # noqa: E402
from jvdbtest import Server, expect, test  # noqa: E402

N = 300


def meta(i):
    return {"doc": "d%d" % (i // 10), "tags": ["t%d" % (i % 3), "all"], "m": {"lang": "en" if i % 2 else "fr"},
            "year": str(1990 + i % 30), "title": "chunk %d of doc %d" % (i % 10, i // 10)}


def load(c, name="docs"):
    expect(c.post("/v1/databases", {"name": name, "vectorDimension": 4, "distanceMetric": "l2"}), 201)
    vecs = [{"id": "v%d" % i, "values": [i, i % 7, i % 11, 1], "metadata": meta(i)} for i in range(N)]
    expect(c.post("/v1/databases/%s/vectors/batch" % name, {"vectors": vecs}), 201)


def count(c, filters=None, name="docs"):
    body = {} if filters is None else {"filters": filters}
    return expect(c.post("/v1/databases/%s/vectors/count" % name, body), 200)["count"]


def ref(pred):
    return sum(1 for i in range(N) if pred(i, meta(i)))


@test
def filters_match_real_metadata():
    """Lists contain, dotted paths, $or/$not/$exists/$contains, year strings compare as numbers."""
    with Server() as s:
        c = s.client()
        load(c)
        cases = [
            ({"tags": "t1"}, lambda i, m: i % 3 == 1),
            ({"tags": {"$in": ["t0", "t2"]}}, lambda i, m: i % 3 != 1),
            ({"m.lang": "en"}, lambda i, m: i % 2 == 1),
            ({"year": {"$gte": 2010}}, lambda i, m: 1990 + i % 30 >= 2010),
            ({"year": 2010}, lambda i, m: False),
            ({"year": "2010"}, lambda i, m: 1990 + i % 30 == 2010),
            ({"$or": [{"doc": "d3"}, {"doc": "d4"}]}, lambda i, m: i // 10 in (3, 4)),
            ({"$not": {"m.lang": "en"}, "tags": "t0"}, lambda i, m: i % 2 == 0 and i % 3 == 0),
            ({"m.lang": {"$exists": True}}, lambda i, m: True),
            ({"nope": {"$exists": False}}, lambda i, m: True),
            ({"title": {"$contains": "of doc 1"}}, lambda i, m: str(i // 10).startswith("1")),
        ]
        for f, pred in cases:
            assert count(c, f) == ref(pred), f
            r = expect(c.post("/v1/databases/docs/search",
                              {"queryVector": [0, 0, 0, 1], "topK": 500, "filters": f, "exact": True}), 200)
            assert r["count"] == ref(pred), (f, r["count"])
            for x in r["results"]:
                i = int(x["vectorId"][1:])
                assert pred(i, meta(i)), (f, x)
        assert count(c) == N
        for bad, words in [({"m": {"lang": "en"}}, "a nested field is written \"m.lang\""),
                           ({"$or": []}, "$or needs a non-empty array"),
                           ({"a": {"$regex": "x"}}, "unknown operator '$regex'")]:
            expect(c.post("/v1/databases/docs/vectors/count", {"filters": bad}), 400, "INVALID_ARGUMENT", words)
            expect(c.post("/v1/databases/docs/search", {"queryVector": [0, 0, 0, 1], "filters": bad}), 400,
                   "INVALID_ARGUMENT", words)


@test
def bulk_delete_by_ids_and_filter():
    """One batch: missing and repeated ids are not counted; a filter deletes exactly its matches."""
    with Server() as s:
        c = s.client()
        load(c)
        r = expect(c.post("/v1/databases/docs/vectors/delete", {"ids": ["v1", "v2", "v2", "zz", "v3"]}), 200)
        assert r.json == {"deleted": 3}, r.json
        r = expect(c.post("/v1/databases/docs/vectors/delete", {"ids": ["v1", "v2"]}), 200)
        assert r.json == {"deleted": 0}, r.json
        expect(c.get("/v1/databases/docs/vectors/v2"), 404)
        r = expect(c.post("/v1/databases/docs/vectors/delete", {"filters": {"doc": "d5"}}), 200)
        assert r.json == {"deleted": 10}, r.json
        assert count(c, {"doc": "d5"}) == 0
        assert count(c) == N - 13
        # Refused whole, nothing changed.
        for body, words in [({"ids": ["v10"], "filters": {"doc": "d1"}}, "exactly one of 'ids' and 'filters'"),
                            ({}, "exactly one of 'ids' and 'filters'"),
                            ({"filter": {"doc": "d1"}}, "filter"),
                            ({"ids": "v10"}, "must be an array of strings"),
                            ({"ids": ["v10", 5]}, "ids[1] must be a string"),
                            ({"ids": ["v10", ""]}, "id"),
                            ({"filters": {}}, "would select every vector"),
                            ({"filters": {"a": {"$gt": "x"}}}, "$gt needs a number")]:
            expect(c.post("/v1/databases/docs/vectors/delete", body), 400, "INVALID_ARGUMENT", words)
        assert count(c) == N - 13
        expect(c.get("/v1/databases/docs/vectors/v10"), 200)
        expect(c.post("/v1/databases/nodb/vectors/delete", {"ids": ["a"]}), 404)
        expect(c.post("/v1/databases/docs/vectors/count", {"filters": {}, "x": 1}), 400, "INVALID_ARGUMENT", "x")
        # Survives a restart: the batch was durable.
        s.stop()
        s.start()
        c = s.client()
        assert count(c) == N - 13


@test
def patch_merges_put_replaces():
    """PATCH merges metadata (RFC 7396: null removes a key) and keeps the vector; by filter too."""
    with Server() as s:
        c = s.client()
        load(c)
        r = expect(c.request("PATCH", "/v1/databases/docs/vectors/v7",
                             {"metadata": {"m": {"topic": "tax"}, "title": None, "new": 1}}), 200)
        assert r["id"] == "v7" and r["lsn"] > 0, r.json
        got = expect(c.get("/v1/databases/docs/vectors/v7"), 200)
        want = meta(7)
        want["m"]["topic"] = "tax"
        del want["title"]
        want["new"] = 1
        assert got["metadata"] == want, got.json
        assert got["values"] == [7, 0, 7, 1], got.json
        expect(c.request("PATCH", "/v1/databases/docs/vectors/nope", {"metadata": {"a": 1}}), 404)
        expect(c.request("PATCH", "/v1/databases/docs/vectors/v7", {"metadata": [1]}), 400, "INVALID_ARGUMENT",
               "'metadata' must be a JSON object")
        expect(c.request("PATCH", "/v1/databases/docs/vectors/v7", {"metadata": {}, "values": [1, 2, 3, 4]}), 400,
               "INVALID_ARGUMENT", "values")
        r = expect(c.post("/v1/databases/docs/vectors/metadata",
                          {"filters": {"doc": "d2"}, "metadata": {"reviewed": True}}), 200)
        assert r.json == {"updated": 10}, r.json
        assert count(c, {"reviewed": True}) == 10
        assert count(c, {"reviewed": True, "doc": "d2"}) == 10
        expect(c.post("/v1/databases/docs/vectors/metadata", {"filters": {}, "metadata": {"a": 1}}), 400,
               "INVALID_ARGUMENT", "would select every vector")
        # PUT still replaces.
        expect(c.put("/v1/databases/docs/vectors/v7", {"values": [1, 1, 1, 1], "metadata": {"only": 1}}), 200)
        assert expect(c.get("/v1/databases/docs/vectors/v7"), 200)["metadata"] == {"only": 1}


@test
def scroll_is_stable_under_writes():
    """Every vector that exists throughout is returned once, in id order, while others come and go."""
    with Server() as s:
        c = s.client()
        load(c)
        seen, cursor, pages = [], None, 0
        throughout = {"v%d" % i for i in range(N)}
        while True:
            body = {"limit": 37, "includeValues": pages == 0}
            if cursor:
                body["cursor"] = cursor
            r = expect(c.post("/v1/databases/docs/vectors/scroll", body), 200)
            ids = [v["id"] for v in r["vectors"]]
            if pages == 0:
                assert r["vectors"][0]["values"] == [0, 0, 0, 1] and r["vectors"][0]["metadata"] == meta(0), r.json
            else:
                assert "values" not in r["vectors"][0] and "metadata" in r["vectors"][0], r.json
            seen += ids
            cursor = r["nextCursor"]
            pages += 1
            # Writes between pages: new ids on both sides of the cursor, deletes ahead and behind.
            k = pages * 7
            expect(c.post("/v1/databases/docs/vectors/batch", {"vectors": [
                {"id": "v%d_new" % k, "values": [1, 2, 3, 4]}, {"id": "a%d" % k, "values": [1, 2, 3, 4]}]}), 201)
            gone = ["v%d" % (k * 3 % N), "v%d" % ((k * 3 + 150) % N)]
            expect(c.post("/v1/databases/docs/vectors/delete", {"ids": gone}), 200)
            throughout -= set(gone)
            if cursor is None:
                break
        assert len(seen) == len(set(seen)), "returned twice"
        assert seen == sorted(seen, key=lambda x: x.encode()), "not in id order"
        assert throughout <= set(seen), sorted(throughout - set(seen))[:5]
        # A filter, and the end of the collection.
        r = expect(c.post("/v1/databases/docs/vectors/scroll", {"limit": 1000, "filters": {"doc": "d1"}}), 200)
        assert [v["id"] for v in r["vectors"]] == sorted("v%d" % i for i in range(10, 20) if "v%d" % i in throughout)
        assert r["nextCursor"] is None
        for body, words in [({"limit": 0}, "'limit' must be an integer"), ({"cursor": "zz"}, "'cursor'"),
                            ({"cursor": "00"}, "'cursor'"), ({"includeValue": True}, "includeValue"),
                            ({"filters": {"$or": 1}}, "$or needs")]:
            expect(c.post("/v1/databases/docs/vectors/scroll", body), 400, "INVALID_ARGUMENT", words)
        # The original's offset listing.
        total = count(c)
        r = expect(c.get("/v1/databases/docs/vectors?limit=5&offset=3"), 200)
        assert r["total"] == total and r["limit"] == 5 and r["offset"] == 3, r.json
        everything = expect(c.post("/v1/databases/docs/vectors/scroll", {"limit": 100000}), 200)["vectors"]
        assert [v["id"] for v in r["vectors"]] == [v["id"] for v in everything[3:8]], r.json
        assert "values" in r["vectors"][0] and "metadata" in r["vectors"][0]
        expect(c.get("/v1/databases/docs/vectors?limit=0"), 400, "INVALID_ARGUMENT", "limit")


if __name__ == "__main__":
    sys.exit(jvdbtest.run_tests(sys.argv))
