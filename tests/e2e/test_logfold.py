"""Log folding in continuous backup (issue 13): once the log after the newest backup passes
--backup-log-fold-objects or --backup-log-fold-bytes, the shipper takes an incremental backup
(logged at info with the reason, counted in /metrics), `restore --latest` starts from it and applies
only the log after it, restores to points before it still equal the model, and with
--backup-retention the log objects it covers go once they are older than the window while every
point inside the window stays restorable.

usage: test_logfold.py PATH_TO_JVDB
"""
import json
import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jvdbtest  # noqa: E402
import shiplog  # noqa: E402
from shiplog import wait_for  # noqa: E402
from jvdbtest import Client, Server, expect, test  # noqa: E402

DIM = 3


def cli(*args, data, expect_rc=0):
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    p = subprocess.run([jvdbtest.JVDB, "--data", data] + [str(a) for a in args], capture_output=True, text=True,
                       env=env, timeout=120)
    if expect_rc is not None:
        assert p.returncode == expect_rc, (args, p.returncode, p.stdout, p.stderr)
    return p


def stats(c, db):
    return expect(c.get("/v1/databases/%s/stats" % db), 200).json


def shipped(c, db):
    m = c.get("/metrics").raw.decode()
    hit = re.search(r'jvdb_backup_ship_shipped_lsn\{database="%s"\} ([0-9]+)' % db, m)
    return int(hit[1]) if hit else None


class Model:
    """The database's contents after every batch: marks of (lsn, {id: values}), and when each batch
    began (its records' time is not earlier)."""

    def __init__(self, c, db):
        self.c, self.db, self.live, self.marks, self.began = c, db, {}, [], []

    def batch(self, k):
        self.began.append(time.time_ns())
        vecs = [{"id": "v%d" % ((k * 7 + i) % 40), "values": [k + 1, i, -k]} for i in range(5)]
        expect(self.c.post("/v1/databases/%s/vectors/batch" % self.db, {"vectors": vecs}), 201)
        for v in vecs:
            self.live[v["id"]] = v["values"]
        if k % 3 == 2:
            victim = "v%d" % ((k * 7) % 40)
            expect(self.c.delete("/v1/databases/%s/vectors/%s" % (self.db, victim)), 200)
            del self.live[victim]
        self.marks.append((stats(self.c, self.db)["lastLsn"], dict(self.live)))


def restored(data, name):
    out = cli("export", name, "-", "--format", "jsonl", data=data).stdout
    return {r["id"]: r["values"] for r in map(json.loads, filter(None, out.splitlines()))}


def server(db, *args):
    """A started server shipping every 100 ms (plus `args`) with database `db` made: (server, repo,
    client, model)."""
    s = Server(args=["--compaction-interval", "0"])
    repo = os.path.join(s.root, "repo")
    s.args += ["--backup-repo", repo, "--backup-continuous", "100ms"] + list(args)
    s.start()
    c = Client(s.port)
    expect(c.post("/v1/databases", {"name": db, "vectorDimension": DIM, "distanceMetric": "euclidean"}), 201)
    return s, repo, c, Model(c, db)


def write_batches(m, c, db, ks):
    """Batches k in ks, each shipped as its own log object."""
    for k in ks:
        m.batch(k)
        last = m.marks[-1][0]
        wait_for(lambda: shipped(c, db) == last, "batch %d shipped" % k)


@test
def folds_by_objects_and_restores_every_point():
    s, repo, c, m = server("f", "--backup-log-fold-objects", "4", "--backup-log-fold-bytes", "0")
    try:
        write_batches(m, c, "f", range(3))
        assert [b["type"] for b in shiplog.backups(repo, "f")] == ["full"]
        write_batches(m, c, "f", range(3, 10))
        wait_for(lambda: any(b["type"] == "incremental" for b in shiplog.backups(repo, "f")), "a folded incremental")
        log = s.log()
        assert re.search(r"info .*continuous backup of 'f': [0-9]+ log objects after backup \S+ "
                         r"\(--backup-log-fold-objects 4\): folded into incremental backup", log), log[-3000:]
        m_ok = c.get("/metrics").raw.decode()
        hit = re.search(r'jvdb_database_backups_total\{database="f",type="incremental",result="ok"\} ([0-9]+)', m_ok)
        assert hit and int(hit[1]) >= 1, m_ok
        write_batches(m, c, "f", range(10, 12))
        newest = shiplog.backups(repo, "f")[-1]
        assert newest["type"] == "incremental", newest
        s.stop()
        data = os.path.join(s.root, "restored")
        r = json.loads(cli("backup", "restore", "--database", "f", "--latest", "--repo", repo, "--as", "l", "--json",
                           data=data).stdout)
        # Only the log after the fold: the objects of the last batches, not all twelve.
        after = [e for e in shiplog.objects(repo, "f") if e["lsn_to"] > newest["lsn_to"]]
        assert r["backup"] == newest["id"] and r["lsn"] == m.marks[-1][0], (r, newest)
        assert r["logObjects"] == len(after) and r["logObjects"] < 4, (r, after)
        assert restored(data, "l") == m.marks[-1][1]
        # Points before the fold still come back exactly, from the full backup and the log.
        for lsn, want in m.marks:
            r = json.loads(cli("backup", "restore", "--database", "f", "--to-lsn", lsn, "--repo", repo, "--as", "p",
                               "--force", "--json", data=data).stdout)
            assert r["lsn"] == lsn and r["count"] == len(want), (lsn, r, len(want))
            assert restored(data, "p") == want, lsn
    finally:
        s.stop()
        s.cleanup()


@test
def folds_by_bytes_and_zero_disables():
    s, repo, c, m = server("b", "--backup-log-fold-bytes", "2KiB", "--backup-log-fold-objects", "0")
    try:
        write_batches(m, c, "b", range(12))  # 5 records of 128 B a batch: past 2 KiB after 4
        wait_for(lambda: any(b["type"] == "incremental" for b in shiplog.backups(repo, "b")), "a folded incremental")
        assert re.search(r"bytes of log records after backup \S+ \(--backup-log-fold-bytes 2048\)", s.log()), \
            s.log()[-3000:]
    finally:
        s.stop()
        s.cleanup()
    s, repo, c, m = server("n", "--backup-log-fold-bytes", "0", "--backup-log-fold-objects", "0")
    try:
        write_batches(m, c, "n", range(12))
        assert [b["type"] for b in shiplog.backups(repo, "n")] == ["full"]
    finally:
        s.stop()
        s.cleanup()
    for bad in (["--backup-log-fold-bytes", "-1"], ["--backup-log-fold-objects", "x"]):
        p = subprocess.run([jvdbtest.JVDB, "serve", "--data", "/nonexistent/x"] + bad, capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 2 and bad[0] in p.stderr, (bad, p.returncode, p.stderr)


@test
def retention_drops_folded_log_and_keeps_the_window():
    s, repo, c, m = server("r", "--backup-log-fold-objects", "3", "--backup-log-fold-bytes", "0",
                           "--backup-retention", "3s")
    try:
        write_batches(m, c, "r", range(6))
        wait_for(lambda: any(b["type"] == "incremental" for b in shiplog.backups(repo, "r")), "a folded incremental")
        old = [e for e in shiplog.objects(repo, "r") if e["lsn_to"] <= shiplog.backups(repo, "r")[-1]["lsn_to"]]
        assert old
        time.sleep(3.5)
        write_batches(m, c, "r", range(6, 14))
        wait_for(lambda: not any(os.path.exists(e["path"]) for e in old), "covered log objects pruned", timeout=90)
        assert re.search(r"retention of 'r': [1-9][0-9]* log objects \([1-9][0-9]* covered", s.log()), s.log()[-3000:]
        stopped_ns = time.time_ns()
        s.stop()
        data = os.path.join(s.root, "restored")
        w = [x for x in json.loads(cli("backup", "list", "--repo", repo, "--json", data=data).stdout)["windows"]
             if x["databaseId"] == "r"][0]
        assert w["latestLsn"] == m.marks[-1][0], w
        # Every point of the last 3 s is still restorable and exact (retention ran before the stop,
        # so its window began before stopped - 3 s).
        inside = [mk for mk, t0 in zip(m.marks, m.began) if t0 >= stopped_ns - 3 * 10**9]
        assert len(inside) >= 3, (w, [lsn for lsn, _ in m.marks])
        for lsn, want in inside:
            r = json.loads(cli("backup", "restore", "--database", "r", "--to-lsn", lsn, "--repo", repo, "--as", "p",
                               "--force", "--json", data=data).stdout)
            assert r["lsn"] == lsn and restored(data, "p") == want, (lsn, r)
    finally:
        s.stop()
        s.cleanup()


if __name__ == "__main__":
    sys.exit(jvdbtest.run_tests(sys.argv))
