#!/usr/bin/env python3
"""The original JadeVectorDB Python client's HTTP calls, and retrieval-shaped search (issue 12).

Usage: test_original_client.py PATH_TO_JVDB [TEST...]

OriginalCalls below sends, against a real `jvdb serve`, the requests the original client
(cli/python/jadevectordb/client.py of the public JadeVectorDB repository) sends for the routes of
issue 12: the same methods, paths, headers (Content-Type: application/json, and
"Authorization: Bearer KEY" when it has a key) and bodies, with the values its defaults give.
That repository has no licence, so the calls are written out here from its documented behaviour
(no code is taken from it); each method names the client method it stands for.  The answers are
checked the way that client reads them (which status it accepts, which key it takes).

Then the retrieval shaping: metadata in every hit unless includeMetadata is false (and no copy of
the id), POST .../search/batch, groupBy/groupSize, batch-get with metadata only, metric names in
any case, and one topK limit.  The last line printed is "N passed, N failed".
"""
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jvdbtest  # noqa: E402
from jvdbtest import Server, expect, test  # noqa: E402

DIM = 4


class OriginalCalls:
    """The original client's requests, one method per client method (same names)."""

    def __init__(self, port, api_key=None):
        self.c = jvdbtest.Client(port)
        self.h = {"Content-Type": "application/json"}
        if api_key:
            self.h["Authorization"] = "Bearer " + api_key

    def _do(self, method, path, body=None):
        return self.c.request(method, path, body, headers=self.h)

    @staticmethod
    def _strings(metadata):
        # The original client turns every metadata value that is not a string into str(value).
        return {k: v if isinstance(v, str) else str(v) for k, v in metadata.items()}

    def create_database(self, name, description="", vector_dimension=128, index_type="HNSW", **kw):
        body = {"name": name, "description": description, "vectorDimension": vector_dimension,
                "indexType": index_type}
        body.update(kw)
        r = self._do("POST", "/v1/databases", body)
        assert r.status == 201, r   # the only status it accepts
        return r["databaseId"]

    def store_vector(self, db, vid, values, metadata=None):
        body = {"id": vid, "values": values}
        if metadata:
            body["metadata"] = self._strings(metadata)
        r = self._do("POST", "/v1/databases/%s/vectors" % db, body)
        assert r.status == 201, r
        return True

    def batch_store_vectors(self, db, vectors):
        items = []
        for vid, values, metadata in vectors:
            item = {"id": vid, "values": values}
            if metadata:
                item["metadata"] = self._strings(metadata)
            items.append(item)
        r = self._do("POST", "/v1/databases/%s/vectors/batch" % db, {"vectors": items})
        assert r.status == 201, r
        return True

    def search(self, db, query_vector, top_k=10, threshold=None, filters=None):
        body = {"queryVector": query_vector, "topK": top_k}
        if threshold is not None:
            body["threshold"] = threshold
        if filters:
            body["filters"] = filters
        r = self._do("POST", "/v1/databases/%s/search" % db, body)
        assert r.status == 200, r
        return r.json

    def get_health(self):
        r = self._do("GET", "/health")
        assert r.status == 200, r
        return r.json

    def update_vector(self, db, vid, values, metadata=None):
        body = {"values": values}
        if metadata is not None:
            body["metadata"] = self._strings(metadata)
        r = self._do("PUT", "/v1/databases/%s/vectors/%s" % (db, vid), body)
        assert r.status == 200, r
        return True

    def batch_get_vectors(self, db, vector_ids):
        r = self._do("POST", "/v1/databases/%s/vectors/batch-get" % db, {"ids": vector_ids})
        assert r.status == 200, r
        return r.json.get("vectors", [])

    def advanced_search(self, db, query_vector, top_k=10, threshold=None, filters=None, include_metadata=True,
                        include_values=False):
        body = {"queryVector": query_vector, "topK": top_k, "includeMetadata": include_metadata,
                "includeValues": include_values}
        if threshold is not None:
            body["threshold"] = threshold
        if filters:
            body["filters"] = filters
        r = self._do("POST", "/v1/databases/%s/search/advanced" % db, body)
        assert r.status == 200, r
        return r.json.get("results", [])

    def create_index(self, db, index_type, name=None, parameters=None):
        body = {"type": index_type}
        if name:
            body["name"] = name
        if parameters:
            body["parameters"] = parameters
        r = self._do("POST", "/v1/databases/%s/indexes" % db, body)
        assert r.status in (200, 201), r
        return r.json

    def list_indexes(self, db):
        r = self._do("GET", "/v1/databases/%s/indexes" % db)
        assert r.status == 200, r
        return r.json if isinstance(r.json, list) else r.json.get("indexes", [])

    def update_index(self, db, index_id, parameters=None):
        body = {}
        if parameters:
            body["parameters"] = parameters
        r = self._do("PUT", "/v1/databases/%s/indexes/%s" % (db, index_id), body)
        assert r.status == 200, r
        return r.json

    def delete_index(self, db, index_id):
        r = self._do("DELETE", "/v1/databases/%s/indexes/%s" % (db, index_id))
        assert r.status == 200, r
        return True


def rows(n, seed=1, docs=10):
    """n (id, values, metadata) with doc_id cycling over `docs` documents; float32-exact values."""
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        values = [round(rnd.uniform(-1, 1), 3) for _ in range(DIM)]
        out.append(("v%03d" % i, values, {"doc_id": "d%d" % (i % docs), "page": i, "lang": "en" if i % 2 else "de"}))
    return out


def l2(a, b):
    return sum((x - y) ** 2 for x, y in zip(a, b))


@test
def original_client_session():
    """Every call the original client makes for these routes, in the order a user would."""
    with Server(args=["--api-key", "k1"]) as s:
        o = OriginalCalls(s.port, api_key="k1")
        h = o.get_health()
        assert h["status"] == "healthy" and isinstance(h["timestamp"], int) and h["checks"]["database"] == "ok", h
        assert o.create_database("docs", vector_dimension=DIM) == "docs"
        assert o.create_database("flat", description="exact", vector_dimension=DIM, index_type="FLAT") == "flat"
        data = rows(60)
        o.batch_store_vectors("docs", data[:50])
        for vid, values, meta in data[50:]:
            o.store_vector("docs", vid, values, meta)
        q = data[7][1]

        # advanced_search with its defaults: metadata (as strings: the client converted them), no values.
        hits = o.advanced_search("docs", q, top_k=5)
        assert hits[0]["vectorId"] == "v007" and len(hits) == 5, hits
        for x in hits:
            assert set(x) == {"vectorId", "score", "vector"} and set(x["vector"]) == {"metadata"}, x
            assert x["vector"]["metadata"]["page"] == str(int(x["vectorId"][1:])), x
        hits = o.advanced_search("docs", q, top_k=60, threshold=0.5, filters={"lang": "en"}, include_values=True,
                                 include_metadata=False)
        assert hits and all("metadata" not in x["vector"] for x in hits)
        for x in hits:
            assert x["score"] >= 0.5 and int(x["vectorId"][1:]) % 2 == 1, x
            assert x["vector"]["values"] == dict((r[0], r[1]) for r in data)[x["vectorId"]], x
        # search (the plain route) as the original sends it
        r = o.search("docs", q, top_k=3, filters={"doc_id": "d7"})
        assert [x["vectorId"] for x in r["results"]][0] == "v007" and r["count"] == 3, r

        # batch_get_vectors sends "ids"; its server also reads "vectorIds" and "vector_ids".
        got = o.batch_get_vectors("docs", ["v001", "v002", "nope"])
        assert [v["id"] for v in got] == ["v001", "v002"] and got[0]["metadata"]["doc_id"] == "d1", got
        for key in ("vectorIds", "vector_ids"):
            r = expect(o._do("POST", "/v1/databases/docs/vectors/batch-get", {key: ["v003"]}), 200)
            assert [v["id"] for v in r["vectors"]] == ["v003"], r

        # update_vector: an existing vector, then an absent one (created, as the original does).
        assert o.update_vector("docs", "v001", [1, 0, 0, 0], {"page": 1, "edited": True})
        v = expect(o._do("GET", "/v1/databases/docs/vectors/v001"), 200)
        assert v["values"] == [1, 0, 0, 0] and v["metadata"] == {"page": "1", "edited": "True"}, v
        assert o.update_vector("docs", "new-1", [0, 1, 0, 0])
        v = expect(o._do("GET", "/v1/databases/docs/vectors/new-1"), 200)
        assert v["values"] == [0, 1, 0, 0] and v["metadata"] is None, v

        # Index management, mapped onto the database's one index.
        ix = o.list_indexes("docs")
        assert len(ix) == 1 and ix[0]["indexId"] == "primary" and ix[0]["type"] == "HNSW", ix
        assert ix[0]["parameters"] == {"M": 16, "efConstruction": 200, "efSearch": 64}, ix
        created = o.create_index("docs", "HNSW", name="my-hnsw-index", parameters={"M": 8, "efConstruction": 100})
        assert created["indexId"] == "primary" and created["parameters"]["M"] == 8, created
        db = expect(o._do("GET", "/v1/databases/docs"), 200)
        assert db["indexType"] == "HNSW" and db["indexParameters"]["m"] == 8, db
        up = o.update_index("docs", created["indexId"], parameters={"efSearch": 128})
        assert up["parameters"] == {"M": 8, "efConstruction": 100, "efSearch": 128}, up
        assert o.update_index("docs", "primary")["type"] == "HNSW"   # no parameters: the body is {}
        assert o.delete_index("docs", "primary")
        ix = o.list_indexes("docs")
        assert ix[0]["type"] == "FLAT" and ix[0]["parameters"] == {}, ix
        assert expect(o._do("GET", "/v1/databases/docs"), 200)["indexType"] == "FLAT"
        hits = o.advanced_search("docs", q, top_k=1)   # exact now: still finds it
        assert hits[0]["vectorId"] == "v007", hits
        assert o.create_index("docs", "hnsw")["type"] == "HNSW"
        assert o.list_indexes("flat")[0]["type"] == "FLAT"
        o.c.close()


@test
def original_routes_refuse_what_they_do_not_know():
    with Server() as s:
        c = s.client()
        expect(c.post("/v1/databases", {"name": "d", "vectorDimension": DIM}), 201)
        q = [0.1, 0.2, 0.3, 0.4]
        p = "/v1/databases/d/search/advanced"
        expect(c.post(p, {"queryVector": q, "filter": {"a": 1}}), 400, "INVALID_ARGUMENT", "'filter'")
        expect(c.post(p, {"queryVector": q, "includeValues": True, "includeVectorData": False}), 400,
               "INVALID_ARGUMENT", "disagree")
        expect(c.post(p, {"queryVector": q, "includeValues": "yes"}), 400, "INVALID_ARGUMENT", "includeValues")
        expect(c.post(p, {"queryVector": q, "groupSize": 2}), 400, "INVALID_ARGUMENT", "needs 'groupBy'")
        ix = "/v1/databases/d/indexes"
        expect(c.post(ix, {"type": "IVF"}), 400, "INVALID_ARGUMENT", "index type 'IVF' is not supported")
        expect(c.post(ix, {}), 400, "INVALID_ARGUMENT", "field 'type' is required")
        expect(c.post(ix, {"type": "HNSW", "params": {}}), 400, "INVALID_ARGUMENT", "'params'")
        expect(c.post(ix, {"type": "HNSW", "parameters": {"M": 8, "nlist": 4}}), 400, "INVALID_ARGUMENT", "'nlist'")
        expect(c.post(ix, {"type": "HNSW", "parameters": {"M": 8, "m": 8}}), 400, "INVALID_ARGUMENT", "not both")
        expect(c.post(ix, {"type": "HNSW", "parameters": {"M": 1}}), 400, "INVALID_ARGUMENT", "M 1 is out of range")
        expect(c.post(ix, {"type": "FLAT", "parameters": {"M": 8}}), 400, "INVALID_ARGUMENT", "takes no parameters")
        expect(c.put(ix + "/other", {}), 404, "NOT_FOUND", "index 'other' not found")
        expect(c.delete(ix + "/other"), 404, "NOT_FOUND", "has one index, 'primary'")
        expect(c.get(ix + "/primary"), 200)
        expect(c.put(ix + "/primary", {"parameters": {"efSearch": 1}, "name": "x"}), 400, "INVALID_ARGUMENT", "'name'")
        expect(c.get("/v1/databases/nope/indexes"), 404, "NOT_FOUND")
        # a refused change changed nothing
        assert expect(c.get("/v1/databases/d"), 200)["indexParameters"]["m"] == 16
        bg = "/v1/databases/d/vectors/batch-get"
        expect(c.post(bg, {"ids": ["a"], "vector_ids": ["b"]}), 400, "INVALID_ARGUMENT", "give one of")
        expect(c.post(bg, {"vectorids": ["a"]}), 400, "INVALID_ARGUMENT", "'vectorids'")
        sb = "/v1/databases/d/search/batch"
        expect(c.post(sb, {"searches": []}), 400, "INVALID_ARGUMENT", "'searches'")
        expect(c.post(sb, {"queries": []}), 400, "INVALID_ARGUMENT", "1 to 1000")
        expect(c.post(sb, {"queries": [{"queryVector": q}] * 1001}), 400, "INVALID_ARGUMENT", "1 to 1000")
        expect(c.post(sb, {"queries": [{"queryVector": q}, {"queryVector": q, "topk": 3}]}), 400,
               "INVALID_ARGUMENT", "queries[1]: unknown field 'topk'")
        expect(c.post(sb, {"queries": [{"queryVector": q}, 7]}), 400, "INVALID_ARGUMENT", "queries[1] must be")
        expect(c.post(sb, {"queries": [{"queryVector": q}, {"queryVector": [1, 2]}]}), 400, "INVALID_ARGUMENT",
               "queries[1]: query has 2 values")
        expect(c.post(sb, {"queries": [{"queryVector": q, "topK": 100000}] * 11}), 400, "INVALID_ARGUMENT",
               "the limit is 1000000")
        # one topK limit (JVDB_MAX_K) for REST and the CLI
        expect(c.post("/v1/databases/d/search", {"queryVector": q, "topK": 100001}), 400, "INVALID_ARGUMENT",
               "from 1 to 100000")
        expect(c.post("/v1/databases/d/search", {"queryVector": q, "topK": 100000}), 200)


@test
def metadata_by_default_and_metadata_only_reads():
    with Server() as s:
        c = s.client()
        expect(c.post("/v1/databases", {"name": "d", "vectorDimension": DIM, "distanceMetric": "euclidean"}), 201)
        data = rows(20)
        expect(c.post("/v1/databases/d/vectors/batch", {"vectors": [{"id": i, "values": v, "metadata": m}
                                                                  for i, v, m in data]}), 201)
        expect(c.post("/v1/databases/d/vectors", {"id": "bare", "values": [9, 9, 9, 9]}), 201)
        p = "/v1/databases/d/search"
        r = expect(c.post(p, {"queryVector": [9, 9, 9, 9], "topK": 2}), 200)
        assert r["results"][0] == {"vectorId": "bare", "score": 0, "vector": {"metadata": None}}, r
        assert r["results"][1]["vector"] == {"metadata": data[int(r["results"][1]["vectorId"][1:])][2]}, r
        r = expect(c.post(p, {"queryVector": [9, 9, 9, 9], "topK": 2, "includeMetadata": False}), 200)
        assert all(set(x) == {"vectorId", "score"} for x in r["results"]), r
        r = expect(c.post(p, {"queryVector": [9, 9, 9, 9], "topK": 1, "includeValues": True,
                              "includeMetadata": False}), 200)
        assert r["results"][0]["vector"] == {"values": [9, 9, 9, 9]}, r
        bg = "/v1/databases/d/vectors/batch-get"
        r = expect(c.post(bg, {"ids": ["v001", "bare"], "includeValues": False}), 200)
        assert r["vectors"] == [{"id": "v001", "metadata": data[1][2]}, {"id": "bare", "metadata": None}], r
        r = expect(c.post(bg, {"vectorIds": ["v002"], "includeMetadata": False}), 200)
        assert r["vectors"] == [{"id": "v002", "values": data[2][1]}], r
        r = expect(c.post(bg, {"vector_ids": ["v002"]}), 200)
        assert r["vectors"] == [{"id": "v002", "values": data[2][1], "metadata": data[2][2]}], r
        # camelCase times beside the deprecated snake_case ones
        d = expect(c.get("/v1/databases/d"), 200).json
        assert d["createdAt"] == d["created_at"] and d["updatedAt"] == d["updated_at"], d
        # metric names in any case; the message lists l2
        expect(c.post("/v1/databases", {"name": "u", "vectorDimension": 2, "distanceMetric": "L2"}), 201)
        assert expect(c.get("/v1/databases/u"), 200)["distanceMetric"] == "euclidean"
        expect(c.post("/v1/databases", {"name": "w", "vectorDimension": 2, "metric": "COSINE"}), 201)
        expect(c.post("/v1/databases", {"name": "x", "vectorDimension": 2, "metric": "manhattan"}), 400,
               "INVALID_ARGUMENT", "l2")


@test
def batch_search_answers_each_query_as_search_does():
    with Server() as s:
        c = s.client()
        expect(c.post("/v1/databases", {"name": "d", "vectorDimension": DIM, "indexType": "FLAT"}), 201)
        data = rows(200, seed=5)
        expect(c.post("/v1/databases/d/vectors/batch", {"vectors": [{"id": i, "values": v, "metadata": m}
                                                                  for i, v, m in data]}), 201)
        rnd = random.Random(9)
        queries = [{"queryVector": [rnd.uniform(-1, 1) for _ in range(DIM)], "topK": rnd.randint(1, 20)}
                   for _ in range(30)]
        queries[3]["filters"] = {"lang": "de"}
        queries[4]["includeMetadata"] = False
        queries[5]["groupBy"] = "doc_id"
        queries[6]["includeValues"] = True
        r = expect(c.post("/v1/databases/d/search/batch", {"queries": queries}), 200)
        assert r["count"] == 30 and len(r["results"]) == 30
        for q, got in zip(queries, r["results"]):
            one = expect(c.post("/v1/databases/d/search", q), 200).json
            assert got == one, (q, got, one)


def brute_groups(data, q, metric_sign, field, top, size, threshold=None):
    """Groups of the exact ranking: first `top` distinct values, each its best `size` hits."""
    scored = sorted(data, key=lambda r: (metric_sign * l2(r[1], q), r[0]))
    groups = []
    for vid, _, meta in scored:
        v = meta.get(field)
        vals = v if isinstance(v, list) else [v]
        for val in vals:
            if val is None:
                continue
            g = next((g for g in groups if g[0] == val), None)
            if g is None:
                if len(groups) == top:
                    continue
                g = (val, [])
                groups.append(g)
            if len(g[1]) < size:
                g[1].append(vid)
    return [(val, ids) for val, ids in groups]


@test
def group_by_a_metadata_field():
    with Server() as s:
        c = s.client()
        expect(c.post("/v1/databases", {"name": "d", "vectorDimension": DIM, "distanceMetric": "euclidean"}), 201)
        data = rows(300, seed=3, docs=40)
        # some chunks without the field (left out), some with a list (in each element's group)
        for i in range(0, 300, 17):
            del data[i][2]["doc_id"]
        for i in range(5, 300, 23):
            data[i][2]["doc_id"] = ["d1", "d2"]
        expect(c.post("/v1/databases/d/vectors/batch", {"vectors": [{"id": i, "values": v, "metadata": m}
                                                                  for i, v, m in data]}), 201)
        rnd = random.Random(4)
        for top, size in ((5, 1), (7, 3), (40, 8), (50, 2)):
            q = [rnd.uniform(-1, 1) for _ in range(DIM)]
            r = expect(c.post("/v1/databases/d/search", {"queryVector": q, "topK": top, "exact": True,
                                                         "groupBy": "doc_id", "groupSize": size,
                                                         "includeMetadata": False}), 200).json
            want = brute_groups(data, q, 1, "doc_id", top, size)
            got = [(g["value"], [h["vectorId"] for h in g["hits"]]) for g in r["groups"]]
            assert got == want, (top, size, got, want)
            assert r["count"] == len(want) == min(top, 40), r["count"]
            assert all(set(h) == {"vectorId", "score"} for g in r["groups"] for h in g["hits"])
        # default groupSize 1, metadata shown, nested path, HNSW (default index) finds the same here
        q = [0.5, -0.5, 0.25, 0]
        for i, (_, _, m) in enumerate(data):
            m["m"] = {"lang": m["lang"]}
        expect(c.post("/v1/databases/d/vectors/batch", {"vectors": [{"id": i, "values": v, "metadata": m}
                                                                  for i, v, m in data]}), 201)
        r = expect(c.post("/v1/databases/d/search", {"queryVector": q, "topK": 5, "groupBy": "m.lang", "ef": 400}),
                   200).json
        want = brute_groups([(i, v, {"k": m["m"]["lang"]}) for i, v, m in data], q, 1, "k", 5, 1)
        assert [(g["value"], [h["vectorId"] for h in g["hits"]]) for g in r["groups"]] == want, r
        assert r["groups"][0]["hits"][0]["vector"]["metadata"]["m"]["lang"] == r["groups"][0]["value"]
        # a field nobody has: no groups
        r = expect(c.post("/v1/databases/d/search", {"queryVector": q, "topK": 5, "groupBy": "nothing"}), 200)
        assert r["count"] == 0 and r["groups"] == [], r


@test
def camel_case_names_beside_the_deprecated_ones():
    """One naming convention: camelCase everywhere, the old snake_case names kept beside (deprecated)."""
    with Server(args=["--api-key", "boot"]) as s:
        c = s.client(key="boot")
        r = expect(c.post("/v1/api-keys", {"role": "read", "expiresIn": "30d"}), 201).json
        assert r["apiKey"] == r["api_key"] and r["keyId"] == r["key_id"], r
        assert r["createdAt"] == r["created_at"] and r["expiresAt"] == r["expires_at"] and r["expiresAt"], r
        expect(c.post("/v1/api-keys", {"role": "read", "expiresAt": "2099-01-01"}), 201)
        expect(c.post("/v1/api-keys", {"role": "read", "expires_at": "2099-01-01", "expiresAt": "2099-01-01"}), 400,
               "INVALID_ARGUMENT", "not both")
        expect(c.post("/v1/api-keys", {"role": "read", "expiresAt": "soon"}), 400, "INVALID_ARGUMENT", "'expiresAt'")
        lst = expect(c.get("/v1/api-keys"), 200).json
        assert lst["apiKeys"] == lst["api_keys"] and len(lst["apiKeys"]) == 2, lst
        d = expect(c.delete("/v1/api-keys/" + r["keyId"]), 200).json
        assert d["keyId"] == d["key_id"] == r["keyId"] and d["revoked"] is True, d
        # roles: searching and listing the index are reads, changing the index is admin
        expect(c.post("/v1/databases", {"name": "d", "vectorDimension": 2}), 201)
        rk = expect(c.post("/v1/api-keys", {"role": "write"}), 201)["apiKey"]
        w = s.client(key=rk)
        q = {"queryVector": [1, 0]}
        expect(w.post("/v1/databases/d/search/advanced", q), 200)
        expect(w.post("/v1/databases/d/search/batch", {"queries": [q]}), 200)
        expect(w.get("/v1/databases/d/indexes"), 200)
        expect(w.get("/v1/databases/d/indexes/primary"), 200)
        expect(w.post("/v1/databases/d/indexes", {"type": "FLAT"}), 403, "FORBIDDEN")
        expect(w.put("/v1/databases/d/indexes/primary", {"type": "FLAT"}), 403, "FORBIDDEN")
        expect(w.delete("/v1/databases/d/indexes/primary"), 403, "FORBIDDEN")
        assert expect(c.get("/v1/databases/d/indexes"), 200)["indexes"][0]["type"] == "HNSW"


if __name__ == "__main__":
    sys.exit(jvdbtest.run_tests(sys.argv))
