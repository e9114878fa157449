#!/usr/bin/env python3
"""The jvdb CLI beside a running server, and the CLI defaults (issue 12).  python3 standard library only.

Usage: test_remote_cli.py PATH_TO_JVDB

Before: every CLI command failed with "data directory is locked by pid N" while `jvdb serve` ran, the
CLI's default metric was l2 where REST's is cosine, and a typo in --data made a new empty data
directory.  Now the CLI sends its commands to the server (through <data>/jvdb.sock, or --server URL
with --api-key) and prints what it prints with the server stopped, with the same exit codes; the
default metric is cosine everywhere; only `db create` or --create makes a data directory.
The last line printed is "N passed, N failed".
"""
import json
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_cli  # noqa: E402  (the harness: Env, the test runner)
from test_cli import test, write_jsonl  # noqa: E402

test_cli.TESTS.clear()  # run only the cases below


class Server:
    """`jvdb serve` on a data directory, on a free port."""

    def __init__(self, data, *args):
        self.data = data
        self.p = subprocess.Popen([test_cli.JVDB, "--data", data, "serve", "--listen", "127.0.0.1:0",
                                   "--compaction-interval", "0", *args],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        line = self.p.stdout.readline().decode()
        assert line.startswith("listening on "), (line, self.p.stderr.read().decode() if self.p.poll() is not None else "")
        self.url = line.split()[-1]

    def stop(self, sig=signal.SIGTERM):
        if self.p.poll() is None:
            self.p.send_signal(sig)
        self.p.wait(timeout=60)
        err = self.p.stderr.read().decode(errors="replace")
        for m in test_cli.SANITIZER_MARKERS:
            assert m not in err, f"sanitizer report from the server:\n{err}"
        if sig == signal.SIGTERM:
            assert self.p.returncode == 0, err
        return err


def normal(out):
    """What may differ between a CLI that opened the data directory and one that asked the server:
    the index's live state (the server has the graph attached, a fresh CLI only its saved file), the
    segment size (a storage setting REST does not show) and a compaction's duration."""
    out = re.sub(r'^(index|saved_index):.*\n', '', out, flags=re.M)
    out = re.sub(r'^segment_max_bytes:.*\n', '', out, flags=re.M)
    out = re.sub(r'^seconds: .*\n', '', out, flags=re.M)
    out = re.sub(r'"(segment_max_bytes|segmentMaxBytes)":\d+,|,"(segment_max_bytes|segmentMaxBytes)":\d+', '', out)
    out = re.sub(r'"index":\{[^{}]*(\{[^{}]*\}[^{}]*)?\}', '"index":{}', out)
    out = re.sub(r'"seconds":[0-9.e-]+', '"seconds":0', out)
    return out


READS = [
    ["db", "list"], ["db", "info", "c"], ["db", "info", "l"], ["stats", "c"], ["get", "c", "a"],
    ["get", "c", "b/slash"], ["get", "l", "p"], ["count", "c"], ["count", "c", "--filter", '{"lang":"en"}'],
    ["search", "c", "--vector", "1,0,0"], ["search", "c", "--vector", "1,0,0", "--k", "2", "--include-vectors"],
    ["search", "l", "--vector", "0,0", "--no-metadata"], ["search", "c", "--vector", "1,1,1", "--filter",
                                                           '{"tags":"x"}', "--threshold", "0.5"],
    ["search", "c", "--query-file", "q.jsonl"],
    # failures: same exit code either way
    ["get", "c", "nope"], ["db", "info", "zz"], ["stats", "zz"], ["search", "c", "--vector", "1,2"],
    ["count", "zz"], ["get", "c"], ["search", "c", "--vector", "1,x,2"], ["export", "zz", "-"],
]


def populate(e, data):
    e.run("db", "create", "c", "--dim", 3, data=data)
    e.run("db", "create", "l", "--dim", 2, "--metric", "l2", "--sync", "never", data=data)
    e.run("put", "c", "a", "--vector", "1,0,0", "--meta", '{"lang":"en","tags":["x","y"]}', data=data)
    e.run("put", "c", "b/slash", "--vector", "0.5,0.25,-1", "--meta", '{"lang":"de"}', data=data)
    e.run("put", "c", "z", "--vector", "0.1,0.2,0.3", data=data)
    e.run("put", "l", "p", "--vector", "0,0", data=data)


def contents(e, data, name="c"):
    """{id: (values, metadata)} of a database, read back with export."""
    _, out, _ = e.run("export", name, "-", data=data)
    return {r["id"]: (r["values"], r.get("metadata")) for r in map(json.loads, out.splitlines())}


def outputs(e, cmds, data):
    got = []
    for c in cmds:
        for extra in ([], ["--json"]):
            rc, out, err = e.run(*c, *extra, data=data, expect=None)
            got.append((c + extra, rc, normal(out), err.strip()))
    return got


def compare(local, remote):
    for (cmd, rc1, out1, err1), (_, rc2, out2, err2) in zip(local, remote):
        assert rc1 == rc2, f"{cmd}: exit {rc1} locally, {rc2} through the server\n{err1}\n{err2}"
        assert out1 == out2, f"{cmd}: output differs\nlocal:  {out1!r}\nserver: {out2!r}"
        assert bool(err1) == bool(err2), f"{cmd}: stderr differs\nlocal:  {err1!r}\nserver: {err2!r}"


@test
def reads_same_beside_running_server(e):
    populate(e, e.data)
    write_jsonl(e.path("q.jsonl"), [{"id": "q1", "values": [1, 0, 0]}, {"id": "q2", "values": [0, 0, 1]}])
    os.chdir(e.root)
    local = outputs(e, READS, e.data)
    _, exp_local, _ = e.run("export", "c", "-")
    s = Server(e.data)
    try:
        sock = os.path.join(e.data, "jvdb.sock")
        st = os.lstat(sock)
        assert stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
        remote = outputs(e, READS, e.data)
        compare(local, remote)
        _, exp_remote, _ = e.run("export", "c", "-")
        assert sorted(exp_local.splitlines()) == sorted(exp_remote.splitlines()), (exp_local, exp_remote)
        e.run("export", "c", e.path("out.csv"), "--format", "csv")
        assert open(e.path("out.csv")).read().count("\n") == 4
        # the server really answered: its access log names the local socket's requests
        err = s.stop()
        assert "key=local" in err, err
    finally:
        s.stop()
    assert not os.path.exists(os.path.join(e.data, "jvdb.sock")), "the socket outlived the server"


WRITES = [
    ["put", "c", "n1", "--vector", "1,2,3", "--meta", '{"k":1}'],
    ["put", "c", "n1", "--vector", "1,2"],                              # wrong dimension: 1
    ["put", "zz", "n1", "--vector", "1,2,3"],                           # no such database: 1
    ["put", "l", "zero", "--vector", "0,0"],
    ["put", "c", "zero", "--vector", "0,0,0"],                          # cosine refuses it: 1
    ["import", "c", "in.jsonl"],
    ["import", "c", "bad.jsonl"],                                       # line 2 is bad: 1, names the line
    ["delete", "c", "n1"],
    ["delete", "c", "n1"],                                              # gone: 1, nothing deleted
    ["delete", "c", "--ids-file", "ids.txt"],
    ["delete", "c", "--filter", '{"lang":"fr"}'],
    ["count", "c"],
    ["compact", "c"],
    ["compact", "c", "--force", "--full"],
    ["db", "create", "d2", "--dim", "4"],
    ["db", "create", "d2", "--dim", "4"],                               # exists: 1
    ["db", "create", "d3", "--dim", "0"],                               # bad dimension: 1
    ["db", "create", "d3", "--dim", "2", "--metric", "manhattan"],      # usage: 2
    ["db", "drop", "d2"],
    ["db", "drop", "d2"],
    ["db", "list"],
]


def write_inputs(e):
    write_jsonl(e.path("in.jsonl"), [{"id": f"i{k}", "values": [k, 1, 2], "metadata": {"lang": "fr" if k % 2 else "en"}}
                                     for k in range(1, 8)])
    with open(e.path("bad.jsonl"), "w") as f:
        f.write('{"id": "ok", "values": [1, 2, 3]}\n{"id": "bad", "values": [1, 2]}\n')
    with open(e.path("ids.txt"), "w") as f:
        f.write("i2\ni4\nmissing\n")


@test
def writes_same_beside_running_server(e):
    """The same write commands on two copies of one data directory, one with the server stopped
    and one through it: same outputs (LSNs included), same exit codes, same contents after."""
    populate(e, e.data)
    write_inputs(e)
    os.chdir(e.root)
    other = e.path("data2")
    shutil.copytree(e.data, other)
    local = []
    for c in WRITES:
        rc, out, err = e.run(*c, "--json", expect=None)
        local.append((c, rc, normal(out), err.strip()))
    s = Server(other)
    try:
        remote = []
        for c in WRITES:
            rc, out, err = e.run(*c, "--json", data=other, expect=None)
            remote.append((c, rc, normal(out), err.strip()))
        compare(local, remote)
        for (c, rc, _, err), (_, _, _, err2) in zip(local, remote):
            if c[0] == "import" and rc:
                assert "line 2" in err and "line 2" in err2, (err, err2)
    finally:
        s.stop()
    # same contents (metadata compared as JSON: the server stores it re-encoded, compactly)
    assert contents(e, e.data) == contents(e, other)
    # text output of a write, too
    s = Server(other)
    try:
        _, out, _ = e.run("put", "c", "t1", "--vector", "3,2,1", data=other)
        assert re.fullmatch(r"stored 't1' in 'c' \(lsn \d+\)\n", out), out
        _, out, _ = e.run("delete", "c", "t1", data=other)
        assert out == "deleted 1 vector from 'c'\n", out
    finally:
        s.stop()


@test
def server_url_and_api_key(e):
    populate(e, e.data)
    s = Server(e.data, "--api-key", "k-" + "7" * 30)
    try:
        env_free = {k: v for k, v in os.environ.items() if k not in ("JVDB_SERVER", "JVDB_API_KEY")}
        nodir = e.path("not-a-data-dir")
        err = e.fail(1, "--server", s.url, "db", "list", contains="API key")
        assert "--api-key" in err, err
        e.fail(1, "--server", s.url, "--api-key", "wrong-key-123", "stats", "c", contains="API key")
        _, out, _ = e.run("--server", s.url, "--api-key", "k-" + "7" * 30, "db", "list", data=nodir)
        assert out == "c\nl\n", out
        assert not os.path.exists(nodir), "--server must not touch a local data directory"
        p = subprocess.run([test_cli.JVDB, "get", "c", "a", "--json"], capture_output=True,
                           env=dict(env_free, JVDB_SERVER=s.url, JVDB_API_KEY="k-" + "7" * 30))
        assert p.returncode == 0, p
        assert json.loads(p.stdout) == {"id": "a", "values": [1, 0, 0], "metadata": {"lang": "en", "tags": ["x", "y"]}}
        _, out, _ = e.run("--server", s.url + "/", "--api-key", "k-" + "7" * 30, "put", "c", "r", "--vector", "1,1,1",
                          "--json", data=nodir)
        assert json.loads(out)["id"] == "r", out
        # the socket needs no key: its file mode is the check
        _, out, _ = e.run("count", "c")
        assert out == "4\n", out
        e.fail(2, "--server", "ftp://x", "db", "list", contains="not an http")
        e.fail(1, "--server", "http://127.0.0.1:1", "db", "list", contains="cannot reach the server at http://127.0.0.1:1")
    finally:
        s.stop()


@test
def refused_remotely_with_a_reason(e):
    populate(e, e.data)
    s = Server(e.data)
    try:
        before = sorted(os.listdir(os.path.join(e.data, "databases")))
        e.fail(1, "db", "repair", "c", contains=["'db repair' cannot work through the server", "stop the server"])
        e.fail(1, "--server", s.url, "db", "repair", "c", contains="'db repair' cannot work through a server")
        e.fail(1, "--server", s.url, "backup", "prune", "c", "--keep", "1", contains="'backup prune' cannot work through a server")
        e.fail(1, "backup", "create", "c", "--repo", e.path("repo"), contains="server's repository")
        e.fail(1, "backup", "restore", "--all", contains="--all cannot work through a server")
        e.fail(1, "db", "create", "s", "--dim", "2", "--segment-max-bytes", "1M", contains="--segment-max-bytes")
        e.fail(1, "compact", "c", "--max-seconds", "5", contains="--max-seconds")
        assert sorted(os.listdir(os.path.join(e.data, "databases"))) == before
        # keys edit the key file the server watches: they still work locally beside it
        _, out, _ = e.run("keys", "list")
        assert "no API keys" in out, out
        # help needs nobody
        _, out, _ = e.run("db", "repair", "--help")
        assert out.startswith("Usage"), out
    finally:
        s.stop()


@test
def stale_socket_after_a_crash(e):
    populate(e, e.data)
    s = Server(e.data)
    s.stop(signal.SIGKILL)
    sock = os.path.join(e.data, "jvdb.sock")
    assert os.path.exists(sock), "SIGKILL leaves the socket"
    # nobody answers on it: the CLI opens the directory itself
    _, out, _ = e.run("count", "c")
    assert out == "3\n", out
    s = Server(e.data)
    try:
        with socket.socket(socket.AF_UNIX) as c:
            c.connect(sock)   # the new server replaced it
        _, out, _ = e.run("put", "c", "after", "--vector", "1,1,1")
        assert "stored 'after'" in out, out
        log = s.stop()
        assert "replaced the stale local socket" in log, log
    finally:
        s.stop()
    assert e.count("c") == 4


@test
def default_metric_is_cosine(e):
    _, out, _ = e.run("db", "create", "m", "--dim", 2)
    assert "metric:            cosine" in out, out
    assert e.json("db", "info", "m")["distanceMetric"] == "cosine"
    _, out, _ = e.run("db", "create", "--help")
    assert "default cosine" in out, out
    # the same default through the server, which is REST's
    s = Server(e.data)
    try:
        assert e.json("db", "create", "m2", "--dim", 2)["distanceMetric"] == "cosine"
    finally:
        s.stop()


@test
def data_directory_typo(e):
    typo = e.path("dta")
    write_jsonl(e.path("one.jsonl"), [{"id": "x", "values": [1, 2]}])
    for args in (["stats", "v"], ["db", "list"], ["db", "info", "v"], ["put", "v", "x", "--vector", "1,2"],
                 ["get", "v", "x"], ["search", "v", "--vector", "1,2"], ["import", "v", e.path("one.jsonl")],
                 ["export", "v", "-"], ["count", "v"], ["delete", "v", "x"], ["compact", "v"], ["db", "drop", "v"],
                 ["db", "repair", "v"], ["search", "v", "--vector", "1,2", "--index"]):
        _, out, err = e.run(*args, data=typo, expect=1)
        assert f"data directory {typo} does not exist" in err, (args, err)
        assert not os.path.exists(typo), f"{args} created the data directory"
    _, out, _ = e.run("--create", "db", "list", data=typo)
    assert out == "" and os.path.isdir(typo)
    shutil.rmtree(typo)
    e.run("db", "create", "v", "--dim", 2, data=typo)
    assert os.path.isdir(os.path.join(typo, "databases", "v"))
    # serve keeps creating on a first start, and says so
    fresh = e.path("fresh")
    s = Server(fresh)
    log = s.stop()
    assert f"data directory '{fresh}' does not exist: creating it" in log, log


@test
def values_exact_through_the_server(e):
    """Values sent by import/put through the server are the float32 bits given (-0.0, the smallest
    denormal, a value near the largest allowed, 0.1), and metadata numbers print in their shortest form."""
    e.run("db", "create", "x", "--dim", 4, "--metric", "l2")
    rows = [[-0.0, 1e-45, 6.0e18, 0.1], [0.3, -2.5, 1.0000001, 16777217.0]]
    write_jsonl(e.path("v.jsonl"), [{"id": f"r{i}", "values": r, "metadata": {"x": 0.1, "n": [1, 2.5]}}
                                   for i, r in enumerate(rows)])
    s = Server(e.data)
    try:
        e.run("import", "x", e.path("v.jsonl"))
        e.run("put", "x", "p", "--vector", "-0.0,1e-45,0.1,7")
        _, out, _ = e.run("get", "x", "r0")
        assert out.endswith('metadata: {"x":0.1,"n":[1,2.5]}\n'), out
    finally:
        s.stop()
    got = e.contents("x")
    for i, r in enumerate(rows):
        assert got[f"r{i}"][0] == test_cli.f32bits([test_cli.f32(v) for v in r]), (i, got[f"r{i}"])
    assert got["p"][0] == test_cli.f32bits([-0.0, 1e-45, 0.1, 7]), got["p"]


def backup_lines(out):
    """Backup listings and reports without what two runs cannot share: ids, times, hashes, sizes."""
    out = re.sub(r"\d{8}T\d{6}Z-(full|incremental|differential)-\d+", "ID", out)
    out = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", "TIME", out)
    out = re.sub(r'"incarnation":\d+', '"incarnation":N', out)
    out = re.sub(r'"sha256":"[0-9a-f]+"|sha256: +[0-9a-f]+', "SHA", out)
    # compressed sizes: the server's archive also carries the settings it keeps (index, description)
    out = re.sub(r'"storedBytes":\d+', '"storedBytes":N', out)
    return re.sub(r"\d+(\.\d)? (B|KiB|MiB)( stored)?\b", "SIZE", out)


@test
def backups_through_the_server(e):
    """backup create/list/show/verify/restore: same outputs as with the server stopped (the server
    writes to its own --backup-repo; --repo names the same repository when stopped)."""
    populate(e, e.data)
    other = e.path("data2")
    shutil.copytree(e.data, other)
    repo1, repo2 = e.path("repo1"), e.path("repo2")
    local, remote = [], []

    def steps(data, repo, out, through):
        r = [] if through else ["--repo", repo]
        for c in (["backup", "create", "c", "--description", "first"], ["put", "c", "n", "--vector", "1,1,1"],
                  ["backup", "create", "c", "--type", "incremental", "--level", "3"], ["backup", "list", "c"],
                  ["backup", "list"], ["backup", "restore", "--latest", "--database", "c", "--as", "c2"],
                  ["backup", "restore", "--latest", "--database", "c", "--as", "c2"],    # exists: 1
                  ["backup", "restore", "--latest", "--database", "zz"], ["count", "c2"], ["db", "list"]):
            for j in ([], ["--json"]):
                rc, o, err = e.run(*c, *(r if c[0] == "backup" else []), *j, data=data, expect=None)
                out.append((c + j, rc, backup_lines(o), err.strip()))
        # show and verify of the newest backup, by its id
        bid = json.loads(e.run("backup", "list", "c", "--json", *r, data=data)[1])["backups"][-1]["backupId"]
        for c in (["backup", "show", bid], ["backup", "verify", bid]):
            rc, o, err = e.run(*c, *r, data=data, expect=None)
            out.append((c, rc, backup_lines(o), err.strip()))

    steps(e.data, repo1, local, False)
    s = Server(other, "--backup-repo", repo2)
    try:
        steps(other, repo2, remote, True)
        # beside the server, list/show/verify of a repository still run here, on --repo
        # (a header and 4 backups: each create ran twice, text and --json; then the restorable window
        # and the earlier point: without a log, LSNs between the backups cannot be restored)
        _, o, _ = e.run("backup", "list", "c", "--repo", repo2, data=other)
        assert o.count("\n") == 8 and "restorable window of 'c'" in o and "earlier restorable points" in o, o
        # through --server too
        _, o, _ = e.run("--server", s.url, "backup", "list", "c", data=e.path("nowhere"))
        assert o.count("\n") == 8 and "restorable window of 'c'" in o and "earlier restorable points" in o, o
    finally:
        s.stop()
    compare(local, remote)
    assert e.count("c2") == 4


@test
def keys_through_server_url(e):
    e.create("v", 2)
    _, out, _ = e.run("keys", "create", "--role", "read", "--database", "v", "--expires", "30d",
                      "--description", "front end")
    kid = out.split("_")[1]
    _, local_text, _ = e.run("keys", "list")
    local_json = e.json("keys", "list")
    s = Server(e.data, "--api-key", "boot-" + "1" * 20)
    try:
        remote = ["--server", s.url, "--api-key", "boot-" + "1" * 20]
        nowhere = e.path("nowhere")
        _, out, _ = e.run(*remote, "keys", "list", data=nowhere)
        assert out == local_text, (out, local_text)
        assert json.loads(e.run(*remote, "keys", "list", "--json", data=nowhere)[1]) == local_json
        doc = json.loads(e.run(*remote, "keys", "create", "--role", "write", "--json", data=nowhere)[1])
        assert doc["role"] == "write" and doc["apiKey"].startswith("jvdb_") and doc["keyId"] == doc["key_id"], doc
        assert list(doc)[-2:] == ["apiKey", "api_key"] and doc["api_key"] == doc["apiKey"], doc
        # the new key works, and is revoked through the server
        e.run("--server", s.url, "--api-key", doc["apiKey"], "put", "v", "x", "--vector", "1,2", data=nowhere)
        _, out, _ = e.run(*remote, "keys", "revoke", kid, data=nowhere)
        assert out == f"API key {kid} revoked\n", out
        _, _, err = e.run(*remote, "keys", "revoke", kid, data=nowhere, expect=1)
        assert kid in err, err
        _, _, err = e.run("--server", s.url, "--api-key", doc["apiKey"], "keys", "list", data=nowhere, expect=1)
        assert "admin" in err, err
        assert not os.path.exists(nowhere)
    finally:
        s.stop()


if __name__ == "__main__":
    sys.exit(test_cli.main())
