#!/usr/bin/env python3
"""check_exports.py LIBJVDB_SO JVDB_H — libjvdb.so exports exactly its public API.

Every dynamic symbol the library defines must be a jvdb_* function declared in include/jvdb.h
(hidden visibility keeps internal names such as log_msg or archive_read from colliding inside an
application), and every function the header declares must be exported (a new one that lacks
JVDB_API would be unreachable from a program that loads the library).
"""
import re
import subprocess
import sys


def main():
    so, header = sys.argv[1], sys.argv[2]
    out = subprocess.run(["nm", "-D", "--defined-only", so], check=True, capture_output=True, text=True).stdout
    exported = set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 2:
            exported.add(parts[-1].split("@")[0])
    with open(header) as f:
        text = f.read()
    declared = set(re.findall(r"^JVDB_API [^;(]*?\b(jvdb_\w+)\(", text, re.M))
    unmarked = set(re.findall(r"^(?:const )?\w+ \*?(jvdb_\w+)\(", text, re.M))
    problems = []
    if unmarked:
        problems.append("declared in jvdb.h without JVDB_API: " + ", ".join(sorted(unmarked)))
    internal = sorted(exported - declared)
    if internal:
        problems.append("%d exported symbols are not the public API: %s" % (len(internal), ", ".join(internal[:40])))
    missing = sorted(declared - exported)
    if missing:
        problems.append("declared JVDB_API but not exported: " + ", ".join(missing))
    if len(declared) < 50:
        problems.append("only %d JVDB_API functions found in %s: the header parse is broken" % (len(declared), header))
    if problems:
        print("FAIL " + so)
        for p in problems:
            print("  " + p)
        return 1
    print("ok: %s exports exactly the %d functions of jvdb.h" % (so, len(exported)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
