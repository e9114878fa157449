#!/usr/bin/env python3
"""Crash suite for the storage engine (issue 2; docs/ARCHITECTURE.md 5).

Runs tests/crash/crash_writer, kills it with SIGKILL at random moments (JVDB_CRASH_KILLS times,
default 200) and at every named crash point, and after each death runs the checker: every
acknowledged write must be there with the right bytes, nothing else, and never half a batch.
The state carries over from one kill to the next, so recovery runs on the result of recoveries.
Prints the seed so a failure can be replayed: JVDB_CRASH_SEED=<seed>.
"""
import os
import random
import select
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time

WRITER = sys.argv[1]
KILLS = int(os.environ.get("JVDB_CRASH_KILLS", "200"))
SEED = int(os.environ.get("JVDB_CRASH_SEED", str(random.randrange(1, 2**31))))
rng = random.Random(SEED)
passed = failed = 0


# Keydir checkpoints (KEYDIR) every 4 KiB of new writes instead of every 64 MiB.
KDCKPT = {"JVDB_KDCKPT_BYTES": "4096"}


def run_writer(data, seed, start, sync, kill_after=None, crash_at=None, compact=False, extra_env=None):
    """Runs the writer until killed (after kill_after seconds) or until it kills itself at a crash
    point; returns (acknowledged op count, how it ended)."""
    env = dict(os.environ, **(extra_env or {}))
    env.pop("JVDB_CRASH_AT", None)
    if crash_at:
        env["JVDB_CRASH_AT"] = crash_at
    extra = [compact] if isinstance(compact, str) else (["compact"] if compact else [])
    args = [WRITER, "run", data, str(seed), str(start), sync] + extra
    p = subprocess.Popen(args,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    acked = start
    buf = b""
    deadline = time.monotonic() + (kill_after if kill_after is not None else 60)
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        r, _, _ = select.select([p.stdout], [], [], left)
        if not r:
            continue
        chunk = os.read(p.stdout.fileno(), 65536)
        if not chunk:
            break
        buf += chunk
    if p.poll() is None:
        p.send_signal(signal.SIGKILL)
    rest, err = p.communicate()
    buf += rest
    for line in buf.split(b"\n"):
        if line.startswith(b"ack ") and line[4:].isdigit():
            acked = max(acked, int(line[4:]))
    return acked, p.returncode, err.decode(errors="replace")


def check(data, seed, acked, what, extra_env=None):
    global passed, failed
    out = subprocess.run([WRITER, "check", data, str(seed), str(acked)], capture_output=True, text=True,
                         env=dict(os.environ, **(extra_env or {})))
    line = (out.stdout.strip().splitlines() or ["(no output)"])[-1]
    if out.returncode == 0 and line.startswith("ok "):
        passed += 1
        return int(line.split()[1])
    failed += 1
    print(f"FAIL {what}: {line} {out.stderr.strip()[-2000:]}", flush=True)
    return None


def segment_count(data):
    d = os.path.join(data, "databases", "crash")
    return len([f for f in os.listdir(d) if f.endswith(".seg")]) if os.path.isdir(d) else 0


def random_kills(data, sync, count, compact=False, extra_env=None, max_delay=0.25):
    global failed
    start = 0
    seed = rng.randrange(1, 2**31)
    for i in range(count):
        delay = rng.uniform(0.002, max_delay)
        acked, rc, err = run_writer(data, seed, start, sync, kill_after=delay, compact=compact, extra_env=extra_env)
        if rc not in (-signal.SIGKILL,):
            failed += 1
            print(f"FAIL writer exited with {rc} instead of being killed: {err[-2000:]}", flush=True)
            return
        n = check(data, seed, acked, f"kill #{i} ({sync}, {delay*1000:.0f} ms, {acked} acked)", extra_env)
        if n is None:
            return
        start = n
    what = (" during compactions" if compact else "") + (" with keydir checkpoints" if extra_env else "")
    print(f"{count} kills{what} with sync={sync}: {start} ops durable, {segment_count(data)} segment files", flush=True)


def crash_points(data):
    """Each named commit point, reached for real: the writer must die there by its own SIGKILL."""
    global failed
    points = ["write.before_append:30", "write.after_append:30", "seal.before_manifest:2",
              "seal.after_manifest:2", "manifest.before_rename:2", "manifest.after_rename:2"]
    seed = rng.randrange(1, 2**31)
    start = 0
    for point in points:
        acked, rc, err = run_writer(data, seed, start, "always", crash_at=point)
        if rc != -signal.SIGKILL:
            failed += 1
            print(f"FAIL crash point {point} was not reached (exit {rc}): {err[-1000:]}", flush=True)
            continue
        n = check(data, seed, acked, f"crash point {point}")
        if n is not None:
            start = n
            print(f"crash point {point}: ok ({n} ops durable)", flush=True)
    # Each step of compaction (docs/ARCHITECTURE.md 7), with a compacting thread running beside the writer.
    for point in ["compact.after_seal:3", "segw.before_rename:3", "compact.before_swap:3", "swap.before_manifest:3",
                  "swap.after_manifest:3", "compact.after_swap:3"]:
        acked, rc, err = run_writer(data, seed, start, "always", crash_at=point, compact=True)
        if rc != -signal.SIGKILL:
            failed += 1
            print(f"FAIL crash point {point} was not reached (exit {rc}): {err[-1000:]}", flush=True)
            continue
        n = check(data, seed, acked, f"crash point {point}")
        if n is not None:
            start = n
            print(f"crash point {point}: ok ({n} ops durable)", flush=True)
    # Each step of a graph checkpoint (ext.hnsw, docs/FORMAT.md) and of its delta (ext.hnsw.log: a
    # batch appended, killed before and after its sync; a fold's rename before the old delta's removal):
    # a thread searches and saves beside the writer (and a compactor); the checker then requires HNSW
    # answers to name only live ids with their current vectors, whether the graph was loaded and
    # caught up or rebuilt.
    for point in ["hnsw.save.before_rename:3", "hnsw.save.after_rename:3", "hnsw.save.before_rename:9",
                  "hnsw.save.after_rename:9", "hnsw.delta.before_sync:1", "hnsw.delta.after_sync:1",
                  "hnsw.delta.before_sync:7", "hnsw.delta.after_sync:7", "hnsw.save.before_delta_unlink:2"]:
        acked, rc, err = run_writer(data, seed, start, "always", crash_at=point, compact="compact+index")
        if rc != -signal.SIGKILL:
            failed += 1
            print(f"FAIL crash point {point} was not reached (exit {rc}): {err[-1000:]}", flush=True)
            continue
        n = check(data, seed, acked, f"crash point {point}")
        if n is not None:
            start = n
            print(f"crash point {point}: ok ({n} ops durable)", flush=True)
    # Each step of a keydir checkpoint (KEYDIR, docs/FORMAT.md), taken by the background checkpointer
    # while the writer and a compactor run; the next open loads the old or the new one and replays.
    for point in ["kdckpt.before_rename:1", "kdckpt.after_rename:1", "kdckpt.before_rename:4",
                  "kdckpt.after_rename:4"]:
        acked, rc, err = run_writer(data, seed, start, "always", crash_at=point, compact=True, extra_env=KDCKPT)
        if rc != -signal.SIGKILL:
            failed += 1
            print(f"FAIL crash point {point} was not reached (exit {rc}): {err[-1000:]}", flush=True)
            continue
        n = check(data, seed, acked, f"crash point {point}", KDCKPT)
        if n is not None:
            start = n
            print(f"crash point {point}: ok ({n} ops durable)", flush=True)
    # Creation of the database itself.
    fresh = os.path.join(os.path.dirname(data), "create")
    acked, rc, _ = run_writer(fresh, seed, 0, "always", crash_at="create.before_rename")
    if rc != -signal.SIGKILL:
        failed += 1
        print("FAIL crash point create.before_rename was not reached", flush=True)
    elif check(fresh, seed, 0, "crash point create.before_rename") is not None:
        # The half-created directory must not stop a new creation.
        acked, rc, _ = run_writer(fresh, seed, 0, "always", kill_after=0.3)
        if check(fresh, seed, acked, "create after a crashed create") is not None:
            print("crash point create.before_rename: ok", flush=True)


def superseded_record(data):
    """(segment path, offset) of a put in a sealed segment that a newer record of its id replaced:
    damaging it loses nothing current, so after repair the database must still equal the model."""
    d = os.path.join(data, "databases", "crash")
    segs = sorted(f for f in os.listdir(d) if len(f) == 14 and f.endswith(".seg"))
    newest, puts = {}, []
    for name in segs:
        with open(os.path.join(d, name), "rb") as f:
            b = f.read()
        off = 64
        while off + 64 <= len(b):
            lsn, total, id_len, kind = (struct.unpack_from("<Q", b, off + 8)[0], struct.unpack_from("<I", b, off + 24)[0],
                                        struct.unpack_from("<H", b, off + 32)[0], b[off + 34])
            if total == 0 or off + total > len(b):
                break
            start = off + 64 + (8 * 4 if kind == 1 else 0)
            rid = b[start:start + id_len]
            newest[rid] = max(newest.get(rid, 0), lsn)
            if kind == 1 and name != segs[-1]:
                puts.append((os.path.join(d, name), off, rid, lsn))
            off += total
    old = [(p, o) for p, o, rid, lsn in puts if newest[rid] > lsn]
    return old[len(old) // 2] if old else None


def repair_points(data):
    """jvdb_db_repair is crash-safe: killed at each of its steps, the database is either still the
    damaged one (which refuses to open) or the repaired one; a repair run afterwards completes, and
    the result equals the model: the damaged record was superseded, so nothing current is lost."""
    global failed
    seed = rng.randrange(1, 2**31)
    acked, _, _ = run_writer(data, seed, 0, "always", kill_after=1.5)
    n = check(data, seed, acked, "repair: workload")
    if n is None:
        return
    target = superseded_record(data)
    if target is None:
        failed += 1
        print("FAIL repair: the workload left no superseded record in a sealed segment", flush=True)
        return
    with open(target[0], "r+b") as f:
        f.seek(target[1] + 70)
        b = f.read(1)
        f.seek(target[1] + 70)
        f.write(bytes([b[0] ^ 0x5A]))
    damaged = data + ".damaged"
    shutil.copytree(data, damaged)
    for point in ["setaside.before_rename", "setaside.after_rename", "segw.before_rename", "repair.before_manifest",
                  "manifest.before_rename", "manifest.after_rename", "repair.after_manifest", None]:
        shutil.rmtree(data)
        shutil.copytree(damaged, data)
        env = dict(os.environ)
        if point:
            env["JVDB_CRASH_AT"] = point
        p = subprocess.run([WRITER, "repair", data, "0", "0"], capture_output=True, text=True, env=env)
        if point and p.returncode != -signal.SIGKILL:
            failed += 1
            print(f"FAIL repair crash point {point} was not reached (exit {p.returncode}): {p.stdout} {p.stderr[-1000:]}",
                  flush=True)
            continue
        if point and point in ("setaside.before_rename", "setaside.after_rename", "segw.before_rename",
                               "repair.before_manifest", "manifest.before_rename"):
            out = subprocess.run([WRITER, "check", data, str(seed), str(n)], capture_output=True, text=True)
            if "corrupt record" not in out.stdout:
                failed += 1
                print(f"FAIL repair crash point {point}: the damaged state should still refuse: {out.stdout}", flush=True)
                continue
        p = subprocess.run([WRITER, "repair", data, "0", "0"], capture_output=True, text=True)
        if p.returncode != 0:
            failed += 1
            print(f"FAIL repair after crash point {point}: {p.stdout} {p.stderr[-1000:]}", flush=True)
            continue
        if check(data, seed, n, f"repair crash point {point}") == n:
            print(f"repair crash point {point}: ok ({p.stdout.strip()})", flush=True)
        else:
            failed += 1
    shutil.rmtree(damaged, ignore_errors=True)


def torn_tail_points(data):
    """Cutting a torn tail keeps its bytes in <segment>.torn-<offset> first; a crash between the copy
    and the truncation (or inside the copy) is harmless: the next open cuts the same tail, reusing
    the copy, and the database equals the model."""
    global failed
    seed = rng.randrange(1, 2**31)
    acked, _, _ = run_writer(data, seed, 0, "always", kill_after=0.5)
    n = check(data, seed, acked, "torn tail: workload")
    if n is None:
        return
    d = os.path.join(data, "databases", "crash")
    active = max(f for f in os.listdir(d) if len(f) == 14 and f.endswith(".seg"))
    seg = os.path.join(d, active)
    good = os.path.getsize(seg)
    # Each round tears a different tail at the same offset: its copy gets the next ".<k>" name, and
    # the copy a crash left behind is reused, never duplicated.
    for i, point in enumerate(("setaside.before_rename", "setaside.after_rename", "recovery.before_truncate")):
        junk = bytes((i * 7 + k) % 256 for k in range(768))
        with open(seg, "ab") as f:
            f.write(junk)
        env = dict(os.environ, JVDB_CRASH_AT=point)
        p = subprocess.run([WRITER, "check", data, str(seed), str(n)], capture_output=True, text=True, env=env)
        if p.returncode != -signal.SIGKILL:
            failed += 1
            print(f"FAIL torn-tail crash point {point} was not reached (exit {p.returncode}): {p.stdout}", flush=True)
            return
        if check(data, seed, n, f"torn-tail crash point {point}") != n:
            return
        torn = sorted(f for f in os.listdir(d) if ".torn-" in f)
        want = [f"{active}.torn-{good}"] + [f"{active}.torn-{good}.{k}" for k in range(1, i + 1)]
        if os.path.getsize(seg) != good or torn != want:
            failed += 1
            print(f"FAIL torn-tail crash point {point}: size {os.path.getsize(seg)} (want {good}), kept {torn}", flush=True)
            return
        with open(os.path.join(d, want[-1]), "rb") as f:
            if f.read() != junk:
                failed += 1
                print(f"FAIL torn-tail crash point {point}: {want[-1]} does not hold the cut bytes", flush=True)
                return
        print(f"torn-tail crash point {point}: ok", flush=True)


def main():
    print(f"crash suite: seed {SEED}, {KILLS} random kills", flush=True)
    top = tempfile.mkdtemp(prefix="jvdb-crash-")
    try:
        always = os.path.join(top, "always")
        never = os.path.join(top, "never")
        random_kills(always, "always", KILLS * 3 // 4)
        random_kills(never, "never", KILLS - KILLS * 3 // 4)
        random_kills(os.path.join(top, "compact"), "always", KILLS, compact=True)
        random_kills(os.path.join(top, "index"), "always", max(KILLS // 5, 10), compact="compact+index")
        # Kills while keydir checkpoints are taken (and loaded at every open) beside compactions.
        random_kills(os.path.join(top, "kdckpt"), "always", max(KILLS // 4, 10), compact=True, extra_env=KDCKPT,
                     max_delay=0.6)
        random_kills(os.path.join(top, "kdckpt-never"), "never", max(KILLS // 8, 10), extra_env=KDCKPT, max_delay=0.6)
        if segment_count(always) < 3:
            global failed
            failed += 1
            print("FAIL the workload never sealed a segment", flush=True)
        crash_points(os.path.join(top, "points"))
        repair_points(os.path.join(top, "repair"))
        torn_tail_points(os.path.join(top, "torn"))
    finally:
        shutil.rmtree(top, ignore_errors=True)
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


main()
