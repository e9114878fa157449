#!/usr/bin/env python3
"""The file graph of src/server: which .c file calls functions defined in which other one.

Built from the object files of the jvdb executable (`nm`: the symbols each object defines against
the ones it leaves undefined), so it sees exactly what the compiler saw, macros and all.  Prints
every file's dependencies and the strongly connected components; exits 1 when a component holds
more than one file (a file cycle: A needs B and B needs A, so neither can be read, tested or
replaced alone).  The layering this keeps is described in src/server/srv.h.

usage: server_deps.py OBJECT_DIR [SOURCE_DIR]
  OBJECT_DIR  e.g. build-test/CMakeFiles/jvdb.dir/src/server
  SOURCE_DIR  src/server: objects left behind by a removed source file are ignored
"""
import os
import shutil
import subprocess
import sys


def symbols(obj):
    """(defined, undefined) global symbol names of one object file."""
    out = subprocess.run([shutil.which("nm") or "nm", "-g", obj], capture_output=True, text=True,
                         check=True).stdout
    defined, undefined = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "U":
            undefined.add(parts[1])
        elif len(parts) == 3 and parts[1] in "TDBRVWC" and parts[1] != "U":
            defined.add(parts[2])
    return defined, undefined


def graph(objdir, srcdir=None):
    """{file: set of files it depends on} over the server's objects."""
    objs = sorted(f for f in os.listdir(objdir)
                  if f.endswith(".o") and (not srcdir or os.path.exists(os.path.join(srcdir, f.split(".")[0] + ".c"))))
    if not objs:
        sys.exit("server_deps: no object files in " + objdir + " (build the jvdb target first)")
    name = {o: o.split(".")[0] + ".c" for o in objs}
    syms = {name[o]: symbols(os.path.join(objdir, o)) for o in objs}
    owner = {s: f for f, (d, _) in syms.items() for s in d}
    return {f: {owner[s] for s in u if s in owner and owner[s] != f} for f, (_, u) in syms.items()}


def sccs(g):
    """Tarjan's strongly connected components, each a sorted list."""
    index, low, stack, on, out, n = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = n[0]
        n[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(g[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def main():
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    g = graph(sys.argv[1], sys.argv[2] if len(sys.argv) == 3 else None)
    for f in sorted(g):
        print("%-18s -> %s" % (f, " ".join(sorted(g[f])) or "-"))
    cycles = [c for c in sccs(g) if len(c) > 1]
    for c in cycles:
        print("CYCLE (%d files): %s" % (len(c), " ".join(c)))
        for f in c:
            print("    %s needs %s" % (f, " ".join(sorted(g[f] & set(c)))))
    if cycles:
        print("src/server has %d file cycle(s): move the shared functions into a file below both" % len(cycles))
        return 1
    print("src/server: %d files, no file cycle" % len(g))
    return 0


if __name__ == "__main__":
    sys.exit(main())
