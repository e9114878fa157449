#!/usr/bin/env python3
"""test_release_hooks.py RELEASE_DIR TEST_JVDB — the Release build has no test hooks.

JVDB_FAULT (fault injection) and JVDB_CRASH_AT (crash points) are compiled only into builds with
JVDB_TEST_HOOKS (src/core/io.c).  The same commands run under both variables with this test build's
jvdb, which must obey them (so the check is live), and with the Release build's jvdb and
libjvdb.so in RELEASE_DIR (`make build`, which `make test` runs first), which must ignore them and
not even contain their names.  Exit 77 (skipped) when RELEASE_DIR has not been built.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile

NAMES = (b"JVDB_CRASH_AT", b"JVDB_FAULT")


def run(jvdb, data, env, *args):
    cmd = [jvdb, "--data", data] + list(args)
    return subprocess.run(cmd, env=dict(os.environ, **env), capture_output=True, timeout=120)


def scenario(jvdb, root):
    """Runs db create under a crash point and put under a write fault; returns what happened."""
    data = tempfile.mkdtemp(dir=root)
    crash = run(jvdb, data, {"JVDB_CRASH_AT": "create.before_rename"}, "db", "create", "v", "--dim", "4")
    if crash.returncode != 0:
        # The hooked build died there; create it without the hook so the fault case has a database.
        made = run(jvdb, data, {}, "db", "create", "v", "--dim", "4")
        assert made.returncode == 0, made.stderr.decode()
    fault = run(jvdb, data, {"JVDB_FAULT": "write:EIO:0"}, "put", "v", "a", "--vector", "1,2,3,4")
    got = run(jvdb, data, {}, "get", "v", "a")
    return crash.returncode, fault, got


def main():
    release_dir, test_jvdb = sys.argv[1], sys.argv[2]
    release_jvdb = os.path.join(release_dir, "jvdb")
    release_so = os.path.join(release_dir, "libjvdb.so")
    if not (os.path.exists(release_jvdb) and os.path.exists(release_so)):
        print(f"skipped: no Release build in {release_dir} (run `make build`; `make test` does)")
        return 77
    cache = os.path.join(release_dir, "CMakeCache.txt")
    with open(cache) as f:
        assert "JVDB_TEST_HOOKS:BOOL=OFF" in f.read(), (
            f"{release_dir} is not configured with JVDB_TEST_HOOKS=OFF (rebuild it with `make build`)")
    root = tempfile.mkdtemp(prefix="jvdb-hooks-")
    try:
        # Control: the test build obeys both variables.
        crash_rc, fault, got = scenario(test_jvdb, root)
        assert crash_rc == -signal.SIGKILL, f"test build: JVDB_CRASH_AT did not kill db create (exit {crash_rc})"
        assert fault.returncode != 0, "test build: JVDB_FAULT did not fail the put"
        assert got.returncode != 0, "test build: the put that failed is readable"
        # The Release build ignores them: the database is created, the put succeeds and reads back.
        crash_rc, fault, got = scenario(release_jvdb, root)
        assert crash_rc == 0, f"Release build: db create under JVDB_CRASH_AT exited {crash_rc}"
        assert fault.returncode == 0, f"Release build: put under JVDB_FAULT failed: {fault.stderr.decode()}"
        assert got.returncode == 0 and b"1" in got.stdout, f"Release build: get failed: {got.stderr.decode()}"
        # And the hook code is compiled out, not merely unarmed: the names are not in the binaries.
        for path in (release_jvdb, release_so):
            with open(path, "rb") as f:
                blob = f.read()
            for name in NAMES:
                assert name not in blob, f"{path} contains {name.decode()}"
        with open(test_jvdb, "rb") as f:
            blob = f.read()
        assert all(n in blob for n in NAMES), "test build lacks the hook names (check is dead)"
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print("ok: the Release build ignores JVDB_CRASH_AT and JVDB_FAULT and contains neither")
    return 0


if __name__ == "__main__":
    sys.exit(main())
