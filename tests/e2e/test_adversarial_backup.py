#!/usr/bin/env python3
"""Adversarial regression cases for the backup routes (issue 9: items 2, 5, 12 and 13).

Usage: test_adversarial_backup.py PATH_TO_JVDB [TEST...]

Each test is one finding of the adversarial review, run against the real server:
  - restore's targetDatabase is validated like create's name: "" and 65-character names are 400 and
    replace nothing (they used to replace the original database, or a 64-character namesake), and
    the answer says what the library did ("databaseId", "replaced");
  - a backup carries the database's settings (description, index type and parameters, metric, sync
    mode, compaction policy) and restore brings them back instead of defaults;
  - read-only routes on a repository that does not exist say so and create nothing;
  - concurrent DELETEs of one backup: exactly one succeeds, the others get 404.
Forged archives (checksums recomputed) are covered by tests/backup/test_backup.c (test_forged_records):
forging needs XXH3 and zstd, which the Python standard library does not have.
The last line printed is "N passed, N failed".
"""
import json
import os
import subprocess
import sys
import threading

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jvdbtest  # noqa: E402
from jvdbtest import Server, expect, test  # noqa: E402


def mkdb(c, name, dim=4, **extra):
    body = {"name": name, "vectorDimension": dim, "distanceMetric": "euclidean"}
    body.update(extra)
    return expect(c.post("/v1/databases", body), 201).json


def put(c, db, n, dim=4):
    expect(c.post("/v1/databases/%s/vectors/batch" % db,
                  {"vectors": [{"id": "v%d" % i, "values": [float(i + 1)] * dim} for i in range(n)]}), 201)


def count(c, db):
    return expect(c.get("/v1/databases/%s" % db), 200).json["stats"]["vectorCount"]


def repo_server():
    s = Server()
    s.repo = os.path.join(s.root, "repo")
    s.args = ["--backup-repo", s.repo]
    return s


@test
def restore_target_is_validated():
    """targetDatabase "" or longer than 64 characters is 400 and replaces nothing."""
    s = repo_server()
    try:
        s.start()
        c = s.client()
        mkdb(c, "orig")
        put(c, "orig", 5)
        b = expect(c.post("/v1/databases/orig/backups", {}), 201).json["backupId"]
        put(c, "orig", 9)   # the live database differs from the backup
        long64 = "a" * 64
        mkdb(c, long64)
        put(c, long64, 2)
        for target, why in (("", "invalid database name"), ("a" * 65, "invalid database name"),
                            ("bad name", "invalid database name"), ("../x", "invalid database name")):
            for force in (False, True):
                expect(c.post("/v1/backups/%s/restore" % b, {"targetDatabase": target, "force": force}), 400,
                       "INVALID_ARGUMENT", why)
        assert count(c, "orig") == 9
        assert count(c, long64) == 2
        names = sorted(d["databaseId"] for d in expect(c.get("/v1/databases"), 200).json["databases"])
        assert names == sorted(["orig", long64]), names
        # The answers say what was done.
        r = expect(c.post("/v1/backups/%s/restore" % b, {"targetDatabase": "copy"}), 201).json
        assert r["databaseId"] == "copy" and r["replaced"] is False and r["backupId"] == b, r
        r = expect(c.post("/v1/backups/%s/restore" % b, {"targetDatabase": "copy", "force": True}), 200).json
        assert r["databaseId"] == "copy" and r["replaced"] is True, r
        r = expect(c.post("/v1/backups/%s/restore" % b, {"force": True}), 200).json
        assert r["databaseId"] == "orig" and r["replaced"] is True, r
        assert count(c, "orig") == 5
        s.stop()
    finally:
        s.cleanup()


@test
def restore_brings_back_settings():
    """Description, index type and parameters, metric, sync mode and compaction policy survive."""
    s = repo_server()
    try:
        s.start()
        c = s.client()
        policy = {"deadRatio": 0.45, "minRecords": 17, "maxAgeSeconds": 3600}
        mkdb(c, "conf", dim=4, distanceMetric="cosine", description="product embeddings, v2",
             indexType="HNSW", indexParameters={"m": 24, "efConstruction": 150, "efSearch": 77},
             sync="interval:200", compactionPolicy=policy)
        put(c, "conf", 6)
        want = expect(c.get("/v1/databases/conf"), 200).json
        b = expect(c.post("/v1/databases/conf/backups", {"description": "before the migration"}), 201).json
        keys = ("description", "vectorDimension", "distanceMetric", "indexType", "indexParameters", "sync",
                "compactionPolicy")
        # Dropped, then restored under its own name; and restored under another one.
        expect(c.delete("/v1/databases/conf"), 200)
        expect(c.post("/v1/backups/%s/restore" % b["backupId"], {}), 201)
        expect(c.post("/v1/backups/%s/restore" % b["backupId"], {"targetDatabase": "conf2"}), 201)
        for name in ("conf", "conf2"):
            got = expect(c.get("/v1/databases/" + name), 200).json
            for k in keys:
                assert got[k] == want[k], (name, k, got[k], want[k])
            assert got["stats"]["vectorCount"] == 6
        # Over a database with other settings: the backup's settings replace them.
        mkdb(c, "plain", dim=4, description="something else", indexType="FLAT")
        r = expect(c.post("/v1/backups/%s/restore" % b["backupId"], {"targetDatabase": "plain", "force": True}), 200).json
        assert r["replaced"] is True and r["settingsRestored"] is True, r
        got = expect(c.get("/v1/databases/plain"), 200).json
        for k in keys:
            assert got[k] == want[k], ("plain", k, got[k], want[k])
        # And after a restart (they are in the MANIFEST and the server's metadata, not in memory).
        s.stop()
        s.start()
        c = s.client()
        got = expect(c.get("/v1/databases/conf"), 200).json
        for k in keys:
            assert got[k] == want[k], ("conf after restart", k, got[k], want[k])
        s.stop()
    finally:
        s.cleanup()


@test
def cli_backups_carry_the_description():
    """A backup made with the CLI carries the description the server keeps; a CLI restore writes it back."""
    s = repo_server()
    try:
        s.start()
        c = s.client()
        mkdb(c, "cli", description="made over HTTP", indexType="FLAT")
        put(c, "cli", 3)
        s.stop()

        def jvdb(*args):
            p = subprocess.run([jvdbtest.JVDB, "--data", s.data] + list(args) + ["--repo", s.repo, "--json"],
                               capture_output=True, text=True, env=s.env, timeout=120)
            assert p.returncode == 0, (args, p.stdout, p.stderr)
            return json.loads(p.stdout)

        bid = jvdb("backup", "create", "cli")["backupId"]
        r = jvdb("backup", "restore", bid, "--as", "cli2")
        assert r["database"] == "cli2" and r["replaced"] is False, r
        s.start()
        c = s.client()
        for name in ("cli", "cli2"):
            got = expect(c.get("/v1/databases/" + name), 200).json
            assert got["description"] == "made over HTTP" and got["indexType"] == "FLAT", got
        # And the server restores the CLI's backup with it too.
        expect(c.delete("/v1/databases/cli"), 200)
        expect(c.post("/v1/backups/%s/restore" % bid, {}), 201)
        assert expect(c.get("/v1/databases/cli"), 200).json["description"] == "made over HTTP"
        s.stop()
    finally:
        s.cleanup()


@test
def read_routes_do_not_create_the_repository():
    """A repository that does not exist: every read says so and nothing is created."""
    s = Server()
    repo = os.path.join(s.root, "typo", "repo")
    s.args = ["--backup-repo", repo]
    try:
        s.start()
        c = s.client()
        mkdb(c, "a")
        put(c, "a", 3)
        bid = "20250101T000000Z-full-1"
        msg = "repository %s does not exist" % repo
        for r in (c.get("/v1/databases/a/backups"), c.get("/v1/backups/" + bid), c.get("/v1/backups/a%2F" + bid),
                  c.post("/v1/backups/%s/verify" % bid), c.delete("/v1/backups/" + bid),
                  c.post("/v1/backups/%s/restore" % bid, {"targetDatabase": "b"})):
            expect(r, 404, "NOT_FOUND", msg)
        assert not os.path.exists(os.path.join(s.root, "typo")), os.listdir(s.root)
        # Only a backup creates it.
        expect(c.post("/v1/databases/a/backups", {}), 201)
        assert expect(c.get("/v1/databases/a/backups"), 200).json["total"] == 1
        s.stop()
    finally:
        s.cleanup()


@test
def concurrent_deletes_of_one_backup():
    """Eight clients delete the same backup at once: one 200, seven 404 or 409 REPOSITORY_BUSY."""
    s = repo_server()
    try:
        s.start()
        c = s.client()
        mkdb(c, "d")
        for rnd in range(5):
            put(c, "d", 3 + rnd)
            bid = expect(c.post("/v1/databases/d/backups", {}), 201).json["backupId"]
            clients = [s.client() for _ in range(8)]
            go = threading.Barrier(len(clients))
            results = [None] * len(clients)

            def run(i):
                go.wait()
                results[i] = clients[i].delete("/v1/backups/" + bid)

            threads = [threading.Thread(target=run, args=(i,)) for i in range(len(clients))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            for cl in clients:
                cl.close()
            statuses = sorted(r.status for r in results)
            # The others find it gone (404) or the repository still busy with the winner (409
            # REPOSITORY_BUSY: requests do not wait for the repository, issue 12).
            assert statuses[0] == 200 and all(st in (404, 409) for st in statuses[1:]), statuses
            ok = [r for r in results if r.status == 200][0].json
            assert ok["count"] == 1 and ok["deleted"] == [bid], ok
            for r in results:
                if r.status == 404:
                    expect(r, 404, "NOT_FOUND", bid)
                elif r.status == 409:
                    expect(r, 409, "REPOSITORY_BUSY")
            assert expect(c.get("/v1/databases/d/backups"), 200).json["total"] == 0
        s.stop()
    finally:
        s.cleanup()


if __name__ == "__main__":
    sys.exit(jvdbtest.run_tests(sys.argv))
