#!/usr/bin/env python3
"""Crash points of continuous backup (issue 13): `jvdb serve --backup-continuous` is killed
(JVDB_CRASH_AT, SIGKILL) at every commit step of a shipment -- the log object built, its temp file
written, renamed, acknowledged; the lease written and read back; the shipped LSN going to the
MANIFEST -- while a client writes; then restarted without the crash point.  After the restart the
server must ship on: the log, followed from its base backup, holds every LSN the database has up to
its last one exactly once (no gap, no duplicate, no record twice), every acknowledged write is in
the database, and no two objects of one epoch start at the same LSN.  Random SIGKILLs during the
stream are checked the same way.

usage: test_ship_crash.py PATH_TO_JVDB
"""
import os
import random
import signal
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "e2e"))
import jvdbtest  # noqa: E402
import shiplog  # noqa: E402
from shiplog import wait_for  # noqa: E402
from jvdbtest import Client, Server, expect, test  # noqa: E402

DIM = 3
ARGS = ["--backup-continuous", "50ms", "--backup-lease", "1s"]


class Writer(threading.Thread):
    """Writes batches of fresh ids until the server goes away; remembers what was acknowledged."""

    def __init__(self, port, db, prefix):
        super().__init__(daemon=True)
        self.port, self.db, self.prefix = port, db, prefix
        self.acked, self.stop = [], False

    def run(self):
        c = Client(self.port, timeout=5)
        k = 0
        while not self.stop:
            ids = ["%s%d-%d" % (self.prefix, k, i) for i in range(1 + k % 4)]
            body = {"vectors": [{"id": x, "values": [k, i, 1.0]} for i, x in enumerate(ids)]}
            try:
                r = c.request("POST", "/v1/databases/%s/vectors/batch" % self.db, body, retry=False)
            except Exception:
                return
            if r.status != 201:
                return
            self.acked += ids
            k += 1
            time.sleep(0.005)


def shipped(c, db):
    import re
    m = re.search(r'jvdb_backup_ship_shipped_lsn\{database="%s"\} (\d+)' % db, c.get("/metrics").raw.decode())
    return int(m[1]) if m else None


def verify(s, repo, db, acked):
    """Restarted server: ship on, then check the log against the database."""
    c = Client(s.port)
    w = Writer(s.port, db, "after")
    w.start()
    time.sleep(0.3)
    w.stop = True
    w.join()
    last = expect(c.get("/v1/databases/%s/stats" % db), 200).json["lastLsn"]
    wait_for(lambda: shipped(c, db) == last, "shipped LSN %d after the restart" % last, timeout=30)
    backups = shiplog.backups(repo, db)
    assert backups
    objs = shiplog.objects(repo, db)
    seen = set()
    for e in objs:
        key = (e["incarnation"], e["lsn_from"], e["epoch"])
        assert key not in seen, "two objects of epoch %d start at LSN %d" % (e["epoch"], e["lsn_from"])
        seen.add(key)
    # From the first backup: every later LSN exactly once (shiplog.follow asserts density).
    first = backups[0]
    recs = shiplog.follow(repo, db, DIM, first["incarnation"], first["lsn_to"])
    assert (recs[-1]["lsn"] if recs else first["lsn_to"]) == last, (len(recs), last)
    ids = [r["id"] for r in recs]
    assert len(ids) == len(set(ids)), "a record twice in the log"
    for x in acked[-20:] + w.acked[-5:]:
        expect(c.get("/v1/databases/%s/vectors/%s" % (db, x)), 200)
    return len(recs)


def crash_run(point, nth=1):
    s = Server(args=ARGS)
    repo = os.path.join(s.root, "repo")
    s.args += ["--backup-repo", repo]
    try:
        s.start()
        c = Client(s.port)
        expect(c.post("/v1/databases", {"name": "c", "vectorDimension": DIM, "distanceMetric": "euclidean"}), 201)
        s.stop()
        s.env["JVDB_CRASH_AT"] = "%s:%d" % (point, nth)
        w = Writer(0, "c", "w")
        try:
            s.start()
        except AssertionError:
            # The shipper starts before the listener: an early point can kill the server first.
            assert s.proc and s.proc.returncode == -signal.SIGKILL, s.log()
        else:
            w = Writer(s.port, "c", "w")
            w.start()
        try:
            rc = s.proc.wait(20)
        except Exception:
            raise AssertionError("crash point %s:%d was not reached in 20 s" % (point, nth))
        w.stop = True
        if w.is_alive():
            w.join()
        assert rc == -signal.SIGKILL, "server exit %s at %s" % (rc, point)
        s.stop(expect=None)
        del s.env["JVDB_CRASH_AT"]
        s.start()
        n = verify(s, repo, "c", w.acked)
        s.stop()
        return n
    finally:
        s.cleanup()


POINTS = [
    ("ship.after_lease", 1), ("ship.lease.before_rename", 1), ("ship.lease.after_rename", 1),
    ("ship.claim.after_link", 1), ("ship.after_claim", 1),
    ("ship.before_pin", 1), ("ship.after_pin", 1),
    ("ship.before_object", 1), ("ship.object.before_rename", 1), ("ship.object.after_rename", 1),
    ("ship.after_object", 1), ("ship.before_object", 3), ("ship.object.before_rename", 4),
    ("ship.object.after_rename", 5), ("ship.after_object", 6),
]


def make_point_test(point, nth):
    def fn():
        crash_run(point, nth)
    fn.__name__ = "crash_at_%s_%d" % (point.replace(".", "_"), nth)
    return fn


for p, k in POINTS:
    test(make_point_test(p, k))


@test
def random_kills_during_a_stream():
    """SIGKILL at random moments of a stream of writes, carried over from kill to kill."""
    rng = random.Random(int(os.environ.get("JVDB_CRASH_SEED", "4242")))
    s = Server(args=ARGS)
    repo = os.path.join(s.root, "repo")
    s.args += ["--backup-repo", repo]
    try:
        s.start()
        c = Client(s.port)
        expect(c.post("/v1/databases", {"name": "k", "vectorDimension": DIM, "distanceMetric": "euclidean"}), 201)
        acked = []
        for round_ in range(6):
            w = Writer(s.port, "k", "r%d-" % round_)
            w.start()
            time.sleep(rng.uniform(0.1, 0.8))
            s.proc.send_signal(signal.SIGKILL)
            s.proc.wait()
            w.stop = True
            w.join()
            acked += w.acked
            s.stop(expect=None)
            s.start()
        verify(s, repo, "k", acked)
        s.stop()
    finally:
        s.cleanup()


if __name__ == "__main__":
    sys.exit(jvdbtest.run_tests(sys.argv))
