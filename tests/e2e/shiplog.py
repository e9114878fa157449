"""Reading a directory repository's backup log from Python (docs/FORMAT.md "Backup log objects"), for
the continuous-backup tests and the shipping benchmark: object names, the path a reader follows
from a backup, and the records inside (decompressed with the zstd command).

Not a verifier (src/backup/wal.c is): it checks what the tests need to say "no gap, no duplicate":
dense LSNs along the path, whole batches, the name's range and times against the records.
"""
import json
import os
import re
import struct
import subprocess
import time

NAME = re.compile(r"^(\d{20})-(\d{20})-(\d{19})-(\d{19})-(\d{10})\.jvl$")


def objects(repo, db, suffix=""):
    """Every log object of database `db`: dicts with incarnation, lsn_from, lsn_to, times, epoch,
    path, size, mtime; sorted as wal_list sorts (incarnation, lsn_from, epoch desc, lsn_to desc).
    `suffix`: what the store appends to object files (s3rver: "._S3rver_object")."""
    out = []
    top = os.path.join(repo, db, "log")
    if not os.path.isdir(top):
        return out
    for inc in os.listdir(top):
        d = os.path.join(top, inc)
        if not inc.isdigit() or not os.path.isdir(d):
            continue
        for n in os.listdir(d):
            if suffix and not n.endswith(suffix):
                continue
            m = NAME.match(n[:len(n) - len(suffix)] if suffix else n)
            if not m:
                continue
            p = os.path.join(d, n)
            st = os.stat(p)
            out.append({"incarnation": int(inc), "lsn_from": int(m[1]), "lsn_to": int(m[2]),
                        "first_ns": int(m[3]), "last_ns": int(m[4]), "epoch": int(m[5]), "path": p,
                        "name": inc + "/" + n[:len(n) - len(suffix)], "size": st.st_size, "mtime_ns": st.st_mtime_ns})
    out.sort(key=lambda e: (e["incarnation"], e["lsn_from"], -e["epoch"], -e["lsn_to"]))
    return out


def path(objs, incarnation, base):
    """The objects a reader follows from a backup at LSN `base` (wal_path's rule)."""
    objs = [e for e in objs if e["incarnation"] == incarnation]
    dead, top = set(), 0
    for i, e in enumerate(objs):
        if e["epoch"] < top:
            dead.add(i)
        else:
            top = e["epoch"]
    live = [e for i, e in enumerate(objs) if i not in dead]
    first = [e for e in live if e["lsn_from"] <= base < e["lsn_to"]]
    if not first:
        return []
    first.sort(key=lambda e: (e["lsn_from"], e["epoch"]))
    out = [first[-1]]
    while True:
        nxt = [e for e in live if e["lsn_from"] == out[-1]["lsn_to"]]
        if not nxt:
            return out
        out.append(nxt[0])


def records(obj, dim):
    """The records of one object: dicts with lsn, time_ns, kind ("put"/"delete"), more (batch flag),
    id (str), vector (floats), meta (str or None)."""
    raw = subprocess.run(["zstd", "-d", "-c", "-q", obj["path"]], capture_output=True, check=True).stdout
    assert raw[:8] == b"JVDBBAK1", obj["path"]
    ver, hdim, lsn_from, lsn_to, nrec, rbytes, typ = struct.unpack_from("<IIQQQQB", raw, 8)
    assert typ == 4 and hdim == dim and lsn_from == obj["lsn_from"] and lsn_to == obj["lsn_to"], obj["path"]
    out, off = [], 64
    for _ in range(nrec):
        _, lsn, t, total, mlen, idlen, kind, flags = struct.unpack_from("<QQqIIHBB", raw, off)
        vlen = 4 * dim if kind == 1 else 0
        body = off + 64
        vec = list(struct.unpack_from("<%df" % dim, raw, body)) if kind == 1 else None
        rid = raw[body + vlen:body + vlen + idlen].decode()
        meta = raw[body + vlen + idlen:body + vlen + idlen + mlen].decode() if mlen else None
        out.append({"lsn": lsn, "time_ns": t, "kind": "put" if kind == 1 else "delete", "more": flags & 1,
                    "id": rid, "vector": vec, "meta": meta})
        off += total
    assert raw[off:off + 8] == b"JVDBEND1", obj["path"]
    if out:
        assert out[0]["time_ns"] == obj["first_ns"] and out[-1]["time_ns"] == obj["last_ns"], obj["path"]
        assert out[-1]["more"] == 0, "object ends inside a batch: " + obj["path"]
    return out


def follow(repo, db, dim, incarnation, base, suffix=""):
    """Every record along the path from `base`, checked dense (no gap, no duplicate); returns them."""
    recs, nxt = [], base + 1
    for e in path(objects(repo, db, suffix), incarnation, base):
        for r in records(e, dim):
            if r["lsn"] <= base:
                continue
            assert r["lsn"] == nxt, "LSN %d where %d was expected (object %s)" % (r["lsn"], nxt, e["name"])
            nxt += 1
            recs.append(r)
    return recs


def backups(repo, db, suffix=""):
    """backup.json of every backup of `db` (plain repositories), oldest first."""
    out = []
    d = os.path.join(repo, db)
    for n in sorted(os.listdir(d)) if os.path.isdir(d) else []:
        if n.startswith("."):  # .tmp- (a backup being written) and .del- (being deleted) are not backups
            continue
        p = os.path.join(d, n, "backup.json" + suffix)
        if os.path.exists(p):
            with open(p) as f:
                out.append(json.load(f))
    return out


def wait_for(fn, what, timeout=30):
    """Polls fn() until it is true (the tests wait for the shipper this way); returns its value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = fn()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)
