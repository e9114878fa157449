"""Packaging (issue 14): what `make install` and `make deb` put on a machine, checked in scratch roots.

  install_layout        `cmake --install` with DESTDIR: the unit (paths for the prefix, hardening,
                        own user), sysusers entry, sample config, docs, dashboard
  config_never_replaced an operator's /etc/jvdb/jvdb.json survives a reinstall
  unit_verifies         `systemd-analyze verify` accepts the unit (where systemd-analyze exists)
  deb_installs_and_runs packaging/build-deb: control fields, conffiles, maintainer scripts; the package
                        unpacked into a scratch root serves with its own sample config
  dashboard_metrics     every metric the Grafana dashboard queries is one the server exports

usage: test_packaging.py PATH_TO_JVDB BUILD_DIR SOURCE_DIR
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
import jvdbtest  # noqa: E402
from jvdbtest import Client, Server, expect, test  # noqa: E402

BUILD = SOURCE = None


def install(root, prefix):
    env = dict(os.environ, DESTDIR=root)
    r = subprocess.run(["cmake", "--install", BUILD, "--prefix", prefix], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def read(path):
    with open(path) as f:
        return f.read()


def unit_lines(text):
    return {l.split("=", 1)[0]: l.split("=", 1)[1] for l in text.splitlines() if "=" in l and not l.startswith("#")}


@test
def install_layout():
    root = tempfile.mkdtemp(prefix="jvdb-install-")
    try:
        install(root, "/usr/local")
        p = root + "/usr/local"
        for f in ("bin/jvdb", "include/jvdb.h", "lib/systemd/system/jvdb.service", "lib/sysusers.d/jvdb.conf",
                  "etc/jvdb/jvdb.json", "share/doc/jvdb/DEPLOY.md", "share/doc/jvdb/grafana-dashboard.json"):
            assert os.path.exists(os.path.join(p, f)), f + " not installed"
        assert any(n.startswith("libjvdb.so") for n in os.listdir(p + "/lib")), os.listdir(p + "/lib")
        unit = read(p + "/lib/systemd/system/jvdb.service")
        u = unit_lines(unit)
        assert not re.search(r"@[A-Z_]+@", unit), "unfilled placeholder in the unit:\n" + unit
        assert u["ExecStart"] == "/usr/local/bin/jvdb --data /var/lib/jvdb serve --config /usr/local/etc/jvdb/jvdb.json", u
        assert u["User"] == "jvdb" and u["StateDirectory"] == "jvdb", u
        for k, v in (("ProtectSystem", "strict"), ("NoNewPrivileges", "yes"), ("ProtectHome", "yes"),
                     ("PrivateTmp", "yes"), ("ReadWritePaths", "/var/lib/jvdb")):
            assert u.get(k) == v, (k, u.get(k))
        assert "u jvdb " in read(p + "/lib/sysusers.d/jvdb.conf")
        # The sample config is one the server accepts (an unknown key would stop it).
        json.loads(read(p + "/etc/jvdb/jvdb.json"))
        s = Server(args=["--config", p + "/etc/jvdb/jvdb.json"]).start()
        try:
            expect(Client(s.port).get("/health"), 200)
        finally:
            s.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@test
def config_never_replaced():
    root = tempfile.mkdtemp(prefix="jvdb-install-")
    try:
        install(root, "/usr")
        conf = root + "/etc/jvdb/jvdb.json"          # prefix /usr: configuration in /etc
        assert os.path.exists(conf)
        assert "--config /etc/jvdb/jvdb.json" in read(root + "/usr/lib/systemd/system/jvdb.service")
        with open(conf, "w") as f:
            f.write('{"listen": "0.0.0.0:9999"}\n')
        out = install(root, "/usr")
        assert read(conf) == '{"listen": "0.0.0.0:9999"}\n', "an existing config was overwritten"
        assert "Keeping" in out, out
    finally:
        shutil.rmtree(root, ignore_errors=True)


@test
def unit_verifies():
    tool = shutil.which("systemd-analyze")
    if not tool:
        print("     (systemd-analyze is not installed here: the unit's syntax is checked by install_layout only)")
        return
    root = tempfile.mkdtemp(prefix="jvdb-install-")
    try:
        install(root, "/usr")
        unit = root + "/usr/lib/systemd/system/jvdb.service"
        # The unit names /usr/bin/jvdb, which this machine may not have: verify a copy pointing into the root.
        text = read(unit).replace("/usr/bin/jvdb", root + "/usr/bin/jvdb")
        with open(root + "/jvdb.service", "w") as f:
            f.write(text)
        r = subprocess.run([tool, "verify", root + "/jvdb.service"], capture_output=True, text=True)
        bad = [l for l in (r.stdout + r.stderr).splitlines()
               if "jvdb.service" in l and "User" not in l and "Failed to" not in l and "Documentation" not in l]
        assert not bad, r.stdout + r.stderr
    finally:
        shutil.rmtree(root, ignore_errors=True)


@test
def deb_installs_and_runs():
    out = tempfile.mkdtemp(prefix="jvdb-deb-")
    try:
        env = dict(os.environ, JVDB_DEB_COMPRESS="gzip")
        r = subprocess.run([os.path.join(SOURCE, "packaging", "build-deb"), BUILD, out], env=env,
                           capture_output=True, text=True)
        assert r.returncode == 0, r.stdout + r.stderr
        deb = r.stdout.strip().splitlines()[-1]
        assert os.path.basename(deb).startswith("jvdb_") and deb.endswith(".deb"), deb
        info = subprocess.run(["dpkg-deb", "-f", deb], capture_output=True, text=True, check=True).stdout
        fields = dict(l.split(": ", 1) for l in info.splitlines() if ": " in l and not l.startswith(" "))
        version = subprocess.run([jvdbtest.JVDB, "--version"], capture_output=True, text=True).stdout.split()[1]
        assert fields["Package"] == "jvdb" and fields["Version"] == version, fields
        for dep in ("libmicrohttpd", "libjansson", "libzstd", "libc6", "adduser"):
            assert dep in fields["Depends"], (dep, fields["Depends"])
        listing = subprocess.run(["dpkg-deb", "-c", deb], capture_output=True, text=True, check=True).stdout
        for f in ("./usr/bin/jvdb", "./usr/lib/systemd/system/jvdb.service", "./etc/jvdb/jvdb.json",
                  "./usr/lib/sysusers.d/jvdb.conf", "./usr/include/jvdb.h"):
            assert f in listing, f + " missing from the package"
        assert "root/root" in listing, "files must be owned by root in the package"
        ctrl = os.path.join(out, "control")
        subprocess.run(["dpkg-deb", "-e", deb, ctrl], check=True)
        assert read(ctrl + "/conffiles").split() == ["/etc/jvdb/jvdb.json"]
        for script in ("postinst", "prerm", "postrm"):
            p = os.path.join(ctrl, script)
            assert os.access(p, os.X_OK), script
            subprocess.run(["sh", "-n", p], check=True)
        assert "/var/lib/jvdb" in read(ctrl + "/postinst") and "rm -rf" not in read(ctrl + "/postrm")

        # Unpacked into a scratch root, the package's own program serves with its own sample config.
        root = os.path.join(out, "root")
        subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
        prog = root + "/usr/bin/jvdb"
        r = subprocess.run([prog, "--version"], capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.split()[1] == version, r.stdout + r.stderr
        saved, jvdbtest.JVDB = jvdbtest.JVDB, prog
        try:
            s = Server(data=root + "/var/lib/jvdb", args=["--config", root + "/etc/jvdb/jvdb.json"]).start()
            try:
                c = Client(s.port)
                expect(c.get("/health"), 200)
                expect(c.post("/v1/databases", {"name": "pkg", "vectorDimension": 2}), 201)
                expect(c.post("/v1/databases/pkg/vectors", {"id": "a", "values": [1, 2]}), 201)
                hits = expect(c.post("/v1/databases/pkg/search", {"queryVector": [1, 2], "topK": 1}), 200).json
                assert hits["results"][0]["vectorId"] == "a", hits
            finally:
                s.stop()
        finally:
            jvdbtest.JVDB = saved
    finally:
        shutil.rmtree(out, ignore_errors=True)


def metric_names(exposition):
    return set(re.findall(r"^# TYPE (\S+) ", exposition, re.M))


@test
def dashboard_metrics():
    dash = json.loads(read(os.path.join(SOURCE, "packaging", "grafana-dashboard.json")))
    exprs = []

    def walk(panels):
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []))
            walk(p.get("panels", []))
    walk(dash["panels"])
    for v in dash["templating"]["list"]:
        if isinstance(v.get("query"), dict):
            exprs.append(v["query"]["query"])
    assert len(exprs) > 20, exprs
    used = set()
    for e in exprs:
        used |= set(re.findall(r"\b((?:jvdb|process)_[a-z_]+)", e))
    root = tempfile.mkdtemp(prefix="jvdb-dash-")
    try:
        s = Server(root=root, args=["--backup-repo", os.path.join(root, "repo")]).start()
        try:
            c = Client(s.port)
            expect(c.post("/v1/databases", {"name": "d", "vectorDimension": 2}), 201)
            expect(c.post("/v1/databases/d/vectors", {"id": "a", "values": [1, 2]}), 201)
            expect(c.post("/v1/databases/d/compact", {"force": True}), 200)
            expect(c.post("/v1/databases/d/backups", {"type": "full"}), 201)
            exported = metric_names(c.get("/metrics").raw.decode())
        finally:
            s.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    missing = sorted(n for n in used if n not in exported and re.sub(r"_(bucket|sum|count)$", "", n) not in exported)
    assert not missing, "the dashboard queries metrics the server does not export: %s" % missing


if __name__ == "__main__":
    if len(sys.argv) < 4:
        print(__doc__)
        sys.exit(2)
    BUILD = os.path.abspath(sys.argv[2])
    SOURCE = os.path.abspath(sys.argv[3])
    sys.exit(jvdbtest.run_tests(sys.argv[:2]))
