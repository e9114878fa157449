#!/usr/bin/env python3
"""Bounded load test of `jvdb serve` over loopback (python3 standard library only).

Usage: test_load.py PATH_TO_JVDB [SECONDS]

For ~20 s, concurrent clients mix batch puts, single puts, deletes, gets and searches on two
databases while compactions run (forced over HTTP in a loop, and the background compactor with a
one-second check interval) and backups are taken over HTTP in a loop.  Every writer owns its ids,
so the test knows exactly what each acknowledged write left behind.  It passes when no request got
a 5xx (or any unexpected status), and when every acknowledged write is there — checked live at the
end, and again after a graceful restart.  The last line printed is "N passed, N failed".
"""
import os
import random
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jvdbtest  # noqa: E402
from jvdbtest import Server, expect, f32, f32_bits  # noqa: E402

DIM = 16
SECONDS = 20.0


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.by_kind = {}
        self.bad = []

    def add(self, kind, resp, ok):
        with self.lock:
            self.by_kind.setdefault(kind, {}).setdefault(resp.status, 0)
            self.by_kind[kind][resp.status] += 1
            if resp.status not in ok:
                self.bad.append((kind, resp))


def writer(port, db, wid, model, stats, stop, seed):
    """Owns ids "<wid>-<n>": batch puts (new and overwrites), single puts, deletes, reads, searches."""
    rnd = random.Random(seed)
    c = jvdbtest.Client(port)
    n = 0
    live = []
    while not stop.is_set():
        op = rnd.random()
        if op < 0.35:
            items = []
            for _ in range(rnd.randint(5, 40)):
                if live and rnd.random() < 0.3:
                    vid = rnd.choice(live)
                else:
                    vid = "%s-%d" % (wid, n)
                    n += 1
                items.append((vid, [f32(rnd.uniform(-1, 1)) for _ in range(DIM)], {"w": wid, "n": n}))
            dedup = {}
            for vid, v, m in items:
                dedup[vid] = (v, m)   # the last occurrence in a batch wins
            r = c.post("/v1/databases/%s/vectors/batch" % db,
                       {"vectors": [{"id": vid, "values": v, "metadata": m} for vid, v, m in items]})
            stats.add("batch", r, (201,))
            if r.status == 201:
                for vid, vm in dedup.items():
                    if vid not in model:
                        live.append(vid)
                    model[vid] = vm
        elif op < 0.50:
            vid = "%s-%d" % (wid, n)
            n += 1
            v = [f32(rnd.uniform(-1, 1)) for _ in range(DIM)]
            r = c.post("/v1/databases/%s/vectors" % db, {"id": vid, "values": v})
            stats.add("put", r, (201,))
            if r.status == 201:
                model[vid] = (v, None)
                live.append(vid)
        elif op < 0.65 and live:
            vid = live.pop(rnd.randrange(len(live)))
            r = c.delete("/v1/databases/%s/vectors/%s" % (db, vid))
            stats.add("delete", r, (200,))
            if r.status == 200:
                model[vid] = None
        elif op < 0.80 and live:
            vid = rnd.choice(live)
            r = c.get("/v1/databases/%s/vectors/%s" % (db, vid))
            stats.add("get", r, (200,))
            if r.status == 200:
                v, m = model[vid]
                if f32_bits(r.json["values"]) != f32_bits(v) or r.json["metadata"] != m:
                    stats.bad.append(("get-mismatch", r))
        else:
            # Search for one of our own vectors: an exact search must find it at distance 0.
            if live and rnd.random() < 0.5:
                vid = rnd.choice(live)
                v = model[vid][0]
                r = c.post("/v1/databases/%s/search" % db, {"queryVector": v, "topK": 3, "exact": True})
                stats.add("search-exact", r, (200,))
                if r.status == 200 and (not r.json["results"] or r.json["results"][0]["score"] != 0):
                    stats.bad.append(("search-miss", r))
            else:
                q = [rnd.uniform(-1, 1) for _ in range(DIM)]
                r = c.post("/v1/databases/%s/search" % db, {"queryVector": q, "topK": 10, "includeMetadata": True,
                                                           "filters": {"w": wid}})
                stats.add("search-hnsw", r, (200,))
                if r.status == 200 and any(x["vector"]["metadata"]["w"] != wid for x in r.json["results"]):
                    stats.bad.append(("filter-wrong", r))
    c.close()


def compactor(port, dbs, stats, stop):
    c = jvdbtest.Client(port)
    i = 0
    while not stop.is_set():
        r = c.post("/v1/databases/%s/compact" % dbs[i % len(dbs)], {"force": True, "full": i % 2 == 0})
        stats.add("compact", r, (200, 409))   # 409: the background compactor has that database
        i += 1
        time.sleep(0.5)


def backupper(port, dbs, stats, stop):
    c = jvdbtest.Client(port)
    i = 0
    while not stop.is_set():
        r = c.post("/v1/databases/%s/backups" % dbs[i % len(dbs)], {"type": "full" if i % 3 == 0 else "incremental"})
        stats.add("backup", r, (201,))
        i += 1
        time.sleep(1.0)


def observer(port, stats, stop):
    c = jvdbtest.Client(port)
    while not stop.is_set():
        for path in ("/metrics", "/status", "/v1/compaction", "/v1/databases"):
            stats.add("admin", c.get(path), (200,))
        time.sleep(0.5)


def check_model(c, db, model):
    want_live = {k: v for k, v in model.items() if v is not None}
    gone = [k for k, v in model.items() if v is None]
    ids = list(want_live)
    for i in range(0, len(ids), 500):
        r = expect(c.post("/v1/databases/%s/vectors/batch-get" % db, {"ids": ids[i:i + 500]}), 200).json
        assert r["notFound"] == [], "acknowledged writes lost in %s: %r" % (db, r["notFound"][:5])
        for v in r["vectors"]:
            mv, mm = want_live[v["id"]]
            assert f32_bits(v["values"]) == f32_bits(mv) and v["metadata"] == mm, v["id"]
    for i in range(0, len(gone), 500):
        r = expect(c.post("/v1/databases/%s/vectors/batch-get" % db, {"ids": gone[i:i + 500]}), 200).json
        assert r["count"] == 0, "deleted vectors came back in %s: %r" % (db, [v["id"] for v in r["vectors"]][:5])
    assert expect(c.get("/v1/databases/" + db), 200)["stats"]["vectorCount"] == len(want_live)


def load_test():
    s = Server()
    s.args = ["--backup-repo", os.path.join(s.root, "repo"), "--compaction-interval", "1s", "--threads", "8"]
    try:
        s.start()
        c = s.client()
        dbs = ["load_a", "load_b"]
        for db in dbs:
            # Small segments and an eager policy, so compactions have real work during the run.
            expect(c.post("/v1/databases", {"name": db, "vectorDimension": DIM, "distanceMetric": "euclidean",
                                            "compactionPolicy": {"minRecords": 50, "deadRatio": 0.2}}), 201)
        stats = Stats()
        stop = threading.Event()
        models = {db: {} for db in dbs}
        threads = []
        for w in range(6):
            db = dbs[w % 2]
            threads.append(threading.Thread(target=writer, args=(s.port, db, "w%d" % w, models[db], stats, stop, w)))
        threads.append(threading.Thread(target=compactor, args=(s.port, dbs, stats, stop)))
        threads.append(threading.Thread(target=backupper, args=(s.port, dbs, stats, stop)))
        threads.append(threading.Thread(target=observer, args=(s.port, stats, stop)))
        t0 = time.time()
        for t in threads:
            t.start()
        time.sleep(SECONDS)
        stop.set()
        for t in threads:
            t.join(120)
        elapsed = time.time() - t0
        total = sum(sum(v.values()) for v in stats.by_kind.values())
        print("  %d requests in %.1f s (%.0f/s): %s" % (total, elapsed, total / elapsed,
              ", ".join("%s %s" % (k, dict(sorted(v.items()))) for k, v in sorted(stats.by_kind.items()))))
        fivexx = [(k, r) for k, v in stats.by_kind.items() for r in v if r >= 500]
        assert not fivexx, "5xx answers: %r" % fivexx
        assert not stats.bad, "unexpected answers: %r" % stats.bad[:5]
        assert stats.by_kind.get("compact", {}).get(200, 0) >= 5, stats.by_kind.get("compact")
        assert stats.by_kind.get("backup", {}).get(201, 0) >= 5, stats.by_kind.get("backup")
        for db in dbs:
            check_model(c, db, models[db])
        comp = expect(c.get("/v1/compaction"), 200).json
        print("  compactions: %d, %d bytes reclaimed" % (comp["totals"]["compactions"], comp["totals"]["bytesReclaimed"]))
        s.stop()
        s.start()
        c = s.client()
        for db in dbs:
            check_model(c, db, models[db])
        s.stop()
    except BaseException:
        # The server's own account (a sanitizer report, a crash) is what explains a failure here.
        print("server log (tail):\n" + s.log()[-8000:])
        raise
    finally:
        s.cleanup()


if __name__ == "__main__":
    if len(sys.argv) > 2:
        SECONDS = float(sys.argv[2])
    jvdbtest.TESTS.append(load_test)
    sys.exit(jvdbtest.run_tests(sys.argv[:2]))
