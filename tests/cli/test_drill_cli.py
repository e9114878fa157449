#!/usr/bin/env python3
"""Restore drills, `jvdb backup drill` (issue 13), driven through the jvdb program.  python3
standard library only.

Usage: test_drill_cli.py PATH_TO_JVDB

  passes_on_a_good_backup        unchanged source: every record and sampled search compared, PASS,
                                 exit 0, and nothing written to the data directory or repository
  later_writes_are_not_failures  writes after the backup are counted as changed, the drill passes
  fails_when_contents_differ     a source of the same name and LSNs but other values: FAIL, exit 1,
                                 the first differing id named
  fails_on_a_damaged_archive     a flipped byte in the archive: the restore fails, so does the drill
  errors                         no backup, bad --queries, missing --database; --no-source
The last line printed is "N passed, N failed".
"""
import hashlib
import json
import os
import random
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_cli  # noqa: E402  (the harness: Env, the test runner)
from test_cli import f32, test, write_jsonl  # noqa: E402

test_cli.TESTS.clear()  # run only the cases below
DIM = 6


def fill(e, name="docs", n=400, seed=1, start=0):
    # Embedding-like rows: test_cli.random_rows spans 20 orders of magnitude, which makes the restored
    # index's recall (reported by the drill, not judged) meaningless.
    rnd = random.Random(seed)
    rows = [[f32(rnd.uniform(-1, 1)) for _ in range(DIM)] for _ in range(n)]
    path = e.path(f"rows-{seed}-{start}.jsonl")
    write_jsonl(path, [{"id": f"v{start + i}", "values": r, "metadata": {"i": start + i, "seed": seed}}
                       for i, r in enumerate(rows)])
    e.run("import", name, path)


def tree_digest(root):
    files = {}
    for d, _, names in os.walk(root):
        for n in names:
            p = os.path.join(d, n)
            with open(p, "rb") as f:
                files[os.path.relpath(p, root)] = hashlib.sha256(f.read()).hexdigest()
    return files


@test
def passes_on_a_good_backup(e):
    e.create("docs", DIM, "--metric", "l2")
    fill(e)
    repo = e.path("repo")
    e.run("backup", "create", "docs", "--repo", repo)
    before = (tree_digest(e.data), tree_digest(repo))
    scratch = e.path("scratch")
    os.mkdir(scratch)
    r = e.json("backup", "drill", "--database", "docs", "--repo", repo, "--scratch", scratch, "--queries", "25")
    assert r["passed"] and r["failure"] == "", r
    assert r["sourceUnchanged"] and r["restoredVectors"] == 400 and r["checkedRecords"] == 400, r
    assert r["missing"] == r["differing"] == r["notInSource"] == r["changedSince"] == 0, r
    assert r["queries"] == r["queriesCompared"] == r["queriesEqual"] == 25, r
    assert r["settingsMatch"] and r["indexRecall"] > 0.9, r
    assert (tree_digest(e.data), tree_digest(repo)) == before, "a drill changed the data directory or repository"
    assert os.listdir(scratch) == [], "the scratch directory was left behind"
    _, out, _ = e.run("backup", "drill", "--database", "docs", "--repo", repo)
    assert out.startswith("drill of 'docs': PASS"), out
    assert "400 identical" in out, out


@test
def later_writes_are_not_failures(e):
    e.create("docs", DIM, "--metric", "l2")
    fill(e)
    repo = e.path("repo")
    e.run("backup", "create", "docs", "--repo", repo)
    fill(e, n=50, seed=2, start=390)        # 10 overwritten, 40 new
    e.run("delete", "docs", "v0")
    r = e.json("backup", "drill", "--database", "docs", "--repo", repo)
    assert r["passed"], r
    assert not r["sourceUnchanged"] and r["changedSince"] == 50, r
    assert r["checkedRecords"] == 400 - 10 - 1 and r["notInSource"] == 1, r
    assert r["queriesCompared"] == 0, r


@test
def fails_when_contents_differ(e):
    e.create("docs", DIM, "--metric", "l2")
    fill(e)
    repo = e.path("repo")
    e.run("backup", "create", "docs", "--repo", repo)
    # Same name, same LSNs, other values: what a drill exists to catch.
    e.run("db", "drop", "docs")
    e.create("docs", DIM, "--metric", "l2")
    fill(e, seed=3)
    rc, out, _ = e.run("backup", "drill", "--database", "docs", "--repo", repo, "--json", expect=1)
    r = json.loads(out)
    assert not r["passed"] and r["sourceUnchanged"] and r["differing"] == 400, r
    assert "different from the source" in r["failure"] and "came back different" in r["failure"], r
    _, out, _ = e.run("backup", "drill", "--database", "docs", "--repo", repo, expect=1)
    assert out.startswith("drill of 'docs': FAIL") and "failure:" in out, out


@test
def fails_on_a_damaged_archive(e):
    e.create("docs", DIM, "--metric", "l2")
    fill(e)
    repo = e.path("repo")
    e.run("backup", "create", "docs", "--repo", repo)
    archives = [os.path.join(d, n) for d, _, ns in os.walk(repo) for n in ns if n.startswith("data")]
    assert archives, list(os.walk(repo))
    with open(archives[0], "r+b") as f:
        f.seek(os.path.getsize(archives[0]) // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x40]))
    _, out, _ = e.run("backup", "drill", "--database", "docs", "--repo", repo, expect=1)
    assert out.startswith("drill of 'docs': FAIL") and "the restore failed" in out, out
    _, out, _ = e.run("backup", "drill", "--database", "docs", "--repo", repo, "--json", expect=1)
    r = json.loads(out)
    assert r["restoreFailed"] and not r["passed"] and r["restoredVectors"] == 0, r


@test
def errors(e):
    e.create("docs", DIM, "--metric", "l2")
    fill(e, n=20)
    repo = e.path("repo")
    e.run("backup", "create", "docs", "--repo", repo)
    e.fail(2, "backup", "drill", "--repo", repo, contains="--database NAME is required")
    e.fail(2, "backup", "drill", "--database", "docs", "--repo", repo, "--queries", "5000", contains="bad --queries")
    e.create("other", DIM)
    e.fail(1, "backup", "drill", "--database", "other", "--repo", repo, contains="no restorable backup")
    e.fail(1, "backup", "drill", "--database", "docs", "--repo", e.path("nope"), contains="does not exist")
    # On another machine: no live database to compare with.
    _, out, _ = e.run("backup", "drill", "--database", "docs", "--repo", repo, "--no-source", "--json",
                      data=e.path("elsewhere"))
    r = json.loads(out)
    assert r["passed"] and r["restoredVectors"] == 20 and r["checkedRecords"] == 0, r
    assert not os.path.exists(e.path("elsewhere")), "--no-source created a data directory"


if __name__ == "__main__":
    sys.exit(test_cli.main())
