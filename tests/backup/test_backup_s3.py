#!/usr/bin/env python3
"""The backup suite's core cases against a real S3 protocol peer: s3rver (npm), installed into
tests/backup/node_modules by scripts/install-deps, started here on 127.0.0.1 on a free port and
stopped at the end.

  1. the library suite (test_backup) with JVDB_TEST_REPO=s3://bucket/prefix: checklist, chains
     with and without compaction, fallbacks, consistency under load, delete/prune, multipart;
  2. the CLI checklist, delete/prune, an encrypted repository (issue 13) and flipped bytes in S3 objects (s3rver keeps objects as
     plain files, so the test can damage one the way a bad disk would).

usage: test_backup_s3.py TEST_BACKUP_BINARY JVDB_BINARY
"""
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import test_backup_cli as cli  # noqa: E402

BUCKET = "jvdbtest"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_s3rver(workdir):
    script = os.path.join(HERE, "node_modules", "s3rver", "bin", "s3rver.js")
    node = shutil.which("node") or shutil.which("nodejs")
    if not node or not os.path.exists(script):
        print("s3rver is not installed: run scripts/install-deps (it installs tests/backup/node_modules)")
        print("0 passed, 1 failed")
        sys.exit(1)
    store = os.path.join(workdir, "s3")
    os.makedirs(store)
    for _ in range(5):
        port = free_port()
        log = open(os.path.join(workdir, "s3rver.log"), "w")
        # s3rver signs its continuation tokens with a cipher OpenSSL 3 keeps in its legacy provider:
        # without it every listing longer than 1,000 keys answers HTTP 500 (ERR_OSSL_EVP_UNSUPPORTED).
        major = int(subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip().lstrip("v").split(".")[0] or 0)
        env = dict(os.environ, NODE_OPTIONS="--openssl-legacy-provider") if major >= 17 else None
        proc = subprocess.Popen([node, script, "-d", store, "-a", "127.0.0.1", "-p", str(port), "--silent",
                                 "--configure-bucket", BUCKET], stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                return proc, port, store
            except OSError:
                time.sleep(0.1)
        proc.kill()
        proc.wait()
    raise SystemExit("s3rver did not start; see its log")


def main():
    test_backup, jvdb = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    cli.JVDB = jvdb
    workdir = tempfile.mkdtemp(prefix="jvdb-s3-")
    proc, port, store = start_s3rver(workdir)
    s3env = {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER",
             "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_REGION": "us-east-1"}
    try:
        def library_suite():
            env = dict(os.environ, JVDB_TEST_REPO=f"s3://{BUCKET}/lib", **s3env)
            p = subprocess.run([test_backup], capture_output=True, text=True, env=env, timeout=240)
            sys.stdout.write(p.stdout)
            assert p.returncode == 0, f"test_backup against s3rver failed:\n{p.stderr[-3000:]}"

        def library_index():
            # issue 11: the HNSW graph travels with an S3 backup and restore installs it
            # (test_index_persist's backup case, pointed at s3rver).
            persist = os.path.join(os.path.dirname(os.path.dirname(test_backup)), "unit", "test_index_persist")
            if not os.path.exists(persist):
                print("test_index_persist not built: skipping the graph-in-S3 case")
                return
            env = dict(os.environ, JVDB_TEST_REPO=f"s3://{BUCKET}/index", JVDB_TEST_ONLY="test_backup_carries_graph", **s3env)
            p = subprocess.run([persist], capture_output=True, text=True, env=env, timeout=600)
            sys.stdout.write(p.stdout)
            assert p.returncode == 0, f"test_index_persist against s3rver failed:\n{p.stdout[-2000:]}{p.stderr[-3000:]}"

        def library_binary(name, prefix, *args):
            """Runs a library suite next to test_backup with its repository in the bucket."""
            path = os.path.join(os.path.dirname(test_backup), name)
            env = dict(os.environ, JVDB_TEST_REPO=f"s3://{BUCKET}/{prefix}", **s3env)
            p = subprocess.run([path, *args], capture_output=True, text=True, env=env, timeout=240)
            sys.stdout.write(p.stdout)
            assert p.returncode == 0, f"{name} against s3rver failed:\n{p.stdout[-2000:]}{p.stderr[-3000:]}"

        def library_ship():
            # issue 13: the shipping suite (log objects, lease, faults mid-shipment) against S3.
            library_binary("test_ship", "ship")

        def library_pitr():
            # issue 13: point-in-time restores and a replica following, against S3.
            library_binary("test_pitr", "pitr")

        def library_verifylog():
            # issue 13: verify over the log, incl. `verify --all` finding a database with only its log left.
            library_binary("test_verifylog", "verifylog", jvdb)

        def library_follow():
            # issue 13: a replica's log-only poll (S3 start-after) against the full check.
            library_binary("test_follow", "follow")

        def cli_checklist():
            e = cli.Env(jvdb, repo=f"s3://{BUCKET}/cli1", extra_env=s3env)
            try:
                full, inc = cli.checklist(e)
                # A flipped byte in an object is caught and the backup is named.
                obj = os.path.join(store, BUCKET, "cli1", "docs", full["backupId"], "data.jvb.zst._S3rver_object")
                assert os.path.exists(obj), os.listdir(os.path.join(store, BUCKET, "cli1", "docs", full["backupId"]))
                cli.flip_byte(obj, os.path.getsize(obj) // 2)
                err = e.bk("verify", inc["backupId"], expect=1).stderr
                assert full["backupId"] in err, err
                err = e.bk("restore", inc["backupId"], "--as", "fresh", expect=1).stderr
                assert full["backupId"] in err, err
                assert "fresh" not in e.run("db", "list").stdout
                cli.flip_byte(obj, os.path.getsize(obj) // 2)
                e.bk("verify", inc["backupId"])
            finally:
                e.close()

        def cli_delete_prune():
            e = cli.Env(jvdb, repo=f"s3://{BUCKET}/cli2", extra_env=s3env)
            try:
                e.run("db", "create", "r", "--dim", 4)
                ids = []
                for k in range(3):
                    e.import_rows("r", cli.rows_for(range(k * 3, k * 3 + 6), 4, k + 1))
                    ids.append(e.bk_json("create", "r", "--type", "incremental")["backupId"])
                assert "dependant" in e.bk("delete", ids[0], expect=1).stderr
                e.bk("create", "r")
                out = e.bk_json("prune", "r", "--keep", "1")
                assert out["deleted"] == [ids[2], ids[1], ids[0]], out
                left = e.listing("r")
                assert len(left) == 1 and left[0]["type"] == "full" and left[0]["restorable"], left
                # Flags instead of the environment.
                flags = ["--endpoint", s3env["AWS_ENDPOINT_URL"], "--access-key", "S3RVER", "--secret-key", "S3RVER"]
                bare = cli.Env(jvdb, repo=e.repo)
                bare.env.pop("AWS_ACCESS_KEY_ID", None)
                bare.env.pop("AWS_SECRET_ACCESS_KEY", None)
                bare.env.pop("AWS_ENDPOINT_URL", None)
                assert "credentials" in bare.bk("list", expect=1).stderr
                out = bare.bk("list", "r", *flags).stdout
                assert left[0]["backupId"] in out, out
                bare.close()
            finally:
                e.close()

        def cli_missing_bucket():
            # issue 9 item 12: a mistyped bucket is reported as a repository that does not exist.
            e = cli.Env(jvdb, repo="s3://no-such-bucket-jvdb/x", extra_env=s3env)
            try:
                for args in (("list",), ("show", "20250101T000000Z-full-1"), ("verify", "20250101T000000Z-full-1"),
                             ("delete", "r/20250101T000000Z-full-1")):
                    err = e.bk(*args, expect=1).stderr
                    assert "repository s3://no-such-bucket-jvdb/x does not exist" in err, (args, err)
            finally:
                e.close()

        def cli_encrypted():
            # issue 13: an encrypted repository on S3; s3rver's object files are damaged byte by byte.
            e = cli.Env(jvdb, repo=f"s3://{BUCKET}/enc", extra_env=s3env)
            try:
                cli.encrypted_checks(e, lambda bid, name: os.path.join(store, BUCKET, "enc", "docs", bid,
                                                                       name + "._S3rver_object"))
                assert os.path.exists(os.path.join(store, BUCKET, "enc", "jvdb-repo.json._S3rver_object"))
            finally:
                e.close()

        for t in (library_suite, library_index, library_ship, library_pitr, library_verifylog, library_follow, cli_checklist, cli_delete_prune, cli_missing_bucket, cli_encrypted):
            cli.test(t)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{cli.passed} passed, {cli.failed} failed")
    sys.exit(1 if cli.failed else 0)


if __name__ == "__main__":
    main()
