#!/usr/bin/python3
"""search_peers.py — owns the peers' side of issue 3's search measurement (bench/run-search): FAISS
IndexFlatL2 (exact) and hnswlib (HNSW) from Debian's python3-faiss and python3-hnswlib, on the very
.fvecs files bench_datagen wrote for bench/bench_search, and the ground truth both engines are
graded against.

Run it with /usr/bin/python3: that is the interpreter Debian's packages install into (a pyenv
`python3` on PATH lacks them).

  search_peers.py gt    --base B --queries Q --out GT.ivecs [--k 10]
      exact top-k of every query by FAISS's direct kernel (sum of squared differences per vector,
      not the BLAS expansion |x|^2 + |y|^2 - 2xy, whose float32 cancellation can swap near
      neighbours), all threads, written as ivecs
  search_peers.py run   --base B --queries Q --gt GT.ivecs [--m 16] [--efc 200] [--efs 16,32,...]
                        [--k 10] [--nq N] [--steps exact,hnsw]
      exact:  IndexFlatL2, faiss.omp_set_num_threads(1), one query per search() call
      hnsw:   hnswlib Index('l2') with the same M and ef_construction, add_items with
              num_threads=1 (the build time), then for each ef one knn_query per query with
              num_threads=1; also the 1,000 queries in one call (still one thread), which shows
              how much of the per-query time is the Python call itself

Every query set runs --passes times (3) and the fastest pass gives the QPS, as in bench_search.
Output: one JSON object per step and point on stdout, in bench_search's field names.
"""
import argparse
import json
import sys
import time

import numpy as np

try:
    import faiss
    import hnswlib
except ImportError as e:  # the packages exist only for Debian's interpreter
    sys.exit("search_peers.py: %s (run it with /usr/bin/python3; scripts/install-deps --bench)" % e)


def read_fvecs(path):
    raw = np.fromfile(path, dtype=np.int32)
    if raw.size == 0:
        sys.exit("search_peers.py: %s is empty" % path)
    dim = int(raw[0])
    rows = raw.reshape(-1, dim + 1)
    if not (rows[:, 0] == dim).all():
        sys.exit("search_peers.py: %s has rows of differing dimension" % path)
    return np.ascontiguousarray(rows[:, 1:].view(np.float32))


def read_ivecs(path):
    raw = np.fromfile(path, dtype=np.int32)
    k = int(raw[0])
    return raw.reshape(-1, k + 1)[:, 1:]


def write_ivecs(path, ids):
    ids = np.asarray(ids, dtype=np.int32)
    out = np.empty((ids.shape[0], ids.shape[1] + 1), dtype=np.int32)
    out[:, 0] = ids.shape[1]
    out[:, 1:] = ids
    out.tofile(path)


def emit(**fields):
    print(json.dumps(fields), flush=True)


def recall(found, gt, k):
    hits = 0
    for row, truth in zip(found, gt):
        hits += len(set(int(x) for x in row[:k]) & set(int(x) for x in truth[:k]))
    return hits / (len(gt) * k)


def timed_queries(fn, xq, passes):
    """Runs fn(one_query_as_1xD) for every query, `passes` times.  Returns the first pass's results
    and, from the fastest pass (other processes can only slow a pass down), wall and CPU seconds and
    the latencies, plus every pass's QPS."""
    runs = []
    for _ in range(passes):
        out, lat = [], np.empty(len(xq))
        c0, t0 = time.process_time(), time.perf_counter()
        for i in range(len(xq)):
            q0 = time.perf_counter()
            out.append(fn(xq[i:i + 1]))
            lat[i] = time.perf_counter() - q0
        runs.append((time.perf_counter() - t0, time.process_time() - c0, lat, out))
    wall, _, lat, _ = min(runs, key=lambda r: r[0])
    return runs[0][3], wall, min(r[1] for r in runs), lat, [len(xq) / r[0] for r in runs]


def point(engine, step, args, xb, xq, found, gt, wall, cpu, lat, qps, **extra):
    emit(engine=engine, step=step, n=len(xb), dim=xb.shape[1], nq=len(xq), m=args.m, ef_construction=args.efc,
         k=args.k, recall=recall(found, gt, args.k), passes=len(qps), seconds=wall, cpu_seconds=cpu,
         qps=len(xq) / wall, cpu_qps=len(xq) / cpu, qps_median_pass=float(np.median(qps)),
         p50_ms=1e3 * float(np.percentile(lat, 50)) if lat is not None else None,
         p99_ms=1e3 * float(np.percentile(lat, 99)) if lat is not None else None, **extra)


def cmd_gt(args):
    xb, xq = read_fvecs(args.base), read_fvecs(args.queries)
    # Never the BLAS path, whatever the batch size: see the module docstring.
    faiss.cvar.distance_compute_blas_threshold = 1 << 30
    index = faiss.IndexFlatL2(xb.shape[1])
    index.add(xb)
    t0 = time.perf_counter()
    _, ids = index.search(xq, args.k)
    write_ivecs(args.out, ids)
    emit(engine="faiss", step="gt", n=len(xb), nq=len(xq), k=args.k, seconds=time.perf_counter() - t0)


def cmd_run(args):
    xb, xq = read_fvecs(args.base), read_fvecs(args.queries)
    if args.nq:
        xq = xq[:args.nq]
    gt = read_ivecs(args.gt)[:len(xq)]
    steps = args.steps.split(",")
    faiss.omp_set_num_threads(1)
    if "exact" in steps:
        index = faiss.IndexFlatL2(xb.shape[1])
        index.add(xb)
        found, wall, cpu, lat, qps = timed_queries(lambda q: index.search(q, args.k)[1][0], xq, args.passes)
        point("faiss", "exact", args, xb, xq, found, gt, wall, cpu, lat, qps, ef=0)
        del index
    if "hnsw" in steps:
        p = hnswlib.Index(space="l2", dim=xb.shape[1])
        p.init_index(max_elements=len(xb), ef_construction=args.efc, M=args.m, random_seed=100)
        p.set_num_threads(1)
        c0, t0 = time.process_time(), time.perf_counter()
        p.add_items(xb, np.arange(len(xb)), num_threads=1)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        emit(engine="hnswlib", step="build", n=len(xb), dim=xb.shape[1], m=args.m, ef_construction=args.efc,
             total_s=wall, build_s=wall, user_s=cpu)
        for ef in (int(x) for x in args.efs.split(",")):
            p.set_ef(ef)
            found, wall, cpu, lat, qps = timed_queries(lambda q: p.knn_query(q, k=args.k, num_threads=1)[0][0], xq,
                                                       args.passes)
            point("hnswlib", "hnsw", args, xb, xq, found, gt, wall, cpu, lat, qps, ef=ef, graph="build")
            runs = []
            for _ in range(args.passes):
                c0, t0 = time.process_time(), time.perf_counter()
                labels, _ = p.knn_query(xq, k=args.k, num_threads=1)
                runs.append((time.perf_counter() - t0, time.process_time() - c0))
            point("hnswlib", "hnsw_batch", args, xb, xq, labels, gt, min(r[0] for r in runs), min(r[1] for r in runs),
                  None, [len(xq) / r[0] for r in runs], ef=ef, graph="build")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gt")
    g.add_argument("--base", required=True)
    g.add_argument("--queries", required=True)
    g.add_argument("--out", required=True)
    g.add_argument("--k", type=int, default=10)
    r = sub.add_parser("run")
    r.add_argument("--base", required=True)
    r.add_argument("--queries", required=True)
    r.add_argument("--gt", required=True)
    r.add_argument("--m", type=int, default=16)
    r.add_argument("--efc", type=int, default=200)
    r.add_argument("--efs", default="16,32,64,128,256,512")
    r.add_argument("--k", type=int, default=10)
    r.add_argument("--nq", type=int, default=0)
    r.add_argument("--steps", default="exact,hnsw")
    r.add_argument("--passes", type=int, default=3, help="runs of the query set per point; the fastest counts")
    args = ap.parse_args()
    (cmd_gt if args.cmd == "gt" else cmd_run)(args)


if __name__ == "__main__":
    main()
