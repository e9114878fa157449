"""Scheduled restore drills in `jvdb serve` (issue 13): --backup-drill-every D restores each
database's newest backup into a scratch directory and checks it against the live database; the last
result is in /metrics and GET /v1/backups/schedule, and a failed drill is logged at error.

usage: test_drill.py PATH_TO_JVDB
"""
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jvdbtest  # noqa: E402
from jvdbtest import Client, Server, expect, test  # noqa: E402


def wait_metric(c, pattern, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = c.get("/metrics").raw.decode()
        hit = re.search(pattern, m)
        if hit:
            return hit, m
        time.sleep(0.2)
    raise AssertionError("no %r in /metrics after %ss:\n%s" % (pattern, timeout, m))


@test
def scheduled_drills_pass_then_catch_damage():
    s = Server(args=["--backup-drill-every", "1s"])
    repo = os.path.join(s.root, "repo")
    s.args += ["--backup-repo", repo]
    s.start()
    try:
        c = Client(s.port)
        expect(c.post("/v1/databases", {"name": "d", "vectorDimension": 3, "distanceMetric": "euclidean"}), 201)
        vecs = [{"id": "v%d" % i, "values": [i, i * 0.5, -i], "metadata": {"i": i}} for i in range(60)]
        expect(c.post("/v1/databases/d/vectors/batch", {"vectors": vecs}), 201)
        # No backup yet: nothing to drill, no result.
        time.sleep(1.5)
        assert 'jvdb_backup_drill_passed{database="d"}' not in c.get("/metrics").raw.decode()
        expect(c.post("/v1/databases/d/backups", {"type": "full"}), 201)
        wait_metric(c, r'jvdb_backup_drill_passed\{database="d"\} 1')
        _, m = wait_metric(c, r'jvdb_backup_drill_records_checked\{database="d"\} 60')
        assert re.search(r'jvdb_backup_drill_timestamp_seconds\{database="d"\} \d', m), m
        sched = expect(c.get("/v1/backups/schedule"), 200).json
        assert sched["drillEverySeconds"] == 1.0, sched
        d = [x for x in sched["databases"] if x["databaseId"] == "d"][0]
        assert d["lastDrill"]["passed"] is True and d["lastDrill"]["failure"] == "" and d["nextDrill"], d
        assert "restore drill of 'd' passed" in s.log()

        # A flipped byte in the archive: the next drill fails, and says why.
        archives = [os.path.join(dp, n) for dp, _, ns in os.walk(repo) for n in ns if n.startswith("data")]
        assert archives
        with open(archives[0], "r+b") as f:
            f.seek(os.path.getsize(archives[0]) // 2)
            b = f.read(1)
            f.seek(-1, 1)
            f.write(bytes([b[0] ^ 0x10]))
        wait_metric(c, r'jvdb_backup_drill_passed\{database="d"\} 0')
        d = [x for x in expect(c.get("/v1/backups/schedule"), 200).json["databases"] if x["databaseId"] == "d"][0]
        assert d["lastDrill"]["passed"] is False and "the restore failed" in d["lastDrill"]["failure"], d
        assert "restore drill of 'd' FAILED" in s.log(), s.log()[-3000:]
        # The live database was never touched.
        assert expect(c.post("/v1/databases/d/vectors/count", {}), 200).json["count"] == 60
    finally:
        s.stop()


@test
def drills_need_a_repository():
    s = Server(args=["--backup-drill-every", "1h"])
    try:
        s.start(timeout=10)
        raise AssertionError("started without a repository")
    except AssertionError as e:
        assert "need a repository" in str(e) or "--backup-repo" in str(e), str(e)
    s2 = Server(args=["--backup-drill-every", "soon", "--backup-repo", "/tmp/x"])
    try:
        s2.start(timeout=10)
        raise AssertionError("started with a bad duration")
    except AssertionError as e:
        assert "bad --backup-drill-every 'soon'" in str(e), str(e)


if __name__ == "__main__":
    sys.exit(jvdbtest.run_tests(sys.argv))
