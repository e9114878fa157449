#!/usr/bin/env python3
"""The Python client's embedded mode (jvdb.open over libjvdb.so via ctypes) against the build's library.

Usage: test_python_embedded.py PATH_TO_LIBJVDB [TEST...]

A library built with AddressSanitizer (the test build) needs the ASan runtime loaded first: the test
then runs itself again with LD_PRELOAD set to it (leak checks off: the interpreter's own allocations
would be reported).
"""
import os
import random
import struct
import subprocess
import sys
import tempfile

import clienttest
from clienttest import Skip  # noqa: F401

import jvdb  # noqa: E402

README = os.path.join(clienttest.ROOT, "clients", "python", "README.md")
LIB = None
TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def items(n, dim=8, start=0):
    for i in range(start, start + n):
        rng = random.Random(i)
        yield {"id": "v%05d" % i, "values": [rng.uniform(-1, 1) for _ in range(dim)],
               "metadata": {"i": i, "parity": "even" if i % 2 == 0 else "odd"}}


def expect_error(cls, code, fn, *a, **kw):
    try:
        fn(*a, **kw)
    except cls as e:
        assert e.code == code, (e.code, e.message)
        assert e.message, e
        return e
    raise AssertionError("no %s" % cls.__name__)


@test
def readme_example():
    clienttest.run_readme(README, True, {"JVDB_LIBRARY": LIB})


@test
def same_methods_as_the_client():
    for name in ("create_database", "get_database", "list_databases", "drop_database", "upsert", "get",
                 "get_many", "delete", "count", "scroll", "search"):
        assert callable(getattr(jvdb.Embedded, name)), name


@test
def vectors_search_and_persistence():
    d = tempfile.mkdtemp(prefix="jvdb-embedded-")
    with jvdb.open(d, library=LIB) as e:
        assert e.create_database("t", dimension=8, metric="euclidean", index_type="HNSW")["vectorDimension"] == 8
        assert e.upsert("t", items(2500), batch_size=1000) == 2500
        assert e.count("t") == 2500
        want = next(items(1, start=777))
        got = e.get("t", "v00777")
        assert got["values"] == [f32(x) for x in want["values"]] and got["metadata"] == want["metadata"]
        assert e.get("t", "nope") is None
        assert [v["id"] for v in e.get_many("t", ["v00001", "nope", "v00002"])] == ["v00001", "v00002"]
        hits = e.search("t", want["values"], k=3)
        assert hits[0]["id"] == "v00777" and hits[0]["score"] == 0 and hits[0]["metadata"] == want["metadata"]
        hits = e.search("t", want["values"], k=5, filters={"parity": "odd"}, include_values=True, exact=True)
        assert len(hits) == 5 and all(h["metadata"]["parity"] == "odd" and len(h["values"]) == 8 for h in hits)
        assert e.count("t", filters={"parity": "even"}) == 1250
        assert e.count("t", filters={"i": {"$gte": 2000, "$lt": 2100}}) == 100
        assert e.count("t", filters={"parity": {"$in": ["odd", "x"]}}) == 1250
        assert e.count("t", filters={"nothere": {"$ne": 1}}) == 2500      # missing field: unequal to anything
        assert e.count("t", filters={"parity": {"$gt": 1}}) == 0          # ranges: non-numbers never match
        ids = sorted(v["id"] for v in e.scroll("t"))
        assert ids == ["v%05d" % i for i in range(2500)]
        odd = list(e.scroll("t", filters={"parity": "odd"}, include_values=False))
        assert len(odd) == 1250 and all("values" not in v for v in odd)
        assert e.delete("t", ids=["v00000", "never"]) == 1
        assert e.delete("t", filters={"i": {"$lt": 10}}) == 9
        assert e.count("t") == 2490
        e.upsert("t", [("meta-less", [0.5] * 8)])
    with jvdb.open(d, library=LIB) as e:                     # what was written is there after reopening
        assert e.count("t") == 2491
        assert e.get("t", "meta-less") == {"id": "meta-less", "values": [0.5] * 8, "metadata": None}
        assert [x["name"] for x in e.list_databases()] == ["t"]
        assert e.drop_database("t")["deleted"] is True
        assert e.list_databases() == []


@test
def errors_are_the_clients():
    d = tempfile.mkdtemp(prefix="jvdb-embedded-")
    with jvdb.open(d, library=LIB) as e:
        e.create_database("e", dimension=4)
        expect_error(jvdb.AlreadyExistsError, "ALREADY_EXISTS", e.create_database, "e", 4)
        expect_error(jvdb.NotFoundError, "NOT_FOUND", e.count, "missing")
        expect_error(jvdb.InvalidArgumentError, "INVALID_ARGUMENT", e.create_database, "bad name!", 4)
        expect_error(jvdb.InvalidArgumentError, "INVALID_ARGUMENT", e.create_database, "m", 4, metric="manhattan")
        expect_error(jvdb.InvalidArgumentError, "INVALID_ARGUMENT", e.create_database, "m", 4, sync="sometimes")
        expect_error(jvdb.InvalidArgumentError, "INVALID_ARGUMENT", e.create_database, "m", 4, compactionPolicy={})
        assert e.create_database("m", 4, sync="interval:50")["name"] == "m"
        bad = list(items(1503, dim=4)) + [("bad", [1, 2])]
        err = expect_error(jvdb.InvalidArgumentError, "INVALID_ARGUMENT", e.upsert, "e", bad)
        assert err.index == 1503, err.index
        assert e.count("e") == 1000                           # the first batch went in, the second did not
        err = expect_error(jvdb.InvalidArgumentError, "INVALID_ARGUMENT", e.upsert, "e", [("nan", [float("nan")] * 4)])
        err = expect_error(jvdb.InvalidArgumentError, "INVALID_ARGUMENT", e.search, "e", [1, 2, 3])
        err = expect_error(jvdb.InvalidArgumentError, "INVALID_ARGUMENT", e.count, "e", {"x": {"$bad": 1}})
        assert "$bad" in err.message
        # scroll evaluates filters here with the base rules only: anything beyond them is refused
        # (by the library's parser, or as unsupported), never evaluated with other rules
        for f in ({"x": {"$exists": True}}, {"$or": [{"x": 1}]}, {"a.b": 1}):
            try:
                list(e.scroll("e", filters=f))
                raise AssertionError("scroll accepted %r" % f)
            except (jvdb.InvalidArgumentError, jvdb.UnsupportedError):
                pass
        # the data directory is locked while open
        err = expect_error(jvdb.JvdbError, "LOCKED", jvdb.open, d, LIB)
    expect_error(jvdb.InvalidArgumentError, "INVALID_ARGUMENT", e.count, "e")   # closed


def asan_runtime(lib):
    """The ASan runtime the library links, when it does (the sanitized test build)."""
    try:
        out = subprocess.run(["ldd", lib], capture_output=True, text=True).stdout
    except OSError:
        return None
    for line in out.splitlines():
        if "libasan" in line and "=>" in line:
            return line.split("=>")[1].split("(")[0].strip()
    return None


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: %s PATH_TO_LIBJVDB [TEST...]" % sys.argv[0])
        sys.exit(2)
    LIB = os.path.abspath(sys.argv[1])
    rt = asan_runtime(LIB)
    if rt and rt not in os.environ.get("LD_PRELOAD", ""):
        env = dict(os.environ, LD_PRELOAD=rt, ASAN_OPTIONS="detect_leaks=0:abort_on_error=0")
        os.execve(sys.executable, [sys.executable] + sys.argv, env)
    sys.exit(clienttest.run(TESTS, set(sys.argv[2:])))
