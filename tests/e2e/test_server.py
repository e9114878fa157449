#!/usr/bin/env python3
"""End-to-end tests of `jvdb serve`: every route and every error case over real HTTP on loopback.

Usage: test_server.py PATH_TO_JVDB [TEST...]

Each test starts the real server on a fresh temporary data directory (port 0, read from its first
line of output), drives it with http.client and stops it with SIGTERM (checking the exit status and
that the log has no sanitizer report).  Values are compared as float32 bit patterns.  The last line
printed is "N passed, N failed".
"""
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jvdbtest  # noqa: E402
from jvdbtest import Server, expect, f32, f32_bits, test  # noqa: E402


def mkdb(c, name="docs", dim=4, metric="euclidean", **extra):
    body = {"name": name, "vectorDimension": dim, "distanceMetric": metric}
    body.update(extra)
    return expect(c.post("/v1/databases", body), 201)


def vec(i, dim=4):
    return [round(i * 0.25 + k * 0.125 - 3.0, 6) for k in range(dim)]


# ---------------------------------------------------------------- basics


@test
def health_status_and_unknown_routes():
    with Server() as s:
        c = s.client()
        r = expect(c.get("/health"), 200)
        assert r["status"] == "healthy" and r["version"]  # the original JadeVectorDB's word (issue 12; was "ok")
        assert r["checks"] == {"database": "ok", "network": "ok"} and isinstance(r["timestamp"], int)
        r = expect(c.get("/status"), 200)
        for k in ("version", "uptimeSeconds", "startedAt", "databases", "totals"):
            assert k in r.json, k
        assert r["databases"] == 0 and r["totals"]["vectors"] == 0
        expect(c.get("/v1/nothing"), 404, "NOT_FOUND", "no route for GET /v1/nothing")
        expect(c.get("/"), 404, "NOT_FOUND")
        r = expect(c.request("PATCH", "/v1/databases"), 405, "METHOD_NOT_ALLOWED", "PATCH")
        assert r.headers.get("Allow") == "POST, GET", r.headers
        r = expect(c.request("POST", "/health"), 405, "METHOD_NOT_ALLOWED")
        assert r.headers.get("Allow") == "GET"
        expect(c.request("DELETE", "/v1/databases/x/vectors/batch"), 404, "NOT_FOUND")   # the vector "batch"
        expect(c.get("/v1/databases/x/vectors/batch"), 404, "NOT_FOUND", "database 'x' does not exist")
        expect(c.request("GET", "/v1/databases/x/vectors/batch-get"), 404, "NOT_FOUND")
        expect(c.request("PUT", "/v1/databases/x/search"), 405, "METHOD_NOT_ALLOWED")
        expect(c.get("/v1/databases/a%zzb"), 400, "INVALID_ARGUMENT", "bad percent-escape")
        expect(c.request("HEAD", "/health"), 200)
        # One log line per request: method, path, status, microseconds.
        log = s.log()
        assert " GET /health 200 " in log and "us\n" in log, log[-2000:]
        assert " PATCH /v1/databases 405 " in log


@test
def database_lifecycle():
    with Server() as s:
        c = s.client()
        r = mkdb(c, "docs", 4, "cosine", description="my docs", indexType="FLAT")
        assert r["databaseId"] == "docs" and r["name"] == "docs"
        assert r["vectorDimension"] == 4 and r["distanceMetric"] == "cosine"
        assert r["description"] == "my docs"
        assert r["created_at"].endswith("Z") and r["updated_at"] == r["created_at"]
        assert r["stats"]["vectorCount"] == 0
        r = expect(c.post("/v1/databases", {"name": "plain", "vectorDimension": 2}), 201)
        assert r["distanceMetric"] == "cosine" and r["description"] == ""    # JadeVectorDB defaults
        mkdb(c, "e", 3, "euclidean")
        mkdb(c, "d", 3, "dot")
        assert expect(c.get("/v1/databases/d"), 200)["distanceMetric"] == "dot"
        assert expect(c.get("/v1/databases/e"), 200)["distanceMetric"] == "euclidean"
        mkdb(c, "l", 3, "l2")

        r = expect(c.get("/v1/databases"), 200)
        names = [d["databaseId"] for d in r["databases"]]
        assert r["total"] == 5 and names == ["d", "docs", "e", "l", "plain"], r
        r = expect(c.get("/v1/databases?offset=1&limit=2"), 200)
        assert r["total"] == 5 and [d["databaseId"] for d in r["databases"]] == names[1:3]
        expect(c.get("/v1/databases?limit=x"), 400, "INVALID_ARGUMENT", "limit")

        expect(c.post("/v1/databases", {"name": "docs", "vectorDimension": 4}), 409, "ALREADY_EXISTS",
               "database 'docs' already exists")
        r = expect(c.get("/v1/databases/docs"), 200)
        assert r["description"] == "my docs"

        time.sleep(1.1)
        r = expect(c.put("/v1/databases/docs", {"description": "changed", "sync": "interval:50",
                                                "compactionPolicy": {"deadRatio": 0.5, "minRecords": 10}}), 200)
        assert r["description"] == "changed" and r["sync"] == "interval:50"
        assert r["compactionPolicy"]["deadRatio"] == 0.5 and r["compactionPolicy"]["minRecords"] == 10
        assert r["updated_at"] > r["created_at"], r.json
        # Sending back what was read is fine; changing what cannot change is not.
        expect(c.put("/v1/databases/docs", {"vectorDimension": 4, "distanceMetric": "cosine", "name": "docs"}), 200)
        expect(c.put("/v1/databases/docs", {"vectorDimension": 5}), 400, "INVALID_ARGUMENT",
               "vectorDimension cannot change (database 'docs' has dimension 4)")
        expect(c.put("/v1/databases/docs", {"distanceMetric": "dot"}), 400, "INVALID_ARGUMENT",
               "distanceMetric cannot change")
        expect(c.put("/v1/databases/docs", {"name": "other"}), 400, "INVALID_ARGUMENT", "cannot be renamed")
        expect(c.put("/v1/databases/docs", {"sync": "sometimes"}), 400, "INVALID_ARGUMENT", "unknown sync mode 'sometimes'")
        expect(c.put("/v1/databases/docs", {"compactionPolicy": {"deadRatio": 2}}), 400, "INVALID_ARGUMENT",
               "compactionPolicy.deadRatio is 2")
        expect(c.put("/v1/databases/docs", {"compactionPolicy": {"bogus": 1}}), 400, "INVALID_ARGUMENT",
               "compactionPolicy: unknown field 'bogus'")
        expect(c.put("/v1/databases/docs", {"description": 7}), 400, "INVALID_ARGUMENT", "field 'description' must be a string")
        expect(c.put("/v1/databases/nope", {"description": "x"}), 404, "NOT_FOUND", "database 'nope' does not exist")
        # A rejected update changed nothing.
        r = expect(c.get("/v1/databases/docs"), 200)
        assert r["description"] == "changed" and r["compactionPolicy"]["deadRatio"] == 0.5

        r = expect(c.delete("/v1/databases/plain"), 200)
        assert r["databaseId"] == "plain" and r["deleted"] is True
        expect(c.get("/v1/databases/plain"), 404, "NOT_FOUND", "database 'plain' does not exist")
        expect(c.delete("/v1/databases/plain"), 404, "NOT_FOUND")
        assert not os.path.exists(os.path.join(s.data, "server", "plain.json"))
        # Re-created under the same name: a new database, with nothing of the old one.
        r = expect(c.post("/v1/databases", {"name": "plain", "vectorDimension": 3}), 201)
        assert r["description"] == "" and r["vectorDimension"] == 3


@test
def database_create_errors():
    with Server() as s:
        c = s.client()
        cases = [
            ({"vectorDimension": 4}, "field 'name' is required"),
            ({"name": 5, "vectorDimension": 4}, "field 'name' must be a string"),
            ({"name": "x"}, "field 'vectorDimension' is required"),
            ({"name": "x", "vectorDimension": 0}, "field 'vectorDimension' is 0; it must be from 1 to 65536"),
            ({"name": "x", "vectorDimension": 65537}, "it must be from 1 to 65536"),
            ({"name": "x", "vectorDimension": "4"}, "field 'vectorDimension' must be an integer"),
            ({"name": "x", "vectorDimension": 2.5}, "field 'vectorDimension' must be an integer"),
            ({"name": "x", "vectorDimension": 4, "distanceMetric": "manhattan"},
             "distanceMetric 'manhattan' is not one of cosine, euclidean, dot"),
            ({"name": "../etc", "vectorDimension": 4}, "database name '../etc' is not allowed"),
            ({"name": "", "vectorDimension": 4}, "database name '' is not allowed"),
            ({"name": "a" * 65, "vectorDimension": 4}, "is not allowed"),
            ({"name": "sp ace", "vectorDimension": 4}, "is not allowed"),
            ({"name": "x", "vectorDimension": 4, "sync": "often"}, "unknown sync mode"),
        ]
        for body, msg in cases:
            expect(c.post("/v1/databases", body), 400, "INVALID_ARGUMENT", msg)
        expect(c.get("/v1/databases/..%2Fetc"), 400, "INVALID_ARGUMENT", "is not allowed")
        assert expect(c.get("/v1/databases"), 200)["total"] == 0
        assert os.listdir(os.path.join(s.data, "server")) == []


@test
def malformed_bodies():
    with Server() as s:
        c = s.client()
        mkdb(c)
        for path in ("/v1/databases", "/v1/databases/docs/vectors", "/v1/databases/docs/vectors/batch",
                     "/v1/databases/docs/vectors/batch-get"):
            key = {"/v1/databases": b"name", "/v1/databases/docs/vectors/batch": b"vectors",
                   "/v1/databases/docs/vectors/batch-get": b"ids"}.get(path, b"id")
            expect(c.post(path, raw=b""), 400, "INVALID_JSON", "request body is empty")
            expect(c.post(path, raw=b"{\"" + key + b"\": "), 400, "INVALID_JSON", "request body is not valid JSON")
            expect(c.post(path, raw=b"[1, 2]"), 400, "INVALID_JSON", "request body must be a JSON object")
            expect(c.post(path, raw=b"{\"" + key + b"\": 1, \"" + key + b"\": 2}"), 400, "INVALID_JSON", "duplicate")
            expect(c.post(path, raw=b"{\"" + key + b"\": NaN}"), 400, "INVALID_JSON")
            # An unknown field is refused by name, before the body is even parsed.
            expect(c.post(path, raw=b"{\"a\": NaN}"), 400, "INVALID_ARGUMENT", "unknown field 'a'")
        r = expect(c.post("/v1/databases", raw=b"{\n  \"name\": \"x\",\n  \"vectorDimension\": 4,,\n}"), 400, "INVALID_JSON")
        assert "line 3" in r["message"], r
        deep = b"{\"description\": " + b"[" * 40 + b"]" * 40 + b"}"
        expect(c.post("/v1/databases", raw=deep), 400, "INVALID_JSON", "deeper than 32 levels")
        ok = (b"{\"id\": \"deep\", \"values\": [1, 2, 3, 4], \"metadata\": {\"x\": " + b"[" * 29 + b"]" * 29 +
              b"}}")
        expect(c.post("/v1/databases/docs/vectors", raw=ok), 201)
        expect(c.post("/v1/databases", raw=b"\xff\xfe{}"), 400, "INVALID_JSON")
        # The server is still fine after all that.
        expect(c.get("/health"), 200)


# ---------------------------------------------------------------- vectors


@test
def vector_routes():
    with Server() as s:
        c = s.client()
        mkdb(c, "docs", 4)
        vals = [0.1, -2.5, 3.0e-7, 1234.5678]
        r = expect(c.post("/v1/databases/docs/vectors", {"id": "a", "values": vals, "metadata": {"k": "v", "n": [1, 2]}}), 201)
        assert r["id"] == "a" and r["lsn"] >= 1
        r = expect(c.get("/v1/databases/docs/vectors/a"), 200)
        assert r["id"] == "a" and f32_bits(r["values"]) == f32_bits(vals) and r["metadata"] == {"k": "v", "n": [1, 2]}
        # POST again replaces.
        expect(c.post("/v1/databases/docs/vectors", {"id": "a", "values": [1, 2, 3, 4]}), 201)
        r = expect(c.get("/v1/databases/docs/vectors/a"), 200)
        assert r["values"] == [1, 2, 3, 4] and r["metadata"] is None
        # Ids with characters that need escaping in a URL.
        for vid, esc in (("a/b", "a%2Fb"), ("sp ace", "sp%20ace"), ("ünï", "%C3%BCn%C3%AF"), ("q?x#y", "q%3Fx%23y"),
                         ("%", "%25"), ("batch", "batch")):
            expect(c.post("/v1/databases/docs/vectors", {"id": vid, "values": [1, 1, 1, 1], "metadata": {"id": vid}}), 201)
            r = expect(c.get("/v1/databases/docs/vectors/" + esc), 200)
            assert r["id"] == vid and r["metadata"] == {"id": vid}
        # PUT updates what it is given and keeps the rest.
        expect(c.post("/v1/databases/docs/vectors", {"id": "p", "values": [1, 2, 3, 4], "metadata": {"v": 1}}), 201)
        r = expect(c.put("/v1/databases/docs/vectors/p", {"metadata": {"v": 2}}), 200)
        assert r["id"] == "p" and r["lsn"] > 0
        r = expect(c.get("/v1/databases/docs/vectors/p"), 200)
        assert r["values"] == [1, 2, 3, 4] and r["metadata"] == {"v": 2}
        expect(c.put("/v1/databases/docs/vectors/p", {"values": [4, 3, 2, 1]}), 200)
        r = expect(c.get("/v1/databases/docs/vectors/p"), 200)
        assert r["values"] == [4, 3, 2, 1] and r["metadata"] == {"v": 2}
        expect(c.put("/v1/databases/docs/vectors/p", {"id": "p", "values": [0, 0, 0, 1], "metadata": None}), 200)
        r = expect(c.get("/v1/databases/docs/vectors/p"), 200)
        assert r["values"] == [0, 0, 0, 1] and r["metadata"] is None
        expect(c.put("/v1/databases/docs/vectors/p", {"id": "q", "values": [0, 0, 0, 1]}), 400, "INVALID_ARGUMENT",
               "the body's id 'q' differs from the id in the path 'p'")
        expect(c.put("/v1/databases/docs/vectors/p", {}), 400, "INVALID_ARGUMENT", "nothing to update")
        # PUT of an absent vector creates it when it has values (the original's behaviour, issue 12);
        # metadata alone has nothing to create a vector from.
        expect(c.put("/v1/databases/docs/vectors/missing", {"metadata": {"a": 1}}), 404, "NOT_FOUND",
               "vector 'missing' not found in database 'docs'")
        assert expect(c.put("/v1/databases/docs/vectors/missing", {"values": [1, 2, 3, 4]}), 200)["created"] is True
        assert expect(c.put("/v1/databases/docs/vectors/missing", {"values": [1, 2, 3, 5]}), 200)["created"] is False
        expect(c.delete("/v1/databases/docs/vectors/missing"), 200)
        expect(c.put("/v1/databases/docs/vectors/p", {"values": [1, 2]}), 400, "INVALID_ARGUMENT",
               "vector has 2 values but database 'docs' has dimension 4")
        # DELETE
        r = expect(c.delete("/v1/databases/docs/vectors/p"), 200)
        assert r["id"] == "p" and r["deleted"] is True
        expect(c.get("/v1/databases/docs/vectors/p"), 404, "NOT_FOUND", "vector 'p' not found in database 'docs'")
        expect(c.delete("/v1/databases/docs/vectors/p"), 404, "NOT_FOUND", "vector 'p' not found")
        expect(c.get("/v1/databases/nope/vectors/a"), 404, "NOT_FOUND", "database 'nope' does not exist")
        expect(c.post("/v1/databases/nope/vectors", {"id": "a", "values": [1, 2, 3, 4]}), 404, "NOT_FOUND",
               "database 'nope' does not exist")
        assert expect(c.get("/v1/databases/docs"), 200)["stats"]["vectorCount"] == 7


@test
def vector_errors():
    with Server() as s:
        c = s.client()
        mkdb(c, "docs", 3)
        mkdb(c, "cos", 3, "cosine")
        p = "/v1/databases/docs/vectors"
        cases = [
            ({"values": [1, 2, 3]}, "field 'id' is required"),
            ({"id": 7, "values": [1, 2, 3]}, "field 'id' must be a string"),
            ({"id": "", "values": [1, 2, 3]}, "id is empty"),
            ({"id": "x" * 1025, "values": [1, 2, 3]}, "id is 1025 bytes long; the limit is 1024"),
            ({"id": "a"}, "field 'values' is required"),
            ({"id": "a", "values": "1,2,3"}, "values must be an array of numbers"),
            ({"id": "a", "values": []}, "values is empty"),
            ({"id": "a", "values": [1, "2", 3]}, "values[1] is not a number"),
            ({"id": "a", "values": [1, None, 3]}, "values[1] is not a number"),
            ({"id": "a", "values": [1, 2, 1e39]}, "values[2] = 1e+39 does not fit a 32-bit float"),
            ({"id": "a", "values": [1, 2]}, "vector has 2 values but database 'docs' has dimension 3"),
            ({"id": "a", "values": [1, 2, 3, 4]}, "vector has 4 values but database 'docs' has dimension 3"),
            ({"id": "a", "values": [1, 2, 3], "metadata": [1]}, "field 'metadata' must be a JSON object"),
            ({"id": "a", "values": [1, 2, 3], "metadata": "x"}, "field 'metadata' must be a JSON object"),
        ]
        for body, msg in cases:
            expect(c.post(p, body), 400, "INVALID_ARGUMENT", msg)
        # JSON strings with NUL never reach the library (ids and metadata are C strings there).
        expect(c.post(p, {"id": "a\u0000b", "values": [1, 2, 3]}), 400, "INVALID_JSON", "\\u0000 is not allowed")
        expect(c.post("/v1/databases/cos/vectors", {"id": "z", "values": [0, 0, 0]}), 400, "INVALID_ARGUMENT",
               "a zero vector has no direction, so cosine database 'cos' cannot store it")
        # The largest float32 is refused: its square overflows every score (issue 9 item 10).  Values
        # just inside the magnitude bound are stored exactly.
        expect(c.post(p, {"id": "big", "values": [3.40282347e38, 0, 1e-45]}), 400, "INVALID_ARGUMENT",
               "vector has magnitude 3.4e+38; the largest allowed is 6.52e+18")
        expect(c.post(p, {"id": "big", "values": [4.5e18, -4.5e18, 1e-45]}), 201)
        r = expect(c.get(p + "/big"), 200)
        assert f32_bits(r["values"]) == f32_bits([4.5e18, -4.5e18, 1e-45])
        assert expect(c.get("/v1/databases/docs"), 200)["stats"]["vectorCount"] == 1
        # Cosine databases store the vector as given (issue 12): GET returns what was stored, and
        # search scores by direction whatever the length.
        expect(c.post("/v1/databases/cos/vectors", {"id": "n", "values": [3, 0, 4]}), 201)
        r = expect(c.get("/v1/databases/cos/vectors/n"), 200)
        assert f32_bits(r["values"]) == f32_bits([3, 0, 4]), r


@test
def float32_round_trip():
    with Server() as s:
        c = s.client()
        mkdb(c, "f", 16)
        rnd = random.Random(7)
        vecs = {}
        for i in range(50):
            v = [f32(rnd.uniform(-1, 1) * 10 ** rnd.randint(-30, 18)) for _ in range(16)]
            vecs["v%d" % i] = v
        expect(c.post("/v1/databases/f/vectors/batch",
                      {"vectors": [{"id": k, "values": v} for k, v in vecs.items()]}), 201)
        r = expect(c.post("/v1/databases/f/vectors/batch-get", {"ids": list(vecs)}), 200)
        assert r["count"] == 50
        for got in r["vectors"]:
            assert f32_bits(got["values"]) == f32_bits(vecs[got["id"]]), got["id"]


@test
def batch_routes():
    with Server() as s:
        c = s.client()
        mkdb(c, "docs", 3)
        p = "/v1/databases/docs/vectors/batch"
        vs = [{"id": "b%d" % i, "values": [i, i + 1, i + 2], "metadata": {"i": i}} for i in range(100)]
        r = expect(c.post(p, {"vectors": vs}), 201)
        assert r["count"] == 100 and r["lsn"] >= 100
        r = expect(c.post("/v1/databases/docs/vectors/batch-get", {"ids": ["b5", "nope", "b99", "b5"]}), 200)
        assert r["count"] == 3 and r["notFound"] == ["nope"]
        assert [v["id"] for v in r["vectors"]] == ["b5", "b99", "b5"]
        assert r["vectors"][1]["values"] == [99, 100, 101] and r["vectors"][1]["metadata"] == {"i": 99}
        r = expect(c.post("/v1/databases/docs/vectors/batch-get", {"ids": []}), 200)
        assert r["count"] == 0 and r["vectors"] == []
        expect(c.post("/v1/databases/docs/vectors/batch-get", {"ids": "b5"}), 400, "INVALID_ARGUMENT",
               "field 'ids' must be an array of strings")
        expect(c.post("/v1/databases/docs/vectors/batch-get", {"ids": ["a", 3]}), 400, "INVALID_ARGUMENT",
               "ids[1] must be a string")
        expect(c.post(p, {"vectors": []}), 400, "INVALID_ARGUMENT", "field 'vectors' is empty")
        expect(c.post(p, {"vectors": {}}), 400, "INVALID_ARGUMENT", "field 'vectors' must be an array")
        expect(c.post(p, {}), 400, "INVALID_ARGUMENT", "field 'vectors' must be an array")


@test
def batch_with_one_bad_vector_stores_nothing():
    with Server() as s:
        c = s.client()
        mkdb(c, "docs", 3)
        expect(c.post("/v1/databases/docs/vectors", {"id": "keep", "values": [1, 2, 3]}), 201)
        before = expect(c.get("/v1/databases/docs/stats"), 200).json
        p = "/v1/databases/docs/vectors/batch"
        good = [{"id": "n%d" % i, "values": [1, 2, 3]} for i in range(50)]
        bad_cases = [
            (17, {"id": "bad", "values": [1, 2]}, "record 17: vector has 2 values but database 'docs' has dimension 3"),
            (0, {"id": "bad", "values": [1, 2, 3, 4]}, "record 0: vector has 4 values"),
            (49, {"id": "bad", "values": [1, "x", 3]}, "record 49: values[1] is not a number"),
            (3, {"values": [1, 2, 3]}, "record 3: field 'id' is required"),
            (8, {"id": "", "values": [1, 2, 3]}, "record 8: id is empty"),
            (9, {"id": "m", "values": [1, 2, 3], "metadata": 5}, "record 9: field 'metadata' must be a JSON object"),
            (10, [1, 2, 3], "record 10: a vector must be a JSON object"),
            (11, {"id": "keep", "values": [1, 2, 1e300]}, "record 11: values[2] = 1e+300 does not fit"),
        ]
        for idx, bad, msg in bad_cases:
            vs = [dict(v) for v in good]
            vs.insert(idx, bad)
            r = expect(c.post(p, {"vectors": vs}), 400, "INVALID_ARGUMENT", msg)
            assert r["index"] == idx, r
        after = expect(c.get("/v1/databases/docs/stats"), 200).json
        assert after["vectorCount"] == 1 and after["lastLsn"] == before["lastLsn"] and after["fileBytes"] == before["fileBytes"]
        r = expect(c.post("/v1/databases/docs/vectors/batch-get", {"ids": [v["id"] for v in good] + ["keep"]}), 200)
        assert r["count"] == 1 and len(r["notFound"]) == 50
        assert expect(c.get("/v1/databases/docs/vectors/keep"), 200)["values"] == [1, 2, 3]


@test
def batch_bodies_fast_and_general_paths_agree():
    """Batch bodies go through a fast decoder when they have the common shape and through jansson
    otherwise; the sanitizer build decodes every fast-path body both ways and aborts on any
    difference.  These bodies sit on and around the border between the two."""
    with Server() as s:
        c = s.client()
        mkdb(c, "fp", 3)
        p = "/v1/databases/fp/vectors/batch"
        ok = [
            (b'{"vectors":[{"id":"a","values":[1,2,3]}]}', {"a": ([1, 2, 3], None)}),
            (b' \n{ "vectors" :\t[ { "id" : "b" , "values" : [ -0 , 0.5 , 1E+2 ] , "metadata" : null } ] }\r\n',
             {"b": ([0.0, 0.5, 100.0], None)}),
            (b'{"vectors":[{"metadata":{"k":[1,{"x":"}]"}],"s":"\\"q\\u00e9"},"values":[-0.0,1e-45,6.4e18],"id":"c"}]}',
             {"c": ([-0.0, 1e-45, 6.4e18], {"k": [1, {"x": "}]"}], "s": "\"q\u00e9"})}),
            (b'{"vectors":[{"id":"d","values":[123456789012345678,-1,2.5e-3]},{"id":"e","values":[1,1,1],"metadata":{}}]}',
             {"d": ([123456789012345678, -1, 2.5e-3], None), "e": ([1, 1, 1], {})}),
            # Shapes the fast decoder leaves to jansson, which accepts them:
            (b'{"vectors":[{"id":"f","values":[1234567890123456789,0,0]}]}', {"f": ([1234567890123456789, 0, 0], None)}),
            (b'{"vectors":[{"id":"\\u0067","values":[1,2,3]}]}', {"g": ([1, 2, 3], None)}),
            ('{"vectors":[{"id":"\u00fcber","values":[1,2,3]}]}'.encode(), {"\u00fcber": ([1, 2, 3], None)}),
            (b'{"vectors":[{"id":"i","values":[1e-400,0,0]}]}', {"i": ([0.0, 0, 0], None)}),
        ]
        for body, want in ok:
            r = c.post(p, raw=body)
            assert r.status == 201, (body, r)
            for vid, (vals, meta) in want.items():
                got = expect(c.get("/v1/databases/fp/vectors/" + urllib.parse.quote(vid, safe="")), 200).json
                assert f32_bits(got["values"]) == f32_bits(vals) and got["metadata"] == meta, (body, got)
        bad = [
            # Unknown fields are refused on both paths (the fast one without reading the value).
            (b'{"vectors":[{"id":"h","values":[1,2,3],"extra":true}]}', "INVALID_ARGUMENT"),
            (b'{"vectors":[{"id":"h","values":[1,2,3]}],"other":1}', "INVALID_ARGUMENT"),
            (b'{"vectors":[{"id":"\\u0068","values":[1,2,3],"extra":true}]}', "INVALID_ARGUMENT"),
            (b'{"vectors":[{"id":"x","id":"y","values":[1,2,3]}]}', "INVALID_JSON"),
            (b'{"vectors":[{"id":"x","values":[1,2,3]}]} x', "INVALID_JSON"),
            (b'{"vectors":[{"id":"x","values":[1,2,3],}]}', "INVALID_JSON"),
            (b'{"vectors":[{"id":"x","values":[01,2,3]}]}', "INVALID_JSON"),
            (b'{"vectors":[{"id":"x","values":[1.,2,3]}]}', "INVALID_JSON"),
            (b'{"vectors":[{"id":"x","values":[1,2,3],"metadata":{"a":1,"a":2}}]}', "INVALID_JSON"),
            (b'{"vectors":[{"id":"x","values":[1,2,3],"metadata":{"a":}}]}', "INVALID_JSON"),
            (b'{"vectors":[{"id":"x","values":[1,2,3e999]}]}', "INVALID_JSON"),
            (b'{"vectors":[{"id":"x","values":[1,2,99999999999999999999]}]}', "INVALID_JSON"),
            (b'{"vectors":[{"id":"x","values":[1,2,1e39]}]}', "INVALID_ARGUMENT"),
            (b'{"vectors":[{"id":"x","values":[]}]}', "INVALID_ARGUMENT"),
            (b'{"vectors":[{"id":"x","values":[1,2]}]}', "INVALID_ARGUMENT"),
            (b'{"vectors":[{"id":"x","values":[1,2,3],"metadata":[1]}]}', "INVALID_ARGUMENT"),
            (b'{"vectors":[{"id":"x"}]}', "INVALID_ARGUMENT"),
            (b'{"vectors":[]}', "INVALID_ARGUMENT"),
            (b'{"vectors":[{"id":"x","values":[1,2,3]}', "INVALID_JSON"),
            (b'{"vectors":[{"id":"x\xff","values":[1,2,3]}]}', "INVALID_JSON"),
        ]
        for body, code in bad:
            r = c.post(p, raw=body)
            assert r.status == 400 and r.json["error"] == code, (body, r)
        assert expect(c.get("/v1/databases/fp"), 200)["stats"]["vectorCount"] == 9
        assert "fast batch parse" not in s.log()


# ---------------------------------------------------------------- search


def brute_force(vectors, q, metric, k, keep=lambda vid: True):
    def score(v):
        if metric == "euclidean":
            return sum((f32(a) - f32(b)) ** 2 for a, b in zip(v, q))
        if metric == "dot":
            return sum(f32(a) * f32(b) for a, b in zip(v, q))
        na = sum(a * a for a in v) ** 0.5
        nb = sum(b * b for b in q) ** 0.5
        return sum(a * b for a, b in zip(v, q)) / (na * nb)
    scored = [(score(v), vid) for vid, v in vectors.items() if keep(vid)]
    scored.sort(key=lambda t: t[0], reverse=metric != "euclidean")
    return scored[:k]


@test
def search_route():
    with Server() as s:
        c = s.client()
        rnd = random.Random(5)
        dim = 8
        for metric in ("euclidean", "cosine", "dot"):
            name = "s_" + metric
            mkdb(c, name, dim, metric)
            vectors = {}
            batch = []
            for i in range(300):
                v = [f32(rnd.gauss(0, 1)) for _ in range(dim)]
                vectors["v%d" % i] = v
                batch.append({"id": "v%d" % i, "values": v,
                              "metadata": {"i": i, "color": ["red", "green", "blue"][i % 3], "even": i % 2 == 0}})
            expect(c.post("/v1/databases/%s/vectors/batch" % name, {"vectors": batch}), 201)
            p = "/v1/databases/%s/search" % name
            for _ in range(5):
                q = [rnd.gauss(0, 1) for _ in range(dim)]
                want = brute_force(vectors, q, metric, 10)
                r = expect(c.post(p, {"queryVector": q, "topK": 10, "exact": True, "includeMetadata": False}), 200)
                assert r["count"] == 10 and len(r["results"]) == 10
                assert [x["vectorId"] for x in r["results"]] == [vid for _, vid in want], (metric, r.json, want)
                for x, (sc, _) in zip(r["results"], want):
                    assert abs(x["score"] - sc) <= 1e-4 * max(1, abs(sc)), (x, sc)
                    assert set(x) == {"vectorId", "score"}
                # The index (HNSW by default) finds nearly the same on this small set.
                r = expect(c.post(p, {"queryVector": q, "topK": 10, "ef": 200}), 200)
                got = {x["vectorId"] for x in r["results"]}
                assert len(got & {vid for _, vid in want}) >= 8, (got, want)
            # Filters, threshold and the include flags.
            q = [rnd.gauss(0, 1) for _ in range(dim)]
            r = expect(c.post(p, {"queryVector": q, "topK": 5, "exact": True, "filters": {"color": "red"},
                                  "includeMetadata": True, "includeVectorData": True}), 200)
            want = brute_force(vectors, q, metric, 5, lambda vid: int(vid[1:]) % 3 == 0)
            assert [x["vectorId"] for x in r["results"]] == [vid for _, vid in want]
            for x in r["results"]:
                assert "id" not in x["vector"] and x["vector"]["metadata"]["color"] == "red"   # no repeated id
                stored = expect(c.get("/v1/databases/%s/vectors/%s" % (name, x["vectorId"])), 200)["values"]
                assert f32_bits(x["vector"]["values"]) == f32_bits(stored)
            r = expect(c.post(p, {"queryVector": q, "topK": 300, "exact": True,
                                  "filters": {"i": {"$gte": 10, "$lt": 20}, "color": {"$in": ["green", "blue"]}},
                                  "includeMetadata": True}), 200)
            ids = sorted(int(x["vectorId"][1:]) for x in r["results"])
            assert ids == [i for i in range(10, 20) if i % 3 != 0], ids
            assert all("values" not in x["vector"] for x in r["results"])
            full = expect(c.post(p, {"queryVector": q, "topK": 300, "exact": True}), 200)["results"]
            cut = full[40]["score"]
            r = expect(c.post(p, {"queryVector": q, "topK": 300, "exact": True, "threshold": cut}), 200)
            better = (lambda a: a <= cut) if metric == "euclidean" else (lambda a: a >= cut)
            assert r["count"] == sum(1 for x in full if better(x["score"])) and r["count"] >= 41, (r["count"], metric)
            r = expect(c.post(p, {"queryVector": q, "filters": {"color": "purple"}}), 200)
            assert r["count"] == 0 and r["results"] == []
            r = expect(c.post(p, {"queryVector": q}), 200)
            assert r["count"] == 10    # default topK
            # Deleted vectors are never found.
            top = r["results"][0]["vectorId"]
            expect(c.delete("/v1/databases/%s/vectors/%s" % (name, top)), 200)
            for exact in (True, False):
                r = expect(c.post(p, {"queryVector": q, "topK": 20, "exact": exact}), 200)
                assert top not in [x["vectorId"] for x in r["results"]]

        p = "/v1/databases/s_euclidean/search"
        q = [0.0] * dim
        cases = [
            ({}, "field 'queryVector' is required"),
            ({"queryVector": "x"}, "queryVector must be an array of numbers"),
            ({"queryVector": [1, 2]}, "query has 2 values but database 's_euclidean' has dimension 8"),
            ({"queryVector": q, "topK": 0}, "field 'topK' is 0; it must be from 1 to 100000"),
            ({"queryVector": q, "topK": 100001}, "it must be from 1 to 100000"),   # JVDB_MAX_K, as the CLI
            ({"queryVector": q, "topK": "5"}, "field 'topK' must be an integer"),
            ({"queryVector": q, "threshold": "high"}, "field 'threshold' must be a number"),
            ({"queryVector": q, "exact": 1}, "field 'exact' must be true or false"),
            ({"queryVector": q, "includeMetadata": "yes"}, "field 'includeMetadata' must be true or false"),
            ({"queryVector": q, "filters": [1]}, "field 'filters' must be a JSON object"),
            ({"queryVector": q, "filters": {"i": {"$near": 3}}}, "$near"),
        ]
        for body, msg in cases:
            expect(c.post(p, body), 400, "INVALID_ARGUMENT", msg)
        expect(c.post("/v1/databases/none/search", {"queryVector": q}), 404, "NOT_FOUND", "database 'none' does not exist")
        expect(c.post(p, raw=b"{"), 400, "INVALID_JSON")


@test
def index_settings():
    with Server() as s:
        c = s.client()
        r = mkdb(c, "h", 4)
        assert r["indexType"] == "HNSW" and r["indexParameters"] == {"m": 16, "efConstruction": 200, "efSearch": 64}, r
        r = mkdb(c, "f", 4, indexType="FLAT")
        assert r["indexType"] == "FLAT"
        r = mkdb(c, "p", 4, indexType="hnsw", indexParameters={"m": 8, "efConstruction": 50, "efSearch": 32})
        assert r["indexType"] == "HNSW" and r["indexParameters"] == {"m": 8, "efConstruction": 50, "efSearch": 32}
        # A create whose index settings fail leaves nothing behind.
        expect(c.post("/v1/databases", {"name": "bad", "vectorDimension": 4, "indexParameters": {"m": 1}}), 400,
               "INVALID_ARGUMENT", "HNSW M 1 is out of range")
        expect(c.get("/v1/databases/bad"), 404)
        assert not os.path.exists(os.path.join(s.data, "server", "bad.json"))
        expect(c.post("/v1/databases", {"name": "bad", "vectorDimension": 4, "indexType": "IVF"}), 400,
               "INVALID_ARGUMENT", "indexType 'IVF' is not one of HNSW, FLAT")
        expect(c.post("/v1/databases", {"name": "bad", "vectorDimension": 4, "indexParameters": {"M": 3}}), 400,
               "INVALID_ARGUMENT", "indexParameters: unknown field 'M'")
        expect(c.post("/v1/databases/h/vectors/batch",
                      {"vectors": [{"id": "v%d" % i, "values": [i, 1, 2, 3]} for i in range(50)]}), 201)
        deadline = time.time() + 20
        while True:
            ix = expect(c.get("/v1/databases/h/stats"), 200)["index"]
            if ix["pending"] == 0 or time.time() > deadline:
                break
            time.sleep(0.05)
        assert ix["type"] == "HNSW" and ix["pending"] == 0 and ix["nodes"] == 50 and ix["memoryBytes"] > 0, ix
        r = expect(c.put("/v1/databases/h", {"indexType": "FLAT"}), 200)
        assert r["indexType"] == "FLAT"
        r = expect(c.post("/v1/databases/h/search", {"queryVector": [10, 1, 2, 3], "topK": 1}), 200)
        assert r["results"][0]["vectorId"] == "v10" and r["results"][0]["score"] == 0
        r = expect(c.put("/v1/databases/h", {"indexType": "HNSW", "indexParameters": {"efSearch": 100}}), 200)
        assert r["indexType"] == "HNSW" and r["indexParameters"]["efSearch"] == 100
        r = expect(c.post("/v1/databases/h/search", {"queryVector": [10, 1, 2, 3], "topK": 1}), 200)
        assert r["results"][0]["vectorId"] == "v10"
        expect(c.put("/v1/databases/h", {"indexParameters": {"efSearch": 0}}), 400, "INVALID_ARGUMENT", "ef_search 0")
        s.stop()
        s.start()
        r = expect(s.client().get("/v1/databases/h"), 200)
        assert r["indexType"] == "HNSW" and r["indexParameters"]["efSearch"] == 100


# ---------------------------------------------------------------- limits and authentication


def raw_http(port, data, read=True):
    """Sends raw bytes on a new connection; returns (status, body) of the answer."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    try:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        if not read:
            return None
        buf = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            buf += chunk
            if b"\r\n\r\n" in buf:
                head, _, rest = buf.partition(b"\r\n\r\n")
                length = [int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")]
                if length and len(rest) >= length[0]:
                    break
        head, _, body = buf.partition(b"\r\n\r\n")
        status = int(head.split(b" ")[1]) if head else 0
        return status, head, body
    finally:
        sock.close()


@test
def oversize_bodies():
    with Server(args=["--max-body", "4KiB"]) as s:
        c = s.client()
        mkdb(c, "docs", 3)
        big = {"vectors": [{"id": "v%d" % i, "values": [1, 2, 3]} for i in range(200)]}
        data = json.dumps(big).encode()
        assert len(data) > 4096
        c2 = s.client()
        r = expect(c2.post("/v1/databases/docs/vectors/batch", raw=data), 413, "PAYLOAD_TOO_LARGE",
                   "request body of %d bytes exceeds the limit of 4096 bytes" % len(data))
        # Without Content-Length (chunked): read to the end, then refused.
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(data[i:i + 1000]), data[i:i + 1000]) for i in range(0, len(data), 1000))
        req = (b"POST /v1/databases/docs/vectors/batch HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
               b"Content-Type: application/json\r\n\r\n" + chunks + b"0\r\n\r\n")
        status, head, body = raw_http(s.port, req)
        assert status == 413, (status, head, body)
        assert json.loads(body)["error"] == "PAYLOAD_TOO_LARGE"
        # Just under the limit is fine.
        small = {"vectors": [{"id": "v%d" % i, "values": [1, 2, 3]} for i in range(100)]}
        assert len(json.dumps(small)) < 4096
        expect(c.post("/v1/databases/docs/vectors/batch", small), 201)
        assert expect(c.get("/v1/databases/docs"), 200)["stats"]["vectorCount"] == 100
        # Vectors longer than the dimension limit are refused before they cost anything more.
    with Server() as s:
        c = s.client()
        mkdb(c, "d", 2)
        expect(c.post("/v1/databases/d/vectors", {"id": "x", "values": [0.5] * 65537}), 400, "INVALID_ARGUMENT",
               "values has 65537 numbers; the limit is 65536")


@test
def authentication():
    key = "s3cret-key"
    with Server(args=["--api-key", key]) as s:
        anon = s.client()
        expect(anon.get("/health"), 200)
        r = expect(anon.get("/v1/databases"), 401, "UNAUTHORIZED", "an API key is required")
        assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")
        expect(anon.get("/status"), 401, "UNAUTHORIZED")
        expect(anon.get("/metrics"), 401, "UNAUTHORIZED")
        expect(anon.get("/v1/no/such/route"), 401, "UNAUTHORIZED")
        expect(anon.post("/v1/admin/shutdown"), 401, "UNAUTHORIZED")
        expect(anon.get("/v1/databases", headers={"X-API-Key": "wrong"}), 401, "UNAUTHORIZED", "the API key is not valid")
        expect(anon.get("/v1/databases", headers={"X-API-Key": key + "x"}), 401, "UNAUTHORIZED")
        expect(anon.get("/v1/databases", headers={"X-API-Key": key[:-1]}), 401, "UNAUTHORIZED")
        expect(anon.get("/v1/databases", headers={"Authorization": "Bearer nope"}), 401, "UNAUTHORIZED", "not valid")
        expect(anon.get("/v1/databases", headers={"Authorization": "Basic " + key}), 401, "UNAUTHORIZED",
               "must be 'Bearer KEY'")
        # A refused request's body is never read: a big unauthenticated upload gets 401 at once.
        expect(anon.post("/v1/databases", raw=b"x" * 200000), 401, "UNAUTHORIZED")
        ok = s.client(key)
        mkdb(ok, "docs", 2)
        expect(anon.get("/v1/databases", headers={"Authorization": "Bearer " + key}), 200)
        expect(anon.get("/v1/databases", headers={"authorization": "bearer " + key}), 200)
        expect(ok.get("/metrics"), 200)
        expect(ok.get("/status"), 200)
        assert expect(ok.get("/status"), 200)["authentication"] is True
    # The key from the environment.
    env = dict(os.environ, JVDB_API_KEY="envkey")
    with Server(env=env) as s:
        expect(s.client().get("/v1/databases"), 401, "UNAUTHORIZED")
        expect(s.client("envkey").get("/v1/databases"), 200)
    # No key: everything is open.
    with Server(env={k: v for k, v in os.environ.items() if k != "JVDB_API_KEY"}) as s:
        expect(s.client().get("/v1/databases"), 200)
        assert expect(s.client().get("/status"), 200)["authentication"] is False


# ---------------------------------------------------------------- stats, compaction, metrics


def file_bytes(data, name):
    d = os.path.join(data, "databases", name)
    return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".seg"))


@test
def compaction_checklist_over_http():
    """The seed's compaction checklist, over HTTP: 1,000+ vectors, delete 40%, compact, smaller by at
    least the deleted bytes minus one segment's slack, every survivor byte-identical, every deleted
    one still deleted, statistics right.  The background compactor is off, so that the compaction
    measured is the one asked for."""
    with Server(args=["--compaction-interval", "0"]) as s:
        c = s.client()
        dim = 32
        mkdb(c, "cl", dim, "euclidean", sync="never")
        rnd = random.Random(11)
        model = {}
        n = 1500
        for start in range(0, n, 250):
            batch = []
            for i in range(start, start + 250):
                v = [f32(rnd.uniform(-1, 1)) for _ in range(dim)]
                m = {"i": i, "tag": "t%d" % (i % 7), "pad": "x" * rnd.randint(0, 300)}
                model["v%d" % i] = (v, m)
                batch.append({"id": "v%d" % i, "values": v, "metadata": m})
            expect(c.post("/v1/databases/cl/vectors/batch", {"vectors": batch}), 201)
        before = expect(c.get("/v1/databases/cl/stats"), 200).json
        assert before["vectorCount"] == n and before["deadRecords"] == 0
        assert before["fileBytes"] == file_bytes(s.data, "cl")
        doomed = rnd.sample(sorted(model), int(n * 0.4))
        for vid in doomed:
            expect(c.delete("/v1/databases/cl/vectors/" + vid), 200)
            del model[vid]
        mid = expect(c.get("/v1/databases/cl/stats"), 200).json
        assert mid["vectorCount"] == n - len(doomed)
        assert mid["deadRecords"] >= 2 * len(doomed) and mid["deadRatio"] > 0.3
        deleted_bytes = mid["deadBytes"]
        assert mid["compaction"]["due"] is True and mid["compaction"]["trigger"] == "dead_ratio", mid
        size_before = file_bytes(s.data, "cl")

        r = expect(c.post("/v1/databases/cl/compact", {"full": True}), 200)
        assert r["compacted"] is True and r["result"]["trigger"] == "dead_ratio", r
        res = r["result"]
        assert res["recordsCopied"] == n - len(doomed)
        assert res["bytesReclaimed"] > 0 and res["bytesAfter"] < res["bytesBefore"]
        size_after = file_bytes(s.data, "cl")
        slack = 64 * 1024   # one segment's worth of header/alignment slack, generous
        assert size_before - size_after >= deleted_bytes - slack, (size_before, size_after, deleted_bytes)
        after = r["stats"]
        assert after["vectorCount"] == n - len(doomed) and after["deadBytes"] == 0 and after["deadRatio"] == 0
        assert after["fileBytes"] == size_after
        # Every survivor byte-identical (values as float32 bits, metadata as JSON), every deleted one gone.
        ids = sorted(model)
        for i in range(0, len(ids), 300):
            got = expect(c.post("/v1/databases/cl/vectors/batch-get", {"ids": ids[i:i + 300]}), 200).json
            assert got["notFound"] == []
            for v in got["vectors"]:
                mv, mm = model[v["id"]]
                assert f32_bits(v["values"]) == f32_bits(mv) and v["metadata"] == mm, v["id"]
        got = expect(c.post("/v1/databases/cl/vectors/batch-get", {"ids": doomed}), 200).json
        assert got["count"] == 0 and sorted(got["notFound"]) == sorted(doomed)
        # Statistics of the run are reported by the service endpoint and in /metrics.
        comp = expect(c.get("/v1/compaction"), 200).json
        assert comp["state"] == "off"
        assert comp["totals"]["compactions"] == 1 and comp["totals"]["bytesReclaimed"] == res["bytesReclaimed"]
        db = [d for d in comp["databases"] if d["databaseId"] == "cl"][0]
        assert db["compaction"]["lastRun"]["recordsCopied"] == res["recordsCopied"]
        st = expect(c.get("/v1/databases/cl/stats"), 200).json
        assert st["compaction"]["due"] is False and st["compaction"]["lastRun"]["trigger"] == "dead_ratio"
        metrics = c.get("/metrics").raw.decode()
        assert "jvdb_compactions_total 1\n" in metrics
        assert "jvdb_compaction_bytes_reclaimed_total %d\n" % res["bytesReclaimed"] in metrics
        # Not due any more: a request without force does nothing and says why.
        r = expect(c.post("/v1/databases/cl/compact"), 200)
        assert r["compacted"] is False and r["reason"], r
        r = expect(c.post("/v1/databases/cl/compact", {"force": True}), 200)
        assert r["compacted"] is True and r["result"]["trigger"] == "forced"
        expect(c.post("/v1/databases/cl/compact", {"force": "yes"}), 400, "INVALID_ARGUMENT", "field 'force' must be true or false")
        expect(c.post("/v1/databases/none/compact"), 404, "NOT_FOUND")
        expect(c.get("/v1/databases/none/stats"), 404, "NOT_FOUND")
    # After a restart everything is still there.


@test
def background_compaction_over_http():
    """With a short check interval the service compacts a database that crosses 30% deleted."""
    with Server(args=["--compaction-interval", "1s"]) as s:
        c = s.client()
        mkdb(c, "bg", 8, "euclidean", sync="never", compactionPolicy={"minRecords": 10})
        expect(c.post("/v1/databases/bg/vectors/batch",
                      {"vectors": [{"id": "v%d" % i, "values": [i] * 8} for i in range(200)]}), 201)
        for i in range(100):
            expect(c.delete("/v1/databases/bg/vectors/v%d" % i), 200)
        deadline = time.time() + 20
        while time.time() < deadline:
            st = expect(c.get("/v1/databases/bg/stats"), 200).json
            if st["compaction"]["totals"]["compactions"] >= 1 and st["deadBytes"] == 0:
                break
            time.sleep(0.2)
        else:
            raise AssertionError("no background compaction: %r" % st)
        assert st["vectorCount"] == 100
        comp = expect(c.get("/v1/compaction"), 200).json
        assert comp["state"] == "running" and comp["checkIntervalMs"] == 1000 and comp["totals"]["compactions"] >= 1
        log = s.log()
        assert "background compaction of 'bg' started" in log and "compacted 'bg'" in log, log[-3000:]


@test
def metrics_endpoint():
    with Server() as s:
        c = s.client()
        mkdb(c, "m1", 2)
        expect(c.post("/v1/databases/m1/vectors", {"id": "a", "values": [1, 2]}), 201)
        expect(c.post("/v1/databases/m1/vectors", {"id": "b", "values": [1, 2]}), 201)
        expect(c.delete("/v1/databases/m1/vectors/a"), 200)
        expect(c.get("/v1/databases/m1/vectors/zz"), 404)
        expect(c.get("/nowhere"), 404)
        r = c.get("/metrics")
        assert r.status == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = r.raw.decode()
        lines = text.splitlines()
        for want in (
            'jvdb_http_requests_total{route="/v1/databases/{id}/vectors",method="POST",status="201"} 2',
            'jvdb_http_requests_total{route="/v1/databases/{id}/vectors/{vid}",method="GET",status="404"} 1',
            'jvdb_http_requests_total{route="/v1/databases/{id}/vectors/{vid}",method="DELETE",status="200"} 1',
            'jvdb_http_requests_total{route="unmatched",method="GET",status="404"} 1',
            'jvdb_http_request_duration_seconds_count{route="/v1/databases/{id}/vectors",method="POST"} 2',
            'jvdb_http_request_duration_seconds_bucket{route="/v1/databases/{id}/vectors",method="POST",le="+Inf"} 2',
            'jvdb_database_vectors{database="m1"} 1',
            'jvdb_database_last_lsn{database="m1"} 3',
            'jvdb_compactions_total 0',
        ):
            assert want in lines, "%s not in metrics:\n%s" % (want, text)
        assert any(l.startswith('jvdb_database_dead_ratio{database="m1"} 0.') for l in lines)
        assert any(l.startswith('jvdb_database_file_bytes{database="m1"} ') for l in lines)
        # Every sample line is "name{labels} value" or "name value"; every family has HELP and TYPE.
        for l in lines:
            if l.startswith("#"):
                assert l.startswith("# HELP ") or l.startswith("# TYPE "), l
                continue
            name, value = l.rsplit(" ", 1)
            float(value)
        types = {l.split()[2] for l in lines if l.startswith("# TYPE ")}
        helps = {l.split()[2] for l in lines if l.startswith("# HELP ")}
        assert types == helps
        # Histogram buckets are cumulative.
        b = [int(l.rsplit(" ", 1)[1]) for l in lines
             if l.startswith('jvdb_http_request_duration_seconds_bucket{route="/v1/databases/{id}/vectors",method="POST"')]
        assert b == sorted(b) and b[-1] == 2


# ---------------------------------------------------------------- lifecycle


@test
def restart_keeps_everything():
    s = Server()
    try:
        s.start()
        c = s.client()
        mkdb(c, "keep", 3, "dot", description="survives restarts")
        expect(c.post("/v1/databases/keep/vectors/batch",
                      {"vectors": [{"id": "k%d" % i, "values": [i, -i, 0.5], "metadata": {"i": i}} for i in range(300)]}), 201)
        for i in range(0, 300, 3):
            expect(c.delete("/v1/databases/keep/vectors/k%d" % i), 200)
        expect(c.put("/v1/databases/keep", {"compactionPolicy": {"minRecords": 5}}), 200)
        before = expect(c.get("/v1/databases/keep"), 200).json
        s.stop()
        s.start()
        c = s.client()
        after = expect(c.get("/v1/databases/keep"), 200).json
        for k in ("description", "created_at", "updated_at", "vectorDimension", "distanceMetric", "compactionPolicy"):
            assert after[k] == before[k], (k, before[k], after[k])
        assert after["stats"]["vectorCount"] == 200
        r = expect(c.post("/v1/databases/keep/vectors/batch-get", {"ids": ["k%d" % i for i in range(300)]}), 200).json
        assert r["count"] == 200 and sorted(r["notFound"]) == sorted("k%d" % i for i in range(0, 300, 3))
        for v in r["vectors"]:
            i = int(v["id"][1:])
            assert v["values"] == [i, -i, 0.5] and v["metadata"] == {"i": i}
        s.stop()
    finally:
        s.cleanup()


def writer_stream(port, db, prefix, acked, stop, errors):
    """Writes single vectors and small batches until told to stop or the server goes away;
    records every acknowledged id."""
    c = jvdbtest.Client(port)
    i = 0
    while not stop.is_set():
        try:
            if i % 3 == 0:
                ids = ["%s-%d-%d" % (prefix, i, k) for k in range(5)]
                r = c.post("/v1/databases/%s/vectors/batch" % db,
                           {"vectors": [{"id": x, "values": [i, k], "metadata": {"w": prefix}} for k, x in enumerate(ids)]},
                           retry=False)
            else:
                ids = ["%s-%d" % (prefix, i)]
                r = c.post("/v1/databases/%s/vectors" % db, {"id": ids[0], "values": [i, 0]}, retry=False)
        except (OSError, ConnectionError, Exception):
            c.close()
            time.sleep(0.01)
            try:
                c = jvdbtest.Client(port)
                c.get("/health", retry=False)
            except Exception:
                return
            continue
        if r.status == 201:
            acked.extend(ids)
        elif r.status != 503:
            errors.append(r)
        i += 1


def check_acked_after_restart(s, db, acked):
    s.start()
    c = s.client()
    for i in range(0, len(acked), 500):
        r = expect(c.post("/v1/databases/%s/vectors/batch-get" % db, {"ids": acked[i:i + 500]}), 200).json
        assert r["notFound"] == [], "acknowledged writes lost: %r" % r["notFound"][:10]
    s.stop()


@test
def graceful_shutdown_during_writes():
    for how in ("SIGTERM", "SIGINT", "http"):
        s = Server()
        try:
            s.start()
            c = s.client()
            mkdb(c, "w", 2, "euclidean")
            acked, errors, threads = [], [], []
            stop = threading.Event()
            for t in range(4):
                th = threading.Thread(target=writer_stream, args=(s.port, "w", "t%d" % t, acked, stop, errors))
                th.start()
                threads.append(th)
            time.sleep(1.0)
            n_before = len(acked)
            if how == "http":
                expect(c.post("/v1/admin/shutdown"), 200)
                rc = s.wait_exit()
            else:
                rc = s.stop(sig=signal.SIGTERM if how == "SIGTERM" else signal.SIGINT, expect=None)
            stop.set()
            for th in threads:
                th.join(60)
            assert rc == 0, "exit status %s after %s; log:\n%s" % (rc, how, s.log()[-6000:])
            assert not errors, errors[:3]
            assert n_before > 10, "writers made no progress before the stop (%d)" % n_before
            log = s.log()
            assert "stopping" in log and "stopped; data directory closed" in log, log[-2000:]
            check_acked_after_restart(s, "w", acked)
        finally:
            s.cleanup()


@test
def requests_after_stop_are_refused():
    """Stop accepting, refuse new requests on open connections, and let a long request finish."""
    s = Server(args=["--shutdown-timeout", "20s"])
    try:
        s.start()
        c = s.client()
        mkdb(c, "big", 64, "euclidean", sync="never")
        rnd = random.Random(3)
        body = json.dumps({"vectors": [{"id": "x%d" % i, "values": [rnd.random() for _ in range(64)]}
                                       for i in range(8000)]}).encode()
        result = {}
        other = s.client()
        expect(other.get("/health"), 200)   # an open keep-alive connection

        def slow():
            try:
                result["r"] = s.client().post("/v1/databases/big/vectors/batch", raw=body, retry=False)
            except OSError as e:
                result["e"] = e

        th = threading.Thread(target=slow)
        th.start()
        # Wait until the big request has started (the log has no line yet, but the body is on its way).
        time.sleep(0.3)
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # New connections are not accepted any more.
        try:
            r = s.client().get("/health", retry=False)
            refused = r.status == 503
        except OSError:
            refused = True
        assert refused
        try:
            r = other.get("/health", retry=False)
            assert r.status == 503 and r.json["error"] == "SHUTTING_DOWN", r
        except OSError:
            pass   # the server may already have closed the idle connection
        th.join(60)
        assert s.wait_exit() == 0
        # The request that was in flight when the stop began was finished and answered.
        r = result.get("r")
        assert r is not None and r.status == 201, result
        if r.status == 201:
            s.start()
            assert expect(s.client().get("/v1/databases/big"), 200)["stats"]["vectorCount"] == 8000
            s.stop()
    finally:
        s.cleanup()


@test
def command_line_and_config_file():
    root = None
    s = Server()
    try:
        # --help and bad flags
        p = subprocess.run([jvdbtest.JVDB, "serve", "--help"], capture_output=True, timeout=30)
        assert p.returncode == 0 and b"--listen HOST:PORT" in p.stdout and b"--api-key" in p.stdout
        for bad in (["--threads", "0"], ["--listen", "nowhere"], ["--max-body", "lots"], ["--bogus", "1"],
                    ["--compaction-interval", "soon"], ["--listen"]):
            p = subprocess.run([jvdbtest.JVDB, "--data", s.data, "serve"] + bad, capture_output=True, timeout=30)
            assert p.returncode == 2, (bad, p)
            assert p.stderr.startswith(b"jvdb serve: "), p.stderr
        # A config file; a flag wins over it.
        root = s.root
        cfg = os.path.join(root, "jvdb.json")
        with open(cfg, "w") as f:
            json.dump({"api-key": "fromfile", "max-body": "2KiB", "threads": 3, "compaction-interval": "2s"}, f)
        s.args = ["--config", cfg, "--max-body", "3KiB"]
        s.start()
        expect(s.client().get("/v1/databases"), 401)
        c = s.client("fromfile")
        r = expect(c.post("/v1/databases", raw=b" " * 3000), 400)   # under 3 KiB: read, then refused as JSON
        expect(c.post("/v1/databases", raw=b" " * 3100), 413, "PAYLOAD_TOO_LARGE", "limit of 3072 bytes")
        assert expect(c.get("/v1/compaction"), 200)["checkIntervalMs"] == 2000
        assert "3 HTTP threads" in s.log()
        # A second server on the same data directory is refused with a clear message.
        p = subprocess.run([jvdbtest.JVDB, "--data", s.data, "serve", "--listen", "127.0.0.1:0"], capture_output=True,
                           timeout=30)
        assert p.returncode == 1 and b"locked by pid" in p.stderr, p.stderr
        s.stop()
        with open(cfg, "w") as f:
            json.dump({"unknown-key": 1}, f)
        p = subprocess.run([jvdbtest.JVDB, "--data", s.data, "serve", "--config", cfg], capture_output=True, timeout=30)
        assert p.returncode == 2 and b"unknown option 'unknown-key'" in p.stderr, p.stderr
        with open(cfg, "w") as f:
            f.write("{not json")
        p = subprocess.run([jvdbtest.JVDB, "--data", s.data, "serve", "--config", cfg], capture_output=True, timeout=30)
        assert p.returncode == 2 and b"cannot read config file" in p.stderr, p.stderr
    finally:
        s.cleanup()


@test
def drop_while_requests_run():
    """Dropping a database while other requests use it never crashes; they get 404 after it."""
    with Server() as s:
        c = s.client()
        for round_ in range(3):
            mkdb(c, "tmp", 4, "euclidean", sync="never")
            stop = threading.Event()
            bad = []

            def hammer():
                cc = s.client()
                i = 0
                while not stop.is_set():
                    r = cc.post("/v1/databases/tmp/vectors", {"id": "v%d" % i, "values": [1, 2, 3, i]})
                    if r.status not in (201, 404):
                        bad.append(r)
                    r = cc.get("/v1/databases/tmp/vectors/v%d" % (i // 2))
                    if r.status not in (200, 404):
                        bad.append(r)
                    i += 1

            ths = [threading.Thread(target=hammer) for _ in range(3)]
            for t in ths:
                t.start()
            time.sleep(0.3)
            r = c.delete("/v1/databases/tmp")
            assert r.status in (200, 409), r
            while r.status == 409:   # a background compaction was running: try again
                time.sleep(0.1)
                r = c.delete("/v1/databases/tmp")
            time.sleep(0.2)
            stop.set()
            for t in ths:
                t.join()
            assert not bad, bad[:3]


if __name__ == "__main__":
    sys.exit(jvdbtest.run_tests(sys.argv))
