/*
 * bench_manifest.c — put latency while the MANIFEST is rewritten (bench/run-manifest-lock).
 *
 * W writer threads put single vectors for S seconds and record every put's latency: paced at
 * --rate R puts/s in all (open loop: the latency counts from when the put was due, so a put queued
 * behind a stall is charged for it, not omitted), or back to back with --rate 0.  Meanwhile, with
 * --manifest-ms M, one thread rewrites the MANIFEST every M ms through the call the
 * continuous-backup shipper makes for its pin (db_set_manifest_extra "log_shipping").  Before
 * issue 13's fix that write held the writer lock across its temporary file's fsync, rename and
 * directory fsync, so every writer queued behind it; the same program built from the old tree and
 * the new one, run in alternation, shows the difference.  One JSON line: put percentiles in
 * microseconds, puts/s, MANIFEST writes done and their median duration, and the rate at which puts
 * completed while a MANIFEST write was in progress relative to the whole run's ("during_ratio":
 * near 0 when writers queue behind the write, near 1 when they do not).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench_util.h"
#include "jvdb.h"
#include "store/db.h"

#define MAX_WRITERS 16

struct opts {
    const char *dir, *sync;
    uint32_t dim, writers;
    double seconds, rate;
    unsigned manifest_ms;
};

struct writer {
    jvdb_db *db;
    const struct opts *o;
    int no;
    double *lat, *end; /* seconds, one per put: latency, completion time */
    size_t n, cap;
    double t0; /* start of the run */
};

static atomic_int stop;

/* Writer thread: puts distinct ids until told to stop, noting each put's latency. */
static void *writer_main(void *arg)
{
    struct writer *w = arg;
    float *v = malloc(w->o->dim * sizeof *v);
    if (!v) bench_die(0, "out of memory");
    char id[48];
    /* Paced: each writer's puts are due every `gap` seconds, the writers staggered across it. */
    double gap = w->o->rate > 0 ? (double)w->o->writers / w->o->rate : 0;
    double due = w->t0 + gap * (double)w->no / (double)w->o->writers;
    for (uint64_t i = 0; !atomic_load(&stop); i++, due += gap) {
        for (uint32_t d = 0; d < w->o->dim; d++) v[d] = (float)((i * 31 + d * 7 + (uint64_t)w->no) % 1000) / 1000.0f;
        snprintf(id, sizeof id, "w%d-%llu", w->no, (unsigned long long)i);
        double now = bench_now();
        if (gap > 0 && due > now) {
            struct timespec p = { (time_t)(due - now), (long)((due - now - (double)(time_t)(due - now)) * 1e9) };
            nanosleep(&p, NULL);
        }
        double t0 = gap > 0 ? due : bench_now();
        int rc = jvdb_put(w->db, id, v, w->o->dim, NULL, NULL);
        double t1 = bench_now();
        if (rc) bench_die(0, "put: %s", jvdb_errmsg());
        if (w->n == w->cap) {
            w->cap = w->cap ? w->cap * 2 : 65536;
            if (!(w->lat = realloc(w->lat, w->cap * sizeof *w->lat)) ||
                !(w->end = realloc(w->end, w->cap * sizeof *w->end)))
                bench_die(0, "out of memory");
        }
        w->lat[w->n] = t1 - t0;
        w->end[w->n++] = t1;
    }
    free(v);
    return NULL;
}

struct mwriter {
    jvdb_db *db;
    unsigned ms;
    double took[4096], from[4096]; /* each write's duration and start */
    size_t n;
};

/* MANIFEST thread: sets the shipper's pin every `ms` milliseconds, as the shipper does. */
static void *mwriter_main(void *arg)
{
    struct mwriter *m = arg;
    for (long long k = 1; !atomic_load(&stop); k++) {
        struct timespec p = { (time_t)(m->ms / 1000), (long)(m->ms % 1000) * 1000000L };
        nanosleep(&p, NULL);
        double t0 = bench_now();
        json_t *pin = json_pack("{s:s, s:I}", "incarnation", "bench", "shipped_lsn", (json_int_t)k);
        if (db_set_manifest_extra(m->db, DB_SHIP_PIN_KEY, pin)) bench_die(0, "MANIFEST write: %s", jvdb_errmsg());
        if (m->n < sizeof m->took / sizeof m->took[0]) {
            m->from[m->n] = t0;
            m->took[m->n++] = bench_now() - t0;
        }
    }
    return NULL;
}

/* qsort order of doubles. */
static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Puts completed while a MANIFEST write was in progress, per second of such writes, over the run's
 * puts per second (ends sorted; windows in time order, before `took` is sorted). */
static double during_ratio(const double *ends, size_t n, const struct mwriter *m, double secs)
{
    size_t in = 0, k = 0;
    double busy = 0;
    for (size_t j = 0; j < m->n; j++) {
        double a = m->from[j], b = a + m->took[j];
        busy += b - a;
        while (k < n && ends[k] <= a) k++;
        while (k < n && ends[k] <= b) {
            in++;
            k++;
        }
    }
    return busy > 0 && n ? ((double)in / busy) / ((double)n / secs) : 0;
}

/* The q-quantile of sorted v (n > 0). */
static double quantile(const double *v, size_t n, double q)
{
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

int main(int argc, char **argv)
{
    struct opts o = { .sync = "always", .dim = 128, .writers = 4, .seconds = 5, .manifest_ms = 0 };
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--dir")) o.dir = v;
        else if (!strcmp(k, "--sync")) o.sync = v;
        else if (!strcmp(k, "--dim")) o.dim = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(k, "--writers")) o.writers = (uint32_t)strtoul(v, NULL, 10);
        else if (!strcmp(k, "--seconds")) o.seconds = strtod(v, NULL);
        else if (!strcmp(k, "--manifest-ms")) o.manifest_ms = (unsigned)strtoul(v, NULL, 10);
        else if (!strcmp(k, "--rate")) o.rate = strtod(v, NULL);
        else bench_die(0, "unknown option %s", k);
    }
    if (!o.dir || !o.dim || !o.writers || o.writers > MAX_WRITERS || o.seconds <= 0)
        bench_die(0, "usage: bench_manifest --dir DIR [--sync always|never] [--dim D] [--writers 1-16] "
                     "[--seconds S] [--rate R (puts/s in all; 0: back to back)] [--manifest-ms M (0: none)]");
    bench_make_dir(o.dir);
    jvdb_env *env;
    jvdb_db *db;
    jvdb_db_options dbo;
    jvdb_db_options_init(&dbo, o.dim);
    if (jvdb_sync_parse(o.sync, &dbo.sync, &dbo.sync_interval_ms) != JVDB_OK) bench_die(0, "bad --sync %s", o.sync);
    if (jvdb_env_open(o.dir, &env) || jvdb_db_create(env, "bench", &dbo, &db)) bench_die(0, "%s", jvdb_errmsg());
    struct writer w[MAX_WRITERS];
    pthread_t th[MAX_WRITERS], mth;
    struct mwriter *m = calloc(1, sizeof *m);
    if (!m) bench_die(0, "out of memory");
    m->db = db;
    m->ms = o.manifest_ms;
    double t0 = bench_now();
    for (uint32_t i = 0; i < o.writers; i++) {
        w[i] = (struct writer){ .db = db, .o = &o, .no = (int)i, .t0 = t0 };
        if (pthread_create(&th[i], NULL, writer_main, &w[i])) bench_die(0, "cannot start a writer");
    }
    if (o.manifest_ms && pthread_create(&mth, NULL, mwriter_main, m)) bench_die(0, "cannot start the MANIFEST thread");
    struct timespec run = { (time_t)o.seconds, (long)((o.seconds - (double)(time_t)o.seconds) * 1e9) };
    nanosleep(&run, NULL);
    atomic_store(&stop, 1);
    for (uint32_t i = 0; i < o.writers; i++) pthread_join(th[i], NULL);
    if (o.manifest_ms) pthread_join(mth, NULL);
    double secs = bench_now() - t0;
    size_t n = 0;
    for (uint32_t i = 0; i < o.writers; i++) n += w[i].n;
    double *all = malloc((n ? n : 1) * sizeof *all), *ends = malloc((n ? n : 1) * sizeof *ends);
    if (!all || !ends || !n) bench_die(0, "no puts");
    n = 0;
    for (uint32_t i = 0; i < o.writers; i++) {
        memcpy(all + n, w[i].lat, w[i].n * sizeof *all);
        memcpy(ends + n, w[i].end, w[i].n * sizeof *ends);
        n += w[i].n;
        free(w[i].lat);
        free(w[i].end);
    }
    qsort(all, n, sizeof *all, cmp_double);
    qsort(ends, n, sizeof *ends, cmp_double);
    double during = during_ratio(ends, n, m, secs);
    free(ends);
    qsort(m->took, m->n, sizeof *m->took, cmp_double);
    printf("{\"sync\": \"%s\", \"writers\": %u, \"rate\": %.0f, \"manifest_ms\": %u, \"puts\": %zu, "
           "\"puts_per_s\": %.0f, \"p50_us\": %.1f, \"p99_us\": %.1f, \"p999_us\": %.1f, \"max_us\": %.1f, "
           "\"manifest_writes\": %zu, \"manifest_write_ms_p50\": %.2f, \"during_ratio\": %.3f}\n",
           o.sync, o.writers, o.rate, o.manifest_ms, n, (double)n / secs, quantile(all, n, 0.5) * 1e6,
           quantile(all, n, 0.99) * 1e6, quantile(all, n, 0.999) * 1e6, all[n - 1] * 1e6, m->n,
           m->n ? quantile(m->took, m->n, 0.5) * 1e3 : 0.0, during);
    free(all);
    free(m);
    jvdb_env_close(env);
    return 0;
}
