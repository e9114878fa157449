"""Read replicas (issue 13): a primary ships its log continuously (--backup-continuous 1s) to a
repository directory and a replica (`serve --follow R`) on the same directory follows it: writes on
the primary appear on the replica, a write to the replica is 403 READ_ONLY, replicationLagSeconds is
in stats and /metrics, a database created later appears, a point-in-time restore through the REST
route, a replica SIGKILLed in the middle of applying resumes exactly (same LSN, same contents,
nothing lost or repeated), and a promote makes the replica a writable primary and fences the old
one (its next shipment stops); a restart without --follow stays a primary.

usage: test_replica.py PATH_TO_JVDB
"""
import os
import random
import re
import json
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jvdbtest  # noqa: E402
from jvdbtest import Client, Server, expect, test  # noqa: E402


def wait(what, fn, timeout=60, every=0.1):
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(every)
    raise AssertionError("timed out waiting for %s (last: %r)" % (what, last))


def contents(c, db):
    """Every vector of db as {id: (values, metadata)} through the scroll route."""
    out, cursor = {}, None
    while True:
        body = {"limit": 1000, "includeValues": True}
        if cursor:
            body["cursor"] = cursor
        r = expect(c.post("/v1/databases/%s/vectors/scroll" % db, body), 200).json
        for v in r["vectors"]:
            out[v["id"]] = (v.get("values"), v.get("metadata"))
        cursor = r.get("nextCursor")
        if not cursor:
            return out


def stats(c, db):
    r = c.get("/v1/databases/%s/stats" % db)
    return r.json if r.status == 200 else None


def same(p, r, db):
    """The replica holds exactly what the primary holds, at the same LSN."""
    sp, sr = stats(p, db), stats(r, db)
    if not sp or not sr or sp["lastLsn"] != sr["lastLsn"]:
        return False
    return contents(p, db) == contents(r, db)


def pair(extra_primary=(), interval="200ms"):
    p = Server(args=["--compaction-interval", "0"])
    repo = os.path.join(p.root, "repo")
    p.args += ["--backup-repo", repo, "--backup-continuous", "1s"] + list(extra_primary)
    r = Server(root=p.root, data=os.path.join(p.root, "replica"),
               args=["--follow", repo, "--follow-interval", interval, "--compaction-interval", "0"])
    return p, r, repo


def put(c, db, ids, gen, meta_extra=None):
    vecs = [{"id": "v%d" % i, "values": [i + gen, gen * 0.5, -i], "metadata": {"i": i, "gen": gen}} for i in ids]
    expect(c.post("/v1/databases/%s/vectors/batch" % db, {"vectors": vecs}), 201)


@test
def replica_follows_refuses_writes_and_promotes():
    p, r, repo = pair()
    try:
        p.start()
        pc = Client(p.port)
        expect(pc.post("/v1/databases", {"name": "d", "vectorDimension": 3, "distanceMetric": "euclidean"}), 201)
        put(pc, "d", range(40), 1)
        # The first shipment makes a full backup, then the log follows it.
        wait("the first shipment", lambda: any(n.endswith(".jvl") for _, _, ns in os.walk(repo) for n in ns) or
             os.path.isdir(os.path.join(repo, "d")))
        r.start()
        rc = Client(r.port)
        wait("the replica to catch up", lambda: same(pc, rc, "d"))
        # Updates and deletes, in several shipments.
        for gen in range(2, 6):
            put(pc, "d", random.sample(range(60), 15), gen)
            expect(pc.post("/v1/databases/d/vectors/delete", {"ids": ["v%d" % (gen * 3)]}), 200)
            time.sleep(0.4)
        wait("the replica to follow updates and deletes", lambda: same(pc, rc, "d"))
        # Reads work, writes are refused.
        expect(rc.post("/v1/databases/d/search", {"queryVector": [1, 0.5, -1], "topK": 3}), 200)
        expect(rc.get("/v1/databases/d/vectors/v1"), 200)
        for method, path, body in (("POST", "/v1/databases/d/vectors", {"id": "x", "values": [1, 2, 3]}),
                                   ("POST", "/v1/databases", {"name": "e", "vectorDimension": 3}),
                                   ("DELETE", "/v1/databases/d/vectors/v1", None),
                                   ("DELETE", "/v1/databases/d", None),
                                   ("POST", "/v1/databases/d/backups", {})):
            resp = rc.request(method, path, body)
            expect(resp, 403, "READ_ONLY")
            assert "read replica" in resp.json["message"], resp.json
        expect(rc.get("/v1/databases/d/vectors/x"), 404)
        st = stats(rc, "d")
        assert "replicationLagSeconds" in st and st["replicationLagSeconds"] < 30, st
        assert "replicationLagSeconds" not in stats(pc, "d")
        m = rc.get("/metrics").raw.decode()
        assert re.search(r'jvdb_replication_lag_seconds\{database="d"\} [0-9.]+', m), m
        # A database created on the primary later appears on the replica.
        expect(pc.post("/v1/databases", {"name": "later", "vectorDimension": 3}), 201)
        put(pc, "later", range(5), 9)
        wait("the new database on the replica", lambda: stats(rc, "later") and same(pc, rc, "later"))

        # Point in time through REST (on the primary's repository): the state after generation 2.
        lsn_now = stats(pc, "d")["lastLsn"]
        out = expect(pc.post("/v1/backups/d/restore", {"latest": True, "targetDatabase": "d_latest"}), 201).json
        wait("everything shipped", lambda: expect(pc.post("/v1/backups/d/restore",
                                                          {"latest": True, "targetDatabase": "d_latest",
                                                           "force": True}), 200).json["lsn"] == lsn_now, timeout=20)
        assert contents(pc, "d_latest") == contents(pc, "d")
        out = expect(pc.post("/v1/backups/d/restore", {"toLsn": 40, "targetDatabase": "d_40"}), 201).json
        assert out["lsn"] == 40 and out["stats"]["vectorCount"] == 40, out
        resp = pc.post("/v1/backups/d/restore", {"toLsn": 10 ** 9, "targetDatabase": "d_far"})
        expect(resp, 404)
        assert "outside the restorable window" in resp.json["message"], resp.json
        # The shipper takes the repository lock for the first backup of each database the restores made
        # (a synchronous restore meeting it is 409 REPOSITORY_BUSY by design): let those land first.
        for db in ("d_latest", "d_40"):
            wait("%s's first backup" % db, lambda: re.search(
                r'jvdb_backup_ship_shipped_lsn\{database="%s"\} [1-9]' % db, pc.get("/metrics").raw.decode()))
        # The CLI through the server: the same point-in-time restore.
        out = json.loads(cli("--server", "http://127.0.0.1:%d" % p.port, "backup", "restore", "--database", "d",
                             "--to-lsn", 40, "--as", "d_cli", "--json", data=os.path.join(p.root, "nowhere")).stdout)
        assert out["lsn"] == 40 and out["count"] == 40 and out["database"] == "d_cli", out
        expect(pc.post("/v1/backups/d/restore", {"toTime": "yesterday"}), 400)
        expect(pc.post("/v1/backups/d/restore", {"toLsn": 3, "latest": True}), 400)

        # Promote: the replica becomes writable; the old primary is fenced at its next shipment.
        expect(rc.post("/v1/admin/promote"), 200)
        expect(rc.post("/v1/admin/promote"), 409, "NOT_A_REPLICA")
        expect(rc.post("/v1/databases/d/vectors", {"id": "after", "values": [7, 7, 7]}), 201)
        assert "replicationLagSeconds" not in stats(rc, "d")
        put(pc, "d", range(3), 77)
        wait("the old primary fenced", lambda: "fenced" in p.log(), timeout=20)
        # A restart without --follow: still a primary, the write is there.
        r.stop()
        r.args = ["--compaction-interval", "0"]
        r.start()
        rc = Client(r.port)
        expect(rc.get("/v1/databases/d/vectors/after"), 200)
        expect(rc.post("/v1/databases/d/vectors", {"id": "after2", "values": [7, 7, 8]}), 201)
    finally:
        r.cleanup()
        p.cleanup()


@test
def replica_killed_mid_apply_resumes_exactly():
    p, r, repo = pair(interval="50ms")
    try:
        p.start()
        pc = Client(p.port)
        expect(pc.post("/v1/databases", {"name": "k", "vectorDimension": 3}), 201)
        put(pc, "k", range(20), 1)
        time.sleep(1.5)
        r.start()
        rc = Client(r.port)
        wait("the replica seeded", lambda: stats(rc, "k"))
        rng = random.Random(13)
        for round_ in range(3):
            # A stream of writes while the replica applies; SIGKILL at a random moment.
            for gen in range(10):
                put(pc, "k", rng.sample(range(300), 40), 100 * round_ + gen)
                if gen % 3 == 0:
                    resp = pc.post("/v1/databases/k/vectors/delete", {"ids": ["v%d" % rng.randrange(300)]})
                    assert resp.status in (200, 404), resp
                time.sleep(rng.uniform(0.05, 0.3))
            r.stop(sig=signal.SIGKILL, expect=None)
            r.start()
            rc = Client(r.port)
        wait("the restarted replica to catch up exactly", lambda: same(pc, rc, "k"), timeout=90)
        assert "re-seeding" not in r.log(), r.log()[-3000:]
        # Nothing applied twice: the replica's records since its seed are exactly the LSNs it covers.
        m = rc.get("/metrics").raw.decode()
        assert 'jvdb_replication_applied_lsn{database="k"} %d' % stats(pc, "k")["lastLsn"] in m, m
    finally:
        r.cleanup()
        p.cleanup()


def log_objects(repo, db):
    """Every log object file of db in a directory repository, by name."""
    out = {}
    for root, _, names in os.walk(os.path.join(repo, db, "log")):
        for n in names:
            if n.endswith(".jvl"):
                out[n] = os.path.join(root, n)
    return out


@test
def replica_stuck_behind_damaged_object_reseeds_past_it():
    """A log object damaged in the repository: the replica keeps serving its last good state and says
    it is stuck (stats replicationError, /metrics jvdb_replica_stuck) without retrying every poll;
    once a backup covers past the damage it re-seeds from it and catches up."""
    p, r, repo = pair()
    try:
        p.start()
        pc = Client(p.port)
        expect(pc.post("/v1/databases", {"name": "d", "vectorDimension": 3}), 201)
        put(pc, "d", range(30), 1)
        wait("the first shipment (a full backup)", lambda: os.path.isdir(os.path.join(repo, "d")))
        gen = iter(range(100, 10000))
        # (writes go on until one lands after the full backup: a log object)
        wait("the first log object", lambda: log_objects(repo, "d") or put(pc, "d", range(20, 40), next(gen)),
             every=0.5)
        r.start()
        rc = Client(r.port)
        wait("the replica to catch up", lambda: same(pc, rc, "d"))
        good = stats(rc, "d")["lastLsn"]
        r.stop()
        before = set(log_objects(repo, "d"))
        put(pc, "d", range(10, 50), 2)
        target = stats(pc, "d")["lastLsn"]
        wait("the next shipment", lambda: any(int(n.split("-")[1]) >= target for n in set(log_objects(repo, "d")) - before))
        new = sorted(set(log_objects(repo, "d")) - before)
        path = log_objects(repo, "d")[new[0]]
        with open(path, "r+b") as fh:
            data = bytearray(fh.read())
            data[len(data) // 2] ^= 0x40
            fh.seek(0)
            fh.write(data)
        r.start()
        rc = Client(r.port)
        st = wait("the replica to report the damaged object",
                  lambda: (lambda x: x if x and "replicationError" in x else None)(stats(rc, "d")))
        assert new[0] in st["replicationError"], st
        assert st["lastLsn"] == good, (st, good)
        m = rc.get("/metrics").raw.decode()
        assert re.search(r'jvdb_replica_stuck\{database="d",reason="damaged_log_object",object="[^"]*%s"\} 1'
                         % re.escape(new[0]), m), m
        expect(rc.get("/v1/databases/d/vectors/v1"), 200)  # still serving its last good state
        # Retried with a backoff, not every 200 ms poll; logged once.
        time.sleep(3)
        assert r.log().count("is stuck at LSN") == 1, r.log()[-3000:]
        # A new replica cannot seed at the newest point (the log to it is damaged): it seeds from the
        # newest backup, follows the good log after it and is stuck at the same object.
        r2 = Server(root=p.root, data=os.path.join(p.root, "replica2"),
                    args=["--follow", repo, "--follow-interval", "200ms", "--compaction-interval", "0"])
        try:
            r2.start()
            r2c = Client(r2.port)
            st2 = wait("the new replica to report the damaged object",
                       lambda: (lambda x: x if x and "replicationError" in x else None)(stats(r2c, "d")))
            assert new[0] in st2["replicationError"] and st2["lastLsn"] == good, (st2, good)
        finally:
            r2.cleanup()
        # The primary goes on, then takes a backup: it covers past the damaged object.
        put(pc, "d", range(40, 60), 3)
        expect(pc.post("/v1/databases/d/backups", {"type": "full"}), 201)
        put(pc, "d", range(0, 5), 4)
        # (the re-seeded database is published a moment before the follow state is updated)
        wait("the replica to re-seed past the damage and catch up",
             lambda: same(pc, rc, "d") and "replicationError" not in stats(rc, "d"), timeout=90)
        assert "re-seeding 'd' past its damaged log object" in r.log(), r.log()[-3000:]
        assert re.search(r'jvdb_replica_stuck\{database="d",[^}]*\} 0', rc.get("/metrics").raw.decode())
    finally:
        r.cleanup()
        p.cleanup()


def cli(*args, data, crash_at=None, expect_rc=0):
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=0")
    if crash_at:
        env["JVDB_CRASH_AT"] = crash_at
    p = subprocess.run([jvdbtest.JVDB, "--data", data] + [str(a) for a in args], capture_output=True, text=True,
                       env=env, timeout=120)
    if expect_rc is not None:
        assert p.returncode == expect_rc, (args, p.returncode, p.stdout, p.stderr)
    return p


@test
def pitr_cli_and_crash_during_restore():
    """The CLI's restore --database at points of a log a server shipped, the window in `backup list`,
    and SIGKILL at the restore's crash points: the old database stays exactly as it was."""
    p = Server(args=["--compaction-interval", "0"])
    repo = os.path.join(p.root, "repo")
    p.args += ["--backup-repo", repo, "--backup-continuous", "1s"]
    try:
        p.start()
        c = Client(p.port)
        expect(c.post("/v1/databases", {"name": "t", "vectorDimension": 3}), 201)
        marks = []
        for gen in range(1, 6):
            put(c, "t", range(gen * 4), gen)
            marks.append((stats(c, "t")["lastLsn"], contents(c, "t")))
            time.sleep(1.3)   # a shipment each
        wait("all shipped", lambda: any(n.endswith(".jvl") for _, _, ns in os.walk(repo) for n in ns) and
             "jvdb_backup_ship_pending_bytes" not in c.get("/metrics").raw.decode() or
             re.search(r'jvdb_backup_ship_pending_bytes\{database="t"\} 0\b', c.get("/metrics").raw.decode()))
        time.sleep(1.5)
        p.stop()
        data = os.path.join(p.root, "restored")
        out = json.loads(cli("backup", "list", "--repo", repo, "--json", data=data).stdout)
        w = [x for x in out["windows"] if x["databaseId"] == "t"][0]
        assert w["latestLsn"] == marks[-1][0] and w["logObjects"] >= 1, w
        assert "restorable window of 't'" in cli("backup", "list", "--repo", repo, data=data).stdout
        for lsn, want in marks:
            r = json.loads(cli("backup", "restore", "--database", "t", "--to-lsn", lsn, "--repo", repo, "--as", "at",
                               "--force", "--json", data=data).stdout)
            assert r["lsn"] == lsn and r["count"] == len(want), (r, len(want))
        e = cli("backup", "restore", "--database", "t", "--to-lsn", 10 ** 9, "--repo", repo, data=data, expect_rc=1)
        assert "outside the restorable window of 't'" in e.stderr, e.stderr
        e = cli("backup", "restore", "--database", "t", "--to-time", "2001-01-01T00:00:00.5Z", "--repo", repo,
                data=data, expect_rc=1)
        assert "restorable window" in e.stderr, e.stderr
        assert cli("backup", "restore", "--database", "t", "--to-time", "noon", "--repo", repo, data=data,
                   expect_rc=2).returncode == 2
        # Crash points of a point-in-time restore replacing "at": it is either untouched or whole.
        cli("backup", "restore", "--database", "t", "--to-lsn", marks[1][0], "--repo", repo, "--as", "at", "--force",
            data=data)
        for point in ("restore.applied", "restore.log_applied", "restore.before_publish", "publish.before_rename"):
            k = cli("backup", "restore", "--database", "t", "--repo", repo, "--as", "at", "--force", data=data,
                    crash_at=point, expect_rc=None)
            assert k.returncode == -signal.SIGKILL, (point, k.returncode, k.stderr)
            info = json.loads(cli("db", "info", "at", "--json", data=data).stdout)
            assert info["stats"]["lastLsn"] == marks[1][0], (point, info)
            assert info["count"] == len(marks[1][1]), (point, info)
        r = json.loads(cli("backup", "restore", "--database", "t", "--repo", repo, "--as", "at", "--force", "--json",
                           data=data).stdout)
        assert r["lsn"] == marks[-1][0] and r["count"] == len(marks[-1][1]), r
    finally:
        p.cleanup()


@test
def follow_options_are_checked():
    s = Server(args=["--follow", "/nonexistent/repo"])
    try:
        s.start(timeout=10)
        raise AssertionError("started following a repository that does not exist")
    except AssertionError as e:
        assert "does not exist" in str(e), str(e)
    s2 = Server(args=["--follow", "/tmp/x", "--follow-interval", "never"])
    try:
        s2.start(timeout=10)
        raise AssertionError("started with a bad interval")
    except AssertionError as e:
        assert "bad --follow-interval 'never'" in str(e), str(e)
    s3 = Server(args=["--follow", "/tmp/x", "--backup-repo", "/tmp/y", "--backup-full-every", "1h"])
    try:
        s3.start(timeout=10)
        raise AssertionError("a replica started with scheduled backups")
    except AssertionError as e:
        assert "replica" in str(e), str(e)
    # Not a replica: promote says so.
    with Server() as s4:
        expect(Client(s4.port).post("/v1/admin/promote"), 409, "NOT_A_REPLICA")


if __name__ == "__main__":
    sys.exit(jvdbtest.run_tests(sys.argv))
