#!/usr/bin/env python3
"""Runs the JavaScript client's tests (clients/js/test/*.test.mjs) with node's test runner.

Usage: run_js_tests.py PATH_TO_JVDB

Needs node >= 18 and @langchain/core in clients/js/node_modules (scripts/install-deps installs both,
the package pinned by clients/js/package-lock.json).  When they are missing the test is skipped
(exit 77, CTest's SKIP_RETURN_CODE) with a message saying what to run; it is never silently passed.
"""
import glob
import os
import re
import shutil
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
JS = os.path.join(ROOT, "clients", "js")


def skip(why):
    print("SKIPPED: %s (run scripts/install-deps)" % why)
    sys.exit(77)


def main():
    if len(sys.argv) != 2:
        print("usage: %s PATH_TO_JVDB" % sys.argv[0])
        return 2
    node = shutil.which("node")
    if not node:
        skip("node is not installed")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    m = re.match(r"v(\d+)", version)
    if not m or int(m.group(1)) < 18:
        skip("node %s is older than 18 (no fetch / node --test)" % version)
    if not os.path.exists(os.path.join(JS, "node_modules", "@langchain", "core", "package.json")):
        skip("@langchain/core is not installed in clients/js/node_modules")
    tests = sorted(glob.glob(os.path.join(JS, "test", "*.test.mjs")))
    env = dict(os.environ, JVDB_BIN=os.path.abspath(sys.argv[1]))
    print("node %s: %s" % (version, " ".join(os.path.basename(t) for t in tests)), flush=True)
    return subprocess.run([node, "--test", "--test-concurrency=1"] + tests, cwd=JS, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
