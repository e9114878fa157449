#!/usr/bin/env python3
"""test_replacements.py JVDB — crashes at the small file replacements outside the store.

Five files are replaced whole through fs_replace_file (core/fs.c: <file>.tmp, fsync, rename, fsync
the directory), each with its crash points <label>.before_rename and <label>.after_rename
(docs/ARCHITECTURE.md section 5):

  api_keys              <data>/server/api-keys          jvdb keys create / revoke (server/keys.c)
  server.dbmeta         <data>/server/<db>.json         the server's database metadata (dbmeta.c)
  cli.dbmeta            <data>/server/<db>.json         written by `jvdb backup restore` (cli_backup.c)
  backup.repo_object    <repo>/jvdb-repo.json           the encryption marker (repo_fs.c write_object)
  restore.index         <hidden db>/ext.hnsw            restore installing the backup's graph (backup.c)

The process is killed (SIGKILL, JVDB_CRASH_AT) at each point; then the file must be the old or the
new whole version (never torn, never missing where it existed), the server or the CLI must start on
the data directory, and a restored database must answer.  The last line is "N passed, N failed".
"""
import json
import os
import shutil
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "e2e"))
sys.path.insert(0, os.path.join(HERE, "..", "backup"))
import jvdbtest  # noqa: E402
from jvdbtest import Server, expect  # noqa: E402
import test_backup_cli as harness  # noqa: E402
from test_backup_cli import Env, expected, rows_for  # noqa: E402


def read(path):
    """The bytes of path, or None when there is no such file."""
    try:
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def killed(p, point):
    """Asserts the command died at its crash point."""
    assert p.returncode == -signal.SIGKILL, (point, p.returncode, p.stdout, p.stderr)


def key_ids(path):
    """The key ids of the key file (which must be whole JSON)."""
    return sorted(k["key_id"] for k in json.loads(read(path))["keys"])


def authorised(e, key):
    """Starts the server on the data directory and says whether it accepts key."""
    s = Server(root=e.root, data=e.data, env=dict(e.env))
    try:
        s.start()
        st = s.client(key).get("/v1/databases").status
        s.stop()
        return st == 200
    finally:
        s.cleanup()


def api_keys():
    """jvdb keys create / revoke killed before and after the rename of <data>/server/api-keys."""
    for point in ("api_keys.before_rename", "api_keys.after_rename"):
        e = Env(JVDB)
        try:
            e.run("db", "create", "a", "--dim", 4)
            path = os.path.join(e.data, "server", "api-keys")
            first = json.loads(e.run("keys", "create", "--role", "admin", "--json").stdout)
            old = read(path)
            killed(e.run("keys", "create", "--role", "read", crash_at=point, expect=None), point)
            now = read(path)
            # Hashes only, yet never readable by others, also between the rename and a chmod.
            assert os.stat(path).st_mode & 0o777 == 0o600, (point, oct(os.stat(path).st_mode))
            if point.startswith("api_keys.before"):
                assert now == old, f"{point}: the key file changed"
                assert os.path.exists(path + ".tmp"), f"{point}: the crash was not at the replacement"
            else:
                ids = key_ids(path)
                assert len(ids) == 2 and first["keyId"] in ids, (point, ids)
            # The CLI and the server read the file; the acknowledged key opens the server.
            listed = json.loads(e.run("keys", "list", "--json").stdout)["apiKeys"]
            assert sorted(k["keyId"] for k in listed) == key_ids(path), (point, listed)
            assert authorised(e, first["apiKey"]), f"{point}: the first key no longer opens the server"
            # A revoke killed at the same point: the key is revoked or not, the file whole.
            old = read(path)
            killed(e.run("keys", "revoke", first["keyId"], crash_at=point, expect=None), point)
            if point.startswith("api_keys.before"):
                assert read(path) == old and authorised(e, first["apiKey"]), point
            else:
                assert first["keyId"] not in key_ids(path), point
                assert not authorised(e, first["apiKey"]), f"{point}: a revoked key opens the server"
            # The next write goes through (the lock died with the process, the .tmp is replaced).
            again = json.loads(e.run("keys", "create", "--role", "admin", "--json").stdout)
            assert again["keyId"] in key_ids(path) and authorised(e, again["apiKey"]), point
        finally:
            e.close()


def crash_and_restart(s, point, method, path, body):
    """Starts the server armed at point, sends the request that reaches it, checks the server died
    there, restarts it unarmed and returns a client."""
    s.env["JVDB_CRASH_AT"] = point
    s.start()
    try:
        getattr(s.client(), method)(path, body, retry=False)
    except (ConnectionError, OSError):
        pass   # the connection died with the process
    s.proc.wait(30)
    assert s.stop(expect=None) == -signal.SIGKILL, f"{point} was not reached; log:\n{s.log()[-3000:]}"
    del s.env["JVDB_CRASH_AT"]
    s.start()
    return s.client()


def server_dbmeta():
    """The server killed while it replaces <data>/server/<db>.json: at a create (no file before) and
    at a description change (the old file before)."""
    for point in ("server.dbmeta.before_rename", "server.dbmeta.after_rename"):
        s = Server()
        try:
            path = os.path.join(s.data, "server", "d.json")
            # A create killed at the write of the new database's file.
            c = crash_and_restart(s, point, "post", "/v1/databases",
                                  {"name": "d", "vectorDimension": 4, "description": "v1"})
            got = expect(c.get("/v1/databases/d"), 200)
            if point.startswith("server.dbmeta.before"):
                assert read(path) is None and got["description"] == "", (point, got)
            else:
                assert json.loads(read(path))["description"] == "v1" and got["description"] == "v1", (point, got)
            expect(c.put("/v1/databases/d", {"description": "v1"}), 200)
            expect(c.post("/v1/databases/d/vectors", {"id": "x", "values": [1, 2, 3, 4]}), 201)
            s.stop()
            old = read(path)
            # A description change killed at the same point.
            c = crash_and_restart(s, point, "put", "/v1/databases/d", {"description": "v2"})
            got = expect(c.get("/v1/databases/d"), 200)
            want = "v1" if point.startswith("server.dbmeta.before") else "v2"
            assert got["description"] == want, (point, got)
            assert json.loads(read(path))["description"] == want, point
            if want == "v1":
                assert read(path) == old and os.path.exists(path + ".tmp"), point
            assert expect(c.get("/v1/databases/d/vectors/x"), 200)["values"] == [1, 2, 3, 4]
            s.stop()
        finally:
            s.cleanup()


def cli_dbmeta():
    """`jvdb backup restore` killed while it writes the description the backup carried into
    <data>/server/<db>.json: over an existing file (--force) and where there was none (--as)."""
    for point in ("cli.dbmeta.before_rename", "cli.dbmeta.after_rename"):
        e = Env(JVDB)
        try:
            e.run("db", "create", "d", "--dim", 4)
            e.import_rows("d", rows_for(range(20), 4, 1))
            meta = os.path.join(e.data, "server", "d.json")
            os.makedirs(os.path.dirname(meta), exist_ok=True)
            with open(meta, "w") as f:
                json.dump({"description": "carried", "created_ns": 1, "updated_ns": 1}, f)
            bid = e.bk_json("create", "d")["backupId"]
            with open(meta, "w") as f:
                json.dump({"description": "changed since", "created_ns": 1, "updated_ns": 2}, f)
            old = read(meta)
            restored = e.contents("d")
            e.import_rows("d", rows_for(range(20, 30), 4, 2))
            for target, args in (("d", ("--force",)), ("e", ("--as", "e"))):
                path = os.path.join(e.data, "server", target + ".json")
                before = read(path)
                killed(e.bk("restore", bid, *args, crash_at=point, expect=None), point)
                now = read(path)
                if point.startswith("cli.dbmeta.before"):
                    assert now == before and os.path.exists(path + ".tmp"), (point, target, now)
                else:
                    assert json.loads(now)["description"] == "carried", (point, target, now)
                # The database was published before its description: it is the restored one.
                assert e.contents(target) == restored, (point, target)
            assert read(meta) == old or json.loads(read(meta))["description"] == "carried"
            # The server starts on it and shows a whole description.
            s = Server(root=e.root, data=e.data, env=dict(e.env))
            try:
                s.start()
                for target in ("d", "e"):
                    desc = expect(s.client().get(f"/v1/databases/{target}"), 200)["description"]
                    assert desc in ("carried", "changed since", ""), (point, target, desc)
                s.stop()
            finally:
                s.cleanup()
        finally:
            e.close()


def encryption_marker():
    """The first backup into an empty repository with a key, killed while it writes the marker
    <repo>/jvdb-repo.json: no marker (the repository is still empty and unencrypted) or the whole
    marker of that key; either way the next backup and its restore work, another key is refused."""
    for point in ("backup.repo_object.before_rename", "backup.repo_object.after_rename"):
        e = Env(JVDB)
        try:
            e.run("db", "create", "d", "--dim", 4)
            rows = rows_for(range(30), 4, 1)
            e.import_rows("d", rows)
            key = os.path.join(e.root, "repo.key")
            other = os.path.join(e.root, "other.key")
            for p, ch in ((key, "k"), (other, "o")):
                with open(p, "w") as f:
                    f.write(ch * 40 + "\n")
            marker = os.path.join(e.repo, "jvdb-repo.json")
            killed(e.bk("create", "d", "--repo-key-file", key, crash_at=point, expect=None), point)
            if point.startswith("backup.repo_object.before"):
                assert read(marker) is None and os.path.exists(marker + ".tmp"), point
            else:
                assert json.loads(read(marker)), point   # whole JSON
            assert e.bk_json("list", "--repo-key-file", key)["backups"] == [], point
            bid = e.bk_json("create", "d", "--repo-key-file", key)["backupId"]
            written = read(marker)
            assert written and json.loads(written), point
            err = e.bk("list", "--repo-key-file", other, expect=1).stderr
            assert "does not open repository" in err, (point, err)
            err = e.bk("list", expect=1).stderr
            assert "is encrypted: give its key file" in err, (point, err)
            e.bk("restore", bid, "--as", "r", "--repo-key-file", key)
            assert e.contents("r") == expected(rows), point
            assert "intact" in e.bk("verify", bid, "--repo-key-file", key).stdout
        finally:
            e.close()


def search_top(e, name, vec):
    """The id the HNSW index of name ranks first for vec."""
    out = e.run("search", name, "--index", "--k", 1, "--json", "--vector", ",".join(map(str, vec))).stdout
    return json.loads(out)["results"][0]["vectorId"]


def restore_index():
    """A restore killed while it installs the backup's HNSW graph into the hidden database: the
    database it would replace is untouched (records and graph), the leftover goes at the next
    writable open, and the next restore installs the graph and answers searches."""
    e = Env(JVDB)
    try:
        e.run("db", "create", "g", "--dim", 8, "--metric", "l2")
        rows = rows_for(range(300), 8, 1)
        e.import_rows("g", rows)
        assert search_top(e, "g", rows["id7"][0]) == "id7"   # builds and saves ext.hnsw
        graph = os.path.join(e.data, "databases", "g", "ext.hnsw")
        assert read(graph), "the CLI saved no graph"
        bid = e.bk_json("create", "g")["backupId"]
        e.import_rows("g", rows_for(range(250, 400), 8, 2))
        assert search_top(e, "g", rows["id3"][0]) == "id3"
        before, old_graph = e.contents("g"), read(graph)
        for point in ("restore.index.before_rename", "restore.index.after_rename"):
            killed(e.bk("restore", bid, "--force", crash_at=point, expect=None), point)
            assert e.contents("g") == before and read(graph) == old_graph, f"g changed after a crash at {point}"
            e.run("db", "repair", "g")   # a writing open removes the hidden leftover
            left = [d for d in os.listdir(os.path.join(e.data, "databases")) if d.startswith(".")]
            assert left == [], (point, left)
            assert read(graph) == old_graph, point
        e.bk("restore", bid, "--force")
        assert e.contents("g") == expected(rows)
        assert read(graph), "the restore installed no graph"
        for i in ("id0", "id123", "id299"):
            assert search_top(e, "g", rows[i][0]) == i, i
    finally:
        e.close()


if __name__ == "__main__":
    JVDB = os.path.abspath(sys.argv[1])
    jvdbtest.JVDB = JVDB
    wanted = set(sys.argv[2:])
    for t in (api_keys, server_dbmeta, cli_dbmeta, encryption_marker, restore_index):
        if not wanted or t.__name__ in wanted:
            harness.test(t)
    print(f"{harness.passed} passed, {harness.failed} failed")
    sys.exit(1 if harness.failed else 0)
