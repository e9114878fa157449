#!/usr/bin/env python3
"""test_commit_points.py JVDB [CASE...] — crashes at the commit points of removals and declarations.

Each case kills the jvdb program (SIGKILL through JVDB_CRASH_AT, test-hook builds) at the crash
points of one commit (docs/ARCHITECTURE.md section 5) and checks what the next run finds:

  db_drop               db.drop.before_rename / after_rename      jvdb db drop (store/env.c)
  db_drop_unsynced      JVDB_FAULT=sync at every sync of a drop   the fsync after its rename
  backup_delete         backup.delete.before_rename / after_rename  jvdb backup delete (repo_fs.c)
  payload_declarations  manifest.before_rename / after_rename     jvdb index payload create / drop
  jobs_set_aside        a corrupt <data>/server/jobs.state, server.jobs.after_set_aside, a rename fault

The last line is "N passed, N failed".
"""
import json
import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
sys.path.insert(0, os.path.join(HERE, "..", "backup"))
import jvdbtest  # noqa: E402
from jvdbtest import Server, expect  # noqa: E402
import test_backup_cli as harness  # noqa: E402
from test_backup_cli import Env, expected, rows_for  # noqa: E402


def killed(p, point):
    """Asserts the command died at its crash point."""
    assert p.returncode == -signal.SIGKILL, (point, p.returncode, p.stdout, p.stderr)


def hidden(d, prefix):
    """The names in directory d that start with prefix."""
    return sorted(n for n in os.listdir(d) if n.startswith(prefix)) if os.path.isdir(d) else []


def db_names(e):
    """The databases `jvdb db list` shows (a read-only open: it removes nothing)."""
    return sorted(json.loads(e.run("db", "list", "--json").stdout)["databases"])


def db_drop():
    """A drop killed before its rename leaves the database whole; after it, the database is gone
    and its .drop- directory (all its files) is removed by the next writable open, never half."""
    for point in ("db.drop.before_rename", "db.drop.after_rename"):
        e = Env(JVDB)
        try:
            rows = rows_for(range(200), 4, 1)
            for name in ("d", "keep"):
                e.run("db", "create", name, "--dim", 4)
                e.import_rows(name, rows)
            dbdir = os.path.join(e.data, "databases")
            killed(e.run("db", "drop", "d", crash_at=point, expect=None), point)
            if point == "db.drop.before_rename":
                assert db_names(e) == ["d", "keep"] and hidden(dbdir, ".drop-") == [], point
                assert e.contents("d") == expected(rows), f"{point}: d is not whole"
            else:
                assert db_names(e) == ["keep"], (point, db_names(e))
                left = hidden(dbdir, ".drop-")
                assert len(left) == 1 and os.path.exists(os.path.join(dbdir, left[0], "MANIFEST")), (point, left)
                e.run("db", "info", "d", expect=1)
                e.run("db", "create", "other", "--dim", 4)   # a writable open cleans up
                assert hidden(dbdir, ".drop-") == [], f"{point}: the leftover was not removed"
                e.run("db", "create", "d", "--dim", 4)   # the name is free again
                assert e.contents("d") == {}, point
            assert e.contents("keep") == expected(rows), f"{point}: another database changed"
            e.run("db", "drop", "d")
            assert "d" not in db_names(e) and hidden(dbdir, ".drop-") == [], point
        finally:
            e.close()


def db_drop_unsynced():
    """A drop whose data-directory fsync fails after the rename says so (exit 1): the database is
    gone, its files wait for the next open.  Every sync of the drop fails in turn; whatever fails,
    the database is whole or gone, and the fsync after the rename is among those that report."""
    after_rename = 0
    for skip in range(12):
        e = Env(JVDB)
        try:
            rows = rows_for(range(50), 4, 1)
            e.run("db", "create", "d", "--dim", 4)
            e.import_rows("d", rows)
            dbdir = os.path.join(e.data, "databases")
            e.env["JVDB_FAULT"] = f"sync:EIO:{skip}"
            p = e.run("db", "drop", "d", expect=None)
            e.env.pop("JVDB_FAULT")
            names = db_names(e)
            if p.returncode == 0:
                assert names == [] and hidden(dbdir, ".drop-") == [], (skip, names)
                continue
            assert p.returncode == 1 and "jvdb:" in p.stderr, (skip, p.returncode, p.stderr)
            if names == ["d"]:
                assert e.contents("d") == expected(rows), f"sync fault {skip}: d is not whole"
            else:
                assert names == [], (skip, names)
                assert "may not survive a crash" in p.stderr and "removed at the next open" in p.stderr, p.stderr
                assert len(hidden(dbdir, ".drop-")) == 1, (skip, hidden(dbdir, ".drop-"))
                e.run("db", "create", "other", "--dim", 4)
                assert hidden(dbdir, ".drop-") == [], skip
                after_rename += 1
        finally:
            e.close()
    assert after_rename == 1, f"{after_rename} sync faults failed the drop after its rename (want 1)"


def restorable(e, bid, rows):
    """Asserts backup bid verifies and restores to rows."""
    assert "intact" in e.bk("verify", bid).stdout, bid
    e.run("db", "drop", "r", expect=None)
    e.bk("restore", bid, "--as", "r")
    assert e.contents("r") == expected(rows), f"backup {bid} does not restore its rows"


def backup_delete():
    """`backup delete --cascade` of a full backup with an incremental child, killed before and after
    each rename (the child's first, then the parent's): every backup is listed and restorable or
    not listed, the others still list and verify, and a later prune or create removes the .del-."""
    for point in ("backup.delete.before_rename", "backup.delete.after_rename",
                  "backup.delete.before_rename:2", "backup.delete.after_rename:2"):
        e = Env(JVDB)
        try:
            e.run("db", "create", "d", "--dim", 4)
            e.run("db", "create", "o", "--dim", 4)
            r1, r2 = rows_for(range(60), 4, 1), rows_for(range(40, 90), 4, 2)
            e.import_rows("d", r1)
            e.import_rows("o", r1)
            full = e.bk_json("create", "d")["backupId"]
            e.import_rows("d", r2)
            inc = e.bk_json("create", "d", "--type", "incremental")["backupId"]
            other = e.bk_json("create", "o")["backupId"]
            state = dict(r1)
            state.update(r2)
            killed(e.bk("delete", full, "--cascade", crash_at=point, expect=None), point)
            listed = [b["backupId"] for b in e.listing("d")]
            gone = {"backup.delete.before_rename": [], "backup.delete.after_rename": [inc],
                    "backup.delete.before_rename:2": [inc], "backup.delete.after_rename:2": [inc, full]}[point]
            assert listed == [b for b in (full, inc) if b not in gone], (point, listed)
            want = {full: r1, inc: state}
            for bid in listed:
                restorable(e, bid, want[bid])
            everything = sorted(b["backupId"] for b in e.listing())
            assert everything == sorted(listed + [other]), (point, everything)
            restorable(e, other, r1)
            out = e.bk("verify", "--all").stdout
            assert out.endswith("0 bad\n") and out.count("ok   ") == len(everything), (point, out)
            repo_d = os.path.join(e.repo, "d")
            left = hidden(repo_d, ".del-")
            assert len(left) == (1 if "after" in point else 0), (point, left)
            # A later prune of the database removes it (and so does a create, checked below).
            e.bk("prune", "d", "--keep", 5)
            assert hidden(repo_d, ".del-") == [], f"{point}: the leftover stayed after a prune"
            e.bk("create", "d")
            # The delete completes when run again.
            if listed:
                e.bk("delete", listed[0], "--cascade")
            assert [b["backupId"] for b in e.listing("d") if b["backupId"] in (full, inc)] == [], point
            assert hidden(repo_d, ".del-") == [] and hidden(repo_d, ".tmp-") == [], point
            if "after" in point:   # a create alone removes a leftover too
                last = e.listing("d")[-1]["backupId"]
                killed(e.bk("delete", last, crash_at="backup.delete.after_rename", expect=None), point)
                assert len(hidden(repo_d, ".del-")) == 1 and last not in [b["backupId"] for b in e.listing("d")]
                e.bk("create", "d")
                assert hidden(repo_d, ".del-") == [], f"{point}: the leftover stayed after a create"
        finally:
            e.close()


def filtered(e, flt):
    """The ids of the exact filtered search (k large enough to return every match)."""
    out = e.run("search", "d", "--k", 1000, "--json", "--filter", json.dumps(flt), "--vector", "1,0,0,0").stdout
    return sorted(r["vectorId"] for r in json.loads(out)["results"])


def declared(e):
    """The payload index declarations `index payload list` shows."""
    out = json.loads(e.run("index", "payload", "list", "d", "--json").stdout)["payloadIndexes"]
    return {x["field"]: x["type"] for x in out}


def payload_declarations():
    """`index payload create` and `drop` killed before and after their MANIFEST replacement: the
    declarations are the old or the new set, the MANIFEST whole, and filtered searches answer as
    without an index."""
    rows = rows_for(range(300), 4, 1)
    want_tag = sorted(k for k, (v, m) in rows.items() if m and m["tag"] == "t2")
    want_n = sorted(k for k, (v, m) in rows.items() if m and 50 <= m["n"] < 120)
    for point in ("manifest.before_rename", "manifest.after_rename"):
        e = Env(JVDB)
        try:
            e.run("db", "create", "d", "--dim", 4)
            e.import_rows("d", rows)
            e.run("index", "payload", "create", "d", "n", "--type", "numeric")
            mf = os.path.join(e.data, "databases", "d", "MANIFEST")
            steps = ((("create", "d", "tag", "--type", "keyword"), {"n": "numeric"}, {"n": "numeric", "tag": "keyword"}),
                     (("drop", "d", "n"), None, {"tag": "keyword"}))
            for args, old, new in steps:
                old = old or declared(e)
                killed(e.run("index", "payload", *args, crash_at=point, expect=None), point)
                if point == "manifest.before_rename":
                    # The crash was at this declaration's replacement: its .tmp holds the new set.
                    tmp = open(mf + ".tmp").read()
                    assert json.loads(tmp.split("\n")[0])["payload_indexes"] == new, (point, args, tmp)
                    assert declared(e) == old, (point, args, declared(e))
                else:
                    assert declared(e) == new, (point, args, declared(e))
                assert filtered(e, {"tag": "t2"}) == want_tag, (point, args)
                assert filtered(e, {"n": {"$gte": 50, "$lt": 120}}) == want_n, (point, args)
                # Finish the step, so the next one starts from the new set.
                e.run("index", "payload", *args, expect=None)
                assert declared(e) == new, (point, args)
            # The server builds the index at its start and answers the same.
            s = Server(root=e.root, data=e.data, env=dict(e.env))
            try:
                s.start()
                c = s.client()
                got = expect(c.post("/v1/databases/d/search", {"queryVector": [1, 0, 0, 0], "topK": 1000,
                                                              "filters": {"tag": "t2"}}), 200)
                assert sorted(r["vectorId"] for r in got["results"]) == want_tag, point
                s.stop()
            finally:
                s.cleanup()
        finally:
            e.close()


def jobs_set_aside():
    """A server started on an unreadable jobs.state sets it aside (renamed, synced) and says so;
    killed right after that rename it starts next time; a failing rename is reported as such."""
    for case in ("corrupt", "crash", "rename_fault"):
        s = Server()
        try:
            state = os.path.join(s.data, "server", "jobs.state")
            s.start()
            expect(s.client().post("/v1/databases", {"name": "a", "vectorDimension": 4}), 201)
            s.stop()
            with open(state, "w") as f:
                f.write('{"jobs": [{"jobId": "j1"')   # torn JSON
            aside = state + ".unreadable"
            if case == "crash":
                s.env["JVDB_CRASH_AT"] = "server.jobs.after_set_aside"
                try:
                    s.start()
                    raise AssertionError("the server did not stop at server.jobs.after_set_aside")
                except AssertionError as err:
                    assert "exited with -9" in str(err), err
                s.stop(expect=None)
                del s.env["JVDB_CRASH_AT"]
                assert not os.path.exists(state) and os.path.exists(aside), case
            if case == "rename_fault":
                s.env["JVDB_FAULT"] = "rename:EIO:0"
            s.start()
            log = s.log()
            if case == "rename_fault":
                assert "could not be set aside" in log and "cannot rename" in log, log[-3000:]
                assert open(state).read() == '{"jobs": [{"jobId": "j1"', "the unreadable file changed"
                assert not os.path.exists(aside), case
            else:
                if case == "corrupt":
                    assert "set aside as " + aside in log, log[-3000:]
                assert open(aside).read() == '{"jobs": [{"jobId": "j1"', case
            c = s.client()
            assert expect(c.get("/v1/jobs"), 200)["jobs"] == [], case
            expect(c.get("/v1/databases/a"), 200)
            s.stop()
            s.env.pop("JVDB_FAULT", None)
            # The next start reads no record (or sets the file aside now) and warns no more after.
            s.start()
            assert ("set aside as" in s.log()) == (case == "rename_fault"), (case, s.log()[-2000:])
            s.stop()
            s.start()
            assert "unreadable" not in s.log(), (case, s.log()[-2000:])
            s.stop()
        finally:
            s.cleanup()


if __name__ == "__main__":
    JVDB = os.path.abspath(sys.argv[1])
    jvdbtest.JVDB = JVDB
    wanted = set(sys.argv[2:])
    for t in (db_drop, db_drop_unsynced, backup_delete, payload_declarations, jobs_set_aside):
        if not wanted or t.__name__ in wanted:
            harness.test(t)
    print(f"{harness.passed} passed, {harness.failed} failed")
    sys.exit(1 if harness.failed else 0)
