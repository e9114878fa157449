#!/usr/bin/env python3
"""End-to-end tests of `jvdb compact` and the compaction part of `jvdb stats` / `db info`
(python3 standard library only).

Usage: test_compact_cli.py PATH_TO_JVDB

The first test is the seed's manual checklist done through the command line only: import 1,200
vectors with metadata, delete 40%, stats says compaction is due and why, compact, the files on disk
shrink by at least the deleted bytes less one segment of slack, every remaining vector and its
metadata read back bit-identical through export, every deleted one stays deleted (also after a
reopen and a re-put), and the statistics printed by compact and stats agree with the files.  The
others cover "not needed", --force, --full against partial compaction, --max-seconds, Ctrl-C and a
SIGKILL at the compaction's crash points.  Shares the harness of test_cli.py.
"""
import json
import os
import random
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_cli  # noqa: E402  (the harness: Env, data helpers, the test runner)
from test_cli import f32bits, random_rows, write_fvecs, write_jsonl  # noqa: E402

TESTS = []
SEG_HEADER = 64  # docs/FORMAT.md: every segment file starts with a 64-byte header


def test(fn):
    TESTS.append(fn)
    return fn


def db_dir(e, name="v"):
    return os.path.join(e.data, "databases", name)


def seg_files(e, name="v"):
    """{file name: size} of the segment files on disk, measured here rather than taken from stats."""
    d = db_dir(e, name)
    return {n: os.path.getsize(os.path.join(d, n)) for n in sorted(os.listdir(d)) if n.endswith(".seg")}


def stray_files(e, name="v"):
    return [n for n in os.listdir(db_dir(e, name)) if n.endswith(".tmp")]


def load(e, n, dim, name="v", batch=100, seed=7, meta=True):
    """Imports n rows with ids r0..r(n-1) (metadata on two thirds of them); returns {id: (bits, meta)}."""
    rows = random_rows(n, dim, seed=seed)
    recs, want = [], {}
    for i, row in enumerate(rows):
        r = {"id": f"r{i}", "values": row}
        m = {"i": i, "tag": f"t{i % 7}", "nested": {"x": [i, None, True]}} if meta and i % 3 else None
        if m is not None:
            r["metadata"] = m
        recs.append(r)
        want[r["id"]] = (f32bits(row), m)
    write_jsonl(e.path(f"{name}.jsonl"), recs)
    e.run("import", name, e.path(f"{name}.jsonl"), "--batch", batch)
    return want


def delete_ids(e, ids, name="v"):
    ids = list(ids)
    for k in range(0, len(ids), 5000):  # a few commands keep argv short
        e.run("delete", name, *ids[k:k + 5000])


def check_same(e, want, name="v"):
    got = e.contents(name)
    assert sorted(got) == sorted(want), f"ids differ: {len(got)} vs {len(want)}"
    for k, v in want.items():
        assert got[k] == v, f"{k}: {got[k]!r} != {v!r}"


# ---------------------------------------------------------------- the seed's checklist

@test
def checklist(e):
    n, dim = 1200, 16
    e.create("v", dim, "--segment-max-bytes", "64K")
    want = load(e, n, dim)
    st0 = e.json("stats", "v")
    assert st0["compaction"] == {"due": False, "trigger": "none", "reason": "nothing to reclaim"}, st0
    _, out, _ = e.run("stats", "v")
    assert "compaction:      not due (nothing to reclaim)" in out, out

    gone = sorted(random.Random(3).sample(sorted(want), n * 2 // 5))  # 40%
    delete_ids(e, gone)
    for k in gone:
        del want[k]

    before = e.json("stats", "v")
    files_before = seg_files(e)
    assert before["fileBytes"] == sum(files_before.values()), (before, files_before)
    assert before["liveRecords"] == n - len(gone) and before["tombstones"] == len(gone), before
    assert before["liveBytes"] + before["deadBytes"] + SEG_HEADER * before["segments"] == before["fileBytes"], before
    c = before["compaction"]
    assert c["due"] is True and c["trigger"] == "dead_ratio", c
    assert c["reason"] == "dead ratio %.3f >= 0.300" % before["deadRatio"], c
    _, out, _ = e.run("stats", "v")
    assert f"compaction:      due (dead_ratio: {c['reason']})" in out, out
    info = e.json("db", "info", "v")
    assert info["stats"]["compaction"] == c, info

    doc = e.json("compact", "v")
    after = e.json("stats", "v")
    files_after = seg_files(e)
    size_before, size_after = sum(files_before.values()), sum(files_after.values())
    # Smaller by at least the deleted bytes (the dead puts and their tombstones) less one segment of
    # slack; in fact the only slack is the fresh active segment's header.
    assert size_after <= size_before - before["deadBytes"] + 64 * 1024, (size_before, size_after, before)
    assert size_after == before["liveBytes"] + SEG_HEADER * len(files_after), (size_after, files_after)
    assert doc["database"] == "v" and doc["compacted"] is True and doc["trigger"] == "dead_ratio", doc
    assert doc["reason"] == c["reason"] and doc["full"] is True, doc
    assert doc["segmentsIn"] == before["segments"] and doc["segmentsOut"] == len(files_after) - 1, (doc, files_after)
    assert doc["bytesBefore"] == size_before and doc["bytesAfter"] == size_after, doc
    # Inputs were every file but the new active segment, which is one empty header.
    assert doc["bytesReclaimed"] == size_before - (size_after - SEG_HEADER), doc
    assert doc["recordsCopied"] == n - len(gone), doc
    assert doc["tombstonesDropped"] == len(gone), doc
    assert doc["recordsDropped"] == 2 * len(gone), doc
    # the snake_case names docs/CLI.md documented before stay beside, deprecated, for one release
    for k in ("segments_in", "segments_out", "bytes_before", "bytes_after", "bytes_reclaimed", "records_copied",
              "records_dropped", "tombstones_dropped"):
        assert doc[k] == doc[re.sub(r"_(.)", lambda m: m.group(1).upper(), k)], (k, doc)
    assert 0 < doc["seconds"] < 60, doc

    assert after["liveRecords"] == n - len(gone) and after["liveBytes"] == before["liveBytes"], after
    assert after["deadRecords"] == 0 and after["deadBytes"] == 0 and after["tombstones"] == 0, after
    assert after["deadRatio"] == 0 and after["fileBytes"] == size_after, after
    assert after["segments"] == len(files_after) and after["lastLsn"] == before["lastLsn"], after
    assert after["compaction"] == {"due": False, "trigger": "none", "reason": "nothing to reclaim"}, after
    assert not stray_files(e), stray_files(e)

    check_same(e, want)
    for k in gone[:25]:
        e.fail(1, "get", "v", k, contains="not found")
    assert e.count() == n - len(gone)

    # Nothing left to do: a second run says so and touches no file.
    _, out, _ = e.run("compact", "v")
    assert out == "compaction of 'v' not needed: nothing to reclaim (--force compacts anyway)\n", out
    assert seg_files(e) == files_after
    # A deleted id comes back only when it is put again, with the new value.
    e.run("put", "v", gone[0], "--vector", ",".join(["1"] * dim))
    assert e.json("get", "v", gone[0]) == {"id": gone[0], "values": [1.0] * dim, "metadata": None}
    e.run("delete", "v", gone[0])
    check_same(e, want)


@test
def compact_text_output(e):
    e.create("v", 4)
    load(e, 1100, 4, meta=False)
    delete_ids(e, [f"r{i}" for i in range(0, 1100, 2)])
    _, out, err = e.run("compact", "v")
    lines = out.splitlines()
    assert err == "", err
    assert lines[0].startswith("compacted 'v': dead ratio "), lines
    keys = [line.split(":")[0] for line in lines[1:]]
    assert keys == ["trigger", "full", "segments", "bytes_before", "bytes_after", "bytes_reclaimed",
                    "records_copied", "records_dropped", "tombstones_dropped", "seconds"], keys
    assert "records_copied:     550" in out and "tombstones_dropped: 550" in out, out
    assert "segments:           " in out and " in, " in out and "KiB)" in out, out


# ---------------------------------------------------------------- when it is not needed

@test
def not_needed_and_force(e):
    e.create("v", 3)
    want = load(e, 10, 3)
    delete_ids(e, ["r1", "r2", "r3", "r4", "r5"])
    for k in ("r1", "r2", "r3", "r4", "r5"):
        del want[k]
    st = e.json("stats", "v")
    # 10 puts + 5 tombstones: under the policy's minimum of 1000 records.
    assert st["compaction"] == {"due": False, "trigger": "none", "reason": "15 records < min_records 1000"}, st
    files = seg_files(e)
    doc = e.json("compact", "v")
    assert doc["compacted"] is False and doc["trigger"] == "none", doc
    assert doc["reason"] == "15 records < min_records 1000", doc
    assert doc["recordsCopied"] == 0 and doc["bytesReclaimed"] == 0 and doc["segmentsIn"] == 0, doc
    assert seg_files(e) == files, "a compaction that was not needed changed the files"
    _, out, _ = e.run("compact", "v", "--full")
    assert out.startswith("compaction of 'v' not needed: 15 records < min_records 1000"), out

    doc = e.json("compact", "v", "--force")
    assert doc["compacted"] is True and doc["trigger"] == "forced", doc
    assert doc["reason"] == "forced; 15 records < min_records 1000", doc
    assert doc["recordsCopied"] == 5 and doc["tombstonesDropped"] == 5, doc
    assert doc["bytesReclaimed"] > 0 and doc["bytesAfter"] < doc["bytesBefore"], doc
    st = e.json("stats", "v")
    assert st["deadBytes"] == 0 and st["liveRecords"] == 5, st
    check_same(e, want)


# ---------------------------------------------------------------- partial and full

@test
def partial_then_full(e):
    dim = 8
    e.create("v", dim, "--segment-max-bytes", "16K")
    want = load(e, 1200, dim, batch=50)
    files0 = seg_files(e)
    # Deletes only among the first 300 ids: the segments holding the rest stay clean.
    gone = [f"r{i}" for i in range(0, 300) if i % 5 < 3]
    delete_ids(e, gone)
    for k in gone:
        del want[k]
    st = e.json("stats", "v")
    assert st["compaction"]["due"] is False and st["deadRatio"] < 0.30, st  # below the ratio...
    doc = e.json("compact", "v")
    assert doc["compacted"] is False, doc                                    # ...so nothing runs,
    doc = e.json("compact", "v", "--force")                                  # unless forced:
    assert doc["compacted"] is True and doc["full"] is False, doc
    assert 0 < doc["segmentsIn"] < st["segments"], (doc, st)
    files1 = seg_files(e)
    untouched = [n for n in files0 if n in files1]
    assert untouched, "partial compaction rewrote every segment"
    for n in untouched:
        assert files1[n] == files0[n], n
    assert doc["bytesReclaimed"] > 0 and doc["recordsDropped"] >= len(gone), doc
    check_same(e, want)

    doc = e.json("compact", "v", "--force", "--full")
    # Every file but the active segment, which the partial run left empty (an empty one is not sealed).
    assert doc["full"] is True and doc["segmentsIn"] == len(files1) - 1, (doc, files1)
    st = e.json("stats", "v")
    assert st["deadBytes"] == 0 and st["tombstones"] == 0, st  # with every segment in, tombstones go
    assert not [n for n in untouched if n in seg_files(e)], "--full left an old segment"
    check_same(e, want)
    for k in gone[:10]:
        e.fail(1, "get", "v", k, contains="not found")


# ---------------------------------------------------------------- runs that do not finish

@test
def max_seconds_changes_nothing(e):
    e.create("v", 4)
    want = load(e, 1500, 4)
    delete_ids(e, [f"r{i}" for i in range(0, 1500, 3)])
    for i in range(0, 1500, 3):
        del want[f"r{i}"]
    before, files = e.json("stats", "v"), seg_files(e)
    err = e.fail(1, "compact", "v", "--max-seconds", "0.000000001", contains="stopped after its limit")
    assert not stray_files(e), stray_files(e)
    after = e.json("stats", "v")
    for k in ("liveRecords", "deadRecords", "tombstones", "liveBytes", "deadBytes", "lastLsn"):
        assert after[k] == before[k], (k, before, after, err)
    # The active segment was sealed and a new one started; the data files themselves are as they were.
    assert all(seg_files(e).get(n) == size for n, size in files.items() if size > SEG_HEADER), (files, seg_files(e))
    check_same(e, want)
    assert e.json("compact", "v", "--max-seconds", "600")["compacted"] is True


def big_dirty_db(e, n, dim=128):
    """n vectors through fvecs (fast even under ASan), every other one deleted; sync never keeps the
    deletes from taking one fdatasync each."""
    e.create("v", dim, "--sync", "never")
    rng = random.Random(5)
    rows = [[rng.uniform(-1, 1) for _ in range(dim)] for _ in range(n)]
    write_fvecs(e.path("big.fvecs"), rows)
    e.run("import", "v", e.path("big.fvecs"), "--id-prefix", "b", "--batch", "5000")
    delete_ids(e, [f"b{i}" for i in range(0, n, 2)])
    return n // 2


@test
def ctrl_c_abandons_cleanly(e):
    live = big_dirty_db(e, 40000)
    before = e.json("stats", "v")
    cancelled = 0
    for attempt in range(3):
        p = subprocess.Popen([test_cli.JVDB, "--data", e.data, "compact", "v", "--force", "--full"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        # Interrupt while the output file is being written (or synced): that is the window that
        # would otherwise leave a temporary file behind.
        while p.poll() is None and not stray_files(e):
            time.sleep(0.0005)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=120)
        err = err.decode()
        for m in test_cli.SANITIZER_MARKERS:
            assert m not in err, err
        assert not stray_files(e), stray_files(e)
        if p.returncode == 0:
            continue  # finished before the signal arrived: try again
        assert p.returncode == 1 and "cancelled" in err and out == b"", (p.returncode, out, err)
        cancelled += 1
        st = e.json("stats", "v")
        assert st["liveRecords"] == live and st["deadBytes"] == before["deadBytes"], (before, st)
        break
    assert cancelled, "the compaction always finished before SIGINT arrived"
    assert e.count() == live


def run_crashing(e, point, *args):
    env = dict(os.environ, JVDB_CRASH_AT=point)
    p = subprocess.run([test_cli.JVDB, "--data", e.data, *args], env=env, capture_output=True, timeout=120)
    assert p.returncode == -signal.SIGKILL, (point, p.returncode, p.stderr.decode())


@test
def killed_compaction_loses_nothing(e):
    e.create("v", 6)
    want = load(e, 1500, 6)
    gone = [f"r{i}" for i in range(1, 1500, 2)]
    delete_ids(e, gone)
    for k in gone:
        del want[k]
    before = e.json("stats", "v")

    # Killed before the commit point: the old state, the output removed at the next open.
    run_crashing(e, "compact.before_swap", "compact", "v")
    # Read-only commands such as stats leave the files alone (issue 9); the next command that opens
    # the database for writing recovers it.  `db repair` of an undamaged database does only that.
    e.run("db", "repair", "v")
    st = e.json("stats", "v")
    assert not stray_files(e) and len(seg_files(e)) == st["segments"], (seg_files(e), st)
    assert st["liveRecords"] == before["liveRecords"] and st["deadBytes"] == before["deadBytes"], st
    assert st["compaction"]["due"] is True, st
    check_same(e, want)

    # Killed just after it: the new state, the inputs removed at the next open.
    run_crashing(e, "compact.after_swap", "compact", "v")
    e.run("db", "repair", "v")
    st = e.json("stats", "v")
    assert not stray_files(e) and len(seg_files(e)) == st["segments"], (seg_files(e), st)
    assert st["deadBytes"] == 0 and st["liveRecords"] == before["liveRecords"], st
    assert st["fileBytes"] == sum(seg_files(e).values()), st
    check_same(e, want)
    for k in gone[:20]:
        e.fail(1, "get", "v", k, contains="not found")


# ---------------------------------------------------------------- command line

@test
def help_and_usage(e):
    _, out, _ = e.run("--help", data=False)
    assert "  compact  reclaim the space of deleted vectors" in out, out
    _, out, _ = e.run("compact", "--help")
    assert out.startswith("Usage: jvdb [--data DIR] compact NAME [--force] [--full]"), out
    _, out2, _ = e.run("help", "compact")
    assert out2 == out
    _, out, _ = e.run("stats", "--help")
    assert "compaction is due" in out, out
    e.fail(2, "compact", contains="missing argument")
    e.fail(2, "compact", "v", "w", contains="unexpected argument 'w'")
    e.fail(2, "compact", "v", "--fast", contains="unknown option '--fast'")
    e.fail(2, "compact", "v", "--force=yes", contains="takes no value")
    for bad in ("abc", "0", "-1", "inf", "nan", "1s"):
        e.fail(2, "compact", "v", "--max-seconds", bad, contains=f"--max-seconds '{bad}'")
    assert not os.path.exists(e.data), "a usage error must not create the data directory"
    e.fail(1, "compact", "nosuch", contains="does not exist")
    assert not os.path.exists(e.data), "a missing data directory must not be created"
    e.create("v", 2)
    e.fail(1, "compact", "nosuch", contains="nosuch")


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    # test_cli's runner (fresh Env per test, JVDB_CLI_TEST=name to run one) over this file's tests.
    test_cli.TESTS[:] = TESTS
    return test_cli.main()


if __name__ == "__main__":
    sys.exit(main())
