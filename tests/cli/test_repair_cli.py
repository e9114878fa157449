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
DIM = 8
N = 3000


def test(fn):
    TESTS.append(fn)
    return fn


class Env:
    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="jvdb-repair-")
        self.data = os.path.join(self.root, "data")

    def path(self, name):
        return os.path.join(self.root, name)

    def run(self, *args, expect=0, data=None):
        cmd = [JVDB, "--data", data or self.data] + [str(a) for a in args]
        p = subprocess.run(cmd, capture_output=True, timeout=300)
        out, err = p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace")
        for m in SANITIZER_MARKERS:
            assert m not in err, f"sanitizer report from {cmd}:\n{err}"
        if expect is not None:
            assert p.returncode == expect, (
                f"{' '.join(cmd[1:])}: exit {p.returncode}, expected {expect}\nstdout: {out}\nstderr: {err}")
        return p.returncode, out, err

    def seg(self, db, no=1):
        return os.path.join(self.data, "databases", db, f"{no:010d}.seg")

    def export(self, db):
        _, out, _ = self.run("export", db, "-")
        return {r["id"]: r["values"] for r in map(json.loads, out.splitlines())}

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)


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
    return e.export(name)


@test
def flipped_byte_refused_then_repaired(e):
    before = load_3000(e)
    assert len(before) == N
    seg = e.seg("v")
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
    after = e.export("v")
    lost = f"id{N // 2}"
    assert set(after) == set(before) - {lost}, set(before) ^ set(after)
    assert all(after[k] == before[k] for k in after)
    # Writable again; a second repair finds nothing.
    e.run("put", "v", lost, "--vector", ",".join(["1"] * DIM))
    doc = json.loads(e.run("db", "repair", "v", "--json")[1])
    assert doc["changed"] is False and doc["dropped"] == [] and doc["records_kept"] == N, doc


@test
def repair_json_lists_what_was_dropped(e):
    load_3000(e)
    seg = e.seg("v")
    bad = record_offset(seg, 10)
    flip(seg, bad + 64)
    doc = json.loads(e.run("db", "repair", "v", "--json")[1])
    assert doc["changed"] is True and doc["records_kept"] == N - 1 and doc["ranges_dropped"] == 1, doc
    d = doc["dropped"][0]
    assert d["file"] == seg and d["offset"] == bad and d["reason"] == "checksum mismatch", d
    assert d["kept"] == f"{seg}.bad-{bad}" and os.path.getsize(d["kept"]) == d["length"], d
    e.run("db", "repair", "nope", expect=1)


@test
def torn_tail_read_only_then_cut_and_kept(e):
    e.run("db", "create", "t", "--dim", DIM)
    for i in range(5):
        e.run("put", "t", f"k{i}", "--vector", ",".join([str(i)] * DIM))
    seg = e.seg("t")
    good = os.path.getsize(seg)
    with open(seg, "ab") as f:
        f.write(b"\xab" * 100)    # a write cut by a crash
    files = snapshot(e.data)
    doc = json.loads(e.run("stats", "t", "--json")[1])
    assert doc["live_records"] == 5, doc
    e.run("get", "t", "k4")
    assert snapshot(e.data) == files, "a read-only command changed files"
    e.run("put", "t", "k5", "--vector", ",".join(["5"] * DIM))   # a write command cuts the tail
    torn = f"{seg}.torn-{good}"
    with open(torn, "rb") as f:
        assert f.read() == b"\xab" * 100
    assert len(e.export("t")) == 6


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
