/*
 * cli_search.c — `jvdb search`: the k nearest neighbours of one query (--vector) or of every query
 * in a file (--query-file: fvecs, npy or jsonl, read by the import readers of cli_read.c), printed
 * as a table or as JSON.
 *
 * Exact by default, and then read-only.  `--index` (or `--ef`) asks for the HNSW graph: the library
 * loads the one saved beside the segments (ext.hnsw) and catches up with newer writes, or builds it
 * when there is none (minutes at 1,000,000 vectors), waits for it, then searches it.  For that the
 * data directory is opened for writing, so that a graph this process had to build or catch up is
 * saved at exit and the next `--index` only loads it; the vectors are never changed.  When another
 * process holds the directory the search falls back to a read-only open (nothing is saved).
 *
 * The queries are all read and checked before the first search, so a bad row in a query file fails
 * the command with nothing on stdout, and before the index build, which can take minutes.
 */
#include "cli/cli.h"
#include "cli/cli_remote.h"
#include "core/grow.h"

#include <errno.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <string.h>

#define CLI_SEARCH_MAX_K       JVDB_MAX_K /* the one limit REST shares */
#define CLI_SEARCH_MAX_THREADS 1024

const struct cli_cmd cli_cmd_search = {
    "search",
    "Usage: jvdb [--data DIR] search NAME (--vector V1,V2,... | --query-file FILE) [options] [--json]\n"
    "\n"
    "Prints the K vectors of database NAME nearest to the query, best first: rank, id, score and\n"
    "metadata.  Scores are the database's metric: l2 = squared distance (smaller is better),\n"
    "cosine = cosine similarity, dot = inner product (larger is better).\n"
    "\n"
    "  --vector LIST       one query: dim numbers separated by commas (spaces and [ ] allowed)\n"
    "  --query-file FILE   one query per row of FILE ('-' = standard input, then --format is needed);\n"
    "                      results are printed per query, in file order\n"
    "  --format F          fvecs | npy | jsonl (default: from the file extension); a jsonl line is\n"
    "                      an array of numbers or an object with \"values\" (and an optional \"id\",\n"
    "                      printed with the query's results; other fields are ignored)\n"
    "  --k N               results per query (default 10, at most 100000)\n"
    "  --filter JSON       only vectors whose metadata matches, e.g. '{\"genre\": \"jazz\"}',\n"
    "                      '{\"year\": {\"$gte\": 1990, \"$lt\": 2000}}', '{\"m.lang\": \"en\"}';\n"
    "                      operators: $eq $ne $in $nin $gt $gte $lt $lte $exists $contains,\n"
    "                      $and $or $not; all keys must hold (docs/API.md \"Filters\")\n"
    "  --threshold T       only results at least this good (l2: score <= T; cosine, dot: score >= T)\n"
    "  --include-vectors   print each result's values too\n"
    "  --no-metadata       leave the metadata out\n"
    "  --threads N         threads of the exact scan (default: one per core)\n"
    "  --exact             scan every vector (the default of this command; see below)\n"
    "  --index             search the HNSW index (approximate): load the saved graph, or build it\n"
    "                      (and wait) when there is none; the graph is saved for next time\n"
    "  --ef N              HNSW search breadth (implies --index; default: the database's ef_search)\n"
    "  --json              {\"results\": [{\"vectorId\", \"score\", \"values\"?, \"metadata\"?}]};\n"
    "                      with --query-file a JSON array holding one such object per query\n"
    "\n"
    "The search is exact unless --index is given.  The HNSW graph is kept beside the database\n"
    "(ext.hnsw): --index loads it (about a second per million vectors) and takes in only the vectors\n"
    "written since it was saved.  Without a saved graph the first --index builds one (20-35 s per\n"
    "100,000 vectors of dimension 128 on 2 cores, 4 minutes for 1,000,000) and saves it at exit.\n"
    "--index opens the data directory for writing to save the graph (never the vectors); when another\n"
    "process holds it, it opens read-only and saves nothing.\n",
    1, 1
};

/* The queries of one command, all read before the first search. */
struct cli_queries {
    float *vecs;   /* n * dim */
    char **labels; /* jsonl ids, NULL where a query had none */
    size_t n, cap;
    uint32_t dim;
    bool from_file;
};

/* Frees the query vectors and labels. */
static void cli_queries_free(struct cli_queries *q)
{
    for (size_t i = 0; q->labels && i < q->n; i++) free(q->labels[i]);
    free(q->labels);
    free(q->vecs);
}

/* Makes room for one more query in the vector and label arrays. */
static int cli_queries_grow(struct cli_queries *q)
{
    if (q->n < q->cap) return 0;
    /* Two arrays, one count: each grows with its own copy of the capacity, which moves only when both did. */
    size_t vcap = q->cap, lcap = q->cap;
    float *nv = grow_array(q->vecs, &vcap, q->n + 1, q->dim * sizeof *nv, 64);
    if (!nv) return -1;
    q->vecs = nv;
    char **nl = grow_array(q->labels, &lcap, q->n + 1, sizeof *nl, 64);
    if (!nl) return -1;
    q->labels = nl;
    q->cap = lcap;
    return 0;
}

/* Reads every query of `path` (already opened as f) into q; returns 0 or the exit code. */
static int cli_queries_read(struct cli_queries *q, FILE *f, const char *path, const char *dbname, enum cli_format fmt)
{
    struct cli_reader r = { .f = f, .path = path, .dbname = dbname, .dim = q->dim, .prefix = "", .query = true };
    int rc = 0;
    if (cli_reader_start(&r, fmt)) {
        rc = cli_fail("%s", r.err);
        goto out;
    }
    for (;;) {
        if (cli_queries_grow(q)) {
            rc = cli_fail("out of memory for %zu queries of dimension %u", q->n + 1, q->dim);
            break;
        }
        char *id = NULL, *meta = NULL;
        int got = r.next(&r, q->vecs + q->n * q->dim, &id, &meta);
        free(meta);
        if (got < 0) {
            rc = cli_fail("%s", r.err);
            break;
        }
        if (got == 0) break;
        /* fvecs and npy readers number their rows as ids; only a jsonl id is the user's label. */
        if (fmt != CLI_FMT_JSONL) {
            free(id);
            id = NULL;
        }
        q->labels[q->n++] = id;
        r.row++;
    }
    if (rc == 0 && q->n == 0) rc = cli_fail("%s holds no queries", path);
out:
    cli_reader_free(&r);
    return rc;
}

/* Waits until the graph can answer: the saved graph is loaded, or, without one, built from every
 * vector (with a progress bar on a terminal).  A catch-up with vectors written after the graph was
 * saved is not waited for: those vectors are scanned exactly, so answers are complete and come at
 * once, and whatever the catch-up did before exit is saved for the next run. */
static int cli_search_wait_index(jvdb_db *db)
{
    struct cli_progress prog;
    uint64_t total = jvdb_count(db);
    cli_progress_start(&prog, "indexed", total);
    for (;;) {
        jvdb_index_status st;
        int rc = jvdb_db_index_status(db, &st);
        if (rc) return cli_lib_error(rc);
        if (st.state == JVDB_INDEX_READY || st.state == JVDB_INDEX_CATCHING_UP) break;
        /* Short: the end of a load with a catch-up left is only seen by asking again. */
        rc = jvdb_db_index_wait(db, st.state == JVDB_INDEX_LOADING ? 20 : 200);
        if (rc == JVDB_OK) break;
        if (rc != JVDB_EBUSY) {
            cli_progress_finish(&prog, 0, 0);
            return cli_lib_error(rc);
        }
        uint64_t done = st.pending < total ? total - st.pending : 0;
        cli_progress_update(&prog, done, done);
    }
    cli_progress_finish(&prog, total, total);
    return 0;
}

/* A score as JSON: through the shortest decimal, so 0.5f prints as 0.5 and not 0.500000000. */
static json_t *cli_json_score(float f)
{
    char buf[32];
    return json_real(strtod(cli_format_float(f, buf), NULL));
}

/* One query's results as JSON: its label, then each result's id and score, with values and metadata when asked. */
static json_t *cli_search_json(const char *label, const jvdb_result *res, size_t n, uint32_t dim,
                               const jvdb_search_params *p)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++) {
        json_t *o = json_pack("{soso}", "vectorId", cli_json_id(res[i].id, strlen(res[i].id)), "score",
                              cli_json_score(res[i].score));
        if (o && p->include_vectors) json_object_set_new(o, "values", cli_json_floats(res[i].vector, dim));
        if (o && p->include_metadata) {
            json_t *m = res[i].meta_json ? json_loads(res[i].meta_json, 0, NULL) : json_null();
            if (!m) m = json_string(res[i].meta_json); /* stored text that is not JSON: still show it */
            json_object_set_new(o, "metadata", m);
        }
        if (!o || json_array_append_new(arr, o)) {
            json_decref(arr);
            return NULL;
        }
    }
    if (!arr) return NULL;
    json_t *doc = json_object();
    if (!doc) {
        json_decref(arr);
        return NULL;
    }
    /* The query's own id first: it says which query the results belong to. */
    if (label) json_object_set_new(doc, "id", cli_json_id(label, strlen(label)));
    if (json_object_set_new(doc, "results", arr)) { /* steals arr even when it fails */
        json_decref(doc);
        return NULL;
    }
    return doc;
}

/* Prints one query's results as a table whose columns fit the ids and scores shown. */
static void cli_search_table(const jvdb_result *res, size_t n, uint32_t dim, const jvdb_search_params *p)
{
    if (n == 0) {
        printf("no results\n");
        return;
    }
    /* Column widths from this block's contents; very long ids just push the line out. */
    int idw = 2, scorew = 5;
    char buf[32];
    for (size_t i = 0; i < n; i++) {
        size_t l = strlen(res[i].id);
        if (l > (size_t)idw) idw = l > 40 ? 40 : (int)l;
        l = strlen(cli_format_float(res[i].score, buf));
        if (l > (size_t)scorew) scorew = (int)l;
    }
    int rankw = snprintf(buf, sizeof buf, "%zu", n);
    if (rankw < 4) rankw = 4;
    printf("%-*s  %-*s  %-*s", rankw, "rank", idw, "id", scorew, "score");
    if (p->include_vectors) printf("  values");
    if (p->include_metadata) printf("  metadata");
    putchar('\n');
    for (size_t i = 0; i < n; i++) {
        printf("%-*zu  %-*s  %-*s", rankw, i + 1, idw, res[i].id, scorew, cli_format_float(res[i].score, buf));
        if (p->include_vectors) {
            fputs("  ", stdout);
            cli_write_floats(stdout, res[i].vector, dim, ',');
        }
        if (p->include_metadata) printf("  %s", res[i].meta_json ? res[i].meta_json : "-");
        putchar('\n');
    }
}

/* Runs every query and prints as it goes: the queries are already valid, so only the library can
 * still fail, and it fails the same way for every query (memory), most likely on the first. */
static int cli_search_run(struct cli_ctx *ctx, jvdb_db *db, const char *name, const char *filter_json,
                          const struct cli_queries *q, const jvdb_search_params *p)
{
    if (ctx->json && q->from_file) putchar('[');
    for (size_t i = 0; i < q->n; i++) {
        jvdb_result *res = NULL;
        size_t n = 0;
        int rc = ctx->remote ? cli_remote_search(ctx, name, q->vecs + i * q->dim, q->dim, p, filter_json, &res, &n)
                             : jvdb_search(db, q->vecs + i * q->dim, q->dim, p, &res, &n);
        if (rc) {
            /* A half-written JSON array is worse than none: end it so the output still parses. */
            if (ctx->json && q->from_file) puts("]");
            return ctx->remote ? rc : cli_lib_error(rc);
        }
        if (ctx->json) {
            json_t *doc = cli_search_json(q->labels[i], res, n, q->dim, p);
            if (!doc) {
                jvdb_results_free(res, n);
                return cli_fail("out of memory");
            }
            if (i) putchar(',');
            /* Precision 9 prints every float32 so it reads back exactly. */
            json_dumpf(doc, stdout, JSON_COMPACT | JSON_REAL_PRECISION(9));
            json_decref(doc);
            if (!q->from_file) putchar('\n');
        } else {
            if (q->from_file) {
                if (i) putchar('\n');
                if (q->labels[i]) printf("query %zu (%s):\n", i, q->labels[i]);
                else printf("query %zu:\n", i);
            }
            cli_search_table(res, n, q->dim, p);
        }
        jvdb_results_free(res, n);
    }
    if (ctx->json && q->from_file) puts("]");
    /* The answers go out now, not at exit: closing the database afterwards may checkpoint the graph
     * (a catch-up changed it), which takes a second at 1M and must not hold the answers back.  A
     * write error stays in ferror(stdout), which main() reports. */
    fflush(stdout);
    return CLI_EXIT_OK;
}

enum {
    OPT_VECTOR,
    OPT_FILE,
    OPT_FORMAT,
    OPT_K,
    OPT_EF,
    OPT_EXACT,
    OPT_INDEX,
    OPT_FILTER,
    OPT_THRESHOLD,
    OPT_VECTORS,
    OPT_NO_META,
    OPT_THREADS,
    OPT_END
};

int cli_search_main(struct cli_ctx *ctx, int argc, char **argv)
{
    const char *cmd = cli_cmd_search.name;
    struct cli_opt opts[] = {
        [OPT_VECTOR] = { "vector", true, NULL },
        [OPT_FILE] = { "query-file", true, NULL },
        [OPT_FORMAT] = { "format", true, NULL },
        [OPT_K] = { "k", true, NULL },
        [OPT_EF] = { "ef", true, NULL },
        [OPT_EXACT] = { "exact", false, NULL },
        [OPT_INDEX] = { "index", false, NULL },
        [OPT_FILTER] = { "filter", true, NULL },
        [OPT_THRESHOLD] = { "threshold", true, NULL },
        [OPT_VECTORS] = { "include-vectors", false, NULL },
        [OPT_NO_META] = { "no-metadata", false, NULL },
        [OPT_THREADS] = { "threads", true, NULL },
        [OPT_END] = { NULL, false, NULL },
    };
    char *pos[argc];
    int npos, rc = cli_parse(ctx, &cli_cmd_search, argc, argv, opts, pos, &npos);
    if (rc) return rc;

    /* Everything the command line alone decides is checked before the data directory is opened. */
    const char *vector = opts[OPT_VECTOR].value, *path = opts[OPT_FILE].value;
    if (!vector == !path) return cli_usage_error(cmd, "give exactly one of --vector and --query-file");
    if (opts[OPT_FORMAT].value && !path) return cli_usage_error(cmd, "--format applies to --query-file");
    jvdb_search_params p;
    jvdb_search_params_init(&p);
    p.include_metadata = !opts[OPT_NO_META].value;
    p.include_vectors = opts[OPT_VECTORS].value != NULL;
    uint64_t u;
    if (opts[OPT_K].value) {
        if (!cli_parse_u64(opts[OPT_K].value, &u) || u == 0 || u > CLI_SEARCH_MAX_K)
            return cli_usage_error(cmd, "--k '%s' is not a number from 1 to %d", opts[OPT_K].value, CLI_SEARCH_MAX_K);
        p.k = (uint32_t)u;
    }
    bool use_index = opts[OPT_INDEX].value || opts[OPT_EF].value;
    if (opts[OPT_EF].value) {
        if (!cli_parse_u64(opts[OPT_EF].value, &u) || u == 0 || u > UINT32_MAX)
            return cli_usage_error(cmd, "--ef '%s' is not a positive number", opts[OPT_EF].value);
        p.ef = (uint32_t)u;
    }
    if (use_index && opts[OPT_EXACT].value)
        return cli_usage_error(cmd, "--exact scans every vector; it cannot be combined with --index or --ef");
    p.exact = !use_index;
    if (opts[OPT_THREADS].value) {
        if (!cli_parse_u64(opts[OPT_THREADS].value, &u) || u == 0 || u > CLI_SEARCH_MAX_THREADS)
            return cli_usage_error(cmd, "--threads '%s' is not a number from 1 to %d", opts[OPT_THREADS].value,
                                   CLI_SEARCH_MAX_THREADS);
        p.threads = (uint32_t)u;
    }
    if (opts[OPT_THRESHOLD].value) {
        const char *t = opts[OPT_THRESHOLD].value;
        if (!cli_parse_float(t, strlen(t), &p.threshold))
            return cli_usage_error(cmd, "--threshold '%s' is not a finite number", t);
        p.has_threshold = 1;
    }
    enum cli_format fmt = CLI_FMT_NONE;
    bool from_stdin = path && !strcmp(path, "-");
    if (path) {
        if (opts[OPT_FORMAT].value) fmt = cli_format_parse(opts[OPT_FORMAT].value);
        else if (from_stdin) return cli_usage_error(cmd, "reading queries from standard input needs --format");
        else if ((fmt = cli_format_from_name(path)) == CLI_FMT_NONE)
            return cli_usage_error(cmd, "cannot tell the format of '%s' from its name; give --format", path);
        if (fmt != CLI_FMT_FVECS && fmt != CLI_FMT_NPY && fmt != CLI_FMT_JSONL)
            return cli_usage_error(cmd, "query files are fvecs, npy or jsonl, not '%s'",
                                   opts[OPT_FORMAT].value ? opts[OPT_FORMAT].value : strrchr(path, '.') + 1);
    }
    float *one = NULL;
    size_t one_n = 0;
    if (vector && (rc = cli_parse_vector(cmd, "--vector", vector, &one, &one_n))) return rc;
    jvdb_filter *filter = NULL;
    if (opts[OPT_FILTER].value && (rc = jvdb_filter_parse(opts[OPT_FILTER].value, &filter))) {
        free(one);
        return cli_usage_error(cmd, "--filter: %s", *jvdb_errmsg() ? jvdb_errmsg() : jvdb_strerror(rc));
    }
    p.filter = filter;

    FILE *f = NULL;
    struct cli_queries q = { 0 };
    jvdb_db *db;
    if (path) {
        /* Opened before the data directory, like import: a wrong path touches nothing there. */
        f = from_stdin ? stdin : fopen(path, "rb");
        if (!f) {
            rc = cli_fail("cannot open '%s': %s", path, strerror(errno));
            goto out;
        }
    }
    struct stat dst;
    if (ctx->remote) {
        db = NULL;
        if ((rc = cli_remote_dim(ctx, pos[0], &q.dim))) goto out;
    } else if (use_index && stat(ctx->data_dir, &dst) == 0) {
        /* Writable, to keep the graph for the next run; read-only when another process has the
         * directory (a server, another search): the search itself needs no more. */
        ctx->readonly = false;
        if (jvdb_env_open(ctx->data_dir, &ctx->env) != JVDB_OK) {
            ctx->env = NULL;
            ctx->readonly = true;
        }
    }
    if (!ctx->remote) {
        if ((rc = cli_open_db(ctx, pos[0], &db))) goto out;
        q.dim = jvdb_db_dim(db);
    }
    if (path) {
        q.from_file = true;
        if ((rc = cli_queries_read(&q, f, from_stdin ? "<stdin>" : path, pos[0], fmt))) goto out;
    } else {
        if (one_n != q.dim) {
            rc = cli_fail("--vector has %zu values but database '%s' has dimension %u", one_n, pos[0], q.dim);
            goto out;
        }
        q.vecs = one;
        one = NULL;
        q.labels = calloc(1, sizeof *q.labels);
        if (!q.labels) {
            rc = cli_fail("out of memory");
            goto out;
        }
        q.n = q.cap = 1;
    }
    /* A server's index answers complete results in every state: nothing to wait for. */
    if (!ctx->remote && use_index && (rc = cli_search_wait_index(db))) goto out;
    rc = cli_search_run(ctx, db, pos[0], opts[OPT_FILTER].value, &q, &p);
out:
    if (f && !from_stdin) fclose(f);
    cli_queries_free(&q);
    free(one);
    jvdb_filter_free(filter);
    return rc;
}
