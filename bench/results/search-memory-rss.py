"""Samples /proc/PID/smaps every 20 ms while `jvdb search --query-file Q --index --ef 64` runs on a
database with a saved graph, and prints the peak RSS split by mapping: anonymous memory (keydir,
graph links, 8-bit rows, heap) and each file (segments read by the re-rank, the graph file while it
is loaded), plus the library's "loaded" lines.  Medians of --runs rounds.

Several binaries (old and new) and query files (1 query = RSS with the index ready after open,
200 and 2,000 = after a query stream) may be given, comma-separated: every round runs each
binary on each query file, interleaved, so the comparison shares the machine's load.

usage: python3 bench/results/search-memory-rss.py JVDB[,JVDB...] DATA_DIR QUERY_FILE[,QUERY_FILE...] [ROUNDS]"""
import collections, statistics, subprocess, sys, time

jvdbs, data, qfs = sys.argv[1].split(","), sys.argv[2], sys.argv[3].split(",")
rounds = int(sys.argv[4]) if len(sys.argv) > 4 else 3
res = collections.defaultdict(list)


def measure(jvdb, qf):
    cmd = [jvdb, "--data", data, "search", "d", "--query-file", qf, "--index", "--ef", "64", "--json"]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={"JVDB_LOG": "info", "PATH": "/usr/bin:/bin"})
    best, snap = 0, collections.Counter()
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
    wall = time.monotonic() - t0
    err = p.stderr.read().decode()
    return best, snap, wall, [l[25:160] for l in err.splitlines() if "loaded" in l]


for r in range(rounds):
    for qf in qfs:
        for jvdb in jvdbs:
            best, snap, wall, loaded = measure(jvdb, qf)
            res[(jvdb, qf)].append((best, snap, wall))
            print("round %d %s %s: %.1f s, peak %.0f MiB: %s" % (r + 1, jvdb, qf, wall, best / 1024,
                  ", ".join("%s %.0f" % (k, v / 1024) for k, v in snap.most_common())))
            print("\n".join("  " + l for l in loaded))
            sys.stdout.flush()
med = statistics.median
print("\n| binary | queries | wall s | peak RSS MiB | anon MiB | segments MiB | graph file MiB |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
for qf in qfs:
    for jvdb in jvdbs:
        v = res[(jvdb, qf)]
        print("| %s | %s | %.2f | %.0f | %.0f | %.0f | %.0f |" % (jvdb, qf, med([w for _, _, w in v]), med([b for b, _, _ in v]) / 1024,
              med([s["anon"] for _, s, _ in v]) / 1024, med([s["segments"] for _, s, _ in v]) / 1024,
              med([s["graph file"] for _, s, _ in v]) / 1024))
