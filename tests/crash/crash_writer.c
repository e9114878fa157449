/*
 * crash_writer.c — the workload of the crash suite (tests/crash/crash_test.py drives it).
 *
 *   crash_writer run   DIR SEED START [SYNC [compact|index|compact+index]]
 *                                              perform ops START, START+1, ... forever, printing
 *                                              "ack N" after op N-1 returned (N ops acknowledged);
 *                                              with "compact", a second thread compacts the database
 *                                              over and over (full and partial in turn) meanwhile;
 *                                              with "index", another thread runs HNSW searches and
 *                                              checkpoints the graph (ext.hnsw) over and over
 *   crash_writer repair DIR SEED ACKED         jvdb_db_repair of the database (the suite damages it
 *                                              first and arms crash points inside the repair)
 *   crash_writer check DIR SEED ACKED          after a kill: the database must equal the model after
 *                                              ACKED ops, or after ACKED+1 (the op in flight may or
 *                                              may not have landed, but never half of it); prints
 *                                              "ok N" with the number of ops found durable; then
 *                                              the HNSW index (loaded from ext.hnsw plus catch-up,
 *                                              or rebuilt) must answer only live ids, each with the
 *                                              score of its current vector
 *
 * The op sequence is a pure function of SEED and the model state, so the checker replays it without
 * reading anything the writer said besides the count.  Ops are single puts, deletes of live ids and
 * batches of 2..24 puts (all or nothing), over a pool of ids so overwrites are frequent.  Segments
 * are small (16 KiB) so that sealing, and its commit point, happen every few dozen ops.
 * The checker also verifies that after recovery no orphan or temporary file is left in the database
 * directory: every file there is named by the MANIFEST, or is bytes set aside by recovery or repair
 * ("<segment>.torn-<offset>", "<segment>.bad-<offset>", docs/FORMAT.md).
 */
#include <dirent.h>
#include <pthread.h>
#include <unistd.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jvdb.h"

#define DIM       8
#define POOL      300
#define MAX_BATCH 24

struct model {
    int live[POOL];
    uint64_t version[POOL]; /* op index that wrote the live value */
};

struct op {
    int kind; /* 0 put, 1 delete, 2 batch */
    int n;
    int ids[MAX_BATCH];
};

static uint64_t mix(uint64_t x)
{
    x += 0x9E3779B97F4A7C15ull;
    x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
    x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
    return x ^ (x >> 31);
}

static void vector_for(float *v, int id, uint64_t version)
{
    uint64_t x = mix((uint64_t)id * 1000003u + version);
    for (int i = 0; i < DIM; i++) {
        x = mix(x);
        v[i] = (float)((double)(x >> 11) / (double)(1ull << 53)) - 0.5f;
    }
}

static void meta_for(char *buf, size_t cap, int id, uint64_t version)
{
    snprintf(buf, cap, "{\"id\":%d,\"op\":%llu}", id, (unsigned long long)version);
}

static void id_for(char *buf, size_t cap, int id) { snprintf(buf, cap, "vec-%d", id); }

/* Chooses op i from the seed and the model (deletes only target live ids). */
static void op_choose(uint64_t seed, uint64_t i, const struct model *m, struct op *op)
{
    uint64_t r = mix(seed ^ mix(i));
    int roll = (int)(r % 100);
    memset(op, 0, sizeof *op);
    if (roll < 15) {
        int start = (int)((r >> 8) % POOL);
        for (int k = 0; k < POOL; k++) {
            int id = (start + k) % POOL;
            if (m->live[id]) {
                op->kind = 1;
                op->n = 1;
                op->ids[0] = id;
                return;
            }
        }
    }
    if (roll >= 80) {
        op->kind = 2;
        op->n = 2 + (int)((r >> 16) % (MAX_BATCH - 1));
        for (int k = 0; k < op->n; k++) op->ids[k] = (int)(mix(r + (uint64_t)k) % POOL);
        return;
    }
    op->kind = 0;
    op->n = 1;
    op->ids[0] = (int)((r >> 24) % POOL);
}

static void op_apply(struct model *m, const struct op *op, uint64_t i)
{
    for (int k = 0; k < op->n; k++) {
        m->live[op->ids[k]] = op->kind != 1;
        m->version[op->ids[k]] = i;
    }
}

static int op_execute(jvdb_db *db, const struct op *op, uint64_t i)
{
    static float vecs[MAX_BATCH][DIM];
    static char ids[MAX_BATCH][32], metas[MAX_BATCH][64];
    jvdb_record recs[MAX_BATCH];
    for (int k = 0; k < op->n; k++) {
        id_for(ids[k], sizeof ids[k], op->ids[k]);
        vector_for(vecs[k], op->ids[k], i);
        meta_for(metas[k], sizeof metas[k], op->ids[k], i);
        recs[k] = (jvdb_record){ ids[k], vecs[k], DIM, metas[k] };
    }
    if (op->kind == 1) return jvdb_delete(db, ids[0], NULL);
    return jvdb_put_batch(db, recs, (size_t)op->n, NULL);
}

static void model_replay(uint64_t seed, uint64_t upto, struct model *m)
{
    memset(m, 0, sizeof *m);
    struct op op;
    for (uint64_t i = 0; i < upto; i++) {
        op_choose(seed, i, m, &op);
        op_apply(m, &op, i);
    }
}

static jvdb_db *open_db(jvdb_env *env, const char *sync, int create)
{
    jvdb_db *db;
    if (jvdb_db_open(env, "crash", &db) == JVDB_OK) return db;
    if (!create) return NULL;
    jvdb_db_options o;
    jvdb_db_options_init(&o, DIM);
    o.segment_max_bytes = 16384;
    if (jvdb_sync_parse(sync, &o.sync, &o.sync_interval_ms) != JVDB_OK ||
        jvdb_db_create(env, "crash", &o, &db) != JVDB_OK) {
        fprintf(stderr, "crash_writer: create: %s\n", jvdb_errmsg());
        exit(3);
    }
    return db;
}

/* 0 when the database equals the model. */
static int model_matches(jvdb_db *db, const struct model *m, char *why, size_t cap)
{
    uint64_t live = 0;
    float v[DIM], want[DIM];
    char id[32], meta_want[64];
    for (int k = 0; k < POOL; k++) {
        id_for(id, sizeof id, k);
        char *meta = NULL;
        int rc = jvdb_get(db, id, v, &meta);
        if (!m->live[k]) {
            jvdb_free(meta);
            if (rc != JVDB_ENOTFOUND) {
                snprintf(why, cap, "%s should be absent (rc %d)", id, rc);
                return 1;
            }
            continue;
        }
        live++;
        if (rc != JVDB_OK) {
            snprintf(why, cap, "%s missing: %s", id, jvdb_errmsg());
            return 1;
        }
        vector_for(want, k, m->version[k]);
        meta_for(meta_want, sizeof meta_want, k, m->version[k]);
        int same = memcmp(v, want, sizeof v) == 0 && meta && strcmp(meta, meta_want) == 0;
        jvdb_free(meta);
        if (!same) {
            snprintf(why, cap, "%s has the wrong bytes (expected version %llu)", id, (unsigned long long)m->version[k]);
            return 1;
        }
    }
    if (jvdb_count(db) != live) {
        snprintf(why, cap, "count %llu, model has %llu", (unsigned long long)jvdb_count(db), (unsigned long long)live);
        return 1;
    }
    return 0;
}

/* Files in the database directory other than the MANIFEST and the segments it names. */
static int stray_files(const char *dir, const jvdb_stats *st, char *why, size_t cap)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/databases/crash", dir);
    DIR *d = opendir(path);
    if (!d) return 0;
    struct dirent *e;
    uint32_t segs = 0;
    int stray = 0;
    while ((e = readdir(d)) != NULL) {
        size_t l = strlen(e->d_name);
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..") || !strcmp(e->d_name, "MANIFEST")) continue;
        if (!strcmp(e->d_name, "ext.hnsw") || !strcmp(e->d_name, "ext.hnsw.log")) continue; /* graph + delta */
        /* The keydir checkpoint, and the one the open database's checkpointer may be writing now
         * (a .tmp left by a crash is removed at the next open like any orphan). */
        if (!strcmp(e->d_name, "KEYDIR") || !strcmp(e->d_name, "KEYDIR.tmp"))
            continue; /* the saved HNSW graph (its .tmp is removed at attach) */
        if (l == 14 && !strcmp(e->d_name + 10, ".seg")) {
            segs++;
            continue;
        }
        if (l > 14 && (!strncmp(e->d_name + 10, ".seg.torn-", 10) || !strncmp(e->d_name + 10, ".seg.bad-", 9)) &&
            !strstr(e->d_name, ".tmp"))
            continue; /* set aside for the operator, never removed */
        snprintf(why, cap, "stray file %.200s after recovery", e->d_name);
        stray = 1;
    }
    closedir(d);
    if (!stray && segs != st->segments) {
        snprintf(why, cap, "%u segment files but the MANIFEST names %u", segs, st->segments);
        stray = 1;
    }
    return stray;
}

/* 0 when every HNSW answer names a live id of the model and scores its current vector: a graph
 * left by a crash may miss vectors but never invent or resurrect one. */
static int index_matches(jvdb_db *db, const struct model *m, char *why, size_t cap)
{
    if (jvdb_db_index_wait(db, 120000) != JVDB_OK) {
        snprintf(why, cap, "index never became ready: %s", jvdb_errmsg());
        return 1;
    }
    for (int qi = 0; qi < 40; qi++) {
        int base = (qi * 37) % POOL;
        float q[DIM], v[DIM];
        vector_for(q, base, m->version[base]); /* live or deleted: deleted ones must stay away */
        jvdb_search_params p;
        jvdb_search_params_init(&p);
        p.k = 10;
        jvdb_result *r;
        size_t cnt;
        if (jvdb_search(db, q, DIM, &p, &r, &cnt) != JVDB_OK) {
            snprintf(why, cap, "search failed: %s", jvdb_errmsg());
            return 1;
        }
        for (size_t j = 0; j < cnt; j++) {
            int id = atoi(r[j].id + 4);
            if (id < 0 || id >= POOL || !m->live[id]) {
                snprintf(why, cap, "HNSW search returned %s, which is not live", r[j].id);
                jvdb_results_free(r, cnt);
                return 1;
            }
            vector_for(v, id, m->version[id]);
            float d = 0;
            for (int i = 0; i < DIM; i++) d += (q[i] - v[i]) * (q[i] - v[i]);
            if (d - r[j].score > 1e-4f || r[j].score - d > 1e-4f) {
                snprintf(why, cap, "HNSW search scored %s %g, its current vector is at %g (stale node)", r[j].id,
                         r[j].score, d);
                jvdb_results_free(r, cnt);
                return 1;
            }
        }
        jvdb_results_free(r, cnt);
    }
    return 0;
}

static volatile int compactor_stop;

static void *compactor_main(void *arg)
{
    jvdb_db *db = arg;
    jvdb_compact_policy p;
    jvdb_compact_policy_init(&p);
    p.min_records = 1;
    p.segment_dead_ratio = 0.2;
    for (int round = 0; !compactor_stop; round++) {
        jvdb_compact_options o = { .full = round % 2, .force = 1, .policy = &p };
        jvdb_compact_stats st;
        if (jvdb_compact(db, &o, &st) != JVDB_OK) {
            fprintf(stderr, "crash_writer: compaction failed: %s\n", jvdb_errmsg());
            exit(5);
        }
        usleep(2000);
    }
    return NULL;
}

static void *indexer_main(void *arg)
{
    jvdb_db *db = arg;
    float q[DIM];
    for (int round = 0;; round++) {
        vector_for(q, round % POOL, (uint64_t)round);
        jvdb_search_params p;
        jvdb_search_params_init(&p);
        jvdb_result *r;
        size_t cnt;
        if (jvdb_search(db, q, DIM, &p, &r, &cnt) != JVDB_OK || jvdb_db_index_save(db) != JVDB_OK) {
            fprintf(stderr, "crash_writer: index: %s\n", jvdb_errmsg());
            exit(6);
        }
        jvdb_results_free(r, cnt);
        usleep(3000);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: crash_writer run|check DIR SEED N [SYNC]\n");
        return 2;
    }
    const char *dir = argv[2];
    uint64_t seed = strtoull(argv[3], NULL, 10);
    uint64_t n = strtoull(argv[4], NULL, 10);
    jvdb_env *env;
    if (jvdb_env_open(dir, &env) != JVDB_OK) {
        fprintf(stderr, "crash_writer: open: %s\n", jvdb_errmsg());
        return 3;
    }
    struct model m;
    if (!strcmp(argv[1], "repair")) {
        jvdb_repair_result r;
        if (jvdb_db_repair(env, "crash", NULL, NULL, &r) != JVDB_OK) {
            printf("FAIL: repair: %s\n", jvdb_errmsg());
            return 1;
        }
        printf("repaired changed=%d kept=%llu dropped=%llu\n", r.changed, (unsigned long long)r.records_kept,
               (unsigned long long)r.ranges_dropped);
        jvdb_env_close(env);
        return 0;
    }
    if (!strcmp(argv[1], "check")) {
        jvdb_db *db = open_db(env, "always", 0);
        char why_k[256] = "", why_k1[256] = "";
        if (!db) {
            /* Only acceptable if nothing was ever acknowledged (the crash hit creation). */
            if (n == 0 && jvdb_db_open(env, "crash", &db) == JVDB_ENOTFOUND) {
                printf("ok 0\n");
                return 0;
            }
            printf("FAIL: cannot open the database after %llu acknowledged ops: %s\n", (unsigned long long)n,
                   jvdb_errmsg());
            return 1;
        }
        model_replay(seed, n, &m);
        jvdb_stats st;
        jvdb_stats_get(db, &st);
        if (model_matches(db, &m, why_k, sizeof why_k) != 0) model_replay(seed, n + 1, &m);
        if (model_matches(db, &m, why_k, sizeof why_k) == 0 && index_matches(db, &m, why_k, sizeof why_k) != 0) {
            printf("FAIL: %s\n", why_k);
            return 1;
        }
        model_replay(seed, n, &m);
        if (stray_files(dir, &st, why_k, sizeof why_k)) {
            printf("FAIL: %s\n", why_k);
            return 1;
        }
        if (model_matches(db, &m, why_k, sizeof why_k) == 0) {
            printf("ok %llu\n", (unsigned long long)n);
            jvdb_env_close(env);
            return 0;
        }
        model_replay(seed, n + 1, &m);
        if (model_matches(db, &m, why_k1, sizeof why_k1) == 0) {
            printf("ok %llu\n", (unsigned long long)(n + 1));
            jvdb_env_close(env);
            return 0;
        }
        printf("FAIL after %llu acknowledged ops: as of %llu: %s; as of %llu: %s\n", (unsigned long long)n,
               (unsigned long long)n, why_k, (unsigned long long)(n + 1), why_k1);
        return 1;
    }
    const char *sync = argc > 5 ? argv[5] : "always";
    jvdb_db *db = open_db(env, sync, 1);
    model_replay(seed, n, &m);
    pthread_t compactor;
    if (argc > 6 && strstr(argv[6], "compact")) pthread_create(&compactor, NULL, compactor_main, db);
    pthread_t indexer;
    if (argc > 6 && strstr(argv[6], "index")) pthread_create(&indexer, NULL, indexer_main, db);
    struct op op;
    for (uint64_t i = n;; i++) {
        op_choose(seed, i, &m, &op);
        int rc = op_execute(db, &op, i);
        if (rc != JVDB_OK) {
            fprintf(stderr, "crash_writer: op %llu failed: %s\n", (unsigned long long)i, jvdb_errmsg());
            return 4;
        }
        op_apply(&m, &op, i);
        printf("ack %llu\n", (unsigned long long)(i + 1));
        fflush(stdout);
    }
}
