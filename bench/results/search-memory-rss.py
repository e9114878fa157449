"""Samples /proc/PID/smaps every 20 ms while `jvdb search --query-file Q --index --ef 64` runs on a
database with a saved graph, and prints the peak RSS split by mapping: anonymous memory (keydir,
graph links, 8-bit rows, heap) and each file (segments read by the re-rank, the graph file while it
is loaded), plus the library's "loaded" lines.  Medians of --runs rounds.

usage: python3 bench/results/search-memory-rss.py JVDB DATA_DIR QUERY_FILE [ROUNDS]"""
import collections, statistics, subprocess, sys, time

jvdb, data, qf = sys.argv[1:4]
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
cmd = [jvdb, "--data", data, "search", "d", "--query-file", qf, "--index", "--ef", "64", "--json"]
res = []
for r in range(rounds):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={"JVDB_LOG": "info", "PATH": "/usr/bin:/bin"})
    best, snap = 0, None
    while p.poll() is None:
        try:
            agg, cur = collections.Counter(), None
            for line in open("/proc/%d/smaps" % p.pid):
                f = line.split()
                if "-" in f[0] and not f[0].endswith(":"):
                    name = f[5] if len(f) > 5 else "[anon]"
                    cur = "segments" if name.endswith(".seg") else "graph file" if name.endswith("ext.hnsw") else \
                        "anon" if name in ("[anon]", "[heap]") or name.startswith("[stack") else "other files"
                elif f[0] == "Rss:":
                    agg[cur] += int(f[1])
            if sum(agg.values()) > best:
                best, snap = sum(agg.values()), agg
        except Exception:
            pass
        time.sleep(0.02)
    err = p.stderr.read().decode()
    res.append((best, snap))
    print("round %d: peak %.0f MiB: %s" % (r + 1, best / 1024, ", ".join("%s %.0f" % (k, v / 1024) for k, v in snap.most_common())))
    print("\n".join("  " + l[25:160] for l in err.splitlines() if "loaded" in l))
med = statistics.median
print("median peak %.0f MiB; anon %.0f MiB; segments %.0f MiB; graph file %.0f MiB" % (
    med([b for b, _ in res]) / 1024, med([s["anon"] for _, s in res]) / 1024, med([s["segments"] for _, s in res]) / 1024,
    med([s["graph file"] for _, s in res]) / 1024))
