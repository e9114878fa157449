#!/usr/bin/env python3
"""Binary vector batches and the fast JSON decoders (issue 12, "Must measure": HTTP ingest), against
the real server.

Usage: test_binary_batch.py PATH_TO_JVDB [TEST...]

POST /v1/databases/{id}/vectors/batch with Content-Type: application/octet-stream takes the layout
of src/server/binbatch.h (docs/API.md "Binary batches"): "JVB1", count, dim, metadata length,
little-endian float32 values, u16-length-prefixed ids, a JSON array of metadata.  Checked here:
  - a binary batch stores exactly the bits sent (GET returns them), with its metadata;
  - every malformed body (short header, bad magic, zero count/dimension, truncated values or ids,
    trailing bytes, a bad sidecar) is refused with 400 and a message naming what is wrong, and
    nothing is stored; record rules (NaN, dimension, id text) give the JSON path's messages;
  - JSON single-vector POSTs and searches (whose numbers now skip jansson) still store and search
    the same values, and their errors are unchanged.
The last line printed is "N passed, N failed".
"""
import json
import math
import os
import random
import struct
import sys
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jvdbtest  # noqa: E402
from jvdbtest import Server, expect, f32_bits, test  # noqa: E402

DIM = 4
OCTET = {"Content-Type": "application/octet-stream"}


def body(ids, vectors, metas=None, magic=b"JVB1", count=None, dim=None, meta_len=None, tail=b""):
    """A binary batch; any header field may be forced to a wrong value."""
    sidecar = json.dumps(metas).encode() if metas is not None else b""
    d = dim if dim is not None else (len(vectors[0]) if vectors else DIM)
    out = magic + struct.pack("<III", len(ids) if count is None else count, d,
                              len(sidecar) if meta_len is None else meta_len)
    for v in vectors:
        out += struct.pack("<%df" % len(v), *v)
    for i in ids:
        b = i.encode() if isinstance(i, str) else i
        out += struct.pack("<H", len(b)) + b
    return out + sidecar + tail


def post_bin(c, raw, name="docs"):
    return c.post("/v1/databases/%s/vectors/batch" % name, raw=raw, headers=OCTET)


def count(c, name="docs"):
    return expect(c.post("/v1/databases/%s/vectors/count" % name, {}), 200)["count"]


def setup(c):
    expect(c.post("/v1/databases", {"name": "docs", "vectorDimension": DIM, "distanceMetric": "l2"}), 201)


@test
def binary_batch_stores_exact_bits():
    """Values round-trip bit for bit (denormals, -0, extremes), metadata as given."""
    with Server() as s:
        c = s.client()
        setup(c)
        rnd = random.Random(7)
        vecs = [[rnd.uniform(-1e17, 1e17), -0.0, 1.4e-45, rnd.uniform(-1e-38, 1e-38)] for _ in range(50)]
        vecs = [list(struct.unpack("<4f", struct.pack("<4f", *v))) for v in vecs]
        ids = ["b%d" % i for i in range(50)]
        ids[3] = "caf\u00e9-\u4e2d"
        metas = [{"i": i, "tag": "x"} if i % 2 else None for i in range(50)]
        r = expect(post_bin(c, body(ids, vecs, metas)), 201)
        assert r["count"] == 50, r.json
        for i in (0, 1, 3, 49):
            g = expect(c.get("/v1/databases/docs/vectors/" + urllib.parse.quote(ids[i])), 200)
            assert f32_bits(g["values"]) == f32_bits(vecs[i]), (i, g.json)
            assert g["metadata"] == metas[i], g.json
        # Without a sidecar: no metadata.
        expect(post_bin(c, body(["n1"], [[1, 2, 3, 4]])), 201)
        assert expect(c.get("/v1/databases/docs/vectors/n1"), 200)["metadata"] is None
        assert count(c) == 51


@test
def binary_batch_malformed_bodies_refused():
    """Every malformed body: 400 naming the problem, nothing stored."""
    with Server() as s:
        c = s.client()
        setup(c)
        v = [[1, 2, 3, 4], [5, 6, 7, 8]]
        good = body(["a", "b"], v, [{"k": 1}, None])
        cases = [
            (good[:10], None, ["header"]),
            (b"", None, ["header"]),
            (body(["a", "b"], v, magic=b"JVB2"), None, ["magic"]),
            (body([], [], count=0), None, ["count is 0"]),
            (body(["a"], [[1, 2, 3, 4]], dim=0), None, ["dimension 0"]),
            (body(["a"], [[1, 2, 3, 4]], dim=70000), None, ["dimension 70000"]),
            (body(["a", "b"], v, count=1000000), None, ["1000000 vectors"]),
            (good[:16 + 20], None, ["need"]),
            (body(["a", "b"], v)[:-1], None, ["id"]),
            (body(["a", "b"], v, tail=b"xx"), None, ["belong to nothing"]),
            (body(["a", ""], v), 1, ["record 1", "empty"]),
            (body(["a", b"b\x00c"], v), 1, ["record 1", "NUL"]),
            (body(["a", "b"], v, meta_len=3, tail=b"[1]"), None, ["entries"]),
            (body(["a", "b"], v, [{"k": 1}]), None, ["1 entries for 2"]),
            (body(["a", "b"], v, [{"k": 1}, 5]), 1, ["record 1", "object or null"]),
            (body(["a", "b"], v, meta_len=5, tail=b"[{,}]"), None, ["not valid JSON"]),
            (body(["a", "b"], v, meta_len=4, tail=b"{\"a\""), None, ["not valid JSON"]),
            # Record rules are the library's, worded as for JSON batches.
            (body(["a", "b"], [[1, 2, 3, 4], [1, float("nan"), 3, 4]]), 1, ["record 1", "NaN"]),
            (body(["a", "b"], [[1, 2, 3, 4], [1, float("inf"), 3, 4]]), 1, ["record 1", "infinite"]),
            (body(["a", "b"], [[1, 2, 3], [1, 2, 3]]), 0, ["dimension"]),
            (body(["a", b"\xff\xfe"], v), 1, ["record 1", "UTF-8"]),
            (body(["a", "x" * 1025], v), 1, ["record 1", "1024"]),
        ]
        for raw, index, words in cases:
            r = post_bin(c, raw)
            assert r.status == 400, (raw[:40], r)
            assert r["error"] == "INVALID_ARGUMENT", r.json
            for wd in words:
                assert wd in r["message"], (wd, r.json)
            if index is not None:
                assert r.json.get("index") == index, r.json
        assert count(c) == 0
        expect(post_bin(c, good), 201)
        assert count(c) == 2
        # Deep sidecar nesting is bounded like JSON bodies.
        deep = "[" + "{\"a\":" * 40 + "1" + "}" * 40 + ",null]"
        r = post_bin(c, body(["p", "q"], v, meta_len=len(deep), tail=deep.encode()))
        expect(r, 400)
        assert "deeper" in r["message"], r.json


@test
def json_fast_paths_unchanged():
    """Single POST, batch and search take the fast number decoder; values and errors as before."""
    with Server() as s:
        c = s.client()
        setup(c)
        rnd = random.Random(3)
        for i in range(200):
            vals = [rnd.choice([rnd.uniform(-1, 1), rnd.uniform(-1e-40, 1e-40), rnd.uniform(-3e17, 3e17), 0.0, -0.0])
                    for _ in range(DIM)]
            text = '{"id": "s%d", "values": [%s]}' % (i, ", ".join(
                rnd.choice(["%.9g", "%.17g", "%.3e", "%r"]) % x for x in vals))
            expect(c.post("/v1/databases/docs/vectors", raw=text.encode()), 201)
            want = [struct.unpack("<f", struct.pack("<f", float(x)))[0] for x in json.loads(text)["values"]]
            got = expect(c.get("/v1/databases/docs/vectors/s%d" % i), 200)["values"]
            assert f32_bits(got) == f32_bits(want), (text, got)
            # PUT's values take the fast decoder too.
            vals2 = [rnd.uniform(-1e5, 1e5) for _ in range(DIM)]
            text = '{"values": [%s], "metadata": {"n": %d}}' % (", ".join("%.17g" % x for x in vals2), i)
            expect(c.put("/v1/databases/docs/vectors/s%d" % i, raw=text.encode()), 200)
            got = expect(c.get("/v1/databases/docs/vectors/s%d" % i), 200)
            want = [struct.unpack("<f", struct.pack("<f", x))[0] for x in vals2]
            assert f32_bits(got["values"]) == f32_bits(want) and got["metadata"] == {"n": i}, (text, got.json)
        r = expect(c.put("/v1/databases/docs/vectors/s1", raw=b'{"values": [1, 2, 3, 4e39]}'), 400)
        assert "values[3]" in r["message"] and "32-bit float" in r["message"], r.json
        r = expect(c.put("/v1/databases/docs/vectors/s1", raw=b'{"values": [1, 2, 3, 4], "id": "other"}'), 400)
        assert "differs" in r["message"], r.json
        r = expect(c.put("/v1/databases/docs/vectors/s1", raw=b'{"values": [1, 2, 3, 4], "valuez": 1}'), 400)
        assert "unknown field 'valuez'" in r["message"], r.json
        # Integer "-0" is jansson's integer 0 (+0), a real "-0.0" keeps its sign.
        expect(c.post("/v1/databases/docs/vectors", raw=b'{"id": "z", "values": [-0, -0.0, 0, 1]}'), 201)
        got = expect(c.get("/v1/databases/docs/vectors/z"), 200)["values"]
        assert [math.copysign(1, x) for x in got[:2]] == [1, -1], got
        # Errors unchanged: out of float32 range, wrong types, unknown fields.
        r = expect(c.post("/v1/databases/docs/vectors", raw=b'{"id": "o", "values": [1e39, 0, 0, 0]}'), 400)
        assert "does not fit a 32-bit float" in r["message"], r.json
        r = expect(c.post("/v1/databases/docs/vectors", raw=b'{"id": "o", "values": [1, 0, 0, 0], "x": 1}'), 400)
        assert "unknown field 'x'" in r["message"], r.json
        r = expect(c.post("/v1/databases/docs/search", raw=b'{"queryVector": [1, 0, 0, 0], "topk": 3}'), 400)
        assert "unknown field 'topk'" in r["message"], r.json
        r = expect(c.post("/v1/databases/docs/search", raw=b'{"queryVector": [1, 0, 0, 1e39], "topK": 3}'), 400)
        assert "queryVector[3]" in r["message"], r.json
        r = expect(c.post("/v1/databases/docs/search", raw=b'{"queryVector": [1, 0, 0, 0], "topK": 3, "topK": 4}'), 400)
        assert "duplicate" in r["message"], r.json
        # Batch refusals keep their order: an unknown top-level field first, then nesting, then the
        # vectors' own faults (the fast decoder checks nesting and top-level keys only when needed).
        B = "/v1/databases/docs/vectors/batch"
        r = expect(c.post(B, raw=b'{"vectors": [{"id": "a", "values": [1, 2, 3, 4], "x": 1}], "extra": 1}'), 400)
        assert "unknown field 'extra'" in r["message"], r.json
        deep = b'{"vectors": [{"id": "a", "values": [1, 2, 3, 4], "x": 1}, {"id": "b", "values": [1, 2, 3, 4], ' \
               b'"metadata": ' + b'{"a": ' * 40 + b'1' + b'}' * 40 + b'}]}'
        r = expect(c.post(B, raw=deep), 400)
        assert "deeper" in r["message"], r.json
        r = expect(c.post(B, raw=b'{"vectors": [{"id": "a", "values": [1, 2, 3, 4], "x": 1}]}'), 400)
        assert "record 0: unknown field 'x'" in r["message"] and r["index"] == 0, r.json
        # A search decoded on the fast path answers as the general one would.
        r = expect(c.post("/v1/databases/docs/search",
                          raw=b'{"topK": 3, "queryVector": [0.5, 0.25, 1e-3, -2], "includeValues": true}'), 200)
        assert r["count"] == 3, r.json


@test
def keepalive_split_send_not_delayed():
    """A client that sends the head and the body in two writes on a kept-alive connection (Nagle on)
    used to wait for the server's delayed ACK: 40-50 ms per request instead of well under 1."""
    import re
    import socket
    import statistics
    import time
    with Server() as s:
        c = s.client()
        setup(c)
        expect(c.post("/v1/databases/docs/vectors", {"id": "a", "values": [1, 2, 3, 4]}), 201)
        body = json.dumps({"queryVector": [1, 2, 3, 4], "topK": 1}).encode()
        head = ("POST /v1/databases/docs/search HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                "Content-Length: %d\r\n\r\n" % len(body)).encode()
        sock = socket.create_connection(("127.0.0.1", s.port))
        lat = []
        try:
            for _ in range(25):
                t0 = time.perf_counter()
                sock.sendall(head)
                sock.sendall(body)
                buf = b""
                while True:
                    chunk = sock.recv(65536)
                    assert chunk, "the server closed the connection"
                    buf += chunk
                    h, sep, rest = buf.partition(b"\r\n\r\n")
                    if sep and len(rest) >= int(re.search(rb"Content-Length: *(\d+)", h, re.I).group(1)):
                        break
                assert buf.startswith(b"HTTP/1.1 200"), buf[:100]
                lat.append(time.perf_counter() - t0)
        finally:
            sock.close()
        med = statistics.median(lat[5:])
        assert med < 0.030, "median %.1f ms per request on a kept-alive connection" % (med * 1e3)


if __name__ == "__main__":
    sys.exit(jvdbtest.run_tests(sys.argv))
