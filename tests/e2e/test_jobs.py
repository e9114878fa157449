#!/usr/bin/env python3
"""End-to-end tests of background jobs (issue 12, "Long operations block their HTTP worker").

Usage: test_jobs.py PATH_TO_JVDB [TEST...]

Compaction, backup create / verify / restore and index rebuild with {"async": true} answer 202 with a
job id at once; GET /v1/jobs/{id} follows them to "succeeded" (with the synchronous answer as
"result") or "failed" (with the error); DELETE cancels a queued job and a running compaction, and
answers 409 for a running backup; GET /v1/jobs lists them; a restart marks the jobs it cut as failed
"interrupted by a restart", also when the process died at the crash points of the job file.  Requests
that would wait behind another repository operation answer 409 REPOSITORY_BUSY instead, and /health
answers while a long backup runs.  The last line printed is "N passed, N failed".
"""
import os
import random
import signal
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jvdbtest  # noqa: E402
from jvdbtest import Server, expect, f32_bits, test  # noqa: E402

DIM = 64


def mkdb(c, name, dim=DIM, **extra):
    body = {"name": name, "vectorDimension": dim, "distanceMetric": "euclidean"}
    body.update(extra)
    return expect(c.post("/v1/databases", body), 201)


def fill(c, db, n, seed=1, start=0):
    """n random vectors (incompressible: a level-19 backup of 10,000 takes seconds)."""
    rnd = random.Random(seed)
    for b in range(start, start + n, 1000):
        vs = [{"id": "v%d" % i, "values": [rnd.uniform(-1, 1) for _ in range(DIM)], "metadata": {"i": i}}
              for i in range(b, min(b + 1000, start + n))]
        expect(c.post("/v1/databases/%s/vectors/batch" % db, {"vectors": vs}), 201)


def wait_job(c, jid, timeout=120, until=("succeeded", "failed", "cancelled")):
    """Polls a job until its status is in `until`; returns the job object."""
    deadline = time.time() + timeout
    while True:
        j = expect(c.get("/v1/jobs/" + jid), 200).json
        assert 0 <= j["progress"] <= 1, j
        if j["status"] in until:
            return j
        assert time.time() < deadline, "job %s still %s after %ss" % (jid, j["status"], timeout)
        time.sleep(0.05)


def submit(c, path, body=None):
    r = expect(c.post(path, dict(body or {}, **{"async": True})), 202)
    j = r.json
    assert j["jobId"].startswith("job-") and j["status"] == "queued", j
    assert j["startedAt"] is None and j["finishedAt"] is None and j["progress"] == 0, j
    return j["jobId"]


def long_backup(c, db):
    """Starts a level-19 backup job of `db` and waits until it runs."""
    jid = submit(c, "/v1/databases/%s/backups" % db, {"compressionLevel": 19})
    deadline = time.time() + 60
    while True:   # progress > 0: it holds the repository (it reports only once it has the lock)
        j = expect(c.get("/v1/jobs/" + jid), 200).json
        if j["status"] != "queued" and (j["status"] != "running" or j["progress"] > 0):
            break
        assert time.time() < deadline, j
        time.sleep(0.01)
    assert j["status"] == "running", "the long backup was not long enough: %r" % j
    return jid


def contents(c, db, n):
    ids = ["v%d" % i for i in range(n)]
    out = {}
    for i in range(0, n, 500):
        r = expect(c.post("/v1/databases/%s/vectors/batch-get" % db, {"ids": ids[i:i + 500]}), 200).json
        for v in r["vectors"]:
            out[v["id"]] = (f32_bits(v["values"]), v["metadata"])
    return out


def repo_server():
    s = Server()
    s.args = ["--backup-repo", os.path.join(s.root, "repo")]
    return s


@test
def async_compaction_and_rebuild():
    with Server() as s:
        c = s.client()
        mkdb(c, "a")
        fill(c, "a", 3000)
        expect(c.post("/v1/databases/a/vectors/delete", {"ids": ["v%d" % i for i in range(0, 3000, 2)]}), 200)
        jid = submit(c, "/v1/databases/a/compact", {"force": True, "full": True})
        j = wait_job(c, jid)
        assert j["status"] == "succeeded" and j["kind"] == "compact" and j["database"] == "a", j
        assert j["progress"] == 1 and j["startedAt"] and j["finishedAt"] and "error" not in j, j
        assert j["result"]["databaseId"] == "a" and j["result"]["compacted"] is True, j
        assert expect(c.post("/v1/databases/a/vectors/count", {}), 200)["count"] == 1500
        # Index rebuild: a fresh graph of every live vector.
        jid = submit(c, "/v1/databases/a/index/rebuild")
        j = wait_job(c, jid)
        assert j["status"] == "succeeded" and j["kind"] == "rebuild", j
        assert j["result"]["rebuilt"] is True and j["result"]["state"] == "ready", j
        assert j["result"]["nodes"] >= 1500, j
        st = expect(c.get("/v1/databases/a/stats"), 200).json["index"]
        # The graph holds exactly the live vectors.  (The status's reason may still name the first
        # build when the rebuild was asked for while that build ran: seen once on a fresh clone.)
        assert st["state"] == "ready" and st["pending"] == 0 and st["nodes"] == 1500, st
        assert st["deletedNodes"] == 0 and st["reason"] in ("rebuild requested", "no saved graph"), st
        # The synchronous forms still answer in the request.
        r = expect(c.post("/v1/databases/a/index/rebuild", {}), 200).json
        assert r["rebuilt"] is True and r["nodes"] >= 1500, r
        expect(c.post("/v1/databases/a/compact", {"async": "yes"}), 400, "INVALID_ARGUMENT", "async")
        expect(c.post("/v1/databases/a/index/rebuild", {"asinc": True}), 400, "INVALID_ARGUMENT", "asinc")
        # A database that does not exist: 404 at once, no job.
        expect(c.post("/v1/databases/nope/compact", {"async": True}), 404, "NOT_FOUND")
        expect(c.post("/v1/databases/nope/index/rebuild", {"async": True}), 404, "NOT_FOUND")
        assert expect(c.get("/v1/jobs"), 200)["total"] == 2


@test
def async_backup_verify_restore():
    s = repo_server()
    with s:
        c = s.client()
        mkdb(c, "a")
        fill(c, "a", 2000)
        jid = submit(c, "/v1/databases/a/backups", {"description": "nightly"})
        j = wait_job(c, jid)
        assert j["status"] == "succeeded" and j["kind"] == "backup" and j["progress"] == 1, j
        b = j["result"]
        assert b["databaseId"] == "a" and b["putCount"] == 2000 and b["description"] == "nightly", b
        listed = expect(c.get("/v1/databases/a/backups"), 200).json["backups"]
        assert [x["backupId"] for x in listed] == [b["backupId"]]
        jid = submit(c, "/v1/backups/%s/verify" % b["backupId"])
        j = wait_job(c, jid)
        assert j["status"] == "succeeded" and j["kind"] == "verify" and j["database"] == "a", j
        assert j["result"]["valid"] is True and j["result"]["chainLength"] == 1, j
        jid = submit(c, "/v1/backups/%s/restore" % b["backupId"], {"targetDatabase": "b"})
        j = wait_job(c, jid)
        assert j["status"] == "succeeded" and j["kind"] == "restore" and j["database"] == "b", j
        assert j["result"]["databaseId"] == "b" and j["result"]["replaced"] is False, j
        assert contents(c, "b", 2000) == contents(c, "a", 2000)
        # Errors found before queueing are answered at once.
        gone = "20200101T000000Z-full-1"
        expect(c.post("/v1/backups/%s/verify" % gone, {"async": True}), 404, "NOT_FOUND")
        expect(c.post("/v1/backups/%s/restore" % gone, {"async": True}), 404, "NOT_FOUND")
        expect(c.post("/v1/backups/nope/verify", {"async": True}), 400, "INVALID_ARGUMENT", "not a backup id")
        expect(c.post("/v1/databases/nope/backups", {"async": True}), 404, "NOT_FOUND")
        expect(c.post("/v1/backups/%s/verify" % b["backupId"], {"x": 1}), 400, "INVALID_ARGUMENT", "x")


@test
def failed_job_carries_the_error():
    s = repo_server()
    with s:
        c = s.client()
        mkdb(c, "a")
        fill(c, "a", 100)
        bid = expect(c.post("/v1/databases/a/backups", {}), 201)["backupId"]
        # Restoring over an existing database without force fails in the job, as it would in the request.
        sync = c.post("/v1/backups/%s/restore" % bid, {})
        jid = submit(c, "/v1/backups/%s/restore" % bid)
        j = wait_job(c, jid)
        assert j["status"] == "failed" and "result" not in j, j
        assert j["error"]["code"] == sync.json["error"] and j["error"]["httpStatus"] == sync.status, (j, sync)
        assert j["error"]["message"] == sync.json["message"], (j, sync)
        assert j["finishedAt"] and j["cancellable"] is False, j
        # The database is untouched.
        assert expect(c.post("/v1/databases/a/vectors/count", {}), 200)["count"] == 100
        expect(c.delete("/v1/jobs/" + jid), 409, "JOB_FINISHED", "failed")


@test
def busy_repository_health_and_cancel():
    s = repo_server()
    with s:
        c, c2 = s.client(), s.client()
        mkdb(c, "a")
        mkdb(c, "b", dim=4)
        fill(c, "a", 10000)
        bid = expect(c.post("/v1/databases/b/backups", {}), 201)["backupId"]
        jid = long_backup(c, "a")
        # Requests that would wait behind it answer at once.
        t0 = time.time()
        expect(c2.post("/v1/databases/b/backups", {}), 409, "REPOSITORY_BUSY", "async")
        expect(c2.post("/v1/backups/%s/verify" % bid, {}), 409, "REPOSITORY_BUSY")
        expect(c2.post("/v1/backups/%s/restore" % bid, {"targetDatabase": "c"}), 409, "REPOSITORY_BUSY")
        expect(c2.delete("/v1/backups/%s" % bid), 409, "REPOSITORY_BUSY")
        expect(c2.get("/health"), 200)
        expect(c2.get("/v1/backups"), 200)   # listing never waits
        assert time.time() - t0 < 5, "busy answers took %.1fs" % (time.time() - t0)
        # Repository jobs run one at a time: a second backup job waits, queued; so does a compaction
        # of the same database.  Both can be cancelled while queued.
        q1 = submit(c2, "/v1/databases/b/backups")
        q2 = submit(c2, "/v1/databases/a/compact", {"force": True})
        for q in (q1, q2):
            assert expect(c2.get("/v1/jobs/" + q), 200)["status"] == "queued"
            r = expect(c2.delete("/v1/jobs/" + q), 200).json
            assert r["status"] == "cancelled" and r["error"]["code"] == "CANCELLED" and r["finishedAt"], r
        j = expect(c2.get("/v1/jobs/" + jid), 200).json
        assert j["status"] == "running", "the backup ended while the checks ran: %r" % j
        j = wait_job(c, jid)
        assert j["status"] == "succeeded" and j["result"]["compressionLevel"] == 19, j
        for q in (q1, q2):
            assert expect(c.get("/v1/jobs/" + q), 200)["status"] == "cancelled"
        assert len(expect(c.get("/v1/databases/b/backups"), 200)["backups"]) == 1   # q1 never ran
        # Now free: the same requests go through.
        expect(c2.post("/v1/backups/%s/verify" % bid, {}), 200)
        # A running backup stops cleanly when cancelled: nothing reaches the repository.
        jid = long_backup(c, "a")
        r = expect(c2.delete("/v1/jobs/" + jid), 202).json
        assert r["status"] == "running" and r["cancellable"] is True, r
        j = wait_job(c, jid)
        assert j["status"] == "cancelled" and j["error"]["code"] == "CANCELLED" and "stopped cleanly" in j["error"]["message"], j
        assert len(expect(c.get("/v1/databases/a/backups"), 200)["backups"]) == 1
        expect(c.delete("/v1/jobs/" + jid), 409, "JOB_FINISHED", "cancelled")
        # A running index rebuild cannot stop cleanly: 409, it runs to its end.
        jid = submit(c, "/v1/databases/a/index/rebuild")
        j = wait_job(c, jid, until=("running", "succeeded", "failed"))
        r = c2.delete("/v1/jobs/" + jid)
        if j["status"] == "running" and expect(c.get("/v1/jobs/" + jid), 200)["status"] == "running":
            expect(r, 409)
            assert r.json["error"] in ("JOB_NOT_CANCELLABLE", "JOB_FINISHED"), r
            if r.json["error"] == "JOB_NOT_CANCELLABLE":
                assert "cannot be stopped cleanly" in r.json["message"], r
        # (The stop ends the job's wait for the rebuild: it is recorded as interrupted.)


@test
def health_answers_during_a_long_backup():
    s = repo_server()
    with s:
        c, h = s.client(), s.client()
        mkdb(c, "a")
        fill(c, "a", 10000)
        jid = long_backup(c, "a")
        worst, n = 0.0, 0
        while expect(c.get("/v1/jobs/" + jid), 200)["status"] == "running":
            t = time.time()
            expect(h.get("/health"), 200)
            worst = max(worst, time.time() - t)
            n += 1
            time.sleep(0.05)
        assert n >= 3 and worst < 1.0, (n, worst)
        assert wait_job(c, jid)["status"] == "succeeded"


@test
def cancel_a_running_compaction():
    with Server() as s:
        c = s.client()
        mkdb(c, "a", dim=8)
        rnd = random.Random(3)
        for b in range(0, 60000, 5000):
            expect(c.post("/v1/databases/a/vectors/batch", {"vectors": [
                {"id": "v%d" % i, "values": [rnd.random() for _ in range(8)]} for i in range(b, b + 5000)]}), 201)
        cancelled = 0
        for attempt in range(5):
            jid = submit(c, "/v1/databases/a/compact", {"force": True, "full": True})
            j = wait_job(c, jid, until=("running", "succeeded", "failed"))
            while j["status"] == "running" and not j["cancellable"]:
                j = expect(c.get("/v1/jobs/" + jid), 200).json
            if j["status"] != "running":
                continue
            r = c.delete("/v1/jobs/" + jid)
            if r.status == 409:   # it had just finished copying
                continue
            expect(r, 202)
            j = wait_job(c, jid)
            assert j["status"] in ("cancelled", "succeeded"), j
            if j["status"] == "cancelled":
                assert j["error"]["code"] == "CANCELLED" and "nothing was changed" in j["error"]["message"], j
                cancelled += 1
                break
        assert cancelled, "no compaction was caught running in 5 attempts"
        assert expect(c.post("/v1/databases/a/vectors/count", {}), 200)["count"] == 60000


@test
def listing_filters_and_queue_limit():
    s = repo_server()
    with s:
        c = s.client()
        mkdb(c, "a")
        mkdb(c, "b", dim=4)
        fill(c, "a", 10000)
        jid = long_backup(c, "a")
        queued = [submit(c, "/v1/databases/a/compact") for _ in range(16)]
        r = expect(c.post("/v1/databases/b/compact", {"async": True}), 429, "TOO_MANY_JOBS")
        assert r.headers.get("Retry-After"), r.headers
        for q in queued:
            expect(c.delete("/v1/jobs/" + q), 200)
        rb = submit(c, "/v1/databases/b/index/rebuild")
        assert wait_job(c, rb)["status"] == "succeeded"
        lst = expect(c.get("/v1/jobs"), 200).json
        ids = [j["jobId"] for j in lst["jobs"]]
        assert ids == [rb] + queued[::-1] + [jid], ids   # newest first
        assert lst["total"] == 18 and lst["historyLimit"] == 100, lst
        assert [j["jobId"] for j in expect(c.get("/v1/jobs?database=b"), 200)["jobs"]] == [rb]
        assert len(expect(c.get("/v1/jobs?status=cancelled"), 200)["jobs"]) == 16
        assert [j["jobId"] for j in expect(c.get("/v1/jobs?kind=backup"), 200)["jobs"]] == [jid]
        expect(c.get("/v1/jobs?status=done"), 400, "INVALID_ARGUMENT", "queued, running")
        expect(c.get("/v1/jobs?kind=vacuum"), 400, "INVALID_ARGUMENT", "compact")
        expect(c.get("/v1/jobs/job-nope"), 404, "NOT_FOUND")
        expect(c.delete("/v1/jobs/job-nope"), 404, "NOT_FOUND")
        wait_job(c, jid)


@test
def restart_marks_cut_jobs():
    s = repo_server()
    try:
        s.start()
        c = s.client()
        mkdb(c, "a")
        fill(c, "a", 10000)
        done = submit(c, "/v1/databases/a/compact", {"force": True})
        assert wait_job(c, done)["status"] == "succeeded"
        running = long_backup(c, "a")
        queued = submit(c, "/v1/databases/a/index/rebuild")
        s.stop(sig=signal.SIGKILL, expect=None)
        s.start()
        c = s.client()
        jobs = {j["jobId"]: j for j in expect(c.get("/v1/jobs"), 200)["jobs"]}
        assert set(jobs) == {done, running, queued}, jobs
        assert jobs[done]["status"] == "succeeded" and jobs[done]["result"]["compacted"] is True, jobs[done]
        for jid, when in ((running, "while it was running"), (queued, "before it started")):
            j = jobs[jid]
            assert j["status"] == "failed" and j["error"]["code"] == "INTERRUPTED", j
            assert "interrupted by a restart" in j["error"]["message"] and when in j["error"]["message"], j
            assert j["finishedAt"], j
        # The interrupted backup left nothing behind that lists as a backup.
        assert expect(c.get("/v1/databases/a/backups"), 200)["total"] == 0
        # Ids go on after a restart; a graceful stop keeps the record as it is.
        nxt = submit(c, "/v1/databases/a/compact")
        assert nxt not in jobs and wait_job(c, nxt)["status"] == "succeeded"
        s.stop()
        s.start()
        c = s.client()
        assert expect(c.get("/v1/jobs/" + nxt), 200)["status"] == "succeeded"
        assert expect(c.get("/v1/jobs/" + queued), 200)["error"]["code"] == "INTERRUPTED"
        s.stop()
    finally:
        s.cleanup()


@test
def crash_points_of_the_job_file():
    """The server dies at each write of jobs.state (queued, running, ended): after a restart every job
    it answered 202 for is listed, none is left queued or running, and a cut one says so."""
    points = ["server.jobs.before_rename", "server.jobs.after_rename", "server.jobs.before_rename:2",
              "server.jobs.after_rename:2", "server.jobs.before_rename:3", "server.jobs.after_rename:3"]
    for point in points:
        s = Server(env=dict(os.environ, JVDB_CRASH_AT=point))
        try:
            s.start()
            c = s.client()
            mkdb(c, "a", dim=4)
            expect(c.post("/v1/databases/a/vectors", {"id": "x", "values": [1, 2, 3, 4]}), 201)
            acked = None
            try:
                r = c.post("/v1/databases/a/compact", {"async": True, "force": True}, retry=False)
                acked = expect(r, 202)["jobId"]
            except (ConnectionError, OSError):
                pass   # the connection died with the process
            try:
                s.proc.wait(30)
            except Exception:
                raise AssertionError("%s: the server did not reach its crash point; log:\n%s" % (point, s.log()[-3000:]))
            s.stop(expect=None)
            s.env.pop("JVDB_CRASH_AT")
            s.start()
            c = s.client()
            jobs = expect(c.get("/v1/jobs"), 200)["jobs"]
            if acked:
                assert [j["jobId"] for j in jobs] == [acked], (point, acked, jobs)
            assert len(jobs) <= 1, (point, jobs)
            if point == "server.jobs.before_rename":
                assert jobs == [] and acked is None, (point, jobs)   # nobody was told of a job
            for j in jobs:
                if point.endswith(":3") and point.startswith("server.jobs.after"):
                    assert j["status"] == "succeeded", (point, j)
                elif j["status"] != "succeeded":
                    assert j["status"] == "failed" and j["error"]["code"] == "INTERRUPTED", (point, j)
                    assert "interrupted by a restart" in j["error"]["message"], (point, j)
            assert expect(c.get("/v1/databases/a/vectors/x"), 200)["values"] == [1, 2, 3, 4]
            nxt = submit(c, "/v1/databases/a/compact")
            assert nxt not in [j["jobId"] for j in jobs] and wait_job(c, nxt)["status"] == "succeeded"
            s.stop()
        finally:
            s.cleanup()


@test
def jobs_need_admin_and_limited_keys_see_their_databases():
    boot = "bootstrap-admin-key-for-jobs"
    with Server(args=["--api-key", boot]) as s:
        c = s.client(boot)
        mkdb(c, "a", dim=4)
        mkdb(c, "b", dim=4)
        ja = submit(c, "/v1/databases/a/compact")
        jb = submit(c, "/v1/databases/b/compact")
        wait_job(c, ja)
        wait_job(c, jb)

        def key(**body):
            return expect(c.post("/v1/api-keys", body), 201)["api_key"]
        lim = s.client(key(role="admin", databases=["a"]))
        write = s.client(key(role="write"))
        anon = s.client()
        assert [j["jobId"] for j in expect(lim.get("/v1/jobs"), 200)["jobs"]] == [ja]
        expect(lim.get("/v1/jobs/" + ja), 200)
        expect(lim.get("/v1/jobs/" + jb), 404, "NOT_FOUND")
        expect(lim.delete("/v1/jobs/" + jb), 404, "NOT_FOUND")
        expect(lim.post("/v1/databases/b/compact", {"async": True}), 403, "FORBIDDEN")
        jl = submit(lim, "/v1/databases/a/index/rebuild")
        assert wait_job(lim, jl)["status"] == "succeeded"
        expect(write.get("/v1/jobs"), 403, "FORBIDDEN", "admin")
        expect(write.get("/v1/jobs/" + ja), 403, "FORBIDDEN")
        expect(write.post("/v1/databases/a/compact", {"async": True}), 403, "FORBIDDEN")
        expect(anon.get("/v1/jobs"), 401, "UNAUTHORIZED")
        assert len(expect(c.get("/v1/jobs"), 200)["jobs"]) == 3


if __name__ == "__main__":
    sys.exit(jvdbtest.run_tests(sys.argv))
