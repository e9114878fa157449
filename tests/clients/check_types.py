#!/usr/bin/env python3
"""The Python client's type annotations are complete and consistent: mypy (Debian's python3-mypy,
installed by scripts/install-deps --test) over clients/python/jvdb with every function typed.

Usage: check_types.py
Fails when mypy reports anything, and when no mypy can be found (it never passes on nothing).
"""
import os
import subprocess
import sys

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
FLAGS = ["--disallow-untyped-defs", "--disallow-incomplete-defs", "--check-untyped-defs", "--warn-unused-ignores",
         "--no-implicit-optional", "--warn-redundant-casts", "--no-incremental"]


def main():
    # The interpreter running the tests may not be Debian's, where python3-mypy lives.
    for py in (sys.executable, "/usr/bin/python3"):
        if os.path.exists(py) and subprocess.run([py, "-c", "import mypy"], capture_output=True).returncode == 0:
            break
    else:
        print("FAIL: mypy is not installed (run scripts/install-deps --test)")
        return 1
    r = subprocess.run([py, "-m", "mypy"] + FLAGS + ["jvdb"], cwd=os.path.join(ROOT, "clients", "python"),
                       capture_output=True, text=True)
    print(r.stdout + r.stderr, end="")
    return r.returncode


if __name__ == "__main__":
    sys.exit(main())
