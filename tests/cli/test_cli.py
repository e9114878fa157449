#!/usr/bin/env python3
"""End-to-end tests of the jvdb command-line program (python3 standard library only).

Usage: test_cli.py PATH_TO_JVDB

Every test gets a fresh temporary data directory, writes its input files with struct/json/csv, runs
the real binary and checks exit codes, messages, --json output and the database contents afterwards
(read back through `jvdb export`).  Values are compared as float32 bit patterns, so any rounding in
the text formats shows up.  The last line printed is "N passed, N failed".
"""
import csv
import io
import json
import math
import os
import pty
import random
import re
import select
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import traceback

JVDB = None
TESTS = []
SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehaviorSanitizer")


def test(fn):
    TESTS.append(fn)
    return fn


class Env:
    """A temporary directory holding the data directory and input files of one test."""

    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="jvdb-cli-")
        self.data = os.path.join(self.root, "data")

    def path(self, name):
        return os.path.join(self.root, name)

    def run(self, *args, stdin=None, expect=0, data=True):
        # data: True = this test's data directory, False = no --data, a string = that directory.
        where = data if isinstance(data, str) else self.data
        cmd = [JVDB] + (["--data", where] if data else []) + [str(a) for a in args]
        p = subprocess.run(cmd, input=stdin, capture_output=True, timeout=120)
        out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        for m in SANITIZER_MARKERS:
            assert m not in err, f"sanitizer report from {cmd}:\n{err}"
        if expect is not None:
            assert p.returncode == expect, (
                f"{' '.join(cmd[1:])}: exit {p.returncode}, expected {expect}\nstdout: {out}\nstderr: {err}")
        return p.returncode, out, err

    def json(self, *args):
        _, out, _ = self.run(*args, "--json")
        return json.loads(out)

    def fail(self, code, *args, contains=()):
        """Runs a command that must fail with `code`; checks its message and returns it."""
        _, out, err = self.run(*args, expect=code)
        assert err.startswith("jvdb"), f"message should start with 'jvdb': {err!r}"
        assert out == "", f"a failing command printed on stdout: {out!r}"
        for c in ([contains] if isinstance(contains, str) else contains):
            assert c in err, f"{args}: {c!r} not in message {err!r}"
        return err

    def create(self, name="v", dim=4, *extra):
        self.run("db", "create", name, "--dim", dim, *extra)

    def contents(self, name="v"):
        """{id: (float32 bits of values, metadata)} read back with export to stdout."""
        _, out, _ = self.run("export", name, "-")
        rows = {}
        for line in out.splitlines():
            r = json.loads(line)
            assert r["id"] not in rows, f"duplicate id {r['id']} in export"
            rows[r["id"]] = (f32bits(r["values"]), r.get("metadata"))
        return rows

    def count(self, name="v"):
        return self.json("db", "info", name)["vectorCount"]

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)


def f32bits(values):
    return struct.pack(f"<{len(values)}f", *values)


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def random_rows(n, dim, seed=1):
    """Float32 values with the awkward cases in: -0.0, denormals, large values, many digits.  The
    large ones stay within the library's magnitude bound (a norm of about 6.5e18) for dim <= 16."""
    rnd = random.Random(seed)
    specials = [0.0, -0.0, 1e-45, -1.4e-45, 1.17549435e-38, 1.23456789e18, -1.5e18, 0.1, 1 / 3, 1e-7,
                123456789.0, 2.5]
    rows = []
    for i in range(n):
        row = []
        for j in range(dim):
            if rnd.random() < 0.2:
                row.append(f32(rnd.choice(specials)))
            else:
                row.append(f32(rnd.uniform(-1, 1) * 10 ** rnd.randint(-10, 10)))
        rows.append(row)
    return rows


def write_fvecs(path, rows, dims=None):
    with open(path, "wb") as f:
        for i, row in enumerate(rows):
            f.write(struct.pack("<i", dims[i] if dims else len(row)))
            f.write(struct.pack(f"<{len(row)}f", *row))


def write_npy(path, rows, dtype="<f4", version=1, shape=None, fortran=False, dim=None):
    dim = dim if dim is not None else (len(rows[0]) if rows else 4)
    shape = shape if shape is not None else (len(rows), dim)
    header = "{'descr': '%s', 'fortran_order': %s, 'shape': %s, }" % (
        dtype, "True" if fortran else "False", repr(tuple(shape)))
    prefix = 10 if version == 1 else 12
    pad = 64 - (prefix + len(header) + 1) % 64
    header = header + " " * pad + "\n"
    with open(path, "wb") as f:
        f.write(b"\x93NUMPY" + bytes([version, 0]))
        f.write(struct.pack("<H" if version == 1 else "<I", len(header)))
        f.write(header.encode())
        code = {"<f4": "f", "<f8": "d"}.get(dtype, "f")
        for row in rows:
            f.write(struct.pack(f"<{len(row)}{code}", *row))


def write_jsonl(path, records):
    with open(path, "w") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")


def write_text(path, text):
    with open(path, "w") as f:
        f.write(text)


# ---------------------------------------------------------------- help, version, usage errors

@test
def help_and_version(e):
    _, out, _ = e.run("--version", data=False)
    assert out.strip() == "jvdb 0.1.0", out
    _, out, _ = e.run("--help", data=False)
    for cmd in ("db", "import", "export", "put", "get", "delete", "stats", "serve"):
        assert f"  {cmd} " in out, f"{cmd} missing from --help"
    for cmd in (["db"], ["db", "create"], ["db", "list"], ["db", "info"], ["db", "drop"], ["import"],
                ["export"], ["put"], ["get"], ["delete"], ["stats"]):
        _, out, _ = e.run(*cmd, "--help")
        assert out.startswith("Usage: jvdb"), (cmd, out)
        _, out2, _ = e.run("help", *cmd)
        assert out2 == out, cmd
    assert not os.path.exists(e.data), "--help must not create the data directory"


@test
def usage_errors_exit_2(e):
    e.fail(2, contains="no command")
    e.fail(2, "frobnicate", contains="unknown command 'frobnicate'")
    e.fail(2, "--bogus", "db", "list", contains="unknown option '--bogus'")
    e.fail(2, "db", contains="missing subcommand")
    e.fail(2, "db", "rename", contains="unknown subcommand 'rename'")
    e.fail(2, "db", "create", "x", contains="--dim is required")
    e.fail(2, "db", "create", "x", "--dim", "abc", contains="--dim 'abc'")
    e.fail(2, "db", "create", "x", "--dim", "4", "--metric", "manhattan", contains="--metric 'manhattan'")
    e.fail(2, "db", "create", "x", "--dim", "4", "--sync", "sometimes", contains="--sync 'sometimes'")
    e.fail(2, "db", "create", "x", "--dim", "4", "--segment-max-bytes", "lots", contains="--segment-max-bytes")
    e.fail(2, "db", "create", "--dim", "4", contains="missing argument")
    e.fail(2, "db", "list", "extra", contains="unexpected argument 'extra'")
    e.fail(2, "stats", "v", "--colour", contains="unknown option '--colour'")
    e.fail(2, "get", "v", "-x", contains="unknown option '-x'")
    e.fail(2, "put", "v", "a", contains="--vector is required")
    e.fail(2, "put", "v", "a", "--vector", "1,two,3", contains="'two'")
    e.fail(2, "put", "v", "a", "--vector", "1,nan,3", contains="'nan'")
    e.fail(2, "put", "v", "a", "--vector", contains="needs a value")
    e.fail(2, "import", "v", "file.bin", contains="--format")
    e.fail(2, "import", "v", "f.jsonl", "--format", "xml", contains="--format 'xml'")
    e.fail(2, "import", "v", "f.jsonl", "--batch", "0", contains="--batch '0'")
    e.fail(2, "import", "v", "-", contains="needs --format")
    e.fail(2, "export", "v", "out.jsonl", "--format", "parquet", contains="--format 'parquet'")
    e.fail(2, "--json", "--data", contains="needs a directory")
    assert not os.path.exists(e.data), "a usage error must not create the data directory"


@test
def serve_without_or_with_server(e):
    rc, out, err = e.run("serve", "--help", expect=None)
    if rc == 1 and "this build has no server" in err:
        return
    assert rc == 0, (rc, out, err)  # a server build answers --help itself


# ---------------------------------------------------------------- databases

@test
def db_lifecycle(e):
    doc = e.json("db", "create", "docs", "--dim", "3", "--metric", "cosine", "--sync", "interval:250",
                 "--segment-max-bytes", "64K")
    # camelCase, named as REST names the database; the names documented before stay one release, after
    assert list(doc.items()) == [("name", "docs"), ("vectorDimension", 3), ("distanceMetric", "cosine"),
                                 ("sync", "interval:250"), ("segmentMaxBytes", 65536), ("dim", 3),
                                 ("metric", "cosine"), ("segment_max_bytes", 65536)], doc
    assert e.json("db", "create", "e2", "--dim", "2", "--metric", "l2")["distanceMetric"] == "euclidean"
    e.run("db", "drop", "e2")
    e.create("other", 2)
    assert e.json("db", "list") == {"databases": ["docs", "other"]}
    _, out, _ = e.run("db", "list")
    assert out == "docs\nother\n", out
    info = e.json("db", "info", "docs")
    assert info["vectorDimension"] == 3 and info["distanceMetric"] == "cosine" and info["sync"] == "interval:250", info
    assert info["vectorCount"] == 0 and info["stats"]["liveRecords"] == 0, info
    assert info["count"] == 0 and info["dim"] == 3 and info["stats"]["live_records"] == 0, info  # deprecated
    _, out, _ = e.run("db", "info", "docs")
    assert "dim:               3" in out and "live_records:" in out, out
    e.fail(1, "db", "create", "docs", "--dim", "5", contains="already exists")
    assert e.json("db", "info", "docs")["vectorDimension"] == 3, "a failed create changed the database"
    e.fail(1, "db", "create", "../evil", "--dim", "3", contains="evil")
    e.fail(1, "db", "create", "zero", "--dim", "0", contains="dimension")
    assert e.json("db", "list") == {"databases": ["docs", "other"]}
    assert e.json("db", "drop", "other") == {"dropped": "other"}
    e.fail(1, "db", "drop", "other", contains="other")
    e.fail(1, "db", "info", "other", contains="other")
    assert e.json("db", "list") == {"databases": ["docs"]}


# ---------------------------------------------------------------- single vectors

@test
def put_get_delete_stats(e):
    e.create("v", 3)
    doc = e.json("put", "v", "a", "--vector", "[0.1, -2, 3e-3]", "--meta", '{"title": "x", "n": 1}')
    assert doc["id"] == "a" and doc["lsn"] >= 1, doc
    e.run("put", "v", "b", "--vector", "1 2 3")
    e.run("put", "v", "--vector", "-1,-2,-3", "--", "-dash")
    got = e.json("get", "v", "a")
    assert got == {"id": "a", "values": [0.1, -2.0, 0.003], "metadata": {"title": "x", "n": 1}}, got
    assert f32bits(got["values"]) == f32bits([0.1, -2, 3e-3])
    assert e.json("get", "v", "b")["metadata"] is None
    _, out, _ = e.run("get", "v", "a")
    assert "id:       a" in out and "vector:   0.1,-2,0.003" in out and '"title"' in out, out
    _, out, _ = e.run("get", "v", "--json", "--", "-dash")
    assert json.loads(out)["values"] == [-1, -2, -3]

    before = e.contents()
    e.fail(1, "put", "v", "c", "--vector", "1,2", contains="has dimension 3")
    e.fail(1, "put", "v", "c", "--vector", "1,2,3", "--meta", "{bad", contains="not valid JSON")
    e.fail(1, "put", "v", "c", "--vector", "1,2,3", "--meta", "[1]", contains="JSON object")
    e.fail(1, "put", "nosuch", "c", "--vector", "1,2,3", contains="nosuch")
    e.fail(1, "get", "v", "zzz", contains="not found")
    e.fail(1, "delete", "v", "a", "zzz", contains=("zzz", "nothing deleted"))
    assert e.contents() == before, "a failed command changed the database"

    st = e.json("stats", "v")
    for k in ("liveRecords", "deadRecords", "tombstones", "fileBytes", "liveBytes", "deadBytes",
              "deadRatio", "segments", "lastLsn", "backupHorizon"):
        assert k in st, k
    # the snake_case names docs/CLI.md documented before: the same values, one release more
    for k in ("live_records", "dead_records", "file_bytes", "live_bytes", "dead_bytes", "dead_ratio", "last_lsn",
              "backup_horizon"):
        assert st[k] == st[re.sub(r"_(.)", lambda m: m.group(1).upper(), k)], k
    assert st["liveRecords"] == 3 and st["lastLsn"] >= 3, st
    _, out, _ = e.run("stats", "v")
    assert "live_records:    3" in out, out

    assert e.json("delete", "v", "a", "b", "a") == {"deleted": 2}
    assert e.count() == 1
    assert e.json("stats", "v")["liveRecords"] == 1


# ---------------------------------------------------------------- round trips

def check_rows(e, rows, ids, name="v", metas=None):
    got = e.contents(name)
    assert sorted(got) == sorted(ids), f"ids differ: {sorted(got)[:5]} vs {sorted(ids)[:5]}"
    for i, vid in enumerate(ids):
        assert got[vid][0] == f32bits(rows[i]), f"{vid}: {got[vid][0]!r} != {rows[i]}"
        if metas is not None:
            assert got[vid][1] == metas[i], (vid, got[vid][1], metas[i])


@test
def roundtrip_fvecs(e):
    rows = random_rows(257, 8)
    write_fvecs(e.path("in.fvecs"), rows)
    e.create("v", 8)
    doc = e.json("import", "v", e.path("in.fvecs"), "--batch", "50")
    assert doc["imported"] == 257, doc
    check_rows(e, rows, [str(i) for i in range(257)])
    # fvecs export keeps values (not ids or order): compare as a multiset of rows.
    _, out, _ = e.run("export", "v", e.path("out.fvecs"))
    assert "exported 257" in out, out
    data = open(e.path("out.fvecs"), "rb").read()
    assert len(data) == 257 * (4 + 32)
    back = sorted(data[i * 36 + 4:(i + 1) * 36] for i in range(257))
    assert all(data[i * 36:i * 36 + 4] == struct.pack("<i", 8) for i in range(257))
    assert back == sorted(f32bits(r) for r in rows)


@test
def roundtrip_npy(e):
    rows = random_rows(100, 5, seed=2)
    e.create("v", 5)
    write_npy(e.path("a.npy"), rows, version=1)
    e.run("import", "v", e.path("a.npy"), "--id-prefix", "n1-")
    write_npy(e.path("b.npy"), rows[:10], version=2)
    e.run("import", "v", e.path("b.npy"), "--id-prefix", "n2-")
    write_npy(e.path("empty.npy"), [], dim=5)
    assert e.json("import", "v", e.path("empty.npy"))["imported"] == 0
    check_rows(e, rows + rows[:10], [f"n1-{i}" for i in range(100)] + [f"n2-{i}" for i in range(10)])


@test
def roundtrip_jsonl(e):
    rows = random_rows(60, 6, seed=3)
    metas = [None if i % 3 == 0 else {"i": i, "tag": "t\u00e9\n\"q\"", "list": [1, 2.5, None]} for i in range(60)]
    ids = [f"doc-{i}" if i % 7 else f"wéird id, \"{i}\" " for i in range(60)]
    recs = []
    for i in range(60):
        r = {"id": ids[i], "values": rows[i]}
        if metas[i] is not None:
            r["metadata"] = metas[i]
        recs.append(r)
    recs.insert(5, "")  # blank lines are skipped
    write_jsonl(e.path("in.jsonl"), recs)
    e.create("v", 6)
    _, out, err = e.run("import", "v", e.path("in.jsonl"), "--batch", "7")
    assert "imported 60 vectors" in out and err == "", (out, err)
    check_rows(e, rows, ids, metas=metas)
    # export to a file and import that into a second database: identical contents
    e.run("export", "v", e.path("out.jsonl"))
    e.create("w", 6)
    e.run("import", "w", e.path("out.jsonl"))
    assert e.contents("w") == e.contents("v")
    # numeric ids are accepted and stored as their decimal text
    write_jsonl(e.path("num.jsonl"), [{"id": 42, "values": [1] * 6}])
    e.run("import", "w", e.path("num.jsonl"))
    assert e.json("get", "w", "42")["values"] == [1.0] * 6


@test
def roundtrip_csv(e):
    rows = random_rows(40, 3, seed=4)
    ids = [f"c{i}" if i % 5 else f"has,comma \"{i}\"" for i in range(40)]
    metas = [None if i % 2 else {"k": i, "s": "a,b"} for i in range(40)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["id", "x", "y", "z", "metadata"])
    for i in range(40):
        w.writerow([ids[i]] + [repr(v) for v in rows[i]] + ([json.dumps(metas[i])] if metas[i] else [""]))
    write_text(e.path("in.csv"), buf.getvalue())
    e.create("v", 3)
    e.run("import", "v", e.path("in.csv"))
    check_rows(e, rows, ids, metas=metas)
    # no header, no metadata column
    write_text(e.path("plain.csv"), "p1,1,2,3\np2, 4 ,5,6\r\n")
    e.create("p", 3)
    e.run("import", "p", e.path("plain.csv"))
    assert e.json("get", "p", "p2")["values"] == [4, 5, 6]
    # export csv, read it with python's csv module, import it again
    e.run("export", "v", e.path("out.csv"))
    with open(e.path("out.csv"), newline="") as f:
        table = list(csv.reader(f))
    assert table[0] == ["id", "v1", "v2", "v3", "metadata"], table[0]
    assert sorted(r[0] for r in table[1:]) == sorted(ids)
    e.create("w", 3)
    e.run("import", "w", e.path("out.csv"))
    assert e.contents("w") == e.contents("v")


@test
def export_to_stdout_and_errors(e):
    e.create("v", 2)
    e.run("put", "v", "a", "--vector", "1,2")
    _, out, err = e.run("export", "v", "-", "--format", "csv")
    assert out == "id,v1,v2,metadata\na,1,2,\n" and err == "", (out, err)
    _, out, _ = e.run("export", "v", "-", "--json")
    assert json.loads(out) == {"id": "a", "values": [1, 2]}, "with '-' stdout carries only the data"
    assert e.json("export", "v", e.path("x.dat"))["exported"] == 1
    assert json.loads(open(e.path("x.dat")).read())["id"] == "a", "unknown extension exports jsonl"
    e.fail(1, "export", "nosuch", e.path("n.jsonl"), contains="nosuch")
    assert not os.path.exists(e.path("n.jsonl")), "a failed export left a file"
    e.fail(1, "export", "v", e.path("no/such/dir/out.jsonl"), contains="cannot create")
    # a failed export leaves an existing file untouched
    write_text(e.path("keep.jsonl"), "old\n")
    e.fail(1, "export", "nosuch", e.path("keep.jsonl"))
    assert open(e.path("keep.jsonl")).read() == "old\n"
    assert not [n for n in os.listdir(e.root) if ".tmp-" in n], "temporary export file left behind"


# ---------------------------------------------------------------- import errors

def jsonl_rows(n, dim, bad_line=None, bad=None):
    recs = [{"id": f"r{i}", "values": [float(i + 1)] * dim} for i in range(n)]
    if bad_line is not None:
        recs[bad_line - 1] = bad
    return recs


@test
def import_bad_line_keeps_committed_batches(e):
    e.create("v", 4)
    write_jsonl(e.path("bad.jsonl"), jsonl_rows(10, 4, 5, {"id": "r4", "values": [1, 2, 3]}))
    err = e.fail(1, "import", "v", e.path("bad.jsonl"), "--batch", "2",
                 contains=("bad.jsonl", "line 5", "has dimension 4", "4 vectors imported"))
    assert e.count() == 4, err
    assert sorted(e.contents()) == ["r0", "r1", "r2", "r3"]
    # bad row in the middle of a batch: the rows of that batch before it are not imported either
    e.create("w", 4)
    write_jsonl(e.path("bad4.jsonl"), jsonl_rows(10, 4, 4, {"id": "x", "values": [1, 2, 3, "a"]}))
    e.fail(1, "import", "w", e.path("bad4.jsonl"), "--batch", "2", contains=("line 4", "2 vectors imported"))
    assert e.count("w") == 2


@test
def import_jsonl_errors(e):
    e.create("v", 2)
    e.run("put", "v", "keep", "--vector", "9,9")
    before = e.contents()
    cases = [
        ('{"id": "a", "values": [1, 2]}\n{"id": "b", "values": [1, 2]\n', "line 2", "invalid JSON"),
        ('[1, 2]\n', "line 1", "JSON object"),
        ('{"values": [1, 2]}\n', "line 1", "no 'id'"),
        ('{"id": "", "values": [1, 2]}\n', "line 1", "empty"),
        ('{"id": ["x"], "values": [1, 2]}\n', "line 1", "'id' must be a string"),
        ('{"id": "a"}\n', "line 1", "no 'values'"),
        ('{"id": "a", "values": "1,2"}\n', "line 1", "array"),
        ('{"id": "a", "values": [1, 1e300]}\n', "line 1", "float32 range"),
        ('{"id": "a", "values": [1, 2], "metadata": [1]}\n', "line 1", "JSON object"),
        ('{"id": "a", "id": "b", "values": [1, 2]}\n', "line 1", "duplicate"),
        ('\n\n{"id": "%s", "values": [1, 2]}\n' % ("x" * 1025), "line 3", "limit is 1024"),
    ]
    for text, where, what in cases:
        write_text(e.path("e.jsonl"), text)
        e.fail(1, "import", "v", e.path("e.jsonl"), contains=(where, what, "e.jsonl", "0 vectors imported"))
    assert e.contents() == before, "a failed import changed the database"
    e.fail(1, "import", "nosuch", e.path("e.jsonl"), contains="nosuch")
    e.fail(1, "import", "v", e.path("missing.jsonl"), contains=("cannot open", "missing.jsonl"))
    assert e.contents() == before


@test
def import_library_error_names_line(e):
    # A zero vector is valid input but a cosine database refuses it: the library names the record's
    # index in the batch and the CLI turns it back into the line.
    e.create("c", 2, "--metric", "cosine")
    write_jsonl(e.path("z.jsonl"), jsonl_rows(3, 2) + [{"id": "zero", "values": [0, 0]}] + jsonl_rows(2, 2))
    e.fail(1, "import", "c", e.path("z.jsonl"), "--batch", "10", contains=("line 4", "zero vector", "0 vectors imported"))
    assert e.count("c") == 0


@test
def import_csv_errors(e):
    e.create("v", 2)
    cases = [
        ("id,a,b\nx,1,2\ny,1,zz\n", "line 3", "'zz'"),
        ("x,1,2\ny,1\n", "line 2", "1 values but database 'v' has dimension 2"),
        ("x,1,2,3,4\n", "line 1", "has dimension 2"),
        ('x,1,2,"{""a"": 1\n', "line 1", "quoted field"),
        ('x,1,2,"[1]"\n', "line 1", "JSON object"),
        ('x,1,2,"{bad"\n', "line 1", "not valid JSON"),
        ('"x"y,1,2\n', "line 1", "after its closing quote"),
        (',1,2\n', "line 1", "empty"),
    ]
    for text, where, what in cases:
        write_text(e.path("e.csv"), text)
        e.fail(1, "import", "v", e.path("e.csv"), contains=(where, what))
    assert e.count() == 0
    # a quoted field may span lines; the line reported for a later row counts them
    write_text(e.path("ml.csv"), 'a,1,2,"{""multi"":\n""line""}"\nok,3,4\nbad,5\n')
    e.fail(1, "import", "v", e.path("ml.csv"), "--batch", "1", contains="line 4")
    assert e.json("get", "v", "a") == {"id": "a", "values": [1, 2], "metadata": {"multi": "line"}}
    # ids are text without control characters (issue 9): a line break inside a quoted id is refused
    write_text(e.path("nl.csv"), '"multi\nline",1,2\n')
    e.fail(1, "import", "v", e.path("nl.csv"), contains="id holds a control character")


@test
def import_binary_errors(e):
    e.create("v", 3)
    rows = random_rows(6, 3, seed=5)
    write_fvecs(e.path("d.fvecs"), rows, dims=[3, 3, 3, 4, 3, 3])
    e.fail(1, "import", "v", e.path("d.fvecs"), "--batch", "2", contains=("row 3", "4 values", "2 vectors imported"))
    assert e.count() == 2
    write_fvecs(e.path("t.fvecs"), rows)
    with open(e.path("t.fvecs"), "r+b") as f:
        f.truncate(16 * 5 + 7)
    e.fail(1, "import", "v", e.path("t.fvecs"), "--id-prefix", "t", contains=("row 5", "ends inside"))
    nan_rows = [list(r) for r in rows]
    nan_rows[1][2] = float("nan")
    write_fvecs(e.path("n.fvecs"), nan_rows)
    e.fail(1, "import", "v", e.path("n.fvecs"), "--id-prefix", "n", contains=("row 1", "NaN"))
    before = e.contents()

    write_npy(e.path("f8.npy"), rows, dtype="<f8")
    e.fail(1, "import", "v", e.path("f8.npy"), contains=("'<f8'", "float32", "nothing imported"))
    write_npy(e.path("i4.npy"), [], dtype="<i4", dim=3)
    e.fail(1, "import", "v", e.path("i4.npy"), contains="'<i4'")
    write_npy(e.path("1d.npy"), [], shape=(12,))
    e.fail(1, "import", "v", e.path("1d.npy"), contains=("(12,)", "2-D"))
    write_npy(e.path("fo.npy"), rows, fortran=True)
    e.fail(1, "import", "v", e.path("fo.npy"), contains="Fortran")
    write_npy(e.path("w.npy"), [r + [0.0] for r in rows])
    e.fail(1, "import", "v", e.path("w.npy"), contains=("4 values", "dimension 3"))
    write_npy(e.path("short.npy"), rows, shape=(10, 3))
    e.fail(1, "import", "v", e.path("short.npy"), "--id-prefix", "s", "--batch", "3",
           contains=("(10, 3) needs 120 bytes", "has 72", "nothing imported"))
    # through a pipe the size is unknown until the rows run out
    _, _, err = e.run("import", "v", "-", "--format", "npy", "--id-prefix", "s", "--batch", "3",
                      stdin=open(e.path("short.npy"), "rb").read(), expect=1)
    assert "row 6" in err and "ends early" in err and "6 vectors imported" in err, err
    write_text(e.path("junk.npy"), "not numpy at all")
    e.fail(1, "import", "v", e.path("junk.npy"), contains="not an npy file")
    assert e.contents() == {**before, **{f"s{i}": (f32bits(rows[i]), None) for i in range(6)}}


# ---------------------------------------------------------------- progress bar

def run_with_tty_stderr(args):
    """Runs jvdb with stderr on a pseudo-terminal; returns (exit code, what the terminal got)."""
    master, slave = pty.openpty()
    p = subprocess.Popen([JVDB] + args, stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        r, _, _ = select.select([master], [], [], 60)
        if not r:
            break
        try:
            b = os.read(master, 4096)
        except OSError:
            break
        if not b:
            break
        chunks.append(b)
    os.close(master)
    return p.wait(timeout=60), b"".join(chunks).decode(errors="replace")


@test
def progress_only_on_a_terminal(e):
    e.create("v", 4)
    write_jsonl(e.path("p.jsonl"), jsonl_rows(50, 4))
    rc, out, err = e.run("import", "v", e.path("p.jsonl"), "--batch", "10")
    assert err == "", f"progress output on a non-terminal: {err!r}"
    rc, term = run_with_tty_stderr(["--data", e.data, "import", "v", e.path("p.jsonl"), "--batch", "10"])
    assert rc == 0, term
    assert "100%" in term and "ETA" in term and "/s" in term and "50 imported" in term, repr(term)


# ---------------------------------------------------------------- locking

def wait_for(pred, what, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        if pred():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def lock_holder(e):
    try:
        return open(os.path.join(e.data, "LOCK")).read().strip()
    except OSError:
        return ""


@test
def locked_by_another_jvdb(e):
    e.create("v", 2)
    # `import ... -` holds the directory open while it waits for standard input.
    p = subprocess.Popen([JVDB, "--data", e.data, "import", "v", "-", "--format", "jsonl"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for(lambda: lock_holder(e) == str(p.pid), "the importer to take the lock")
        before = os.listdir(os.path.join(e.data, "databases"))
        e.fail(1, "db", "list", contains=f"locked by pid {p.pid}")
        e.fail(1, "put", "v", "x", "--vector", "1,2", contains=f"locked by pid {p.pid}")
        e.fail(1, "db", "create", "w", "--dim", "2", contains=f"locked by pid {p.pid}")
        assert os.listdir(os.path.join(e.data, "databases")) == before
        out, err = p.communicate(b'{"id": "s", "values": [1, 2]}\n', timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode == 0, err
    assert e.json("get", "v", "s")["values"] == [1, 2]
    assert e.json("db", "list") == {"databases": ["v"]}


@test
def locked_by_flock_holder(e):
    import fcntl
    e.create("v", 2)
    # The library's convention: flock(LOCK_EX) on <data>/LOCK, which holds the owner's pid as text.
    fd = os.open(os.path.join(e.data, "LOCK"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        for args in (["stats", "v"], ["import", "v", e.path("none.jsonl")], ["export", "v", "-"]):
            if args[0] == "import":
                write_jsonl(e.path("none.jsonl"), jsonl_rows(1, 2))
            e.fail(1, *args, contains=f"locked by pid {os.getpid()}")
    finally:
        os.close(fd)
    assert e.count() == 0


# ---------------------------------------------------------------- payload indexes (issue 12)

@test
def index_payload_cli(e):
    """jvdb index payload create|list|drop: persisted declarations, exit codes, list changes nothing."""
    e.create("p", 3)
    _, out, _ = e.run("index", "payload", "create", "p", "m.lang", "--type", "keyword")
    assert out == "payload index on 'm.lang' of 'p': keyword\n", out
    _, out, _ = e.run("index", "payload", "create", "p", "year", "--type", "NUMERIC", "--json")
    assert json.loads(out) == {"database": "p", "field": "year", "type": "numeric"}, out
    _, out, _ = e.run("index", "payload", "list", "p")
    assert out == "m.lang keyword\nyear numeric\n", out
    _, out, _ = e.run("index", "payload", "list", "p", "--json")
    want = [{"field": "m.lang", "type": "keyword"}, {"field": "year", "type": "numeric"}]
    assert json.loads(out) == {"database": "p", "payloadIndexes": want, "payload_indexes": want}, out
    e.fail(2, "index", "payload", "create", "p", "x", "--type", "text", contains="use keyword or numeric")
    e.fail(2, "index", "payload", "create", "p", "x", contains="--type keyword|numeric is required")
    e.fail(1, "index", "payload", "create", "p", "a..b", "--type", "keyword", contains="has an empty part")
    e.fail(1, "index", "payload", "drop", "p", "nope", contains="no payload index on 'nope'")
    e.fail(1, "index", "payload", "list", "nodb", contains="nodb")
    e.fail(2, "index", "frob", contains="unknown subcommand")
    e.fail(2, "index", "payload", "rename", contains="unknown subcommand 'rename'")
    _, out, _ = e.run("index", "payload", "drop", "p", "year")
    assert out == "payload index on 'year' of 'p' dropped\n", out
    _, out, _ = e.run("index", "payload", "list", "p")
    assert out == "m.lang keyword\n", out
    _, out, _ = e.run("index", "--help")
    assert out.startswith("Usage: jvdb") and "index payload create" in out, out


# ---------------------------------------------------------------- main

def main():
    global JVDB
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    JVDB = os.path.abspath(sys.argv[1])
    only = os.environ.get("JVDB_CLI_TEST")
    passed = failed = 0
    for fn in TESTS:
        if only and fn.__name__ != only:
            continue
        e = Env()
        t0 = time.time()
        try:
            fn(e)
            passed += 1
            print(f"ok   {fn.__name__} ({time.time() - t0:.1f}s)", flush=True)
        except Exception:
            failed += 1
            print(f"FAIL {fn.__name__}", flush=True)
            traceback.print_exc()
        finally:
            e.close()
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
