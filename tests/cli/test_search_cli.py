#!/usr/bin/env python3
"""End-to-end tests of `jvdb search` (python3 standard library only).

Usage: test_search_cli.py PATH_TO_JVDB

Every answer is checked against a brute-force reference computed here in double precision from the
same float32 values: for l2 (squared distance), cosine and dot, with --vector and with query files
(fvecs, npy, jsonl, standard input), for k from 1 to more than the database holds, with metadata
filters (a reference implementation of the filter language's rules), thresholds, deleted vectors,
--include-vectors / --no-metadata, the text table and --json.  --index (the HNSW graph, approximate)
is checked for recall.  Errors: wrong dimension, bad filter JSON, unknown operator, bad option
values, bad query files — each with its exit code (1 failed, 2 command line) and message, and
nothing on stdout.  Shares the harness of test_cli.py.
"""
import json
import math
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_cli  # noqa: E402  (the harness: Env, data helpers, the test runner)
from test_cli import f32, f32bits, write_fvecs, write_jsonl, write_npy  # noqa: E402

TESTS = []
MISSING = object()


def test(fn):
    TESTS.append(fn)
    return fn


# ---------------------------------------------------------------- data and the reference

def gauss_rows(n, dim, seed):
    """Float32-exact values from a few clusters, so neighbours are meaningful and ties are rare."""
    rnd = random.Random(seed)
    centres = [[rnd.gauss(0, 1) for _ in range(dim)] for _ in range(5)]
    return [[f32(c + rnd.gauss(0, 0.4)) for c in rnd.choice(centres)] for _ in range(n)]


def meta_for(i):
    """Metadata with every kind of field the filters compare; some rows lack fields or have none."""
    if i % 11 == 0:
        return None
    m = {"i": i, "genre": ["jazz", "rock", "folk", "pop"][i % 4], "year": 1960 + i % 60, "score": (i % 17) / 4}
    if i % 5:
        m["live"] = i % 2 == 0
    if i % 7 == 0:
        m["genre"] = None
    return m


def load(e, metric="l2", n=300, dim=8, seed=3, name="v"):
    """Creates NAME and imports n rows (ids r0..) with metadata; returns {id: (values, meta)}."""
    e.create(name, dim, "--metric", metric)
    rows = gauss_rows(n, dim, seed)
    recs, db = [], {}
    for i, row in enumerate(rows):
        r = {"id": f"r{i}", "values": row}
        m = meta_for(i)
        if m is not None:
            r["metadata"] = m
        recs.append(r)
        db[r["id"]] = (row, m)
    path = e.path(f"{name}.jsonl")
    write_jsonl(path, recs)
    e.run("import", name, path)
    return db


def score(metric, q, v):
    if metric == "l2":
        return sum((a - b) ** 2 for a, b in zip(q, v))
    dot = sum(a * b for a, b in zip(q, v))
    if metric == "dot":
        return dot
    return dot / (math.sqrt(sum(a * a for a in q)) * math.sqrt(sum(b * b for b in v)))


def better(metric, a, b):
    return a < b if metric == "l2" else a > b


def is_num(x):
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def json_eq(a, b):
    """Equality as the filter compares: numbers by value, otherwise same JSON type and value."""
    if is_num(a) and is_num(b):
        return a == b
    if is_num(a) or is_num(b) or isinstance(a, bool) != isinstance(b, bool):
        return False
    return a == b


def matches(meta, flt):
    for field, cond in flt.items():
        v = meta.get(field, MISSING) if isinstance(meta, dict) else MISSING
        conds = cond.items() if isinstance(cond, dict) else [("$eq", cond)]
        for op, x in conds:
            if op == "$eq":
                ok = v is not MISSING and json_eq(v, x)
            elif op == "$ne":
                ok = v is MISSING or not json_eq(v, x)
            elif op in ("$in", "$nin"):
                found = v is not MISSING and any(json_eq(v, y) for y in x)
                ok = found if op == "$in" else not found
            else:
                if v is MISSING or not is_num(v):
                    return False
                ok = {"$gt": v > x, "$gte": v >= x, "$lt": v < x, "$lte": v <= x}[op]
            if not ok:
                return False
    return True


def reference(db, metric, q, k, flt=None, threshold=None):
    """[(id, score)] best first: the true top k of the live vectors that pass filter and threshold."""
    cands = []
    for vid, (v, m) in db.items():
        if flt is not None and not matches(m, flt):
            continue
        s = score(metric, q, v)
        if threshold is not None and better(metric, threshold, s):
            continue
        cands.append((vid, s))
    cands.sort(key=lambda t: t[1], reverse=metric != "l2")
    return cands[:k]


def close(a, b):
    return abs(a - b) <= 1e-4 * max(1.0, abs(a), abs(b))


def check_results(db, metric, q, got, k, flt=None, threshold=None, what=""):
    """`got` ([{vectorId, score, ...}]) is the true top k: the same scores rank by rank, each id
    scored as the reference scores it, and no id worse than the k-th (so ties may swap, nothing else)."""
    want = reference(db, metric, q, k, flt, threshold)
    assert len(got) == len(want), f"{what}: {len(got)} results, expected {len(want)}"
    for rank, (g, (wid, ws)) in enumerate(zip(got, want)):
        gid, gs = g["vectorId"], g["score"]
        assert gid in db, f"{what}: unknown id {gid}"
        assert close(gs, ws), f"{what}: rank {rank + 1} score {gs}, expected {ws} ({wid})"
        assert close(gs, score(metric, q, db[gid][0])), f"{what}: {gid} scored {gs}"
        if flt is not None:
            assert matches(db[gid][1], flt), f"{what}: {gid} does not match {flt}"
    assert len({g["vectorId"] for g in got}) == len(got), f"{what}: duplicate ids"
    if want and len(got) == len(want):
        ids = [g["vectorId"] for g in got]
        near_tie = len(want) == k and any(close(want[-1][1], s) for v, s in
                                          reference(db, metric, q, k + 3, flt, threshold)[k:])
        if not near_tie:
            assert set(ids) == {w[0] for w in want}, f"{what}: ids {ids}, expected {[w[0] for w in want]}"


def queries(n, dim, seed):
    return gauss_rows(n, dim, seed)


def vec_arg(q):
    return ",".join(repr(x) for x in q)


def search_json(e, *args):
    _, out, err = e.run("search", *args, "--json")
    return json.loads(out)


# ---------------------------------------------------------------- exact answers

@test
def exact_top_k_every_metric(e):
    for metric in ("l2", "cosine", "dot"):
        db = load(e, metric, name=metric)
        for i, q in enumerate(queries(6, 8, seed=10)):
            for k in (1, 10):
                got = search_json(e, metric, "--vector", vec_arg(q), "--k", k)["results"]
                check_results(db, metric, q, got, k, what=f"{metric} q{i} k{k}")
        # Explicit --exact is the same search.
        q = queries(1, 8, seed=11)[0]
        a = search_json(e, metric, "--vector", vec_arg(q))
        b = search_json(e, metric, "--vector", vec_arg(q), "--exact")
        assert a == b


@test
def k_bounds_and_deleted_vectors(e):
    db = load(e, "l2", n=40)
    q = queries(1, 8, seed=12)[0]
    got = search_json(e, "v", "--vector", vec_arg(q), "--k", 40)["results"]
    check_results(db, "l2", q, got, 40, what="k = n")
    got = search_json(e, "v", "--vector", vec_arg(q), "--k", 100000)["results"]
    assert len(got) == 40, "k above the count returns every vector"
    # The best ten deleted: they must never come back, and the next ten take their place.
    best = [g["vectorId"] for g in got[:10]]
    e.run("delete", "v", *best)
    for vid in best:
        del db[vid]
    got = search_json(e, "v", "--vector", vec_arg(q))["results"]
    assert not set(best) & {g["vectorId"] for g in got}
    check_results(db, "l2", q, got, 10, what="after delete")
    # Replaced vectors are searched with their new values.
    e.run("put", "v", "r39", "--vector", vec_arg(q))
    db["r39"] = (q, None)
    got = search_json(e, "v", "--vector", vec_arg(q), "--k", 3)["results"]
    assert got[0]["vectorId"] == "r39" and got[0]["score"] == 0, got


@test
def empty_database(e):
    e.create("v", 3)
    assert search_json(e, "v", "--vector", "1,2,3") == {"results": []}
    _, out, _ = e.run("search", "v", "--vector", "1,2,3")
    assert out == "no results\n", out


# ---------------------------------------------------------------- filters and threshold

FILTERS = [
    {"genre": "jazz"},
    {"genre": {"$in": ["rock", "folk"]}},
    {"genre": {"$nin": ["rock", "folk"]}},
    {"genre": {"$ne": "jazz"}},
    {"genre": None},
    {"year": {"$gte": 1990, "$lt": 2000}},
    {"score": {"$gt": 2.5}},
    {"score": 1},
    {"year": {"$lte": 1965}, "genre": "pop"},
    {"live": True},
    {"live": {"$ne": False}},
    {"i": {"$in": [3, 4.0, "5", 299]}},
    {"genre": {"$eq": "folk"}, "score": {"$lt": 1}},
    {"nosuchfield": {"$gt": 0}},
    {"i": 17},
]


@test
def filters_match_the_reference(e):
    for metric in ("l2", "cosine"):
        db = load(e, metric, name=metric)
        for q_i, q in enumerate(queries(2, 8, seed=13)):
            for flt in FILTERS:
                for k in (5, 50):
                    got = search_json(e, metric, "--vector", vec_arg(q), "--k", k, "--filter", json.dumps(flt))
                    check_results(db, metric, q, got["results"], k, flt=flt, what=f"{metric} q{q_i} {flt} k{k}")
                    matching = sum(1 for v, m in db.values() if matches(m, flt))
                    assert len(got["results"]) == min(k, matching), (flt, k, matching)


@test
def threshold_keeps_only_good_enough(e):
    for metric in ("l2", "dot"):
        db = load(e, metric, name=metric)
        q = queries(1, 8, seed=14)[0]
        ref = reference(db, metric, q, 300)
        # Halfway between the 7th and 8th best, so float32 rounding cannot move either across it.
        t = f32((ref[6][1] + ref[7][1]) / 2)
        got = search_json(e, metric, "--vector", vec_arg(q), "--k", 50, "--threshold", repr(t))["results"]
        check_results(db, metric, q, got, 50, threshold=t, what=f"{metric} threshold")
        assert len(got) == 7, (metric, len(got))
        for g in got:
            assert not better(metric, t, g["score"]), (t, g)
        # With a filter as well.
        flt = {"genre": "rock"}
        got = search_json(e, metric, "--vector", vec_arg(q), "--k", 50, "--threshold", repr(t),
                          "--filter", json.dumps(flt))["results"]
        check_results(db, metric, q, got, 50, flt=flt, threshold=t, what=f"{metric} threshold+filter")


# ---------------------------------------------------------------- output

@test
def output_fields(e):
    db = load(e, "l2", n=60)
    q = queries(1, 8, seed=15)[0]
    got = search_json(e, "v", "--vector", vec_arg(q), "--k", 60, "--include-vectors")["results"]
    for g in got:
        assert set(g) == {"vectorId", "score", "values", "metadata"}, g
        row, meta = db[g["vectorId"]]
        assert f32bits(g["values"]) == f32bits(row), g["vectorId"]
        assert g["metadata"] == meta, (g, meta)
    got = search_json(e, "v", "--vector", vec_arg(q), "--no-metadata")["results"]
    assert all(set(g) == {"vectorId", "score"} for g in got), got
    # The table: a header, then rank, id, score and metadata ("-" for none), same order as --json.
    full = search_json(e, "v", "--vector", vec_arg(q), "--k", 60)["results"]
    _, out, _ = e.run("search", "v", "--vector", vec_arg(q), "--k", 60)
    lines = out.splitlines()
    assert lines[0].split() == ["rank", "id", "score", "metadata"], lines[0]
    assert len(lines) == 61, out
    for i, (line, g) in enumerate(zip(lines[1:], full)):
        rank, vid, s, meta = line.split(None, 3)
        assert int(rank) == i + 1 and vid == g["vectorId"], line
        assert f32(float(s)) == f32(g["score"]), (line, g)
        assert (json.loads(meta) if meta != "-" else None) == db[vid][1], line
    _, out, _ = e.run("search", "v", "--vector", vec_arg(q), "--k", 2, "--include-vectors", "--no-metadata")
    lines = out.splitlines()
    assert lines[0].split() == ["rank", "id", "score", "values"], lines[0]
    vid, values = lines[1].split()[1], lines[1].split()[3]
    assert f32bits([float(x) for x in values.split(",")]) == f32bits(db[vid][0]), lines[1]


# ---------------------------------------------------------------- query files

def jsonl_queries(qs):
    """Alternates the accepted line shapes: a bare array, an object with an id, one without."""
    out = []
    for i, q in enumerate(qs):
        if i % 3 == 0:
            out.append(json.dumps(q))
        elif i % 3 == 1:
            out.append({"id": f"q{i}", "values": q, "metadata": {"ignored": True}})
        else:
            out.append({"values": q})
    return out


@test
def query_files_every_format(e):
    db = load(e, "cosine", n=200)
    qs = queries(7, 8, seed=16)
    write_fvecs(e.path("q.fvecs"), qs)
    write_npy(e.path("q.npy"), qs)
    write_jsonl(e.path("q.jsonl"), jsonl_queries(qs))
    write_jsonl(e.path("q.txt"), jsonl_queries(qs))
    runs = {
        "fvecs": ("--query-file", e.path("q.fvecs")),
        "npy": ("--query-file", e.path("q.npy")),
        "jsonl": ("--query-file", e.path("q.jsonl")),
        "named": ("--query-file", e.path("q.txt"), "--format", "jsonl"),
    }
    for fmt, args in runs.items():
        doc = search_json(e, "v", *args, "--k", 4)
        assert isinstance(doc, list) and len(doc) == len(qs), (fmt, doc)
        for i, (q, per) in enumerate(zip(qs, doc)):
            check_results(db, "cosine", q, per["results"], 4, what=f"{fmt} query {i}")
            if fmt in ("jsonl", "named") and i % 3 == 1:
                assert per["id"] == f"q{i}", per
            else:
                assert "id" not in per, (fmt, per)
    # Standard input, and a file exported from the database itself used as queries.
    with open(e.path("q.jsonl"), "rb") as f:
        _, out, _ = e.run("search", "v", "--query-file", "-", "--format", "jsonl", "--json", stdin=f.read())
    assert json.loads(out) == search_json(e, "v", "--query-file", e.path("q.jsonl"))
    e.run("export", "v", e.path("all.jsonl"))
    doc = search_json(e, "v", "--query-file", e.path("all.jsonl"), "--k", 1)
    assert len(doc) == 200
    for per in doc:
        assert per["results"][0]["vectorId"] == per["id"] and close(per["results"][0]["score"], 1.0), per
    # The table: one block per query, headed by its number (and id).
    _, out, _ = e.run("search", "v", "--query-file", e.path("q.jsonl"), "--k", 2)
    blocks = out.split("\n\n")
    assert len(blocks) == len(qs), out
    assert blocks[0].startswith("query 0:\nrank") and blocks[1].startswith("query 1 (q1):\nrank"), out


@test
def query_file_with_filter_and_one_query(e):
    db = load(e, "dot", n=150)
    qs = queries(3, 8, seed=17)
    write_fvecs(e.path("q.fvecs"), qs[:1])
    doc = search_json(e, "v", "--query-file", e.path("q.fvecs"), "--filter", '{"genre": {"$in": ["pop"]}}')
    assert isinstance(doc, list) and len(doc) == 1, "a query file always gives an array"
    check_results(db, "dot", qs[0], doc[0]["results"], 10, flt={"genre": {"$in": ["pop"]}}, what="file+filter")


# ---------------------------------------------------------------- the HNSW index on request

@test
def index_on_request(e):
    db = load(e, "l2", n=1500, dim=16, seed=18)
    qs = queries(40, 16, seed=19)
    write_fvecs(e.path("q.fvecs"), qs)
    for extra in (["--index"], ["--ef", "200"]):
        doc = search_json(e, "v", "--query-file", e.path("q.fvecs"), *extra)
        hits = 0
        for q, per in zip(qs, doc):
            want = {vid for vid, _ in reference(db, "l2", q, 10)}
            got = per["results"]
            assert len(got) == 10
            for g in got:
                assert close(g["score"], score("l2", q, db[g["vectorId"]][0])), g
            hits += len(want & {g["vectorId"] for g in got})
        recall = hits / (10 * len(qs))
        assert recall >= 0.95, f"{extra}: recall@10 {recall}"
    # A filtered search through the index still returns only matches, k of them.
    flt = {"genre": "folk", "year": {"$gte": 1980}}
    doc = search_json(e, "v", "--query-file", e.path("q.fvecs"), "--index", "--filter", json.dumps(flt))
    matching = sum(1 for v, m in db.values() if matches(m, flt))
    for per in doc:
        assert len(per["results"]) == min(10, matching)
        assert all(matches(db[g["vectorId"]][1], flt) for g in per["results"])


@test
def rerank_reads_map_or_pread(e):
    """JVDB_RERANK_READS=pread (re-rank with pread, RSS kept at the index's own) answers exactly as the
    default (through the segment mapping); another value is logged and means map."""
    load(e, "l2", n=800, dim=16, seed=21)
    qs = queries(20, 16, seed=22)
    write_fvecs(e.path("q.fvecs"), qs)
    outs = {}
    for mode in ("pread", "map", "bogus"):
        os.environ["JVDB_RERANK_READS"] = mode
        try:
            _, out, err = e.run("search", "v", "--query-file", e.path("q.fvecs"), "--index", "--include-vectors",
                                "--json")
        finally:
            del os.environ["JVDB_RERANK_READS"]
        outs[mode] = json.loads(out)
        assert ("JVDB_RERANK_READS=bogus" in err) == (mode == "bogus"), err
    assert outs["map"] == outs["pread"] == outs["bogus"]


@test
def search_changes_nothing_on_disk(e):
    load(e, "l2", n=50)
    d = os.path.join(e.data, "databases", "v")

    def snapshot():
        return {n: (os.path.getsize(os.path.join(d, n)), open(os.path.join(d, n), "rb").read())
                for n in sorted(os.listdir(d)) if n != "ext.hnsw"}
    before = snapshot()
    q = queries(1, 8, seed=20)[0]
    e.run("search", "v", "--vector", vec_arg(q))
    assert not os.path.exists(os.path.join(d, "ext.hnsw")), "an exact search saved a graph"
    # --index may keep the graph it built (ext.hnsw, a derived file), never touch anything else.
    e.run("search", "v", "--vector", vec_arg(q), "--index")
    assert snapshot() == before


@test
def index_saved_between_runs(e):
    """`search --index` twice: the first builds and saves the graph, the second only loads it."""
    db = load(e, "l2", n=1200, dim=16, seed=21)
    st = e.json("stats", "v")["index"]
    assert st["saved"]["present"] is False and st["onOpen"] == "rebuild", st
    assert st["on_open"] == st["onOpen"] and st["saved"]["file_bytes"] == st["saved"]["fileBytes"], st  # deprecated
    qs = queries(20, 16, seed=22)
    write_fvecs(e.path("q.fvecs"), qs)
    os.environ["JVDB_LOG"] = "info"
    try:
        _, out1, err1 = e.run("search", "v", "--query-file", e.path("q.fvecs"), "--index", "--json")
        assert "no saved graph; rebuilding" in err1, err1
        st = e.json("stats", "v")["index"]
        assert st["saved"]["present"] is True and st["saved"]["nodes"] == 1200, st
        assert st["saved"]["behind"] == 0 and st["onOpen"] == "load", st
        _, out2, err2 = e.run("search", "v", "--query-file", e.path("q.fvecs"), "--index", "--json")
        assert "loaded the saved graph (1200 nodes)" in err2 and "rebuilding" not in err2, err2
        assert out1 == out2, "the loaded graph answers as the one built"
        # Newer writes are caught up, not rebuilt; a deleted vector is never answered.
        e.run("delete", "v", "r5")
        db.pop("r5")
        st = e.json("stats", "v")["index"]
        assert st["onOpen"] == "load", st
        _, out3, err3 = e.run("search", "v", "--vector", vec_arg(qs[0]), "--index", "--json")
        assert "loaded the saved graph (1199 nodes)" in err3 and "rebuilding" not in err3, err3
        # A damaged graph file is rebuilt, and the log says why.
        path = os.path.join(e.data, "databases", "v", "ext.hnsw")
        with open(path, "r+b") as f:
            f.seek(300)
            b = f.read(1)
            f.seek(300)
            f.write(bytes([b[0] ^ 0xFF]))
        st = e.json("stats", "v")["index"]
        assert st["onOpen"] == "load", "the header is intact: stats cannot tell"
        _, out4, err4 = e.run("search", "v", "--vector", vec_arg(qs[0]), "--index", "--json")
        assert "saved graph is damaged" in err4 and "checksum" in err4, err4
    finally:
        del os.environ["JVDB_LOG"]
    for per in (json.loads(out3), json.loads(out4)):
        assert all(g["vectorId"] in db for g in per["results"])


@test
def answers_out_before_the_graph_is_saved(e):
    """The answers reach stdout before closing the database checkpoints the graph (a second at 1M):
    killed in that save, `search --index` has already printed them, and they are right."""
    db = load(e, "l2", n=300, dim=8, seed=23)
    q = queries(1, 8, seed=24)[0]
    # No saved graph yet: this run builds one, so closing it saves the graph, and dies there.
    os.environ["JVDB_CRASH_AT"] = "hnsw.save.before_rename"
    try:
        rc, out, _ = e.run("search", "v", "--vector", vec_arg(q), "--index", "--json", expect=None)
    finally:
        del os.environ["JVDB_CRASH_AT"]
    assert rc == -9, f"the close did not reach the graph save (exit {rc})"
    assert out.endswith("\n"), f"no answer on stdout before the save: {out!r}"
    got = json.loads(out)["results"]
    assert len(got) == 10 and all(close(g["score"], score("l2", q, db[g["vectorId"]][0])) for g in got), got
    assert not os.path.exists(os.path.join(e.data, "databases", "v", "ext.hnsw")), "the save was not cut"


# ---------------------------------------------------------------- errors

@test
def usage_errors(e):
    e.fail(2, "search", contains="missing argument")
    e.fail(2, "search", "v", contains="exactly one of --vector and --query-file")
    e.fail(2, "search", "v", "--vector", "1,2", "--query-file", "q.fvecs", contains="exactly one of")
    e.fail(2, "search", "v", "--vector", "1,x", contains="'x'")
    e.fail(2, "search", "v", "--vector", "1,nan", contains="'nan'")
    e.fail(2, "search", "v", "--vector", "", contains="not a list of numbers")
    for bad in ("0", "abc", "-1", "100001"):
        e.fail(2, "search", "v", "--vector", "1", "--k", bad, contains=f"--k '{bad}'")
    e.fail(2, "search", "v", "--vector", "1", "--ef", "0", contains="--ef '0'")
    e.fail(2, "search", "v", "--vector", "1", "--threads", "0", contains="--threads '0'")
    e.fail(2, "search", "v", "--vector", "1", "--threshold", "nan", contains="--threshold 'nan'")
    e.fail(2, "search", "v", "--vector", "1", "--exact", "--index", contains="cannot be combined")
    e.fail(2, "search", "v", "--vector", "1", "--exact", "--ef", "10", contains="cannot be combined")
    e.fail(2, "search", "v", "--vector", "1", "--format", "npy", contains="--format applies to --query-file")
    e.fail(2, "search", "v", "--query-file", "q.csv", contains="fvecs, npy or jsonl, not 'csv'")
    e.fail(2, "search", "v", "--query-file", "q.bin", contains="cannot tell the format")
    e.fail(2, "search", "v", "--query-file", "-", contains="needs --format")
    e.fail(2, "search", "v", "--query-file", "q", "--format", "xml", contains="not 'xml'")
    # Filters are checked by the library's parser, before anything is opened.
    e.fail(2, "search", "v", "--vector", "1", "--filter", '{"genre": ', contains=("--filter", "not valid JSON"))
    e.fail(2, "search", "v", "--vector", "1", "--filter", '{"year": {"$regex": "x"}}',
           contains=("--filter", "unknown operator '$regex'"))
    e.fail(2, "search", "v", "--vector", "1", "--filter", '[1]', contains="JSON object")
    e.fail(2, "search", "v", "--vector", "1", "--filter", '{"year": {"$gt": "1990"}}', contains="needs a number")
    e.fail(2, "search", "v", "--vector", "1", "--filter", '{"g": {"$in": 3}}', contains="needs an array")
    e.fail(2, "search", "v", "--vector", "1", "--filter", '{"$in": [1]}', contains="is not a field")
    assert not os.path.exists(e.data), "a usage error must not create the data directory"
    _, out, _ = e.run("search", "--help")
    assert out.startswith("Usage: jvdb [--data DIR] search NAME") and "--query-file" in out, out
    _, out2, _ = e.run("help", "search")
    assert out == out2
    _, out, _ = e.run("--help", data=False)
    assert "  search " in out, out


@test
def failures_exit_1(e):
    load(e, "l2", n=20, dim=4)
    e.fail(1, "search", "v", "--vector", "1,2,3", contains="--vector has 3 values but database 'v' has dimension 4")
    e.fail(1, "search", "nosuch", "--vector", "1,2,3,4", contains="nosuch")
    e.fail(1, "search", "v", "--query-file", e.path("none.fvecs"), contains="cannot open")
    # Bad rows name their place; nothing is printed for the good queries before them.
    write_fvecs(e.path("dim.fvecs"), [[1, 2, 3, 4], [1, 2, 3]])
    e.fail(1, "search", "v", "--query-file", e.path("dim.fvecs"), contains=("row 1", "dimension 4"))
    write_npy(e.path("dim.npy"), [[1, 2, 3]])
    e.fail(1, "search", "v", "--query-file", e.path("dim.npy"), contains="dimension 4")
    write_jsonl(e.path("bad.jsonl"), [[1, 2, 3, 4], "{not json", [1, 2, 3, 4]])
    e.fail(1, "search", "v", "--query-file", e.path("bad.jsonl"), contains=("line 2", "invalid JSON"))
    write_jsonl(e.path("short.jsonl"), [[1, 2, 3, 4], {"values": [1, 2]}])
    e.fail(1, "search", "v", "--query-file", e.path("short.jsonl"), contains=("line 2", "dimension 4"))
    write_jsonl(e.path("text.jsonl"), [[1, 2, "3", 4]])
    e.fail(1, "search", "v", "--query-file", e.path("text.jsonl"), contains="item 3 is not a number")
    write_jsonl(e.path("noval.jsonl"), [{"id": "x"}])
    e.fail(1, "search", "v", "--query-file", e.path("noval.jsonl"), contains="no 'values'")
    write_jsonl(e.path("str.jsonl"), [{"values": "1,2,3,4"}])
    e.fail(1, "search", "v", "--query-file", e.path("str.jsonl"), contains="'values' must be an array of numbers")
    open(e.path("empty.jsonl"), "w").close()
    e.fail(1, "search", "v", "--query-file", e.path("empty.jsonl"), contains="holds no queries")
    e.fail(1, "--json", "search", "v", "--vector", "1,2,3", contains="dimension 4")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(print(__doc__) or 2)
    # test_cli's runner (argument check, fresh Env per test, JVDB_CLI_TEST=name) over this file's tests.
    test_cli.TESTS[:] = TESTS
    sys.exit(test_cli.main())
