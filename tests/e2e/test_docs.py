#!/usr/bin/env python3
"""Runs the curl examples of docs/API.md against a real `jvdb serve` (python3 standard library only).

Usage: test_docs.py PATH_TO_JVDB [PATH_TO_API_MD]

Every ```sh block of API.md is read in order: each `curl` command is run with bash (with $JVDB set to
the server's address) and its HTTP status compared with the `# NNN` line under it; a ```json block
right after shows the answer, and its top-level keys (and "error" code) must be in the real answer.
Examples from the "Authentication" section on run against a second server started with --api-key.
$BACKUP_ID and $FULL_ID (and $NEW_KEY, $KEY_ID, $JOB_ID) are set from the answers, as the text explains.  The test also checks that
the examples and docs/openapi.yaml cover every route the server has.  The last line printed is
"N passed, N failed".
"""
import json
import os
import re
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import jvdbtest  # noqa: E402
from jvdbtest import Server  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
API_MD = os.path.join(HERE, "..", "..", "docs", "API.md")
OPENAPI = os.path.join(HERE, "..", "..", "docs", "openapi.yaml")

ROUTES = {
    ("GET", "/health"), ("GET", "/status"), ("GET", "/metrics"), ("POST", "/v1/admin/shutdown"),
    ("GET", "/v1/compaction"), ("POST", "/v1/databases"), ("GET", "/v1/databases"),
    ("GET", "/v1/databases/{id}"), ("PUT", "/v1/databases/{id}"), ("DELETE", "/v1/databases/{id}"),
    ("GET", "/v1/databases/{id}/stats"), ("POST", "/v1/databases/{id}/compact"),
    ("POST", "/v1/databases/{id}/search"), ("POST", "/v1/databases/{id}/vectors"),
    ("POST", "/v1/databases/{id}/vectors/batch"), ("POST", "/v1/databases/{id}/vectors/batch-get"),
    ("GET", "/v1/databases/{id}/vectors/{vid}"), ("PUT", "/v1/databases/{id}/vectors/{vid}"),
    ("DELETE", "/v1/databases/{id}/vectors/{vid}"), ("POST", "/v1/databases/{id}/backups"),
    ("GET", "/v1/databases/{id}/backups"), ("GET", "/v1/backups/{bid}"), ("DELETE", "/v1/backups/{bid}"),
    ("GET", "/v1/backups"), ("GET", "/v1/backups/schedule"),
    ("POST", "/v1/backups/{bid}/verify"), ("POST", "/v1/backups/{bid}/restore"),
    ("POST", "/v1/databases/{id}/vectors/delete"), ("POST", "/v1/databases/{id}/vectors/count"),
    ("POST", "/v1/databases/{id}/vectors/metadata"), ("PATCH", "/v1/databases/{id}/vectors/{vid}"),
    ("POST", "/v1/databases/{id}/vectors/scroll"), ("GET", "/v1/databases/{id}/vectors"),
    ("GET", "/readyz"), ("POST", "/v1/api-keys"), ("GET", "/v1/api-keys"), ("DELETE", "/v1/api-keys/{key_id}"),
    ("POST", "/v1/databases/{id}/index/rebuild"), ("GET", "/v1/jobs"), ("GET", "/v1/jobs/{jobId}"),
    ("DELETE", "/v1/jobs/{jobId}"),
    ("POST", "/v1/admin/promote"),  # issue 13: read replicas
}
# issue 12: the original's routes and batch search
ROUTES |= {
    ("POST", "/v1/databases/{id}/search/advanced"), ("POST", "/v1/databases/{id}/search/batch"),
    ("GET", "/v1/databases/{id}/indexes"), ("POST", "/v1/databases/{id}/indexes"),
    ("GET", "/v1/databases/{id}/indexes/{iid}"), ("PUT", "/v1/databases/{id}/indexes/{iid}"),
    ("DELETE", "/v1/databases/{id}/indexes/{iid}"),
    ("GET", "/v1/databases/{id}/payload-indexes"), ("PUT", "/v1/databases/{id}/payload-indexes/{field}"),
    ("DELETE", "/v1/databases/{id}/payload-indexes/{field}"), ("GET", "/v1/databases/{id}/export"),
}


def examples(path):
    """[(section, command, expected status, documented answer or None)] in document order."""
    lines = open(path, encoding="utf-8").read().splitlines()
    out = []
    section = ""
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("### "):
            section = line[4:].strip()
        if line.strip() != "```sh":
            i += 1
            continue
        i += 1
        block = []
        while lines[i].strip() != "```":
            block.append(lines[i])
            i += 1
        i += 1
        cmds = []
        k = 0
        while k < len(block):
            cmd = block[k]
            while cmd.endswith("\\"):
                k += 1
                cmd = cmd[:-1] + " " + block[k].strip()
            k += 1
            if cmd.startswith("curl "):
                m = re.match(r"^# (\d{3})\b", block[k]) if k < len(block) else None
                assert m, "curl example without a '# STATUS' line under it: %s" % cmd
                cmds.append([section, cmd, int(m.group(1)), None])
                k += 1
        # A ```json block right after the example is its documented answer.
        j = i
        while j < len(lines) and not lines[j].strip():
            j += 1
        if cmds and j < len(lines) and lines[j].strip() == "```json":
            j += 1
            text = []
            while lines[j].strip() != "```":
                text.append(lines[j])
                j += 1
            cmds[-1][3] = json.loads("\n".join(text))
            i = j + 1
        out.extend(cmds)
    return out


def route_of(cmd):
    method = "GET"
    m = re.search(r"-X (\w+)", cmd)
    if m:
        method = m.group(1)
    m = re.search(r'"\$JVDB(/[^"?]*)', cmd)
    assert m, cmd
    segs = m.group(1).split("/")
    norm = []
    for n, seg in enumerate(segs):
        prev = segs[n - 1] if n else ""
        if prev == "databases" and n == 3:
            seg = "{id}"
        elif prev == "vectors" and seg not in ("batch", "batch-get", "delete", "count", "metadata", "scroll"):
            seg = "{vid}"
        elif prev == "backups" and n == 3 and seg != "schedule":
            seg = "{bid}"
        elif prev == "payload-indexes":
            seg = "{field}"
        elif prev == "api-keys":
            seg = "{key_id}"
        elif prev == "indexes":
            seg = "{iid}"
        elif prev == "jobs" and n == 3:
            seg = "{jobId}"
        norm.append(seg)
    return method, "/".join(norm)


def run_example(cmd, env, workdir):
    out = os.path.join(workdir, "answer")
    p = subprocess.run(["bash", "-c", cmd + " -o %s -w '%%{http_code}'" % out], capture_output=True, env=env, timeout=60)
    assert p.returncode == 0, "%s: curl failed: %s" % (cmd, p.stderr.decode())
    status = int(p.stdout.decode()[-3:])
    body = open(out, "rb").read().decode()
    return status, body


def docs_examples_run():
    exs = examples(API_MD)
    assert len(exs) >= 30, len(exs)
    covered = {route_of(cmd) for _, cmd, _, _ in exs}
    assert ROUTES <= covered, "routes without an example in API.md: %s" % sorted(ROUTES - covered)
    assert covered <= ROUTES, "examples of routes the server does not have: %s" % sorted(covered - ROUTES)

    work = tempfile.mkdtemp(prefix="jvdb-docs-")
    main = Server(root=os.path.join(work, "main"), args=["--backup-repo", os.path.join(work, "repo")])
    os.makedirs(main.root)
    key = "docs-example-key"
    auth = Server(root=os.path.join(work, "auth"), args=["--api-key", key])
    os.makedirs(auth.root)
    try:
        main.start()
        auth.start()
        env = dict(os.environ)
        env.pop("JVDB_API_KEY", None)
        ran = 0
        for section, cmd, want, doc in exs:
            server = auth if section in ("Authentication", "Stopping the server") else main
            env["JVDB"] = "http://127.0.0.1:%d" % server.port
            if server is auth:
                env["JVDB_API_KEY"] = key
            status, body = run_example(cmd, env, work)
            assert status == want, "%s\n  expected %d, got %d: %s" % (cmd, want, status, body[:500])
            ran += 1
            answer = None
            if "/export" in cmd:   # JSON Lines: each line one object
                assert all(json.loads(l)["id"] for l in body.splitlines()), body[:300]
            elif body.startswith("{"):
                answer = json.loads(body)
                if "api_key" in answer and "key_id" in answer:   # a key made in the examples
                    env["NEW_KEY"], env["KEY_ID"] = answer["api_key"], answer["key_id"]
                if "jobId" in answer:   # a job queued in the examples
                    env["JOB_ID"] = answer["jobId"]
                if "backupId" in answer and "type" in answer:
                    env["BACKUP_ID"] = answer["backupId"]
                    if answer["type"] == "full":
                        env["FULL_ID"] = answer["backupId"]
            if isinstance(doc, dict):
                assert isinstance(answer, dict), "%s: documented a JSON answer, got %r" % (cmd, body[:300])
                missing = set(doc) - set(answer)
                assert not missing, "%s: documented fields %s are not in the answer %s" % (cmd, missing, body[:500])
                if "error" in doc:
                    assert doc["error"] == answer["error"] and doc["message"] == answer["message"], (doc, answer)
        print("  %d examples run" % ran)
        assert auth.wait_exit() == 0   # the last example stops it
        main.stop()
    finally:
        main.cleanup()
        auth.cleanup()


def openapi_covers_every_route():
    text = open(OPENAPI, encoding="utf-8").read()
    found = set()
    path = None
    for line in text.splitlines():
        m = re.match(r"^  (/[^:]*):\s*$", line)
        if m:
            path = m.group(1)
            continue
        m = re.match(r"^    (get|put|patch|post|delete):\s*$", line)
        if m and path:
            found.add((m.group(1).upper(), path))
    assert found == ROUTES, "openapi.yaml: missing %s, extra %s" % (sorted(ROUTES - found), sorted(found - ROUTES))


if __name__ == "__main__":
    if len(sys.argv) > 2:
        API_MD = sys.argv[2]
    jvdbtest.TESTS.extend([docs_examples_run, openapi_covers_every_route])
    sys.exit(jvdbtest.run_tests(sys.argv[:2]))
