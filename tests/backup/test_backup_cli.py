#!/usr/bin/env python3
"""Backups through the jvdb program (issue 5): the seed's checklist as an operator types it,
corruption reported by verify/restore with the backup named and nothing written, and crashes:
SIGKILL during a backup (at its crash points and at random moments) never leaves a visible partial
backup, and during a restore never touches the previous database.

usage: test_backup_cli.py JVDB_BINARY          (python3 standard library only)

The Env class and the checks here are reused by test_backup_s3.py against an S3 repository.
"""
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

passed = failed = 0


def test(fn):
    global passed, failed
    t0 = time.monotonic()
    try:
        fn()
        passed += 1
        print(f"ok   {fn.__name__} ({time.monotonic() - t0:.1f}s)", flush=True)
    except Exception as e:  # noqa: BLE001 - report every failure and go on
        failed += 1
        print(f"FAIL {fn.__name__}: {type(e).__name__}: {e}", flush=True)


class Env:
    """A data directory and a repository, driven through the jvdb binary."""

    def __init__(self, jvdb, repo=None, extra_env=None):
        self.jvdb = jvdb
        self.root = tempfile.mkdtemp(prefix="jvdb-backup-")
        self.data = os.path.join(self.root, "data")
        self.repo = repo or os.path.join(self.root, "repo")
        self.env = dict(os.environ)
        self.env.pop("JVDB_CRASH_AT", None)
        self.env.update(extra_env or {})

    def run(self, *args, expect=0, crash_at=None, timeout=120):
        env = dict(self.env)
        if crash_at:
            env["JVDB_CRASH_AT"] = crash_at
        p = subprocess.run([self.jvdb, "--data", self.data] + [str(a) for a in args], capture_output=True,
                           text=True, env=env, timeout=timeout)
        if expect is not None and p.returncode != expect:
            raise AssertionError(f"{args}: exit {p.returncode}, expected {expect}\nstdout: {p.stdout}\nstderr: {p.stderr}")
        return p

    def bk(self, *args, **kw):
        return self.run("backup", *args, "--repo", self.repo, **kw)

    def bk_json(self, *args):
        return json.loads(self.bk(*args, "--json").stdout)

    def listing(self, name=None):
        return self.bk_json("list", *([name] if name else []))["backups"]

    def contents(self, name):
        out = self.run("export", name, "-").stdout
        rows = {}
        for line in out.splitlines():
            r = json.loads(line)
            rows[r["id"]] = (struct.pack(f"<{len(r['values'])}f", *r["values"]), json.dumps(r.get("metadata"), sort_keys=True))
        return rows

    def import_rows(self, name, rows):
        """rows: {id: (values, metadata or None)}"""
        path = os.path.join(self.root, "rows.jsonl")
        with open(path, "w") as f:
            for i, (v, m) in rows.items():
                rec = {"id": i, "values": v}
                if m is not None:
                    rec["metadata"] = m
                f.write(json.dumps(rec) + "\n")
        self.run("import", name, path, "--batch", "2000")

    def close(self):
        shutil.rmtree(self.root, ignore_errors=True)


def rows_for(ids, dim, version, seed=7):
    rnd = random.Random(seed * 1000003 + version)
    out = {}
    for i in ids:
        vals = [struct.unpack("<f", struct.pack("<f", rnd.uniform(-1, 1)))[0] for _ in range(dim)]
        meta = None if i % 4 == 0 else {"n": i, "v": version, "tag": f"t{i % 5}", "note": "naïve ✓"}
        out[f"id{i}"] = (vals, meta)
    return out


def expected(rows):
    return {k: (struct.pack(f"<{len(v)}f", *v), json.dumps(m, sort_keys=True)) for k, (v, m) in rows.items()}


# ---------------------------------------------------------------- the checklist, over the CLI

def checklist(e):
    e.run("db", "create", "docs", "--dim", 8)
    first = rows_for(range(50), 8, 1)
    e.import_rows("docs", first)
    full = e.bk_json("create", "docs", "--description", "before the change")
    assert full["type"] == "full" and full["putCount"] == 50 and full["deleteCount"] == 0, full
    assert full["description"] == "before the change"
    if "://" not in e.repo and "JVDB_REPO_KEY_FILE" not in e.env:
        d = os.path.join(e.repo, "docs", full["backupId"])
        assert os.path.getsize(os.path.join(d, "backup.json")) > 0
        assert os.path.getsize(os.path.join(d, "data.jvb.zst")) == full["storedBytes"]
    change = rows_for(range(45, 60), 8, 2)   # 5 modified, 10 added
    e.import_rows("docs", change)
    inc = e.bk_json("create", "docs", "--type", "incremental")
    assert inc["type"] == "incremental" and inc["parent"] == full["backupId"], inc
    assert inc["putCount"] == 15 and inc["deleteCount"] == 0, inc
    state = dict(first)
    state.update(change)
    ids = list(e.contents("docs"))
    e.run("delete", "docs", *ids)
    assert e.contents("docs") == {}
    err = e.bk("restore", inc["backupId"], expect=1).stderr
    assert "already exists" in err, err
    out = e.bk("restore", inc["backupId"], "--force").stdout
    assert "restored" in out, out
    assert e.contents("docs") == expected(state), "restored vectors or metadata differ"
    e.bk("restore", full["backupId"], "--as", "docs_at_full")
    assert e.contents("docs_at_full") == expected(first)
    hist = e.listing("docs")
    assert [b["backupId"] for b in hist] == [full["backupId"], inc["backupId"]], hist
    assert all(b["status"] == "ok" and b["restorable"] for b in hist), hist
    text = e.bk("list", "docs").stdout.splitlines()
    assert text[0].split()[:3] == ["DATABASE", "ID", "TYPE"] and full["backupId"] in text[1] and inc["backupId"] in text[2], text
    shown = e.bk_json("show", inc["backupId"])
    assert shown["sha256"] == inc["sha256"] and shown["chainLength"] == 2
    assert "intact" in e.bk("verify", inc["backupId"]).stdout
    return full, inc


def test_checklist():
    e = Env(JVDB)
    try:
        checklist(e)
    finally:
        e.close()


def test_delete_prune_cli():
    e = Env(JVDB)
    try:
        e.run("db", "create", "r", "--dim", 4)
        ids = []
        for k in range(4):
            e.import_rows("r", rows_for(range(k * 5, k * 5 + 8), 4, k + 1))
            ids.append(e.bk_json("create", "r", "--type", "incremental")["backupId"])
        err = e.bk("delete", ids[1], expect=1).stderr
        assert "dependant" in err and ids[2] in err, err
        out = e.bk_json("delete", ids[2], "--cascade")
        assert out["deleted"] == [ids[3], ids[2]], out
        out = e.bk_json("prune", "r", "--keep", "1")
        assert out["deleted"] == [], out          # the newest point needs both that are left
        e.bk("create", "r")
        out = e.bk_json("prune", "r", "--keep", "1")
        assert out["deleted"] == [ids[1], ids[0]], out
        left = e.listing("r")
        assert len(left) == 1 and left[0]["restorable"], left
        assert e.bk("prune", "r", expect=2).returncode == 2
    finally:
        e.close()


# ---------------------------------------------------------------- corruption over the CLI

def flip_byte(path, off):
    with open(path, "r+b") as f:
        f.seek(off)
        b = f.read(1)
        f.seek(off)
        f.write(bytes([b[0] ^ 0x01]))


def test_corruption_cli():
    e = Env(JVDB)
    try:
        full, inc = checklist(e)
        before_db = e.contents("docs")
        before_dir = sorted(os.listdir(os.path.join(e.data, "databases")))
        for b in (full, inc):
            for name in ("data.jvb.zst", "backup.json"):
                path = os.path.join(e.repo, "docs", b["backupId"], name)
                size = os.path.getsize(path)
                for off in sorted({0, size // 2, size - 1, random.randrange(size)}):
                    flip_byte(path, off)
                    err = e.bk("verify", inc["backupId"], expect=1).stderr
                    assert b["backupId"] in err, f"verify does not name {b['backupId']}: {err}"
                    err = e.bk("restore", inc["backupId"], "--as", "fresh", expect=1).stderr
                    assert b["backupId"] in err and "nothing was written" in err or b["backupId"] in err, err
                    e.bk("restore", inc["backupId"], "--force", expect=1)
                    flip_byte(path, off)
                    assert sorted(os.listdir(os.path.join(e.data, "databases"))) == before_dir
        assert e.contents("docs") == before_db
        e.bk("verify", inc["backupId"])
    finally:
        e.close()


# ---------------------------------------------------------------- encrypted repositories (issue 13)

def key_file(e, name, seed):
    path = os.path.join(e.root, name)
    with open(path, "w") as f:
        f.write("".join(random.Random(seed).choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(48)) + "\n")
    return path


def encrypted_checks(e, obj_path=None):
    """The checklist through an encrypted repository (key from JVDB_REPO_KEY_FILE), then every wrong
    way of opening it; obj_path(backup_id, name) gives an object's file to damage, if reachable."""
    key = key_file(e, "repo.key", 1)
    e.env["JVDB_REPO_KEY_FILE"] = key
    full, inc = checklist(e)
    del e.env["JVDB_REPO_KEY_FILE"]
    # --repo-key-file does the same as the variable.
    assert "intact" in e.bk("verify", inc["backupId"], "--repo-key-file", key).stdout
    for args in (("list",), ("show", inc["backupId"]), ("verify", inc["backupId"]), ("restore", inc["backupId"], "--as", "x"),
                 ("create", "docs"), ("prune", "docs", "--keep", 1), ("delete", inc["backupId"])):
        err = e.bk(*args, expect=1).stderr
        assert "is encrypted: give its key file" in err, (args, err)
        err = e.bk(*args, "--repo-key-file", key_file(e, "other.key", 2), expect=1).stderr
        assert "does not open repository" in err, (args, err)
    assert "x" not in e.run("db", "list").stdout.split()
    assert len(e.bk_json("list", "--repo-key-file", key)["backups"]) == 2
    if obj_path:
        # Flip one byte anywhere in any object: verify fails and names the backup.
        for b in (full, inc):
            for name in ("data.jvb.zst", "backup.json"):
                path = obj_path(b["backupId"], name)
                size = os.path.getsize(path)
                for off in sorted({0, 20, size // 2, size - 2, random.randrange(size)}):
                    flip_byte(path, off)
                    err = e.bk("verify", inc["backupId"], "--repo-key-file", key, expect=1).stderr
                    assert b["backupId"] in err, f"byte {off} of {path}: {err}"
                    flip_byte(path, off)
        assert "intact" in e.bk("verify", inc["backupId"], "--repo-key-file", key).stdout
    return key, full, inc


def test_encrypted_cli():
    e = Env(JVDB)
    try:
        key, _, _ = encrypted_checks(e, lambda bid, name: os.path.join(e.repo, "docs", bid, name))
        # The archive holds no readable record: an id of the database is nowhere in the repository.
        for dirpath, _, files in os.walk(e.repo):
            for f in files:
                with open(os.path.join(dirpath, f), "rb") as fh:
                    assert b"id45" not in fh.read(), f
        # A key on a plain repository that holds backups is refused; a short key file too.
        plain = Env(JVDB)
        try:
            plain.run("db", "create", "p", "--dim", 4)
            plain.bk("create", "p")
            err = plain.bk("list", "--repo-key-file", key, expect=1).stderr
            assert "is not encrypted" in err, err
            short = os.path.join(plain.root, "short.key")
            with open(short, "w") as f:
                f.write("tooshort\n")
            err = plain.bk("list", "--repo-key-file", short, expect=1).stderr
            assert "at least 32" in err, err
        finally:
            plain.close()
    finally:
        e.close()


# ---------------------------------------------------------------- operations (issue 13)

def test_operations_cli():
    """verify --all, restore --latest / --all, a repository-wide list, prune --dry-run and calendar
    retention, as an operator uses them after a disaster."""
    e = Env(JVDB)
    try:
        tips = {}
        for name in ("alpha", "beta"):
            e.run("db", "create", name, "--dim", 4)
            e.import_rows(name, rows_for(range(6), 4, 1))
            e.bk("create", name)
            e.import_rows(name, rows_for(range(4, 9), 4, 2))
            tips[name] = e.bk_json("create", name, "--type", "incremental")["backupId"]
        everything = e.listing()
        assert sorted({b["databaseId"] for b in everything}) == ["alpha", "beta"] and len(everything) == 4, everything
        out = e.bk_json("verify", "--all")
        assert out["checked"] == 4 and out["bad"] == 0, out
        want = {n: e.contents(n) for n in ("alpha", "beta")}
        # A disaster: a fresh data directory; one command brings every database back at its newest point.
        e.data = os.path.join(e.root, "data2")
        out = e.bk_json("restore", "--all")
        assert out["failed"] == 0 and sorted(r["database"] for r in out["restored"]) == ["alpha", "beta"], out
        assert {r["database"]: r["backup"] for r in out["restored"]} == tips, out
        assert {n: e.contents(n) for n in ("alpha", "beta")} == want
        # Again: they exist now, so without --force each one fails and the command says so.
        p = e.bk("restore", "--all", expect=1)
        assert "already exists" in p.stderr and "0 databases restored, 2 failed" in p.stdout, (p.stdout, p.stderr)
        r = e.bk_json("restore", "--latest", "--database", "beta", "--as", "beta2")
        assert r["backup"] == tips["beta"] and r["database"] == "beta2" and r["count"] == 9, r
        assert "no restorable backup of 'gamma'" in e.bk("restore", "--latest", "--database", "gamma", expect=1).stderr
        for bad in (("restore",), ("restore", tips["beta"], "--latest", "--database", "beta"), ("restore", "--latest"),
                    ("restore", "--all", "--as", "x"), ("verify",), ("verify", tips["beta"], "--all"),
                    ("prune", "alpha"), ("prune", "alpha", "--keep-daily", "0")):
            assert e.bk(*bad, expect=2).returncode == 2, bad
        # prune --dry-run names what a prune would delete and deletes nothing.
        e.bk("create", "alpha")
        before = e.listing("alpha")
        out = e.bk_json("prune", "alpha", "--keep", 1, "--dry-run")
        assert out["dryRun"] and out["wouldDelete"] == out["would_delete"] == [before[1]["backupId"], before[0]["backupId"]], out
        assert e.listing("alpha") == before
        assert "would delete" in e.bk("prune", "alpha", "--keep", 1, "--dry-run").stdout
        # Calendar retention: every backup here is from today, so --keep-daily 1 keeps only the newest
        # (and what it needs), as --keep 1 would; --keep-weekly 1 likewise.
        out = e.bk_json("prune", "alpha", "--keep-daily", 1, "--dry-run")
        assert out["wouldDelete"] == [before[1]["backupId"], before[0]["backupId"]], out
        out = e.bk_json("prune", "alpha", "--keep-weekly", 1)
        assert out["deleted"] == [before[1]["backupId"], before[0]["backupId"]], out
        assert [b["backupId"] for b in e.listing("alpha")] == [before[2]["backupId"]]
        # A corrupt archive: verify --all reports it (and what depends on it) and fails.
        full_beta = [b for b in e.listing("beta") if b["type"] == "full"][0]
        flip_byte(os.path.join(e.repo, "beta", full_beta["backupId"], "data.jvb.zst"), 5)
        p = e.bk("verify", "--all", expect=1)
        assert f"BAD  beta/{full_beta['backupId']}" in p.stdout and f"BAD  beta/{tips['beta']}" in p.stdout, p.stdout
        assert f"ok   alpha/{before[2]['backupId']}" in p.stdout and "2 bad" in p.stdout, p.stdout
        # The incremental damaged instead: the full backup under it was read without fault.
        flip_byte(os.path.join(e.repo, "beta", full_beta["backupId"], "data.jvb.zst"), 5)
        flip_byte(os.path.join(e.repo, "beta", tips["beta"], "data.jvb.zst"), 5)
        p = e.bk("verify", "--all", expect=1)
        assert f"ok   beta/{full_beta['backupId']}" in p.stdout and f"BAD  beta/{tips['beta']}" in p.stdout, p.stdout
        assert "1 bad" in p.stdout, p.stdout
    finally:
        e.close()


# ---------------------------------------------------------------- crashes

def visible_backups_all_verify(e, name):
    for b in e.listing(name):
        assert b["restorable"], b
        e.bk("verify", b["backupId"])


def big_env():
    e = Env(JVDB)
    e.run("db", "create", "big", "--dim", 128, "--sync", "never")
    rows = rows_for(range(9000), 128, 1)   # > 4 MiB: two progress steps, so backup.write:2 is reached
    e.import_rows("big", rows)
    return e, rows


def test_crash_during_backup():
    e, rows = big_env()
    try:
        # At the crash points: mid-stream, just before and just after the commit rename.
        for point, visible in (("backup.write:2", 0), ("backup.before_publish", 0), ("backup.after_publish", 1)):
            # The first create makes the repository; until then there is nothing to list.
            n0 = len(e.listing("big")) if os.path.isdir(e.repo) else 0
            p = e.bk("create", "big", crash_at=point, expect=None)
            assert p.returncode == -signal.SIGKILL, (point, p.returncode, p.stderr)
            assert len(e.listing("big")) == n0 + visible, (point, e.listing("big"))
            visible_backups_all_verify(e, "big")
        # At random moments.
        t0 = time.monotonic()
        e.bk("create", "big", "--type", "incremental")
        full_time = max(time.monotonic() - t0, 0.05)
        e.run("put", "big", "id1", "--vector", ",".join(["0.5"] * 128))
        rnd = random.Random(int(os.environ.get("JVDB_CRASH_SEED", "5")))
        for _ in range(4):
            env = dict(e.env)
            proc = subprocess.Popen([e.jvdb, "--data", e.data, "backup", "create", "big", "--repo", e.repo],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
            time.sleep(rnd.uniform(0, full_time * 1.5))
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            visible_backups_all_verify(e, "big")
        # The database itself went on undisturbed.
        e.bk("create", "big", "--type", "incremental")
        last = e.listing("big")[-1]
        e.bk("restore", last["backupId"], "--as", "check")
        want = expected(rows)
        want["id1"] = (struct.pack("<128f", *([0.5] * 128)), json.dumps(None))
        assert e.contents("check") == want
    finally:
        e.close()


def test_crash_during_restore():
    e = Env(JVDB)
    try:
        e.run("db", "create", "s", "--dim", 8)
        e.import_rows("s", rows_for(range(300), 8, 1))
        e.bk("create", "s")
        e.import_rows("s", rows_for(range(200, 400), 8, 2))
        e.run("delete", "s", "id3", "id4")
        e.bk("create", "s", "--type", "incremental")
        target = e.listing("s")[-1]["backupId"]
        e.import_rows("s", rows_for(range(0, 50), 8, 3))   # the live database differs from the backup
        before = e.contents("s")
        e.bk("restore", target, "--as", "ref")
        restored = e.contents("ref")
        assert restored != before
        # write.*_append: the append tail a restore shares with put (db_append_locked).
        for point in ("write.before_append", "write.after_append:2", "restore.applied", "restore.applied:2",
                      "restore.before_publish", "publish.before_rename"):
            p = e.bk("restore", target, "--force", crash_at=point, expect=None)
            assert p.returncode == -signal.SIGKILL, (point, p.returncode, p.stderr)
            assert e.contents("s") == before, f"database changed after a crash at {point}"
            e.run("db", "repair", "s")   # export is read-only: a writing open removes the leftovers
            left = [d for d in os.listdir(os.path.join(e.data, "databases")) if d.startswith(".")]
            assert left == [], f"leftovers after recovery from {point}: {left}"
        p = e.bk("restore", target, "--force", crash_at="publish.after_rename", expect=None)
        assert p.returncode == -signal.SIGKILL
        assert e.contents("s") == restored, "a restore that passed its commit point must be whole"
        e.run("db", "drop", "s")
        e.bk("restore", target, "--as", "s")
        # Random moments: the database is either exactly the old one or exactly the restored one.
        e.import_rows("s", rows_for(range(0, 50), 8, 3))
        before = e.contents("s")
        rnd = random.Random(11)
        for _ in range(6):
            proc = subprocess.Popen([e.jvdb, "--data", e.data, "backup", "restore", target, "--force", "--repo", e.repo],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=e.env)
            time.sleep(rnd.uniform(0, 0.4))
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            now = e.contents("s")
            assert now in (before, restored), "restore left a database that is neither the old nor the restored one"
            if now == restored:
                e.import_rows("s", rows_for(range(0, 50), 8, 3))
                assert e.contents("s") == before
    finally:
        e.close()


def test_fallback_message_cli():
    e = Env(JVDB)
    try:
        e.run("db", "create", "f", "--dim", 4)
        e.import_rows("f", rows_for(range(10), 4, 1))
        p = e.bk("create", "f", "--type", "differential")
        assert "created full backup" in p.stdout and "note:" in p.stderr and "full" in p.stderr, (p.stdout, p.stderr)
        p = e.bk("create", "f", "--type", "bogus", expect=2)
        assert "--type" in p.stderr
        assert e.run("backup", "list", expect=2).returncode == 2   # no --repo
        assert "not found" in e.bk("show", "20990101T000000Z-full-9", expect=1).stderr
    finally:
        e.close()


def test_missing_repository_cli():
    """issue 9 item 12: read-only commands on a mistyped repository say so and create nothing."""
    e = Env(JVDB)
    e.repo = os.path.join(e.root, "typo", "repo")
    try:
        e.run("db", "create", "f", "--dim", 4)
        e.import_rows("f", rows_for(range(5), 4, 1))
        bid = "20250101T000000Z-full-1"
        for args in (("list",), ("list", "f"), ("show", bid), ("show", "f/" + bid), ("verify", bid),
                     ("delete", bid), ("prune", "f", "--keep", 1), ("restore", bid, "--as", "g")):
            p = e.bk(*args, expect=1)
            assert f"repository {e.repo} does not exist" in p.stderr, (args, p.stderr)
            assert not os.path.exists(os.path.join(e.root, "typo")), args
        # Only create makes a repository.
        e.bk("create", "f")
        assert len(e.listing("f")) == 1
    finally:
        e.close()


def test_restore_names_cli():
    """issue 9 item 2: --as is checked like a created name: never "" for the default, never cut short;
    the output says what was done."""
    e = Env(JVDB)
    try:
        e.run("db", "create", "orig", "--dim", 4)
        e.import_rows("orig", rows_for(range(5), 4, 1))
        bid = e.bk_json("create", "orig")["backupId"]
        e.import_rows("orig", rows_for(range(5, 9), 4, 1))
        long64 = "a" * 64
        e.run("db", "create", long64, "--dim", 4)
        e.import_rows(long64, rows_for(range(2), 4, 1))
        before = (e.contents("orig"), e.contents(long64))
        for name in ("", "a" * 65, "bad name"):
            for force in ((), ("--force",)):
                p = e.bk("restore", bid, "--as", name, *force, expect=None)
                assert p.returncode != 0 and "invalid database name" in p.stderr, (name, p.returncode, p.stderr)
        assert (e.contents("orig"), e.contents(long64)) == before
        r = e.bk_json("restore", bid, "--as", "copy")
        assert r["database"] == "copy" and r["replaced"] is False and r["count"] == 5, r
        r = e.bk_json("restore", bid, "--force")
        assert r["database"] == "orig" and r["replaced"] is True and r["count"] == 5, r
    finally:
        e.close()


if __name__ == "__main__":
    JVDB = os.path.abspath(sys.argv[1])
    for t in (test_checklist, test_delete_prune_cli, test_corruption_cli, test_fallback_message_cli,
              test_missing_repository_cli, test_restore_names_cli, test_encrypted_cli, test_operations_cli, test_crash_during_backup,
              test_crash_during_restore):
        test(t)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)
