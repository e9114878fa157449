#!/usr/bin/env python3
"""The house style (CONTRIBUTING.md, "Style"), checked:

  format          every C file of src/, include/, tests/ and bench/ is as `clang-format` (the
                  repository's .clang-format) leaves it: `make format` fixes it
  static_comments every static function of src/ has a comment right above it saying what it does
                  (pgvector's habit); tests/style/uncommented-statics holds how many still have none,
                  a number that may only go down (lower it when you add comments)

usage: check_style.py SOURCE_DIR
"""
import os
import re
import shutil
import subprocess
import sys

def c_files(root, dirs):
    try:
        out = subprocess.run(["git", "ls-files"] + [d + "/*.[ch]" for d in dirs], cwd=root, capture_output=True,
                             text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        out = [os.path.relpath(os.path.join(dp, n), root) for d in dirs for dp, _, ns in os.walk(os.path.join(root, d))
               for n in ns if n.endswith((".c", ".h"))]
    return sorted(f for f in out if "node_modules" not in f)


def check_format(root):
    tool = shutil.which("clang-format")
    if not tool:
        return ["clang-format is not installed (run scripts/install-deps --test)"]
    bad = []
    files = c_files(root, ["src", "include", "tests", "bench"])
    for i in range(0, len(files), 50):
        r = subprocess.run([tool, "--dry-run", "--Werror", "--style=file"] + files[i:i + 50], cwd=root,
                           capture_output=True, text=True)
        if r.returncode:
            bad += sorted(set(re.findall(r"^([^:\n]+\.[ch]):\d+:\d+: error", r.stderr, re.M)))
    return ["not formatted (run `make format`): " + f for f in bad]


STATIC_DEF = re.compile(r"^static (?!inline\b)[^;=()]*?\b(\w+)\(([^;]*)$")


def uncommented_statics(path):
    """Names of static function definitions in path with no comment ending right above them."""
    with open(path, errors="replace") as f:
        lines = f.read().split("\n")
    missing = []
    for i, l in enumerate(lines):
        m = STATIC_DEF.match(l)
        if not m:
            continue
        # A definition: the line (or a following one) opens the body before any ';'.
        j, text = i, l
        while "{" not in text and ";" not in text and j + 1 < len(lines):
            j += 1
            text += lines[j]
        if ";" in text.split("{")[0] or "{" not in text:
            continue
        prev = lines[i - 1].strip() if i else ""
        if not (prev.endswith("*/") or prev.startswith("//")):
            missing.append(m.group(1))
    return missing


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    root = os.path.abspath(sys.argv[1])
    problems = check_format(root)
    total = without = 0
    for f in c_files(root, ["src"]):
        if not f.endswith(".c"):
            continue
        miss = uncommented_statics(os.path.join(root, f))
        without += len(miss)
        with open(os.path.join(root, f), errors="replace") as fh:
            total += sum(1 for l in fh if STATIC_DEF.match(l))
    print("static functions in src/: %d, with a comment above: %d (%.0f%%)" %
          (total, total - without, 100.0 * (total - without) / max(total, 1)))
    limit = int(open(os.path.join(root, "tests", "style", "uncommented-statics")).read().split()[0])
    if without > limit:
        problems.append("%d static functions have no comment above them, more than the %d of "
                        "tests/style/uncommented-statics: comment the new ones" % (without, limit))
    for p in problems:
        print("FAIL " + p)
    if not problems:
        print("ok")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
