"""Shared pieces of the end-to-end tests of `jvdb serve` (python3 standard library only).

Server starts the real binary on a temporary data directory with --listen 127.0.0.1:0 and reads the
port from its first line of stdout ("listening on http://127.0.0.1:PORT"), so tests never race for
a port.  Its log (stderr) goes to a file that the tests read (one line per request) and that is
checked for sanitizer reports when the server stops.  Client is one keep-alive HTTP/1.1 connection
returning (status, headers, body) with JSON bodies decoded.
"""
import http.client
import json
import os
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback

SANITIZER_MARKERS = ("AddressSanitizer", "LeakSanitizer", "runtime error:", "UndefinedBehaviorSanitizer",
                     "ThreadSanitizer")

JVDB = None
TESTS = []


def test(fn):
    TESTS.append(fn)
    return fn


def f32(x):
    """The float32 nearest to x, as a Python float (what the server stores)."""
    return struct.unpack("<f", struct.pack("<f", x))[0]


def f32_bits(values):
    return [struct.pack("<f", v) for v in values]


class Server:
    def __init__(self, root=None, args=(), env=None, data=None):
        self.own_root = root is None
        self.root = root or tempfile.mkdtemp(prefix="jvdb-e2e-")
        self.data = data or os.path.join(self.root, "data")
        self.args = list(args)
        self.env = dict(os.environ if env is None else env)
        self.env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0")
        self.proc = None
        self.port = None
        self.log_path = os.path.join(self.root, "server-%d.log" % id(self))
        self.starts = 0

    def start(self, timeout=30):
        self.starts += 1
        self.log_path = os.path.join(self.root, "server.log.%d" % self.starts)
        self.logf = open(self.log_path, "wb")
        cmd = [JVDB, "--data", self.data, "serve", "--listen", "127.0.0.1:0"] + self.args
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=self.logf, env=self.env)
        line = b""
        deadline = time.time() + timeout
        while not line.endswith(b"\n"):
            r, _, _ = select.select([self.proc.stdout], [], [], max(0.0, deadline - time.time()))
            if not r:
                self.proc.kill()
                raise AssertionError("server did not start in %ss; log:\n%s" % (timeout, self.log()))
            ch = os.read(self.proc.stdout.fileno(), 1)   # unbuffered: select() must see what is left
            if not ch:
                self.proc.wait()
                raise AssertionError("server exited with %s before listening; log:\n%s" % (self.proc.returncode, self.log()))
            line += ch
        text = line.decode()
        assert text.startswith(("listening on http://127.0.0.1:", "listening on https://127.0.0.1:")), text
        self.port = int(text.rsplit(":", 1)[1])
        return self

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def client(self, key=None):
        return Client(self.port, key)

    def stop(self, sig=signal.SIGTERM, timeout=60, expect=0):
        if not self.proc:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("server did not stop within %ss after %s; log:\n%s" % (timeout, sig, self.log()[-4000:]))
        self.proc.stdout.close()
        self.logf.close()
        self.proc = None
        self.check_log()
        if expect is not None:
            assert rc == expect, "server exit status %s, expected %s; log:\n%s" % (rc, expect, self.log()[-4000:])
        return rc

    def wait_exit(self, timeout=60):
        """Waits for a server that was asked to stop over HTTP."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("server did not exit; log:\n" + self.log()[-4000:])
        self.proc.stdout.close()
        self.logf.close()
        self.proc = None
        self.check_log()
        return rc

    def check_log(self):
        text = self.log()
        for m in SANITIZER_MARKERS:
            assert m not in text, "sanitizer report in the server log:\n" + text[-8000:]

    def cleanup(self):
        if self.proc:
            try:
                self.stop(sig=signal.SIGKILL, expect=None)
            except AssertionError:
                pass
        if self.own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        if exc[0] is None:
            self.stop()
        self.cleanup()
        return False


class Response:
    def __init__(self, status, headers, raw):
        self.status = status
        self.headers = headers
        self.raw = raw
        ctype = headers.get("Content-Type", "")
        self.json = None
        if ctype.startswith("application/json") and raw:
            self.json = json.loads(raw)

    def __repr__(self):
        return "<%d %s>" % (self.status, self.raw[:300])

    def __getitem__(self, k):
        return self.json[k]


class Client:
    def __init__(self, port, key=None, timeout=120):
        self.port = port
        self.key = key
        self.timeout = timeout
        self.conn = None

    def close(self):
        if self.conn:
            self.conn.close()
            self.conn = None

    def request(self, method, path, body=None, headers=None, raw=None, retry=True):
        h = {}
        if self.key:
            h["X-API-Key"] = self.key
        if headers:
            h.update(headers)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        if data is not None:
            h.setdefault("Content-Type", "application/json")
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                self.conn.request(method, path, body=data, headers=h)
                r = self.conn.getresponse()
                payload = r.read()
                resp = Response(r.status, {k: v for k, v in r.getheaders()}, payload)
                if r.getheader("Connection", "").lower() == "close":
                    self.close()
                return resp
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                # A keep-alive connection the server closed while idle: once more on a new one.
                self.close()
                if attempt or not retry:
                    raise

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


def expect(resp, status, code=None, contains=()):
    """Checks a response's status (and, for errors, the code and message words)."""
    assert resp.status == status, "expected %d, got %r" % (status, resp)
    if code is not None:
        assert resp.json and resp.json.get("error") == code, "expected error %s, got %r" % (code, resp)
        assert isinstance(resp.json.get("message"), str) and resp.json["message"], resp
    for c in ([contains] if isinstance(contains, str) else contains):
        assert c in resp.json.get("message", ""), "%r not in message %r" % (c, resp.json.get("message"))
    return resp


def run_tests(argv, tests=None):
    """Runs every registered test (or those named on the command line after the binary)."""
    global JVDB
    if len(argv) < 2:
        print("usage: %s PATH_TO_JVDB [TEST...]" % argv[0])
        return 2
    JVDB = os.path.abspath(argv[1])
    wanted = set(argv[2:])
    passed = failed = 0
    for fn in tests or TESTS:
        if wanted and fn.__name__ not in wanted:
            continue
        t0 = time.time()
        try:
            fn()
            passed += 1
            print("ok   %-40s %.2fs" % (fn.__name__, time.time() - t0), flush=True)
        except Exception:
            failed += 1
            print("FAIL %-40s %.2fs" % (fn.__name__, time.time() - t0), flush=True)
            traceback.print_exc()
            sys.stdout.flush()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0
