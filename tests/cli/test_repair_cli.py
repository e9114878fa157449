#!/usr/bin/env python3
"""Damage, read-only commands and `jvdb db repair`, driven through the jvdb program (issue 9, items 1
and 11).  python3 standard library only.

Usage: test_repair_cli.py PATH_TO_JVDB

The finding this reproduces: one flipped byte in the middle of the active segment made a read-only
`jvdb stats` truncate half of 3,000 acknowledged vectors and exit 0.  Now every read-only command
fails naming the file and offset and changes no file; `jvdb db repair` brings back every record
except the damaged one.  The last line printed is "N passed, N failed".
"""
import hashlib
import json
import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_cli  # noqa: E402  (the harness: Env, the test runner)
from test_cli import test  # noqa: E402

test_cli.TESTS.clear()  # run only the cases below
DIM = 8
N = 3000


def seg_path(e, db, no=1):
    return os.path.join(e.data, "databases", db, f"{no:010d}.seg")


def export(e, db):
    _, out, _ = e.run("export", db, "-")
    return {r["id"]: r["values"] for r in map(json.loads, out.splitlines())}


def snapshot(root):
    """{relative path: sha256} of every file under root: proof that nothing changed."""
    files = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                files[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
    return files


def record_offset(path, k):
    """Offset of record k (from 0) of a segment file, walking the record lengths."""
    with open(path, "rb") as f:
        data = f.read()
    off = 64
    for _ in range(k):
        off += struct.unpack_from("<I", data, off + 24)[0]
    return off


def flip(path, off):
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x5A]))


def load_3000(e, name="v"):
    e.run("db", "create", name, "--dim", DIM)
    src = e.path("in.jsonl")
    with open(src, "w") as f:
        for i in range(N):
            f.write(json.dumps({"id": f"id{i}", "values": [float(i) + j / 8 for j in range(DIM)]}) + "\n")
    e.run("import", name, src)
    return export(e, name)


@test
def flipped_byte_refused_then_repaired(e):
    before = load_3000(e)
    assert len(before) == N
    seg = seg_path(e, "v")
    bad = record_offset(seg, N // 2)
    flip(seg, bad + 64 + 5)        # inside the vector of the middle record
    files = snapshot(e.data)
    want = f"corrupt record in {seg} at offset {bad}: checksum mismatch"
    for args in (["stats", "v"], ["db", "info", "v"], ["get", "v", "id0"], ["export", "v", "-"],
                 ["search", "v", "--vector", ",".join(["1"] * DIM)]):
        _, out, err = e.run(*args, expect=1)
        assert want in err, f"{args}: {want!r} not in {err!r}"
        assert "db repair v" in err, err
        assert out == "", out
        assert snapshot(e.data) == files, f"{args} changed files"
    # A read-write open refuses too, and cuts nothing (only LOCK records the writer's pid).
    e.run("put", "v", "new", "--vector", ",".join(["1"] * DIM), expect=1)
    now = snapshot(e.data)
    assert {k: v for k, v in now.items() if k != "LOCK"} == {k: v for k, v in files.items() if k != "LOCK"}, \
        "a refused open changed files"

    _, out, _ = e.run("db", "repair", "v")
    assert f"dropped bytes {bad}.." in out and seg in out and "checksum mismatch" in out, out
    assert f"kept {N - 1} records" in out, out
    assert os.path.exists(f"{seg}.bad-{bad}"), os.listdir(os.path.dirname(seg))
    after = export(e, "v")
    lost = f"id{N // 2}"
    assert set(after) == set(before) - {lost}, set(before) ^ set(after)
    assert all(after[k] == before[k] for k in after)
    # Writable again; a second repair finds nothing.
    e.run("put", "v", lost, "--vector", ",".join(["1"] * DIM))
    doc = json.loads(e.run("db", "repair", "v", "--json")[1])
    assert doc["changed"] is False and doc["dropped"] == [] and doc["recordsKept"] == N, doc


@test
def repair_json_lists_what_was_dropped(e):
    load_3000(e)
    seg = seg_path(e, "v")
    bad = record_offset(seg, 10)
    flip(seg, bad + 64)
    doc = json.loads(e.run("db", "repair", "v", "--json")[1])
    assert doc["changed"] is True and doc["recordsKept"] == N - 1 and doc["rangesDropped"] == 1, doc
    assert doc["records_kept"] == N - 1 and doc["ranges_dropped"] == 1, doc  # deprecated names, one release
    d = doc["dropped"][0]
    assert d["file"] == seg and d["offset"] == bad and d["reason"] == "checksum mismatch", d
    assert d["kept"] == f"{seg}.bad-{bad}" and os.path.getsize(d["kept"]) == d["length"], d
    e.run("db", "repair", "nope", expect=1)


@test
def torn_tail_read_only_then_cut_and_kept(e):
    e.run("db", "create", "t", "--dim", DIM, "--metric", "l2")   # k0 is the zero vector
    for i in range(5):
        e.run("put", "t", f"k{i}", "--vector", ",".join([str(i)] * DIM))
    seg = seg_path(e, "t")
    good = os.path.getsize(seg)
    with open(seg, "ab") as f:
        f.write(b"\xab" * 100)    # a write cut by a crash
    files = snapshot(e.data)
    doc = json.loads(e.run("stats", "t", "--json")[1])
    assert doc["liveRecords"] == 5, doc
    e.run("get", "t", "k4")
    assert snapshot(e.data) == files, "a read-only command changed files"
    e.run("put", "t", "k5", "--vector", ",".join(["5"] * DIM))   # a write command cuts the tail
    torn = f"{seg}.torn-{good}"
    with open(torn, "rb") as f:
        assert f.read() == b"\xab" * 100
    assert len(export(e, "t")) == 6


@test
def read_only_command_creates_nothing(e):
    missing = e.path("no-such-data")
    _, _, err = e.run("stats", "v", expect=1, data=missing)
    assert "does not exist" in err, err
    e.run("db", "list", expect=1, data=missing)
    assert not os.path.exists(missing), "a read-only command created the data directory"


@test
def missing_manifest_is_damaged(e):
    e.run("db", "create", "lost", "--dim", DIM)
    e.run("put", "lost", "a", "--vector", ",".join(["1"] * DIM))
    e.run("db", "create", "fine", "--dim", DIM)
    os.unlink(os.path.join(e.data, "databases", "lost", "MANIFEST"))
    _, out, err = e.run("db", "list", expect=1)
    assert out == "fine\n", out
    assert "database 'lost' is damaged: its MANIFEST is missing" in err and "0000000001.seg" in err, err
    rc, out, _ = e.run("db", "list", "--json", expect=1)
    doc = json.loads(out)
    assert doc["databases"] == ["fine"] and doc["damaged"][0]["name"] == "lost", doc
    for args in (["stats", "lost"], ["db", "info", "lost"]):
        _, _, err = e.run(*args, expect=1)
        assert "'lost' is damaged" in err and "0000000001.seg" in err, err
    _, _, err = e.run("db", "create", "lost", "--dim", DIM, expect=1)
    assert "exists but is damaged" in err, err
    e.run("db", "drop", "lost")
    assert not os.path.exists(os.path.join(e.data, "databases", "lost"))
    _, out, _ = e.run("db", "list")
    assert out == "fine\n", out
    e.run("db", "create", "lost", "--dim", DIM)


if __name__ == "__main__":
    sys.exit(test_cli.main())
