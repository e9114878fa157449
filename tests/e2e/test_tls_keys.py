#!/usr/bin/env python3
"""End-to-end tests of issue 14's serving features: TLS, scoped API keys, /readyz and CORS.

Usage: test_tls_keys.py PATH_TO_JVDB [TEST...]

TLS certificates are made at test time with the `openssl` command; python's ssl module is the
client and checks the server against that certificate.  Keys are made over REST and with
`jvdb keys`; every role is tried on representative routes, allowed and refused.
"""
import hashlib
import http.client
import json
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jvdbtest  # noqa: E402
from jvdbtest import Server, expect, test  # noqa: E402


def mkdb(c, name, dim=4):
    return expect(c.post("/v1/databases", {"name": name, "vectorDimension": dim}), 201)


def put(c, db, vid, dim=4):
    return c.post("/v1/databases/%s/vectors" % db, {"id": vid, "values": [0.5] * dim})


def search(c, db, dim=4):
    return c.post("/v1/databases/%s/search" % db, {"queryVector": [0.5] * dim, "topK": 3})


def mkkey(c, role, **extra):
    body = {"role": role}
    body.update(extra)
    r = expect(c.post("/v1/api-keys", body), 201)
    assert r["api_key"].startswith("jvdb_" + r["key_id"] + "_"), r
    return r["api_key"], r["key_id"]


def jvdb(data, *args, check=None):
    p = subprocess.run([jvdbtest.JVDB, "--data", data] + list(args), capture_output=True, text=True)
    if check is not None:
        assert p.returncode == check, "jvdb %s: exit %d, expected %d\n%s%s" % (args, p.returncode, check, p.stdout,
                                                                               p.stderr)
    return p


# ---------------------------------------------------------------- TLS

def make_cert(dirpath, name, cn="localhost"):
    cert, key = os.path.join(dirpath, name + ".crt"), os.path.join(dirpath, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=" + cn,
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
                   check=True, capture_output=True)
    return cert, key


class TlsServer(Server):
    """A server on TLS: the first line says https://, clients verify against `cafile`."""

    def __init__(self, cert, key, args=(), **kw):
        super().__init__(args=["--tls-cert", cert, "--tls-key", key] + list(args), **kw)
        self._cafile, self._key = cert, key

    def tls_conn(self, cafile):
        ctx = ssl.create_default_context(cafile=cafile)
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=ctx, timeout=30)


def tls_get(conn, path, headers=None):
    conn.request("GET", path, headers=headers or {})
    r = conn.getresponse()
    return r.status, r.read()


def peer_der(port, cafile):
    ctx = ssl.create_default_context(cafile=cafile)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as t:
            return t.getpeercert(binary_form=True)


def peer_der_or_none(port, cafile):
    """peer_der, or None while the server still presents a certificate the new CA file does not verify
    (the reload after SIGHUP has not happened yet)."""
    try:
        return peer_der(port, cafile)
    except ssl.SSLCertVerificationError:
        return None


def pem_der(path):
    return ssl.PEM_cert_to_DER_cert(open(path).read())


@test
def tls_handshake_and_requests():
    s = tls_server("a")
    try:
        s.start()
        conn = s.tls_conn(s._cafile)
        st, body = tls_get(conn, "/health")
        assert st == 200 and json.loads(body)["status"] == "healthy", body
        conn.request("POST", "/v1/databases", body=json.dumps({"name": "t", "vectorDimension": 2}),
                     headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        assert r.status == 201, r.read()
        r.read()
        # Keep-alive: a second request on the same TLS connection.
        st, body = tls_get(conn, "/v1/databases/t")
        assert st == 200 and json.loads(body)["vectorDimension"] == 2, body
        assert conn.sock.version() in ("TLSv1.2", "TLSv1.3"), conn.sock.version()
        conn.close()
        # TLS 1.0 and 1.1 are refused (RFC 8996), whatever the client would accept.
        for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.load_verify_locations(s._cafile)
            try:
                ctx.set_ciphers("ALL:@SECLEVEL=0")
                ctx.minimum_version = ctx.maximum_version = old
            except (ValueError, ssl.SSLError):
                continue   # this OpenSSL cannot even offer it
            try:
                with socket.create_connection(("127.0.0.1", s.port), timeout=10) as raw:
                    with ctx.wrap_socket(raw, server_hostname="localhost") as t:
                        raise AssertionError("the server accepted %s" % t.version())
            except (ssl.SSLError, ConnectionResetError):
                pass
        # An answer the server writes itself for a bad Content-Length (http.c) must not go out as
        # plain text on a TLS connection: the connection is closed cleanly instead.
        ctx = ssl.create_default_context(cafile=s._cafile)
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as t:
                t.sendall(b"POST /v1/databases HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n")
                got = b""
                while True:
                    b = t.recv(4096)   # an SSLError here would mean plain bytes on the TLS stream
                    if not b:
                        break
                    got += b
        assert got == b"" or got.startswith(b"HTTP/1.1 400"), got[:200]
        assert tls_get(s.tls_conn(s._cafile), "/health")[0] == 200
        s.stop()
    finally:
        s.cleanup()


_tmpdirs = []


def make_cert_tmp(name):
    import tempfile
    d = tempfile.mkdtemp(prefix="jvdb-tls-")
    _tmpdirs.append(d)
    cert, key = make_cert(d, name)
    return cert, key


def tls_server(name="a", args=()):
    return TlsServer(*make_cert_tmp(name), args=args)


@test
def tls_port_refuses_plain_http():
    s = tls_server(args=["--header-timeout", "500ms"])
    try:
        s.start()
        # A client stalled before its handshake is closed by the request-head deadline.
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(b"\x16\x03\x01")   # the start of a ClientHello, then nothing
            t0 = time.time()
            try:
                assert c.recv(100) == b""
            except ConnectionResetError:
                pass
            assert time.time() - t0 < 5, "a stalled TLS handshake was not closed by --header-timeout"
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            try:
                while True:
                    b = c.recv(4096)
                    if not b:
                        break
                    got += b
            except (ConnectionResetError, socket.timeout):
                pass
        assert not got.startswith(b"HTTP/"), "plain HTTP was answered on the TLS port: %r" % got[:100]
        # An HTTP client gets no answer either.
        plain = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)
        try:
            plain.request("GET", "/health")
            r = plain.getresponse()
            raise AssertionError("plain HTTP got an answer: %d" % r.status)
        except (http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionResetError):
            pass
        # The server still serves TLS afterwards.
        assert tls_get(s.tls_conn(s._cafile), "/health")[0] == 200
        s.stop()
    finally:
        s.cleanup()


@test
def tls_certificate_reloads_on_sighup():
    s = tls_server("first")
    try:
        s.start()
        first = pem_der(s._cafile)
        assert peer_der(s.port, s._cafile) == first
        live = s.tls_conn(s._cafile)
        assert tls_get(live, "/health")[0] == 200
        # A renewed certificate (new key too) is written over the same files, then SIGHUP.
        d = os.path.dirname(s._cafile)
        ncert, nkey = make_cert(d, "second")
        os.replace(ncert, s._cafile)
        os.replace(nkey, s._key)
        second = pem_der(s._cafile)
        assert second != first
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while time.time() < deadline and peer_der_or_none(s.port, s._cafile) != second:
            time.sleep(0.1)
        assert peer_der(s.port, s._cafile) == second, "new handshakes still get the old certificate"
        # The connection made before the reload keeps working.
        assert tls_get(live, "/health")[0] == 200
        # A broken file on SIGHUP is logged and the certificate in use stays.
        with open(s._cafile, "w") as f:
            f.write("not a certificate\n")
        s.proc.send_signal(signal.SIGHUP)
        deadline = time.time() + 10
        while time.time() < deadline and "keeping the certificate loaded before" not in s.log():
            time.sleep(0.1)
        assert "keeping the certificate loaded before" in s.log(), s.log()[-2000:]
        assert peer_der(s.port, _write_pem(d, second)) == second
        s.stop()
    finally:
        s.cleanup()


def _write_pem(d, der):
    p = os.path.join(d, "expected.pem")
    with open(p, "w") as f:
        f.write(ssl.DER_cert_to_PEM_cert(der))
    return p


@test
def tls_bad_configuration_is_refused():
    cert, key = make_cert_tmp("x")
    other_cert, other_key = make_cert(os.path.dirname(cert), "other")
    for args, code, words in (
            (["--tls-cert", cert], 2, "needs both --tls-cert and --tls-key"),
            (["--tls-key", key], 2, "needs both --tls-cert and --tls-key"),
            (["--tls-cert", cert, "--tls-key", other_key], 1, "cannot use certificate"),
            (["--tls-cert", cert + ".missing", "--tls-key", key], 1, "cannot read --tls-cert"),
    ):
        s = Server(args=args)   # only for its temporary data directory
        try:
            p = subprocess.run([jvdbtest.JVDB, "--data", s.data, "serve", "--listen", "127.0.0.1:0"] + args,
                               capture_output=True, text=True, timeout=30)
            assert p.returncode == code, (args, p.returncode, p.stderr)
            assert words in p.stderr, (args, p.stderr)
        finally:
            s.cleanup()


# ---------------------------------------------------------------- keys and roles

BOOT = "bootstrap-admin-key"


@test
def roles_allow_and_refuse():
    with Server(args=["--api-key", BOOT]) as s:
        boot = s.client(BOOT)
        mkdb(boot, "a")
        mkdb(boot, "b")
        expect(put(boot, "a", "v1"), 201)
        rk, rid = mkkey(boot, "read", description="dashboards")
        wk, wid = mkkey(boot, "write")
        ak, aid = mkkey(boot, "admin")
        read, write, admin, anon = s.client(rk), s.client(wk), s.client(ak), s.client()
        # Without a key: 401 everywhere but /health and /readyz.
        expect(anon.get("/health"), 200)
        expect(anon.get("/readyz"), 200)
        for path in ("/v1/databases", "/v1/databases/a", "/status", "/metrics", "/v1/api-keys"):
            r = expect(anon.get(path), 401, "UNAUTHORIZED", "an API key is required")
            assert r.headers.get("WWW-Authenticate", "").startswith("Bearer")
        expect(s.client("jvdb_0000000000000000_" + "0" * 64).get("/v1/databases"), 401, "UNAUTHORIZED", "not valid")
        expect(s.client(rk[:-1] + ("0" if rk[-1] != "0" else "1")).get("/v1/databases"), 401, "UNAUTHORIZED")
        # read: get, search, stats, lists; nothing that writes.
        expect(read.get("/v1/databases"), 200)
        expect(read.get("/v1/databases/a"), 200)
        expect(read.get("/v1/databases/a/stats"), 200)
        expect(read.get("/v1/databases/a/vectors/v1"), 200)
        expect(search(read, "a"), 200)
        expect(read.post("/v1/databases/a/vectors/batch-get", {"ids": ["v1"]}), 200)
        expect(read.get("/metrics"), 200)
        expect(put(read, "a", "v2"), 403, "FORBIDDEN", ["has the read role", "needs the write role"])
        expect(read.delete("/v1/databases/a/vectors/v1"), 403, "FORBIDDEN")
        expect(read.post("/v1/databases", {"name": "c", "vectorDimension": 2}), 403, "FORBIDDEN", "needs the admin role")
        expect(read.get("/v1/api-keys"), 403, "FORBIDDEN")
        expect(read.post("/v1/admin/shutdown"), 403, "FORBIDDEN")
        # issue 12's data routes: counting and reading back are reads, bulk changes are writes.
        expect(read.post("/v1/databases/a/vectors/count", {}), 200)
        expect(read.post("/v1/databases/a/vectors/scroll", {"limit": 10}), 200)
        expect(read.get("/v1/databases/a/vectors?limit=10"), 200)
        expect(read.post("/v1/databases/a/vectors/delete", {"ids": ["v1"]}), 403, "FORBIDDEN", "needs the write role")
        expect(read.post("/v1/databases/a/vectors/metadata", {"filters": {"x": 1}, "metadata": {"y": 2}}), 403,
               "FORBIDDEN", "needs the write role")
        expect(read.request("PATCH", "/v1/databases/a/vectors/v1", {"metadata": {"y": 2}}), 403, "FORBIDDEN",
               "needs the write role")
        # write: read + vector writes and deletes; no database or key administration.
        expect(search(write, "a"), 200)
        expect(put(write, "a", "v2"), 201)
        expect(write.post("/v1/databases/a/vectors/batch", {"vectors": [{"id": "v3", "values": [1, 2, 3, 4]}]}), 201)
        expect(write.delete("/v1/databases/a/vectors/v2"), 200)
        expect(write.request("PATCH", "/v1/databases/a/vectors/v3", {"metadata": {"y": 2}}), 200)
        expect(write.post("/v1/databases/a/vectors/delete", {"ids": ["v3"]}), 200)
        expect(write.delete("/v1/databases/b"), 403, "FORBIDDEN", "needs the admin role")
        expect(write.post("/v1/databases/a/compact"), 403, "FORBIDDEN")
        expect(write.post("/v1/api-keys", {"role": "admin"}), 403, "FORBIDDEN")
        expect(write.post("/v1/admin/shutdown"), 403, "FORBIDDEN")
        # admin: everything.
        mkdb(admin, "c")
        expect(admin.post("/v1/databases/c/compact"), 200)
        expect(admin.delete("/v1/databases/c"), 200)
        keys = expect(admin.get("/v1/api-keys"), 200)["api_keys"]
        assert sorted(k["key_id"] for k in keys) == sorted([rid, wid, aid]), keys
        mine = [k for k in keys if k["key_id"] == rid][0]
        assert mine["role"] == "read" and mine["databases"] == [] and mine["expires_at"] is None, mine
        assert mine["description"] == "dashboards" and not mine["expired"], mine
        assert all("api_key" not in k and "sha256" not in k for k in keys), keys
        # The access log names the key id, never the key.
        log = s.log()
        assert ("key=%s" % rid) in log and ("key=%s" % wid) in log and "key=bootstrap" in log, log[-3000:]
        for k in (rk, wk, ak, BOOT):
            assert k not in log, "a key is in the log"
        assert "403" in log and "key=%s" % rid in [w for line in log.splitlines() if " 403 " in line
                                                   for w in line.split()], log[-3000:]


@test
def keys_limited_to_databases():
    with Server(args=["--api-key", BOOT]) as s:
        boot = s.client(BOOT)
        for n in ("a", "b", "c"):
            mkdb(boot, n)
        k, kid = mkkey(boot, "write", databases=["a", "c"])
        c = s.client(k)
        expect(put(c, "a", "x"), 201)
        expect(search(c, "c"), 200)
        expect(put(c, "b", "x"), 403, "FORBIDDEN", "limited to other databases than 'b'")
        expect(c.get("/v1/databases/b"), 403, "FORBIDDEN")
        expect(c.get("/v1/databases/b/stats"), 403, "FORBIDDEN")
        # The name is decoded whole before it is compared: an escaped "a" is "a", and a longer
        # name that starts with an allowed one is another database.
        expect(c.get("/v1/databases/%61"), 200)
        short = "p" * 21 + "qq"
        mkdb(boot, short + "q" * 40)
        lk, _ = mkkey(boot, "read", databases=[short])
        expect(s.client(lk).get("/v1/databases/" + "%70" * 21 + "qq" + "q" * 40), 403, "FORBIDDEN")
        expect(s.client(lk).get("/v1/databases/" + short + "q" * 40), 403, "FORBIDDEN")
        # The list shows only the key's databases; routes over every database are refused.
        r = expect(c.get("/v1/databases"), 200)
        assert [d["databaseId"] if "databaseId" in d else d.get("name") for d in r["databases"]] == ["a", "c"], r.json
        assert r["total"] == 2, r.json
        expect(c.get("/status"), 403, "FORBIDDEN", "spans every database")
        expect(c.get("/v1/nowhere"), 404, "NOT_FOUND")   # a valid key on no route: the route's answer
        expect(c.get("/metrics"), 403, "FORBIDDEN")
        # A limited admin manages its own databases, not the server.
        ak, _ = mkkey(boot, "admin", databases=["b"])
        adm = s.client(ak)
        expect(adm.post("/v1/databases/b/compact"), 200)
        expect(adm.delete("/v1/databases/a"), 403, "FORBIDDEN")
        expect(adm.post("/v1/databases", {"name": "d", "vectorDimension": 2}), 403, "FORBIDDEN")
        expect(adm.get("/v1/api-keys"), 403, "FORBIDDEN")
        # Bad specs are refused and change nothing.
        n = len(expect(boot.get("/v1/api-keys"), 200)["api_keys"])
        expect(boot.post("/v1/api-keys", {"role": "read", "databases": ["bad name"]}), 400, "INVALID_ARGUMENT",
               "database name 'bad name' is not allowed")
        expect(boot.post("/v1/api-keys", {"role": "owner"}), 400, "INVALID_ARGUMENT", "'role' is required")
        expect(boot.post("/v1/api-keys", {}), 400, "INVALID_ARGUMENT", "'role' is required")
        expect(boot.post("/v1/api-keys", {"role": "read", "expires_at": "2001-01-01"}), 400, "INVALID_ARGUMENT",
               "not in the future")
        expect(boot.post("/v1/api-keys", {"role": "read", "expires_in": "soon"}), 400, "INVALID_ARGUMENT",
               "expires_in")
        expect(boot.post("/v1/api-keys", {"role": "read", "scopes": []}), 400, "INVALID_ARGUMENT", "scopes")
        assert len(expect(boot.get("/v1/api-keys"), 200)["api_keys"]) == n


@test
def expired_and_revoked_keys():
    with Server(args=["--api-key", BOOT]) as s:
        boot = s.client(BOOT)
        mkdb(boot, "a")
        ek, eid = mkkey(boot, "read", expires_in="2s")
        rk, rid = mkkey(boot, "read")
        e, r = s.client(ek), s.client(rk)
        expect(e.get("/v1/databases/a"), 200)
        expect(r.get("/v1/databases/a"), 200)
        exp_at = [k for k in expect(boot.get("/v1/api-keys"), 200)["api_keys"] if k["key_id"] == eid][0]["expires_at"]
        assert exp_at and exp_at.endswith("Z"), exp_at
        time.sleep(3.1)
        expect(e.get("/v1/databases/a"), 401, "UNAUTHORIZED", "expired at")
        assert [k for k in expect(boot.get("/v1/api-keys"), 200)["api_keys"] if k["key_id"] == eid][0]["expired"]
        # Revoked over REST: refused from the next request on.
        expect(boot.delete("/v1/api-keys/" + rid), 200)
        expect(r.get("/v1/databases/a"), 401, "UNAUTHORIZED", "not valid")
        expect(boot.delete("/v1/api-keys/" + rid), 404, "NOT_FOUND")
        # Revoked with the CLI while the server runs: refused within about a second.
        ck = json.loads(jvdb(s.data, "keys", "create", "--role", "read", "--json", check=0).stdout)
        c = s.client(ck["apiKey"])
        deadline = time.time() + 5
        while time.time() < deadline and c.get("/v1/databases/a").status != 200:
            time.sleep(0.2)
        expect(c.get("/v1/databases/a"), 200)
        jvdb(s.data, "keys", "revoke", ck["keyId"], check=0)
        deadline = time.time() + 5
        while time.time() < deadline and c.get("/v1/databases/a").status == 200:
            time.sleep(0.2)
        expect(c.get("/v1/databases/a"), 401, "UNAUTHORIZED")


@test
def key_file_holds_no_plaintext():
    import tempfile
    root = tempfile.mkdtemp(prefix="jvdb-e2e-")
    _tmpdirs.append(root)
    with Server(root=root) as s:
        anon = s.client()
        # No key anywhere: open, and the first key is made without one.
        expect(anon.get("/v1/databases"), 200)
        k, kid = mkkey(anon, "admin")
        expect(anon.get("/v1/databases"), 401, "UNAUTHORIZED")
        expect(s.client(k).get("/v1/databases"), 200)
        assert expect(s.client(k).get("/status"), 200)["authentication"] is True
        k2, _ = mkkey(s.client(k), "read")
        path = os.path.join(s.data, "server", "api-keys")
        text = open(path).read()
        for key in (k, k2):
            assert key not in text and key.split("_")[2] not in text, "the key file holds a key"
            assert hashlib.sha256(key.encode()).hexdigest() in text
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600, oct(os.stat(path).st_mode)
        doc = json.loads(text)
        assert doc["format"] == 1 and len(doc["keys"]) == 2 and doc["keys"][0]["key_id"] == kid, doc
    # Across a restart the keys stay in force.
    s2 = Server(root=s.root)
    try:
        s2.start()
        expect(s2.client().get("/v1/databases"), 401, "UNAUTHORIZED")
        expect(s2.client(k).get("/v1/databases"), 200)
        s2.stop()
    finally:
        s2.cleanup()


@test
def damaged_key_file_keeps_the_server_closed():
    s = Server()
    try:
        os.makedirs(os.path.join(s.data, "server"))
        with open(os.path.join(s.data, "server", "api-keys"), "w") as f:
            f.write('{"format": 1, "keys": [{"key_id": "zz"}]}')
        p = subprocess.run([jvdbtest.JVDB, "--data", s.data, "serve", "--listen", "127.0.0.1:0"], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 1 and "key file" in p.stderr and "damaged" in p.stderr, p.stderr[-2000:]
        p = jvdb(s.data, "keys", "list", check=1)
        assert "damaged" in p.stderr, p.stderr
    finally:
        s.cleanup()


@test
def cli_keys_create_list_revoke():
    s = Server()
    try:
        data = s.data
        p = jvdb(data, "keys", "list", check=1)
        assert "does not exist" in p.stderr, p.stderr
        jvdb(data, "keys", "create", "--role", "read", check=1)
        assert not os.path.exists(data), "a failed command created the data directory"
        os.makedirs(data)
        p = jvdb(data, "keys", "list", check=0)
        assert "no API keys" in p.stdout
        assert not os.path.exists(os.path.join(data, "server")), "a read-only command changed the directory"
        r = json.loads(jvdb(data, "keys", "create", "--role", "write", "--database", "a", "--database=b",
                            "--expires", "30d", "--description", "ingest job", "--json", check=0).stdout)
        assert set(r) >= {"apiKey", "keyId", "role", "databases", "expiresAt", "createdAt"}, r
        # the snake_case names documented before, beside them for one release (deprecated)
        assert r["api_key"] == r["apiKey"] and r["key_id"] == r["keyId"] and r["expires_at"] == r["expiresAt"], r
        assert r["role"] == "write" and r["databases"] == ["a", "b"] and r["description"] == "ingest job", r
        plain = jvdb(data, "keys", "create", "--role", "admin", check=0)
        admin_key = plain.stdout.strip()
        assert admin_key.startswith("jvdb_") and len(admin_key) == 86, plain.stdout
        assert "shown only this once" in plain.stderr
        doc = json.loads(jvdb(data, "keys", "list", "--json", check=0).stdout)
        lst = doc["apiKeys"]
        assert doc["api_keys"] == lst, doc
        assert [k["keyId"] for k in lst] == [r["keyId"], admin_key.split("_")[1]], lst
        assert all("apiKey" not in k and "api_key" not in k for k in lst)
        text = jvdb(data, "keys", "list", check=0).stdout
        assert r["keyId"] in text and "a,b" in text and "ingest job" in text, text
        # Usage errors (exit 2) and failures (exit 1) change nothing.
        for args in (["--role", "owner"], [], ["--role", "read", "--expires", "tomorrow"],
                     ["--role", "read", "--database", "bad name"], ["--role", "read", "--expires", "2001-01-01"],
                     ["--role", "read", "--database"]):
            jvdb(data, "keys", "create", *args, check=2)
        jvdb(data, "keys", "revoke", "0123456789abcdef", check=1)
        assert len(json.loads(jvdb(data, "keys", "list", "--json", check=0).stdout)["apiKeys"]) == 2
        # The server reads the same file.
        s.start()
        w = s.client(r["apiKey"])
        expect(s.client().get("/v1/databases"), 401, "UNAUTHORIZED")
        mkdb(s.client(admin_key), "a")
        expect(put(w, "a", "x"), 201)
        jvdb(data, "keys", "revoke", r["keyId"], check=0)
        s.proc.send_signal(signal.SIGHUP)   # applies at once (no waiting for the file check)
        deadline = time.time() + 5
        while time.time() < deadline and put(w, "a", "y").status != 401:
            time.sleep(0.1)
        expect(put(w, "a", "z"), 401, "UNAUTHORIZED")
        s.stop()
        lst = json.loads(jvdb(data, "keys", "list", "--json", check=0).stdout)["apiKeys"]
        assert [k["keyId"] for k in lst] == [admin_key.split("_")[1]], lst
    finally:
        s.cleanup()


# ---------------------------------------------------------------- readiness

@test
def readyz_waits_for_databases_and_indexes():
    n, dim = 6000, 32
    s = Server()
    try:
        s.start()
        c = s.client()
        mkdb(c, "big", dim)
        mkdb(c, "small", 2)
        import random
        rnd = random.Random(7)
        for start in range(0, n, 1000):
            vs = [{"id": "v%d" % i, "values": [rnd.random() for _ in range(dim)]} for i in range(start, start + 1000)]
            expect(c.post("/v1/databases/big/vectors/batch", {"vectors": vs}), 201)
        s.stop()
        # A fresh start: the graph of 'big' is rebuilt from scratch before the server is ready.
        s.start()
        anon = s.client()
        seen_503 = []
        deadline = time.time() + 240
        while time.time() < deadline:
            r = anon.get("/readyz")
            if r.status == 200:
                break
            expect(r, 503, "NOT_READY")
            assert r.headers.get("Retry-After") == "1", r.headers
            seen_503.append(r["message"])
            time.sleep(0.05)
        assert r.status == 200 and r["status"] == "ready" and r["databases"] == 2, r
        assert seen_503, "never saw 503 while the index of 'big' was being built"
        assert any("'big'" in m for m in seen_503), seen_503
        assert any("pending" in m or "opening" in m for m in seen_503), seen_503
        st = expect(anon.get("/health"), 200)
        assert st["status"] == "healthy"
        assert "ready: 2 databases opened and indexed" in s.log()
        s.stop()
    finally:
        s.cleanup()


# ---------------------------------------------------------------- CORS

@test
def cors_preflight_and_headers():
    origin = "https://app.example.com"
    with Server(args=["--cors-origin", origin, "--cors-origin", "http://localhost:3000", "--api-key", BOOT]) as s:
        anon = s.client()
        # A preflight carries no key and is answered before the key check.
        r = anon.request("OPTIONS", "/v1/databases/a/search",
                         headers={"Origin": origin, "Access-Control-Request-Method": "POST",
                                  "Access-Control-Request-Headers": "content-type, x-api-key"})
        assert r.status == 204, r
        assert r.headers.get("Access-Control-Allow-Origin") == origin, r.headers
        assert "POST" in r.headers.get("Access-Control-Allow-Methods", ""), r.headers
        allow_h = r.headers.get("Access-Control-Allow-Headers", "").lower()
        assert "x-api-key" in allow_h and "authorization" in allow_h and "content-type" in allow_h, r.headers
        assert r.headers.get("Vary") == "Origin", r.headers
        # From an origin not listed: refused, no CORS header.
        r = anon.request("OPTIONS", "/v1/databases", headers={"Origin": "https://evil.example",
                                                              "Access-Control-Request-Method": "GET"})
        expect(r, 403, "FORBIDDEN", "not allowed")
        assert "Access-Control-Allow-Origin" not in r.headers
        # Actual requests from an allowed origin carry the header, errors included.
        boot = s.client(BOOT)
        r = expect(boot.get("/v1/databases", headers={"Origin": "http://localhost:3000"}), 200)
        assert r.headers.get("Access-Control-Allow-Origin") == "http://localhost:3000", r.headers
        r = expect(anon.get("/v1/databases", headers={"Origin": origin}), 401, "UNAUTHORIZED")
        assert r.headers.get("Access-Control-Allow-Origin") == origin, r.headers
        r = expect(boot.get("/v1/databases", headers={"Origin": "https://evil.example"}), 200)
        assert "Access-Control-Allow-Origin" not in r.headers
        r = expect(boot.get("/v1/databases"), 200)
        assert "Access-Control-Allow-Origin" not in r.headers
    # Any origin.
    with Server(args=["--cors-origin", "*"]) as s:
        r = s.client().request("OPTIONS", "/v1/databases", headers={"Origin": "https://x.example",
                                                                    "Access-Control-Request-Method": "POST"})
        assert r.status == 204 and r.headers.get("Access-Control-Allow-Origin") == "*", r
    # Without --cors-origin OPTIONS is just a method no route has.
    with Server() as s:
        r = s.client().request("OPTIONS", "/v1/databases", headers={"Origin": origin,
                                                                    "Access-Control-Request-Method": "POST"})
        expect(r, 405, "METHOD_NOT_ALLOWED")
        assert "Access-Control-Allow-Origin" not in r.headers
    for bad in ("app.example.com", "https://app.example.com/", "ftp://x", ""):
        p = subprocess.run([jvdbtest.JVDB, "--data", "/nonexistent/jvdb", "serve", "--cors-origin", bad],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == 2 and "--cors-origin" in p.stderr, (bad, p.stderr)


# ---------------------------------------------------------------- observability

@test
def metrics_process_index_inflight_unmatched():
    with Server() as s:
        c = s.client()
        mkdb(c, "m", 4)
        expect(put(c, "m", "a"), 201)
        expect(search(c, "m"), 200)
        expect(c.put("/nowhere"), 404)
        expect(c.request("PATCH", "/v1/databases"), 405)
        deadline = time.time() + 30
        while time.time() < deadline:
            text = c.get("/metrics").raw.decode()
            if 'jvdb_index_info{database="m",type="hnsw",state="ready"} 1' in text:
                break
            time.sleep(0.1)
        lines = text.splitlines()
        for want in ('jvdb_http_requests_total{route="unmatched",method="PUT",status="404"} 1',
                     'jvdb_http_requests_total{route="unmatched",method="PATCH",status="405"} 1',
                     'jvdb_http_requests_in_flight 1',          # the scrape itself
                     'jvdb_index_pending_vectors{database="m"} 0',
                     'jvdb_index_nodes{database="m"} 1',
                     'jvdb_index_info{database="m",type="hnsw",state="ready"} 1'):
            assert want in lines, "%s not in metrics:\n%s" % (want, text)
        val = {l.split()[0]: float(l.split()[1]) for l in lines if l.startswith("process_")}
        assert val["process_resident_memory_bytes"] > 1e6, val
        assert val["process_virtual_memory_bytes"] >= val["process_resident_memory_bytes"], val
        assert 3 < val["process_open_fds"] <= val["process_max_fds"], val
        assert val["process_cpu_seconds_total"] > 0, val
        assert abs(val["process_start_time_seconds"] - time.time()) < 120, val
        assert any(l.startswith('jvdb_index_memory_bytes{database="m"} ') for l in lines)
        expect(put(c, "m", "b"), 201)
        expect(c.delete("/v1/databases/m/vectors/a"), 200)
        assert expect(c.post("/v1/databases/m/compact", {"force": True}), 200)["compacted"] is True
        lines = c.get("/metrics").raw.decode().splitlines()
        assert 'jvdb_database_compactions_total{database="m"} 1' in lines, [l for l in lines if "compaction" in l]
        assert any(l.startswith('jvdb_database_compaction_seconds_total{database="m"} ') for l in lines)


@test
def json_log_with_request_ids():
    with Server(args=["--log-format", "json", "--api-key", BOOT]) as s:
        c = s.client(BOOT)
        r = expect(c.get("/v1/databases", headers={"X-Request-Id": "abc-123.x"}), 200)
        assert r.headers.get("X-Request-Id") == "abc-123.x", r.headers
        r1 = expect(c.get("/v1/databases"), 200)
        r2 = expect(c.get("/v1/databases/q%22%0ax"), 400)
        # Raw bytes a client may put in a path (a quote, a byte beyond ASCII) still give valid JSON.
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as raw:
            raw.sendall(b'GET /v1/x\xe9"y HTTP/1.1\r\nHost: x\r\nX-API-Key: ' + BOOT.encode() + b"\r\n\r\n")
            raw.recv(4096)
        a, b = r1.headers.get("X-Request-Id"), r2.headers.get("X-Request-Id")
        assert a and b and a != b and len(a) == 16, (a, b)
        # A header that is not a short token is replaced, not echoed.
        r3 = expect(c.get("/health", headers={"X-Request-Id": "x" * 65}), 200)
        assert r3.headers.get("X-Request-Id") != "x" * 65
        time.sleep(0.2)
        recs = [json.loads(line) for line in s.log().splitlines() if line.strip()]   # every line is JSON
        reqs = [x for x in recs if "request_id" in x]
        mine = [x for x in reqs if x["request_id"] == "abc-123.x"]
        assert len(mine) == 1 and mine[0]["status"] == 200 and mine[0]["path"] == "/v1/databases", mine
        assert mine[0]["key"] == "bootstrap" and mine[0]["method"] == "GET" and mine[0]["level"] == "info", mine
        assert isinstance(mine[0]["duration_us"], int) and mine[0]["ts"].endswith("Z"), mine
        assert any(x["request_id"] == b and x["status"] == 400 for x in reqs), reqs
        assert any(x["path"] == "/v1/x\u00e9\"y" for x in reqs), [x["path"] for x in reqs]
        assert any("serving" in x["msg"] for x in recs), recs[:5]
    p = subprocess.run([jvdbtest.JVDB, "--data", "/nonexistent/jvdb", "serve", "--log-format", "xml"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2 and "--log-format" in p.stderr, p.stderr


if __name__ == "__main__":
    rc = jvdbtest.run_tests(sys.argv)
    import shutil
    for d in _tmpdirs:
        shutil.rmtree(d, ignore_errors=True)
    sys.exit(rc)
