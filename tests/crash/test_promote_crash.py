#!/usr/bin/env python3
"""Crash points of a promote (issue 13): a read replica (`serve --follow R`) is killed
(JVDB_CRASH_AT, SIGKILL) in the middle of POST /v1/admin/promote -- after claiming the next epoch
of the log, after writing the lease that fences the old primary, before a database's MANIFEST stops
naming it a replica, and right after that MANIFEST change -- on the first or the second of its two
databases.  After the kill:

- restarted with --follow, a replica whose databases were not yet promoted is still a read-only
  replica holding everything it had, and a second promote finishes the job;
- restarted without --follow but with --backup-repo (the documented way to promote a stopped
  replica that goes on backing up), every database is a writable primary holding everything it had, whatever mix of promoted and unpromoted the kill left;
- either way the old primary is fenced at its next shipment (it never goes on writing to the log
  next to the new primary).

usage: test_promote_crash.py PATH_TO_JVDB
"""
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))
import jvdbtest  # noqa: E402
from jvdbtest import Client, Server, expect, test  # noqa: E402

DBS = ("a", "b")


def wait(what, fn, timeout=60):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


def contents(c, db):
    """Every vector of db as {id: values} through the scroll route."""
    out, cursor = {}, None
    while True:
        body = {"limit": 1000, "includeValues": True}
        if cursor:
            body["cursor"] = cursor
        r = expect(c.post("/v1/databases/%s/vectors/scroll" % db, body), 200).json
        out.update({v["id"]: v["values"] for v in r["vectors"]})
        cursor = r.get("nextCursor")
        if not cursor:
            return out


def last_lsn(c, db):
    r = c.get("/v1/databases/%s/stats" % db)
    return r.json["lastLsn"] if r.status == 200 else None


def setup():
    """A primary shipping every 100 ms with two databases, and a replica that holds all of them."""
    p = Server(args=["--compaction-interval", "0"])
    repo = os.path.join(p.root, "repo")
    p.args += ["--backup-repo", repo, "--backup-continuous", "100ms", "--backup-lease", "1s"]
    r = Server(root=p.root, data=os.path.join(p.root, "replica"),
               args=["--follow", repo, "--follow-interval", "100ms", "--compaction-interval", "0"])
    p.start()
    pc = Client(p.port)
    for db in DBS:
        expect(pc.post("/v1/databases", {"name": db, "vectorDimension": 3}), 201)
        vecs = [{"id": "%s%d" % (db, i), "values": [i, 1.0, -i]} for i in range(50)]
        expect(pc.post("/v1/databases/%s/vectors/batch" % db, {"vectors": vecs}), 201)
    want = {db: contents(pc, db) for db in DBS}
    # The replica refuses a repository that does not exist yet: wait for the first shipments.
    for db in DBS:
        wait("%s shipped" % db, lambda: re.search(r'jvdb_backup_ship_shipped_lsn\{database="%s"\} [1-9]' % db,
                                                  pc.get("/metrics").raw.decode()))
    return p, r, pc, want


def replica_holds(c, want):
    return all(last_lsn(c, db) is not None and contents(c, db) == want[db] for db in want)


def promote_killed_at(r, point, want):
    """Starts the replica with the crash point armed, waits until it holds everything, promotes."""
    r.env["JVDB_CRASH_AT"] = point
    r.start()
    rc = Client(r.port)
    wait("the replica to hold what the primary acknowledged", lambda: replica_holds(rc, want))
    try:
        resp = rc.request("POST", "/v1/admin/promote", None, retry=False)
        raise AssertionError("the promote answered %s instead of dying at %s" % (resp.status, point))
    except OSError:
        pass
    assert r.stop(sig=0, expect=None) == -9, "the replica was not killed at %s:\n%s" % (point, r.log()[-3000:])
    del r.env["JVDB_CRASH_AT"]


def old_primary_is_fenced(p, pc):
    expect(pc.post("/v1/databases/a/vectors", {"id": "late", "values": [9, 9, 9]}), 201)
    wait("the old primary fenced", lambda: "fenced" in p.log(), timeout=30)


def writable_with(c, want):
    for db in DBS:
        assert contents(c, db) == want[db], "database %s lost or changed vectors in the promote" % db
        expect(c.post("/v1/databases/%s/vectors" % db, {"id": "new", "values": [1, 2, 3]}), 201)
        assert "replicationLagSeconds" not in expect(c.get("/v1/databases/%s/stats" % db), 200).json


def restarted_as_primary(point):
    p, r, pc, want = setup()
    try:
        promote_killed_at(r, point, want)
        # With the repository named, so that it can fence the old primary if the kill came before that.
        r.args = ["--compaction-interval", "0", "--backup-repo", os.path.join(p.root, "repo")]
        r.start()
        writable_with(Client(r.port), want)
        old_primary_is_fenced(p, pc)
        # Stays a primary across a plain restart.
        r.stop()
        r.start()
        writable_with(Client(r.port), {db: dict(want[db], new=[1.0, 2.0, 3.0]) for db in DBS})
    finally:
        r.cleanup()
        p.cleanup()


@test
def killed_after_claiming_the_epoch_then_started_as_primary():
    restarted_as_primary("ship.after_claim:1")


@test
def killed_after_writing_the_lease_then_started_as_primary():
    restarted_as_primary("ship.after_lease:1")


@test
def killed_before_the_first_manifest_then_started_as_primary():
    restarted_as_primary("promote.before_manifest:1")


@test
def killed_after_the_first_manifest_then_started_as_primary():
    restarted_as_primary("promote.after_manifest:1")


@test
def killed_before_the_second_manifest_then_started_as_primary():
    restarted_as_primary("promote.before_manifest:2")


@test
def killed_before_any_manifest_then_still_a_replica():
    p, r, pc, want = setup()
    try:
        promote_killed_at(r, "promote.before_manifest:1", want)
        r.start()
        rc = Client(r.port)
        wait("the restarted replica to hold everything", lambda: replica_holds(rc, want))
        expect(rc.post("/v1/databases/a/vectors", {"id": "x", "values": [1, 2, 3]}), 403, "READ_ONLY")
        expect(rc.post("/v1/admin/promote"), 200)
        writable_with(rc, want)
        old_primary_is_fenced(p, pc)
    finally:
        r.cleanup()
        p.cleanup()


if __name__ == "__main__":
    sys.exit(jvdbtest.run_tests(sys.argv))
