"""Shared pieces of the client tests: a runner with skips, and the README's ```python blocks.

Tests raise Skip(reason) when the server lacks a route the client method needs (issue 12's count,
scroll and delete routes): they are reported as skipped with that reason, not failed, and pass once
the server has the route.
"""
import os
import re
import sys
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))


class Skip(Exception):
    pass


def run(tests, wanted=()):
    passed = failed = skipped = 0
    for fn in tests:
        if wanted and fn.__name__ not in wanted:
            continue
        t0 = time.time()
        try:
            fn()
            passed += 1
            print("ok   %-40s %.2fs" % (fn.__name__, time.time() - t0), flush=True)
        except Skip as e:
            skipped += 1
            print("skip %-40s %s" % (fn.__name__, e), flush=True)
        except Exception:
            failed += 1
            print("FAIL %-40s %.2fs" % (fn.__name__, time.time() - t0), flush=True)
            traceback.print_exc()
            sys.stdout.flush()
    print("%d passed, %d failed, %d skipped" % (passed, failed, skipped))
    return 1 if failed else 0


def readme_blocks(path, embedded):
    """The ```python blocks of a README, in order: those under '## Embedded mode' when embedded is true,
    the others otherwise."""
    out = []
    section = ""
    lines = open(path, encoding="utf-8").read().splitlines()
    i = 0
    while i < len(lines):
        if lines[i].startswith("## "):
            section = lines[i][3:].strip()
        if lines[i].strip() == "```python":
            j = i + 1
            while lines[j].strip() != "```":
                j += 1
            if (section == "Embedded mode") == embedded:
                out.append((i + 1, "\n".join(lines[i + 1:j])))
            i = j
        i += 1
    assert out, "no python examples in %s" % path
    return out


def run_readme(path, embedded, env):
    """Runs the blocks in one namespace, with `env` in os.environ (as a reader's shell would have)."""
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    ns = {"__name__": "__readme__"}
    try:
        for line, code in readme_blocks(path, embedded):
            try:
                exec(compile(code, "%s:%d" % (path, line), "exec"), ns)
            except Exception as e:
                raise AssertionError("README example at line %d failed: %r" % (line, e)) from e
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
