#!/usr/bin/env python3
"""Adversarial end-to-end tests of the HTTP layer of `jvdb serve` (issue 9: items 6, 8, 9, 13).

Usage: test_adversarial_http.py PATH_TO_JVDB [TEST...]

One test per finding of the review, each of which failed on the code it was found in: idle and
trickling connections locking every client out (slowloris), unbounded memory for request bodies,
request smuggling through ambiguous framing, HTML error pages from the HTTP library, an empty
JVDB_API_KEY silently meaning "no authentication", and query arguments with %00 or of any length
being ignored.  Smuggling and slowloris cases speak raw HTTP over sockets.  Connections only ever go
to the server on loopback; the slowloris cases use source addresses 127.0.0.2-127.0.0.9 (all of
127/8 is loopback on Linux) so that the per-address limit does not hide what is being tested.
"""
import errno
import json
import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jvdbtest  # noqa: E402
from jvdbtest import Server, expect, test  # noqa: E402


def raw(port, data, timeout=5, src=None):
    """Sends raw bytes on a new connection, reads until the server closes it (or `timeout` passes
    without a byte); returns every byte read."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    if src:
        sock.bind((src, 0))
    sock.connect(("127.0.0.1", port))
    try:
        try:
            sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass
        buf = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            buf += chunk
        return buf
    finally:
        sock.close()


def answers(buf):
    """Splits what the server sent into (status, headers dict, body) answers."""
    out = []
    while buf:
        head, sep, rest = buf.partition(b"\r\n\r\n")
        assert sep, "truncated answer: %r" % buf[:300]
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ")[1])
        hdrs = {}
        for ln in lines[1:]:
            k, _, v = ln.partition(b":")
            hdrs[k.strip().decode().lower()] = v.strip().decode()
        n = int(hdrs.get("content-length", "0"))
        out.append((status, hdrs, rest[:n]))
        buf = rest[n:]
    return out


def one_json_error(buf, status, code, contains=""):
    """The server sent exactly one answer: `status`, Connection: close, the documented JSON error."""
    got = answers(buf)
    assert len(got) == 1, "expected one answer, got %d: %r" % (len(got), buf[:600])
    st, hdrs, body = got[0]
    assert st == status, (st, buf[:600])
    assert hdrs.get("connection", "").lower() == "close", hdrs
    assert hdrs.get("content-type", "").startswith("application/json"), (hdrs, body[:200])
    doc = json.loads(body)
    assert doc.get("error") == code and isinstance(doc.get("message"), str), doc
    assert contains in doc["message"], (contains, doc)
    return doc


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want:
        new = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def open_idle(port, n, sources):
    """n connections that send nothing, spread over the source addresses."""
    socks = []
    for i in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind((sources[i % len(sources)], 0))
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        socks.append(s)
    return socks


def closed_by_peer(s):
    """True once the server has closed the connection (a socket still connecting is not closed)."""
    try:
        return s.recv(1) == b""
    except (BlockingIOError, InterruptedError):
        return False
    except OSError as e:
        return e.errno != errno.ENOTCONN


# ---------------------------------------------------------------- item 6: slowloris


@test
def slowloris_idle_connections_do_not_lock_out_health():
    # 1,100 connections that never send a byte: the old server stopped serving anyone at ~1,020
    # (libmicrohttpd's default connection limit) for its 120 s timeout.  Now /health still answers
    # at once, and the idle connections are closed after the default --header-timeout (10 s).
    n = 1100
    if raise_nofile(n + 200) < n + 200:
        n = raise_nofile(0) - 200
        print("note: open-file limit lets this test open only %d connections" % n)
    sources = ["127.0.0.%d" % i for i in range(2, 8)]   # 6 addresses, ~184 each: under the per-address limit
    with Server() as s:
        t0 = time.time()
        socks = open_idle(s.port, n, sources)
        try:
            time.sleep(0.5)   # let the server accept them all
            c = jvdbtest.Client(s.port, timeout=5)
            t1 = time.time()
            expect(c.get("/health"), 200)
            assert time.time() - t1 < 2, "/health took %.1f s with %d idle connections" % (time.time() - t1, n)
            c.close()
            # None was closed before its deadline ...
            time.sleep(max(0.0, t0 + 8 - time.time()))
            early = sum(closed_by_peer(x) for x in socks)
            assert early == 0, "%d connections closed before the header timeout" % early
            # ... and every one is closed soon after it (the reaper ticks every 100 ms).
            deadline = t0 + 10 + 3
            open_ = list(socks)
            while open_ and time.time() < deadline:
                time.sleep(0.2)
                open_ = [x for x in open_ if not closed_by_peer(x)]
            assert not open_, "%d of %d idle connections still open %.1f s after connecting" % (
                len(open_), n, time.time() - t0)
        finally:
            for x in socks:
                x.close()
        expect(s.client().get("/health"), 200)


@test
def slowloris_trickled_headers_are_cut_at_the_deadline():
    # A connection that sends a header byte every 300 ms is never idle, so an inactivity timeout
    # (all the old server had, 120 s) never fires; the request-head deadline closes it anyway.
    with Server(args=["--header-timeout", "1500ms"]) as s:
        sock = socket.create_connection(("127.0.0.1", s.port), timeout=10)
        t0 = time.time()
        req = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"X-Slow: " + b"a" * 200
        closed_at = None
        try:
            for i in range(len(req)):
                sock.sendall(req[i:i + 1])
                time.sleep(0.3)
                if time.time() - t0 > 6:
                    break
        except (BrokenPipeError, ConnectionResetError):
            closed_at = time.time() - t0
        if closed_at is None:
            sock.settimeout(1)
            try:
                data = sock.recv(100)
                closed_at = time.time() - t0 if data == b"" else None
            except ConnectionResetError:
                closed_at = time.time() - t0
            except socket.timeout:
                pass
        sock.close()
        assert closed_at is not None and closed_at < 4, "trickling connection not closed (%r)" % closed_at
        assert "closed for not sending a complete request head" not in s.log()   # said at stop, not per connection


@test
def slowloris_per_address_limit():
    # One address cannot take every connection: past --max-connections-per-ip its new connections
    # are closed at once, and other clients are served.
    with Server(args=["--max-connections-per-ip", "20"]) as s:
        socks = open_idle(s.port, 30, ["127.0.0.9"])
        try:
            time.sleep(0.5)
            refused = sum(closed_by_peer(x) for x in socks)
            assert refused == 10, "%d of 30 connections from one address were refused, expected 10" % refused
            expect(jvdbtest.Client(s.port, timeout=5).get("/health"), 200)
        finally:
            for x in socks:
                x.close()
        time.sleep(0.3)
        one_ok = raw(s.port, b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", src="127.0.0.9")
        assert answers(one_ok)[0][0] == 200


# ---------------------------------------------------------------- item 8: memory for request bodies


@test
def body_budget_and_default_cap():
    # The default body cap is 32 MiB (was 64 MiB): refused from the header alone.
    with Server() as s:
        buf = raw(s.port, b"POST /v1/databases HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % (33 << 20))
        one_json_error(buf, 413, "PAYLOAD_TOO_LARGE", "exceeds the limit of 33554432 bytes")
    # Bodies held at once, over all connections, stay under --max-buffered: two slow uploads of
    # ~1 MB hold 2 MB; a third that cannot fit is answered 503 at once with Retry-After; once the
    # first ones finish, the budget is free again.
    with Server(args=["--max-body", "1MiB", "--max-buffered", "2MiB"]) as s:
        mk = s.client()
        expect(mk.post("/v1/databases", {"name": "d", "vectorDimension": 2}), 201)
        body = b" " * (1 << 20)
        head = b"POST /v1/databases/d/search HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body)
        slow = []
        for _ in range(2):
            x = socket.create_connection(("127.0.0.1", s.port), timeout=10)
            x.sendall(head + body[:1000000])
            slow.append(x)
        time.sleep(0.5)
        buf = raw(s.port, head + body[:1000])
        doc = one_json_error(buf, 503, "SERVER_BUSY", "--max-buffered")
        assert "retry-after" in answers(buf)[0][1], answers(buf)[0][1]
        # A chunked upload (no Content-Length) that would pass the budget is read, dropped and 503.
        chunked = (b"POST /v1/databases/d/search HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" +
                   b"".join(b"%x\r\n%s\r\n" % (65536, b" " * 65536) for _ in range(4)) + b"0\r\n\r\n")
        one_json_error(raw(s.port, chunked), 503, "SERVER_BUSY")
        for x in slow:
            x.sendall(body[1000000:])
            got = b""
            while b"\r\n\r\n" not in got:
                got += x.recv(65536)
            assert b" 400 " in got.split(b"\r\n")[0], got[:200]   # an all-blank body is not JSON
            x.close()
        time.sleep(0.3)
        expect(mk.post("/v1/databases/d/search", {"queryVector": [1, 2], "topK": 1}), 200)
        assert doc
        # What a body costs to decode counts too: 1 MiB of "{}," would be ~80 MiB of JSON objects
        # (a 64 MiB body of them reached gigabytes); refused before any route decodes it.
        bomb = b'{"queryVector": [1, 2], "topK": 1, "junk": [' + b"{}," * 349000 + b"{}]}"
        expect(mk.post("/v1/databases/d/search", raw=bomb), 413, "PAYLOAD_TOO_LARGE", ["decoding", "--max-buffered"])
        expect(mk.post("/v1/databases/d/search", {"queryVector": [1, 2], "topK": 1}), 200)


# ---------------------------------------------------------------- item 9: request smuggling, library errors


@test
def smuggling_conflicting_content_length():
    with Server() as s:
        # Two Content-Length values: a proxy that reads the second and a server that reads the first
        # disagree on where the next request starts.  The old server took the first and served the
        # smuggled request behind it.
        smuggled = b"GET /v1/databases HTTP/1.1\r\nHost: x\r\n\r\n"
        req = (b"POST /v1/databases HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: %d\r\n\r\n{}"
               % (2 + len(smuggled))) + smuggled
        one_json_error(raw(s.port, req), 400, "BAD_REQUEST", "Content-Length headers that disagree")
        # The same value twice is one length: accepted (RFC 9110 8.6).
        ok = b"POST /v1/databases HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}"
        assert answers(raw(s.port, ok))[0][0] == 400   # {} lacks the fields: a route's answer, not framing
        assert "GET /v1/databases 200" not in s.log()


@test
def smuggling_content_length_with_transfer_encoding():
    with Server() as s:
        smuggled = b"DELETE /v1/databases/x HTTP/1.1\r\nHost: x\r\n\r\n"
        req = (b"POST /v1/databases HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"0\r\n\r\n" % (5 + len(smuggled))) + smuggled
        one_json_error(raw(s.port, req), 400, "BAD_REQUEST", "both Content-Length and Transfer-Encoding")
        # Codings other than a single "chunked" are not guessed at.
        for te in (b"gzip, chunked", b"chunked, identity", b"xchunked"):
            req = b"POST /v1/databases HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: " + te + b"\r\n\r\n0\r\n\r\n"
            one_json_error(raw(s.port, req), 501, "NOT_IMPLEMENTED", "only 'chunked'")
        req = (b"POST /v1/databases HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
               b"0\r\n\r\n")
        one_json_error(raw(s.port, req), 501, "NOT_IMPLEMENTED")
        req = b"POST /v1/databases HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
        one_json_error(raw(s.port, req), 400, "BAD_REQUEST", "HTTP/1.0")
        assert "DELETE" not in s.log()


@test
def library_errors_are_json():
    # Errors libmicrohttpd answers itself were HTML pages; the API promises {"error","message"}.
    with Server() as s:
        p = s.port
        one_json_error(raw(p, b"POST /v1/databases HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"zz\r\n{}\r\n0\r\n\r\n"), 400, "BAD_REQUEST", "chunked")
        one_json_error(raw(p, b"POST /v1/databases HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                              b"ffffffffffffffffffffff\r\n{}\r\n0\r\n\r\n"), 413, "PAYLOAD_TOO_LARGE", "chunk")
        one_json_error(raw(p, b"POST /v1/databases HTTP/1.1\r\nHost: x\r\nContent-Length: 12a\r\n\r\n"),
                       400, "BAD_REQUEST", "Content-Length")
        one_json_error(raw(p, b"POST /v1/databases HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
                       413, "PAYLOAD_TOO_LARGE", "Content-Length")
        one_json_error(raw(p, b"GET /" + b"a" * 40000 + b" HTTP/1.1\r\nHost: x\r\n\r\n"), 414, "URI_TOO_LONG")
        one_json_error(raw(p, b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40000 + b"\r\n\r\n"),
                       431, "HEADERS_TOO_LARGE")
        one_json_error(raw(p, b"GET /health HTTP/3.0\r\nHost: x\r\n\r\n"), 505, "HTTP_VERSION_NOT_SUPPORTED")
        one_json_error(raw(p, b"GET /health HTTP/1.1\r\nHost: x\r\nBad header line\r\n\r\n"), 400, "BAD_REQUEST")
        expect(s.client().get("/health"), 200)


# ---------------------------------------------------------------- item 13: API key, query arguments


@test
def empty_api_key_environment_is_refused():
    data = os.path.join(tempfile.mkdtemp(prefix="jvdb-e2e-"), "data")
    for val, why in (("", "is empty"), (" key", "blank"), ("key\t", "blank"), ("k\x01y", "control character")):
        env = dict(os.environ, JVDB_API_KEY=val)
        try:
            p = subprocess.run([jvdbtest.JVDB, "--data", data, "serve", "--listen", "127.0.0.1:0"],
                               capture_output=True, env=env, timeout=10)
        except subprocess.TimeoutExpired as e:
            raise AssertionError("JVDB_API_KEY=%r: the server started (%r)" % (val, e.stdout))
        assert p.returncode == 2, (val, p.returncode, p.stdout[:200], p.stderr[-500:])
        assert b"JVDB_API_KEY" in p.stderr and why.encode() in p.stderr, p.stderr
        assert b"listening" not in p.stdout
    p = subprocess.run([jvdbtest.JVDB, "--data", data, "serve", "--api-key", ""], capture_output=True, timeout=30)
    assert p.returncode == 2 and b"--api-key is empty" in p.stderr, p.stderr
    # --help still works whatever the environment holds.
    p = subprocess.run([jvdbtest.JVDB, "serve", "--help"], capture_output=True, env=dict(os.environ, JVDB_API_KEY=""),
                       timeout=30)
    assert p.returncode == 0 and b"--header-timeout" in p.stdout and b"--max-buffered" in p.stdout
    shutil.rmtree(os.path.dirname(data), ignore_errors=True)


@test
def limit_flags_are_checked():
    data = os.path.join(tempfile.mkdtemp(prefix="jvdb-e2e-"), "data")
    for bad, says in ((["--max-buffered", "1MiB"], "at least --max-body"), (["--header-timeout", "10ms"], "header-timeout"),
                      (["--idle-timeout", "0"], "idle-timeout"), (["--max-connections", "5"], "max-connections"),
                      (["--max-connections-per-ip", "x"], "max-connections-per-ip")):
        p = subprocess.run([jvdbtest.JVDB, "--data", data, "serve", "--listen", "127.0.0.1:0"] + bad,
                           capture_output=True, timeout=10)
        assert p.returncode == 2 and says.encode() in p.stderr, (bad, p.returncode, p.stderr[-300:])
    shutil.rmtree(os.path.dirname(data), ignore_errors=True)


@test
def bad_query_arguments_are_400():
    with Server() as s:
        c = s.client()
        expect(c.get("/v1/databases?limit=1"), 200)
        expect(c.get("/v1/databases?limit=1%00"), 400, "INVALID_ARGUMENT", ["'limit'", "NUL"])
        expect(c.get("/v1/databases?limit=" + "1" * 2000), 400, "INVALID_ARGUMENT",
               ["'limit'", "2000 bytes", "limit is 1024"])
        # Long but within the limit: named, with what was wrong (was silently ignored).
        expect(c.get("/v1/databases?offset=" + "9" * 100), 400, "INVALID_ARGUMENT", "'offset'")
        expect(c.get("/v1/databases?limit=%zz"), 400, "INVALID_ARGUMENT", ["'limit'", "percent-escape"])
        expect(c.get("/v1/databases?limit=1&limit=2"), 400, "INVALID_ARGUMENT", ["'limit'", "more than once"])
        expect(c.get("/v1/databases?li%00mit=1"), 400, "INVALID_ARGUMENT", "NUL")
        expect(c.delete("/v1/backups/x?cascade=%00"), 400, "INVALID_ARGUMENT", ["'cascade'", "NUL"])
        expect(c.delete("/v1/backups/x?cascade=" + "t" * 40), 400, "INVALID_ARGUMENT", "'cascade'")
        expect(c.get("/v1/databases?" + "&".join("a%d=1" % i for i in range(40))), 400, "INVALID_ARGUMENT",
               "more than 32 query arguments")


if __name__ == "__main__":
    sys.exit(jvdbtest.run_tests(sys.argv))
