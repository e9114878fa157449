#!/usr/bin/env python3
"""The Python client (clients/python, package jvdb) against a real `jvdb serve`.

Usage: test_python_client.py PATH_TO_JVDB [TEST...]

Every method is driven over HTTP and checked against what the server stored; the README's HTTP
examples are run as written.  Count/scroll/delete by filter need issue 12's routes: without them
those tests are skipped with the reason (and pass once the routes exist).
"""
import array
import os
import random
import re
import signal
import ssl
import subprocess
import struct
import sys
import tempfile
import threading
import time

import clienttest
from clienttest import Skip

import jvdb  # noqa: E402  (clients/python, put on sys.path by clienttest)
import jvdbtest  # noqa: E402
from jvdbtest import Server  # noqa: E402

README = os.path.join(clienttest.ROOT, "clients", "python", "README.md")
TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


def f32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def server_env():
    env = dict(os.environ)
    env.pop("LD_PRELOAD", None)
    env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
    return env


def url(s):
    return "http://127.0.0.1:%d" % s.port


def items(n, dim=8, start=0):
    for i in range(start, start + n):
        rng = random.Random(i)
        yield {"id": "v%05d" % i, "values": [rng.uniform(-1, 1) for j in range(dim)],
               "metadata": {"i": i, "parity": "even" if i % 2 == 0 else "odd"}}


def need_route(fn, *a, **kw):
    try:
        return fn(*a, **kw)
    except jvdb.UnsupportedError as e:
        raise Skip("server has no such route yet (issue 12 or 14 adds it): %s" % e.message)


@test
def readme_examples():
    repo = tempfile.mkdtemp(prefix="jvdb-client-repo-")
    with Server(args=["--backup-repo", os.path.join(repo, "r")], env=server_env()) as s:
        clienttest.run_readme(README, False, {"JVDB_URL": url(s)})
        c = jvdb.Client(url(s))
        assert c.get("articles", "a1")["metadata"] == {"lang": "en", "year": 2021}


@test
def crud_and_search():
    with Server(env=server_env()) as s:
        c = jvdb.Client(url(s) + "/", timeout=60)
        db = c.create_database("t", dimension=8, metric="euclidean", index_type="FLAT", description="d")
        assert db["distanceMetric"] == "euclidean" and db["indexType"] == "FLAT" and db["description"] == "d"
        assert c.upsert("t", items(2500), batch_size=1000) == 2500          # a generator, 3 batches
        assert c.count("t") == 2500
        want = next(items(1, start=1234))
        got = c.get("t", "v01234")
        assert [f32(x) for x in got["values"]] == [f32(x) for x in want["values"]] and got["metadata"] == want["metadata"], got
        assert c.get("t", "nope") is None
        many = c.get_many("t", ["v00001", "nope", "v00002"])
        assert [v["id"] for v in many] == ["v00001", "v00002"]
        hits = c.search("t", want["values"], k=3)
        assert hits[0]["id"] == "v01234" and hits[0]["score"] == 0 and hits[0]["metadata"] == want["metadata"]
        assert "values" not in hits[0]
        hits = c.search("t", want["values"], k=5, filters={"parity": "odd"}, include_values=True,
                        include_metadata=False, exact=True)
        assert len(hits) == 5 and all(h["id"] != "v01234" for h in hits)
        assert all(len(h["values"]) == 8 and "metadata" not in h for h in hits)
        assert c.search("t", want["values"], k=10, threshold=0.0)[0]["id"] == "v01234"
        # tuples, replace, metadata removed by a replace without it
        assert c.upsert("t", [("v01234", [0.0] * 8), ("x/y z", array.array("f", [1.0] * 8), {"k": "ü"})]) == 2
        assert c.get("t", "v01234") == {"id": "v01234", "values": [0.0] * 8, "metadata": None}
        assert c.get("t", "x/y z")["metadata"] == {"k": "ü"}                 # ids are escaped in paths
        assert c.delete("t", ids=["x/y z", "v00000", "never"]) == 2
        assert c.get("t", "x/y z") is None and c.count("t") == 2499
        assert c.update_database("t", description="e")["description"] == "e"
        c.create_database("u", dimension=2)
        assert [d["name"] for d in c.list_databases()] == ["t", "u"]
        assert c.stats("t")["vectorCount"] == 2499
        assert c.drop_database("u")["deleted"] is True
        assert c.status()["version"] == c.health()["version"]


@test
def errors_carry_code_and_message():
    with Server(env=server_env()) as s:
        c = jvdb.Client(url(s))
        c.create_database("e", dimension=4)
        try:
            c.create_database("e", dimension=4)
            raise AssertionError("no error")
        except jvdb.AlreadyExistsError as e:
            assert e.status == 409 and e.code == "ALREADY_EXISTS" and "'e' already exists" in e.message
        try:
            c.get_database("missing")
            raise AssertionError("no error")
        except jvdb.NotFoundError as e:
            assert e.status == 404 and e.code == "NOT_FOUND" and "missing" in e.message
        try:
            c.create_database("f", dimension=4, metric="manhattan")
            raise AssertionError("no error")
        except jvdb.InvalidArgumentError as e:
            assert e.code == "INVALID_ARGUMENT" and "manhattan" in e.message
        # auto-batching: the bad vector is the 1503rd item; its index is its position in the input,
        # the first batch (1000) is stored, the second is not
        bad = list(items(1503, dim=4)) + [{"id": "bad", "values": [1, 2]}] + list(items(10, dim=4, start=5000))
        try:
            c.upsert("e", bad, batch_size=1000)
            raise AssertionError("no error")
        except jvdb.InvalidArgumentError as e:
            assert e.index == 1503 and "dimension 4" in e.message, (e.index, e.message)
        assert c.count("e") == 1000
        try:
            c.upsert("e", [{"id": "a", "values": [1, 2, 3, 4], "meta": {}}])
            raise AssertionError("no error")
        except jvdb.InvalidArgumentError as e:
            assert "unknown field" in e.message
        try:
            c.upsert("e", [("a", ["x", 1, 2, 3])])
            raise AssertionError("no error")
        except jvdb.InvalidArgumentError as e:
            assert "must be numbers" in e.message
        try:
            c.search("e", [float("nan")] * 4)
            raise AssertionError("no error")
        except jvdb.InvalidArgumentError as e:
            assert e.code == "INVALID_ARGUMENT" and "Out of range float" in e.message, e.message
        # a port nobody listens on
        s2 = Server(env=server_env()).start()
        port = s2.port
        s2.stop()
        s2.cleanup()
        try:
            jvdb.Client("http://127.0.0.1:%d" % port, timeout=5).health()
            raise AssertionError("no error")
        except jvdb.TransportError as e:
            assert e.code == "CONNECTION"
    try:
        jvdb.Client("ftp://x")
        raise AssertionError("no error")
    except ValueError:
        pass


@test
def api_key():
    with Server(args=["--api-key", "s3cret"], env=server_env()) as s:
        try:
            jvdb.Client(url(s)).list_databases()
            raise AssertionError("no error")
        except jvdb.UnauthorizedError as e:
            assert e.status == 401 and e.code == "UNAUTHORIZED"
        try:
            jvdb.Client(url(s), api_key="wrong").list_databases()
            raise AssertionError("no error")
        except jvdb.UnauthorizedError:
            pass
        assert jvdb.Client(url(s), api_key="s3cret").list_databases() == []
        assert jvdb.Client(url(s)).health()["status"] == "healthy"


@test
def idle_connection_is_reopened():
    # The server closes a kept-alive connection after --idle-timeout; the next call must not fail.
    with Server(args=["--idle-timeout", "1s"], env=server_env()) as s:
        c = jvdb.Client(url(s))
        c.create_database("k", dimension=2)
        time.sleep(2.0)
        assert c.upsert("k", [("a", [1, 2])]) == 1
        time.sleep(2.0)
        assert c.get("k", "a")["values"] == [1.0, 2.0]


@test
def threads_share_a_client():
    with Server(env=server_env()) as s:
        c = jvdb.Client(url(s))
        c.create_database("th", dimension=8)
        c.upsert("th", items(200))
        errors = []

        def worker(n):
            try:
                for i in range(50):
                    want = "v%05d" % ((n * 50 + i) % 200)
                    v = c.get("th", want)
                    assert c.search("th", v["values"], k=1, exact=True)[0]["id"] == want
            except Exception as e:  # noqa: BLE001
                errors.append(e)
        ts = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errors, errors


@test
def backup_helpers():
    repo = tempfile.mkdtemp(prefix="jvdb-client-repo-")
    with Server(args=["--backup-repo", os.path.join(repo, "r")], env=server_env()) as s:
        c = jvdb.Client(url(s))
        c.create_database("b", dimension=8)
        c.upsert("b", items(100))
        full = c.backup("b", description="first")
        assert full["type"] == "full" and full["putCount"] == 100
        c.upsert("b", items(10, start=100))
        inc = c.backup("b", type="incremental")
        assert inc["parent"] == full["backupId"]
        assert [b["backupId"] for b in c.list_backups("b")] == [full["backupId"], inc["backupId"]]
        assert c.get_backup(inc["backupId"])["backupId"] == inc["backupId"]
        assert c.verify_backup(inc["backupId"])["valid"] is True
        r = c.restore(inc["backupId"], target="b2")
        assert r["databaseId"] == "b2" and c.count("b2") == 110
        try:
            c.restore(full["backupId"], target="b2")
            raise AssertionError("no error")
        except jvdb.AlreadyExistsError:
            pass
        assert c.restore(full["backupId"], target="b2", force=True)["replaced"] is True
        assert c.count("b2") == 100
        try:
            c.delete_backup(full["backupId"])
            raise AssertionError("no error")
        except jvdb.ConflictError as e:
            assert e.code == "BUSY"
        assert c.delete_backup(full["backupId"], cascade=True)["count"] == 2
        assert c.compact("b", force=True)["compacted"] is True
    with Server(env=server_env()) as s:
        c = jvdb.Client(url(s))
        c.create_database("b", dimension=2)
        try:
            c.backup("b")
            raise AssertionError("no error")
        except jvdb.ConflictError as e:
            assert e.code == "NO_BACKUP_REPOSITORY"


@test
def readiness():
    with Server(env=server_env()) as s:
        # /readyz turns 200 once the start-up check has run (a moment after "listening").
        c = jvdb.Client(url(s))
        deadline = time.time() + 20
        while not need_route(c.ready) and time.time() < deadline:
            time.sleep(0.05)
        assert c.ready() is True


def start_raw(args, root):
    """A server started without jvdbtest's Server (which expects plain http): (proc, url, log path);
    Skip when the server does not know an option (exit status 2: a server before issue 14)."""
    log = os.path.join(root, "server.log")
    proc = subprocess.Popen([jvdbtest.JVDB, "--data", os.path.join(root, "data"), "serve", "--listen", "127.0.0.1:0"]
                            + args, stdout=subprocess.PIPE, stderr=open(log, "wb"), env=server_env())
    line = proc.stdout.readline().decode()
    if not line:
        rc = proc.wait()
        text = open(log).read()
        if rc == 2:
            raise Skip("server has no %s yet (issue 14): %s" % (args[0], text.strip().splitlines()[0] if text else rc))
        raise AssertionError("server exited %s: %s" % (rc, text))
    m = re.match(r"listening on (https?://127\.0\.0\.1:\d+)", line)
    assert m, line
    return proc, m.group(1), log


def stop_raw(proc, log):
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, open(log).read()[-4000:]
    text = open(log).read()
    for marker in jvdbtest.SANITIZER_MARKERS:
        assert marker not in text, text[-8000:]


@test
def https_with_a_private_certificate():
    root = tempfile.mkdtemp(prefix="jvdb-client-tls-")
    crt, key = os.path.join(root, "server.crt"), os.path.join(root, "server.key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "2", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    proc, base, log = start_raw(["--tls-cert", crt, "--tls-key", key], root)
    try:
        assert base.startswith("https://"), base
        c = jvdb.Client(base, ssl_context=ssl.create_default_context(cafile=crt))
        c.create_database("tls", dimension=2, metric="euclidean")
        assert c.upsert("tls", [("a", [1, 2])]) == 1
        got = c.get("tls", "a")
        assert got["values"] == [1.0, 2.0], got
        try:
            jvdb.Client(base, timeout=10).health()          # the system does not trust this certificate
            raise AssertionError("an untrusted certificate was accepted")
        except jvdb.TransportError as e:
            assert "CERTIFICATE_VERIFY_FAILED" in e.message, e.message
    finally:
        stop_raw(proc, log)


@test
def scoped_keys_are_forbidden_errors():
    with Server(args=["--api-key", "admin-key"], env=server_env()) as s:
        admin = jvdb.Client(url(s), api_key="admin-key")
        admin.create_database("docs", dimension=2)
        admin.upsert("docs", [("a", [1, 2])])
        made = need_route(admin.request, "POST", "/v1/api-keys", {"role": "read", "databases": ["docs"]})
        reader = jvdb.Client(url(s), api_key=made["api_key"])
        assert reader.search("docs", [1, 2], k=1)[0]["id"] == "a"
        try:
            reader.upsert("docs", [("b", [1, 2])])
            raise AssertionError("a read key wrote")
        except jvdb.ForbiddenError as e:
            assert e.status == 403 and e.code == "FORBIDDEN" and e.message, e
        assert admin.count("docs") == 1


@test
def jobs_helpers():
    repo = tempfile.mkdtemp(prefix="jvdb-client-repo-")
    with Server(args=["--backup-repo", os.path.join(repo, "r")], env=server_env()) as s:
        c = jvdb.Client(url(s))
        need_route(c.jobs)
        c.create_database("j", dimension=8)
        c.upsert("j", items(50))
        started = c.request("POST", "/v1/databases/j/backups", {"type": "full", "async": True})
        job = c.wait_job(started["jobId"], timeout=120)
        assert job["status"] == "succeeded" and job["jobId"] == started["jobId"], job
        assert any(j["jobId"] == started["jobId"] for j in c.jobs())
        try:
            c.get_job("no-such-job")
            raise AssertionError("no error")
        except jvdb.NotFoundError:
            pass


@test
def count_with_filters():
    with Server(env=server_env()) as s:
        c = jvdb.Client(url(s))
        c.create_database("c", dimension=8)
        c.upsert("c", items(301))
        assert need_route(c.count, "c", filters={"parity": "even"}) == 151
        assert c.count("c", filters={"i": {"$gte": 300}}) == 1


@test
def scroll_iterates_every_vector():
    with Server(env=server_env()) as s:
        c = jvdb.Client(url(s))
        c.create_database("s", dimension=8)
        c.upsert("s", items(2345))
        it = c.scroll("s", batch_size=1000)
        first = need_route(next, it)
        seen = [first] + list(it)
        assert sorted(v["id"] for v in seen) == ["v%05d" % i for i in range(2345)]
        assert [f32(x) for x in seen[0]["values"]] == \
            [f32(x) for x in next(items(1, start=int(seen[0]["id"][1:])))["values"]]
        odd = list(c.scroll("s", filters={"parity": "odd"}, batch_size=100, include_values=False))
        assert len(odd) == 1172 and all(v["metadata"]["parity"] == "odd" for v in odd)
        assert all(v.get("values") is None for v in odd)


@test
def delete_by_filter():
    with Server(env=server_env()) as s:
        c = jvdb.Client(url(s))
        c.create_database("d", dimension=8)
        c.upsert("d", items(100))
        assert need_route(c.delete, "d", filters={"parity": "odd"}) == 50
        assert c.count("d") == 50 and c.get("d", "v00001") is None and c.get("d", "v00002") is not None


if __name__ == "__main__":
    if len(sys.argv) < 2:
        print("usage: %s PATH_TO_JVDB [TEST...]" % sys.argv[0])
        sys.exit(2)
    jvdbtest.JVDB = os.path.abspath(sys.argv[1])
    sys.exit(clienttest.run(TESTS, set(sys.argv[2:])))
