#!/usr/bin/env python3
"""Adversarial regression cases for the REST routes (issue 9): one test per finding, each of which
failed on the code the review ran against.

Usage: test_adversarial_routes.py PATH_TO_JVDB [TEST...]

  unknown_fields_are_refused_on_every_route   item 14: a search with "filter" ran unfiltered
  original_aliases_are_accepted_explicitly    item 14: the original API's spellings, and only those
  batch_paths_refuse_unknown_fields_alike     item 14 + fuzzing: fast and general batch decoders
  names_are_checked_in_every_route            item 2: a database name is never cut short or ignored
  stored_metadata_cannot_inject_json          item 3: metadata is re-encoded, never copied raw
  drop_does_not_freeze_other_databases        item 7: a queued drop stalled every request
  forced_restore_does_not_freeze_other_databases  item 7: so did a restore replacing a database
  large_unknown_field_builds_no_tree          item 8: an unknown field was parsed into a full tree
"""
import ctypes
import glob
import json
import os
import random
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jvdbtest  # noqa: E402
from jvdbtest import Server, expect, test  # noqa: E402


def backup_server(*more):
    s = Server()
    s.args = ["--backup-repo", os.path.join(s.root, "repo")] + list(more)
    return s


def mkdb(c, name="docs", dim=4, metric="euclidean", **extra):
    body = {"name": name, "vectorDimension": dim, "distanceMetric": metric}
    body.update(extra)
    return expect(c.post("/v1/databases", body), 201)


def state(c, name="docs"):
    st = expect(c.get("/v1/databases/" + name + "/stats"), 200).json
    return st["vectorCount"], st["lastLsn"], st["fileBytes"]


# ---------------------------------------------------------------- item 14


@test
def unknown_fields_are_refused_on_every_route():
    """Every route refuses a field it does not know with 400 naming it, and changes nothing."""
    with backup_server() as s:
        c = s.client()
        mkdb(c)
        expect(c.post("/v1/databases/docs/vectors/batch", {"vectors": [
            {"id": "en", "values": [1, 0, 0, 0], "metadata": {"tenant": "a"}},
            {"id": "de", "values": [1, 0, 0, 0.1], "metadata": {"tenant": "b"}}]}), 201)
        # The finding: "filter" (other databases' spelling) ran an unfiltered search and leaked
        # tenant b's vector to tenant a.
        q = {"queryVector": [1, 0, 0, 0], "topK": 10, "filter": {"tenant": "a"}}
        expect(c.post("/v1/databases/docs/search", q), 400, "INVALID_ARGUMENT", ("unknown field 'filter'", "filters"))
        q["filters"] = q.pop("filter")
        r = expect(c.post("/v1/databases/docs/search", q), 200)
        assert [x["vectorId"] for x in r["results"]] == ["en"], r
        before = state(c)
        cases = [
            ("POST", "/v1/databases", {"name": "x", "vectorDimension": 4, "replicas": 3}, "replicas"),
            ("POST", "/v1/databases", {"name": "x", "vectorDimension": 4, "config": {"k": "v"}}, "config"),
            ("PUT", "/v1/databases/docs", {"description": "d", "descripton": "typo"}, "descripton"),
            ("PUT", "/v1/databases/docs", {"indexParameters": {"efSearch": 9, "ef_search": 9}}, "ef_search"),
            ("PUT", "/v1/databases/docs", {"compactionPolicy": {"deadratio": 0.1}}, "deadratio"),
            ("POST", "/v1/databases/docs/vectors", {"id": "n", "values": [1, 2, 3, 4], "meta": {"a": 1}}, "meta"),
            ("POST", "/v1/databases/docs/vectors/batch", {"vectors": [{"id": "n", "values": [1, 2, 3, 4]}],
                                                         "upsert": False}, "upsert"),
            ("POST", "/v1/databases/docs/vectors/batch", {"vectors": [{"id": "n", "values": [1, 2, 3, 4],
                                                                      "namespace": "t"}]}, "record 0: unknown field 'namespace'"),
            ("POST", "/v1/databases/docs/vectors/batch-get", {"ids": ["en"], "include_values": False}, "include_values"),   # includeValues is known (issue 12)
            ("PUT", "/v1/databases/docs/vectors/en", {"values": [2, 2, 2, 2], "metdata": {}}, "metdata"),
            ("POST", "/v1/databases/docs/compact", {"force": True, "dryRun": True}, "dryRun"),
            ("POST", "/v1/databases/docs/search", {"queryVector": [1, 0, 0, 0], "top_k": 1}, "top_k"),
            ("POST", "/v1/databases/docs/backups", {"type": "full", "encrypt": True}, "encrypt"),
            ("POST", "/v1/backups/nosuch/restore", {"targetDatabase": "docs2", "overwrite": True}, "overwrite"),
            # Routes that take no body take no fields either.
            ("DELETE", "/v1/databases/docs/vectors/en", {"cascade": True}, "cascade"),
            ("DELETE", "/v1/databases/docs", {"ifEmpty": True}, "ifEmpty"),
            ("GET", "/v1/databases/docs", {"x": 1}, "unknown field 'x'"),
            ("POST", "/v1/admin/shutdown", {"force": True}, "force"),
        ]
        for method, path, body, word in cases:
            r = c.request(method, path, body)
            expect(r, 400, "INVALID_ARGUMENT", word if "unknown" in word else "unknown field '%s'" % word)
        # Nothing changed, nothing was created, the server is still up.
        assert state(c) == before
        assert expect(c.get("/v1/databases"), 200)["total"] == 1
        assert expect(c.get("/v1/databases/docs/vectors/en"), 200)["values"] == [1, 0, 0, 0]
        assert expect(c.get("/v1/databases/docs"), 200)["description"] == ""
        expect(c.get("/health"), 200)
        # An empty body (or {}) is still fine where no body is taken.
        expect(c.request("DELETE", "/v1/databases/docs/vectors/de", raw=b"{}"), 200)


@test
def original_aliases_are_accepted_explicitly():
    """The original JadeVectorDB's documented spellings work; giving both spellings is an error."""
    with Server() as s:
        c = s.client()
        r = expect(c.post("/v1/databases", {"name": "a", "dimension": 3, "metric": "dot"}), 201)
        assert r["vectorDimension"] == 3 and r["distanceMetric"] == "dot", r
        expect(c.post("/v1/databases", {"name": "b", "dimension": 3, "vectorDimension": 3}), 400, "INVALID_ARGUMENT",
               "not both")
        expect(c.post("/v1/databases/a/vectors", {"id": "v", "values": [1, 2, 3]}), 201)
        r = expect(c.post("/v1/databases/a/vectors/batch-get", {"vectorIds": ["v", "w"]}), 200)
        assert r["count"] == 1 and r["notFound"] == ["w"], r
        expect(c.post("/v1/databases/a/vectors/batch-get", {"vectorIds": ["v"], "ids": ["v"]}), 400,
               "INVALID_ARGUMENT", "not both")
        # A client may send back the object it read.
        obj = expect(c.get("/v1/databases/a"), 200).json
        obj["description"] = "changed"
        assert expect(c.put("/v1/databases/a", obj), 200)["description"] == "changed"
        expect(c.put("/v1/databases/a", {"databaseId": "b"}), 400, "INVALID_ARGUMENT", "cannot be renamed")
        assert expect(c.get("/v1/databases"), 200)["total"] == 1


@test
def batch_paths_refuse_unknown_fields_alike():
    """The hand-written fast path and the jansson path give the same answer for an unknown field."""
    with Server() as s:
        c = s.client()
        mkdb(c, "fp", 3)
        p = "/v1/databases/fp/vectors/batch"
        fast = b'{"vectors":[{"id":"a","values":[1,2,3]},{"id":"b","values":[1,2,3],"extra":[1,2]}]}'
        general = b'{"vectors":[{"id":"\\u0061","values":[1,2,3]},{"id":"b","values":[1,2,3],"extra":[1,2]}]}'
        answers = []
        for body in (fast, general):
            r = expect(c.post(p, raw=body), 400, "INVALID_ARGUMENT", "record 1: unknown field 'extra'")
            assert r["index"] == 1, r
            answers.append(r.json)
        assert answers[0] == answers[1], answers
        assert state(c, "fp")[0] == 0
        assert "fast batch parse" not in s.log()


# ---------------------------------------------------------------- item 2


@test
def names_are_checked_in_every_route():
    """A bad database name is 400 in every route, never cut to 64 characters or ignored."""
    with backup_server() as s:
        c = s.client()
        long64 = "n" * 64
        mkdb(c, long64)
        expect(c.post("/v1/databases/" + long64 + "/vectors", {"id": "v", "values": [1, 2, 3, 4]}), 201)
        bad = [long64 + "x", "a.b", "a%20b", "%C3%A9t%C3%A9", "a%2Fb", ".."]
        routes = [("GET", ""), ("PUT", ""), ("DELETE", ""), ("GET", "/stats"), ("POST", "/compact"),
                  ("POST", "/search"), ("POST", "/vectors"), ("POST", "/vectors/batch"), ("POST", "/vectors/batch-get"),
                  ("GET", "/vectors/v"), ("PUT", "/vectors/v"), ("DELETE", "/vectors/v"), ("GET", "/backups"),
                  ("POST", "/backups")]
        for name in bad:
            for method, tail in routes:
                r = c.request(method, "/v1/databases/" + name + tail, raw=b"" if method in ("GET", "DELETE") else b"{}")
                if name == ".." and r.status == 404:
                    continue   # the path itself does not match a route
                expect(r, 400, "INVALID_ARGUMENT", "is not allowed")
        expect(c.post("/v1/databases", {"name": long64 + "x", "vectorDimension": 4}), 400, "INVALID_ARGUMENT",
               "is not allowed")
        expect(c.post("/v1/databases", {"name": "", "vectorDimension": 4}), 400, "INVALID_ARGUMENT", "is not allowed")
        # The 64-character database is untouched and answers under its own name.
        assert expect(c.get("/v1/databases/" + long64 + "/vectors/v"), 200)["values"] == [1, 2, 3, 4]
        assert expect(c.get("/v1/databases"), 200)["total"] == 1
        r = expect(c.delete("/v1/databases/" + long64), 200)
        assert r["databaseId"] == long64, r


# ---------------------------------------------------------------- item 3 (output side)


def xxh3_64(data):
    lib = ctypes.CDLL("libxxhash.so.0")
    lib.XXH3_64bits.restype = ctypes.c_uint64
    lib.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
    return lib.XXH3_64bits(data, len(data))


def patch_record(data_dir, db, old, new):
    """Replaces bytes `old` inside one record of a segment of `db` by `new` (same length) and
    recomputes that record's checksum (docs/FORMAT.md): what a forger, or a restore that trusted a
    forged archive, leaves on disk."""
    assert len(old) == len(new)
    for path in glob.glob(os.path.join(data_dir, "databases", db, "*")):
        with open(path, "rb") as f:
            buf = bytearray(f.read())
        at = buf.find(old)
        if at < 0 or not buf.startswith(b"JVDBSEG1"):
            continue
        off = 64
        while off < len(buf):
            total = struct.unpack_from("<I", buf, off + 24)[0]
            assert total > 0 and total % 64 == 0, (path, off, total)
            if off <= at < off + total:
                buf[at:at + len(old)] = new
                struct.pack_into("<Q", buf, off, xxh3_64(bytes(buf[off + 8:off + total])))
                with open(path, "wb") as f:
                    f.write(buf)
                return
            off += total
    raise AssertionError("record not found")


@test
def stored_metadata_cannot_inject_json():
    """Metadata that is not a JSON object (forged on disk) never breaks or extends an answer."""
    with Server() as s:
        c = s.client()
        mkdb(c, "m", 2)
        filler = "q" * 40
        expect(c.post("/v1/databases/m/vectors", {"id": "v", "values": [1, 2], "metadata": {"k": filler}}), 201)
        expect(c.post("/v1/databases/m/vectors", {"id": "w", "values": [1, 3], "metadata": {"k": 1}}), 201)
        s.stop()
        old = json.dumps({"k": filler}, separators=(",", ":")).encode()
        inj = b'{"k":1},"injected":true,"p":{"q":"'
        inj += b"z" * (len(old) - len(inj) - 2) + b'"}'
        patch_record(s.data, "m", old, inj)
        s.start()
        c = s.client()
        answers = [c.get("/v1/databases/m/vectors/v"),
                   c.post("/v1/databases/m/vectors/batch-get", {"ids": ["v", "w"]}),
                   c.post("/v1/databases/m/search", {"queryVector": [1, 2], "topK": 2, "includeMetadata": True,
                                                     "exact": True})]
        for r in answers:
            # Response() parsed the body as JSON already: a broken answer would have raised.
            assert r.json is not None, r
            assert "injected" not in json.dumps(r.json), r
        if answers[0].status == 200:   # served (not refused as corrupt): the bad metadata is null
            assert answers[0]["metadata"] is None, answers[0]
            got = {v["id"]: v["metadata"] for v in answers[1]["vectors"]}
            assert got == {"v": None, "w": {"k": 1}}, got


# ---------------------------------------------------------------- item 7


def probe_while(s, busy):
    """Runs requests on /health and database b until thread `busy` ends; returns the worst time.

    The probe connection is opened only now, once the long request is running: libmicrohttpd's
    thread pool serves each connection on the thread that accepted it, so a connection accepted by
    the thread that then runs the long request would wait for it whatever the locks do (an HTTP
    layer matter, src/server/http.c)."""
    worst = 0.0
    cb = s.client()
    deadline = time.time() + 60   # bounded, whatever happens to the long request
    while busy.is_alive() and time.time() < deadline:
        for method, path, body in (("GET", "/health", None), ("GET", "/v1/databases/b/vectors/x", None),
                                   ("POST", "/v1/databases/b/vectors", {"id": "y", "values": [4, 3, 2, 1]}),
                                   ("GET", "/v1/databases", None), ("GET", "/metrics", None),
                                   ("GET", "/status", None)):
            t0 = time.time()
            r = cb.request(method, path, body)
            worst = max(worst, time.time() - t0)
            assert r.status in (200, 201), (path, r)
    return worst


def drop_during_backup(s, batches):
    """Fills database a, starts a slow backup of it, queues a drop of it, and probes /health and
    database b meanwhile.  Returns (worst probe seconds, seconds the drop was queued while probing,
    backup answer, drop answer)."""
    c = s.client()
    mkdb(c, "a", 128, sync="never", indexType="FLAT")
    rnd = random.Random(7)
    for k in range(batches):
        vs = [{"id": "v%d-%d" % (k, i), "values": [rnd.uniform(-1, 1) for _ in range(128)]} for i in range(5000)]
        expect(c.post("/v1/databases/a/vectors/batch", {"vectors": vs}), 201)
    done = {}

    def backup():
        done["backup"] = s.client().post("/v1/databases/a/backups", {"type": "full", "compressionLevel": 19})
        done["backup_end"] = time.time()

    def drop():
        time.sleep(0.3)
        done["drop"] = s.client().delete("/v1/databases/a")

    ths = [threading.Thread(target=backup), threading.Thread(target=drop)]
    for t in ths:
        t.start()
    time.sleep(0.8)   # the drop is queued behind the backup now
    start = time.time()
    worst = probe_while(s, ths[0])
    for t in ths:
        t.join()
    return worst, done["backup_end"] - start, done["backup"], done["drop"]


@test
def drop_does_not_freeze_other_databases():
    """A long operation on database A plus a queued drop of A never delays /health or database B.

    Before, every request held the server's catalog lock: the queued drop (a writer) stopped every
    new request until the backup ended, so the worst probe took as long as the window itself."""
    # No background compaction: a drop or restore meeting one is 409 BUSY by design, not a stall.
    with backup_server("--threads", "8", "--compaction-interval", "0") as s:
        c = s.client()
        mkdb(c, "b", 4)
        expect(c.post("/v1/databases/b/vectors", {"id": "x", "values": [1, 2, 3, 4]}), 201)
        batches = 2
        while True:
            worst, window, backup, drop = drop_during_backup(s, batches)
            assert backup.status in (201, 404, 409), backup
            assert drop.status == 200, drop
            expect(c.get("/v1/databases/a"), 404)
            print("     %d vectors: drop queued for %.2f s behind the backup, worst request %.3f s" % (
                batches * 5000, window, worst))
            if window >= 1.5 or batches >= 16:
                break
            batches *= 2   # a fast machine: a longer backup, so that a stall could be told apart
        assert window >= 1.0, "the backup was too short to tell (%.2f s)" % window
        # Generous: the stall this replaces lasted the whole window (27-33 s in the review).
        assert worst < window / 3, "a request on another database took %.2f s of a %.2f s window" % (worst, window)
        assert expect(c.get("/v1/databases/b/vectors/y"), 200)["values"] == [4, 3, 2, 1]


@test
def forced_restore_does_not_freeze_other_databases():
    """A restore with force replacing database A waits for A's own requests only: /health and
    database B are served throughout (before, the restore held the catalog lock for writing)."""
    s = backup_server("--threads", "8", "--compaction-interval", "0")   # see the drop case
    try:
        # Database a is loaded with the CLI before the server starts (quicker than over HTTP).
        n, dim = 80000, 256
        rnd = random.Random(9)
        rows = [struct.pack("<i%df" % dim, dim, *[rnd.uniform(-1, 1) for _ in range(dim)]) for _ in range(64)]
        fvecs = os.path.join(s.root, "a.fvecs")
        with open(fvecs, "wb") as f:
            for i in range(n):
                f.write(rows[i % 64])
        for cmd in (["db", "create", "a", "--dim", str(dim), "--sync", "never"],
                    ["import", "a", fvecs, "--id-prefix", "v", "--batch", "10000"]):
            p = subprocess.run([jvdbtest.JVDB, "--data", s.data] + cmd, capture_output=True)
            assert p.returncode == 0, p
        s.start()
        c = s.client()
        expect(c.put("/v1/databases/a", {"indexType": "FLAT"}), 200)
        mkdb(c, "b", 4)
        expect(c.post("/v1/databases/b/vectors", {"id": "x", "values": [1, 2, 3, 4]}), 201)
        bid = expect(c.post("/v1/databases/a/backups", {"type": "full"}), 201)["backupId"]
        done = {}

        def restore():
            t0 = time.time()
            try:
                done["r"] = s.client().post("/v1/backups/%s/restore" % bid, {"force": True})
            except OSError as e:   # a client timeout: the server never answered
                done["r"] = e
            done["s"] = time.time() - t0

        def backup_during_restore():
            time.sleep(0.15)
            try:
                # Asked for as it would wait: 409 at once (issue 12); as a job it waits on a job thread.
                done["sync"] = s.client().post("/v1/databases/a/backups", {"type": "full"})
                done["b"] = s.client().post("/v1/databases/a/backups", {"type": "full", "async": True})
            except OSError as e:
                done["b"] = e

        t = threading.Thread(target=restore)
        t.start()
        # A backup of the database being replaced, asked for meanwhile as a job: it waits for the restore
        # (the repository mutex comes before the database, so it never holds what the restore waits for).
        tb = threading.Thread(target=backup_during_restore)
        tb.start()
        time.sleep(0.3)
        start = time.time()
        worst = probe_while(s, t)
        window = time.time() - start
        t.join(timeout=60)
        tb.join(timeout=60)
        assert not t.is_alive() and not tb.is_alive(), "the restore and a backup of its database deadlocked"
        assert not isinstance(done["r"], OSError) and not isinstance(done["b"], OSError), (
            "the restore and a backup of its database deadlocked: %r" % done)
        expect(done["sync"], 409, "REPOSITORY_BUSY")
        jid = expect(done["b"], 202)["jobId"]
        deadline = time.time() + 60
        while True:
            job = expect(c.get("/v1/jobs/" + jid), 200).json
            if job["status"] not in ("queued", "running"):
                break
            assert time.time() < deadline, "the restore and a backup job of its database deadlocked: %r" % job
            time.sleep(0.1)
        assert job["status"] == "succeeded" and job["result"]["databaseId"] == "a", job
        r = expect(done["r"], 200)
        assert r["replaced"] is True and r["databaseId"] == "a" and r["stats"]["vectorCount"] == n, r
        print("     %d vectors: restore %.2f s, probed for %.2f s, worst request %.3f s" % (n, done["s"], window, worst))
        # A fast machine restores 80000 vectors in well under a second: the same forced restore again
        # (a plain one now) until the probed windows add up to enough to tell a stall from noise.  A
        # stall would last a whole round, about window / rounds, more than the third allowed below.
        rounds = 1
        while window < 0.8 and rounds < 8:
            again = threading.Thread(target=restore)
            again.start()
            time.sleep(0.05)
            start = time.time()
            worst = max(worst, probe_while(s, again))
            window += time.time() - start
            again.join(timeout=60)
            assert not again.is_alive(), "a repeated restore never ended"
            r = expect(done["r"], 200)
            assert r["replaced"] is True and r["stats"]["vectorCount"] == n, r
            rounds += 1
            print("     round %d: restore %.2f s, probed for %.2f s in all, worst request %.3f s" % (
                rounds, done["s"], window, worst))
        assert window >= 0.8, "the restores were too short to tell (%.2f s in %d rounds)" % (window, rounds)
        # Generous: the stall this replaces lasted the whole restore.
        assert worst < window / 3, "a request on another database took %.2f s of a %.2f s window" % (worst, window)
        s.stop()
    finally:
        s.cleanup()


# ---------------------------------------------------------------- item 8 (decoder side)


def peak_rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


@test
def large_unknown_field_builds_no_tree():
    """A body whose bulk is an unknown field is refused by name without parsing it into a tree."""
    env = dict(os.environ)
    # ASan keeps freed memory in quarantine (256 MiB by default), which would count every body.
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0:quarantine_size_mb=4"
    with Server(args=["--max-body", "48MiB"], env=env) as s:
        c = s.client()
        mkdb(c, "d", 4)
        junk = b"[" + b"0," * (8 << 20) + b"0]"   # 16 MiB: ~8.4 million numbers
        bodies = [
            ("/v1/databases/d/search", b'{"queryVector":[1,2,3,4],"junk":' + junk + b"}", "unknown field 'junk'"),
            ("/v1/databases/d/vectors/batch", b'{"vectors":[{"id":"a","values":[1,2,3,4],"junk":' + junk + b"}]}",
             "record 0: unknown field 'junk'"),
            ("/v1/databases/d/vectors", b'{"id":"a","values":[1,2,3,4],"junk":' + junk + b"}", "unknown field 'junk'"),
        ]
        base = peak_rss_kib(s.proc.pid)
        for path, body, word in bodies:
            expect(c.post(path, raw=body), 400, "INVALID_ARGUMENT", word)
        # A body that is not an object at all is refused before it is parsed too.
        expect(c.post("/v1/databases/d/search", raw=junk), 400, "INVALID_JSON", "must be a JSON object")
        expect(c.request("DELETE", "/v1/databases/d/vectors/a", raw=junk), 400, "INVALID_JSON", "must be a JSON object")
        grew = (peak_rss_kib(s.proc.pid) - base) / 1024
        # A jansson tree of 8.4 million numbers is over 380 MiB; the body itself is 16 MiB.
        assert grew < 150, "peak RSS grew by %.0f MiB" % grew
        print("     peak RSS grew by %.0f MiB for five 16 MiB bodies" % grew)
        assert state(c, "d")[0] == 0


if __name__ == "__main__":
    sys.exit(jvdbtest.run_tests(sys.argv))
