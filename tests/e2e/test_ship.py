"""Continuous backup in `jvdb serve` (issue 13): --backup-continuous D ships every acknowledged write
to the repository as log objects within D; /metrics and the stats show the lag; an unreachable
repository leaves writes going on and the backlog is shipped when it is back (past
--backup-backlog-bytes, an incremental backup covers the gap); the lease fences a second primary;
a restart continues the log without gap or duplicate; --backup-retention prunes by time.

Every check reads the log back with shiplog.py: the path from the base backup holds exactly the
writes made, in order, one record per acknowledged write (superseded versions and deletes too).

usage: test_ship.py PATH_TO_JVDB
"""
import json
import os
import re
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jvdbtest  # noqa: E402
import shiplog  # noqa: E402
from shiplog import wait_for  # noqa: E402
from jvdbtest import Client, Server, expect, test  # noqa: E402

DIM = 3


def metric(c, name, db):
    m = c.get("/metrics").raw.decode()
    hit = re.search(r'%s\{database="%s"\} ([0-9.e+-]+)' % (name, db), m)
    return float(hit[1]) if hit else None


def mkdb(c, name):
    expect(c.post("/v1/databases", {"name": name, "vectorDimension": DIM, "distanceMetric": "euclidean"}), 201)


def write(c, db, lo, hi, ver=1):
    """One batch of puts of ids lo..hi-1; returns the writes as (id, kind)."""
    vecs = [{"id": "v%d" % i, "values": [i, ver, -i], "metadata": {"v": ver}} for i in range(lo, hi)]
    expect(c.post("/v1/databases/%s/vectors/batch" % db, {"vectors": vecs}), 201)
    return [("v%d" % i, "put") for i in range(lo, hi)]


def delete(c, db, i):
    expect(c.delete("/v1/databases/%s/vectors/v%d" % (db, i)), 200)
    return [("v%d" % i, "delete")]


def stats(c, db):
    return expect(c.get("/v1/databases/%s/stats" % db), 200).json


def shipping(db, *args):
    """A started server shipping every 100 ms to a directory repository (plus `args`), with database
    `db` made and written to, and its first full backup taken: (server, repo, client)."""
    s = Server()
    repo = os.path.join(s.root, "repo")
    s.args += ["--backup-repo", repo, "--backup-continuous", "100ms"] + list(args)
    s.start()
    c = Client(s.port)
    mkdb(c, db)
    write(c, db, 0, 5)
    wait_for(lambda: shiplog.backups(repo, db), "the first full backup")
    return s, repo, c


def repo_away(repo):
    """The repository becomes unreachable: a file where its directory was."""
    os.rename(repo, repo + ".away")
    with open(repo, "w") as f:
        f.write("not a directory\n")


def repo_back(repo):
    os.unlink(repo)
    os.rename(repo + ".away", repo)


def incarnation_and_base(repo, db):
    """The newest backup of the database: its incarnation and lsn_to (the log's base)."""
    b = shiplog.backups(repo, db)
    assert b, "no backup of %s in %s" % (db, repo)
    return b[-1]["incarnation"], b[-1]["lsn_to"]


def check_log(repo, db, base_inc, base, writes, last_lsn):
    recs = shiplog.follow(repo, db, DIM, base_inc, base)
    assert recs and recs[-1]["lsn"] == last_lsn, (len(recs), recs[-1]["lsn"] if recs else None, last_lsn)
    got = [(r["id"], r["kind"]) for r in recs]
    assert got == writes, "the log holds %d writes, %d were made" % (len(got), len(writes))
    return recs


@test
def ships_every_write_and_shows_the_lag():
    s = Server()
    repo = os.path.join(s.root, "repo")
    s.args += ["--backup-repo", repo, "--backup-continuous", "200ms"]
    s.start()
    try:
        c = Client(s.port)
        expect(c.post("/v1/databases", {"name": "d", "vectorDimension": DIM, "distanceMetric": "euclidean",
                                        "description": "shipped"}), 201)
        w0 = write(c, "d", 0, 10)
        # The first shipment makes a full backup; the log continues from it.  It is a backup like
        # any other: it carries the description and is counted.
        wait_for(lambda: shiplog.backups(repo, "d"), "the first full backup")
        assert shiplog.backups(repo, "d")[0]["settings"]["database_description"] == "shipped"
        # The backup is visible in the repository a moment before the shipper counts it.
        wait_for(lambda: re.search(r'jvdb_backups_total\{type="full",result="ok"\} 1', c.get("/metrics").raw.decode()),
                 "the full backup counted in /metrics")
        inc, base = incarnation_and_base(repo, "d")
        lsn0 = base
        writes = w0
        writes += write(c, "d", 0, 5, 2)  # overwrites: superseded versions are shipped too
        writes += delete(c, "d", 7)
        writes += write(c, "d", 10, 20)
        last = stats(c, "d")["lastLsn"]
        assert last == len(writes)
        wait_for(lambda: metric(c, "jvdb_backup_ship_shipped_lsn", "d") == last, "shipped LSN %d" % last)
        # Writes acknowledged up to the base are in the backup; every later one is in the log.
        check_log(repo, "d", inc, base, writes[base:], last)
        st = stats(c, "d")
        assert st["backupShippedLsn"] == last and st["backupShipPendingBytes"] == 0, st
        assert st["backupShipLagSeconds"] == 0 and st["backupShipFenced"] is False, st
        db = expect(c.get("/v1/databases/d"), 200).json
        assert db["stats"]["backupShippedLsn"] == last, db["stats"]
        assert metric(c, "jvdb_backup_ship_fenced", "d") == 0
        assert metric(c, "jvdb_backup_ship_pending_bytes", "d") == 0
        with open(os.path.join(repo, "d", "log", "LEASE")) as f:
            lease = json.load(f)
        assert lease["epoch"] == 1 and lease["renewed_ns"] > 0, lease
    finally:
        s.stop()
    # A clean stop released the lease; a restart continues with epoch 2, no gap, no duplicate.
    with open(os.path.join(repo, "d", "log", "LEASE")) as f:
        assert json.load(f)["renewed_ns"] == 0
    s.start()
    try:
        c = Client(s.port)
        more = write(c, "d", 20, 30)
        last = stats(c, "d")["lastLsn"]
        wait_for(lambda: metric(c, "jvdb_backup_ship_shipped_lsn", "d") == last, "shipped after restart")
        recs = shiplog.follow(repo, "d", DIM, inc, lsn0)
        assert recs[-1]["lsn"] == last and [(r["id"], r["kind"]) for r in recs[-10:]] == more
        assert shiplog.objects(repo, "d")[-1]["epoch"] == 2
    finally:
        s.stop()
        s.cleanup()


@test
def unreachable_repository_keeps_the_backlog():
    s, repo, c = shipping("u")
    try:
        inc, base = incarnation_and_base(repo, "u")
        wait_for(lambda: metric(c, "jvdb_backup_ship_shipped_lsn", "u") == stats(c, "u")["lastLsn"], "shipped")
        writes = []
        # The repository goes away (a file where the directory was): writes go on.
        repo_away(repo)
        for k in range(5):
            writes += write(c, "u", 100 + 10 * k, 110 + 10 * k)
        wait_for(lambda: (metric(c, "jvdb_backup_ship_pending_bytes", "u") or 0) > 0, "pending bytes")
        time.sleep(0.5)
        lag = metric(c, "jvdb_backup_ship_lag_seconds", "u")
        assert lag and lag > 0.3, lag
        st = stats(c, "u")
        assert st["backupShipPendingBytes"] > 0 and st["backupShipLagSeconds"] > 0, st
        assert "continuous backup of 'u' failed" in s.log()
        # Back: the backlog is shipped, without gap or duplicate.
        repo_back(repo)
        last = stats(c, "u")["lastLsn"]
        wait_for(lambda: metric(c, "jvdb_backup_ship_shipped_lsn", "u") == last, "backlog shipped")
        assert metric(c, "jvdb_backup_ship_pending_bytes", "u") == 0
        recs = shiplog.follow(repo, "u", DIM, inc, base)
        assert [(r["id"], r["kind"]) for r in recs][-len(writes):] == writes and recs[-1]["lsn"] == last
        assert "continuous backup of 'u' resumed" in s.log()
    finally:
        s.stop()
        s.cleanup()


@test
def backlog_past_its_limit_becomes_an_incremental():
    s, repo, c = shipping("o", "--backup-backlog-bytes", "2KiB")
    try:
        repo_away(repo)
        for k in range(10):
            write(c, "o", 100 + 10 * k, 110 + 10 * k)
        wait_for(lambda: "past the backlog limit" in s.log(), "the backlog error")
        assert re.search(r"error .*past the backlog limit", s.log()), s.log()[-2000:]
        repo_back(repo)
        last = stats(c, "o")["lastLsn"]
        wait_for(lambda: any(b["type"] == "incremental" for b in shiplog.backups(repo, "o")), "an incremental")
        more = write(c, "o", 500, 505)
        last = stats(c, "o")["lastLsn"]
        wait_for(lambda: metric(c, "jvdb_backup_ship_shipped_lsn", "o") == last, "shipped after the incremental")
        inc, base = incarnation_and_base(repo, "o")
        recs = shiplog.follow(repo, "o", DIM, inc, base)
        assert [(r["id"], r["kind"]) for r in recs][-5:] == more and recs[-1]["lsn"] == last
    finally:
        s.stop()
        s.cleanup()


@test
def a_stalled_shipment_leaves_the_repository_free():
    """A shipment hanging on the repository (a FIFO in place of the lease: the shipper's read of it blocks, as
    on a hung mount or S3 connection) does not hold the repository lock: deleting and verifying a backup go
    through meanwhile.  Shipping used to hold that lock for all its I/O, and both answered 409
    REPOSITORY_BUSY for as long as the shipment hung."""
    s, repo, c = shipping("st")
    lease = os.path.join(repo, "st", "log", "LEASE")
    text = None
    try:
        wait_for(lambda: metric(c, "jvdb_backup_ship_shipped_lsn", "st"), "shipping")
        b1 = expect(c.post("/v1/databases/st/backups", {"type": "full"}), 201).json["backupId"]
        b2 = expect(c.post("/v1/databases/st/backups", {"type": "full"}), 201).json["backupId"]
        with open(lease) as f:
            text = f.read()
        shipped = metric(c, "jvdb_backup_ship_shipped_lsn", "st")
        os.unlink(lease)
        os.mkfifo(lease)
        os.link(lease, lease + ".fifo")  # to let the blocked reader go once the lease is back
        write(c, "st", 5, 8)
        time.sleep(1.0)  # the next shipments open the FIFO and hang there
        assert metric(c, "jvdb_backup_ship_shipped_lsn", "st") == shipped, "the shipment did not stall"
        r = expect(c.post("/v1/backups/%s/verify" % b2, {}), 200).json
        assert r["valid"] is True, r
        expect(c.delete("/v1/backups/%s" % b1), 200)
        assert b1 not in [b["id"] for b in shiplog.backups(repo, "st")]
        # The lease comes back; the hung read ends (an empty read, then the lease on a retry) and shipping goes on.
        unstall(lease, text)
        last = stats(c, "st")["lastLsn"]
        wait_for(lambda: metric(c, "jvdb_backup_ship_shipped_lsn", "st") == last, "shipping after the stall")
        assert metric(c, "jvdb_backup_ship_fenced", "st") == 0
    finally:
        if os.path.exists(lease + ".fifo"):
            unstall(lease, text)
        s.stop()
        s.cleanup()


def unstall(lease, text):
    """Puts the lease back and lets a reader blocked on the FIFO go (an empty read)."""
    with open(lease + ".new", "w") as f:
        f.write(text)
    os.rename(lease + ".new", lease)
    for _ in range(100):
        try:
            os.close(os.open(lease + ".fifo", os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # ENXIO: no reader there (yet)
            time.sleep(0.05)
    os.unlink(lease + ".fifo")


@test
def a_second_primary_is_fenced():
    s1 = Server()
    repo = os.path.join(s1.root, "repo")
    s1.args += ["--backup-repo", repo, "--backup-continuous", "100ms"]
    s1.start()
    s2 = Server(root=os.path.join(s1.root, "second"), args=["--backup-repo", repo, "--backup-continuous", "100ms"])
    os.makedirs(s2.root)
    try:
        c1 = Client(s1.port)
        mkdb(c1, "f")
        write(c1, "f", 0, 5)
        wait_for(lambda: metric(c1, "jvdb_backup_ship_shipped_lsn", "f"), "first primary shipping")
        s2.start()
        c2 = Client(s2.port)
        mkdb(c2, "f")
        write(c2, "f", 0, 3)
        wait_for(lambda: metric(c2, "jvdb_backup_ship_fenced", "f") == 1, "second primary fenced")
        assert stats(c2, "f")["backupShipFenced"] is True
        assert re.search(r"error continuous backup of 'f' is not shipping: .*holds|is shipped by", s2.log()), s2.log()
        # The first goes on shipping.
        write(c1, "f", 10, 20)
        last = stats(c1, "f")["lastLsn"]
        wait_for(lambda: metric(c1, "jvdb_backup_ship_shipped_lsn", "f") == last, "first primary still shipping")
        assert metric(c1, "jvdb_backup_ship_fenced", "f") == 0
        assert {e["epoch"] for e in shiplog.objects(repo, "f")} == {1}
    finally:
        s2.stop()
        s1.stop()
        s2.cleanup()
        s1.cleanup()


@test
def retention_prunes_by_time():
    s, repo, c = shipping("r", "--backup-retention", "2s")
    try:
        for k in range(3):
            write(c, "r", 10 * k, 10 * k + 5, k)
            time.sleep(0.3)
        wait_for(lambda: len(shiplog.objects(repo, "r")) >= 3, "log objects")
        old = shiplog.objects(repo, "r")
        # A newer full backup covers them; once they are older than the window they go.
        full = expect(c.post("/v1/databases/r/backups", {"type": "full"}), 201).json
        time.sleep(2.5)
        write(c, "r", 100, 105)
        last = stats(c, "r")["lastLsn"]
        wait_for(lambda: metric(c, "jvdb_backup_ship_shipped_lsn", "r") == last, "shipped")
        wait_for(lambda: not any(os.path.exists(e["path"]) for e in old), "old log objects pruned", timeout=90)
        ids = [b["id"] for b in shiplog.backups(repo, "r")]
        assert ids and ids[-1] == full["backupId"], (ids, full)
        assert len(ids) == 1, ids  # the first full backup is older than the window and not needed
        inc, base = incarnation_and_base(repo, "r")
        recs = shiplog.follow(repo, "r", DIM, inc, base)
        assert recs[-1]["lsn"] == last
        assert "retention of 'r'" in s.log()
    finally:
        s.stop()
        s.cleanup()


@test
def retention_by_count_drops_the_log_before_the_oldest_backup():
    s, repo, c = shipping("k", "--backup-keep", "1")
    try:
        first = shiplog.backups(repo, "k")[0]["id"]
        for k in range(3):
            write(c, "k", 10 * k, 10 * k + 5, k)
            time.sleep(0.2)
        wait_for(lambda: len(shiplog.objects(repo, "k")) >= 3, "log objects")
        old = shiplog.objects(repo, "k")
        full = expect(c.post("/v1/databases/k/backups", {"type": "full"}), 201).json
        time.sleep(0.01)
        write(c, "k", 100, 105)
        # What a prune by count does after a scheduled backup: the older chain goes.
        shutil.rmtree(os.path.join(repo, "k", first))
        wait_for(lambda: not any(os.path.exists(e["path"]) for e in old), "the log before the oldest backup pruned",
                 timeout=30)
        inc, base = incarnation_and_base(repo, "k")
        assert shiplog.backups(repo, "k")[-1]["id"] == full["backupId"]
        recs = shiplog.follow(repo, "k", DIM, inc, base)
        last = stats(c, "k")["lastLsn"]
        wait_for(lambda: metric(c, "jvdb_backup_ship_shipped_lsn", "k") == last, "shipped")
        recs = shiplog.follow(repo, "k", DIM, inc, base)
        assert recs[-1]["lsn"] == last
    finally:
        s.stop()
        s.cleanup()


@test
def shipping_off_frees_compaction():
    s = Server()
    repo = os.path.join(s.root, "repo")
    s.args += ["--backup-repo", repo, "--backup-continuous", "100ms"]
    s.start()
    try:
        c = Client(s.port)
        mkdb(c, "p")
        write(c, "p", 0, 5)
        wait_for(lambda: metric(c, "jvdb_backup_ship_shipped_lsn", "p"), "shipping")
    finally:
        s.stop()
    manifest = os.path.join(s.data, "p", "MANIFEST")
    if not os.path.exists(manifest):
        manifest = [os.path.join(dp, "MANIFEST") for dp, _, ns in os.walk(s.data) if "MANIFEST" in ns][0]
    assert "log_shipping" in open(manifest).read()
    s.args = ["--backup-repo", repo]
    s.start()
    try:
        assert "log_shipping" not in open(manifest).read()
        assert "jvdb_backup_ship_lag_seconds" not in Client(s.port).get("/metrics").raw.decode()
    finally:
        s.stop()
        s.cleanup()


def start_s3rver(store, port):
    """s3rver (tests/backup/node_modules, scripts/install-deps) on 127.0.0.1:port over `store`."""
    import socket
    import subprocess
    script = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "backup", "node_modules",
                          "s3rver", "bin", "s3rver.js")
    node = shutil.which("node") or shutil.which("nodejs")
    if not node or not os.path.exists(script):
        return None
    p = subprocess.Popen([node, script, "-d", store, "-a", "127.0.0.1", "-p", str(port), "--silent",
                          "--configure-bucket", "jvdbtest"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return p
        except OSError:
            time.sleep(0.1)
    p.kill()
    raise AssertionError("s3rver did not start")


@test
def s3_repository_goes_away_and_comes_back():
    import socket
    s = Server()
    store = os.path.join(s.root, "s3")
    os.makedirs(store)
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        port = sk.getsockname()[1]
    proc = start_s3rver(store, port)
    if proc is None:
        print("s3rver is not installed (scripts/install-deps): skipping the S3 case")
        s.cleanup()
        return
    s.env.update({"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER",
                  "AWS_ENDPOINT_URL": "http://127.0.0.1:%d" % port, "AWS_REGION": "us-east-1"})
    s.args += ["--backup-repo", "s3://jvdbtest/e2e", "--backup-continuous", "100ms"]
    repo = os.path.join(store, "jvdbtest", "e2e")
    suffix = "._S3rver_object"
    try:
        s.start()
        c = Client(s.port)
        mkdb(c, "s")
        writes = write(c, "s", 0, 5)
        wait_for(lambda: shiplog.backups(repo, "s", suffix), "the first full backup in S3")
        inc, base = incarnation_and_base_s3(repo, "s", suffix)
        writes += write(c, "s", 5, 10)
        last = stats(c, "s")["lastLsn"]
        wait_for(lambda: metric(c, "jvdb_backup_ship_shipped_lsn", "s") == last, "shipped to S3")
        proc.terminate()
        proc.wait()
        for k in range(3):
            writes += write(c, "s", 100 + 10 * k, 110 + 10 * k)
        wait_for(lambda: (metric(c, "jvdb_backup_ship_pending_bytes", "s") or 0) > 0, "pending while S3 is down")
        proc = start_s3rver(store, port)
        last = stats(c, "s")["lastLsn"]
        wait_for(lambda: metric(c, "jvdb_backup_ship_shipped_lsn", "s") == last, "backlog shipped to S3", timeout=60)
        recs = shiplog.follow(repo, "s", DIM, inc, base, suffix)
        assert [(r["id"], r["kind"]) for r in recs] == writes[base:] and recs[-1]["lsn"] == last
    finally:
        s.stop()
        proc.terminate()
        proc.wait()
        s.cleanup()


def incarnation_and_base_s3(repo, db, suffix):
    b = shiplog.backups(repo, db, suffix)
    return b[-1]["incarnation"], b[-1]["lsn_to"]


if __name__ == "__main__":
    sys.exit(jvdbtest.run_tests(sys.argv))
