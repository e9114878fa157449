/*
 * bench_ship.c — the library half of issue 13's continuous-backup measurement; bench/run-ship drives
 * it and runs restic beside it.
 *
 *   bench_ship ingest  --dir DIR --n N [--dim D] [--batch B] [--sync always|never] [--ship-ms MS]
 *       ingest N random vectors as fast as possible while a thread ships the log every MS
 *       (0 = shipping off): writes per second
 *   bench_ship rpo     --dir DIR --rate W --seconds S [--dim D] [--batch B] [--ship-ms MS]
 *       a steady W writes/s for S seconds (paced batches) with shipping every MS: for every write,
 *       the time from its acknowledgement to the end of the shipment that holds it (p50/p99/max)
 *   bench_ship load    --dir DIR --n N [--dim D]            the base of the bytes comparison
 *   bench_ship changes --dir DIR --rate W --seconds S [--ship-ms MS] [--n N]
 *       a stretch of changes to the base (overwrites of random ids, a tenth deletes) shipped every
 *       MS: the log's stored bytes for them (the first shipment's full backup is not counted)
 *   bench_ship follow-poll --dir DIR --n N [--rounds R]
 *       a replica's poll with N log objects behind it (a history laid down as empty files under the
 *       full backup's LSN, which no poll reads): the full check (every log object and backup, as
 *       every poll did before) against log only (the names after the replica's LSN), idle and with
 *       one new object; medians of R rounds in ms
 *
 * The repository is DIR/repo, the data directory DIR/data.  Each prints one JSON line.  The shipper
 * runs exactly as `jvdb serve --backup-continuous` runs it (jvdb_backup_ship with a jvdb_shipper).
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench_util.h"
#include "jvdb.h"

struct opts {
    const char *dir, *mode, *sync;
    uint64_t n;
    uint32_t dim, batch;
    uint64_t ship_ms;
    double rate, seconds;
    int level; /* zstd level of the log objects (0: the library's default) */
};

static void die_lib(const char *what, int rc) { bench_die(0, "%s: %s (%s)", what, jvdb_errmsg(), jvdb_strerror(rc)); }

static uint64_t rng = 0x9E3779B97F4A7C15ull;

/* xorshift64*: random vectors without touching libc's state. */
static uint64_t rnd(void)
{
    rng ^= rng >> 12;
    rng ^= rng << 25;
    rng ^= rng >> 27;
    return rng * 2685821657736338717ull;
}

/* Fills a vector with values in [-1, 1). */
static void rand_vec(float *v, uint32_t dim)
{
    for (uint32_t i = 0; i < dim; i++) v[i] = (float)((double)(rnd() >> 11) / (double)(1ull << 53) * 2 - 1);
}

/* ------------------------------------------------------------------ the shipper thread */

struct shipper {
    jvdb_db *db;
    jvdb_repo *repo;
    jvdb_shipper *sh;
    uint64_t every_ms;
    atomic_int stop;
    pthread_t th;
    /* what each shipment reached and when it ended (rpo) */
    uint64_t *lsn;
    double *at, *took; /* shipped LSN, end time and duration of each shipment */
    size_t n, cap;
    uint64_t stored, raw, objects, failures, base_lsn;
    int first;
    pthread_mutex_t mu;
};

static int ship_level;    /* --level */
static int ship_nice = 5; /* --ship-nice: the shipping thread's nice above the writer's (the server's is 5) */

/* One shipment, noted. */
static void ship_once(struct shipper *s)
{
    jvdb_ship_options o = { 0 };
    o.shipper = s->sh;
    o.level = ship_level;
    jvdb_ship_result r;
    double t0 = bench_now();
    int rc = jvdb_backup_ship(s->db, s->repo, &o, &r);
    double now = bench_now();
    pthread_mutex_lock(&s->mu);
    if (rc) s->failures++;
    else {
        if (!s->first) {
            s->first = 1;
            s->base_lsn = r.shipped_lsn;
        }
        s->stored += r.stored_bytes;
        s->raw += r.bytes;
        s->objects += r.objects;
        if (s->n == s->cap) {
            s->cap = s->cap ? s->cap * 2 : 1024;
            s->lsn = realloc(s->lsn, s->cap * sizeof *s->lsn);
            s->at = realloc(s->at, s->cap * sizeof *s->at);
            s->took = realloc(s->took, s->cap * sizeof *s->took);
            if (!s->lsn || !s->at || !s->took) bench_die(0, "out of memory");
        }
        s->took[s->n] = now - t0;
        s->lsn[s->n] = r.shipped_lsn;
        s->at[s->n++] = now;
    }
    pthread_mutex_unlock(&s->mu);
}

/* Ships every every_ms, measured from the start of the previous shipment. */
static void *ship_main(void *arg)
{
    struct shipper *s = arg;
    /* niced like the server's shipping thread (src/server/ship.c, SHIP_NICE) */
    id_t tid = (id_t)gettid();
    errno = 0;
    int nice_now = getpriority(PRIO_PROCESS, tid);
    if (errno == 0 && ship_nice) setpriority(PRIO_PROCESS, tid, nice_now + ship_nice > 19 ? 19 : nice_now + ship_nice);
    while (!atomic_load(&s->stop)) {
        double t0 = bench_now();
        ship_once(s);
        double left = (double)s->every_ms / 1000 - (bench_now() - t0);
        while (left > 0 && !atomic_load(&s->stop)) {
            double step = left < 0.005 ? left : 0.005;
            struct timespec ts = { 0, (long)(step * 1e9) };
            nanosleep(&ts, NULL);
            left -= step;
        }
    }
    return NULL;
}

static void ship_start(struct shipper *s, jvdb_db *db, const struct opts *o)
{
    memset(s, 0, sizeof *s);
    s->db = db;
    s->every_ms = o->ship_ms;
    pthread_mutex_init(&s->mu, NULL);
    char repo[4096];
    snprintf(repo, sizeof repo, "%s/repo", o->dir);
    int rc = jvdb_repo_open(repo, NULL, &s->repo);
    if (!rc) rc = jvdb_shipper_new(NULL, &s->sh);
    if (rc) die_lib("open the repository", rc);
    ship_once(s); /* the first one makes the full backup the log continues */
    if (pthread_create(&s->th, NULL, ship_main, s)) bench_die(0, "cannot start the shipper thread");
}

static void ship_stop(struct shipper *s)
{
    atomic_store(&s->stop, 1);
    pthread_join(s->th, NULL);
    ship_once(s); /* what is left */
    jvdb_shipper_free(s->sh, s->repo, jvdb_db_name(s->db));
    jvdb_repo_close(s->repo);
    pthread_mutex_destroy(&s->mu);
}

/* Frees what the shipments noted (after ship_stop, once the caller has read it). */
static void ship_free(struct shipper *s)
{
    free(s->lsn);
    free(s->at);
    free(s->took);
}

/* ------------------------------------------------------------------ steps */

static jvdb_env *open_env(const struct opts *o)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/data", o->dir);
    jvdb_env *env;
    int rc = jvdb_env_open(path, &env);
    if (rc) die_lib("open data directory", rc);
    return env;
}

static jvdb_db *make_db(jvdb_env *env, const struct opts *o)
{
    jvdb_db_options dbo;
    jvdb_db_options_init(&dbo, o->dim);
    if (!strcmp(o->sync, "never")) dbo.sync = JVDB_SYNC_NEVER;
    jvdb_db *db;
    int rc = jvdb_db_create(env, "bench", &dbo, &db);
    if (rc) die_lib("create database", rc);
    return db;
}

/* One batch of `k` puts of ids from..from+k-1 (ids modulo `space` when it is non-zero). */
static uint64_t put_batch(jvdb_db *db, const struct opts *o, uint64_t from, uint32_t k, uint64_t space, float *vecs,
                          char (*ids)[32], jvdb_record *recs)
{
    for (uint32_t i = 0; i < k; i++) {
        rand_vec(vecs + (size_t)i * o->dim, o->dim);
        snprintf(ids[i], sizeof ids[i], "v%llu", (unsigned long long)(space ? (from + i) % space : from + i));
        recs[i] = (jvdb_record){ ids[i], vecs + (size_t)i * o->dim, o->dim, "{\"k\":1}" };
    }
    uint64_t lsn = 0;
    int rc = jvdb_put_batch(db, recs, k, &lsn);
    if (rc) die_lib("put batch", rc);
    return lsn;
}

static void step_ingest(const struct opts *o)
{
    bench_make_dir(o->dir);
    jvdb_env *env = open_env(o);
    jvdb_db *db = make_db(env, o);
    float *vecs = malloc((size_t)o->batch * o->dim * sizeof *vecs);
    char(*ids)[32] = malloc((size_t)o->batch * sizeof *ids);
    jvdb_record *recs = malloc(o->batch * sizeof *recs);
    struct shipper sh;
    if (o->ship_ms) ship_start(&sh, db, o);
    double t0 = bench_now();
    for (uint64_t i = 0; i < o->n; i += o->batch) {
        uint32_t k = (uint32_t)(o->n - i < o->batch ? o->n - i : o->batch);
        put_batch(db, o, i, k, 0, vecs, ids, recs);
    }
    double secs = bench_now() - t0;
    if (o->ship_ms) ship_stop(&sh);
    if (o->ship_ms) ship_free(&sh);
    bench_json_begin();
    bench_json_str("step", "ingest");
    bench_json_str("sync", o->sync);
    bench_json_int("n", (long long)o->n);
    bench_json_int("dim", o->dim);
    bench_json_int("ship_ms", (long long)o->ship_ms);
    bench_json_num("seconds", secs);
    bench_json_num("writes_per_s", (double)o->n / secs);
    bench_json_int("objects", o->ship_ms ? (long long)sh.objects : 0);
    bench_json_int("ship_failures", o->ship_ms ? (long long)sh.failures : 0);
    bench_json_end();
    free(vecs);
    free(ids);
    free(recs);
    jvdb_env_close(env);
}

/* qsort order of doubles. */
static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* rpo and changes: a paced stream of batches (W writes/s) with the shipper on. */
static void step_stream(const struct opts *o, int changes)
{
    bench_make_dir(o->dir);
    jvdb_env *env = open_env(o);
    jvdb_db *db;
    if (changes) {
        int rc = jvdb_db_open(env, "bench", &db);
        if (rc) die_lib("open database", rc);
    } else {
        db = make_db(env, o);
    }
    float *vecs = malloc((size_t)o->batch * o->dim * sizeof *vecs);
    char(*ids)[32] = malloc((size_t)o->batch * sizeof *ids);
    jvdb_record *recs = malloc(o->batch * sizeof *recs);
    size_t nb = (size_t)(o->rate * o->seconds / o->batch) + 1, done = 0;
    uint64_t *blsn = malloc(nb * sizeof *blsn);
    double *back = malloc(nb * sizeof *back);
    struct shipper sh;
    ship_start(&sh, db, o);
    double t0 = bench_now(), every = o->batch / o->rate;
    uint64_t next_id = changes ? 0 : 1000000000ull, written = 0, deletes = 0;
    for (size_t b = 0; b < nb; b++) {
        double due = t0 + (double)b * every;
        while (bench_now() < due) {
            struct timespec ts = { 0, 200000 };
            nanosleep(&ts, NULL);
        }
        if (changes && b % 10 == 9) { /* a tenth of the change batches delete */
            uint64_t lsn = 0;
            for (uint32_t i = 0; i < o->batch; i++) {
                char k[32];
                snprintf(k, sizeof k, "v%llu", (unsigned long long)(rnd() % o->n));
                if (jvdb_delete(db, k, &lsn) == JVDB_OK) deletes++;
            }
            blsn[b] = lsn;
        } else {
            blsn[b] = put_batch(db, o, changes ? rnd() % o->n : next_id, o->batch, changes ? o->n : 0, vecs, ids, recs);
            next_id += o->batch;
            written += o->batch;
        }
        back[b] = bench_now();
        done++;
    }
    double secs = bench_now() - t0;
    ship_stop(&sh);
    /* For every batch: the first shipment that reached its LSN. */
    double *delay = malloc(done * sizeof *delay);
    size_t nd = 0, j = 0;
    for (size_t b = 0; b < done; b++) {
        if (!blsn[b]) continue;
        while (j < sh.n && sh.lsn[j] < blsn[b]) j++;
        if (j == sh.n) break;
        delay[nd++] = sh.at[j] - back[b];
    }
    qsort(delay, nd, sizeof *delay, cmp_double);
    bench_json_begin();
    bench_json_str("step", changes ? "changes" : "rpo");
    bench_json_num("rate", o->rate);
    bench_json_num("seconds", secs);
    bench_json_num("writes_per_s", (double)(written + deletes) / secs);
    bench_json_int("ship_ms", (long long)o->ship_ms);
    bench_json_int("batches", (long long)nd);
    if (nd) {
        bench_json_num("p50_s", delay[nd / 2]);
        bench_json_num("p99_s", delay[(size_t)((double)nd * 0.99) < nd ? (size_t)((double)nd * 0.99) : nd - 1]);
        bench_json_num("max_s", delay[nd - 1]);
    }
    if (sh.n) {
        qsort(sh.took, sh.n, sizeof *sh.took, cmp_double);
        bench_json_num("ship_p50_s", sh.took[sh.n / 2]);
        bench_json_num("ship_max_s", sh.took[sh.n - 1]);
    }
    bench_json_int("log_stored_bytes", (long long)sh.stored);
    bench_json_int("log_raw_bytes", (long long)sh.raw);
    bench_json_int("log_objects", (long long)sh.objects);
    bench_json_int("ship_failures", (long long)sh.failures);
    bench_json_end();
    ship_free(&sh);
    free(delay);
    free(blsn);
    free(back);
    free(vecs);
    free(ids);
    free(recs);
    jvdb_env_close(env);
}

static void step_load(const struct opts *o)
{
    bench_make_dir(o->dir);
    jvdb_env *env = open_env(o);
    jvdb_db *db = make_db(env, o);
    float *vecs = malloc((size_t)o->batch * o->dim * sizeof *vecs);
    char(*ids)[32] = malloc((size_t)o->batch * sizeof *ids);
    jvdb_record *recs = malloc(o->batch * sizeof *recs);
    double t0 = bench_now();
    for (uint64_t i = 0; i < o->n; i += o->batch)
        put_batch(db, o, i, (uint32_t)(o->n - i < o->batch ? o->n - i : o->batch), 0, vecs, ids, recs);
    int rc = jvdb_sync(db);
    if (rc) die_lib("sync", rc);
    bench_json_begin();
    bench_json_str("step", "load");
    bench_json_int("n", (long long)o->n);
    bench_json_num("seconds", bench_now() - t0);
    bench_json_end();
    free(vecs);
    free(ids);
    free(recs);
    jvdb_env_close(env);
}

/* Lays down n empty log objects named (i, i+1] for i < n in the incarnation of the real object
 * `real` (a name under DIR/repo/p/log/): a long history behind the replica. */
static void lay_history(const struct opts *o, const char *incdir, const char *real, uint64_t n)
{
    unsigned long long from, to, t0, t1, epoch;
    if (sscanf(real, "%20llu-%20llu-%19llu-%19llu-%10llu.jvl", &from, &to, &t0, &t1, &epoch) != 5)
        bench_die(0, "unexpected log object name %s", real);
    (void)o;
    for (uint64_t i = 0; i < n; i++) {
        char p[1024];
        snprintf(p, sizeof p, "%s/%020llu-%020llu-%019llu-%019llu-%010llu.jvl", incdir, (unsigned long long)i,
                 (unsigned long long)i + 1, t0, t0, epoch);
        FILE *f = fopen(p, "w");
        if (!f) bench_die(1, "create %s", p);
        fclose(f);
    }
}

/* Median of v[0..n) in place. */
static double median_of(double *v, size_t n) { return bench_percentile(v, n, 50); }

/* follow-poll: see the header. */
static void step_follow_poll(const struct opts *o, int rounds)
{
    char data[1024], rdata[1024], repo[1024], cmd[1200];
    snprintf(data, sizeof data, "%s/data", o->dir);
    snprintf(rdata, sizeof rdata, "%s/replica", o->dir);
    snprintf(repo, sizeof repo, "%s/repo", o->dir);
    jvdb_env *env, *renv;
    jvdb_repo *r;
    int rc;
    if ((rc = jvdb_env_open(data, &env)) || (rc = jvdb_env_open(rdata, &renv)) || (rc = jvdb_repo_open(repo, NULL, &r)))
        die_lib("open", rc);
    jvdb_db_options dbo;
    jvdb_db_options_init(&dbo, 4);
    dbo.sync = JVDB_SYNC_NEVER;
    jvdb_db *db;
    if ((rc = jvdb_db_create(env, "p", &dbo, &db))) die_lib("create", rc);
    float v[4] = { 1, 2, 3, 4 };
    uint64_t seq = 0;
    jvdb_ship_result sr;
    for (int phase = 0; phase < 2; phase++) { /* the full backup past the history, then one log object */
        for (uint64_t i = 0; i < (phase ? 3 : o->n + 10); i++, seq++) {
            char id[32];
            snprintf(id, sizeof id, "v%llu", (unsigned long long)(seq % 100));
            v[0] = (float)seq;
            if ((rc = jvdb_put(db, id, v, 4, NULL, NULL))) die_lib("put", rc);
        }
        if ((rc = jvdb_backup_ship(db, r, NULL, &sr))) die_lib("ship", rc);
    }
    /* The incarnation folder and the real object's name: ls (the names are the format's). */
    snprintf(cmd, sizeof cmd, "ls -d %s/p/log/*/ | head -1", repo);
    char incdir[1024] = "", real[256] = "";
    FILE *p = popen(cmd, "r");
    if (!p || !fgets(incdir, sizeof incdir, p)) bench_die(0, "no log folder in %s", repo);
    pclose(p);
    incdir[strcspn(incdir, "\n")] = '\0';
    if (*incdir && incdir[strlen(incdir) - 1] == '/') incdir[strlen(incdir) - 1] = '\0';
    snprintf(cmd, sizeof cmd, "ls %s | head -1", incdir);
    if (!(p = popen(cmd, "r")) || !fgets(real, sizeof real, p)) bench_die(0, "no log object in %s", incdir);
    pclose(p);
    real[strcspn(real, "\n")] = '\0';
    double t0 = bench_now();
    lay_history(o, incdir, real, o->n);
    double laid = bench_now() - t0;
    jvdb_restore_result res;
    jvdb_restore_options ro = { .database = "p", .replica = 1, .latest = 1, .force = 1, .result = &res };
    jvdb_db *rep;
    if ((rc = jvdb_backup_restore(renv, r, NULL, &ro, &rep))) die_lib("seed", rc);
    double *t[2][2];
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) t[a][b] = calloc((size_t)rounds, sizeof(double));
    for (int k = 0; k < rounds; k++)
        for (int fresh = 0; fresh < 2; fresh++)
            for (int way = 0; way < 2; way++) { /* way 0: the full check, 1: log only */
                if (fresh) {
                    for (int i = 0; i < 2; i++, seq++) {
                        v[0] = (float)seq;
                        if ((rc = jvdb_put(db, "new", v, 4, NULL, NULL))) die_lib("put", rc);
                    }
                    if ((rc = jvdb_backup_ship(db, r, NULL, &sr))) die_lib("ship", rc);
                }
                jvdb_follow_options fo = { .log_only = way };
                jvdb_follow_result fr;
                double a = bench_now();
                if ((rc = jvdb_backup_follow_ex(rep, r, &fo, &fr))) die_lib("follow", rc);
                t[fresh][way][k] = (bench_now() - a) * 1e3;
                if (fr.full != !way || fr.objects != (uint64_t)fresh) bench_die(0, "unexpected poll result");
            }
    bench_json_begin();
    bench_json_str("step", "follow-poll");
    bench_json_int("log_objects", (long long)o->n + 1 + 2 * rounds);
    bench_json_num("history_laid_seconds", laid);
    bench_json_int("rounds", rounds);
    bench_json_num("idle_full_ms", median_of(t[0][0], (size_t)rounds));
    bench_json_num("idle_log_only_ms", median_of(t[0][1], (size_t)rounds));
    bench_json_num("new_object_full_ms", median_of(t[1][0], (size_t)rounds));
    bench_json_num("new_object_log_only_ms", median_of(t[1][1], (size_t)rounds));
    bench_json_end();
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) free(t[a][b]);
    jvdb_repo_close(r);
    jvdb_env_close(renv);
    jvdb_env_close(env);
}

int main(int argc, char **argv)
{
    struct opts o = {
        .sync = "always", .n = 100000, .dim = 128, .batch = 100, .ship_ms = 1000, .rate = 5000, .seconds = 20
    };
    int rounds = 5;
    if (argc < 2)
        bench_die(0, "usage: bench_ship ingest|rpo|load|changes|follow-poll --dir DIR [options] (see the source)");
    o.mode = argv[1];
    for (int i = 2; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--dir")) o.dir = v;
        else if (!strcmp(k, "--n")) o.n = strtoull(v, NULL, 10);
        else if (!strcmp(k, "--dim")) o.dim = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(k, "--batch")) o.batch = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(k, "--sync")) o.sync = v;
        else if (!strcmp(k, "--ship-ms")) o.ship_ms = strtoull(v, NULL, 10);
        else if (!strcmp(k, "--rate")) o.rate = strtod(v, NULL);
        else if (!strcmp(k, "--seconds")) o.seconds = strtod(v, NULL);
        else if (!strcmp(k, "--level")) ship_level = o.level = atoi(v);
        else if (!strcmp(k, "--ship-nice")) ship_nice = atoi(v);
        else if (!strcmp(k, "--rounds")) rounds = atoi(v);
        else bench_die(0, "unknown option %s", k);
    }
    if (!o.dir || !o.dim || !o.batch || o.rate <= 0) bench_die(0, "--dir is required; dim, batch, rate positive");
    if (!strcmp(o.mode, "ingest")) step_ingest(&o);
    else if (!strcmp(o.mode, "rpo")) step_stream(&o, 0);
    else if (!strcmp(o.mode, "load")) step_load(&o);
    else if (!strcmp(o.mode, "changes")) step_stream(&o, 1);
    else if (!strcmp(o.mode, "follow-poll")) step_follow_poll(&o, rounds > 0 ? rounds : 5);
    else bench_die(0, "unknown step %s", o.mode);
    return 0;
}
