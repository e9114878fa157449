"""Online export over HTTP (issue 12): GET /v1/databases/{id}/export streams every vector as JSON Lines.

  export_is_exact_and_streamed    chunked application/x-ndjson, one line per vector, values bit-exact,
                                  metadata as stored; an empty database gives an empty body
  export_during_writes            a slow reader while other ids are written and deleted: every vector that
                                  existed throughout comes exactly once, no id twice
  client_going_away               a client that reads a little and hangs up: the database is given back
                                  (a drop goes through), the server keeps serving
  export_then_import              the exported file fed to `jvdb import` gives the same vectors
  roles_and_errors                read keys may export, a key limited to another database may not;
                                  unknown database 404

usage: test_export.py PATH_TO_JVDB
"""
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jvdbtest  # noqa: E402
from jvdbtest import Client, Server, expect, f32_bits, test  # noqa: E402

DIM = 4


def vectors(n, start=0):
    out = []
    for i in range(start, start + n):
        out.append({"id": "v%06d" % i, "values": [i * 0.1, -0.0, 1e-45, -(i % 7) * 1e18],
                    "metadata": {"i": i, "tag": ["a", "b"][i % 2]} if i % 3 else None})
    return out


def load(c, db, vs):
    for k in range(0, len(vs), 1000):
        batch = [{k2: v for k2, v in x.items() if v is not None} for x in vs[k:k + 1000]]
        expect(c.post("/v1/databases/%s/vectors/batch" % db, {"vectors": batch}), 201)


def export(port, db, key=None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    conn.request("GET", "/v1/databases/%s/export" % db, headers={"X-API-Key": key} if key else {})
    r = conn.getresponse()
    body = r.read()
    conn.close()
    return r, body


@test
def export_is_exact_and_streamed():
    with_server = Server().start()
    try:
        c = Client(with_server.port)
        expect(c.post("/v1/databases", {"name": "e", "vectorDimension": DIM, "distanceMetric": "euclidean"}), 201)
        r, body = export(with_server.port, "e")
        assert r.status == 200 and body == b"", (r.status, body[:200])
        vs = vectors(12000)
        load(c, "e", vs)
        r, body = export(with_server.port, "e")
        assert r.status == 200, body[:300]
        assert r.getheader("Content-Type") == "application/x-ndjson", r.getheaders()
        assert r.getheader("Transfer-Encoding") == "chunked", r.getheaders()
        assert body.endswith(b"\n")
        lines = [json.loads(l) for l in body.decode().splitlines()]
        assert [l["id"] for l in lines] == sorted(v["id"] for v in vs), "ids out of order or missing"
        want = {v["id"]: v for v in vs}
        for l in lines:
            assert f32_bits(l["values"]) == f32_bits(want[l["id"]]["values"]), l
            assert l.get("metadata") == want[l["id"]]["metadata"], l
            assert set(l) <= {"id", "values", "metadata"}, l
    finally:
        with_server.stop()


@test
def export_during_writes():
    s = Server().start()
    try:
        c = Client(s.port)
        expect(c.post("/v1/databases", {"name": "e", "vectorDimension": DIM}), 201)
        stable = vectors(30000)
        load(c, "e", stable)
        stop = threading.Event()

        def churn():
            w = Client(s.port)
            i = 0
            while not stop.is_set():
                ids = ["x%07d" % (i + k) for k in range(200)]
                expect(w.post("/v1/databases/e/vectors/batch",
                              {"vectors": [{"id": x, "values": [1, 2, 3, 4]} for x in ids]}), 201)
                expect(w.post("/v1/databases/e/vectors/delete", {"ids": ids[:150]}), 200)
                i += 200
            w.close()

        t = threading.Thread(target=churn)
        t.start()
        try:
            sock = socket.create_connection(("127.0.0.1", s.port))
            sock.sendall(b"GET /v1/databases/e/export HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
                time.sleep(0.0005)   # a slow reader: the export spans many write batches
            sock.close()
        finally:
            stop.set()
            t.join()
        head, _, rest = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        # De-chunk.
        out = b""
        while rest:
            size_s, _, rest = rest.partition(b"\r\n")
            size = int(size_s, 16)
            if size == 0:
                break
            out += rest[:size]
            rest = rest[size + 2:]
        ids = [json.loads(l)["id"] for l in out.decode().splitlines()]
        assert len(ids) == len(set(ids)), "an id came twice"
        missing = {v["id"] for v in stable} - set(ids)
        assert not missing, "vectors that existed throughout are missing: %s" % sorted(missing)[:5]
    finally:
        s.stop()


@test
def client_going_away():
    s = Server().start()
    try:
        c = Client(s.port)
        expect(c.post("/v1/databases", {"name": "e", "vectorDimension": DIM}), 201)
        load(c, "e", vectors(20000))
        for _ in range(3):
            sock = socket.create_connection(("127.0.0.1", s.port))
            sock.sendall(b"GET /v1/databases/e/export HTTP/1.1\r\nHost: x\r\n\r\n")
            assert sock.recv(1000).startswith(b"HTTP/1.1 200")
            sock.close()
        time.sleep(0.5)
        expect(c.get("/health"), 200)
        # The export held the database; once the clients are gone a drop goes through.
        deadline = time.time() + 20
        while True:
            r = c.delete("/v1/databases/e")
            if r.status == 200 or time.time() > deadline:
                break
            time.sleep(0.2)
        expect(r, 200)
    finally:
        s.stop()


@test
def export_then_import():
    s = Server().start()
    root = s.root
    try:
        c = Client(s.port)
        expect(c.post("/v1/databases", {"name": "e", "vectorDimension": DIM, "distanceMetric": "euclidean"}), 201)
        vs = vectors(3000)
        load(c, "e", vs)
        r, body = export(s.port, "e")
        assert r.status == 200
    finally:
        s.stop()
    path = os.path.join(root, "e.jsonl")
    with open(path, "wb") as f:
        f.write(body)
    data = os.path.join(root, "data")
    run = lambda *a: subprocess.run([jvdbtest.JVDB, "--data", data] + list(a), capture_output=True, text=True)
    p = run("db", "create", "copy", "--dim", str(DIM), "--metric", "l2")
    assert p.returncode == 0, p.stderr
    p = run("import", "copy", path)
    assert p.returncode == 0, p.stderr
    p = run("export", "copy", "-")
    assert p.returncode == 0, p.stderr
    got = {json.loads(l)["id"]: json.loads(l) for l in p.stdout.splitlines()}
    assert len(got) == len(vs)
    for v in vs:
        assert f32_bits(got[v["id"]]["values"]) == f32_bits(v["values"]), v["id"]
        assert got[v["id"]].get("metadata") == v["metadata"], v["id"]


@test
def roles_and_errors():
    s = Server(args=["--api-key", "boot-" + "2" * 20]).start()
    try:
        admin = Client(s.port, key="boot-" + "2" * 20)
        for name in ("a", "b"):
            expect(admin.post("/v1/databases", {"name": name, "vectorDimension": DIM}), 201)
        load(admin, "a", vectors(10))
        reader = expect(admin.post("/v1/api-keys", {"role": "read", "databases": ["a"]}), 201).json["apiKey"]
        r, body = export(s.port, "a", reader)
        assert r.status == 200 and len(body.splitlines()) == 10, (r.status, body[:200])
        r, body = export(s.port, "b", reader)
        assert r.status == 403, (r.status, body)
        r, body = export(s.port, "a")
        assert r.status == 401, (r.status, body)
        r, body = export(s.port, "nope", "boot-" + "2" * 20)
        assert r.status == 404 and json.loads(body)["error"] == "NOT_FOUND", body
    finally:
        s.stop()


if __name__ == "__main__":
    sys.exit(jvdbtest.run_tests(sys.argv))
