#!/usr/bin/env python3
"""End-to-end tests of the backup routes and the backup scheduler of `jvdb serve`.

Usage: test_backup.py PATH_TO_JVDB [TEST...]

The seed's backup checklist run entirely over HTTP (full backup, changes, incremental holding only
the changes, delete everything, restore, every vector back byte-identical, history in order), the
error cases of every backup route, corruption caught by verify and restore, and the scheduler with
intervals of seconds producing full and incremental backups on time and pruning.  The last line
printed is "N passed, N failed".
"""
import os
import random
import re
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jvdbtest  # noqa: E402
from jvdbtest import Server, expect, f32, f32_bits, test  # noqa: E402


def mkdb(c, name, dim=8, **extra):
    body = {"name": name, "vectorDimension": dim, "distanceMetric": "euclidean"}
    body.update(extra)
    return expect(c.post("/v1/databases", body), 201)


def contents(c, db, ids):
    """{id: (float32 bits, metadata)} of the given ids that exist."""
    out = {}
    ids = list(ids)
    for i in range(0, len(ids), 500):
        r = expect(c.post("/v1/databases/%s/vectors/batch-get" % db, {"ids": ids[i:i + 500]}), 200).json
        for v in r["vectors"]:
            out[v["id"]] = (f32_bits(v["values"]), v["metadata"])
    return out


def model_bits(model):
    return {k: (f32_bits(v), m) for k, (v, m) in model.items()}


def put_many(c, db, model, items):
    expect(c.post("/v1/databases/%s/vectors/batch" % db,
                  {"vectors": [{"id": k, "values": v, "metadata": m} for k, (v, m) in items]}), 201)
    for k, vm in items:
        model[k] = vm


def rand_vec(rnd, dim=8):
    return [f32(rnd.uniform(-5, 5)) for _ in range(dim)]


@test
def backup_checklist_over_http():
    """The seed's manual backup checklist, over HTTP."""
    s = Server()
    repo = os.path.join(s.root, "repo")
    s.args = ["--backup-repo", repo]
    try:
        s.start()
        c = s.client()
        rnd = random.Random(21)
        mkdb(c, "docs")
        model = {}
        put_many(c, "docs", model, [("v%d" % i, (rand_vec(rnd), {"i": i, "s": "x" * (i % 17)})) for i in range(500)])

        # Full backup: its files and metadata exist.
        full = expect(c.post("/v1/databases/docs/backups", {"type": "full", "description": "before changes"}), 201).json
        assert full["type"] == "full" and full["parent"] is None and full["putCount"] == 500 and full["deleteCount"] == 0
        assert full["description"] == "before changes" and full["restorable"] is True and full["chainLength"] == 1
        assert re.match(r"^\d{8}T\d{6}Z-full-\d+$", full["backupId"]), full["backupId"]
        bdir = os.path.join(repo, "docs", full["backupId"])
        assert os.path.isfile(os.path.join(bdir, "backup.json")) and os.path.isfile(os.path.join(bdir, "data.jvb.zst"))
        full_model = model_bits(model)

        # Add and modify: the incremental holds exactly those changes.
        added = [("n%d" % i, (rand_vec(rnd), {"new": i})) for i in range(30)]
        changed = [("v%d" % i, (rand_vec(rnd), {"i": i, "changed": True})) for i in range(0, 100, 5)]
        put_many(c, "docs", model, added + changed)
        for i in range(200, 210):
            expect(c.delete("/v1/databases/docs/vectors/v%d" % i), 200)
            del model["v%d" % i]
        inc = expect(c.post("/v1/databases/docs/backups", {"type": "incremental"}), 201).json
        assert inc["type"] == "incremental" and inc["parent"] == full["backupId"], inc
        assert inc["putCount"] == len(added) + len(changed) and inc["deleteCount"] == 10, inc
        assert inc["lsnFrom"] == full["lsnTo"] and inc["chainLength"] == 2
        inc_model = model_bits(model)

        # Delete every vector, then restore: everything is back, byte-identical.
        for k in list(model):
            expect(c.delete("/v1/databases/docs/vectors/" + k), 200)
        assert expect(c.get("/v1/databases/docs"), 200)["stats"]["vectorCount"] == 0
        expect(c.post("/v1/backups/%s/restore" % inc["backupId"]), 409, "ALREADY_EXISTS")
        # Deleting every vector may start the background compactor, which a forced restore waits out
        # (409 BUSY "being compacted": documented, try again).
        deadline = time.time() + 60
        while True:
            r = c.post("/v1/backups/%s/restore" % inc["backupId"], {"force": True})
            if r.status != 409 or "compacted" not in r.raw.decode() or time.time() > deadline:
                break
            time.sleep(0.2)
        r = expect(r, 200).json
        assert r["databaseId"] == "docs" and r["replaced"] is True and r["stats"]["vectorCount"] == len(inc_model)
        all_ids = set(inc_model) | set(full_model)
        assert contents(c, "docs", all_ids) == inc_model
        # The earlier point, into a new database: the deleted vectors are there again.
        r = expect(c.post("/v1/backups/%s/restore" % full["backupId"], {"targetDatabase": "docs_full"}), 201).json
        assert r["databaseId"] == "docs_full" and r["replaced"] is False
        assert contents(c, "docs_full", all_ids) == full_model
        assert expect(c.get("/v1/databases/docs_full"), 200)["vectorDimension"] == 8

        # History in order, oldest first.
        h = expect(c.get("/v1/databases/docs/backups"), 200).json
        assert h["total"] == 2 and [b["backupId"] for b in h["backups"]] == [full["backupId"], inc["backupId"]]
        assert expect(c.get("/v1/backups/" + inc["backupId"]), 200)["putCount"] == inc["putCount"]
        assert expect(c.get("/v1/backups/docs%2F" + inc["backupId"]), 200)["databaseId"] == "docs"

        # Verify; then a flipped byte makes verify and restore fail, naming the backup.
        r = expect(c.post("/v1/backups/%s/verify" % inc["backupId"]), 200).json
        assert r["valid"] is True and r["chainLength"] == 2
        data = os.path.join(repo, "docs", inc["backupId"], "data.jvb.zst")
        with open(data, "r+b") as f:
            f.seek(os.path.getsize(data) // 2)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0x40]))
        r = expect(c.post("/v1/backups/%s/verify" % inc["backupId"]), 200).json
        assert r["valid"] is False and inc["backupId"] in r["message"], r
        before = contents(c, "docs", all_ids)
        r = expect(c.post("/v1/backups/%s/restore" % inc["backupId"], {"force": True}), 500, "CORRUPT")
        assert inc["backupId"] in r["message"]
        assert contents(c, "docs", all_ids) == before   # restore wrote nothing
        # The full backup is still fine.
        assert expect(c.post("/v1/backups/%s/verify" % full["backupId"]), 200)["valid"] is True

        # Delete refuses to orphan dependants unless asked to cascade.
        expect(c.delete("/v1/backups/" + full["backupId"]), 409, "BUSY")
        r = expect(c.delete("/v1/backups/%s?cascade=true" % full["backupId"]), 200).json
        assert r["count"] == 2 and set(r["deleted"]) == {full["backupId"], inc["backupId"]}
        assert expect(c.get("/v1/databases/docs/backups"), 200)["total"] == 0
        expect(c.get("/v1/backups/" + full["backupId"]), 404, "NOT_FOUND")

        # /metrics counts what was taken.
        m = c.get("/metrics").raw.decode()
        assert 'jvdb_backups_total{type="full",result="ok"} 1' in m and 'jvdb_backups_total{type="incremental",result="ok"} 1' in m
        assert 'jvdb_backup_last_success_timestamp_seconds{database="docs"} ' in m
        assert 'jvdb_database_backups_total{database="docs",type="full",result="ok"} 1' in m, m
        assert 'jvdb_database_backups_total{database="docs",type="incremental",result="ok"} 1' in m, m
        assert re.search(r'jvdb_database_backup_stored_bytes_total\{database="docs"\} [1-9]', m), m
        log = s.log()
        assert "backup %s of 'docs' (full, api)" % full["backupId"] in log, log[-3000:]
        s.stop()
    finally:
        s.cleanup()


@test
def backup_route_errors():
    with Server() as s:   # no repository
        c = s.client()
        mkdb(c, "a")
        for r in (c.post("/v1/databases/a/backups"), c.get("/v1/databases/a/backups"),
                  c.get("/v1/backups/20250101T000000Z-full-1"), c.delete("/v1/backups/20250101T000000Z-full-1"),
                  c.post("/v1/backups/20250101T000000Z-full-1/verify"), c.post("/v1/backups/20250101T000000Z-full-1/restore")):
            expect(r, 409, "NO_BACKUP_REPOSITORY", "--backup-repo")
    s = Server()
    repo = os.path.join(s.root, "repo")
    s.args = ["--backup-repo", repo]
    try:
        s.start()
        c = s.client()
        mkdb(c, "a")
        expect(c.post("/v1/databases/a/vectors", {"id": "x", "values": [1] * 8}), 201)
        expect(c.post("/v1/databases/nope/backups"), 404, "NOT_FOUND", "database 'nope' does not exist")
        expect(c.post("/v1/databases/a/backups", {"type": "weekly"}), 400, "INVALID_ARGUMENT",
               "type 'weekly' is not one of full, incremental, differential")
        expect(c.post("/v1/databases/a/backups", {"description": 5}), 400, "INVALID_ARGUMENT", "field 'description'")
        expect(c.post("/v1/databases/a/backups", {"compressionLevel": 40}), 400, "INVALID_ARGUMENT", "compressionLevel")
        expect(c.post("/v1/databases/a/backups", raw=b"{"), 400, "INVALID_JSON")
        for bad in ("..%2F..%2Fetc", "nonsense", "a%2F..%2Fx"):
            expect(c.get("/v1/backups/" + bad), 400, "INVALID_ARGUMENT", "is not a backup id")
            expect(c.post("/v1/backups/%s/verify" % bad), 400, "INVALID_ARGUMENT")
            expect(c.post("/v1/backups/%s/restore" % bad), 400, "INVALID_ARGUMENT")
            expect(c.delete("/v1/backups/" + bad), 400, "INVALID_ARGUMENT")
        missing = "20250101T000000Z-full-1"
        expect(c.get("/v1/backups/" + missing), 404, "NOT_FOUND")
        expect(c.post("/v1/backups/%s/verify" % missing), 404, "NOT_FOUND")
        expect(c.post("/v1/backups/%s/restore" % missing), 404, "NOT_FOUND")
        expect(c.delete("/v1/backups/" + missing), 404, "NOT_FOUND")
        expect(c.get("/v1/databases/..x/backups"), 400, "INVALID_ARGUMENT")
        # The configured repository is created by the first backup, not by a read.
        expect(c.get("/v1/databases/nope/backups"), 404, "NOT_FOUND", "repository %s does not exist" % repo)
        assert not os.path.exists(repo)
        # An incremental with no full backup to build on becomes a full one and says so.
        b = expect(c.post("/v1/databases/a/backups", {"type": "incremental"}), 201).json
        assert b["type"] == "full" and b["note"], b
        assert expect(c.get("/v1/databases/nope/backups"), 200)["total"] == 0
        b2 = expect(c.post("/v1/databases/a/backups", {"type": "differential"}), 201).json
        assert b2["type"] == "differential" and b2["parent"] == b["backupId"]
        expect(c.post("/v1/backups/%s/restore" % b2["backupId"], {"targetDatabase": "bad name"}), 400, "INVALID_ARGUMENT")
        expect(c.post("/v1/backups/%s/restore" % b2["backupId"], {"force": "yes"}), 400, "INVALID_ARGUMENT")
        expect(c.delete("/v1/backups/%s?cascade=maybe" % b["backupId"]), 400, "INVALID_ARGUMENT", "cascade")
        s.stop()
    finally:
        s.cleanup()


@test
def backup_scheduler():
    """Intervals of seconds: full and incremental backups on time, pruned to the kept number, and the
    newest restores to exactly the database's state."""
    s = Server()
    repo = os.path.join(s.root, "repo")
    s.args = ["--backup-repo", repo, "--backup-full-every", "3s", "--backup-incremental-every", "1s", "--backup-keep", "3"]
    try:
        s.start()
        c = s.client()
        mkdb(c, "sch", 4, sync="never")
        stop = threading.Event()
        rnd = random.Random(4)

        def writer():
            cc = s.client()
            i = 0
            while not stop.is_set():
                expect(cc.post("/v1/databases/sch/vectors", {"id": "w%d" % (i % 40), "values": rand_vec(rnd, 4),
                                                             "metadata": {"i": i}}), 201)
                if i % 7 == 3:
                    cc.delete("/v1/databases/sch/vectors/w%d" % ((i * 3) % 40))   # 200 or 404
                i += 1
                time.sleep(0.05)

        th = threading.Thread(target=writer)
        t0 = time.time()
        th.start()
        time.sleep(7.5)
        stop.set()
        th.join()
        elapsed = time.time() - t0
        m = c.get("/metrics").raw.decode()
        fulls = int(re.search(r'jvdb_backups_total\{type="full",result="ok"\} (\d+)', m).group(1))
        incs = int(re.search(r'jvdb_backups_total\{type="incremental",result="ok"\} (\d+)', m).group(1))
        # Full at 0, 3, 6 s; incrementals every second in between.
        assert 2 <= fulls <= 4, (fulls, elapsed)
        assert incs >= 3, (incs, elapsed)
        assert 'result="failed"} 0' in m
        listed = expect(c.get("/v1/databases/sch/backups"), 200).json["backups"]
        assert len(listed) < fulls + incs, "nothing was pruned: %d listed of %d" % (len(listed), fulls + incs)
        assert all(b["restorable"] for b in listed)
        # Keep 3: the newest three restorable points (plus what they depend on) and nothing older.
        ids = [b["backupId"] for b in listed]
        needed = set()
        for b in listed[-3:]:
            x = b
            while x:
                needed.add(x["backupId"])
                x = next((p for p in listed if p["backupId"] == x["parent"]), None)
        assert set(ids) == needed, (ids, needed)
        for b in listed:
            assert b["description"] == "scheduled"
        assert "backup scheduler: full every 3.0 s" in s.log()
        assert "pruned backup" in s.log()
        # Wait for one more scheduled backup after the writes stopped, then it restores to exactly now.
        deadline = time.time() + 10
        lsn = expect(c.get("/v1/databases/sch/stats"), 200)["lastLsn"]
        while time.time() < deadline:
            listed = expect(c.get("/v1/databases/sch/backups"), 200).json["backups"]
            if listed and listed[-1]["lsnTo"] == lsn:
                break
            time.sleep(0.3)
        else:
            raise AssertionError("no backup reached LSN %d: %r" % (lsn, listed[-1:]))
        newest = listed[-1]
        expect(c.post("/v1/backups/%s/restore" % newest["backupId"], {"targetDatabase": "sch_copy"}), 201)
        ids = ["w%d" % i for i in range(40)]
        assert contents(c, "sch_copy", ids) == contents(c, "sch", ids)
        # Nothing changes any more: no new backups are taken.
        n_before = len(expect(c.get("/v1/databases/sch/backups"), 200).json["backups"])
        time.sleep(2.0)
        assert len(expect(c.get("/v1/databases/sch/backups"), 200).json["backups"]) == n_before
        expect(c.delete("/v1/databases/sch_copy"), 200)
        s.stop()
        # After a restart the schedule continues from the repository (no immediate full backup).
        s.start()
        time.sleep(1.5)
        m = s.client().get("/metrics").raw.decode()
        assert 'jvdb_backups_total{type="full",result="ok"} 0' in m, m
        s.stop()
    finally:
        s.cleanup()


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError("timed out waiting for " + what)


@test
def backup_schedule_from_repository():
    """issue 13: the schedule follows the repository (an API backup counts), an idle database keeps its
    due full backup due instead of resetting the clock, every skip is logged at info once, GET
    /v1/backups/schedule shows it, GET /v1/backups lists everything, and the last-success metric is
    seeded from the repository at start-up."""
    s = Server()
    repo = os.path.join(s.root, "repo")
    s.args = ["--backup-repo", repo, "--backup-full-every", "5s", "--backup-incremental-every", "2s"]
    try:
        s.start()
        c = s.client()
        mkdb(c, "a", 4, sync="never")
        rnd = random.Random(9)
        put_many(c, "a", {}, [("v%d" % i, (rand_vec(rnd, 4), {"i": i})) for i in range(10)])
        # The scheduler takes the first (full) backup at once; wait for it so the API one comes after.
        wait_for(lambda: (lambda r: r.status == 200 and r.json["backups"])(c.get("/v1/databases/a/backups")), 5,
                 "the first scheduled backup")
        api = expect(c.post("/v1/databases/a/backups", {"type": "full"}), 201).json
        sched = expect(c.get("/v1/backups/schedule"), 200).json
        assert sched["enabled"] is True and sched["fullEverySeconds"] == 5 and sched["incrementalEverySeconds"] == 2, sched
        (a,) = [d for d in sched["databases"] if d["databaseId"] == "a"]
        assert a["lastFullBackup"] == api["created_at"] and a["lastBackup"] == api["created_at"], (a, api)
        assert a["nextFull"] > api["created_at"] and a["nextIncremental"] > api["created_at"], a
        assert a["waitingForChanges"] is False, a
        n0 = len(expect(c.get("/v1/databases/a/backups"), 200).json["backups"])
        # Idle for more than the full interval: nothing is taken (no empty incremental after the API
        # backup), the skips are logged once each, and the full backup stays due at the same time.
        time.sleep(6.5)
        assert len(expect(c.get("/v1/databases/a/backups"), 200).json["backups"]) == n0
        log = s.log()
        assert log.count("scheduled incremental backup of 'a' skipped") == 1, log[-3000:]
        assert log.count("scheduled full backup of 'a' skipped") == 1, log[-3000:]
        a2 = [d for d in expect(c.get("/v1/backups/schedule"), 200).json["databases"] if d["databaseId"] == "a"][0]
        assert a2["waitingForChanges"] is True and a2["nextFull"] == a["nextFull"], (a, a2)
        # The first change gets the full backup that was due (the clock was not reset by idleness).
        put_many(c, "a", {}, [("v99", (rand_vec(rnd, 4), None))])
        newest = wait_for(lambda: (lambda b: b[-1] if len(b) > n0 else None)(
            expect(c.get("/v1/databases/a/backups"), 200).json["backups"]), 5, "a backup after the change")
        assert newest["type"] == "full" and newest["description"] == "scheduled", newest
        # A repository-wide listing.
        mkdb(c, "b", 4)
        expect(c.post("/v1/databases/b/backups", {}), 201)
        everything = expect(c.get("/v1/backups"), 200).json
        assert "databaseId" not in everything and everything["total"] == len(everything["backups"]), everything
        assert {b["databaseId"] for b in everything["backups"]} == {"a", "b"}, everything
        s.stop()
        # After a restart, before any backup: the metric already knows the newest backup of each database.
        s.args = ["--backup-repo", repo]
        s.start()
        m = s.client().get("/metrics").raw.decode()
        assert re.search(r'jvdb_backup_last_success_timestamp_seconds\{database="a"\} \d', m), m
        assert re.search(r'jvdb_backup_last_success_timestamp_seconds\{database="b"\} \d', m), m
        sched = expect(s.client().get("/v1/backups/schedule"), 200).json
        assert sched["enabled"] is False and sched["databases"] == [], sched
        s.stop()
    finally:
        s.cleanup()


@test
def backup_scheduler_calendar_retention():
    """issue 13: --backup-keep-daily on the server: every backup of today but the newest is pruned."""
    s = Server()
    repo = os.path.join(s.root, "repo")
    s.args = ["--backup-repo", repo, "--backup-full-every", "1s", "--backup-keep-daily", "1"]
    try:
        s.start()
        c = s.client()
        mkdb(c, "cal", 4, sync="never")
        rnd = random.Random(5)
        for i in range(20):
            put_many(c, "cal", {}, [("c%d" % i, (rand_vec(rnd, 4), None))])
            time.sleep(0.2)
        # The last change is backed up within a second, then everything older is pruned.
        lsn = expect(c.get("/v1/databases/cal/stats"), 200)["lastLsn"]
        listed = wait_for(lambda: (lambda b: b if len(b) == 1 and b[0]["lsnTo"] == lsn else None)(
            expect(c.get("/v1/databases/cal/backups"), 200).json["backups"]), 8, "one backup at the last LSN")
        assert listed[0]["restorable"] and "pruned backup" in s.log(), listed
        sched = expect(c.get("/v1/backups/schedule"), 200).json
        assert sched["keepDaily"] == 1 and sched["keepWeekly"] == 0, sched
        s.stop()
    finally:
        s.cleanup()


@test
def backup_encrypted_repository_over_http():
    """issue 13: `serve --repo-key-file` encrypts and signs; a server given no key (or another) for an
    encrypted repository refuses to start and says why."""
    s = Server()
    repo = os.path.join(s.root, "repo")
    key = os.path.join(s.root, "repo.key")
    with open(key, "w") as f:
        f.write("k" * 20 + "0123456789abcdefghijklmnopqrstuv\n")
    s.args = ["--backup-repo", repo, "--repo-key-file", key]
    try:
        s.start()
        c = s.client()
        mkdb(c, "enc", 4)
        rnd = random.Random(3)
        model = {}
        put_many(c, "enc", model, [("e%d" % i, (rand_vec(rnd, 4), {"i": i})) for i in range(20)])
        b = expect(c.post("/v1/databases/enc/backups", {}), 201).json
        with open(os.path.join(repo, "enc", b["backupId"], "data.jvb.zst"), "rb") as f:
            assert f.read(8) == b"JVDBENC1"
        assert expect(c.post("/v1/backups/%s/verify" % b["backupId"], {}), 200).json["valid"] is True
        expect(c.post("/v1/backups/%s/restore" % b["backupId"], {"targetDatabase": "enc2"}), 201)
        assert contents(c, "enc2", model) == model_bits(model)
        s.stop()
        s.args = ["--backup-repo", repo]
        try:
            s.start()
            raise AssertionError("a server without the key started on an encrypted repository")
        except AssertionError as e:
            assert "is encrypted: give its key file" in str(e), e
        s.proc = None
    finally:
        s.cleanup()


if __name__ == "__main__":
    sys.exit(jvdbtest.run_tests(sys.argv))
