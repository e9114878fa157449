#!/usr/bin/env python3
"""Adversarial regression cases for the backup routes of issue 13 (repository-wide listing, the
schedule, encrypted repositories).

Usage: test_adversarial_backup_ops.py PATH_TO_JVDB [TEST...]

  - GET /v1/backups and GET /v1/backups/schedule without a repository: 409, like the other backup
    routes; on a repository that does not exist: the listing says so and creates nothing;
  - "schedule" is not taken for a backup id by the other methods, and other methods on the new
    routes are 405 with an Allow header;
  - an archive in an encrypted repository replaced by one from another backup, or cut at any point,
    makes verify answer valid:false naming the backup, and restore refuse, writing nothing;
  - a server with a key refuses to start on a plain repository that already holds backups.
The last line printed is "N passed, N failed".
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jvdbtest  # noqa: E402
from jvdbtest import Server, expect, test  # noqa: E402


def mkdb(c, name, dim=4):
    return expect(c.post("/v1/databases", {"name": name, "vectorDimension": dim, "distanceMetric": "euclidean"}), 201).json


def put(c, db, n, base=0, dim=4):
    expect(c.post("/v1/databases/%s/vectors/batch" % db,
                  {"vectors": [{"id": "v%d" % i, "values": [float(i + 1 + base)] * dim} for i in range(n)]}), 201)


def write_key(s, name="repo.key", ch="k"):
    path = os.path.join(s.root, name)
    with open(path, "w") as f:
        f.write(ch * 48 + "\n")
    return path


@test
def new_routes_without_or_with_a_missing_repository():
    s = Server()
    try:
        s.start()
        c = s.client()
        for path in ("/v1/backups", "/v1/backups/schedule"):
            r = c.get(path)
            assert r.status == 409 and r.json["error"] == "NO_BACKUP_REPOSITORY", (path, r)
        s.stop()
        missing = os.path.join(s.root, "typo", "repo")
        s.args = ["--backup-repo", missing]
        s.start()
        c = s.client()
        r = c.get("/v1/backups")
        assert r.status == 404 and "does not exist" in r.json["message"], r
        assert expect(c.get("/v1/backups/schedule"), 200).json["enabled"] is False
        assert not os.path.exists(os.path.join(s.root, "typo"))
        for method in ("POST", "PUT"):
            r = c.request(method, "/v1/backups/schedule", {})
            assert r.status == 405, (method, r)
        r = c.delete("/v1/backups/schedule")
        assert r.status == 400 and "not a backup id" in r.json["message"], r
        s.stop()
    finally:
        s.cleanup()


@test
def encrypted_archive_swapped_or_cut():
    s = Server()
    repo = os.path.join(s.root, "repo")
    key = write_key(s)
    s.args = ["--backup-repo", repo, "--repo-key-file", key]
    try:
        s.start()
        c = s.client()
        mkdb(c, "d")
        put(c, "d", 30)
        a = expect(c.post("/v1/databases/d/backups", {}), 201).json["backupId"]
        put(c, "d", 30, base=100)
        b = expect(c.post("/v1/databases/d/backups", {}), 201).json["backupId"]
        pa = os.path.join(repo, "d", a, "data.jvb.zst")
        pb = os.path.join(repo, "d", b, "data.jvb.zst")
        orig = open(pb, "rb").read()
        other = open(pa, "rb").read()
        before = sorted(os.listdir(os.path.join(s.data, "databases")))
        for what, data in (("another backup's archive", other), ("cut by one byte", orig[:-1]),
                           ("cut to the header", orig[:32]), ("a byte appended", orig + b"\0")):
            with open(pb, "wb") as f:
                f.write(data)
            v = expect(c.post("/v1/backups/%s/verify" % b, {}), 200).json
            assert v["valid"] is False and b in v["message"], (what, v)
            r = c.post("/v1/backups/%s/restore" % b, {"targetDatabase": "x"})
            assert r.status >= 400 and b in r.json["message"], (what, r)
            assert sorted(os.listdir(os.path.join(s.data, "databases"))) == before, what
        with open(pb, "wb") as f:
            f.write(orig)
        assert expect(c.post("/v1/backups/%s/verify" % b, {}), 200).json["valid"] is True
        s.stop()
    finally:
        s.cleanup()


@test
def key_on_a_plain_repository_refused_at_start():
    s = Server()
    repo = os.path.join(s.root, "repo")
    s.args = ["--backup-repo", repo]
    try:
        s.start()
        c = s.client()
        mkdb(c, "p")
        expect(c.post("/v1/databases/p/backups", {}), 201)
        s.stop()
        s.args = ["--backup-repo", repo, "--repo-key-file", write_key(s)]
        try:
            s.start()
            raise AssertionError("started with a key on a plain repository")
        except AssertionError as e:
            assert "is not encrypted" in str(e), e
        s.proc = None
        s.args = ["--repo-key-file", write_key(s)]
        try:
            s.start()
            raise AssertionError("started with a key and no repository")
        except AssertionError as e:
            assert "--repo-key-file is the key of a backup repository" in str(e), e
        s.proc = None
    finally:
        s.cleanup()


if __name__ == "__main__":
    sys.exit(jvdbtest.run_tests(sys.argv))
